//! The pool sections: `[[models]]`, `[[projects]]` and `[engine]`, read into their
//! validated definitions.

use std::path::Path;

use toml::de::DeValue;

use super::fields::{quoted, Ctx, Table};
use super::model::*;
use crate::estimate::calibrated::Base;
use crate::estimate::{HfTokenizer, OutputPolicy};
use crate::{EngineConfig, Limits, Setting};

/// `file` resolved against `base` (the folder of the file that names it), if any.
pub fn resolve(base: Option<&Path>, file: &str) -> std::path::PathBuf {
    base.map_or_else(|| Path::new(file).to_path_buf(), |b| b.join(file))
}

const LIMIT_KEYS: [&str; 4] = ["rpm", "tpm", "rpd", "tpd"];

/// Reads `rpm`, `tpm`, `rpd`, `tpd` into `limits`; with `all`, the first three are required.
fn read_limits(ctx: &mut Ctx, t: &Table<'_, '_>, limits: &mut Limits, all: bool) {
    for key in LIMIT_KEYS {
        let v = t.uint(ctx, key).and_then(|(v, span)| {
            // The engine refuses a zero limit (it would mean "never" on one dimension): said
            // here, at its place, rather than when a run starts.
            if v == 0 {
                ctx.error_help(
                    span,
                    format!("`{key}` in {} is 0: a limit of zero would never admit a request", t.name),
                    "give the real limit; to keep a model off a project, leave the model out of the pool",
                );
                return None;
            }
            Some(v)
        });
        let v = if all && key != "tpd" { t.required(v, ctx, key) } else { v };
        if let Some(v) = v {
            match key {
                "rpm" => limits.rpm = v,
                "tpm" => limits.tpm = v,
                "rpd" => limits.rpd = v,
                _ => limits.tpd = Some(v),
            }
        }
    }
}

pub(super) fn models(ctx: &mut Ctx, root: &Table<'_, '_>) -> Vec<ModelDef> {
    let tables = root.tables(ctx, "models");
    if tables.is_empty() && !root.has("models") {
        ctx.error(root.span.start..root.span.start, "missing `[[models]]`: a pool needs at least one model");
    }
    let mut out: Vec<ModelDef> = Vec::new();
    for t in tables {
        let mut keys = vec!["name", "estimator", "thinking_tokens"];
        keys.extend(LIMIT_KEYS);
        t.allow(ctx, &keys);
        let mut limits = Limits::default();
        read_limits(ctx, &t, &mut limits, true);
        let estimator = if t.has("estimator") { t.setting::<EstimatorKind>(ctx, "estimator") } else { None };
        let thinking_tokens = t.uint(ctx, "thinking_tokens").map_or(0, |(n, _)| n);
        if let Some((name, span)) = t.required(t.string(ctx, "name"), ctx, "name") {
            if out.iter().any(|m| m.name == name) {
                ctx.error(span, format!("model '{name}' is defined twice"));
            }
            out.push(ModelDef { name, limits, estimator, thinking_tokens });
        }
    }
    out
}

pub(super) fn projects(ctx: &mut Ctx, root: &Table<'_, '_>, models: &[ModelDef]) -> Vec<ProjectDef> {
    let tables = root.tables(ctx, "projects");
    if tables.is_empty() && !root.has("projects") {
        ctx.error(root.span.start..root.span.start, "missing `[[projects]]`: a pool needs at least one project");
    }
    let mut out: Vec<ProjectDef> = Vec::new();
    let mut seen_keys: Vec<String> = Vec::new();
    for t in tables {
        t.allow(ctx, &["id", "keys", "tier", "count", "limits"]);
        let tier = if t.has("tier") {
            t.choice(ctx, "tier", &[("free", Tier::Free), ("paid", Tier::Paid)])
        } else {
            Some(Tier::Free)
        };
        let mut limits: Vec<Limits> = models.iter().map(|m| m.limits).collect();
        if let Some(lt) = t.table(ctx, "limits") {
            for (k, v) in lt.t.iter() {
                let model = k.get_ref().as_ref();
                let Some(i) = models.iter().position(|m| m.name == model) else {
                    ctx.error(k.span(), format!("unknown model '{model}' in `limits` of {}", t.name));
                    continue;
                };
                match v.get_ref() {
                    DeValue::Table(mt) => {
                        let mt = Table { t: mt, span: v.span(), name: format!("`limits.{model}`"), root: false };
                        mt.allow(ctx, &LIMIT_KEYS);
                        read_limits(ctx, &mt, &mut limits[i], false);
                    }
                    _ => ctx.error(v.span(), format!("`limits.{model}` must be a table such as {{ rpm = 5 }}")),
                }
            }
        }
        let count = if t.has("count") { t.uint(ctx, "count") } else { None };
        let id = t.required(t.string(ctx, "id"), ctx, "id");
        let keys = t.required(t.strings(ctx, "keys"), ctx, "keys");
        let (Some((id, id_span)), Some(keys), Some(tier)) = (id, keys, tier) else { continue };
        let n = match count {
            Some((0, span)) => {
                ctx.error(span, "`count` must be at least 1");
                continue;
            }
            Some((n, span)) if n > 10_000 => {
                ctx.error(span, "`count` must be at most 10000");
                continue;
            }
            Some((n, span)) => {
                if !id.contains("{i}") {
                    ctx.error_help(
                        span,
                        format!("`count` in {} needs `{{i}}` in the id", t.name),
                        "write id = \"proj-{i}\"",
                    );
                    continue;
                }
                n
            }
            None => 1,
        };
        for i in 1..=n {
            let fill = |s: &str| s.replace("{i}", &i.to_string());
            let pid = fill(&id);
            if out.iter().any(|p| p.id == pid) {
                ctx.error(id_span.clone(), format!("project '{pid}' is defined twice"));
            }
            let mut pkeys = Vec::new();
            for (k, span) in &keys {
                let kid = fill(k);
                if seen_keys.contains(&kid) {
                    ctx.error(span.clone(), format!("key '{kid}' is listed twice"));
                } else if kid.is_empty() {
                    ctx.error(span.clone(), "key ids may not be empty");
                } else {
                    seen_keys.push(kid.clone());
                    pkeys.push(kid);
                }
            }
            out.push(ProjectDef { id: pid, tier, keys: pkeys, limits: limits.clone() });
        }
    }
    out
}

pub(super) fn engine(
    ctx: &mut Ctx,
    t: Option<&Table<'_, '_>>,
    seed: u64,
    base: Option<&Path>,
    truth: Option<&TokenizerFile>,
    models: &[ModelDef],
    own: &[&str],
) -> Option<EngineDef> {
    let mut def = EngineDef {
        config: EngineConfig { seed, ..EngineConfig::default() },
        estimator: EstimatorKind::Chars4,
        tokenizer: truth.cloned(),
        calibration_quantile: 0.96,
        calibration_base: Base::Features,
        estimate_cache: 4096,
        shadow_estimators: Vec::new(),
        on_exhausted: OnExhausted::Queue,
        max_wait_ms: 30_000,
    };
    let Some(t) = t else {
        return needs_tokenizer(ctx, &def, models, None).then_some(def);
    };
    let fields = [
        "strategy",
        "reserve",
        "safety",
        "estimator",
        "on_exhausted",
        "max_wait",
        "token_basis",
        "output_reserve",
        "output_policy",
        "output_quantile",
        "tokenizer",
        "calibration_quantile",
        "calibration_base",
        "estimate_cache",
        "shadow_estimators",
        "reconcile",
        "cached_tokens_count",
    ];
    t.allow(ctx, &[&fields[..], own].concat());
    let before = ctx.diags.len();
    let c = &mut def.config;
    if t.has("strategy") {
        c.strategy = t.setting(ctx, "strategy").unwrap_or_default();
    }
    c.reserve = t.fraction(ctx, "reserve", 0.0, 0.9).unwrap_or(0.0);
    c.safety = t.fraction(ctx, "safety", 0.0, 0.9).unwrap_or(0.0);
    if t.has("token_basis") {
        c.basis = t.setting(ctx, "token_basis").unwrap_or_default();
    }
    if let Some(r) = t.boolean(ctx, "reconcile") {
        c.reconcile = r;
    }
    if let Some(r) = t.boolean(ctx, "cached_tokens_count") {
        c.cached_tokens_count = r;
    }
    if let Some((o, _)) = t.uint(ctx, "output_reserve") {
        c.output_reserve = o;
    }
    if t.has("output_policy") {
        let learned = OutputPolicy::Learned { quantile: 0.95 };
        c.output_policy =
            t.choice(ctx, "output_policy", &[("fixed", OutputPolicy::Fixed), ("learned", learned)]).unwrap_or_default();
    }
    // Read whatever the policy, so a `--set engine.output_policy=fixed` comparison needs no
    // other edit; the fixed policy has no quantile to set.
    if let Some(q) = t.fraction(ctx, "output_quantile", 0.5, 0.999) {
        if let OutputPolicy::Learned { quantile } = &mut c.output_policy {
            *quantile = q;
        }
    }
    if t.has("estimator") {
        def.estimator = t.setting(ctx, "estimator").unwrap_or(EstimatorKind::Chars4);
    }
    if t.has("tokenizer") {
        let path = t.string(ctx, "tokenizer").map(|(p, _)| p);
        def.tokenizer = match truth {
            Some(tf) if path.as_deref() == Some(tf.path.as_str()) => Some(tf.clone()),
            _ => tokenizer(ctx, t, "tokenizer", base),
        };
    }
    if let Some(q) = t.fraction(ctx, "calibration_quantile", 0.5, 0.999) {
        def.calibration_quantile = q;
    }
    if t.has("calibration_base") {
        def.calibration_base = t.setting::<Base>(ctx, "calibration_base").unwrap_or_default();
    }
    if let Some((n, _)) = t.uint(ctx, "estimate_cache") {
        def.estimate_cache = n.min(1 << 20) as usize;
    }
    if let Some(names) = t.strings(ctx, "shadow_estimators") {
        for (name, span) in names {
            match EstimatorKind::from_name(&name) {
                Some(k) if !def.shadow_estimators.contains(&k) => def.shadow_estimators.push(k),
                Some(_) => ctx.error(span, format!("estimator '{name}' is listed twice in `shadow_estimators`")),
                None => ctx.error_help(
                    span,
                    format!("unknown estimator '{name}' in `shadow_estimators`"),
                    format!("expected one of {}", quoted(&EstimatorKind::names())),
                ),
            }
        }
    }
    needs_tokenizer(ctx, &def, models, Some(t));
    if t.has("on_exhausted") {
        def.on_exhausted = t.setting(ctx, "on_exhausted").unwrap_or(OnExhausted::Queue);
    }
    if let Some((w, _)) = t.duration(ctx, "max_wait") {
        def.max_wait_ms = w;
    }
    (ctx.diags.len() == before).then_some(def)
}

/// The `tokenizer` estimator needs a tokenizer file; says so where it is chosen.
fn needs_tokenizer(ctx: &mut Ctx, def: &EngineDef, models: &[ModelDef], t: Option<&Table<'_, '_>>) -> bool {
    let wanted = def.estimator == EstimatorKind::Tokenizer
        || def.shadow_estimators.contains(&EstimatorKind::Tokenizer)
        || models.iter().any(|m| m.estimator == Some(EstimatorKind::Tokenizer));
    if !wanted || def.tokenizer.is_some() {
        return true;
    }
    let span = t.and_then(|t| t.raw("estimator").map(|v| v.span())).unwrap_or(0..0);
    ctx.error_help(
        span,
        "the `tokenizer` estimator needs a tokenizer file",
        "set `tokenizer = \"path/to/tokenizer.json\"` in [engine] or [provider]",
    );
    false
}

/// Loads the `tokenizer.json` named by `key` of `t`, if the key is there.
pub fn tokenizer(ctx: &mut Ctx, t: &Table<'_, '_>, key: &str, base: Option<&Path>) -> Option<TokenizerFile> {
    let (file, span) = t.string(ctx, key)?;
    let path = resolve(base, &file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            ctx.error_help(
                span,
                format!("cannot read tokenizer '{file}' (paths are relative to the scenario's folder): {e}"),
                "the Gemini tokenizer is fetched by .ci/fetch-gemini-tokenizer.sh",
            );
            return None;
        }
    };
    match HfTokenizer::from_bytes(&bytes) {
        Ok(tokenizer) => Some(TokenizerFile { path: file, tokenizer }),
        Err(e) => {
            ctx.error(span, format!("tokenizer '{file}': {e}"));
            None
        }
    }
}

//! From text to a validated [`Scenario`]: the spanned TOML tree is read section by section,
//! and every problem is collected before anything is returned.

use std::path::Path;

use chrono::DateTime;
use mock_server::{Enforcement, FaultModel, LatencyModel, Tier};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diagnostics;
use super::fields::{Ctx, Table};
use super::model::*;
use super::proxy::ProxyDef;
use super::traffic::{events, expectations, traffic};
use crate::engine::estimate::calibrated::Base;
use crate::engine::estimate::OutputPolicy;
use crate::engine::{EngineConfig, Limits, Setting, Timestamp};

/// Where the scenario's week starts if it names no `start`: a Wednesday at 00:00 Pacific.
const DEFAULT_START: &str = "2026-11-25T00:00:00-08:00";

/// A proxy config's nominal duration (it has none; the engine does not read it).
const DAY_MS: u64 = 86_400_000;

/// Parses and validates scenario `text`. `origin` names it in diagnostics; `base` is the
/// folder relative paths (trace files) are resolved against; `overrides` are `path=value`
/// settings (`engine.admission=check-then-act`) applied on top of the file.
pub fn parse(text: &str, origin: &str, base: Option<&Path>, overrides: &[String]) -> Result<Scenario, Diagnostics> {
    parse_as(text, origin, base, overrides, Purpose::Scenario).map(|(s, _)| s)
}

/// Parses a proxy config: the pool sections of a scenario (`[[models]]`, `[[projects]]`,
/// `[engine]`, `[warnings]`) and `[proxy]`. `[scenario]` is optional; traffic, provider,
/// events and expectations have no place in it.
pub fn parse_proxy(text: &str, origin: &str, base: Option<&Path>) -> Result<(Scenario, ProxyDef), Diagnostics> {
    let (sc, proxy) = parse_as(text, origin, base, &[], Purpose::Proxy)?;
    Ok((sc, proxy.unwrap_or_default()))
}

/// What a file is read as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Scenario,
    Proxy,
}

fn parse_as(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    overrides: &[String],
    purpose: Purpose,
) -> Result<(Scenario, Option<ProxyDef>), Diagnostics> {
    let source = super::overrides::source(text, overrides);
    let fail = |items| Diagnostics { origin: origin.to_owned(), source: source.clone(), items };
    let (root, errors) = DeTable::parse_recoverable(&source[..text.len()]);
    if !errors.is_empty() {
        let items = errors
            .iter()
            .map(|e| super::diag::Diagnostic { message: e.message().to_owned(), span: e.span(), help: None })
            .collect();
        return Err(fail(items));
    }
    let mut root = root.into_inner();
    let mut ctx = Ctx::default();
    if !overrides.is_empty() {
        match DeTable::parse(&source[text.len()..]) {
            Ok(t) => {
                let shifted = super::overrides::shift_table(t.into_inner(), text.len());
                for (span, message) in super::overrides::merge(&mut root, shifted) {
                    ctx.error(span, message);
                }
            }
            Err(e) => ctx.error(text.len()..source.len(), format!("bad --set override: {}", e.message())),
        }
    }
    let root = Spanned::new(0..source.len(), root);
    let what = if purpose == Purpose::Proxy { "the proxy config" } else { "the scenario file" };
    let table = Table::new(&root, what);
    let scenario = build(&mut ctx, &table, base, purpose);
    let proxy = match (purpose, table.table(&mut ctx, "proxy")) {
        (Purpose::Proxy, Some(t)) => super::proxy::parse(&mut ctx, &t),
        _ => None,
    };
    ctx.diags.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
    match scenario {
        Some(s) if ctx.diags.is_empty() => Ok((s, proxy)),
        _ => Err(fail(ctx.diags)),
    }
}

const ROOT_KEYS: &[&str] = &[
    "scenario", "provider", "models", "projects", "engine", "traffic", "events", "expect", "warnings", "output",
    "compare", "replicas",
];

/// The sections of a proxy config.
const PROXY_KEYS: &[&str] = &["scenario", "models", "projects", "engine", "warnings", "proxy"];

fn build(ctx: &mut Ctx, root: &Table<'_, '_>, base: Option<&Path>, purpose: Purpose) -> Option<Scenario> {
    let proxy = purpose == Purpose::Proxy;
    root.allow(ctx, if proxy { PROXY_KEYS } else { ROOT_KEYS });
    let head = match proxy {
        true => root.table(ctx, "scenario"),
        false => root.required(root.table(ctx, "scenario"), ctx, "scenario"),
    };
    let (name, seed, duration_ms, start, timeline_ms) = match &head {
        Some(t) if !proxy => header(ctx, t),
        Some(t) => {
            t.allow(ctx, &["name", "description", "seed"]);
            let name = t.string(ctx, "name").map_or_else(|| "proxy".to_owned(), |(n, _)| n);
            let seed = if t.has("seed") { t.uint(ctx, "seed").map(|(s, _)| s) } else { Some(0) };
            (
                Some(name),
                seed,
                Some(DAY_MS),
                Some(parse_start(DEFAULT_START).expect("default start parses")),
                Some(60_000),
            )
        }
        None if proxy => (
            Some("proxy".into()),
            Some(0),
            Some(DAY_MS),
            Some(parse_start(DEFAULT_START).expect("default start parses")),
            Some(60_000),
        ),
        None => (None, Some(0), None, Some(parse_start(DEFAULT_START).expect("default start parses")), Some(60_000)),
    };
    let provider_table = root.table(ctx, "provider");
    let provider = provider(ctx, provider_table.as_ref(), base);
    let models = models(ctx, root);
    let projects = projects(ctx, root, &models);
    let engine_table = root.table(ctx, "engine");
    let truth = provider.as_ref().and_then(|p| p.tokenizer.clone());
    let engine = engine(ctx, engine_table.as_ref(), seed.unwrap_or(0), base, truth.as_ref(), &models);
    let traffic = match proxy {
        true => Vec::new(),
        false => traffic(ctx, root, &models, duration_ms.unwrap_or(u64::MAX), base, truth.as_ref()),
    };
    let (events, provider_events) = events(ctx, root, &projects, &models, duration_ms.unwrap_or(u64::MAX));
    let provider = provider.map(|mut p| {
        p.script.events = provider_events;
        p
    });
    let expect_table = root.table(ctx, "expect");
    let expect = expectations(ctx, expect_table.as_ref());
    let warnings_table = root.table(ctx, "warnings");
    let warnings = match warnings_table.as_ref() {
        Some(t) => super::warnings::parse(ctx, t),
        None => Some(None),
    };
    let requests_csv = match root.table(ctx, "output") {
        Some(t) => {
            t.allow(ctx, &["requests_csv"]);
            t.boolean(ctx, "requests_csv").unwrap_or(false)
        }
        None => false,
    };
    // `[compare]`: variant name = settings (`--set` syntax) for `keysim compare`.
    let compare = match root.table(ctx, "compare") {
        Some(t) => t
            .keys()
            .into_iter()
            .map(|k| {
                let sets = t.strings(ctx, &k).unwrap_or_default().into_iter().map(|(s, _)| s).collect();
                (k, sets)
            })
            .collect(),
        None => Vec::new(),
    };
    let replicas = match root.table(ctx, "replicas") {
        Some(t) => super::replicas::parse(ctx, &t, duration_ms.unwrap_or(u64::MAX)).map(Some),
        None => Some(None),
    };
    let description = head.as_ref().and_then(|t| t.string(ctx, "description")).map(|(d, _)| d);
    Some(Scenario {
        name: name?,
        description,
        compare,
        seed: seed?,
        duration_ms: duration_ms?,
        start: start?,
        timeline_ms: timeline_ms?,
        requests_csv,
        provider: provider?,
        models,
        projects,
        engine: engine?,
        traffic,
        events,
        expect,
        warnings: warnings?,
        replicas: replicas?,
    })
}

type Header = (Option<String>, Option<u64>, Option<u64>, Option<Timestamp>, Option<u64>);

fn header(ctx: &mut Ctx, t: &Table<'_, '_>) -> Header {
    t.allow(ctx, &["name", "description", "seed", "duration", "start", "timeline"]);
    let name = t.required(t.string(ctx, "name"), ctx, "name").and_then(|(n, span)| {
        let ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            ctx.error(span, format!("scenario name '{n}' may hold only letters, digits, '-', '_' and '.'"));
        }
        ok.then_some(n)
    });
    let seed = if t.has("seed") { t.uint(ctx, "seed").map(|(s, _)| s) } else { Some(0) };
    let duration = t.required(t.duration(ctx, "duration"), ctx, "duration").and_then(|(d, span)| {
        if d == 0 {
            ctx.error(span, "`duration` must be longer than zero");
        }
        (d > 0).then_some(d)
    });
    let start = match t.raw("start") {
        None => parse_start(DEFAULT_START).ok(),
        Some(v) => {
            let text = match v.get_ref() {
                DeValue::Datetime(d) => Some(d.to_string()),
                DeValue::String(s) => Some(s.to_string()),
                _ => None,
            };
            match text.as_deref().map(parse_start) {
                Some(Ok(ts)) => Some(ts),
                Some(Err(e)) => {
                    ctx.error(v.span(), format!("`start` in [scenario]: {e}"));
                    None
                }
                None => {
                    ctx.error(v.span(), "`start` in [scenario] must be a date-time with an offset");
                    None
                }
            }
        }
    };
    let timeline = if t.has("timeline") {
        t.duration(ctx, "timeline").and_then(|(ms, span)| {
            if ms < 1_000 {
                ctx.error(span, "`timeline` in [scenario] must be at least 1s");
            }
            (ms >= 1_000).then_some(ms)
        })
    } else {
        Some(60_000)
    };
    (name, seed, duration, start, timeline)
}

fn parse_start(s: &str) -> Result<Timestamp, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("'{s}' is not an RFC 3339 date-time with an offset ({e})"))?;
    u64::try_from(t.timestamp_millis()).map(Timestamp).map_err(|_| format!("'{s}' is before 1970"))
}

fn provider(ctx: &mut Ctx, t: Option<&Table<'_, '_>>, base: Option<&Path>) -> Option<Provider> {
    let mut p = Provider {
        tokenizer: None,
        enforcement: Enforcement::Sliding,
        counts_output: false,
        latency: LatencyModel { median_ms: 800.0, p99_ms: 6_000.0 },
        faults: FaultModel::default(),
        extra_faults: Default::default(),
        script: Default::default(),
    };
    let Some(t) = t else { return Some(p) };
    t.allow(
        ctx,
        &[
            "enforcement",
            "tpm_counts",
            "latency",
            "faults",
            "tokenizer",
            "storms",
            "quota_body",
            "cached_share",
            "cached_tokens_count",
        ],
    );
    let mut ok = true;
    if t.has("quota_body") {
        match t.choice(ctx, "quota_body", &mock_server::body::QuotaBody::ALL) {
            Some(b) => p.script.quota_body = b,
            None => ok = false,
        }
    }
    for s in t.tables(ctx, "storms") {
        s.allow(ctx, &["at", "duration", "rate", "kind", "timeout"]);
        let at = s.required(s.duration(ctx, "at"), ctx, "at");
        let length = s.required(s.duration(ctx, "duration"), ctx, "duration");
        let rate = s.required(s.fraction(ctx, "rate", 0.0, 1.0), ctx, "rate");
        let kind = if s.has("kind") { s.choice(ctx, "kind", &StormKind::ALL) } else { Some(StormKind::Capacity) };
        let timeout = match s.duration(ctx, "timeout") {
            Some((0, span)) => {
                ctx.error(span, "`timeout` must be longer than 0".to_owned());
                None
            }
            Some((ms, _)) => Some(ms),
            None => Some(30_000),
        };
        match (at, length, rate, kind, timeout) {
            (Some((at_ms, _)), Some((for_ms, _)), Some(rate), Some(kind), Some(timeout_ms)) => {
                p.script.storms.push(Storm { at_ms, for_ms, rate, kind, timeout_ms })
            }
            _ => ok = false,
        }
    }
    if t.has("cached_share") {
        match t.fraction(ctx, "cached_share", 0.0, 1.0) {
            Some(share) => p.script.cached.share = share,
            None => ok = false,
        }
    }
    p.script.cached.counted = t.boolean(ctx, "cached_tokens_count").unwrap_or(true);
    if t.has("tpm_counts") {
        match t.choice(ctx, "tpm_counts", &[("input", false), ("total", true)]) {
            Some(c) => p.counts_output = c,
            None => ok = false,
        }
    }
    if t.has("tokenizer") {
        p.tokenizer = super::files::tokenizer(ctx, t, "tokenizer", base);
        ok &= p.tokenizer.is_some();
    }
    let modes: Vec<(&str, Enforcement)> = Enforcement::ALL.iter().map(|e| (e.name(), *e)).collect();
    if t.has("enforcement") {
        match t.choice(ctx, "enforcement", &modes) {
            Some(e) => p.enforcement = e,
            None => ok = false,
        }
    }
    if let Some(l) = t.table(ctx, "latency") {
        l.allow(ctx, &["median", "p99"]);
        if let Some((m, _)) = l.duration(ctx, "median") {
            p.latency.median_ms = m as f64;
        }
        if let Some((q, span)) = l.duration(ctx, "p99") {
            p.latency.p99_ms = q as f64;
            if p.latency.p99_ms < p.latency.median_ms {
                ctx.error(span, "latency `p99` must be at least the `median`");
                ok = false;
            }
        } else if p.latency.p99_ms < p.latency.median_ms {
            p.latency.p99_ms = p.latency.median_ms;
        }
    }
    if let Some(f) = t.table(ctx, "faults") {
        f.allow(
            ctx,
            &[
                "internal_rate",
                "overloaded_rate",
                "drop_rate",
                "slow_rate",
                "slow_factor",
                "burst_every",
                "burst_length",
            ],
        );
        let x = &mut p.extra_faults;
        x.drop_rate = f.fraction(ctx, "drop_rate", 0.0, 1.0).unwrap_or(0.0);
        x.slow_rate = f.fraction(ctx, "slow_rate", 0.0, 1.0).unwrap_or(0.0);
        x.slow_factor = f.float(ctx, "slow_factor").map_or(10.0, |(v, _)| v.clamp(1.0, 1000.0));
        x.burst_every_ms = f.duration(ctx, "burst_every").map_or(0, |(v, _)| v);
        x.burst_ms = f.duration(ctx, "burst_length").map_or(0, |(v, _)| v);
        if x.burst_ms > 0 && x.burst_ms >= x.burst_every_ms {
            let span = f.raw("burst_length").map_or(0..0, |v| v.span());
            ctx.error(span, "`burst_length` must be shorter than `burst_every`");
            ok = false;
        }
        p.faults.internal_rate = f.fraction(ctx, "internal_rate", 0.0, 1.0).unwrap_or(0.0);
        p.faults.overloaded_rate = f.fraction(ctx, "overloaded_rate", 0.0, 1.0).unwrap_or(0.0);
    }
    ok.then_some(p)
}

const LIMIT_KEYS: [&str; 4] = ["rpm", "tpm", "rpd", "tpd"];

/// Reads `rpm`, `tpm`, `rpd`, `tpd` into `limits`; with `all`, the first three are required.
fn read_limits(ctx: &mut Ctx, t: &Table<'_, '_>, limits: &mut Limits, all: bool) {
    for key in LIMIT_KEYS {
        let v = t.uint(ctx, key).map(|(v, _)| v);
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

fn models(ctx: &mut Ctx, root: &Table<'_, '_>) -> Vec<ModelDef> {
    let tables = root.tables(ctx, "models");
    if tables.is_empty() && !root.has("models") {
        ctx.error(root.span.start..root.span.start, "missing `[[models]]`: a scenario needs at least one model");
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

fn projects(ctx: &mut Ctx, root: &Table<'_, '_>, models: &[ModelDef]) -> Vec<ProjectDef> {
    let tables = root.tables(ctx, "projects");
    if tables.is_empty() && !root.has("projects") {
        ctx.error(root.span.start..root.span.start, "missing `[[projects]]`: a scenario needs at least one project");
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

fn engine(
    ctx: &mut Ctx,
    t: Option<&Table<'_, '_>>,
    seed: u64,
    base: Option<&Path>,
    truth: Option<&TokenizerFile>,
    models: &[ModelDef],
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
    t.allow(
        ctx,
        &[
            "strategy",
            "reserve",
            "safety",
            "estimator",
            "on_exhausted",
            "max_wait",
            "admission",
            "quota_scope",
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
        ],
    );
    let before = ctx.diags.len();
    let c = &mut def.config;
    if t.has("strategy") {
        c.strategy = t.setting(ctx, "strategy").unwrap_or_default();
    }
    c.reserve = t.fraction(ctx, "reserve", 0.0, 0.9).unwrap_or(0.0);
    c.safety = t.fraction(ctx, "safety", 0.0, 0.9).unwrap_or(0.0);
    if t.has("admission") {
        c.admission = t.setting(ctx, "admission").unwrap_or_default();
    }
    if t.has("quota_scope") {
        c.scope = t.setting(ctx, "quota_scope").unwrap_or_default();
    }
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
            _ => super::files::tokenizer(ctx, t, "tokenizer", base),
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
                    format!("expected one of {}", super::fields::quoted(&EstimatorKind::names())),
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

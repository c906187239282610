//! Traffic classes, pool events and expectations of a scenario.

use std::path::Path;

use toml::de::DeValue;

use super::model::*;
use crate::engine::pool_file::fields::{self, float_of, Ctx, Span, Table};
use crate::engine::pool_file::units;
use crate::engine::{KeySpec, PoolEvent, Priority};

const TRAFFIC_KEYS: &[&str] = &[
    "name",
    "arrival",
    "corpus",
    "language",
    "prompt_tokens",
    "output_tokens",
    "chars_per_token",
    "model",
    "priority",
    "max_output_tokens",
    "start",
    "end",
];

/// The traffic of a scenario, and the calendar its logs set.
pub(super) struct Traffic {
    /// The classes, in table order (a log's: one per client and model).
    pub classes: Vec<TrafficClass>,
    /// Where the scenario replays logs: the window they cover together (ms since the epoch,
    /// `[from, to)`), which is the run's start and length.
    pub window: Option<(u64, u64)>,
}

pub(super) fn traffic(
    ctx: &mut Ctx,
    root: &Table<'_, '_>,
    models: &[ModelDef],
    duration: Option<u64>,
    seed: u64,
    base: Option<&Path>,
    truth: Option<&TokenizerFile>,
) -> Traffic {
    let tables = root.tables(ctx, "traffic");
    if tables.is_empty() && !root.has("traffic") {
        ctx.error(
            root.span.start..root.span.start,
            "missing `[[traffic]]`: a scenario needs at least one traffic class",
        );
    }
    // Logs first: their window is the run's calendar.
    let mut logs: Vec<Option<super::logs::LogTraffic>> = Vec::new();
    for t in tables.iter().filter(|t| t.has("log")) {
        if let Some(a) = t.raw("arrival") {
            ctx.error(a.span(), format!("{} replays a log: its requests arrive as logged (remove `arrival`)", t.name));
        }
        logs.push(super::logs::log_classes(ctx, t, models, base, seed));
    }
    let window = logs.iter().flatten().map(|l| l.window).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let duration = window.map(|(from, to)| to - from).or(duration).unwrap_or(u64::MAX);
    let mut logs = logs.into_iter();
    let mut classes = Vec::new();
    for (n, t) in tables.iter().enumerate() {
        if t.has("log") {
            let Some(Some(l)) = logs.next() else { continue };
            let offset = l.window.0 - window.map_or(0, |w| w.0);
            classes.extend(l.classes.into_iter().map(|mut c| {
                c.start_ms += offset;
                c.end_ms += offset;
                c
            }));
            continue;
        }
        t.allow(ctx, TRAFFIC_KEYS);
        if let Some(c) = class(ctx, t, n, models, duration, base, truth) {
            classes.push(c);
        }
    }
    Traffic { classes, window }
}

fn class(
    ctx: &mut Ctx,
    t: &Table<'_, '_>,
    n: usize,
    models: &[ModelDef],
    duration: u64,
    base: Option<&Path>,
    truth: Option<&TokenizerFile>,
) -> Option<TrafficClass> {
    let before = ctx.diags.len();
    let name = t.string(ctx, "name").map_or_else(|| format!("traffic-{}", n + 1), |(s, _)| s);
    let arrival = t.required(t.table(ctx, "arrival"), ctx, "arrival").and_then(|a| arrival(ctx, &a, base));
    let is_trace = matches!(arrival, Some(Arrival::Trace(_)));
    let corpus = corpus(ctx, t, base, truth);
    if corpus.is_some() {
        for key in ["prompt_tokens", "chars_per_token"] {
            if let Some(v) = t.raw(key) {
                ctx.error(v.span(), format!("`{key}` in {} comes from the corpus; remove it", t.name));
            }
        }
    }
    let mut tokens = |key: &str, default: Tokens| -> Option<Tokens> {
        if is_trace {
            if let Some(v) = t.raw(key) {
                ctx.error(v.span(), format!("`{key}` in {} comes from the trace; remove it", t.name));
            }
            return Some(default);
        }
        match t.raw(key) {
            None => Some(default),
            Some(_) => token_dist(ctx, t, key),
        }
    };
    let prompt_tokens = tokens("prompt_tokens", Tokens::LogNormal { median: 600.0, p99: 6_000.0 });
    let output_tokens = tokens("output_tokens", Tokens::LogNormal { median: 200.0, p99: 1_500.0 });
    let chars_per_token = match t.float(ctx, "chars_per_token") {
        Some((c, span)) if !(c > 0.0 && c <= 100.0) => {
            ctx.error(span, "`chars_per_token` must be greater than zero and at most 100");
            None
        }
        Some((c, _)) => Some(c),
        None => Some(4.0),
    };
    let model = match t.string(ctx, "model") {
        Some((m, span)) => match models.iter().position(|d| d.name == m) {
            Some(i) => Some(i),
            None => {
                let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                ctx.error_help(
                    span,
                    format!("unknown model '{m}' in {}", t.name),
                    format!("defined models: {}", fields::quoted(&names)),
                );
                None
            }
        },
        None if models.len() == 1 && !t.has("model") => Some(0),
        None => t.required(None, ctx, "model"),
    };
    let priority = if t.has("priority") { t.setting::<Priority>(ctx, "priority") } else { Some(Priority::Normal) };
    let max_output_tokens = t.uint(ctx, "max_output_tokens").map(|(v, _)| v);
    let start_ms = t.duration(ctx, "start").map_or(0, |(v, _)| v);
    let end_ms = t.duration(ctx, "end").map_or(duration, |(v, _)| v);
    if start_ms >= end_ms && t.has("end") {
        let span = t.raw("end").map(|v| v.span()).unwrap_or(t.span.clone());
        ctx.error(span, format!("`end` of {} must come after its `start`", t.name));
    } else if start_ms >= duration {
        let span = t.raw("start").map(|v| v.span()).unwrap_or(t.span.clone());
        ctx.error(span, format!("{} starts at or after the end of the run: it would send nothing", t.name));
    }
    if ctx.diags.len() > before {
        return None;
    }
    Some(TrafficClass {
        name,
        arrival: arrival?,
        prompt_tokens: prompt_tokens?,
        corpus,
        output_tokens: output_tokens?,
        chars_per_token: chars_per_token?,
        model: model?,
        priority: priority?,
        max_output_tokens,
        start_ms,
        end_ms,
    })
}

fn corpus(ctx: &mut Ctx, t: &Table<'_, '_>, base: Option<&Path>, truth: Option<&TokenizerFile>) -> Option<Corpus> {
    let language = t.string(ctx, "language");
    let Some((file, span)) = t.string(ctx, "corpus") else {
        if let Some((_, span)) = language {
            ctx.error(span, format!("`language` in {} filters a `corpus`; there is none", t.name));
        }
        return None;
    };
    let lang = language.as_ref().map(|(l, _)| l.as_str());
    let texts = super::files::corpus(ctx, &file, span, base, lang, truth.map(|t| &t.tokenizer))?;
    Some(Corpus { file, texts: std::sync::Arc::new(texts) })
}

fn token_dist(ctx: &mut Ctx, t: &Table<'_, '_>, key: &str) -> Option<Tokens> {
    let v = t.raw(key)?;
    match v.get_ref() {
        DeValue::Integer(_) => match t.uint(ctx, key)? {
            (n, span) if n > 100_000_000 => {
                ctx.error(span, format!("`{key}` must be at most 100000000 tokens"));
                None
            }
            (n, _) => Some(Tokens::Fixed(n)),
        },
        DeValue::Table(inner) => {
            let d = Table { t: inner, span: v.span(), name: format!("`{key}`"), root: false };
            d.allow(ctx, &["median", "p99"]);
            let median = d.required(d.float(ctx, "median"), ctx, "median");
            let p99 = d.required(d.float(ctx, "p99"), ctx, "p99");
            let (Some((m, mspan)), Some((p, pspan))) = (median, p99) else { return None };
            if !(m.is_finite() && (1.0..=1e8).contains(&m)) {
                ctx.error(mspan, format!("`{key}.median` must be between 1 and 100000000"));
                return None;
            }
            if !(p.is_finite() && p >= m && p <= 1e9) {
                ctx.error(pspan, format!("`{key}.p99` must be at least its median ({m})"));
                return None;
            }
            Some(Tokens::LogNormal { median: m, p99: p })
        }
        _ => {
            ctx.error(v.span(), format!("`{key}` in {} must be a count or {{ median = .., p99 = .. }}", t.name));
            None
        }
    }
}

const ARRIVAL_KINDS: [&str; 7] = ["constant", "poisson", "burst", "ramp", "diurnal", "trace", ""];

fn positive_rate(ctx: &mut Ctx, a: &Table<'_, '_>, key: &str) -> Option<f64> {
    let (r, span) = a.required(a.rate(ctx, key), ctx, key)?;
    if r <= 0.0 {
        ctx.error(span, format!("`{key}` in the arrival must be more than zero"));
        return None;
    }
    Some(r)
}

fn arrival(ctx: &mut Ctx, a: &Table<'_, '_>, base: Option<&Path>) -> Option<Arrival> {
    let kinds: Vec<(&str, &str)> = ARRIVAL_KINDS[..6].iter().map(|k| (*k, *k)).collect();
    let kind = a.required(a.choice(ctx, "kind", &kinds), ctx, "kind")?;
    match kind {
        "constant" | "poisson" => {
            a.allow(ctx, &["kind", "rate"]);
            let rate = positive_rate(ctx, a, "rate")?;
            Some(if kind == "constant" { Arrival::Constant { rate } } else { Arrival::Poisson { rate } })
        }
        "burst" => {
            a.allow(ctx, &["kind", "size", "every", "rate", "on", "off"]);
            if a.has("size") || a.has("every") {
                let size = a.required(a.uint(ctx, "size"), ctx, "size");
                let every = a.required(a.duration(ctx, "every"), ctx, "every");
                let ((size, sspan), (every, espan)) = (size?, every?);
                if size == 0 || size > 100_000 {
                    ctx.error(sspan, "burst `size` must be between 1 and 100000");
                }
                if every == 0 {
                    ctx.error(espan.clone(), "burst `every` must be longer than zero");
                }
                if size as f64 * 1000.0 / every.max(1) as f64 > fields::MAX_RATE {
                    ctx.error(
                        espan,
                        format!("bursts of {size} every {every} ms exceed {} requests per second", fields::MAX_RATE),
                    );
                    return None;
                }
                (size > 0 && size <= 100_000 && every > 0).then_some(Arrival::Batch { size, every_ms: every })
            } else {
                let rate = positive_rate(ctx, a, "rate");
                let on = a.required(a.duration(ctx, "on"), ctx, "on");
                let off = a.required(a.duration(ctx, "off"), ctx, "off");
                let ((on, span), (off, _)) = (on?, off?);
                if on == 0 {
                    ctx.error(span, "burst `on` must be longer than zero");
                    return None;
                }
                Some(Arrival::OnOff { rate: rate?, on_ms: on, off_ms: off })
            }
        }
        "ramp" => {
            a.allow(ctx, &["kind", "from", "to", "over"]);
            let from = a.required(a.rate(ctx, "from"), ctx, "from").map(|(r, _)| r);
            let to = a.required(a.rate(ctx, "to"), ctx, "to");
            let over = a.required(a.duration(ctx, "over"), ctx, "over").map(|(d, _)| d);
            let (from, (to, tspan)) = (from?, to?);
            if from <= 0.0 && to <= 0.0 {
                ctx.error(tspan, "a ramp from 0 to 0 sends nothing: give `from` or `to` a rate above 0");
                return None;
            }
            Some(Arrival::Ramp { from, to, over_ms: over?.max(1) })
        }
        "diurnal" => {
            a.allow(ctx, &["kind", "min", "max", "peak"]);
            let min = a.required(a.rate(ctx, "min"), ctx, "min").map(|(r, _)| r);
            let max = a.required(a.rate(ctx, "max"), ctx, "max");
            let peak = match a.string(ctx, "peak") {
                Some((p, span)) => match chrono::NaiveTime::parse_from_str(&p, "%H:%M") {
                    Ok(t) => Some(u64::from(chrono::Timelike::num_seconds_from_midnight(&t)) * 1000),
                    Err(_) => {
                        ctx.error(span, format!("`peak` must be a Pacific time of day such as \"14:00\", found '{p}'"));
                        None
                    }
                },
                None => Some(14 * 3_600_000),
            };
            let (min, (max, mspan)) = (min?, max?);
            if max < min {
                ctx.error(mspan, "diurnal `max` must be at least `min`");
                return None;
            }
            if max <= 0.0 {
                ctx.error(mspan, "a diurnal rate from 0 to 0 sends nothing: give `max` a rate above 0");
                return None;
            }
            Some(Arrival::Diurnal { min, max, peak_ms: peak? })
        }
        _ => trace(ctx, a, base).map(Arrival::Trace),
    }
}

fn trace(ctx: &mut Ctx, a: &Table<'_, '_>, base: Option<&Path>) -> Option<Trace> {
    a.allow(ctx, &["kind", "file", "time_column", "input_column", "output_column", "speedup", "repeat", "limit"]);
    let (file, span) = a.required(a.string(ctx, "file"), ctx, "file")?;
    let col =
        |ctx: &mut Ctx, key: &str, default: &str| a.string(ctx, key).map_or_else(|| default.to_owned(), |(s, _)| s);
    let time_col = col(ctx, "time_column", "TIMESTAMP");
    let input_col = col(ctx, "input_column", "ContextTokens");
    let output_col = col(ctx, "output_column", "GeneratedTokens");
    let speedup = match a.float(ctx, "speedup") {
        Some((s, sspan)) if !(s > 1e-3 && s <= 1e6) => {
            ctx.error(sspan, "`speedup` must be between 0.001 and 1000000");
            return None;
        }
        Some((s, _)) => s,
        None => 1.0,
    };
    let repeat = a.boolean(ctx, "repeat").unwrap_or(false);
    let limit = a.uint(ctx, "limit").map(|(l, _)| l as usize);
    let path = base.map_or_else(|| Path::new(&file).to_path_buf(), |b| b.join(&file));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            ctx.error(
                span,
                format!("cannot read trace file '{file}' (paths are relative to the scenario's folder): {e}"),
            );
            return None;
        }
    };
    match read_trace(&text, [&time_col, &input_col, &output_col], speedup, limit) {
        Ok((rows, period_ms)) if rows.len() as f64 * 1000.0 / period_ms as f64 > fields::MAX_RATE => {
            ctx.error(
                span,
                format!("trace '{file}' replayed at this speed-up exceeds {} requests per second", fields::MAX_RATE),
            );
            None
        }
        Ok((rows, period_ms)) => Some(Trace { file, rows, repeat, period_ms }),
        Err(e) => {
            ctx.error(span, format!("trace file '{file}': {e}"));
            None
        }
    }
}

type TraceRows = (Vec<Recorded>, u64);

/// Reads a CSV trace into (offset ms, input, output) rows, sorted by time.
pub(super) fn read_trace(text: &str, cols: [&str; 3], speedup: f64, limit: Option<usize>) -> Result<TraceRows, String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let idx: Vec<usize> =
        cols.iter()
            .map(|c| {
                headers.iter().position(|h| h == *c).ok_or_else(|| {
                    format!("no column '{c}' (columns: {})", headers.iter().collect::<Vec<_>>().join(", "))
                })
            })
            .collect::<Result<_, _>>()?;
    let mut raw: Vec<(f64, u64, u64)> = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        if limit.is_some_and(|l| raw.len() >= l) {
            break;
        }
        let line = n + 2;
        let rec = rec.map_err(|e| format!("line {line}: {e}"))?;
        let field = |i: usize| rec.get(idx[i]).unwrap_or("");
        let t = super::logs::parse_seconds(field(0))
            .ok_or_else(|| format!("line {line}: bad time '{}' in column '{}'", field(0), cols[0]))?;
        let num = |i: usize| {
            field(i)
                .parse::<u64>()
                .map_err(|_| format!("line {line}: bad count '{}' in column '{}'", field(i), cols[i]))
        };
        raw.push((t, num(1)?, num(2)?));
    }
    if raw.is_empty() {
        return Err("holds no requests".into());
    }
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = raw[0].0;
    let span_s = raw[raw.len() - 1].0 - t0;
    if span_s / speedup * 1000.0 > fields::MAX_DURATION_MS as f64 {
        return Err(format!("spans {span_s:.0} s, more than the 400 days a run may last"));
    }
    let rows: Vec<Recorded> = raw
        .iter()
        .map(|&(t, input, output)| Recorded {
            at: ((t - t0) * 1000.0 / speedup).round() as u64,
            input,
            output,
            answer: None,
        })
        .collect();
    let last = rows.last().map_or(0, |r| r.at);
    let gap = if rows.len() > 1 { last / (rows.len() as u64 - 1) } else { 1_000 };
    Ok((rows, last + gap.max(1)))
}

/// What `[[events]]` hold: the pool's events (the engine is told) and the provider's own
/// (the engine learns of them from its answers).
pub(super) fn events(
    ctx: &mut Ctx,
    root: &Table<'_, '_>,
    projects: &[ProjectDef],
    models: &[ModelDef],
    duration: u64,
) -> (Vec<TimedEvent>, Vec<ProviderEventAt>) {
    const ACTIONS: [&str; 9] =
        ["add", "remove", "enable", "disable", "revoke", "suspend", "invalidate", "revive", "limits"];
    let mut keys: Vec<String> = projects.iter().flat_map(|p| p.keys.iter().cloned()).collect();
    let mut parsed: Vec<(TimedEvent, Span)> = Vec::new();
    let mut provider = Vec::new();
    for t in root.tables(ctx, "events") {
        let mut allowed = vec!["at"];
        allowed.extend(ACTIONS);
        t.allow(ctx, &allowed);
        let at = t.required(t.duration(ctx, "at"), ctx, "at");
        if let Some((ms, span)) = &at {
            if *ms > duration {
                ctx.error(span.clone(), format!("event at {ms} ms comes after the scenario ends"));
            }
        }
        let actions: Vec<&str> = ACTIONS.into_iter().filter(|k| t.has(k)).collect();
        if actions.len() != 1 {
            let names: Vec<String> = ACTIONS.iter().map(|a| format!("`{a}`")).collect();
            ctx.error(t.span.clone(), format!("{} needs exactly one of {}", t.name, names.join(", ")));
            continue;
        }
        // The provider's own doings: about keys it issued, or a project's limits.
        match actions[0] {
            "suspend" | "invalidate" | "revive" => {
                if let (Some((at_ms, _)), Some((key, span))) = (&at, t.string(ctx, actions[0])) {
                    if !keys.contains(&key) {
                        let k = crate::engine::redact(&key);
                        ctx.error(span, format!("unknown key '{k}' (not in the pool)"));
                        continue;
                    }
                    let event = match actions[0] {
                        "suspend" => ProviderEvent::Suspend(key),
                        "invalidate" => ProviderEvent::Invalidate(key),
                        _ => ProviderEvent::Revive(key),
                    };
                    provider.push(ProviderEventAt { at_ms: *at_ms, event });
                }
                continue;
            }
            "limits" => {
                if let (Some((at_ms, _)), Some(l)) = (&at, t.table(ctx, "limits")) {
                    l.allow(ctx, &["project", "model", "rpm", "tpm", "rpd", "tpd"]);
                    let project = l.required(l.string(ctx, "project"), ctx, "project");
                    let model = l.required(l.string(ctx, "model"), ctx, "model");
                    let (Some((project, pspan)), Some((model, mspan))) = (project, model) else { continue };
                    let Some(p) = projects.iter().position(|x| x.id == project) else {
                        ctx.error(pspan, format!("unknown project '{project}' in {}", t.name));
                        continue;
                    };
                    let Some(m) = models.iter().position(|x| x.name == model) else {
                        ctx.error(mspan, format!("unknown model '{model}' in {}", t.name));
                        continue;
                    };
                    let mut limits = projects[p].limits[m];
                    for key in ["rpm", "tpm", "rpd", "tpd"] {
                        if let Some((v, span)) = l.uint(ctx, key) {
                            if v == 0 {
                                ctx.error(span, format!("`{key}` must be at least 1"));
                                continue;
                            }
                            match key {
                                "rpm" => limits.rpm = v,
                                "tpm" => limits.tpm = v,
                                "rpd" => limits.rpd = v,
                                _ => limits.tpd = Some(v),
                            }
                        }
                    }
                    let quota =
                        mock_server::ModelQuota { rpm: limits.rpm, tpm: limits.tpm, rpd: limits.rpd, tpd: limits.tpd };
                    let event = ProviderEvent::Limits { project: p, model: m, quota };
                    provider.push(ProviderEventAt { at_ms: *at_ms, event });
                }
                continue;
            }
            _ => {}
        }
        let event = match actions[0] {
            "add" => t.table(ctx, "add").and_then(|a| {
                a.allow(ctx, &["key", "project"]);
                let key = a.required(a.string(ctx, "key"), ctx, "key");
                let project = a.required(a.string(ctx, "project"), ctx, "project");
                let ((key, kspan), (project, pspan)) = (key?, project?);
                if !projects.iter().any(|p| p.id == project) {
                    ctx.error(pspan, format!("unknown project '{project}' in {}", t.name));
                    return None;
                }
                Some((PoolEvent::Add(KeySpec { id: key, project }), kspan))
            }),
            action => t.string(ctx, action).map(|(key, span)| {
                let e = match action {
                    "remove" => PoolEvent::Remove(key),
                    "enable" => PoolEvent::Enable(key),
                    "disable" => PoolEvent::Disable(key),
                    _ => PoolEvent::Revoke(key),
                };
                (e, span)
            }),
        };
        if let (Some((at, _)), Some((event, span))) = (at, event) {
            parsed.push((TimedEvent { at_ms: at, event }, span));
        }
    }
    parsed.sort_by_key(|(e, _)| e.at_ms);
    for (e, span) in &parsed {
        match &e.event {
            PoolEvent::Add(k) if keys.contains(&k.id) => {
                ctx.error(span.clone(), format!("key '{}' is already in the pool", crate::engine::redact(&k.id)))
            }
            PoolEvent::Add(k) => keys.push(k.id.clone()),
            PoolEvent::Remove(k) | PoolEvent::Enable(k) | PoolEvent::Disable(k) | PoolEvent::Revoke(k)
                if !keys.contains(k) =>
            {
                let k = crate::engine::redact(k);
                ctx.error(span.clone(), format!("unknown key '{k}' (not in the pool at that time)"));
            }
            _ => {}
        }
    }
    provider.sort_by_key(|e| e.at_ms);
    (parsed.into_iter().map(|(e, _)| e).collect(), provider)
}

pub(super) fn expectations(ctx: &mut Ctx, t: Option<&Table<'_, '_>>) -> Vec<Expectation> {
    let Some(t) = t else { return Vec::new() };
    let names: Vec<&str> = Metric::NAMES.iter().map(|(n, _)| *n).collect();
    t.allow(ctx, &names);
    let mut out = Vec::new();
    for (name, metric) in Metric::NAMES {
        let Some(v) = t.raw(name) else { continue };
        let parsed = match v.get_ref() {
            DeValue::String(s) => units::parse_comparison(s),
            other => float_of(other)
                .map(|x| (units::Cmp::Eq, x))
                .ok_or_else(|| "expected a number or a comparison such as \">= 0.99\"".to_owned()),
        };
        match parsed {
            Ok((cmp, limit)) => out.push(Expectation { metric, cmp, limit }),
            Err(e) => ctx.error(v.span(), format!("`{name}` in [expect]: {e}")),
        }
    }
    out
}

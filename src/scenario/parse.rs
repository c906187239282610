//! From text to a validated [`Scenario`]: the spanned TOML tree is read section by section,
//! and every problem is collected before anything is returned.

use std::path::Path;

use chrono::DateTime;
use mock_server::{Enforcement, FaultModel, LatencyModel};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diagnostics;
use super::model::*;
use super::traffic::{events, expectations, traffic};
use crate::engine::pool_file::{self, Ctx, EngineDef, Table};
use crate::engine::Timestamp;
use crate::sim::gateway::GatewayKind;

/// Where the scenario's week starts if it names no `start`: a Wednesday at 00:00 Pacific.
const DEFAULT_START: &str = "2026-11-25T00:00:00-08:00";

/// Parses and validates scenario `text`. `origin` names it in diagnostics; `base` is the
/// folder relative paths (trace files) are resolved against; `overrides` are `path=value`
/// settings (`engine.admission=check-then-act`) applied on top of the file.
pub fn parse(text: &str, origin: &str, base: Option<&Path>, overrides: &[String]) -> Result<Scenario, Diagnostics> {
    parse_as(text, origin, base, overrides, true)
}

/// Parses a scenario file for the fake alone (`keysim mock`): its pool and provider, with
/// `[[traffic]]` optional — the fake serves whoever calls it.
pub fn parse_pool(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    overrides: &[String],
) -> Result<Scenario, Diagnostics> {
    parse_as(text, origin, base, overrides, false)
}

fn parse_as(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    overrides: &[String],
    needs_traffic: bool,
) -> Result<Scenario, Diagnostics> {
    let (source, places) = super::overrides::source(text, overrides);
    let fail = |items| Diagnostics { origin: origin.to_owned(), source: source.clone(), items };
    let mut root = pool_file::document(&source[..text.len()]).map_err(fail)?;
    let mut ctx = Ctx::default();
    // Overrides apply in order, each on its own: `traffic=[…]` replaces the traffic, then
    // `traffic.0.scale=2` reaches into it.
    for place in places {
        match DeTable::parse(&source[place.clone()]) {
            Ok(t) => {
                let shifted = super::overrides::shift_table(t.into_inner(), place.start);
                for (span, message) in super::overrides::merge(&mut root, shifted) {
                    ctx.error(span, message);
                }
            }
            Err(e) => ctx.error(place, format!("bad --set override: {}", e.message())),
        }
    }
    let root = Spanned::new(0..source.len(), root);
    let table = Table::new(&root, "the scenario file");
    let scenario = build(&mut ctx, &table, base, needs_traffic);
    ctx.finish(origin, &source)?;
    // Every `None` comes with a diagnostic, so `finish` has returned them.
    scenario.ok_or_else(|| fail(Vec::new()))
}

const ROOT_KEYS: &[&str] = &[
    "scenario", "provider", "models", "projects", "engine", "traffic", "events", "expect", "warnings", "output",
    "compare", "replicas",
];

fn build(ctx: &mut Ctx, root: &Table<'_, '_>, base: Option<&Path>, needs_traffic: bool) -> Option<Scenario> {
    root.allow(ctx, ROOT_KEYS);
    let head = root.required(root.table(ctx, "scenario"), ctx, "scenario");
    let (name, seed, duration_ms, start, timeline_ms) = match &head {
        Some(t) => header(ctx, t),
        None => (None, Some(0), None, Some(parse_start(DEFAULT_START).expect("default start parses")), Some(60_000)),
    };
    let provider_table = root.table(ctx, "provider");
    let provider = provider(ctx, provider_table.as_ref(), base);
    let truth = provider.as_ref().and_then(|p| p.tokenizer.clone());
    let pool_file::Sections { models, projects, mut engine, warnings } =
        pool_file::sections(ctx, root, seed.unwrap_or(0), base, truth.as_ref(), GATEWAY_FIELDS);
    let gateway = gateway(ctx, root, engine.as_mut());
    let super::traffic::Traffic { classes: traffic, window } = match needs_traffic || root.has("traffic") {
        true => traffic(ctx, root, &models, duration_ms, seed.unwrap_or(0), base, truth.as_ref()),
        false => super::traffic::Traffic { classes: Vec::new(), window: None },
    };
    // A log's window is the run's calendar; otherwise [scenario] gives its length.
    let (start, duration_ms) = match window {
        Some((from, to)) => (Some(Timestamp(from)), Some(to - from)),
        None => (start, head.as_ref().and_then(|t| t.required(duration_ms, ctx, "duration"))),
    };
    let (events, provider_events) = events(ctx, root, &projects, &models, duration_ms.unwrap_or(u64::MAX));
    let provider = provider.map(|mut p| {
        p.script.events = provider_events;
        p
    });
    let expect_table = root.table(ctx, "expect");
    let expect = expectations(ctx, expect_table.as_ref());
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
        gateway: gateway?,
        traffic,
        events,
        expect,
        warnings: warnings?,
        replicas: replicas?,
    })
}

/// The `[engine]` fields only the simulator reads: which gateway runs, and where it believes
/// quota lives. A proxy's configuration refuses them.
const GATEWAY_FIELDS: &[&str] = &["admission", "quota_scope"];

/// `admission` and `quota_scope` of `[engine]` (the latter into `engine`'s settings).
fn gateway(ctx: &mut Ctx, root: &Table<'_, '_>, engine: Option<&mut EngineDef>) -> Option<GatewayKind> {
    // The section's own errors (not a table) are reported once, by the pool sections.
    let t = match root.raw("engine").map(|v| matches!(v.get_ref(), DeValue::Table(_))) {
        Some(true) => root.table(ctx, "engine")?,
        _ => return Some(GatewayKind::default()),
    };
    let kind = if t.has("admission") { t.setting(ctx, "admission")? } else { GatewayKind::default() };
    if t.has("quota_scope") {
        let scope = t.setting(ctx, "quota_scope")?;
        if let Some(e) = engine {
            e.config.scope = scope;
        }
    }
    Some(kind)
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
    // Required unless a log sets it (checked once the traffic is read).
    let duration = t.duration(ctx, "duration").and_then(|(d, span)| {
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
        p.tokenizer = pool_file::tokenizer(ctx, t, "tokenizer", base);
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

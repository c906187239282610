//! What arithmetic says a rate needs: projects on the binding dimension, with the engine's own
//! rounded ceilings, for the scenario's limits and for tier 1.

use serde::Serialize;

use super::pool::peak_rate;
use crate::scenario::{self, Arrival, Scenario, Tokens};

/// Mean input (and output) tokens per request of a class.
pub(crate) fn mean_tokens(c: &scenario::TrafficClass, counts_output: bool) -> f64 {
    let mean = |t: &Tokens| match *t {
        Tokens::Fixed(n) => n as f64,
        Tokens::LogNormal { median, p99 } => {
            let sigma = (p99 / median).ln() / 2.326;
            median * (sigma * sigma / 2.0).exp()
        }
    };
    let input = match (&c.corpus, &c.arrival) {
        (Some(corpus), _) if !corpus.texts.is_empty() => {
            corpus.texts.iter().map(|t| t.tokens as f64).sum::<f64>() / corpus.texts.len() as f64
        }
        (_, Arrival::Trace(t)) if !t.rows.is_empty() => {
            t.rows.iter().map(|r| r.input as f64).sum::<f64>() / t.rows.len() as f64
        }
        _ => mean(&c.prompt_tokens),
    };
    let output = if counts_output { mean(&c.output_tokens) } else { 0.0 };
    input + output
}

/// A clock minute of recorded traffic (traces and logs): requests and input tokens arriving
/// in it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Minute {
    /// Its start, in Pacific time (`Tue 2 Dec 09:14 PST`).
    pub(crate) at: String,
    /// Its start, ms since the epoch.
    pub(crate) start_ms: u64,
    /// Requests that arrived in it.
    pub(crate) requests: u64,
    /// Their input tokens.
    pub(crate) tokens: u64,
}

/// Requests and input tokens per clock minute (ms since the epoch / 60 000) of the recorded
/// classes of `sc` (of `model` only, if given).
fn per_minute(sc: &Scenario, model: Option<usize>) -> std::collections::BTreeMap<u64, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for c in sc.traffic.iter().filter(|c| model.is_none_or(|m| c.model == m)) {
        if let Arrival::Trace(t) = &c.arrival {
            for r in &t.rows {
                let e = out.entry((sc.start.0 + c.start_ms + r.at) / 60_000).or_insert((0, 0));
                e.0 += 1;
                e.1 += r.input;
            }
        }
    }
    out
}

/// The `n` busiest minutes of the recorded traffic of `sc`, busiest first.
pub(crate) fn busiest_minutes(sc: &Scenario, n: usize) -> Vec<Minute> {
    let mut minutes: Vec<(u64, (u64, u64))> = per_minute(sc, None).into_iter().collect();
    minutes.sort_by_key(|(m, (requests, _))| (std::cmp::Reverse(*requests), *m));
    minutes
        .into_iter()
        .take(n)
        .map(|(m, (requests, tokens))| {
            let start_ms = m * 60_000;
            let at = chrono::DateTime::from_timestamp_millis(start_ms as i64)
                .map(|t| t.with_timezone(&chrono_tz::America::Los_Angeles).format("%a %-d %b %Y %H:%M %Z").to_string())
                .unwrap_or_default();
            Minute { at, start_ms, requests, tokens }
        })
        .collect()
}

/// A class's rate for the arithmetic (requests/s) and its requests' mean tokens: its peak,
/// or for recorded traffic its busiest clock minute's (with that minute's tokens).
fn rate_and_tokens(sc: &Scenario, m: usize, counts_output: bool) -> (f64, f64) {
    let (mut rate, mut tokens) = (0.0, 0.0);
    for c in sc.traffic.iter().filter(|c| c.model == m && !matches!(c.arrival, Arrival::Trace(_))) {
        let r = peak_rate(&c.arrival);
        rate += r;
        tokens += r * mean_tokens(c, counts_output);
    }
    if let Some((_, (requests, input))) =
        per_minute(sc, Some(m)).into_iter().max_by_key(|(m, (r, _))| (*r, std::cmp::Reverse(*m)))
    {
        rate += requests as f64 / 60.0;
        tokens += input as f64 / 60.0;
    }
    (rate, if rate > 0.0 { tokens / rate } else { 0.0 })
}

/// What arithmetic says a pool needs: the dimension that binds first, what one project can
/// serve on it (requests/s), and the projects needed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Arithmetic {
    pub(crate) model: String,
    /// The rate it plans for (requests/s): the peak, or a log's busiest minute.
    pub(crate) rate: f64,
    pub(crate) binding: &'static str,
    pub(crate) per_project_rps: f64,
    pub(crate) projects: u64,
    pub(crate) headroom_at: Option<(u64, f64)>,
}

/// Requests/s one project serves on each dimension, with the engine's ceilings `c` (limits
/// less safety margin and reserve, as the engine rounds them), for requests of `tokens` and
/// `day_s` seconds of a Pacific day; the smallest is the binding one.
pub(crate) fn binding(c: &crate::engine::Ceilings, tokens: f64, day_s: f64) -> (&'static str, f64) {
    use crate::engine::Dimension as D;
    let tokens = tokens.max(1.0);
    let per = |d: D, div: f64| {
        let v = c.get(d);
        if v == u64::MAX {
            f64::INFINITY
        } else {
            v as f64 / div
        }
    };
    let dims = [
        ("RPM", per(D::Rpm, 60.0)),
        ("TPM", per(D::Tpm, 60.0 * tokens)),
        ("RPD", per(D::Rpd, day_s)),
        ("TPD", per(D::Tpd, day_s * tokens)),
    ];
    dims.into_iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("dimensions")
}

/// The arithmetic for `sc` (already at its swept rate) over `day_s` seconds of a day, per
/// model, with each project's limits from `limits(project, model)` averaged over the
/// scenario's projects (the templates a swept pool cycles through); the neediest model first.
pub(crate) fn arithmetic(
    sc: &Scenario,
    day_s: f64,
    limits: impl Fn(usize, usize) -> crate::engine::Limits,
) -> Vec<Arithmetic> {
    let high = sc.traffic.iter().any(|c| c.priority == crate::engine::Priority::High);
    let cfg = &sc.engine.config;
    let reserve = if high { 0.0 } else { cfg.reserve };
    let mut out: Vec<Arithmetic> = (0..sc.models.len())
        .filter_map(|m| {
            let (rate, tokens) = rate_and_tokens(sc, m, sc.provider.counts_output);
            if rate <= 0.0 {
                return None;
            }
            let caps: Vec<(&'static str, f64)> = (0..sc.projects.len())
                .map(|p| {
                    binding(&crate::engine::Ceilings::from_limits(&limits(p, m), cfg.safety, reserve), tokens, day_s)
                })
                .collect();
            let dim = caps[0].0;
            let rps = caps.iter().map(|c| c.1).sum::<f64>() / caps.len() as f64;
            let projects = if rps > 0.0 { (rate / rps - 1e-9).ceil().max(1.0) as u64 } else { u64::MAX };
            Some(Arithmetic {
                model: sc.models[m].name.clone(),
                rate,
                binding: dim,
                per_project_rps: rps,
                projects,
                headroom_at: None,
            })
        })
        .collect();
    out.sort_by_key(|a| std::cmp::Reverse(a.projects));
    out
}

/// Tier-1 limits of well-known models (Google's mid/late-2025 table as republished; a
/// project's own are in AI Studio). Longest names first, so that a prefix finds its model.
pub(crate) const TIER1: [(&str, u64, u64, u64); 4] = [
    ("gemini-2.5-flash-lite", 4_000, 4_000_000, u64::MAX),
    ("gemini-2.5-flash", 1_000, 1_000_000, 10_000),
    ("gemini-2.5-pro", 150, 2_000_000, 10_000),
    ("gemini-2.0-flash", 2_000, 4_000_000, u64::MAX),
];

pub(crate) fn tier1(model: &str) -> Option<crate::engine::Limits> {
    TIER1.iter().find(|(name, ..)| model.starts_with(name)).map(|&(_, rpm, tpm, rpd)| crate::engine::Limits {
        rpm,
        tpm,
        rpd,
        tpd: None,
    })
}

//! `keysim plan`: capacity planning. Sweeps the pool's size (and the traffic's rate, and any
//! other setting) over a grid, simulates every point on all cores, and finds the smallest pool
//! that meets a service objective. Writes `plan.csv`, `plan.json`, a heatmap and
//! `report.html`, and says the answer in a sentence.
//!
//! - `projects=N` builds the pool from N projects, cycling through the scenario's own as
//!   templates (so the scenario's count reproduces it); extra copies get suffixed ids.
//! - `rate=R` scales every traffic class so that the sum of their peak rates is R requests/s.
//! - any other `path=v1,v2` is a `--set` override per point.
//!
//! Every point is a deterministic simulation of its own; the grid's order of execution does
//! not change any result.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

use super::CliError;
use crate::engine::PoolEvent;
use crate::report::chart::{Figure, Heat, Panel};
use crate::report::html;
use crate::scenario::{self, Arrival, Scenario, Tokens};
use crate::sim::{simulate, Outputs};

pub(super) struct PlanOptions {
    pub(super) scenario: PathBuf,
    pub(super) overrides: Vec<String>,
    pub(super) sweeps: Vec<String>,
    pub(super) min_success: f64,
    pub(super) max_breaches: u64,
    pub(super) max_queue_p99: Option<String>,
    pub(super) jobs: Option<usize>,
    pub(super) out: Option<PathBuf>,
    pub(super) json: bool,
    pub(super) quiet: bool,
}

/// One swept parameter and its values.
#[derive(Clone, Debug, PartialEq)]
enum Axis {
    Projects(Vec<u64>),
    Rate(Vec<f64>),
    Set { path: String, values: Vec<String> },
}

impl Axis {
    fn name(&self) -> &str {
        match self {
            Self::Projects(_) => "projects",
            Self::Rate(_) => "rate",
            Self::Set { path, .. } => path,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Projects(v) => v.len(),
            Self::Rate(v) => v.len(),
            Self::Set { values, .. } => values.len(),
        }
    }

    fn label(&self, i: usize) -> String {
        match self {
            Self::Projects(v) => v[i].to_string(),
            Self::Rate(v) => trim(v[i]),
            Self::Set { values, .. } => values[i].clone(),
        }
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Values of a sweep: `a,b,c`, or `lo..hi` (inclusive, step 1), or `lo..hi:step`.
fn numbers(spec: &str, flag: &str) -> Result<Vec<f64>, String> {
    let bad = |why: &str| format!("--sweep {flag}: {why} (write a,b,c or lo..hi or lo..hi:step)");
    let parse = |s: &str| s.trim().parse::<f64>().map_err(|_| bad(&format!("'{s}' is not a number")));
    let values = if let Some((lo, rest)) = spec.split_once("..") {
        let (hi, step) = match rest.split_once(':') {
            Some((hi, step)) => (parse(hi)?, parse(step)?),
            None => (parse(rest)?, 1.0),
        };
        let lo = parse(lo)?;
        if step.is_nan() || step <= 0.0 || hi < lo {
            return Err(bad("the range must rise by a positive step"));
        }
        let n = ((hi - lo) / step + 1e-9).floor() + 1.0;
        if !(n.is_finite() && n <= 1000.0) {
            return Err(bad("more than 1000 values"));
        }
        let n = n as usize;
        (0..n).map(|i| lo + step * i as f64).collect()
    } else {
        spec.split(',').map(parse).collect::<Result<Vec<_>, _>>()?
    };
    if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err(bad("values must be positive numbers"));
    }
    Ok(values)
}

fn parse_axis(spec: &str) -> Result<Axis, String> {
    let (name, values) = spec.split_once('=').ok_or_else(|| format!("--sweep {spec}: expected NAME=VALUES"))?;
    let name = name.trim();
    match name {
        "projects" => {
            let v = numbers(values, name)?;
            if v.iter().any(|x| x.fract() != 0.0 || *x > 10_000.0) {
                return Err("--sweep projects: whole numbers from 1 to 10000".into());
            }
            Ok(Axis::Projects(v.into_iter().map(|x| x as u64).collect()))
        }
        "rate" => Ok(Axis::Rate(numbers(values, name)?)),
        path => {
            let values: Vec<String> = values.split(',').map(|s| s.trim().to_owned()).collect();
            if path.is_empty() || values.iter().any(String::is_empty) {
                return Err(format!("--sweep {spec}: expected PATH=v1,v2,…"));
            }
            Ok(Axis::Set { path: path.to_owned(), values })
        }
    }
}

/// The peak request rate of a class (requests/s).
fn peak_rate(a: &Arrival) -> f64 {
    match a {
        Arrival::Constant { rate } | Arrival::Poisson { rate } | Arrival::OnOff { rate, .. } => *rate,
        Arrival::Batch { size, every_ms } => *size as f64 * 1000.0 / (*every_ms).max(1) as f64,
        Arrival::Ramp { from, to, .. } => from.max(*to),
        Arrival::Diurnal { max, .. } => *max,
        Arrival::Trace(t) => t.rows.len() as f64 * 1000.0 / t.period_ms.max(1) as f64,
    }
}

fn scale_arrival(a: &mut Arrival, f: f64) {
    match a {
        Arrival::Constant { rate } | Arrival::Poisson { rate } | Arrival::OnOff { rate, .. } => *rate *= f,
        Arrival::Batch { every_ms, .. } => *every_ms = ((*every_ms as f64 / f).round() as u64).max(1),
        Arrival::Ramp { from, to, .. } => {
            *from *= f;
            *to *= f;
        }
        Arrival::Diurnal { min, max, .. } => {
            *min *= f;
            *max *= f;
        }
        Arrival::Trace(t) => {
            for r in &mut t.rows {
                r.0 = (r.0 as f64 / f).round() as u64;
            }
            t.period_ms = ((t.period_ms as f64 / f).round() as u64).max(1);
        }
    }
}

/// The traffic's total peak rate: the sum of its classes' peaks.
fn total_rate(sc: &Scenario) -> f64 {
    sc.traffic.iter().map(|c| peak_rate(&c.arrival)).sum()
}

/// Scales the traffic to a total peak of `rate` requests/s.
fn set_rate(sc: &mut Scenario, rate: f64) -> Result<(), String> {
    let now = total_rate(sc);
    if now <= 0.0 {
        return Err(format!("{}: the traffic has no rate to scale", sc.name));
    }
    for c in &mut sc.traffic {
        scale_arrival(&mut c.arrival, rate / now);
    }
    Ok(())
}

/// Builds the pool from `n` projects, the scenario's own as templates in turn: copy `c` of a
/// project gets ids suffixed `-xc`, and a copy of every pool event that names it or its keys.
/// Events naming projects a smaller pool lacks are dropped.
fn set_projects(sc: &mut Scenario, n: u64) {
    let base = sc.projects.clone();
    let copies = (n as usize).div_ceil(base.len());
    let rename = |id: &str, copy: usize| if copy == 0 { id.to_owned() } else { format!("{id}-x{copy}") };
    sc.projects = (0..n as usize)
        .map(|i| {
            let mut p = base[i % base.len()].clone();
            let copy = i / base.len();
            p.id = rename(&p.id, copy);
            p.keys = p.keys.iter().map(|k| rename(k, copy)).collect();
            p
        })
        .collect();
    // Which template project each key (present or added later) belongs to.
    let mut owner: std::collections::HashMap<String, String> =
        base.iter().flat_map(|p| p.keys.iter().map(|k| (k.clone(), p.id.clone()))).collect();
    for e in &sc.events {
        if let PoolEvent::Add(k) = &e.event {
            owner.entry(k.id.clone()).or_insert_with(|| k.project.clone());
        }
    }
    let mut events = Vec::with_capacity(sc.events.len() * copies);
    for e in &sc.events {
        let project = match &e.event {
            PoolEvent::Add(k) => Some(&k.project),
            PoolEvent::Remove(k) | PoolEvent::Enable(k) | PoolEvent::Disable(k) | PoolEvent::Revoke(k) => owner.get(k),
            // Scenarios change keys only; project-level events are not copied.
            _ => None,
        };
        let Some(project) = project else { continue };
        for copy in 0..copies {
            if !sc.projects.iter().any(|p| p.id == rename(project, copy)) {
                continue;
            }
            let event = match &e.event {
                PoolEvent::Add(k) => {
                    PoolEvent::Add(crate::engine::KeySpec { id: rename(&k.id, copy), project: rename(project, copy) })
                }
                PoolEvent::Remove(k) => PoolEvent::Remove(rename(k, copy)),
                PoolEvent::Enable(k) => PoolEvent::Enable(rename(k, copy)),
                PoolEvent::Disable(k) => PoolEvent::Disable(rename(k, copy)),
                PoolEvent::Revoke(k) => PoolEvent::Revoke(rename(k, copy)),
                other => other.clone(),
            };
            events.push(crate::scenario::TimedEvent { at_ms: e.at_ms, event });
        }
    }
    sc.events = events;
}

/// Most points a grid may have.
const MAX_POINTS: usize = 100_000;

/// The service objective.
#[derive(Clone, Copy, Debug, Serialize)]
struct Objective {
    min_success: f64,
    max_breaches: u64,
    max_queue_p99_ms: Option<u64>,
}

/// One simulated point.
#[derive(Clone, Debug, Serialize)]
struct Outcome {
    total: u64,
    succeeded: u64,
    breaches: u64,
    denied: u64,
    success_rate: f64,
    utilization: f64,
    /// p99 queue wait over all requests (those that did not wait count as 0).
    queue_p99_ms: u64,
    meets: bool,
}

/// p99 of the queue wait over every request, from the histogram of those that waited.
fn queue_p99_all(agg: &crate::report::Aggregate) -> u64 {
    let waited = agg.queue_wait_ms.len();
    let total = agg.counts.total;
    if total == 0 || waited as f64 <= 0.01 * total as f64 {
        return 0;
    }
    agg.queue_wait_ms.value_at_quantile(1.0 - 0.01 * total as f64 / waited as f64)
}

fn simulate_point(sc: &Scenario, slo: &Objective) -> anyhow::Result<Outcome> {
    let r = simulate(sc, Outputs::default()).with_context(|| format!("simulating {}", sc.name))?;
    let a = &r.aggregate;
    let c = a.counts;
    let servable = a.servable.unwrap_or(c.total);
    let queue_p99_ms = queue_p99_all(a);
    let success_rate = c.success_rate();
    let meets = success_rate >= slo.min_success
        && c.breaches <= slo.max_breaches
        && slo.max_queue_p99_ms.is_none_or(|m| queue_p99_ms <= m);
    Ok(Outcome {
        total: c.total,
        succeeded: c.succeeded,
        breaches: c.breaches,
        denied: c.denied,
        success_rate,
        utilization: if servable == 0 { 1.0 } else { c.succeeded as f64 / servable as f64 },
        queue_p99_ms,
        meets,
    })
}

/// Mean input (and output) tokens per request of a class.
fn mean_tokens(c: &scenario::TrafficClass, counts_output: bool) -> f64 {
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
            t.rows.iter().map(|r| r.1 as f64).sum::<f64>() / t.rows.len() as f64
        }
        _ => mean(&c.prompt_tokens),
    };
    let output = if counts_output { mean(&c.output_tokens) } else { 0.0 };
    input + output
}

/// What arithmetic says a pool needs: the dimension that binds first, what one project can
/// serve on it (requests/s), and the projects needed.
#[derive(Clone, Debug, Serialize)]
struct Arithmetic {
    model: String,
    binding: &'static str,
    per_project_rps: f64,
    projects: u64,
    headroom_at: Option<(u64, f64)>,
}

/// Requests/s one project serves on each dimension, with the engine's ceilings `c` (limits
/// less safety margin and reserve, as the engine rounds them), for requests of `tokens` and
/// `day_s` seconds of a Pacific day; the smallest is the binding one.
fn binding(c: &crate::engine::Ceilings, tokens: f64, day_s: f64) -> (&'static str, f64) {
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
fn arithmetic(sc: &Scenario, day_s: f64, limits: impl Fn(usize, usize) -> crate::engine::Limits) -> Vec<Arithmetic> {
    let high = sc.traffic.iter().any(|c| c.priority == crate::engine::Priority::High);
    let cfg = &sc.engine.config;
    let reserve = if high { 0.0 } else { cfg.reserve };
    let mut out: Vec<Arithmetic> = (0..sc.models.len())
        .filter_map(|m| {
            let classes: Vec<_> = sc.traffic.iter().filter(|c| c.model == m).collect();
            let rate: f64 = classes.iter().map(|c| peak_rate(&c.arrival)).sum();
            if rate <= 0.0 {
                return None;
            }
            let tokens =
                classes.iter().map(|c| peak_rate(&c.arrival) * mean_tokens(c, sc.provider.counts_output)).sum::<f64>()
                    / rate;
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
const TIER1: [(&str, u64, u64, u64); 4] = [
    ("gemini-2.5-flash-lite", 4_000, 4_000_000, u64::MAX),
    ("gemini-2.5-flash", 1_000, 1_000_000, 10_000),
    ("gemini-2.5-pro", 150, 2_000_000, 10_000),
    ("gemini-2.0-flash", 2_000, 4_000_000, u64::MAX),
];

fn tier1(model: &str) -> Option<crate::engine::Limits> {
    TIER1.iter().find(|(name, ..)| model.starts_with(name)).map(|&(_, rpm, tpm, rpd)| crate::engine::Limits {
        rpm,
        tpm,
        rpd,
        tpd: None,
    })
}

/// One recommendation: for a column of the grid, the smallest pool meeting the objective.
#[derive(Clone, Debug, Serialize)]
struct Recommendation {
    /// The point's other coordinates (`rate = 12`, `engine.strategy = …`).
    at: Vec<(String, String)>,
    /// Smallest swept project count meeting the objective, if any did.
    projects: Option<u64>,
    /// The outcome there (or at the largest pool, if none met it).
    outcome: Outcome,
    /// Arithmetic for the same traffic: neediest model.
    arithmetic: Option<Arithmetic>,
    /// Tier-1 projects the same arithmetic asks for.
    tier1_projects: Option<u64>,
    /// Spare capacity on the binding dimension at the recommended pool.
    headroom: Option<f64>,
    /// The sentence.
    text: String,
}

#[derive(Serialize)]
struct PlanFile<'a> {
    scenario: &'a str,
    objective: Objective,
    axes: Vec<(String, Vec<String>)>,
    points: usize,
    wall_s: f64,
    jobs: usize,
    recommendations: &'a [Recommendation],
}

pub(super) fn plan(o: PlanOptions) -> Result<i32, CliError> {
    let bad = CliError::BadInput;
    let mut axes = o.sweeps.iter().map(|s| parse_axis(s)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let Some(pi) = axes.iter().position(|a| matches!(a, Axis::Projects(_))) else {
        return Err(CliError::BadInput("keysim plan needs --sweep projects=… (the pool sizes to try)".into()));
    };
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name() == a.name()) {
            return Err(CliError::BadInput(format!("--sweep {} is given twice", a.name())));
        }
    }
    if !(0.0..=1.0).contains(&o.min_success) {
        return Err(CliError::BadInput("--min-success must be within 0..1".into()));
    }
    let max_queue_p99_ms = match &o.max_queue_p99 {
        Some(s) => Some(crate::scenario::units::parse_duration(s).map_err(|e| bad(format!("--max-queue-p99: {e}")))?),
        None => None,
    };
    let slo = Objective { min_success: o.min_success, max_breaches: o.max_breaches, max_queue_p99_ms };
    // Rows: projects; columns: every other axis, combined.
    let sizes = match axes.remove(pi) {
        Axis::Projects(v) => v,
        _ => unreachable!("found above"),
    };
    let others = axes;
    let columns = others.iter().try_fold(1usize, |n, a| n.checked_mul(a.len())).unwrap_or(usize::MAX);
    if columns.saturating_mul(sizes.len()) > MAX_POINTS {
        return Err(CliError::BadInput(format!("the grid has more than {MAX_POINTS} points; sweep fewer values")));
    }
    let coords = |mut col: usize| -> Vec<usize> {
        let mut c = vec![0; others.len()];
        for (i, a) in others.iter().enumerate().rev() {
            c[i] = col % a.len();
            col /= a.len();
        }
        c
    };
    // One parse per combination of `--set` sweeps: files (corpora, tokenizers) load once.
    let mut parsed: std::collections::HashMap<Vec<usize>, Scenario> = std::collections::HashMap::new();
    let mut column_scenarios = Vec::with_capacity(columns);
    for col in 0..columns {
        let c = coords(col);
        let set_key: Vec<usize> =
            others.iter().zip(&c).map(|(a, &i)| if matches!(a, Axis::Set { .. }) { i } else { 0 }).collect();
        if !parsed.contains_key(&set_key) {
            let mut overrides = o.overrides.clone();
            for (a, &i) in others.iter().zip(&c) {
                if let Axis::Set { path, values } = a {
                    overrides.push(format!("{path}={}", values[i]));
                }
            }
            let args = super::ScenarioArgs { scenario: o.scenario.clone(), overrides };
            let mut sc = super::run::load(&args)?;
            sc.warnings = None;
            parsed.insert(set_key.clone(), sc);
        }
        let mut sc = parsed[&set_key].clone();
        for (a, &i) in others.iter().zip(&c) {
            if let Axis::Rate(v) = a {
                set_rate(&mut sc, v[i]).map_err(bad)?;
            }
        }
        column_scenarios.push(sc);
    }
    if column_scenarios.iter().any(|sc| sc.projects.is_empty()) {
        return Err(CliError::BadInput("the scenario has no projects to build a pool from".into()));
    }
    let name = column_scenarios[0].name.clone();
    let points = sizes.len() * columns;
    let jobs = o.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(1, 64);
    let bar = (!o.quiet && !o.json).then(|| crate::report::count_progress(points as u64, "planning", "points"));
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Outcome>>>> = Mutex::new((0..points).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(points) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= points {
                    break;
                }
                let (row, col) = (i / columns, i % columns);
                let mut sc = column_scenarios[col].clone();
                set_projects(&mut sc, sizes[row]);
                let r = simulate_point(&sc, &slo);
                results.lock().expect("no worker panics holding it")[i] = Some(r);
                if let Some(b) = &bar {
                    b.inc(1);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut grid: Vec<Vec<Outcome>> = vec![Vec::with_capacity(columns); sizes.len()];
    for (i, r) in results.into_inner().expect("workers finished").into_iter().enumerate() {
        grid[i / columns].push(r.expect("every point ran")?);
    }

    // Recommendations, one per column.
    let recs: Vec<Recommendation> = (0..columns)
        .map(|col| {
            let at: Vec<(String, String)> =
                others.iter().zip(coords(col)).map(|(a, i)| (a.name().to_owned(), a.label(i))).collect();
            let sc = &column_scenarios[col];
            let own = |p: usize, m: usize| sc.projects[p].limits[m];
            let run_s = (sc.duration_ms as f64 / 1000.0).min(86_400.0);
            let arith = arithmetic(sc, run_s, own).into_iter().next();
            let tier1_projects = arithmetic(sc, run_s, |p, m| tier1(&sc.models[m].name).unwrap_or_else(|| own(p, m)))
                .first()
                .filter(|_| sc.models.iter().all(|m| tier1(&m.name).is_some()))
                .map(|a| a.projects);
            let all_day = (sc.duration_ms < 86_400_000)
                .then(|| arithmetic(sc, 86_400.0, own).into_iter().next())
                .flatten()
                .filter(|a| a.projects != u64::MAX);
            let found = (0..sizes.len()).filter(|&r| grid[r][col].meets).min_by_key(|&r| sizes[r]);
            let largest = (0..sizes.len()).max_by_key(|&r| sizes[r]).expect("at least one size");
            let row = found.unwrap_or(largest);
            let outcome = grid[row][col].clone();
            let projects = found.map(|r| sizes[r]);
            let headroom = match (&arith, projects) {
                (Some(a), Some(n)) => {
                    let rate: f64 = sc
                        .traffic
                        .iter()
                        .filter(|c| sc.models[c.model].name == a.model)
                        .map(|c| peak_rate(&c.arrival))
                        .sum();
                    Some(1.0 - rate / (n as f64 * a.per_project_rps))
                }
                _ => None,
            }
            .filter(|h| *h >= 0.0);
            let text = sentence(
                sc,
                &at,
                projects,
                &outcome,
                arith.as_ref(),
                tier1_projects,
                headroom,
                &sizes,
                all_day.as_ref(),
            );
            Recommendation { at, projects, outcome, arithmetic: arith, tier1_projects, headroom, text }
        })
        .collect();

    // Files.
    let dir = o.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{name}-plan")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating output folder {}", dir.display()))?;
    write_csv(&dir, &others, &sizes, &grid, &coords)?;
    let axes_out: Vec<(String, Vec<String>)> =
        std::iter::once(("projects".to_owned(), sizes.iter().map(u64::to_string).collect()))
            .chain(others.iter().map(|a| (a.name().to_owned(), (0..a.len()).map(|i| a.label(i)).collect())))
            .collect();
    let file = PlanFile {
        scenario: &name,
        objective: slo,
        axes: axes_out,
        points,
        wall_s: wall,
        jobs,
        recommendations: &recs,
    };
    let json = serde_json::to_string_pretty(&file).context("serialising the plan")?;
    std::fs::write(dir.join("plan.json"), format!("{json}\n")).context("writing plan.json")?;
    let fig = heatmap(&name, &others, &sizes, &grid, &recs, &coords, &slo);
    let drawn = crate::report::plots::write(&dir, vec![fig])?;
    let page = plan_page(&name, &slo, &recs, &drawn, points, jobs, wall, &sizes, &others, &grid, &coords);
    std::fs::write(dir.join("report.html"), page).context("writing report.html")?;

    if o.json {
        println!("{json}");
    } else if !o.quiet {
        println!("{name}: {points} points on {jobs} threads in {wall:.1} s");
        for r in &recs {
            println!("  {}", r.text);
        }
        println!("report: {}", dir.display());
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn sentence(
    sc: &Scenario,
    at: &[(String, String)],
    projects: Option<u64>,
    out: &Outcome,
    arith: Option<&Arithmetic>,
    tier1: Option<u64>,
    headroom: Option<f64>,
    sizes: &[u64],
    all_day: Option<&Arithmetic>,
) -> String {
    let rate = total_rate(sc);
    let mut where_ = format!("at {} requests/s peak", trim(rate));
    for (k, v) in at.iter().filter(|(k, _)| k != "rate") {
        let _ = write!(where_, ", {k} = {v}");
    }
    let tier = match sc.projects[0].tier {
        mock_server::Tier::Free => "free-tier",
        mock_server::Tier::Paid => "paid",
    };
    let mut s = match projects {
        Some(n) => format!(
            "{where_} with this profile: {n} {tier} project{} (success {:.1} %, {} breaches, p99 queue wait {} ms)",
            if n == 1 { "" } else { "s" },
            100.0 * out.success_rate,
            out.breaches,
            out.queue_p99_ms
        ),
        None => format!(
            "{where_}: even {} projects fall short (success {:.1} %, {} breaches, p99 queue wait {} ms); sweep further",
            sizes.iter().max().copied().unwrap_or(0),
            100.0 * out.success_rate,
            out.breaches,
            out.queue_p99_ms
        ),
    };
    if let Some(t) = tier1 {
        let _ = write!(s, ", or {t} tier-1 project{}", if t == 1 { "" } else { "s" });
    }
    if let Some(h) = headroom {
        let _ = write!(s, "; headroom {:.0} %", 100.0 * h);
    }
    if let Some(a) = arith {
        let _ = write!(
            s,
            " (arithmetic: {} on {}, {} requests/s per project)",
            a.projects,
            a.binding,
            trim(a.per_project_rps)
        );
    }
    // A run shorter than a day spends only its share of the daily quotas.
    if let Some(d) = all_day.filter(|d| projects.is_none_or(|n| d.projects > n)) {
        let _ = write!(
            s,
            "; the same rate all day long would need {} projects ({} of {} binds)",
            d.projects, d.binding, d.model
        );
    }
    s
}

fn write_csv(
    dir: &std::path::Path,
    others: &[Axis],
    sizes: &[u64],
    grid: &[Vec<Outcome>],
    coords: &dyn Fn(usize) -> Vec<usize>,
) -> anyhow::Result<()> {
    let path = dir.join("plan.csv");
    let mut w = csv::Writer::from_path(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut head: Vec<String> = vec!["projects".into()];
    head.extend(others.iter().map(|a| a.name().to_owned()));
    head.extend(
        ["total", "succeeded", "breaches", "denied", "success_rate", "utilization", "queue_p99_ms", "meets_objective"]
            .map(String::from),
    );
    w.write_record(&head)?;
    for (r, row) in grid.iter().enumerate() {
        for (col, o) in row.iter().enumerate() {
            let mut rec = vec![sizes[r].to_string()];
            rec.extend(others.iter().zip(coords(col)).map(|(a, i)| a.label(i)));
            rec.extend([
                o.total.to_string(),
                o.succeeded.to_string(),
                o.breaches.to_string(),
                o.denied.to_string(),
                format!("{:.6}", o.success_rate),
                format!("{:.6}", o.utilization),
                o.queue_p99_ms.to_string(),
                o.meets.to_string(),
            ]);
            w.write_record(&rec)?;
        }
    }
    w.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn column_name(others: &[Axis], c: &[usize]) -> String {
    if others.is_empty() {
        return "as written".into();
    }
    others.iter().zip(c).map(|(a, &i)| a.label(i)).collect::<Vec<_>>().join(" · ")
}

fn heatmap(
    name: &str,
    others: &[Axis],
    sizes: &[u64],
    grid: &[Vec<Outcome>],
    recs: &[Recommendation],
    coords: &dyn Fn(usize) -> Vec<usize>,
    slo: &Objective,
) -> Figure {
    let columns = grid.first().map_or(0, Vec::len);
    let cells: Vec<Vec<Option<f64>>> = grid
        .iter()
        .map(|row| row.iter().map(|o| Some(((o.success_rate - 0.5) / 0.5).clamp(0.0, 1.0))).collect())
        .collect();
    let text: Vec<Vec<String>> = grid
        .iter()
        .map(|row| {
            row.iter()
                .map(|o| {
                    let mark = if o.meets {
                        "✓"
                    } else if o.breaches > slo.max_breaches {
                        "429"
                    } else {
                        ""
                    };
                    format!("{:.0}% {mark}", (100.0 * o.success_rate).floor())
                })
                .collect()
        })
        .collect();
    let outlined: Vec<(usize, usize)> = recs
        .iter()
        .enumerate()
        .filter_map(|(col, r)| r.projects.and_then(|n| sizes.iter().position(|&s| s == n)).map(|row| (row, col)))
        .collect();
    let x_label = if others.is_empty() {
        String::new()
    } else {
        others
            .iter()
            .map(|a| if a.name() == "rate" { "rate (requests/s)" } else { a.name() })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let heat = Heat {
        title: format!("{name}: success rate by pool size; ✓ meets the objective, outlined: smallest that does"),
        x_label,
        y_label: "projects".into(),
        columns: (0..columns).map(|c| column_name(others, &coords(c))).collect(),
        rows: sizes.iter().map(u64::to_string).collect(),
        cells,
        text,
        outlined,
    };
    Figure {
        name: "plan-heatmap".into(),
        title: "Pool size against traffic".into(),
        caption: format!(
            "Each cell is one simulated run: its success rate (darker is better) with ✓ where it meets the objective \
             (success ≥ {:.1} %, breaches ≤ {}{}), 429 where the provider refused requests. The outlined cell in each \
             column is the smallest pool that meets it.",
            100.0 * slo.min_success,
            slo.max_breaches,
            slo.max_queue_p99_ms.map_or(String::new(), |m| format!(", p99 queue wait ≤ {m} ms"))
        ),
        width: (160 + 90 * columns as u32).clamp(640, 1800),
        panel_height: (110 + 26 * sizes.len() as u32).max(300),
        panels: vec![Panel::Heat(heat)],
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_page(
    name: &str,
    slo: &Objective,
    recs: &[Recommendation],
    drawn: &[(Figure, String)],
    points: usize,
    jobs: usize,
    wall: f64,
    sizes: &[u64],
    others: &[Axis],
    grid: &[Vec<Outcome>],
    coords: &dyn Fn(usize) -> Vec<usize>,
) -> String {
    let mut b = format!("<h1>{} — capacity plan</h1>", html::esc(name));
    let _ = write!(
        b,
        "<p class=\"meta\">{points} simulated points on {jobs} threads in {wall:.1} s · objective: success ≥ {:.1} %, \
         breaches ≤ {}{}</p>",
        100.0 * slo.min_success,
        slo.max_breaches,
        slo.max_queue_p99_ms.map_or(String::new(), |m| format!(", p99 queue wait ≤ {m} ms"))
    );
    b.push_str("<div class=\"story\">");
    for r in recs {
        let _ = write!(b, "<p>{}</p>", html::esc(&r.text));
    }
    b.push_str("</div><h2>Grid</h2>");
    for (f, svg) in drawn {
        b.push_str(&html::figure(f, svg));
    }
    let mut head = vec!["projects".to_owned()];
    head.extend(others.iter().map(|a| a.name().to_owned()));
    head.extend(
        ["requests", "succeeded", "breaches", "denied", "success", "p99 queue wait", "objective"].map(String::from),
    );
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for (r, row) in grid.iter().enumerate() {
        for (col, o) in row.iter().enumerate() {
            let mut cells = vec![sizes[r].to_string()];
            cells.extend(others.iter().zip(coords(col)).map(|(a, i)| html::esc(&a.label(i))));
            cells.extend([
                o.total.to_string(),
                o.succeeded.to_string(),
                o.breaches.to_string(),
                o.denied.to_string(),
                format!("{:.2}%", 100.0 * o.success_rate),
                format!("{} ms", o.queue_p99_ms),
                if o.meets {
                    "<span class=\"ok\">meets</span>".into()
                } else {
                    "<span class=\"fail\">misses</span>".into()
                },
            ]);
            rows.push(cells);
        }
    }
    b.push_str("<h2>Every point</h2>");
    b.push_str(&html::table(&head, &rows));
    html::page(&format!("keysim plan — {name}"), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = r#"
[scenario]
name = "t"
duration = "10m"
[[models]]
name = "m"
rpm = 10
tpm = 100000
rpd = 100
[[projects]]
id = "a"
keys = ["a-1"]
[[projects]]
id = "b"
keys = ["b-1"]
[[traffic]]
name = "c"
arrival = { kind = "constant", rate = "1/s" }
prompt_tokens = 10
output_tokens = 10
[[events]]
at = "1m"
revoke = "a-1"
[[events]]
at = "2m"
add = { key = "b-2", project = "b" }
"#;

    fn pool() -> Scenario {
        crate::scenario::parse(POOL, "t.toml", None, &[]).expect("parses")
    }

    #[test]
    fn a_swept_pool_copies_projects_and_their_events_and_drops_what_it_lacks() {
        let mut sc = pool();
        set_projects(&mut sc, 5);
        let ids: Vec<&str> = sc.projects.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "a-x1", "b-x1", "a-x2"]);
        assert_eq!(sc.projects[3].keys, ["b-1-x1"]);
        let events: Vec<String> = sc.events.iter().map(|e| format!("{} {:?}", e.at_ms, e.event)).collect();
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(events[..3].iter().all(|e| e.starts_with("60000 ") && e.contains("Revoke")), "{events:?}");
        assert!(events[2].contains("a-1-x2") && events[4].contains("b-2-x1"), "{events:?}");
        let mut one = pool();
        set_projects(&mut one, 1);
        assert_eq!(one.events.len(), 1, "b's event goes with b");
        let mut same = pool();
        set_projects(&mut same, 2);
        assert_eq!(same, pool(), "the scenario's own count reproduces it");
    }

    #[test]
    fn rates_scale_to_the_sum_of_peaks_and_arithmetic_uses_engine_ceilings() {
        let mut sc = pool();
        set_rate(&mut sc, 2.5).unwrap();
        assert!((total_rate(&sc) - 2.5).abs() < 1e-12);
        // RPM 10 with a 5 % safety margin: the engine's ceiling is 9, not 9.5.
        sc.engine.config.safety = 0.05;
        let a = arithmetic(&sc, 1200.0, |p, m| sc.projects[p].limits[m]);
        assert_eq!(a[0].binding, "RPD");
        assert!((a[0].per_project_rps - 95.0 / 1200.0).abs() < 1e-12, "{}", a[0].per_project_rps);
        let a = arithmetic(&sc, 60.0, |p, m| sc.projects[p].limits[m]);
        assert_eq!(a[0].binding, "RPM");
        assert!((a[0].per_project_rps - 9.0 / 60.0).abs() < 1e-12);
        assert_eq!(a[0].projects, (2.5f64 / (9.0 / 60.0)).ceil() as u64);
    }

    #[test]
    fn sweeps_parse_lists_and_ranges() {
        assert_eq!(parse_axis("projects=1..4").unwrap(), Axis::Projects(vec![1, 2, 3, 4]));
        assert_eq!(parse_axis("rate=0.5..1.5:0.5").unwrap(), Axis::Rate(vec![0.5, 1.0, 1.5]));
        assert_eq!(parse_axis("rate=2,4").unwrap(), Axis::Rate(vec![2.0, 4.0]));
        assert_eq!(
            parse_axis("engine.reserve=0,0.1").unwrap(),
            Axis::Set { path: "engine.reserve".into(), values: vec!["0".into(), "0.1".into()] }
        );
        for bad in ["projects=0..3", "projects=1.5", "rate=3..1", "rate=x", "rate", "engine.reserve=", "rate=1..5:0"] {
            assert!(parse_axis(bad).is_err(), "{bad} is refused");
        }
    }
}

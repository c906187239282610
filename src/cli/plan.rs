//! `keysim plan`: capacity planning from the command line — the options mapped onto
//! [`crate::plan`], which sweeps, simulates and writes.
//!
//! - `projects=N` builds the pool from N projects, cycling through the scenario's own as
//!   templates (so the scenario's count reproduces it); extra copies get suffixed ids.
//! - `rate=R` scales every traffic class so that the sum of their peak rates is R requests/s.
//! - any other `path=v1,v2` is a `--set` override per point.

use std::collections::HashMap;
use std::path::PathBuf;

use super::CliError;
use crate::plan::grid::{numbers, parse_axis, Axis, MAX_POINTS};
use crate::plan::point::Objective;
use crate::plan::pool::set_rate;
use crate::plan::{Grid, Written};
use crate::scenario::Scenario;

/// `keysim plan`'s options.
pub(super) struct PlanOptions {
    pub(super) scenario: PathBuf,
    pub(super) overrides: Vec<String>,
    /// `--traffic` replaced the scenario's traffic (its first `[[traffic]]` is the log).
    pub(super) logged: bool,
    pub(super) sweeps: Vec<String>,
    pub(super) min_success: f64,
    pub(super) max_breaches: u64,
    pub(super) max_queue_p99: Option<String>,
    pub(super) goal: Option<String>,
    pub(super) growth: Option<String>,
    pub(super) jobs: Option<usize>,
    pub(super) out: Option<PathBuf>,
    pub(super) json: bool,
    pub(super) quiet: bool,
}

pub(super) fn plan(o: PlanOptions) -> Result<i32, CliError> {
    let (grid, slo, logs) = grid_and_objective(&o)?;
    let columns = column_scenarios(&o, &grid, &logs)?;
    let name = columns[0].name.clone();
    let points = grid.points();
    let jobs = o.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(1, 64);
    let bar = (!o.quiet && !o.json).then(|| crate::report::count_progress(points as u64, "planning", "points"));
    let started = std::time::Instant::now();
    let tick = || {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let outcomes = crate::plan::run(&grid, &columns, &slo, jobs, &tick)?;
    let wall_s = started.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let recommendations = crate::plan::recommend(&grid, &columns, &outcomes);
    let dir = o.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{name}-plan")));
    let written =
        Written { name: &name, grid: &grid, outcomes: &outcomes, recommendations: &recommendations, slo, wall_s, jobs };
    let json = written.write(&dir)?;
    if o.json {
        println!("{json}");
    } else if !o.quiet {
        println!("{name}: {points} points on {jobs} threads in {wall_s:.1} s");
        for r in &recommendations {
            println!("  {}", r.text);
        }
        println!("report: {}", dir.display());
    }
    Ok(0)
}

/// The sweeps and the objective, checked, and which `[[traffic]]` tables replay a log.
fn grid_and_objective(o: &PlanOptions) -> Result<(Grid, Objective, Vec<usize>), CliError> {
    let bad = CliError::BadInput;
    let mut axes = o.sweeps.iter().map(|s| parse_axis(s)).collect::<Result<Vec<_>, _>>().map_err(bad)?;
    let logs = log_tables(o)?;
    if let Some(g) = &o.growth {
        if logs.is_empty() {
            return Err(bad(
                "--growth multiplies a log's demand: give --traffic FILE or a [[traffic]] with `log`".into()
            ));
        }
        axes.push(Axis::Growth(numbers(g, "growth").map_err(|e| bad(e.replace("--sweep", "--growth")))?));
    }
    let pi = match axes.iter().position(|a| matches!(a, Axis::Projects(_))) {
        Some(pi) => pi,
        None if !logs.is_empty() => {
            axes.push(Axis::Projects(default_sizes(o, &axes)?));
            axes.len() - 1
        }
        None => return Err(bad("keysim plan needs --sweep projects=… (the pool sizes to try)".into())),
    };
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name() == a.name()) {
            return Err(CliError::BadInput(format!("--sweep {} is given twice", a.name())));
        }
    }
    let slo = match &o.goal {
        Some(g) => Objective::from_goal(g).map_err(bad)?,
        None => {
            if !(0.0..=1.0).contains(&o.min_success) {
                return Err(CliError::BadInput("--min-success must be within 0..1".into()));
            }
            let max_queue_p99_ms = match &o.max_queue_p99 {
                Some(s) => {
                    Some(crate::scenario::units::parse_duration(s).map_err(|e| bad(format!("--max-queue-p99: {e}")))?)
                }
                None => None,
            };
            Objective { min_success: o.min_success, max_breaches: o.max_breaches, max_queue_p99_ms, max_denied: None }
        }
    };
    // Rows: projects; columns: every other axis, combined.
    let Axis::Projects(sizes) = axes.remove(pi) else { unreachable!("found above") };
    let grid = Grid { sizes, others: axes };
    if grid.points() > MAX_POINTS {
        return Err(CliError::BadInput(format!("the grid has more than {MAX_POINTS} points; sweep fewer values")));
    }
    Ok((grid, slo, logs))
}

/// Pool sizes to try on a log: from 1 to half again what the largest growth asks (of the
/// scenario's own count, or of what arithmetic says the log's busiest minute needs), and two
/// more.
fn default_sizes(o: &PlanOptions, axes: &[Axis]) -> Result<Vec<u64>, CliError> {
    let sc = super::run::load(&super::ScenarioArgs::new(o.scenario.clone(), o.overrides.clone()))?;
    let own = |p: usize, m: usize| sc.projects[p].limits[m];
    let day_s = (sc.duration_ms as f64 / 1000.0).min(86_400.0);
    let needed = crate::plan::arithmetic::arithmetic(&sc, day_s, own)
        .first()
        .map_or(1, |a| a.projects.min(200))
        .max(sc.projects.len() as u64);
    let growth = axes
        .iter()
        .find_map(|a| match a {
            Axis::Growth(v) => v.iter().copied().reduce(f64::max),
            _ => None,
        })
        .unwrap_or(1.0);
    let most = ((needed.max(1) as f64 * growth * 1.5).ceil() as u64 + 2).min(200);
    Ok((1..=most).collect())
}

/// Which `[[traffic]]` tables replay a log (by index): the first if `--traffic` replaced
/// them, else those of the scenario file that name a `log`.
fn log_tables(o: &PlanOptions) -> Result<Vec<usize>, CliError> {
    if o.logged {
        return Ok(vec![0]);
    }
    let text = std::fs::read_to_string(&o.scenario)
        .map_err(|e| CliError::BadInput(format!("cannot read scenario {}: {e}", o.scenario.display())))?;
    let Ok(root) = toml::de::DeTable::parse(&text) else { return Ok(Vec::new()) };
    let tables = root.get_ref().iter().find(|(k, _)| k.get_ref() == "traffic").map(|(_, v)| v.get_ref());
    let Some(toml::de::DeValue::Array(items)) = tables else { return Ok(Vec::new()) };
    Ok(items
        .iter()
        .enumerate()
        .filter(
            |(_, t)| matches!(t.get_ref(), toml::de::DeValue::Table(t) if t.iter().any(|(k, _)| k.get_ref() == "log")),
        )
        .map(|(i, _)| i)
        .collect())
}

/// The scenario of every column: one parse per combination of `--set` sweeps (files such as
/// corpora and tokenizers load once), then its rate.
fn column_scenarios(o: &PlanOptions, grid: &Grid, logs: &[usize]) -> Result<Vec<Scenario>, CliError> {
    let mut parsed: HashMap<Vec<usize>, Scenario> = HashMap::new();
    let mut columns = Vec::with_capacity(grid.columns());
    for col in 0..grid.columns() {
        let c = grid.coords(col);
        let set_key: Vec<usize> = grid
            .others
            .iter()
            .zip(&c)
            .map(|(a, &i)| if matches!(a, Axis::Set { .. } | Axis::Growth(_)) { i } else { 0 })
            .collect();
        if !parsed.contains_key(&set_key) {
            let mut overrides = o.overrides.clone();
            for (a, &i) in grid.others.iter().zip(&c) {
                match a {
                    Axis::Set { path, values } => overrides.push(format!("{path}={}", values[i])),
                    Axis::Growth(g) => overrides.extend(logs.iter().map(|t| format!("traffic.{t}.scale={:?}", g[i]))),
                    _ => {}
                }
            }
            let args = super::ScenarioArgs::new(o.scenario.clone(), overrides);
            let mut sc = super::run::load(&args)?;
            sc.warnings = None;
            parsed.insert(set_key.clone(), sc);
        }
        let mut sc = parsed[&set_key].clone();
        for (a, &i) in grid.others.iter().zip(&c) {
            if let Axis::Rate(v) = a {
                set_rate(&mut sc, v[i]).map_err(CliError::BadInput)?;
            }
        }
        columns.push(sc);
    }
    if columns.iter().any(|sc| sc.projects.is_empty()) {
        return Err(CliError::BadInput("the scenario has no projects to build a pool from".into()));
    }
    Ok(columns)
}

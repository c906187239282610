//! `keysim tune-warnings`: the `[warnings]` settings that meet a goal on a scenario's own
//! traffic — the options mapped onto [`crate::tune`], which sweeps, simulates and writes.

use std::path::PathBuf;

use super::{CliError, ScenarioArgs};
use crate::tune::goal::Goal;
use crate::tune::page::Tuned;
use crate::tune::{Axis, Settings, TuneError};

/// `keysim tune-warnings`' options.
pub(super) struct TuneOptions {
    pub(super) scenario: ScenarioArgs,
    pub(super) sweeps: Vec<String>,
    pub(super) goal: Option<String>,
    pub(super) jobs: Option<usize>,
    pub(super) out: Option<PathBuf>,
    pub(super) json: bool,
    pub(super) quiet: bool,
}

pub(super) fn tune(o: TuneOptions) -> Result<i32, CliError> {
    let goal = Goal::parse(o.goal.as_deref().unwrap_or(crate::tune::goal::DEFAULT)).map_err(CliError::BadInput)?;
    let axes = if o.sweeps.is_empty() {
        crate::tune::default_axes()
    } else {
        o.sweeps.iter().map(|s| parse_axis(s)).collect::<Result<Vec<_>, _>>().map_err(CliError::BadInput)?
    };
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key == a.key) {
            return Err(CliError::BadInput(format!("--sweep {} is given twice", a.key)));
        }
    }
    let points = crate::tune::grid(&axes);
    if points.len() > crate::tune::MAX_POINTS {
        return Err(CliError::BadInput(format!(
            "the sweep has {} points, more than {}; sweep fewer values",
            points.len(),
            crate::tune::MAX_POINTS
        )));
    }
    // Warnings on, then the user's settings, then the point's.
    let base: Vec<String> =
        std::iter::once("warnings.mode=pipeline".to_owned()).chain(o.scenario.overrides.clone()).collect();
    let scenario_of = |s: &Settings| {
        let mut overrides = base.clone();
        overrides.extend(s.iter().map(|(k, v)| format!("warnings.{k}={v}")));
        super::run::load(&ScenarioArgs::new(o.scenario.scenario.clone(), overrides))
    };
    // Bad settings are bad input, told before any thread starts: every value of every axis
    // once, then the first point whole.
    for a in &axes {
        for v in &a.values {
            scenario_of(&vec![(a.key.clone(), v.clone())])?;
        }
    }
    let first = scenario_of(&points[0])?;
    if first.warnings.as_ref().is_some_and(|w| w.config.mode != crate::engine::warn::WarnMode::Pipeline) {
        return Err(CliError::BadInput(
            "tune-warnings tunes `mode = \"pipeline\"`; leave warnings.mode as it is".into(),
        ));
    }
    let name = first.name.clone();
    let jobs = o.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(1, 64);
    let bar = (!o.quiet && !o.json).then(|| crate::report::count_progress(points.len() as u64, "tuning", "settings"));
    let tick = || {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let started = std::time::Instant::now();
    let done = crate::tune::run(&points, &goal, jobs, &scenario_of, &tick).map_err(|e| match e {
        TuneError::Scenario(e) => e,
        TuneError::Sim(e) => CliError::Runtime(anyhow::anyhow!("simulating {name}: {e}")),
    })?;
    let wall_s = started.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let file = o.scenario.scenario.display().to_string();
    let tuned =
        Tuned { name: &name, file: &file, goal: &goal, points: &done, best: crate::tune::best(&done), jobs, wall_s };
    let dir = o.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{name}-tune")));
    let json = tuned.write(&dir)?;
    if o.json {
        println!("{json}");
    } else if !o.quiet {
        println!("{name}: {} settings on {jobs} threads in {wall_s:.1} s", done.len());
        println!("  {}", tuned.sentence());
        if let Some(b) = tuned.best.map(|b| &done[b]) {
            println!();
            print!("{}", crate::tune::block(b, &file));
            println!();
        }
        println!("report: {}", dir.display());
    }
    Ok(0)
}

/// `KEY=v1,v2,…`: a `[warnings]` key and its values.
fn parse_axis(s: &str) -> Result<Axis, String> {
    let (key, values) =
        s.split_once('=').ok_or_else(|| format!("--sweep '{s}': expected KEY=VALUE,VALUE (a [warnings] key)"))?;
    let key = key.trim().trim_start_matches("warnings.").to_owned();
    if key.is_empty() || key == "mode" {
        return Err(format!("--sweep '{s}': name a [warnings] setting other than mode"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return Err(format!("--sweep '{s}': no values"));
    }
    Ok(Axis { key, values })
}

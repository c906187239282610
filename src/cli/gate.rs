//! `keysim gate`: a CI regression gate. Runs each scenario, checks its `[expect]` table, and
//! compares its figures with a committed baseline, metric by metric, in the direction that
//! matters (more breaches is worse, more utilisation is better). Exit 1 on any failure;
//! a JUnit XML report for CI systems.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{CliError, ScenarioArgs};
use crate::report::summary::{RunMode, Summary};
use crate::sim::{simulate, Outputs};

pub(super) struct GateOptions {
    pub(super) scenarios: Vec<PathBuf>,
    pub(super) overrides: Vec<String>,
    pub(super) baseline: Option<PathBuf>,
    pub(super) update_baseline: bool,
    pub(super) junit: Option<PathBuf>,
    pub(super) quiet: bool,
}

/// Which way a metric gets worse, and how much change is noise.
#[derive(Clone, Copy)]
struct Rule {
    name: &'static str,
    /// `true`: higher is worse.
    higher_is_worse: bool,
    /// Allowed worsening: absolute ...
    abs: f64,
    /// ... or relative to the baseline, whichever is larger.
    rel: f64,
}

/// The compared metrics. Simulated figures are deterministic, so their tolerances only
/// absorb float printing; the real-clock overhead gets a wide one.
const RULES: [Rule; 8] = [
    Rule { name: "breaches", higher_is_worse: true, abs: 0.0, rel: 0.0 },
    Rule { name: "failed", higher_is_worse: true, abs: 0.0, rel: 0.0 },
    Rule { name: "succeeded", higher_is_worse: false, abs: 0.0, rel: 0.0 },
    Rule { name: "success_rate", higher_is_worse: false, abs: 1e-6, rel: 0.0 },
    Rule { name: "utilization", higher_is_worse: false, abs: 1e-6, rel: 0.0 },
    Rule { name: "queue_wait_p99_ms", higher_is_worse: true, abs: 1.0, rel: 0.0 },
    Rule { name: "warning_notifications", higher_is_worse: true, abs: 0.0, rel: 0.0 },
    Rule { name: "overhead_p99_ns", higher_is_worse: true, abs: 2_000.0, rel: 2.0 },
];

/// Real-clock percentiles of fewer calls than this are left out: one cold call moves them.
const MIN_TIMED_CALLS: u64 = 10_000;

fn figures(s: &Summary) -> BTreeMap<String, f64> {
    let r = &s.requests;
    let overhead = (s.overhead_ns.calls >= MIN_TIMED_CALLS).then_some(("overhead_p99_ns", s.overhead_ns.p99 as f64));
    [
        ("breaches", r.breaches as f64),
        ("failed", r.failed as f64),
        ("succeeded", r.succeeded as f64),
        ("success_rate", s.success_rate),
        ("utilization", s.utilization),
        ("queue_wait_p99_ms", s.queue_wait_ms.p99 as f64),
        ("warning_notifications", s.warnings.notifications as f64),
    ]
    .into_iter()
    .chain(overhead)
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The committed baseline: figures per scenario name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Baseline {
    scenarios: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One checked line.
struct Check {
    scenario: String,
    name: String,
    ok: bool,
    detail: String,
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn junit(checks: &[Check]) -> String {
    let mut by: BTreeMap<&str, Vec<&Check>> = BTreeMap::new();
    for c in checks {
        by.entry(&c.scenario).or_default().push(c);
    }
    let failures = checks.iter().filter(|c| !c.ok).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"keysim gate\" tests=\"{}\" failures=\"{failures}\">\n",
        checks.len()
    );
    for (scenario, cs) in by {
        let f = cs.iter().filter(|c| !c.ok).count();
        let _ = writeln!(out, "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\">", xml(scenario), cs.len());
        for c in cs {
            let _ = write!(out, "    <testcase classname=\"{}\" name=\"{}\"", xml(scenario), xml(&c.name));
            if c.ok {
                out.push_str("/>\n");
            } else {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml(&c.detail),
                    xml(&c.detail)
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

pub(super) fn gate(opts: GateOptions) -> Result<i32, CliError> {
    if opts.scenarios.is_empty() {
        return Err(CliError::BadInput("keysim gate needs at least one scenario".into()));
    }
    let mut baseline = match &opts.baseline {
        Some(p) if p.exists() && !opts.update_baseline => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str::<Baseline>(&text).map_err(|e| {
                CliError::BadInput(format!("{}: line {}, column {}: {e}", p.display(), e.line(), e.column()))
            })?
        }
        Some(p) if !opts.update_baseline => {
            return Err(CliError::BadInput(format!(
                "{}: no such baseline (create it with --update-baseline)",
                p.display()
            )))
        }
        _ => Baseline::default(),
    };
    let mut checks = Vec::new();
    let mut current = Baseline::default();
    for path in &opts.scenarios {
        let sc = super::run::load(&ScenarioArgs::new(path.clone(), opts.overrides.clone()))?;
        let result = simulate(&sc, Outputs::default()).with_context(|| format!("simulating {}", sc.name))?;
        let summary = Summary::new(&sc, RunMode::Sim, &result.aggregate, &result.engine);
        for e in &summary.expectations {
            checks.push(Check {
                scenario: sc.name.clone(),
                name: format!("expect {} {}", e.name, e.limit),
                ok: e.ok,
                detail: format!("expected {} {}, got {}", e.name, e.limit, e.actual),
            });
        }
        let now = figures(&summary);
        if let Some(base) = baseline.scenarios.get(&sc.name).filter(|_| !opts.update_baseline) {
            for rule in RULES {
                let (Some(&b), Some(&v)) = (base.get(rule.name), now.get(rule.name)) else { continue };
                let allowed = rule.abs.max(rule.rel * b.abs());
                let worse = if rule.higher_is_worse { v - b } else { b - v };
                let ok = worse <= allowed + 1e-12;
                checks.push(Check {
                    scenario: sc.name.clone(),
                    name: format!("baseline {}", rule.name),
                    ok,
                    detail: format!("{}: baseline {b}, now {v} (allowed worse by {allowed})", rule.name),
                });
            }
        } else if opts.baseline.is_some() && !opts.update_baseline {
            checks.push(Check {
                scenario: sc.name.clone(),
                name: "baseline present".into(),
                ok: false,
                detail: format!("{} is not in the baseline (run with --update-baseline)", sc.name),
            });
        }
        current.scenarios.insert(sc.name.clone(), now);
    }
    if opts.update_baseline {
        let path = opts.baseline.as_deref().unwrap_or(Path::new("gate-baseline.json"));
        for (k, v) in current.scenarios {
            baseline.scenarios.insert(k, v);
        }
        let text = serde_json::to_string_pretty(&baseline).context("serialising the baseline")?;
        std::fs::write(path, format!("{text}\n")).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(j) = &opts.junit {
        if let Some(dir) = j.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(j, junit(&checks)).with_context(|| format!("writing {}", j.display()))?;
    }
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    if !opts.quiet {
        let w = checks.iter().map(|c| c.scenario.len()).max().unwrap_or(8).max(8);
        println!("  {:<w$}  {:<34}  result", "scenario", "check");
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            println!("  {:<w$}  {:<34}  {mark}  {}", c.scenario, c.name, c.detail);
        }
        println!(
            "\ngate: {} checks over {} scenarios, {} failed{}",
            checks.len(),
            opts.scenarios.len(),
            failed.len(),
            if opts.update_baseline { " (baseline updated)" } else { "" }
        );
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}

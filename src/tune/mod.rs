//! Warnings tuned on the user's own traffic (`keysim tune-warnings`): sweep `[warnings]`
//! settings over a grid, simulate every point on all cores against the same traffic, score
//! each with the run's own warning figures, and pick the settings that meet a goal.
//!
//! - [`goal`]: the goal (`recall >= 0.9, precision >= 0.9, lead_p50 >= 60s …`) and how a
//!   point's figures are read against it.
//! - [`page`]: `tune.csv`, `tune.json`, the precision–recall–lead picture and `report.html`
//!   with the `[warnings]` block to paste.
//!
//! Warnings never change what the engine admits, so every point replays the same requests;
//! each is a deterministic simulation of its own and the order of execution changes nothing.

pub(crate) mod goal;
pub(crate) mod page;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::report::summary::{RunMode, Summary};
use crate::scenario::Scenario;
use goal::Goal;

/// One swept `[warnings]` setting and its values, as written (`horizon=15m,30m,1h`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Axis {
    /// The `[warnings]` key.
    pub(crate) key: String,
    /// Its values, as TOML would take them after `--set warnings.KEY=`.
    pub(crate) values: Vec<String>,
}

/// The axes swept when none is given: what `PoolAtRisk` and the pipeline are most sensitive to.
pub(crate) fn default_axes() -> Vec<Axis> {
    let axis = |key: &str, values: &[&str]| Axis {
        key: key.to_owned(),
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    vec![
        axis("horizon", &["15m", "30m", "1h"]),
        axis("risk_at", &["0.3", "0.5", "0.7"]),
        axis("remind_every", &["0s", "5m", "9m", "15m"]),
        axis("group_wait", &["10s", "30s"]),
        axis("busy_at", &["0.6", "0.7", "0.8"]),
    ]
}

/// Most points a sweep may have.
pub(crate) const MAX_POINTS: usize = 2_000;

/// A point's settings: `(key, value)` per axis.
pub(crate) type Settings = Vec<(String, String)>;

/// What one point's warnings did.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct Figures {
    /// Notifications sent (firing and resolved).
    pub(crate) notifications: u64,
    /// Spells in which a pool ran dry.
    pub(crate) spells: u64,
    /// Spells warned in advance.
    pub(crate) advance: u64,
    /// Spells that began under an alert still firing.
    pub(crate) while_firing: u64,
    /// Spells missed, and of them those of the first burst.
    pub(crate) missed: u64,
    /// See `missed`.
    pub(crate) missed_first_burst: u64,
    /// True ÷ decided notifications (`None`: none decided).
    pub(crate) precision: Option<f64>,
    /// Warned ÷ spells (`None`: nothing ran dry).
    pub(crate) recall: Option<f64>,
    /// Median and shortest lead of the spells warned in advance, in seconds.
    pub(crate) lead_p50_s: f64,
    /// See `lead_p50_s`.
    pub(crate) lead_min_s: f64,
    /// Notifications per hour.
    pub(crate) per_hour: f64,
    /// Notifications per spell.
    pub(crate) per_spell: f64,
    /// False positives.
    pub(crate) false_positive: u64,
}

/// One point of the sweep.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Point {
    /// Its settings.
    pub(crate) settings: Settings,
    /// What its warnings did.
    pub(crate) figures: Figures,
    /// Whether it meets the goal.
    pub(crate) meets: bool,
    /// How many of the goal's clauses it meets.
    pub(crate) clauses_met: usize,
}

/// The sweep's grid: every combination of the axes' values, the last axis fastest.
pub(crate) fn grid(axes: &[Axis]) -> Vec<Settings> {
    let mut out: Vec<Settings> = vec![Vec::new()];
    for a in axes {
        out = out
            .into_iter()
            .flat_map(|s| {
                a.values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((a.key.clone(), v.clone()));
                    s
                })
            })
            .collect();
    }
    out
}

/// What a point's warnings did, from its run.
pub(crate) fn figures(sc: &Scenario) -> Result<Figures, crate::sim::SimError> {
    let r = crate::sim::simulate(sc, crate::sim::Outputs::default())?;
    let w = Summary::new(sc, RunMode::Sim, &r.aggregate, &r.engine).warnings;
    Ok(Figures {
        notifications: w.notifications,
        spells: w.exhaustions,
        advance: w.warned_in_advance,
        while_firing: w.warned_while_firing,
        missed: w.missed,
        missed_first_burst: w.missed_first_burst,
        precision: w.precision,
        recall: w.recall,
        lead_p50_s: w.lead_time_s.p50,
        lead_min_s: w.lead_time_s.min,
        per_hour: w.notifications_per_hour,
        per_spell: w.notifications_per_exhaustion,
        false_positive: w.false_positive,
    })
}

/// Simulates every point on `jobs` threads: `scenario_of` builds a point's scenario from its
/// settings; `tick` is told of each point done. Points come back in grid order.
pub(crate) fn run<E: Send>(
    points: &[Settings],
    goal: &Goal,
    jobs: usize,
    scenario_of: &(dyn Fn(&Settings) -> Result<Scenario, E> + Sync),
    tick: &(dyn Fn() + Sync),
) -> Result<Vec<Point>, TuneError<E>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome<E>>>> = Mutex::new((0..points.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(points.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(settings) = points.get(i) else { break };
                let point = scenario_of(settings).map_err(TuneError::Scenario).and_then(|sc| {
                    let f = figures(&sc).map_err(TuneError::Sim)?;
                    let met = goal.met(&f);
                    Ok(Point { settings: settings.clone(), meets: met == goal.len(), clauses_met: met, figures: f })
                });
                results.lock().expect("no thread panics holding it")[i] = Some(point);
                tick();
            });
        }
    });
    results.into_inner().expect("threads joined").into_iter().map(|p| p.expect("every point ran")).collect()
}

/// One point's result.
type Outcome<E> = Result<Point, TuneError<E>>;

/// Why a sweep stopped.
#[derive(Debug)]
pub(crate) enum TuneError<E> {
    /// A point's scenario could not be built.
    Scenario(E),
    /// A point's simulation failed.
    Sim(crate::sim::SimError),
}

/// The best point: those meeting the goal first, then by recall, precision, median lead,
/// fewest notifications, and grid order.
pub(crate) fn best(points: &[Point]) -> Option<usize> {
    let key = |p: &Point| {
        let f = &p.figures;
        (
            p.meets,
            p.clauses_met,
            ordered(f.recall.unwrap_or(1.0)),
            ordered(f.precision.unwrap_or(1.0)),
            ordered(f.lead_p50_s),
            std::cmp::Reverse(f.notifications),
        )
    };
    (0..points.len()).max_by(|&a, &b| key(&points[a]).cmp(&key(&points[b])).then(b.cmp(&a)))
}

/// An `f64` that orders (figures are finite).
fn ordered(x: f64) -> i64 {
    (x * 1e6).round() as i64
}

/// The `[warnings]` block to paste for `p`: `mode` and the swept settings, each value as TOML.
pub(crate) fn block(p: &Point, scenario: &str) -> String {
    let f = &p.figures;
    let mut s = format!(
        "[warnings]\n# tuned by keysim tune-warnings on {scenario}\n# recall {}, precision {}, median lead {:.0} s, {:.1} \
         notifications an hour\n# (keep the rest of your [warnings] table as it is)\nmode = \"pipeline\"\n",
        f.recall.map_or("-".to_owned(), |r| format!("{r:.2}")),
        f.precision.map_or("-".to_owned(), |r| format!("{r:.2}")),
        f.lead_p50_s,
        f.per_hour,
    );
    for (k, v) in &p.settings {
        let quoted = v.parse::<f64>().is_err() && v != "true" && v != "false";
        if quoted {
            s.push_str(&format!("{k} = \"{v}\"\n"));
        } else {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(recall: f64, precision: f64, lead: f64, n: u64, meets: bool) -> Point {
        Point {
            settings: vec![("horizon".into(), "30m".into()), ("risk_at".into(), "0.5".into())],
            figures: Figures {
                notifications: n,
                spells: 10,
                advance: 5,
                while_firing: 4,
                missed: 1,
                missed_first_burst: 1,
                precision: Some(precision),
                recall: Some(recall),
                lead_p50_s: lead,
                lead_min_s: lead / 2.0,
                per_hour: n as f64,
                per_spell: n as f64 / 10.0,
                false_positive: 0,
            },
            meets,
            clauses_met: if meets { 5 } else { 3 },
        }
    }

    #[test]
    fn the_grid_combines_every_value_and_the_best_meets_the_goal_first() {
        let axes = vec![
            Axis { key: "a".into(), values: vec!["1".into(), "2".into()] },
            Axis { key: "b".into(), values: vec!["x".into(), "y".into(), "z".into()] },
        ];
        let g = grid(&axes);
        assert_eq!(g.len(), 6);
        assert_eq!(g[1], vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "y".to_owned())]);
        let points =
            vec![point(1.0, 1.0, 500.0, 2, false), point(0.9, 0.95, 70.0, 5, true), point(0.95, 0.95, 70.0, 5, true)];
        assert_eq!(best(&points), Some(2), "meeting the goal beats better figures that miss it");
        let b = block(&points[2], "s.toml");
        assert!(b.contains("horizon = \"30m\"\nrisk_at = 0.5\n"), "{b}");
        assert!(b.starts_with("[warnings]\n"));
    }
}

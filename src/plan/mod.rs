//! Capacity planning (`keysim plan`): sweep the pool's size (and the traffic's rate, and any
//! other setting) over a grid, simulate every point on all cores, and find the smallest pool
//! that meets a service objective.
//!
//! - [`grid`]: the axes and their values (`projects=1..20`, `rate=0.5..5:0.5`, `PATH=a,b`).
//! - [`pool`]: a scenario shaped for one point: its traffic scaled to a rate, its pool built
//!   from N projects (the scenario's own as templates, so its own count reproduces it).
//! - [`point`]: one point, simulated and judged against the objective.
//! - [`arithmetic`]: what arithmetic says the same rate needs, with the engine's ceilings.
//! - [`page`]: the sentence per column, `plan.csv`, the heatmap and `report.html`.
//!
//! Every point is a deterministic simulation of its own; the grid's order of execution does
//! not change any result.

pub(crate) mod arithmetic;
pub(crate) mod grid;
pub(crate) mod page;
pub(crate) mod point;
pub(crate) mod pool;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

use crate::scenario::Scenario;
use arithmetic::{arithmetic, busiest_minutes, tier1, Arithmetic, Minute};
use grid::Axis;
use point::{simulate_point, Objective, Outcome};
use pool::set_projects;

/// Rows (pool sizes) by columns (every combination of the other axes).
pub(crate) struct Grid {
    /// The swept project counts: one row each.
    pub(crate) sizes: Vec<u64>,
    /// The other axes; their combinations are the columns.
    pub(crate) others: Vec<Axis>,
}

impl Grid {
    /// Columns: the product of the other axes' lengths (saturating).
    pub(crate) fn columns(&self) -> usize {
        self.others.iter().try_fold(1usize, |n, a| n.checked_mul(a.len())).unwrap_or(usize::MAX)
    }

    /// Every point.
    pub(crate) fn points(&self) -> usize {
        self.columns().saturating_mul(self.sizes.len())
    }

    /// The index into each other axis of column `col`.
    pub(crate) fn coords(&self, mut col: usize) -> Vec<usize> {
        let mut c = vec![0; self.others.len()];
        for (i, a) in self.others.iter().enumerate().rev() {
            c[i] = col % a.len();
            col /= a.len();
        }
        c
    }

    /// The axes as `plan.json` lists them, pool sizes first.
    fn described(&self) -> Vec<(String, Vec<String>)> {
        std::iter::once(("projects".to_owned(), self.sizes.iter().map(u64::to_string).collect()))
            .chain(self.others.iter().map(|a| (a.name().to_owned(), (0..a.len()).map(|i| a.label(i)).collect())))
            .collect()
    }
}

/// One recommendation: for a column of the grid, the smallest pool meeting the objective.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Recommendation {
    /// The point's other coordinates (`rate = 12`, `engine.strategy = …`).
    pub(crate) at: Vec<(String, String)>,
    /// Smallest swept project count meeting the objective, if any did.
    pub(crate) projects: Option<u64>,
    /// The outcome there (or at the largest pool, if none met it).
    pub(crate) outcome: Outcome,
    /// Arithmetic for the same traffic: neediest model.
    pub(crate) arithmetic: Option<Arithmetic>,
    /// Tier-1 projects the same arithmetic asks for.
    pub(crate) tier1_projects: Option<u64>,
    /// Spare capacity on the binding dimension at the recommended pool.
    pub(crate) headroom: Option<f64>,
    /// The busiest minutes of its recorded traffic (a log, a trace), busiest first.
    pub(crate) busiest: Vec<Minute>,
    /// The sentence.
    pub(crate) text: String,
}

#[derive(Serialize)]
pub(crate) struct PlanFile<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) objective: Objective,
    pub(crate) axes: Vec<(String, Vec<String>)>,
    pub(crate) points: usize,
    pub(crate) wall_s: f64,
    pub(crate) jobs: usize,
    pub(crate) recommendations: &'a [Recommendation],
}

/// Simulates every point on `jobs` threads, each column's scenario with each pool size;
/// `tick` is told of every point done. Rows by columns.
pub(crate) fn run(
    grid: &Grid,
    columns: &[Scenario],
    slo: &Objective,
    jobs: usize,
    tick: &(dyn Fn() + Sync),
) -> anyhow::Result<Vec<Vec<Outcome>>> {
    let (points, width) = (grid.points(), columns.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Outcome>>>> = Mutex::new((0..points).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(points) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= points {
                    break;
                }
                let (row, col) = (i / width, i % width);
                let mut sc = columns[col].clone();
                set_projects(&mut sc, grid.sizes[row]);
                let r = simulate_point(&sc, slo);
                results.lock().expect("no worker panics holding it")[i] = Some(r);
                tick();
            });
        }
    });
    let mut out: Vec<Vec<Outcome>> = vec![Vec::with_capacity(width); grid.sizes.len()];
    for (i, r) in results.into_inner().expect("workers finished").into_iter().enumerate() {
        out[i / width].push(r.expect("every point ran")?);
    }
    Ok(out)
}

/// The recommendation of each column: the smallest pool meeting the objective, what
/// arithmetic says, and the sentence.
pub(crate) fn recommend(grid: &Grid, columns: &[Scenario], outcomes: &[Vec<Outcome>]) -> Vec<Recommendation> {
    (0..columns.len()).map(|col| recommend_column(grid, col, &columns[col], outcomes)).collect()
}

fn recommend_column(grid: &Grid, col: usize, sc: &Scenario, outcomes: &[Vec<Outcome>]) -> Recommendation {
    let sizes = &grid.sizes;
    let at: Vec<(String, String)> =
        grid.others.iter().zip(grid.coords(col)).map(|(a, i)| (a.name().to_owned(), a.label(i))).collect();
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
    let found = (0..sizes.len()).filter(|&r| outcomes[r][col].meets).min_by_key(|&r| sizes[r]);
    let largest = (0..sizes.len()).max_by_key(|&r| sizes[r]).expect("at least one size");
    let outcome = outcomes[found.unwrap_or(largest)][col].clone();
    let projects = found.map(|r| sizes[r]);
    let headroom = match (&arith, projects) {
        (Some(a), Some(n)) => Some(1.0 - a.rate / (n as f64 * a.per_project_rps)),
        _ => None,
    }
    .filter(|h| *h >= 0.0);
    let busiest = busiest_minutes(sc, 5);
    let text = page::sentence(
        sc,
        &at,
        projects,
        &outcome,
        page::Sums { arith: arith.as_ref(), tier1: tier1_projects, headroom, all_day: all_day.as_ref() },
        sizes,
        busiest.first(),
    );
    Recommendation { at, projects, outcome, arithmetic: arith, tier1_projects, headroom, busiest, text }
}

/// What a finished plan writes; returns `plan.json`'s text.
pub(crate) struct Written<'a> {
    /// The scenario's name.
    pub(crate) name: &'a str,
    /// The grid.
    pub(crate) grid: &'a Grid,
    /// Outcomes, rows by columns.
    pub(crate) outcomes: &'a [Vec<Outcome>],
    /// One per column.
    pub(crate) recommendations: &'a [Recommendation],
    /// The objective.
    pub(crate) slo: Objective,
    /// Wall-clock seconds the grid took.
    pub(crate) wall_s: f64,
    /// Threads it ran on.
    pub(crate) jobs: usize,
}

impl Written<'_> {
    /// Writes `plan.csv`, `plan.json`, the heatmap and `report.html` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<String> {
        let (grid, points) = (self.grid, self.grid.points());
        std::fs::create_dir_all(dir).with_context(|| format!("creating output folder {}", dir.display()))?;
        page::write_csv(dir, self)?;
        let file = PlanFile {
            scenario: self.name,
            objective: self.slo,
            axes: grid.described(),
            points,
            wall_s: self.wall_s,
            jobs: self.jobs,
            recommendations: self.recommendations,
        };
        let json = serde_json::to_string_pretty(&file).context("serialising the plan")?;
        std::fs::write(dir.join("plan.json"), format!("{json}\n")).context("writing plan.json")?;
        let drawn = crate::report::plots::write(dir, vec![page::heatmap(self)])?;
        let html = page::plan_page(self, &drawn);
        std::fs::write(dir.join("report.html"), html).context("writing report.html")?;
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::arithmetic::*;
    use super::grid::*;
    use super::pool::*;
    use crate::scenario::Scenario;

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

//! `keysim compare`: the same traffic through several engine settings, side by side.
//!
//! Variants come from `--variant NAME=PATH=VALUE` (repeat a name to give it several settings;
//! a bare `NAME` is the scenario as written) or from the scenario's `[compare]` table
//! (`name = ["engine.admission=check-then-act", …]`). Each variant is a full simulated run
//! with its own folder; the comparison gets one table, plots and `report.html` to paste into
//! a design review.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{CliError, ScenarioArgs};
use crate::report::chart::{colour, Bars, Figure, Line, Panel, XY};
use crate::report::html;
use crate::report::plots::{slug, time_axis, RunData};
use crate::report::summary::{RunMode, Summary};
use crate::report::trace::Trace;
use crate::report::Aggregate;
use crate::scenario::Scenario;
use crate::sim::{simulate, Outputs};

pub(super) struct CompareOptions {
    pub(super) scenario: ScenarioArgs,
    pub(super) variants: Vec<String>,
    pub(super) out: Option<PathBuf>,
    pub(super) json: bool,
    pub(super) quiet: bool,
}

/// Variants in order of first mention, each with its settings.
fn variants(cli: &[String], table: &[(String, Vec<String>)]) -> Result<Vec<(String, Vec<String>)>, String> {
    if cli.is_empty() {
        check_names(table)?;
        return Ok(table.to_vec());
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for v in cli {
        let (name, set) = match v.split_once('=') {
            Some((n, s)) => (n.trim(), Some(s.trim())),
            None => (v.trim(), None),
        };
        if set.is_some_and(|s| !s.contains('=')) {
            return Err(format!("--variant {v}: expected NAME or NAME=PATH=VALUE"));
        }
        let i = match out.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                out.push((name.to_owned(), Vec::new()));
                out.len() - 1
            }
        };
        out[i].1.extend(set.map(str::to_owned));
    }
    check_names(&out)?;
    Ok(out)
}

/// Variant names become folder names: letters, digits, `-`, `_` and `.`, not `.`/`..`, not
/// `plots`, and distinct.
fn check_names(list: &[(String, Vec<String>)]) -> Result<(), String> {
    for (i, (name, _)) in list.iter().enumerate() {
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !matches!(name.as_str(), "." | ".." | "plots");
        if !ok {
            return Err(format!(
                "variant name '{name}' may hold only letters, digits, '-', '_' and '.' (and not be ., .. or plots)"
            ));
        }
        if list[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("variant name '{name}' is given twice"));
        }
    }
    Ok(())
}

/// One finished variant.
struct Ran {
    name: String,
    settings: Vec<String>,
    scenario: Scenario,
    summary: Summary,
    aggregate: Aggregate,
    trace: Option<Trace>,
}

#[derive(Serialize)]
struct Row<'a> {
    variant: &'a str,
    settings: String,
    total: u64,
    succeeded: u64,
    breaches: u64,
    denied: u64,
    failed: u64,
    /// Failures by cause ("capacity-429 48; internal 3").
    failed_by_cause: String,
    success_rate: f64,
    utilization: f64,
    queue_wait_p99_ms: u64,
    /// Real-clock figures differ between identical runs: shown, not written to the files.
    #[serde(skip_serializing)]
    overhead_p50_ns: u64,
    #[serde(skip_serializing)]
    overhead_p99_ns: u64,
    expectations_failed: usize,
    warning_notifications: u64,
    /// Keys disabled or blacklisted after errors (each time).
    keys_disabled: u64,
    /// Keys that could serve at the end, of the pool's keys.
    keys_usable_at_end: usize,
    keys_in_pool: usize,
}

fn row(r: &Ran) -> Row<'_> {
    let s = &r.summary;
    Row {
        variant: &r.name,
        settings: if r.settings.is_empty() { "as written".into() } else { r.settings.join("; ") },
        total: s.requests.total,
        succeeded: s.requests.succeeded,
        breaches: s.requests.breaches,
        denied: s.requests.denied,
        failed: s.requests.failed,
        failed_by_cause: if s.requests.failed_by_reason.is_empty() {
            "–".into()
        } else {
            s.requests.failed_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("; ")
        },
        success_rate: s.success_rate,
        utilization: s.utilization,
        queue_wait_p99_ms: s.queue_wait_ms.p99,
        overhead_p50_ns: s.overhead_ns.p50,
        overhead_p99_ns: s.overhead_ns.p99,
        expectations_failed: s.expectations.iter().filter(|e| !e.ok).count(),
        warning_notifications: s.warnings.notifications,
        keys_disabled: s.health.keys_disabled,
        keys_usable_at_end: s.capacity.iter().map(|c| c.keys).max().unwrap_or(0),
        keys_in_pool: s.per_key.iter().map(|k| &k.key).collect::<std::collections::BTreeSet<_>>().len(),
    }
}

pub(super) fn compare(o: CompareOptions) -> Result<i32, CliError> {
    let base = super::run::load(&o.scenario)?;
    let list = variants(&o.variants, &base.compare).map_err(CliError::BadInput)?;
    if list.len() < 2 {
        return Err(CliError::BadInput(format!(
            "{}: compare needs at least two variants (--variant NAME=PATH=VALUE, or a [compare] table)",
            o.scenario.scenario.display()
        )));
    }
    // Every variant's settings are checked before anything runs.
    let mut scenarios = Vec::with_capacity(list.len());
    for (name, sets) in &list {
        let mut overrides = o.scenario.overrides.clone();
        overrides.extend(sets.iter().cloned());
        let args = ScenarioArgs::new(o.scenario.scenario.clone(), overrides);
        let sc = super::run::load(&args).map_err(|e| CliError::BadInput(format!("variant {name}: {e}")))?;
        scenarios.push(sc);
    }
    let name = base.name.clone();
    let dir = o.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{name}-compare")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating output folder {}", dir.display()))?;
    let started = std::time::Instant::now();
    // Variants run side by side, one per core; each is deterministic on its own.
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bar = (!o.quiet && !o.json).then(|| crate::report::count_progress(list.len() as u64, "comparing", "variants"));
    let bar = bar.as_ref();
    let results: Vec<anyhow::Result<Ran>> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for chunk in list.iter().zip(scenarios).collect::<Vec<_>>().chunks(jobs.max(1)) {
            let handles: Vec<_> = chunk
                .iter()
                .cloned()
                .map(|((name, sets), sc)| {
                    s.spawn(move || -> anyhow::Result<Ran> {
                        let r = simulate(&sc, Outputs { trace: true, ..Outputs::default() })
                            .with_context(|| format!("simulating variant {name}"))?;
                        let summary = Summary::new(&sc, RunMode::Sim, &r.aggregate, &r.engine);
                        if let Some(b) = bar {
                            b.inc(1);
                        }
                        Ok(Ran {
                            name: name.clone(),
                            settings: sets.clone(),
                            scenario: sc,
                            summary,
                            aggregate: r.aggregate,
                            trace: r.trace,
                        })
                    })
                })
                .collect();
            out.extend(
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a variant panicked")))),
            );
        }
        out
    });
    let ran = results.into_iter().collect::<anyhow::Result<Vec<Ran>>>()?;
    let wall = started.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }

    // Each variant's own report.
    for r in &ran {
        let vdir = variant_dir(&dir, &r.name);
        std::fs::create_dir_all(&vdir).with_context(|| format!("creating {}", vdir.display()))?;
        let json = serde_json::to_string_pretty(&r.summary).context("serialising a summary")?;
        std::fs::write(vdir.join("summary.json"), format!("{json}\n")).context("writing summary.json")?;
        let data = RunData {
            scenario: &r.scenario,
            aggregate: &r.aggregate,
            trace: r.trace.as_ref(),
            outcomes: None,
            end_to_end_us: None,
        };
        super::run::write_pictures(&r.summary, &vdir, &data)?;
    }

    // The comparison.
    let rows: Vec<Row<'_>> = ran.iter().map(row).collect();
    let mut w = csv::Writer::from_path(dir.join("compare.csv")).context("creating compare.csv")?;
    for r in &rows {
        w.serialize(r).context("writing compare.csv")?;
    }
    w.flush().context("writing compare.csv")?;
    let json = serde_json::to_string_pretty(&rows).context("serialising the comparison")?;
    std::fs::write(dir.join("compare.json"), format!("{json}\n")).context("writing compare.json")?;
    let drawn = crate::report::plots::write(&dir, figures(&base, &ran))?;
    std::fs::write(dir.join("report.html"), page(&base, &ran, &rows, &drawn)).context("writing report.html")?;

    if o.json {
        println!("{json}");
    } else if !o.quiet {
        print!("{}", text_table(&rows));
        println!("{} variants in {wall:.2} s; report: {}", ran.len(), dir.display());
    }
    Ok(0)
}

fn metrics(rows: &[Row<'_>]) -> Vec<(&'static str, Vec<String>)> {
    let col = |f: &dyn Fn(&Row<'_>) -> String| rows.iter().map(f).collect::<Vec<_>>();
    vec![
        ("settings", col(&|r| r.settings.clone())),
        ("requests", col(&|r| r.total.to_string())),
        ("succeeded", col(&|r| r.succeeded.to_string())),
        ("breaches (429)", col(&|r| r.breaches.to_string())),
        ("denied", col(&|r| r.denied.to_string())),
        ("failed", col(&|r| r.failed.to_string())),
        ("failed by cause", col(&|r| r.failed_by_cause.clone())),
        ("success rate", col(&|r| format!("{:.2}%", 100.0 * r.success_rate))),
        ("utilisation", col(&|r| format!("{:.2}%", 100.0 * r.utilization))),
        ("queue wait p99", col(&|r| format!("{} ms", r.queue_wait_p99_ms))),
        ("engine decision p50 / p99", col(&|r| format!("{} / {} ns", r.overhead_p50_ns, r.overhead_p99_ns))),
        ("keys disabled after errors", col(&|r| r.keys_disabled.to_string())),
        ("usable keys at the end", col(&|r| format!("{} of {}", r.keys_usable_at_end, r.keys_in_pool))),
        ("warning notifications", col(&|r| r.warning_notifications.to_string())),
        ("expectations failed", col(&|r| r.expectations_failed.to_string())),
    ]
}

fn text_table(rows: &[Row<'_>]) -> String {
    let m = metrics(rows);
    let mut widths: Vec<usize> = std::iter::once(m.iter().map(|(n, _)| n.len()).max().unwrap_or(0))
        .chain(
            rows.iter()
                .enumerate()
                .map(|(i, r)| m.iter().map(|(_, v)| v[i].chars().count()).max().unwrap_or(0).max(r.variant.len())),
        )
        .collect();
    widths[0] = widths[0].max(6);
    let mut s = format!("{:w$}", "", w = widths[0]);
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(s, "  {:>w$}", r.variant, w = widths[i + 1]);
    }
    s.push('\n');
    for (name, vals) in &m {
        let _ = write!(s, "{name:w$}", w = widths[0]);
        for (i, v) in vals.iter().enumerate() {
            let _ = write!(s, "  {v:>w$}", w = widths[i + 1]);
        }
        s.push('\n');
    }
    s
}

fn figures(sc: &Scenario, ran: &[Ran]) -> Vec<Figure> {
    let bars = |title: &str, unit: &str, f: &dyn Fn(&Ran) -> f64| {
        Panel::Bars(Bars {
            title: title.into(),
            y_label: unit.into(),
            bars: ran.iter().map(|r| (r.name.clone(), f(r))).collect(),
        })
    };
    let outcomes = Figure {
        name: "compare-outcomes".into(),
        title: "Outcomes side by side".into(),
        caption: "The same traffic through each variant: what share succeeded, how many requests the provider refused \
                  (429s are the engine's failures), how much of what the pool could serve was served, and how long \
                  the slowest 1 % of queued requests waited."
            .into(),
        width: 960,
        panel_height: 260,
        panels: vec![
            bars("Success rate", "%", &|r| 100.0 * r.summary.success_rate),
            bars("Breaches (429)", "requests", &|r| r.summary.requests.breaches as f64),
            bars("Utilisation", "%", &|r| 100.0 * r.summary.utilization),
            bars("Queue wait p99", "ms", &|r| r.summary.queue_wait_ms.p99 as f64),
        ],
    };
    let (div, x_label) = time_axis(sc.duration_ms);
    let cumulative = |t: &Trace| -> Vec<(f64, f64)> {
        let mut run = 0.0;
        (0..t.points())
            .map(|i| {
                for p in 0..t.projects.len() {
                    for m in 0..t.models.len() {
                        run += f64::from(t.cell(i, p, m).breaches);
                    }
                }
                (t.t_ms[i] as f64 / div, run)
            })
            .collect()
    };
    let lines: Vec<Line> = ran
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let t = r.trace.as_ref()?;
            Some(Line { label: r.name.clone(), colour: colour(i), points: cumulative(t), steps: true })
        })
        .collect();
    let none = ran.iter().all(|r| r.summary.requests.breaches == 0);
    let breaches = Figure {
        name: "compare-breaches".into(),
        title: "Breaches over time".into(),
        caption: "429s so far, per variant: when each one starts to let requests through that the provider refuses."
            .into(),
        width: 960,
        panel_height: 300,
        panels: vec![Panel::XY(XY {
            title: "429s so far".into(),
            x_label: x_label.into(),
            y_label: "breaches".into(),
            lines,
            note: none.then(|| "no variant had a breach".to_owned()),
            ..XY::default()
        })],
    };
    let pct = |title: &str, unit: &str, h: &dyn Fn(&Ran) -> &hdrhistogram::Histogram<u64>, empty: &str| {
        let series = ran.iter().map(|r| (r.name.clone(), h(r), 1.0)).collect();
        Panel::XY(crate::report::plots::percentile(title, unit, series, empty))
    };
    let latency = Figure {
        name: "compare-latency".into(),
        title: "Queue wait and engine cost".into(),
        caption:
            "By percentile, per variant: how long queued requests waited for a slot, and how long the engine took \
                  to decide (real clock)."
                .into(),
        width: 960,
        panel_height: 300,
        panels: vec![
            pct("Queue wait of requests that waited", "ms", &|r| &r.aggregate.queue_wait_ms, "no request waited"),
            pct("Engine decision time", "ns", &|r| &r.aggregate.admit_ns, "no decisions timed"),
        ],
    };
    let mut figures = vec![outcomes, breaches, latency];
    figures.extend(replicas_figure(ran));
    figures
}

/// With replicas in the variants: over-admission (breaches) and lost capacity against the
/// sync or renewal interval, one line per mode.
fn replicas_figure(ran: &[Ran]) -> Option<Figure> {
    use crate::engine::Setting;
    use crate::scenario::ReplicaMode;
    let modes = ReplicaMode::ALL;
    let xs: Vec<f64> =
        ran.iter().filter_map(|r| r.summary.replicas.as_ref().map(|x| x.interval_ms as f64 / 1000.0)).collect();
    let (lo, hi) = (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(0.0, f64::max));
    let series = |f: &dyn Fn(&Ran) -> u64| -> Vec<Line> {
        modes
            .iter()
            .enumerate()
            .filter_map(|(i, mode)| {
                let mut points: Vec<(f64, f64)> = ran
                    .iter()
                    .filter_map(|r| {
                        let rep = r.summary.replicas.as_ref().filter(|x| x.mode == mode.name())?;
                        Some((rep.interval_ms as f64 / 1000.0, f(r) as f64))
                    })
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                // Strict and unshared replicas do not sync: their figure holds at any interval.
                if matches!(mode, ReplicaMode::Strict | ReplicaMode::Unshared) {
                    let v = points.iter().map(|p| p.1).fold(0.0, f64::max);
                    points = vec![(lo, v), (hi, v)];
                }
                (!points.is_empty()).then(|| Line {
                    label: mode.name().into(),
                    colour: colour(i),
                    points,
                    steps: false,
                })
            })
            .collect()
    };
    let breaches = series(&|r| r.summary.requests.breaches);
    if breaches.is_empty() {
        return None;
    }
    let panel = |title: &str, y: &str, lines: Vec<Line>| {
        Panel::XY(XY {
            title: title.into(),
            x_label: "sync / renewal interval (s)".into(),
            y_label: y.into(),
            lines,
            ..XY::default()
        })
    };
    Some(Figure {
        name: "compare-replicas".into(),
        title: "Replicas: over-admission and lost capacity by interval".into(),
        caption:
            "Each point is a variant: its replicas' mode, and how often they sync counts (cached) or renew leases \
                  (leased). Breaches are what the replicas over-admitted between them; lost capacity, requests the \
                  engine held back while the provider would have taken them. Strict replicas share one store and \
                  never over-admit; unshared ones each admit the whole limit."
                .into(),
        width: 960,
        panel_height: 300,
        panels: vec![
            panel("Breaches (429): over-admission", "requests", breaches),
            panel("Lost capacity", "requests", series(&|r| r.summary.requests.lost_capacity)),
        ],
    })
}

fn page(sc: &Scenario, ran: &[Ran], rows: &[Row<'_>], drawn: &[(Figure, String)]) -> String {
    let mut b = format!("<h1>{} — comparison</h1>", html::esc(&sc.name));
    let _ = write!(b, "<p class=\"meta\">{} variants of the same traffic (seed {}), simulated", ran.len(), sc.seed);
    b.push_str(". Each variant's own report is in the folder of its name beside this page.</p>");
    if let Some(d) = &sc.description {
        let _ = write!(b, "<p>{}</p>", html::esc(d));
    }
    b.push_str("<div class=\"story\">");
    // Fewest breaches first, then the highest success rate, then the highest utilisation.
    let best = rows.iter().min_by(|a, b| {
        a.breaches
            .cmp(&b.breaches)
            .then(b.success_rate.total_cmp(&a.success_rate))
            .then(b.utilization.total_cmp(&a.utilization))
    });
    for r in rows {
        let _ = write!(
            b,
            "<p><b>{}</b> ({}): {} of {} succeeded ({:.1} %), {} breaches, utilisation {:.1} %{}.</p>",
            html::esc(r.variant),
            html::esc(&r.settings),
            r.succeeded,
            r.total,
            100.0 * r.success_rate,
            r.breaches,
            100.0 * r.utilization,
            if r.expectations_failed > 0 {
                format!(", {} expectation(s) fail", r.expectations_failed)
            } else {
                String::new()
            }
        );
    }
    if let Some(best) = best {
        let _ = write!(
            b,
            "<p>Fewest breaches, then highest success and utilisation: <b>{}</b>.</p>",
            html::esc(best.variant)
        );
    }
    b.push_str("</div><h2>Side by side</h2>");
    let m = metrics(rows);
    let mut head: Vec<&str> = vec!["figure"];
    head.extend(rows.iter().map(|r| r.variant));
    let table_rows: Vec<Vec<String>> = m
        .iter()
        .map(|(name, vals)| std::iter::once(html::esc(name)).chain(vals.iter().map(|v| html::esc(v))).collect())
        .collect();
    b.push_str(&html::table(&head, &table_rows));
    b.push_str("<h2>Plots</h2>");
    for (f, svg) in drawn {
        b.push_str(&html::figure(f, svg));
    }
    html::page(&format!("keysim compare — {}", sc.name), &b)
}

/// The folder a variant's report is written to, under the comparison's.
fn variant_dir(dir: &Path, variant: &str) -> PathBuf {
    dir.join(slug(variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_come_from_flags_in_order_or_from_the_table() {
        let cli: Vec<String> = ["a=engine.reserve=0", "b=engine.admission=check-then-act", "a=engine.safety=0.1", "c"]
            .map(String::from)
            .into();
        let v = variants(&cli, &[]).unwrap();
        assert_eq!(v[0], ("a".into(), vec!["engine.reserve=0".into(), "engine.safety=0.1".into()]));
        assert_eq!(v[1].0, "b");
        assert_eq!(v[2], ("c".into(), vec![]));
        let table = vec![("t".to_owned(), vec!["engine.reserve=0".to_owned()])];
        assert_eq!(variants(&[], &table).unwrap(), table);
        assert!(variants(&["x=nonsense".into()], &[]).is_err());
    }
}

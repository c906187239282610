//! The figures of one run, built from its aggregate and trace.
//!
//! - `usage-<model>`: usage against limits per (project, dimension), breaches marked, daily
//!   resets ruled;
//! - `breaches`: 429s per interval and in total;
//! - `overhead`: the engine's decision time as a percentile plot (and, for load runs,
//!   end-to-end latency with and without the engine);
//! - `queue-wait`: how long denied requests waited, as a percentile plot;
//! - `capacity`: what each model's pool had left, and its usable projects and keys, with pool
//!   events ruled;
//! - `warnings`: notifications against exhaustion spells.
//!
//! Simulated runs have all of them; load runs (no judge beside them) the latency ones.

use std::path::Path;

use anyhow::Context;

use super::chart::{self, colour, Figure, Line, Marks, Panel, Shape, BAD, GOOD, MUTED, XY};
use super::trace::{HealthMark, Trace};
use super::Aggregate;
use crate::engine::{PoolEvent, Timestamp};
use crate::scenario::Scenario;

/// Width of every run figure, in pixels.
const WIDTH: u32 = 960;
/// Height of one panel, in pixels.
const PANEL: u32 = 300;
/// Projects drawn in a usage figure at most.
const MAX_PROJECTS: usize = 8;
const DIMS: [&str; 4] = ["RPM", "TPM", "RPD", "TPD"];

/// Step lines hold their last value to the run's end at `end_x`.
fn to_end(mut points: Vec<(f64, f64)>, end_x: f64) -> Vec<(f64, f64)> {
    if let Some(&(x, y)) = points.last() {
        if x < end_x {
            points.push((end_x, y));
        }
    }
    points
}

/// A panel over the run's time axis, from 0 to `end`.
fn over_time(
    title: String,
    x_label: &str,
    end: f64,
    y_label: String,
    lines: Vec<Line>,
    rules_x: Vec<(f64, String)>,
) -> XY {
    XY { title, x_label: x_label.into(), y_label, x_range: Some((0.0, end)), lines, rules_x, ..XY::default() }
}

/// The dimensions worth drawing: RPM, TPM and RPD, and TPD where some project limits it.
fn drawn_dims(sc: &Scenario) -> usize {
    if sc.projects.iter().any(|p| p.limits.iter().any(|l| l.tpd.is_some())) {
        4
    } else {
        3
    }
}

/// What a run's figures are drawn from.
pub struct RunData<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Counts and histograms.
    pub aggregate: &'a Aggregate,
    /// The run over time (simulated runs).
    pub trace: Option<&'a Trace>,
    /// Requests by terminal state over time (load runs; simulated ones carry theirs in the
    /// trace).
    pub outcomes: Option<&'a super::trace::Outcomes>,
    /// End-to-end latency in µs through the engine and without it (load runs).
    pub end_to_end_us: Option<(&'a hdrhistogram::Histogram<u64>, Option<&'a hdrhistogram::Histogram<u64>>)>,
}

/// The time axis: a divisor of milliseconds and its label.
pub fn time_axis(duration_ms: u64) -> (f64, &'static str) {
    if duration_ms <= 3 * 3_600_000 {
        (60_000.0, "time (min)")
    } else {
        (3_600_000.0, "time (h)")
    }
}

/// A file-name-safe form of `s`.
pub fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// Midnights Pacific (when daily quotas reset) within the run, as x values.
fn day_resets(sc: &Scenario, div: f64) -> Vec<(f64, String)> {
    let end = Timestamp(sc.start.0 + sc.duration_ms);
    let mut out = Vec::new();
    let mut t = crate::engine::next_pacific_midnight(sc.start);
    while t.0 <= end.0 {
        out.push((t.since(sc.start) as f64 / div, "RPD reset (00:00 PT)".to_owned()));
        t = crate::engine::next_pacific_midnight(Timestamp(t.0 + 1));
    }
    out
}

fn pool_events(sc: &Scenario, div: f64) -> Vec<(f64, String)> {
    sc.events
        .iter()
        .map(|e| {
            let what = match &e.event {
                PoolEvent::Add(k) => format!("+ {}", super::redact(&k.id)),
                PoolEvent::Remove(k) => format!("− {}", super::redact(k)),
                PoolEvent::Enable(k) => format!("enable {}", super::redact(k)),
                PoolEvent::Disable(k) => format!("disable {}", super::redact(k)),
                PoolEvent::Revoke(k) => format!("revoked {}", super::redact(k)),
                PoolEvent::AddProject(p) => format!("+ project {}", p.id),
                PoolEvent::SetLimits { project, model, .. } => format!("limits {project} {model}"),
            };
            (e.at_ms as f64 / div, what)
        })
        .collect()
}

/// What the provider did on its own (the scenario's script): spells of failures and key or
/// limit changes, as rules.
fn provider_events(sc: &Scenario, div: f64) -> Vec<(f64, String)> {
    use crate::scenario::ProviderEvent as E;
    let script = &sc.provider.script;
    let mut out: Vec<(f64, String)> = script
        .events
        .iter()
        .map(|e| {
            let what = match &e.event {
                E::Suspend(k) => format!("provider suspends {}", super::redact(k)),
                E::Invalidate(k) => format!("provider deletes {}", super::redact(k)),
                E::Revive(k) => format!("provider restores {}", super::redact(k)),
                E::Limits { project, model, .. } => {
                    format!("provider limits {} {}", sc.projects[*project].id, sc.models[*model].name)
                }
            };
            (e.at_ms as f64 / div, what)
        })
        .collect();
    for s in &script.storms {
        let pct = (s.rate * 100.0).round();
        out.push((s.at_ms as f64 / div, format!("{} storm ({pct} %)", s.kind.name())));
        out.push((s.at_ms.saturating_add(s.for_ms) as f64 / div, "storm ends".into()));
    }
    out
}

/// Every figure of the run.
pub fn figures(d: &RunData<'_>) -> Vec<Figure> {
    let mut out = Vec::new();
    if let Some(o) = d.outcomes.or(d.trace.map(|t| &t.outcomes)) {
        out.push(outcomes(d.scenario, o));
    }
    if let Some(t) = d.trace {
        for m in 0..t.models.len() {
            out.push(usage(d.scenario, t, m));
        }
        out.push(breaches(d.scenario, t));
    }
    out.push(overhead(d));
    out.push(queue_wait(d.aggregate));
    if let Some(t) = d.trace {
        out.push(capacity(d.scenario, t));
        out.push(warnings(d.scenario, t));
    }
    out
}

/// Draws `figures` into `dir/plots/` as SVG and PNG; returns each figure with its SVG.
pub fn write(dir: &Path, figures: Vec<Figure>) -> anyhow::Result<Vec<(Figure, String)>> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let mut out = Vec::with_capacity(figures.len());
    for f in figures {
        let drawn = f.draw()?;
        for (ext, bytes) in [("svg", drawn.svg.as_bytes()), ("png", drawn.png.as_slice())] {
            let path = plots.join(format!("{}.{ext}", f.name));
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        out.push((f, drawn.svg));
    }
    Ok(out)
}

/// Most points of a line over time.
const MAX_POINTS: usize = 720;

fn outcomes(sc: &Scenario, o: &super::trace::Outcomes) -> Figure {
    let (div, x_label) = time_axis(sc.duration_ms);
    // Neighbouring intervals add up until the line fits.
    let merge = o.counts.len().div_ceil(MAX_POINTS).max(1);
    let width_ms = o.interval_ms * merge as u64;
    let sums: Vec<[u64; 4]> = o
        .counts
        .chunks(merge)
        .map(|c| {
            c.iter().fold([0u64; 4], |mut a, x| {
                for s in 0..4 {
                    a[s] += x[s];
                }
                a
            })
        })
        .collect();
    let end = (sums.len() as u64 * width_ms).max(sc.duration_ms) as f64 / div;
    let names = ["succeeded", "breaches (429)", "denied by the engine", "failed (other)"];
    let colours = [GOOD, BAD, colour(1), colour(3)];
    let totals: Vec<u64> = (0..4).map(|s| sums.iter().map(|c| c[s]).sum()).collect();
    let lines = (0..4)
        .filter(|&s| totals[s] > 0)
        .map(|s| Line {
            label: format!("{} ({})", names[s], totals[s]),
            colour: colours[s],
            points: to_end(
                sums.iter().enumerate().map(|(i, c)| ((i as u64 * width_ms) as f64 / div, c[s] as f64)).collect(),
                end,
            ),
            steps: true,
        })
        .collect::<Vec<_>>();
    Figure {
        name: "outcomes".into(),
        title: "Outcomes over time".into(),
        caption: format!(
            "Requests by how they ended, per {}-s interval of their end: served, refused by the provider with \
             429 (the engine's failures), denied by the engine (nothing left, or queued past max_wait), or failed \
             otherwise. Pool events are ruled.",
            width_ms as f64 / 1000.0
        ),
        width: WIDTH,
        panel_height: PANEL,
        panels: vec![Panel::XY(XY {
            note: lines.is_empty().then(|| "no requests".to_owned()),
            ..over_time(
                "Requests per interval, by outcome".into(),
                x_label,
                end,
                "requests".into(),
                lines,
                pool_events(sc, div),
            )
        })],
    }
}

/// The projects worth drawing for `model`: most breaches first, then highest peaks.
fn chosen_projects(t: &Trace, model: usize) -> Vec<usize> {
    let mut rank: Vec<(u64, f32, usize)> = (0..t.projects.len())
        .map(|p| {
            let (mut breaches, mut peak) = (0u64, 0f32);
            for i in 0..t.points() {
                let c = t.cell(i, p, model);
                breaches += u64::from(c.breaches);
                peak = peak.max(c.rpm).max(c.tpm).max(c.rpd);
            }
            (breaches, peak, p)
        })
        .collect();
    rank.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut keep: Vec<usize> = rank.into_iter().take(MAX_PROJECTS).map(|r| r.2).collect();
    keep.sort_unstable();
    keep
}

fn usage(sc: &Scenario, t: &Trace, model: usize) -> Figure {
    let (div, x_label) = time_axis(sc.duration_ms);
    let shown = chosen_projects(t, model);
    let x = |i: usize| t.t_ms[i] as f64 / div;
    let end = sc.duration_ms as f64 / div;
    let panels = (0..drawn_dims(sc))
        .map(|d| {
            let lines = shown
                .iter()
                .enumerate()
                .map(|(n, &p)| Line {
                    label: t.projects[p].clone(),
                    colour: colour(n),
                    points: to_end(
                        (0..t.points()).map(|i| (x(i), 100.0 * f64::from(t.cell(i, p, model).get(d)))).collect(),
                        end,
                    ),
                    steps: d < 2,
                })
                .collect();
            let breaches: Vec<(f64, f64)> = shown
                .iter()
                .flat_map(|&p| {
                    (0..t.points())
                        .filter(move |&i| t.cell(i, p, model).breaches > 0)
                        .map(move |i| (x(i), 100.0 * f64::from(t.cell(i, p, model).get(d))))
                })
                .collect();
            let marks = if breaches.is_empty() {
                Vec::new()
            } else {
                vec![Marks { label: "429 (breach)".into(), colour: BAD, shape: Shape::Cross, points: breaches }]
            };
            let what = [
                "peak requests in a minute",
                "peak tokens in a minute",
                "requests so far today",
                "tokens so far today",
            ][d];
            Panel::XY(XY {
                marks,
                rules_y: vec![(100.0, "limit".into())],
                ..over_time(
                    format!("{} — {what}, % of each project's limit", DIMS[d]),
                    x_label,
                    end,
                    format!("% of {}", DIMS[d]),
                    lines,
                    if d >= 2 { day_resets(sc, div) } else { Vec::new() },
                )
            })
        })
        .collect();
    let name = &t.models[model];
    let more = if t.projects.len() > shown.len() {
        format!(
            " It shows {} of {} projects: those with the most breaches, then the highest peaks.",
            shown.len(),
            t.projects.len()
        )
    } else {
        String::new()
    };
    Figure {
        name: format!("usage-{}", slug(name)),
        title: format!("Usage against limits — {name}"),
        caption: format!(
            "What the provider counted for each project (the judge's view), as a share of its limit, per \
             {}-s interval (peaks within it). A line above 100 % is a project over its quota; red crosses are \
             requests the provider refused with 429. Minute windows recover every minute; the daily count \
             resets at midnight Pacific (ruled).{more}",
            sc.timeline_ms as f64 * f64::from(t.stride) / 1000.0
        ),
        width: WIDTH,
        panel_height: PANEL,
        panels,
    }
}

fn breaches(sc: &Scenario, t: &Trace) -> Figure {
    let (div, x_label) = time_axis(sc.duration_ms);
    let per_model = |m: usize| -> Vec<(f64, f64)> {
        (0..t.points())
            .map(|i| {
                let n: u32 = (0..t.projects.len()).map(|p| t.cell(i, p, m).breaches).sum();
                (t.t_ms[i] as f64 / div, f64::from(n))
            })
            .collect()
    };
    let series: Vec<Vec<(f64, f64)>> = (0..t.models.len()).map(per_model).collect();
    let total: f64 = series.iter().flatten().map(|p| p.1).sum();
    let cumulative = |s: &Vec<(f64, f64)>| {
        let mut run = 0.0;
        s.iter()
            .map(|&(x, y)| {
                run += y;
                (x, run)
            })
            .collect()
    };
    let end = sc.duration_ms as f64 / div;
    let line = |m: usize, points| Line {
        label: t.models[m].clone(),
        colour: colour(m),
        points: to_end(points, end),
        steps: true,
    };
    let note = (total == 0.0).then(|| "no breaches: the provider accepted every request the engine sent".to_owned());
    let events = pool_events(sc, div);
    let per_interval = XY {
        note: note.clone(),
        ..over_time(
            "429s per interval".into(),
            x_label,
            end,
            "breaches".into(),
            series.iter().enumerate().map(|(m, s)| line(m, s.clone())).collect(),
            events.clone(),
        )
    };
    let running = XY {
        note,
        ..over_time(
            "429s so far".into(),
            x_label,
            end,
            "breaches".into(),
            series.iter().enumerate().map(|(m, s)| line(m, cumulative(s))).collect(),
            events,
        )
    };
    Figure {
        name: "breaches".into(),
        title: "Breaches over time".into(),
        caption: format!(
            "Requests the engine admitted that the provider refused with 429, per model: the engine's \
             failures. {total:.0} in all. Pool events are ruled."
        ),
        width: WIDTH,
        panel_height: PANEL,
        panels: vec![Panel::XY(per_interval), Panel::XY(running)],
    }
}

/// A percentile panel of labelled histograms (values divided by their scale).
pub fn percentile(
    title: &str,
    unit: &str,
    series: Vec<(String, &hdrhistogram::Histogram<u64>, f64)>,
    empty: &str,
) -> XY {
    let reach = series.iter().map(|(_, h, _)| chart::percentile_reach(h)).fold(1.0f64, f64::max).ceil();
    let lines: Vec<Line> = series
        .into_iter()
        .enumerate()
        .filter(|(_, (_, h, _))| !h.is_empty())
        .map(|(i, (label, h, scale))| Line {
            label: format!(
                "{label} (p50 {}, p99 {}, max {} {unit})",
                fmt(h.value_at_quantile(0.5) as f64 / scale),
                fmt(h.value_at_quantile(0.99) as f64 / scale),
                fmt(h.max() as f64 / scale)
            ),
            colour: colour(i),
            points: chart::percentile_points(h, scale),
            steps: false,
        })
        .collect();
    XY {
        title: title.into(),
        x_label: "percentile".into(),
        y_label: unit.into(),
        note: lines.is_empty().then(|| empty.to_owned()),
        lines,
        percentile_x: true,
        x_range: Some((0.0, reach)),
        ..XY::default()
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn overhead(d: &RunData<'_>) -> Figure {
    let a = d.aggregate;
    let mut panels = vec![Panel::XY(percentile(
        "Engine decision time (real clock)",
        "ns",
        vec![("admission".into(), &a.admit_ns, 1.0), ("settlement".into(), &a.settle_ns, 1.0)],
        "no decisions timed",
    ))];
    let mut caption = "How long the engine took to decide, on the real clock, by percentile: the cost keysim adds \
                       to every request. The x axis stretches the tail: 99 % of decisions took at most the value \
                       above 99 %."
        .to_owned();
    if let Some((e2e, base)) = d.end_to_end_us {
        let mut series = vec![("through the engine".to_owned(), e2e, 1000.0)];
        if let Some(b) = base {
            series.push(("without the engine".to_owned(), b, 1000.0));
        }
        panels.push(Panel::XY(percentile("End-to-end latency", "ms", series, "no request succeeded")));
        caption.push_str(
            " Below: intended start to answer of succeeded requests, through the engine (queue waits \
             included) and, with --baseline, the same schedule sent without it.",
        );
    }
    Figure {
        name: "overhead".into(),
        title: "Engine overhead".into(),
        caption,
        width: WIDTH,
        panel_height: PANEL,
        panels,
    }
}

fn queue_wait(a: &Aggregate) -> Figure {
    let max = a.queue_wait_ms.max();
    let (unit, scale) = if max >= 120_000 { ("s", 1000.0) } else { ("ms", 1.0) };
    let empty = "no request waited: every request was admitted or refused at once";
    let waited = percentile(
        "Queue wait of requests that waited",
        unit,
        vec![("queue wait".into(), &a.queue_wait_ms, scale)],
        empty,
    );
    Figure {
        name: "queue-wait".into(),
        title: "Queue wait".into(),
        caption: format!(
            "How long requests the engine could not admit at once waited for a slot (until their retry time, \
             up to the scenario's max_wait), by percentile. {} of {} requests waited.",
            a.queue_wait_ms.len(),
            a.counts.total
        ),
        width: WIDTH,
        panel_height: PANEL,
        panels: vec![Panel::XY(waited)],
    }
}

fn capacity(sc: &Scenario, t: &Trace) -> Figure {
    let (div, x_label) = time_axis(sc.duration_ms);
    let x = |i: usize| t.t_ms[i] as f64 / div;
    let end = sc.duration_ms as f64 / div;
    let mut rules = pool_events(sc, div);
    rules.extend(provider_events(sc, div));
    rules.extend(day_resets(sc, div));
    let mut left = Vec::new();
    let mut counts = Vec::new();
    for (m, name) in t.models.iter().enumerate() {
        for (d, dim) in DIMS.iter().enumerate().take(drawn_dims(sc)) {
            left.push(Line {
                label: format!("{name} {dim}"),
                colour: colour(m * 4 + d),
                points: to_end(
                    (0..t.points()).map(|i| (x(i), 100.0 * f64::from(t.room(i, m).remaining[d]))).collect(),
                    end,
                ),
                steps: true,
            });
        }
        counts.push(Line {
            label: format!("{name}: projects"),
            colour: colour(m * 2),
            points: to_end((0..t.points()).map(|i| (x(i), f64::from(t.room(i, m).projects))).collect(), end),
            steps: true,
        });
        counts.push(Line {
            label: format!("{name}: keys"),
            colour: colour(m * 2 + 1),
            points: to_end((0..t.points()).map(|i| (x(i), f64::from(t.room(i, m).keys))).collect(), end),
            steps: true,
        });
    }
    let remaining = XY {
        y_range: Some((0.0, 108.0)),
        ..over_time(
            "What the pool had left at each interval's end (lowest of merged ones), % of usable".into(),
            x_label,
            end,
            "% left".into(),
            left,
            rules.clone(),
        )
    };
    // Key-health events on the first model's lines: keys on its keys line, the model's
    // back-offs and learned limits on its projects line.
    let on_line = |at_ms: u64, keys: bool| {
        let i = t.t_ms.iter().rposition(|&s| s <= at_ms).unwrap_or(0);
        let r = t.room(i.min(t.points().saturating_sub(1)), 0);
        (at_ms as f64 / div, f64::from(if keys { r.keys } else { r.projects }))
    };
    let marked = |mark: HealthMark, keys: bool| -> Vec<(f64, f64)> {
        t.health.iter().filter(|(_, m)| *m == mark).map(|&(at, _)| on_line(at, keys)).collect()
    };
    let marks: Vec<Marks> = if t.points() == 0 {
        Vec::new()
    } else {
        [
            ("key disabled (provider rejected it)", BAD, Shape::Cross, marked(HealthMark::KeyDisabled, true)),
            ("key revived (probe passed)", GOOD, Shape::Ring, marked(HealthMark::KeyRevived, true)),
            ("model backs off (provider capacity)", MUTED, Shape::Triangle, marked(HealthMark::ModelBackoff, false)),
            ("limit learned from a 429", colour(3), Shape::Dot, marked(HealthMark::LimitLearned, false)),
        ]
        .into_iter()
        .filter(|(_, _, _, p)| !p.is_empty())
        .map(|(label, colour, shape, points)| Marks { label: label.into(), colour, shape, points })
        .collect()
    };
    let usable = XY {
        marks,
        ..over_time("Usable projects and keys, and key health".into(), x_label, end, "count".into(), counts, rules)
    };
    Figure {
        name: "capacity".into(),
        title: "Capacity over time".into(),
        caption: "The engine's own view of each model's pool: what was left of the usable capacity (limits less \
                  reserve and safety margin) on each dimension, and how many projects and keys could serve. \
                  Pool events (keys added, removed, revoked), what the provider did on its own (storms, keys \
                  suspended or deleted, limits changed) and daily resets are ruled; key-health events (keys \
                  disabled and revived, back-offs, limits learned) are marked."
            .into(),
        width: WIDTH,
        panel_height: PANEL,
        panels: vec![Panel::XY(remaining), Panel::XY(usable)],
    }
}

fn warnings(sc: &Scenario, t: &Trace) -> Figure {
    let (div, x_label) = time_axis(sc.duration_ms);
    let dim_name = |d: usize| ["RPM", "TPM", "RPD", "TPD"].get(d).copied().unwrap_or("?");
    let mut lanes: Vec<(usize, usize)> = t.spells.iter().map(|s| (s.model, s.dimension)).collect();
    lanes.extend(t.notices.iter().flat_map(|n| n.about.iter().copied()));
    lanes.sort_unstable();
    lanes.dedup();
    let lane = |key: (usize, usize)| lanes.iter().position(|l| *l == key).unwrap_or(0) as f64;
    let mut firing = Vec::new();
    let mut resolved = Vec::new();
    for n in &t.notices {
        for &a in &n.about {
            let pt = (n.at_ms as f64 / div, lane(a));
            if n.firing {
                firing.push(pt);
            } else {
                resolved.push(pt);
            }
        }
    }
    let (warned, missed): (Vec<_>, Vec<_>) = t.spells.iter().partition(|s| s.warned_ms.is_some());
    let spell_points = |v: Vec<&crate::report::trace::Spell>| -> Vec<(f64, f64)> {
        v.into_iter().map(|s| (s.at_ms as f64 / div, lane((s.model, s.dimension)))).collect()
    };
    let marks = vec![
        Marks { label: "notification (firing)".into(), colour: colour(0), shape: Shape::Triangle, points: firing },
        Marks { label: "notification (resolved)".into(), colour: MUTED, shape: Shape::Ring, points: resolved },
        Marks { label: "pool ran dry, warned".into(), colour: GOOD, shape: Shape::Cross, points: spell_points(warned) },
        Marks { label: "pool ran dry, missed".into(), colour: BAD, shape: Shape::Cross, points: spell_points(missed) },
    ];
    let marks: Vec<Marks> = marks.into_iter().filter(|m| !m.points.is_empty()).collect();
    let mut y_names: Vec<String> = lanes.iter().map(|&(m, d)| format!("{} · {}", t.models[m], dim_name(d))).collect();
    let note = match (sc.warnings.is_some(), marks.is_empty()) {
        (_, false) => None,
        (true, true) => Some("no notifications and no exhaustion: nothing to warn of".to_owned()),
        (false, true) => Some("warnings are off in this scenario, and the pool never ran dry".to_owned()),
    };
    if y_names.is_empty() {
        y_names.push(String::new());
    }
    let n = y_names.len() as f64;
    let panel = XY {
        title: if sc.warnings.is_some() {
            "Notifications and exhaustion spells".into()
        } else {
            "Exhaustion spells (warnings off)".into()
        },
        x_label: x_label.into(),
        y_label: String::new(),
        x_range: Some((0.0, sc.duration_ms as f64 / div)),
        y_range: Some((-0.5, n - 0.5 + 0.6 * n.max(2.0))),
        marks,
        rules_x: day_resets(sc, div),
        y_names,
        note,
        ..XY::default()
    };
    Figure {
        name: "warnings".into(),
        title: "Warnings against exhaustion".into(),
        caption: "One lane per model and dimension. Triangles are notifications as they went out; crosses mark the \
                  start of each spell in which the pool had nothing left on that dimension — green when a \
                  notification warned of it beforehand, red when none did."
            .into(),
        width: WIDTH,
        panel_height: PANEL,
        panels: vec![Panel::XY(panel)],
    }
}

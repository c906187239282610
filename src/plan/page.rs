//! What a plan writes: the sentence per column, `plan.csv`, the heatmap and `report.html`.

use std::fmt::Write as _;

use anyhow::Context;

use super::arithmetic::{Arithmetic, Minute};
use super::grid::{trim, Axis};
use super::point::Outcome;
use super::pool::total_rate;
use super::Written;
use crate::report::chart::{Figure, Heat, Panel};
use crate::report::html;
use crate::scenario::{Arrival, Scenario};

/// What arithmetic says about a column, for its sentence.
pub(crate) struct Sums<'a> {
    /// The neediest model's arithmetic.
    pub(crate) arith: Option<&'a Arithmetic>,
    /// Tier-1 projects the same arithmetic asks for.
    pub(crate) tier1: Option<u64>,
    /// Spare capacity at the recommended pool.
    pub(crate) headroom: Option<f64>,
    /// The same rate all day long, where the run is shorter than a day.
    pub(crate) all_day: Option<&'a Arithmetic>,
}

/// A column's recommendation in words: where (the rate, or a log's demand and its busiest
/// minute), the smallest pool against the scenario's own, and the arithmetic behind it.
pub(crate) fn sentence(
    sc: &Scenario,
    at: &[(String, String)],
    projects: Option<u64>,
    out: &Outcome,
    sums: Sums<'_>,
    sizes: &[u64],
    busiest: Option<&Minute>,
) -> String {
    let logged = sc
        .traffic
        .iter()
        .any(|c| matches!(&c.arrival, Arrival::Trace(t) if t.rows.first().is_some_and(|r| r.answer.is_some())));
    let mut where_ = match busiest.filter(|_| logged) {
        Some(b) => {
            format!("on the log's demand (busiest minute {}: {} requests, {} input tokens)", b.at, b.requests, b.tokens)
        }
        None => format!("at {} requests/s peak", trim(total_rate(sc))),
    };
    for (k, v) in at.iter().filter(|(k, _)| k != "rate") {
        let _ = write!(where_, ", {k} = {v}");
    }
    let tier = match sc.projects[0].tier {
        crate::scenario::Tier::Free => "free-tier",
        crate::scenario::Tier::Paid => "paid",
    };
    let own = sc.projects.len() as u64;
    let mut s = match projects {
        Some(n) => format!(
            "{where_} with this profile: {n} {tier} project{} ({}; success {:.1} %, {} denied, {} breaches, p99 queue \
             wait {} ms)",
            if n == 1 { "" } else { "s" },
            match n.cmp(&own) {
                std::cmp::Ordering::Greater => format!("{} more like the {own} it has", n - own),
                std::cmp::Ordering::Less => format!("{} fewer than the {own} it has", own - n),
                std::cmp::Ordering::Equal => format!("the {own} it has"),
            },
            100.0 * out.success_rate,
            out.denied,
            out.breaches,
            out.queue_p99_ms
        ),
        None => format!(
            "{where_}: even {} projects fall short (success {:.1} %, {} denied, {} breaches, p99 queue wait {} ms); \
             sweep further",
            sizes.iter().max().copied().unwrap_or(0),
            100.0 * out.success_rate,
            out.denied,
            out.breaches,
            out.queue_p99_ms
        ),
    };
    if let Some(t) = sums.tier1 {
        let _ = write!(s, ", or {t} tier-1 project{}", if t == 1 { "" } else { "s" });
    }
    if let Some(h) = sums.headroom {
        let _ = write!(s, "; headroom {:.0} %", 100.0 * h);
    }
    if let Some(a) = sums.arith {
        let per_minute = |rps: f64| trim(rps * 60.0);
        let _ = write!(
            s,
            ". Arithmetic: {} requests a minute of {} at {}, over the {} a minute one project serves on {} \
             (its limit less the engine's safety margin and reserve), is {} project{}",
            per_minute(a.rate),
            a.model,
            if logged { "its busiest minute" } else { "its peak" },
            per_minute(a.per_project_rps),
            a.binding,
            a.projects,
            if a.projects == 1 { "" } else { "s" },
        );
        if projects.is_some_and(|n| n > a.projects) {
            s.push_str(
                "; the simulation asks for more, as arrivals bunch within the minute and the queue's wait is bounded",
            );
        }
    }
    // A run shorter than a day spends only its share of the daily quotas.
    if let Some(d) = sums.all_day.filter(|d| projects.is_none_or(|n| d.projects > n)) {
        let _ = write!(
            s,
            "; the same rate all day long would need {} projects ({} of {} binds)",
            d.projects, d.binding, d.model
        );
    }
    s
}

pub(crate) fn write_csv(dir: &std::path::Path, w: &Written<'_>) -> anyhow::Result<()> {
    let (others, sizes, grid) = (&w.grid.others, &w.grid.sizes, w.outcomes);
    let coords = |c| w.grid.coords(c);
    let path = dir.join("plan.csv");
    let mut out = csv::Writer::from_path(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut head: Vec<String> = vec!["projects".into()];
    head.extend(others.iter().map(|a| a.name().to_owned()));
    head.extend(
        ["total", "succeeded", "breaches", "denied", "success_rate", "utilization", "queue_p99_ms", "meets_objective"]
            .map(String::from),
    );
    out.write_record(&head)?;
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
            out.write_record(&rec)?;
        }
    }
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(crate) fn column_name(others: &[Axis], c: &[usize]) -> String {
    if others.is_empty() {
        return "as written".into();
    }
    others.iter().zip(c).map(|(a, &i)| a.label(i)).collect::<Vec<_>>().join(" · ")
}

fn column_name_of(at: &[(String, String)]) -> String {
    at.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

pub(crate) fn heatmap(w: &Written<'_>) -> Figure {
    let (name, others, sizes, grid) = (w.name, &w.grid.others, &w.grid.sizes, w.outcomes);
    let (recs, slo) = (w.recommendations, &w.slo);
    let coords = |c| w.grid.coords(c);
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
             ({}), 429 where the provider refused requests. The outlined cell in each column is the smallest pool \
             that meets it.",
            slo.describe()
        ),
        width: (160 + 90 * columns as u32).clamp(640, 1800),
        panel_height: (110 + 26 * sizes.len() as u32).max(300),
        panels: vec![Panel::Heat(heat)],
    }
}

pub(crate) fn plan_page(w: &Written<'_>, drawn: &[(Figure, String)]) -> String {
    let (name, slo, recs, points) = (w.name, &w.slo, w.recommendations, w.grid.points());
    let (jobs, wall, sizes, others, grid) = (w.jobs, w.wall_s, &w.grid.sizes, &w.grid.others, w.outcomes);
    let coords = |c| w.grid.coords(c);
    let mut b = format!("<h1>{} — capacity plan</h1>", html::esc(name));
    let _ = write!(
        b,
        "<p class=\"meta\">{points} simulated points on {jobs} threads in {wall:.1} s · objective: {}</p>",
        html::esc(&slo.describe())
    );
    b.push_str("<div class=\"story\">");
    for r in recs {
        let _ = write!(b, "<p>{}</p>", html::esc(&r.text));
    }
    b.push_str("</div>");
    if let Some(r) = recs.iter().find(|r| !r.busiest.is_empty()) {
        let _ = write!(
            b,
            "<h2>Busiest minutes</h2><p>Of the recorded traffic{}, in Pacific time (the calendar Gemini's days keep):</p>",
            if r.at.is_empty() { String::new() } else { format!(" at {}", html::esc(&column_name_of(&r.at))) }
        );
        let rows: Vec<Vec<String>> =
            r.busiest.iter().map(|m| vec![html::esc(&m.at), m.requests.to_string(), m.tokens.to_string()]).collect();
        b.push_str(&html::table(&["minute", "requests", "input tokens"], &rows));
    }
    b.push_str("<h2>Grid</h2>");
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

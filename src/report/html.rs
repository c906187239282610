//! `report.html`: one self-contained page per run (inline SVG and CSS, no script, nothing
//! fetched), readable top-down: the story in a paragraph, expectations, tables, then plots.

use std::fmt::Write as _;

use super::chart::Figure;
use super::summary::{RunMode, Summary};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's style: plain, printable, wide tables scroll.
pub const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
h3{font-size:16px;margin:0 0 6px}
.meta{color:#555;margin:0 0 12px}.story{background:#fff;border-left:4px solid #1f77b4;padding:10px 16px;margin:12px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:14px}
th,td{border:1px solid #dde;padding:4px 9px;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef1f5}.ok{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}
.scroll{overflow-x:auto}figure{background:#fff;margin:14px 0;padding:12px;border:1px solid #e3e5ea}
figure svg{max-width:100%;height:auto;display:block}figcaption{color:#444;font-size:13.5px;margin-top:6px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;color:#fff}
.badge.ok{background:#1a7f37}.badge.fail{background:#c62828}
footer{color:#777;font-size:12.5px;margin:30px 0 10px}
";

/// A table from a header and rows of cells (already escaped); cells that look numeric are
/// right-aligned.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let numeric = !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ".,-%− µnsm".contains(ch));
            if numeric {
                let _ = write!(s, "<td class=\"n\">{c}</td>");
            } else {
                let _ = write!(s, "<td>{c}</td>");
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

/// A figure with its title and caption, its SVG inline.
pub fn figure(f: &Figure, svg: &str) -> String {
    // An inline SVG needs no XML prologue.
    let svg = svg.trim_start().strip_prefix("<?xml").map_or(svg, |rest| rest.split_once("?>").map_or(svg, |x| x.1));
    format!(
        "<figure id=\"{}\"><h3>{}</h3>{}<figcaption>{}</figcaption></figure>\n",
        esc(&f.name),
        esc(&f.title),
        svg,
        esc(&f.caption)
    )
}

/// A whole page.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>\n{body}\n<footer>Written by keysim {}. \
         Self-contained: it loads nothing.</footer></main></body></html>\n",
        esc(title),
        env!("CARGO_PKG_VERSION")
    )
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn duration(s: f64) -> String {
    if s >= 2.0 * 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else if s >= 2.0 * 3600.0 {
        format!("{:.1} hours", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.0} minutes", s / 60.0)
    } else {
        format!("{s:.0} seconds")
    }
}

/// The run in a few sentences.
pub fn story(s: &Summary) -> String {
    let r = &s.requests;
    let mut out = format!(
        "{} requests over {}: {} succeeded ({}), {} breached (429s the engine let through), {} were denied by \
         the engine and {} failed for other reasons. ",
        r.total,
        duration(s.duration_s),
        r.succeeded,
        pct(s.success_rate),
        r.breaches,
        r.denied,
        r.failed
    );
    if let Some((reason, n)) = r.denied_by_reason.iter().max_by_key(|(_, n)| **n) {
        let _ = write!(out, "Most denials were {} ({n}). ", esc(reason));
    }
    let high = &r.high_priority;
    if high.total > 0 {
        let _ = write!(out, "High-priority requests: {} of {} succeeded. ", high.succeeded, high.total);
    }
    if r.delayed > 0 {
        let _ = write!(out, "{} requests waited in the queue (p99 {} ms). ", r.delayed, s.queue_wait_ms.p99);
    }
    let _ = write!(
        out,
        "The pool served {} of what an ideal dispatcher could have served. Engine decisions took {} ns at the \
         median and {} ns at p99. ",
        pct(s.utilization),
        s.overhead_ns.p50,
        s.overhead_ns.p99
    );
    let w = &s.warnings;
    if w.enabled {
        let _ = write!(
            out,
            "Warnings ({}): {} notifications, {} true and {} false positives; the pool ran dry {} times, {} of \
             them warned in advance, {} under an alert already firing and {} missed ({} in the run's first burst, \
             which its history could not foretell). ",
            w.mode,
            w.notifications,
            w.true_positive,
            w.false_positive,
            w.exhaustions,
            w.warned_in_advance,
            w.warned_while_firing,
            w.missed,
            w.missed_first_burst
        );
    }
    let failed = s.expectations.iter().filter(|e| !e.ok).count();
    if !s.expectations.is_empty() {
        if failed == 0 {
            let _ = write!(out, "All {} expectations hold.", s.expectations.len());
        } else {
            let _ = write!(out, "{failed} of {} expectations fail.", s.expectations.len());
        }
    }
    out
}

/// `report.html` of one run.
pub fn run_report(s: &Summary, description: Option<&str>, figures: &[(Figure, String)]) -> String {
    let mut b = String::new();
    let failed = s.expectations.iter().filter(|e| !e.ok).count();
    let badge = if s.expectations.is_empty() {
        String::new()
    } else if failed == 0 {
        " <span class=\"badge ok\">expectations pass</span>".to_owned()
    } else {
        format!(" <span class=\"badge fail\">{failed} expectation(s) fail</span>")
    };
    let _ = write!(b, "<h1>{}{badge}</h1>", esc(&s.scenario));
    let e = &s.engine;
    let _ = write!(
        b,
        "<p class=\"meta\">{} run · seed {} · from {} for {} · strategy {} · admission {} · quota scope {} · \
         reserve {} · safety {} · estimator {} · enforcement {}</p>",
        if s.mode == RunMode::Load { "Real-time load" } else { "Simulated" },
        s.seed,
        esc(&s.start),
        duration(s.duration_s),
        e.strategy,
        e.admission,
        e.quota_scope,
        pct(e.reserve),
        pct(e.safety),
        esc(&e.estimator),
        e.enforcement
    );
    if let Some(d) = description.filter(|d| !d.trim().is_empty()) {
        let _ = write!(b, "<p>{}</p>", esc(d.trim()));
    }
    let _ = write!(b, "<div class=\"story\"><p>{}</p></div>", story(s));

    if !s.expectations.is_empty() {
        b.push_str("<h2>Expectations</h2>");
        let rows: Vec<Vec<String>> = s
            .expectations
            .iter()
            .map(|x| {
                let verdict = if x.ok { "<span class=\"ok\">pass</span>" } else { "<span class=\"fail\">FAIL</span>" };
                vec![esc(x.name), fmt_num(x.actual), esc(&x.limit), verdict.to_owned()]
            })
            .collect();
        b.push_str(&table(&["expectation", "actual", "limit", "result"], &rows));
    }

    if !figures.is_empty() {
        b.push_str("<h2>Plots</h2>");
        for (f, svg) in figures {
            b.push_str(&figure(f, svg));
        }
    }

    b.push_str("<h2>Outcome</h2>");
    let r = &s.requests;
    let rows = vec![
        vec!["requests".into(), r.total.to_string()],
        vec!["succeeded".into(), r.succeeded.to_string()],
        vec!["breaches (429)".into(), r.breaches.to_string()],
        vec!["denied by the engine".into(), r.denied.to_string()],
        vec!["failed (other)".into(), r.failed.to_string()],
        vec!["waited in the queue".into(), r.delayed.to_string()],
        vec!["servable by an ideal dispatcher".into(), r.servable.to_string()],
        vec!["utilisation".into(), pct(s.utilization)],
        vec!["success rate".into(), pct(s.success_rate)],
        vec!["queue wait p50 / p99 / max".into(), ms3(s.queue_wait_ms.p50, s.queue_wait_ms.p99, s.queue_wait_ms.max)],
        vec!["provider latency p50 / p99 / max".into(), ms3(s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max)],
        vec![
            "engine decision p50 / p99 / p99.9 / max".into(),
            format!(
                "{} / {} / {} / {} ns",
                s.overhead_ns.p50, s.overhead_ns.p99, s.overhead_ns.p999, s.overhead_ns.max
            ),
        ],
        vec![
            "input tokens, actual / estimated".into(),
            format!("{} / {}", s.tokens.input_actual, s.tokens.input_estimated),
        ],
    ];
    b.push_str(&table(&["figure", "value"], &rows));
    if !r.denied_by_reason.is_empty() {
        let rows: Vec<Vec<String>> = r.denied_by_reason.iter().map(|(k, v)| vec![esc(k), v.to_string()]).collect();
        b.push_str(&table(&["denied because", "requests"], &rows));
    }

    if let Some(l) = &s.load {
        b.push_str("<h2>Real-time figures</h2>");
        let lat = |x: &super::load::Latency| format!("{} / {} / {} ms ({} requests)", x.p50, x.p99, x.max, x.count);
        let mut rows = vec![
            vec!["target".into(), esc(&l.target)],
            vec!["time scale".into(), format!("{}×", l.time_scale)],
            vec!["started / late starts".into(), format!("{} / {}", l.started, l.late_sends)],
            vec!["start lag p50 / p99 / max".into(), lat(&l.start_lag)],
            vec!["transport errors".into(), l.transport_errors.to_string()],
            vec!["engine replicas / quota store".into(), format!("{} / {}", l.replicas, esc(&l.store))],
            vec!["settlements the store could not record".into(), l.settle_errors.to_string()],
            vec!["end to end, through the engine".into(), lat(&l.end_to_end)],
            vec!["end to end, admitted at once".into(), lat(&l.end_to_end_unqueued)],
        ];
        if let Some(base) = &l.baseline_end_to_end {
            rows.push(vec!["end to end, without the engine".into(), lat(base)]);
        }
        b.push_str(&table(&["figure", "value"], &rows));
    }

    if let Some(rep) = &s.replicas {
        b.push_str("<h2>Replicas</h2>");
        let rows = vec![
            vec!["replicas, sharing quota as".into(), format!("{} · {}", rep.count, rep.mode)],
            vec!["sync / renewal interval".into(), format!("{} ms", rep.interval_ms)],
            vec!["store round trip / deadline".into(), format!("{} ms / {} ms", rep.latency_ms, rep.deadline_ms)],
            vec!["store outages / slowdowns".into(), format!("{} / {}", rep.outages, rep.slowdowns)],
            vec!["denied: store unavailable".into(), rep.store_unavailable.to_string()],
            vec!["over-admission (breaches) / lost capacity".into(), format!("{} / {}", r.breaches, r.lost_capacity)],
        ];
        b.push_str(&table(&["figure", "value"], &rows));
    }

    let w = &s.warnings;
    if w.enabled {
        b.push_str("<h2>Early warnings</h2>");
        let rows = vec![
            vec!["mode".into(), w.mode.to_owned()],
            vec!["notifications (resolved)".into(), format!("{} ({})", w.notifications, w.resolved)],
            vec![
                "true / false positives / undecided".into(),
                format!("{} / {} / {}", w.true_positive, w.false_positive, w.undecided),
            ],
            vec![
                "spells: in advance / under an alert firing / missed (first burst)".into(),
                format!(
                    "{}: {} / {} / {} ({})",
                    w.exhaustions, w.warned_in_advance, w.warned_while_firing, w.missed, w.missed_first_burst
                ),
            ],
            vec![
                "notifications an hour / per spell".into(),
                format!("{:.1} / {:.2}", w.notifications_per_hour, w.notifications_per_exhaustion),
            ],
            vec![
                "precision / recall".into(),
                format!(
                    "{} / {}",
                    w.precision.map_or("–".into(), |x| format!("{:.0} %", x * 100.0)),
                    w.recall.map_or("–".into(), |x| format!("{:.0} %", x * 100.0))
                ),
            ],
            vec![
                "lead time of the spells warned in advance, min / p50 / max".into(),
                format!("{:.0} / {:.0} / {:.0} s", w.lead_time_s.min, w.lead_time_s.p50, w.lead_time_s.max),
            ],
        ];
        b.push_str(&table(&["figure", "value"], &rows));
    }

    if !s.estimation.by_language.is_empty() {
        b.push_str("<h2>Token estimation</h2>");
        let mut rows = Vec::new();
        let mut add = |name: &str, by: &std::collections::BTreeMap<String, super::summary::Accuracy>| {
            for (lang, a) in by {
                rows.push(vec![
                    esc(name),
                    esc(lang),
                    a.requests.to_string(),
                    format!("{:.1}%", a.mae_pct),
                    format!("{:.1}%", a.bias_pct),
                    format!("{:.1}%", a.p95_error_pct),
                    pct(a.under_estimate_rate),
                ]);
            }
        };
        add(&s.estimation.estimator, &s.estimation.by_language);
        for (name, by) in &s.estimation.shadows {
            add(&format!("{name} (shadow)"), by);
        }
        b.push_str(&table(&["estimator", "language", "requests", "MAE", "bias", "p95 |error|", "under"], &rows));
    }

    b.push_str("<h2>Capacity at the end</h2>");
    let rows: Vec<Vec<String>> = s
        .capacity
        .iter()
        .map(|c| {
            vec![
                esc(&c.model),
                c.projects.to_string(),
                c.keys.to_string(),
                c.rpm.to_string(),
                c.tpm.to_string(),
                c.rpd.to_string(),
            ]
        })
        .collect();
    b.push_str(&table(&["model", "projects", "keys", "RPM", "TPM", "RPD"], &rows));

    b.push_str("<h2>Per project</h2>");
    let rows: Vec<Vec<String>> = s
        .per_project
        .iter()
        .map(|p| {
            let c = &p.counts;
            vec![
                esc(&p.project),
                esc(&p.model),
                c.total.to_string(),
                c.succeeded.to_string(),
                c.breaches.to_string(),
                c.denied.to_string(),
                c.failed.to_string(),
            ]
        })
        .collect();
    b.push_str(&table(&["project", "model", "requests", "succeeded", "breaches", "denied", "failed"], &rows));

    const KEYS_SHOWN: usize = 100;
    let _ = write!(b, "<h2>Per key</h2>");
    if s.per_key.len() > KEYS_SHOWN {
        let _ = write!(
            b,
            "<p>The {KEYS_SHOWN} busiest of {} (key, model) rows; summary.json has them all.</p>",
            s.per_key.len()
        );
    }
    let mut keys: Vec<&super::summary::KeyRow> = s.per_key.iter().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.succeeded + k.breaches + k.failed));
    let rows: Vec<Vec<String>> = keys
        .iter()
        .take(KEYS_SHOWN)
        .map(|k| {
            vec![
                esc(&k.key),
                esc(&k.project),
                esc(&k.model),
                k.state.to_owned(),
                k.succeeded.to_string(),
                k.breaches.to_string(),
                k.failed.to_string(),
                k.denied.to_string(),
            ]
        })
        .collect();
    b.push_str(&table(
        &["key", "project", "model", "state", "succeeded", "breaches", "failed", "denied on its bucket"],
        &rows,
    ));
    page(&format!("keysim — {}", s.scenario), &b)
}

fn ms3(a: u64, b: u64, c: u64) -> String {
    format!("{a} / {b} / {c} ms")
}

/// A number as a table shows it.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn an_xml_prologue_is_dropped_inline() {
        let f = Figure {
            name: "n".into(),
            title: "t".into(),
            caption: "c".into(),
            width: 1,
            panel_height: 1,
            panels: vec![],
        };
        let html = figure(&f, "<?xml version=\"1.0\"?>\n<svg></svg>");
        assert!(html.contains("<svg></svg>") && !html.contains("<?xml"));
    }
}

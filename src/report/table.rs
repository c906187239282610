//! The terminal summary: what a person reads first after a run.

use std::fmt::Write;

use super::summary::Summary;

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn ns(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} ms", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} µs", n as f64 / 1e3)
    } else {
        format!("{n} ns")
    }
}

/// Renders `s` as aligned text tables.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let r = &s.requests;
    let e = &s.engine;
    let _ = writeln!(o, "scenario {}  seed {}  {} over {}s of traffic", s.scenario, s.seed, s.mode, s.duration_s);
    let _ = writeln!(
        o,
        "engine   {} · {} · quota per {} · reserve {} · safety {} · estimator {} · judge {}",
        e.strategy, e.admission, e.quota_scope, e.reserve, e.safety, e.estimator, e.enforcement
    );
    let _ = writeln!(o);
    let rows = [
        ("requests", r.total.to_string()),
        ("succeeded", r.succeeded.to_string()),
        ("breaches (429 after admission)", r.breaches.to_string()),
        ("denied by the engine", r.denied.to_string()),
        ("failed otherwise", r.failed.to_string()),
        ("delayed in queue", r.delayed.to_string()),
        ("lost capacity", r.lost_capacity.to_string()),
        ("success rate", pct(s.success_rate)),
        ("utilisation (of what the pool could serve)", pct(s.utilization)),
        ("high priority succeeded", format!("{} of {}", r.high_priority.succeeded, r.high_priority.total)),
        ("queue wait p50 / p99", format!("{} ms / {} ms", s.queue_wait_ms.p50, s.queue_wait_ms.p99)),
        (
            "engine overhead p50 / p99 / p99.9",
            format!("{} / {} / {}", ns(s.overhead_ns.p50), ns(s.overhead_ns.p99), ns(s.overhead_ns.p999)),
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(o, "  {k:<w$}  {v:>14}");
    }
    if !r.denied_by_reason.is_empty() {
        let reasons: Vec<String> = r.denied_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "  denials by reason: {}", reasons.join(", "));
    }
    let _ = writeln!(o);
    let pw = s.per_project.iter().map(|p| p.project.len()).max().unwrap_or(7).max(7);
    let mw = s.per_project.iter().map(|p| p.model.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        o,
        "  {:<pw$}  {:<mw$}  {:>9}  {:>8}  {:>7}  {:>6}",
        "project", "model", "succeeded", "breaches", "denied", "failed"
    );
    for p in &s.per_project {
        let c = &p.counts;
        let _ = writeln!(
            o,
            "  {:<pw$}  {:<mw$}  {:>9}  {:>8}  {:>7}  {:>6}",
            p.project, p.model, c.succeeded, c.breaches, c.denied, c.failed
        );
    }
    if s.estimation.by_language.keys().any(|l| l != "synthetic") || !s.estimation.shadows.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<20}  {:<10}  {:>8}  {:>7}  {:>8}  {:>8}  {:>9}  {:>6}",
            "estimator", "language", "measured", "warm-up", "MAE", "bias", "p95 |err|", "under"
        );
        let engine = std::iter::once((format!("{} (engine)", s.estimation.estimator), &s.estimation.by_language));
        let shadows = s.estimation.shadows.iter().map(|(name, by)| (format!("{name} (shadow)"), by));
        for (name, by_language) in engine.chain(shadows) {
            for (lang, a) in by_language {
                let _ = writeln!(
                    o,
                    "  {:<20}  {:<10}  {:>8}  {:>7}  {:>7.1}%  {:>+7.1}%  {:>8.1}%  {:>5.1}%",
                    name,
                    lang,
                    a.requests,
                    a.warm_up_requests,
                    a.mae_pct,
                    a.bias_pct,
                    a.p95_error_pct,
                    a.under_estimate_rate * 100.0
                );
            }
        }
    }
    if s.warnings.enabled {
        let w = &s.warnings;
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  warnings ({})  {} notifications ({} resolved, {:.1} an hour) · {} spells: {} warned in advance, {} under \
             an alert firing, {} missed ({} in the first burst)",
            w.mode,
            w.notifications,
            w.resolved,
            w.notifications_per_hour,
            w.exhaustions,
            w.warned_in_advance,
            w.warned_while_firing,
            w.missed,
            w.missed_first_burst
        );
        let _ = writeln!(
            o,
            "  true positive {} · false positive {} · undecided {} · lead time min / p50 / max {:.0} s / {:.0} s / {:.0} s",
            w.true_positive, w.false_positive, w.undecided, w.lead_time_s.min, w.lead_time_s.p50, w.lead_time_s.max
        );
        let pct = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{:.0} %", x * 100.0));
        let _ = writeln!(
            o,
            "  precision {} · recall {} (advance and under an alert firing)",
            pct(w.precision),
            pct(w.recall)
        );
        if let Some(h) = &w.webhook {
            let _ = writeln!(
                o,
                "  webhook: {} delivered, {} failed, {} retries, {} dropped",
                h.delivered, h.failed, h.retries, h.dropped
            );
        }
    }
    if let Some(rep) = &s.replicas {
        let _ = writeln!(
            o,
            "  replicas {} {} (interval {} ms, round trip {} ms, deadline {} ms) · {} outages, {} slowdowns · {} denied: store unavailable",
            rep.count,
            rep.mode,
            rep.interval_ms,
            rep.latency_ms,
            rep.deadline_ms,
            rep.outages,
            rep.slowdowns,
            rep.store_unavailable
        );
    }
    if let Some(l) = &s.load {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  load     {} at {}x · {} started, {} late (> {} ms), start lag p99 {:.2} ms · {} transport errors",
            l.target,
            l.time_scale,
            l.started,
            l.late_sends,
            super::load::LATE_MS,
            l.start_lag.p99,
            l.transport_errors
        );
        let _ = writeln!(
            o,
            "  engines  {} replica(s) over store {} · {} settle errors",
            l.replicas, l.store, l.settle_errors
        );
        let _ = writeln!(
            o,
            "  end to end (succeeded) p50 / p99   {:.2} ms / {:.2} ms with the engine ({:.2} ms / {:.2} ms unqueued)",
            l.end_to_end.p50, l.end_to_end.p99, l.end_to_end_unqueued.p50, l.end_to_end_unqueued.p99
        );
        if let Some(b) = &l.baseline_end_to_end {
            let _ = writeln!(
                o,
                "                                      {:.2} ms / {:.2} ms without (baseline)",
                b.p50, b.p99
            );
        }
    }
    if !s.expectations.is_empty() {
        let _ = writeln!(o);
        for x in &s.expectations {
            let mark = if x.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(o, "  {mark} {} {} (actual {})", x.name, x.limit, x.actual);
        }
    }
    o
}

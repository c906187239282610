//! One point of the grid: a deterministic simulation judged against the objective.

use anyhow::Context;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::sim::{simulate, Outputs};

/// The service objective.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Objective {
    pub(crate) min_success: f64,
    pub(crate) max_breaches: u64,
    pub(crate) max_queue_p99_ms: Option<u64>,
}

/// One simulated point.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) total: u64,
    pub(crate) succeeded: u64,
    pub(crate) breaches: u64,
    pub(crate) denied: u64,
    pub(crate) success_rate: f64,
    pub(crate) utilization: f64,
    /// p99 queue wait over all requests (those that did not wait count as 0).
    pub(crate) queue_p99_ms: u64,
    pub(crate) meets: bool,
}

/// p99 of the queue wait over every request, from the histogram of those that waited.
pub(crate) fn queue_p99_all(agg: &crate::report::Aggregate) -> u64 {
    let waited = agg.queue_wait_ms.len();
    let total = agg.counts.total;
    if total == 0 || waited as f64 <= 0.01 * total as f64 {
        return 0;
    }
    agg.queue_wait_ms.value_at_quantile(1.0 - 0.01 * total as f64 / waited as f64)
}

pub(crate) fn simulate_point(sc: &Scenario, slo: &Objective) -> anyhow::Result<Outcome> {
    let r = simulate(sc, Outputs::default()).with_context(|| format!("simulating {}", sc.name))?;
    let a = &r.aggregate;
    let c = a.counts;
    let servable = a.servable.unwrap_or(c.total);
    let queue_p99_ms = queue_p99_all(a);
    let success_rate = c.success_rate();
    let meets = success_rate >= slo.min_success
        && c.breaches <= slo.max_breaches
        && slo.max_queue_p99_ms.is_none_or(|m| queue_p99_ms <= m);
    Ok(Outcome {
        total: c.total,
        succeeded: c.succeeded,
        breaches: c.breaches,
        denied: c.denied,
        success_rate,
        utilization: if servable == 0 { 1.0 } else { c.succeeded as f64 / servable as f64 },
        queue_p99_ms,
        meets,
    })
}

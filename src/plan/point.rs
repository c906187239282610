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
    /// The most requests denied, if bounded.
    pub(crate) max_denied: Option<u64>,
}

/// What `--goal` may bound, and how: `success >= 0.99`, `denied == 0`, `breaches <= 0`,
/// `wait_p99 <= 2s`.
const GOAL_MEASURES: &str = "success (>=), denied, breaches (<=, <, ==), wait_p99 (<=, < a duration)";

impl Objective {
    /// The objective in words.
    pub(crate) fn describe(&self) -> String {
        let mut s = Vec::new();
        if self.min_success > 0.0 {
            s.push(format!("success ≥ {:.1} %", 100.0 * self.min_success));
        }
        if let Some(d) = self.max_denied {
            s.push(format!("denied ≤ {d}"));
        }
        s.push(format!("breaches ≤ {}", self.max_breaches));
        if let Some(m) = self.max_queue_p99_ms {
            s.push(format!("p99 queue wait ≤ {m} ms"));
        }
        s.join(", ")
    }

    /// The objective a goal states (`denied == 0, wait_p99 <= 2s`): what it does not bound is
    /// free, but breaches, which stay at 0 unless it bounds them.
    pub(crate) fn from_goal(goal: &str) -> Result<Self, String> {
        let mut o = Self { min_success: 0.0, max_breaches: 0, max_queue_p99_ms: None, max_denied: None };
        for text in goal.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let bad = |why: String| format!("--goal '{text}': {why} (goals bound {GOAL_MEASURES})");
            let op = [">=", "<=", "==", ">", "<"]
                .into_iter()
                .find(|op| text.contains(op))
                .ok_or_else(|| bad("expected `measure <= value`".into()))?;
            let (name, value) = text.split_once(op).expect("found above");
            let (name, value) = (name.trim(), value.trim());
            let count = || value.parse::<u64>().map_err(|_| bad(format!("'{value}' is not a whole number")));
            // `< n` of a count is `<= n - 1`.
            let upper = |n: u64| match op {
                "<=" | "==" => Ok(n),
                "<" if n > 0 => Ok(n - 1),
                _ => Err(bad(format!("`{name}` is bounded from above"))),
            };
            match name {
                "success" => {
                    let v = value
                        .trim_end_matches('%')
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| bad(format!("'{value}' is not a number")))?;
                    let v = if value.ends_with('%') { v / 100.0 } else { v };
                    if !matches!(op, ">=" | ">") || !(0.0..=1.0).contains(&v) {
                        return Err(bad("`success` is bounded from below, by a share from 0 to 1".into()));
                    }
                    o.min_success = v;
                }
                "denied" => o.max_denied = Some(upper(count()?)?),
                "breaches" => o.max_breaches = upper(count()?)?,
                "wait_p99" => {
                    let ms = crate::scenario::units::parse_duration(value).map_err(|e| bad(e.to_string()))?;
                    o.max_queue_p99_ms = Some(upper(ms)?);
                }
                other => return Err(bad(format!("unknown measure '{other}'"))),
            }
        }
        Ok(o)
    }
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
        && slo.max_denied.is_none_or(|d| c.denied <= d)
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

#[cfg(test)]
mod tests {
    use super::Objective;

    #[test]
    fn goals_bound_what_they_name() {
        let o = Objective::from_goal("denied == 0, wait_p99 <= 2s").unwrap();
        assert_eq!((o.max_denied, o.max_queue_p99_ms, o.max_breaches, o.min_success), (Some(0), Some(2000), 0, 0.0));
        let o = Objective::from_goal("success >= 99.5%, breaches < 3").unwrap();
        assert_eq!((o.min_success, o.max_breaches, o.max_denied), (0.995, 2, None));
        for bad in ["denied >= 1", "speed <= 2", "wait_p99 <= soon", "success <= 0.5", "denied"] {
            assert!(Objective::from_goal(bad).is_err(), "{bad}");
        }
    }
}

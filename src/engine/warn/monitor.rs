//! The monitor: keeps a trend and a rule state per (bucket, dimension), and turns each new
//! look at a bucket's counters into alerts fired or resolved.
//!
//! Memory is bounded by the number of buckets: one [`Trend`] (fixed size) and one [`Series`]
//! per dimension of each bucket the monitor has seen.

use std::collections::BTreeMap;

use super::forecast::Trend;
use super::pipeline::Labels;
use super::rule::{Observation, Rule, Series, Transition};
use crate::engine::{BucketId, Ceilings, Dimension, Timestamp, Usage};

/// An alert to hand to the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Fired or resolved.
    pub transition: Transition,
    /// `alertname`, `project`, `model`, `dimension`.
    pub labels: Labels,
    /// `summary`: where the bucket stands, when it runs out and when it resets.
    pub annotations: Labels,
}

/// Trends and rule states of every watched bucket.
#[derive(Debug)]
pub struct Monitor {
    rule: Rule,
    trend_window_ms: u64,
    series: BTreeMap<(BucketId, Dimension), (Trend, Series)>,
}

fn human(ms: u64) -> String {
    let m = ms / 60_000;
    if m >= 120 {
        format!("{}h", m / 60)
    } else if m >= 1 {
        format!("{m}m")
    } else {
        format!("{}s", ms / 1000)
    }
}

impl Monitor {
    /// A monitor applying `rule`, forecasting from the last `trend_window_ms` of samples.
    pub fn new(rule: Rule, trend_window_ms: u64) -> Self {
        Self { rule, trend_window_ms, series: BTreeMap::new() }
    }

    /// Looks at `bucket`'s counters `u` against `ceilings` at `now`.
    pub fn observe(
        &mut self,
        bucket: BucketId,
        project: &str,
        model: &str,
        u: &Usage,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for d in Dimension::ALL {
            let limit = ceilings.get(d);
            if limit == u64::MAX || limit == 0 {
                continue;
            }
            let used = u.get(d) as f64;
            let (trend, series) =
                self.series.entry((bucket, d)).or_insert_with(|| (Trend::new(self.trend_window_ms), Series::default()));
            trend.push(now, used);
            let exhausts_at = trend.exhaustion_at(limit as f64, now);
            let resets_at = if d.is_daily() { u.day_ends } else { u.minute_frees_at.unwrap_or(now) };
            let o = Observation { utilization: used / limit as f64, exhausts_at, resets_at };
            let Some(transition) = series.evaluate(&self.rule, &o, now) else { continue };
            let labels: Labels =
                [("alertname", "QuotaNearLimit"), ("project", project), ("model", model), ("dimension", d.name())]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            let exhausts =
                exhausts_at.map_or_else(|| "not on this trend".to_owned(), |e| format!("in {}", human(e.since(now))));
            let summary = format!(
                "{project} at {:.0}% of {}; exhausts {exhausts}, resets in {}",
                o.utilization * 100.0,
                d.name().to_uppercase(),
                human(resets_at.since(now))
            );
            out.push(Change {
                transition,
                labels,
                annotations: [("summary".to_owned(), summary)].into_iter().collect(),
            });
        }
        out
    }

    /// Series watched.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether nothing is watched yet.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Limits;

    const T0: Timestamp = Timestamp(1_764_140_400_000); // 23:00 Pacific

    fn usage(day_requests: u64, at: Timestamp) -> Usage {
        Usage { day_requests, day_ends: T0.plus(3_600_000), minute_frees_at: Some(at.plus(60_000)), ..Usage::default() }
    }

    #[test]
    fn warns_before_the_day_runs_out_with_lead_time_in_the_summary() {
        let ceilings = Ceilings::from_limits(&Limits { rpm: 1000, tpm: 1_000_000, rpd: 100, tpd: None }, 0.0, 0.0);
        let mut m = Monitor::new(Rule::default(), 600_000);
        let mut fired = Vec::new();
        // Two requests a minute against 100 a day, starting at 70 used: runs out in 15 minutes,
        // well before midnight.
        for i in 0..10u64 {
            let now = T0.plus(i * 60_000);
            fired.extend(m.observe(BucketId(0), "proj-a", "m", &usage(70 + 2 * i, now), &ceilings, now));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].transition, Transition::Fired);
        assert_eq!(fired[0].labels["dimension"], "rpd");
        assert!(fired[0].annotations["summary"].starts_with("proj-a at 80% of RPD; exhausts in 10m, resets in 55m"));
        assert_eq!(m.len(), 3, "rpm, tpm and rpd are watched; tpd is unlimited");
    }

    #[test]
    fn a_bucket_that_resets_first_stays_quiet() {
        let ceilings = Ceilings::from_limits(&Limits { rpm: 1000, tpm: 1_000_000, rpd: 1000, tpd: None }, 0.0, 0.0);
        let mut m = Monitor::new(Rule::default(), 600_000);
        // 85 % used and climbing one request a minute: 150 minutes to go, midnight in 60.
        for i in 0..10u64 {
            let now = T0.plus(i * 60_000);
            assert!(m.observe(BucketId(0), "p", "m", &usage(850 + i, now), &ceilings, now).is_empty());
        }
    }
}

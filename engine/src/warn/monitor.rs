//! The monitor: keeps a trend and a rule state per (bucket, dimension), and turns each new
//! look at a bucket's counters into alerts fired or resolved.
//!
//! Memory is bounded by the number of buckets: one [`Trend`] (fixed size) and one [`Series`]
//! per dimension of each bucket the monitor has seen.

use std::collections::BTreeMap;

use super::forecast::Trend;
use super::pipeline::Labels;
use super::rule::{Observation, Rule, Series, Transition};
use crate::{Ceilings, Dimension, Timestamp, Usage, MINUTE_MS};

/// An alert to hand to the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Fired or resolved.
    pub transition: Transition,
    /// `alertname`, `project`, `model`, `dimension`.
    pub labels: Labels,
    /// `summary`: where the bucket stands, when it runs out and when it resets.
    pub annotations: Labels,
    /// When the alert started firing (for a resolution, when it had fired).
    pub since: Timestamp,
}

/// What a series watches: a project's quota bucket, a model's whole pool, or one key.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// A stable id of the watched thing (one series per id and dimension).
    pub id: u64,
    /// The alert's name (`QuotaNearLimit`, `PoolNearLimit` …).
    pub alertname: &'a str,
    /// Labels that identify it, besides `alertname` and `dimension`.
    pub labels: &'a [(&'a str, &'a str)],
    /// How the summary names it ("proj-a", "the gemini-2.5-flash pool").
    pub name: &'a str,
    /// Projects it sums (1 for a project or a key): the summary's advice counts in them.
    pub projects: u32,
}

/// Trends and rule states of every watched series.
#[derive(Debug)]
pub struct Monitor {
    rule: Rule,
    trend_window_ms: u64,
    /// Per (subject id, dimension): the trend, the rule state, when it was last seen, and
    /// the labels it fired with while it fires.
    series: BTreeMap<(u64, Dimension), Watched>,
}

#[derive(Debug)]
struct Watched {
    trend: Trend,
    series: Series,
    seen: Timestamp,
    /// Labels and start of the alert while it fires.
    firing: Option<(Labels, Timestamp)>,
    last: Option<Observation>,
    /// The Pacific day the trend's samples belong to (the trends follow daily counters).
    day_ends: Timestamp,
}

/// A duration in a few characters: `45s`, `7m`, `13h`.
pub(crate) fn human(ms: u64) -> String {
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

    /// The rule applied.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Looks at `subject`'s counters `u` against `ceilings` at `now`.
    pub fn observe(&mut self, subject: &Subject<'_>, u: &Usage, ceilings: &Ceilings, now: Timestamp) -> Vec<Change> {
        self.observe_gated(subject, u, ceilings, now, &|_, _| true)
    }

    /// As [`Monitor::observe`], with the forecast of dimension `d` counted only where
    /// `gate(d, exhausts_at)` agrees.
    pub fn observe_gated(
        &mut self,
        subject: &Subject<'_>,
        u: &Usage,
        ceilings: &Ceilings,
        now: Timestamp,
        gate: &dyn Fn(Dimension, Option<Timestamp>) -> bool,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for d in Dimension::ALL {
            let limit = ceilings.get(d);
            if limit == u64::MAX || limit == 0 {
                continue;
            }
            let used = u.get(d) as f64;
            let w = self.series.entry((subject.id, d)).or_insert_with(|| Watched {
                trend: Trend::new(self.trend_window_ms),
                series: Series::default(),
                seen: now,
                firing: None,
                last: None,
                day_ends: u.day_ends,
            });
            w.seen = now;
            // Daily counters start again at midnight; refunds and reconciliation may lower
            // them too, which the least squares absorbs.
            if w.day_ends != u.day_ends {
                w.trend.clear();
                w.day_ends = u.day_ends;
            }
            let (exhausts_at, resets_at) = if d.is_daily() {
                // The day's count climbs until midnight Pacific: extrapolate it.
                w.trend.push(now, used);
                (w.trend.exhaustion_at(limit as f64, now), u.day_ends)
            } else {
                // A sliding minute recovers as its entries leave, so its level says little
                // about the future; the rate of use does. The day's counter of the same
                // quantity gives it: at the recent rate the window holds `rate × 1 min`,
                // and only if that reaches the limit will the bucket run out before it
                // recovers.
                let daily = if d == Dimension::Rpm { u.day_requests } else { u.day_tokens };
                w.trend.push(now, daily as f64);
                let exhausts = w.trend.slope().filter(|r| r * MINUTE_MS as f64 >= limit as f64).map(|rate| {
                    let left = (limit as f64 - used).max(0.0);
                    now.plus((left / rate).ceil() as u64)
                });
                (exhausts, now.plus(MINUTE_MS))
            };
            let exhausts_at = exhausts_at.filter(|_| gate(d, exhausts_at));
            let o = Observation { utilization: used / limit as f64, exhausts_at, resets_at };
            w.last = Some(o);
            let Some(transition) = w.series.evaluate(&self.rule, &o, now) else { continue };
            let mut labels: Labels = subject.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            labels.insert("alertname".into(), subject.alertname.into());
            labels.insert("dimension".into(), d.name().into());
            let exhausts =
                exhausts_at.map_or_else(|| "not on this trend".to_owned(), |e| format!("in {}", human(e.since(now))));
            let mut summary = format!(
                "{} at {:.0}% of {}; exhausts {exhausts}, resets in {}",
                subject.name,
                o.utilization * 100.0,
                d.name().to_uppercase(),
                human(resets_at.since(now))
            );
            // What to do: at the recent rate, the day's quota (or the minute's) falls short by
            // so many projects' worth.
            if let (Some(rate), Transition::Fired) = (w.trend.slope(), transition) {
                let (need, until) = if d.is_daily() {
                    (used + rate * resets_at.since(now) as f64, "would last until the reset")
                } else {
                    (rate * MINUTE_MS as f64, "would carry this rate")
                };
                let each = limit as f64 / f64::from(subject.projects.max(1));
                if need > limit as f64 && subject.projects > 0 {
                    let n = ((need - limit as f64) / each).ceil().max(1.0) as u64;
                    summary.push_str(&format!(
                        "; at this rate {n} more project{} like these {until}",
                        if n == 1 { "" } else { "s" }
                    ));
                }
            }
            let since = match (transition, &w.firing) {
                (Transition::Resolved, Some((_, since))) => *since,
                _ => now,
            };
            w.firing = (transition == Transition::Fired).then(|| (labels.clone(), now));
            // What the alert foretells, and by when: a minute window before it recovers (the
            // scorer's two minutes), a daily one before midnight Pacific.
            let horizon = if d.is_daily() { resets_at.since(now) } else { 2 * MINUTE_MS };
            let annotations = [("summary".to_owned(), summary), ("horizon".to_owned(), format!("{}s", horizon / 1000))];
            out.push(Change { transition, labels, annotations: annotations.into_iter().collect(), since });
        }
        out
    }

    /// The last observation of `subject`'s dimension `d`, if it was observed.
    pub fn last(&self, subject: u64, d: Dimension) -> Option<Observation> {
        self.series.get(&(subject, d)).and_then(|w| w.last)
    }

    /// Forgets series not seen since `before` (a bucket or key that left the pool); those
    /// that were firing resolve.
    pub fn forget_unseen(&mut self, before: Timestamp) -> Vec<Change> {
        let mut out = Vec::new();
        self.series.retain(|_, w| {
            if w.seen >= before {
                return true;
            }
            if let Some((labels, since)) = w.firing.take() {
                let annotations = [("summary".to_owned(), "no longer in the pool".to_owned())].into_iter().collect();
                out.push(Change { transition: Transition::Resolved, labels, annotations, since });
            }
            false
        });
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
    use crate::Limits;

    const T0: Timestamp = Timestamp(1_764_140_400_000); // 23:00 Pacific

    fn subject(project: &str) -> Subject<'_> {
        static LABELS: [(&str, &str); 1] = [("model", "m")];
        Subject { id: 0, alertname: "QuotaNearLimit", labels: &LABELS, name: project, projects: 1 }
    }

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
            fired.extend(m.observe(&subject("proj-a"), &usage(70 + 2 * i, now), &ceilings, now));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].transition, Transition::Fired);
        assert_eq!(fired[0].labels["dimension"], "rpd");
        let summary = &fired[0].annotations["summary"];
        assert!(summary.starts_with("proj-a at 80% of RPD; exhausts in 10m, resets in 55m"), "{summary}");
        // 80 used, two a minute for 55 minutes more: 190 against 100, one project's 100 short.
        assert!(summary.ends_with("; at this rate 1 more project like these would last until the reset"), "{summary}");
        assert_eq!(m.len(), 3, "rpm, tpm and rpd are watched; tpd is unlimited");
    }

    #[test]
    fn a_bucket_that_resets_first_stays_quiet() {
        let ceilings = Ceilings::from_limits(&Limits { rpm: 1000, tpm: 1_000_000, rpd: 1000, tpd: None }, 0.0, 0.0);
        let mut m = Monitor::new(Rule::default(), 600_000);
        // 85 % used and climbing one request a minute: 150 minutes to go, midnight in 60.
        for i in 0..10u64 {
            let now = T0.plus(i * 60_000);
            assert!(m.observe(&subject("p"), &usage(850 + i, now), &ceilings, now).is_empty());
        }
    }
}

//! A warning rule and the state machine of one series (one bucket dimension).
//!
//! A series is *pending* while its condition holds, *firing* once it has held for `for`, and
//! clears only when utilisation falls below the clear threshold (hysteresis), so a bucket
//! hovering at the threshold does not flap. The condition is utilisation at or above the warn
//! threshold and, when the rule forecasts, a forecast that the bucket runs out before its
//! window resets: a bucket that recovers at the next minute (or at midnight Pacific) before
//! it runs out is not worth a notification.

use crate::Timestamp;

/// A warning rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Utilisation at which the condition starts to hold (e.g. 0.8).
    pub warn_at: f64,
    /// Utilisation below which a firing series clears (e.g. 0.7).
    pub clear_below: f64,
    /// How long the condition must hold before the series fires.
    pub for_ms: u64,
    /// Whether the condition also needs a forecast of exhaustion before the window resets.
    pub forecast: bool,
}

impl Default for Rule {
    fn default() -> Self {
        Self { warn_at: 0.8, clear_below: 0.7, for_ms: 0, forecast: true }
    }
}

/// What a series looks like at one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Used / limit.
    pub utilization: f64,
    /// When the trend says the limit is reached, if it does.
    pub exhausts_at: Option<Timestamp>,
    /// When the window next resets (next minute for RPM/TPM, midnight Pacific for RPD).
    pub resets_at: Timestamp,
}

/// A series' state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlertState {
    /// Nothing to say.
    #[default]
    Inactive,
    /// The condition holds, since this time, but not yet for `for`.
    Pending(Timestamp),
    /// Firing, since this time.
    Firing(Timestamp),
}

/// A change worth telling the notification pipeline about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The series started firing.
    Fired,
    /// A firing series cleared.
    Resolved,
    /// A firing series says again what it foretells (`PoolAtRisk` between bursts).
    Reminded,
}

/// One series under one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Series {
    /// Its state.
    pub state: AlertState,
}

impl Rule {
    /// Whether the condition holds for `o`.
    pub fn holds(&self, o: &Observation) -> bool {
        o.utilization >= self.warn_at && (!self.forecast || o.exhausts_at.is_some_and(|e| e < o.resets_at))
    }
}

impl Series {
    /// Evaluates `rule` on `o` at `now`; returns the transition, if any.
    pub fn evaluate(&mut self, rule: &Rule, o: &Observation, now: Timestamp) -> Option<Transition> {
        let holds = rule.holds(o);
        match self.state {
            AlertState::Inactive if holds => {
                if rule.for_ms == 0 {
                    self.state = AlertState::Firing(now);
                    return Some(Transition::Fired);
                }
                self.state = AlertState::Pending(now);
                None
            }
            AlertState::Inactive => None,
            AlertState::Pending(since) if holds => {
                if now.since(since) >= rule.for_ms {
                    self.state = AlertState::Firing(now);
                    Some(Transition::Fired)
                } else {
                    None
                }
            }
            AlertState::Pending(_) => {
                // A blip that did not last: no notification at all.
                self.state = AlertState::Inactive;
                None
            }
            AlertState::Firing(_) if o.utilization < rule.clear_below => {
                self.state = AlertState::Inactive;
                Some(Transition::Resolved)
            }
            AlertState::Firing(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_764_140_400_000);

    fn obs(u: f64, exhausts_in: Option<u64>, resets_in: u64) -> Observation {
        Observation { utilization: u, exhausts_at: exhausts_in.map(|e| T0.plus(e)), resets_at: T0.plus(resets_in) }
    }

    #[test]
    fn fires_after_for_and_clears_with_hysteresis() {
        let rule = Rule { for_ms: 60_000, forecast: false, ..Rule::default() };
        let mut s = Series::default();
        assert_eq!(s.evaluate(&rule, &obs(0.85, None, 0), T0), None);
        assert_eq!(s.state, AlertState::Pending(T0));
        assert_eq!(s.evaluate(&rule, &obs(0.9, None, 0), T0.plus(30_000)), None);
        assert_eq!(s.evaluate(&rule, &obs(0.9, None, 0), T0.plus(60_000)), Some(Transition::Fired));
        assert_eq!(s.evaluate(&rule, &obs(0.75, None, 0), T0.plus(90_000)), None, "between the thresholds");
        assert_eq!(s.evaluate(&rule, &obs(0.65, None, 0), T0.plus(120_000)), Some(Transition::Resolved));
    }

    #[test]
    fn a_blip_shorter_than_for_never_notifies() {
        let rule = Rule { for_ms: 60_000, forecast: false, ..Rule::default() };
        let mut s = Series::default();
        assert_eq!(s.evaluate(&rule, &obs(0.95, None, 0), T0), None);
        assert_eq!(s.evaluate(&rule, &obs(0.5, None, 0), T0.plus(10_000)), None);
        assert_eq!(s.evaluate(&rule, &obs(0.95, None, 0), T0.plus(70_000)), None, "pending again, from scratch");
        assert_eq!(s.state, AlertState::Pending(T0.plus(70_000)));
    }

    #[test]
    fn a_bucket_that_recovers_at_its_reset_is_not_worth_a_warning() {
        let rule = Rule::default();
        let mut s = Series::default();
        // 90 % used, would run out in 40 s, but the minute resets in 20 s.
        assert_eq!(s.evaluate(&rule, &obs(0.9, Some(40_000), 20_000), T0), None);
        // Runs out in 10 s, before the reset: warn.
        assert_eq!(s.evaluate(&rule, &obs(0.9, Some(10_000), 20_000), T0), Some(Transition::Fired));
        // Daily quota: exhausts in 41 minutes, resets in 3 hours.
        let mut d = Series::default();
        assert_eq!(d.evaluate(&rule, &obs(0.83, Some(41 * 60_000), 3 * 3_600_000), T0), Some(Transition::Fired));
    }
}

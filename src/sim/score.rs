//! Scoring early warnings against the truth the simulator knows.
//!
//! An *exhaustion event* is the start of a spell in which a model's pool had nothing left on
//! one dimension: the engine denied a request for it (`exhausted` or `cooling`), or the
//! provider answered 429 naming it. A spell continues while such answers keep coming — for
//! a minute dimension, within a minute of each other; for a daily one, within the same
//! Pacific day — and a new one starts after that.
//!
//! - A firing notification is a *true positive* if an exhaustion of one of its alerts'
//!   (model, dimension) follows within the horizon: two minutes for minute dimensions, the
//!   rest of the Pacific day for daily ones; a *false positive* if the horizon passes without
//!   one; *undecided* if the run ends first.
//! - An exhaustion event is *warned* if a firing notification for its (model, dimension)
//!   came before it within the horizon, with lead time = event − first such notification;
//!   *missed* otherwise.
//!
//! Memory is bounded: notifications wait only for their horizon, and state is per
//! (model, dimension).

use std::collections::VecDeque;

use hdrhistogram::Histogram;

use crate::engine::time::next_pacific_midnight;
use crate::engine::warn::Notification;
use crate::engine::{Dimension, Timestamp};

const MINUTE_HORIZON_MS: u64 = 120_000;
const MINUTE_SPELL_GAP_MS: u64 = 60_000;

/// The figures.
#[derive(Debug)]
pub struct WarningScore {
    /// Notifications sent (firing and resolved).
    pub notifications: u64,
    /// Of which resolved notices.
    pub resolved: u64,
    /// Exhaustion events.
    pub exhaustions: u64,
    /// Firing notifications followed by exhaustion.
    pub true_positive: u64,
    /// Firing notifications not followed by exhaustion.
    pub false_positive: u64,
    /// Firing notifications whose horizon outlasted the run.
    pub undecided: u64,
    /// Exhaustion events warned in advance.
    pub warned: u64,
    /// Exhaustion events without a warning.
    pub missed: u64,
    /// Lead times of warned events, in milliseconds.
    pub lead_ms: Histogram<u64>,
    /// Shortest and longest lead time, exactly (ms; 0 when nothing was warned).
    pub lead_min_ms: u64,
    /// See `lead_min_ms`.
    pub lead_max_ms: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// The last exhaustion answer, and the spell's day end (daily dimensions).
    last_exhausted: Option<(Timestamp, Timestamp)>,
    /// The first firing notification since the last event.
    first_warning: Option<Timestamp>,
}

/// The scorer.
#[derive(Debug)]
pub(crate) struct Scorer {
    dims: usize,
    tracks: Vec<Track>,
    /// Firing notifications awaiting their verdict: (sent, horizon end, (model, dimension) slots).
    pending: VecDeque<(Timestamp, Timestamp, Vec<usize>)>,
    score: WarningScore,
}

fn horizon(d: Dimension, at: Timestamp) -> Timestamp {
    if d.is_daily() {
        next_pacific_midnight(at)
    } else {
        at.plus(MINUTE_HORIZON_MS)
    }
}

impl Scorer {
    pub(crate) fn new(models: &[String]) -> Self {
        let dims = Dimension::ALL.len();
        Self {
            dims,
            tracks: vec![Track::default(); models.len() * dims],
            pending: VecDeque::new(),
            score: WarningScore {
                notifications: 0,
                resolved: 0,
                exhaustions: 0,
                true_positive: 0,
                false_positive: 0,
                undecided: 0,
                warned: 0,
                missed: 0,
                lead_ms: Histogram::new_with_bounds(1, 400 * 86_400_000, 3).expect("valid bounds"),
                lead_min_ms: 0,
                lead_max_ms: 0,
            },
        }
    }

    fn slot(&self, model: usize, d: Dimension) -> usize {
        model * self.dims + d.index()
    }

    /// A notification went out at `now`; `model_of` maps a model name to its index.
    pub(crate) fn notified(&mut self, n: &Notification, now: Timestamp, model_of: impl Fn(&str) -> Option<usize>) {
        self.expire(now);
        self.score.notifications += 1;
        if !n.firing {
            self.score.resolved += 1;
            return;
        }
        let mut slots = Vec::new();
        let mut until = now;
        for a in n.alerts.iter().filter(|a| a.ends_at.is_none()) {
            let m = a.labels.get("model").and_then(|m| model_of(m));
            let d = a.labels.get("dimension").and_then(|d| Dimension::ALL.into_iter().find(|x| x.name() == d));
            if let (Some(m), Some(d)) = (m, d) {
                let s = self.slot(m, d);
                if !slots.contains(&s) {
                    slots.push(s);
                    until = until.max(horizon(d, now));
                    self.tracks[s].first_warning.get_or_insert(now);
                }
            }
        }
        if !slots.is_empty() {
            self.pending.push_back((now, until, slots));
        }
    }

    /// The pool of `model` had nothing left on `d` at `now`.
    pub(crate) fn exhausted(&mut self, model: usize, d: Dimension, now: Timestamp) {
        self.expire(now);
        let s = self.slot(model, d);
        let t = &mut self.tracks[s];
        let day_end = next_pacific_midnight(now);
        let continues = t.last_exhausted.is_some_and(|(last, last_day_end)| {
            if d.is_daily() {
                last_day_end == day_end
            } else {
                now.since(last) <= MINUTE_SPELL_GAP_MS
            }
        });
        t.last_exhausted = Some((now, day_end));
        if !continues {
            self.score.exhaustions += 1;
            let horizon_start = if d.is_daily() {
                day_end.0.saturating_sub(86_400_000 + 3_600_000)
            } else {
                now.0 - MINUTE_HORIZON_MS.min(now.0)
            };
            match t.first_warning.take() {
                Some(w) if w.0 >= horizon_start => {
                    self.score.warned += 1;
                    let lead = now.since(w).max(1);
                    self.score.lead_ms.saturating_record(lead);
                    let first = self.score.warned == 1;
                    self.score.lead_min_ms = if first { lead } else { self.score.lead_min_ms.min(lead) };
                    self.score.lead_max_ms = self.score.lead_max_ms.max(lead);
                }
                _ => self.score.missed += 1,
            }
        }
        // Notifications that came before this answer, for this slot, were right.
        let mut i = 0;
        while i < self.pending.len() {
            let (sent, _, slots) = &self.pending[i];
            if *sent <= now && slots.contains(&s) {
                self.pending.remove(i);
                self.score.true_positive += 1;
            } else {
                i += 1;
            }
        }
    }

    /// Notifications whose horizon has passed without exhaustion are false positives.
    fn expire(&mut self, now: Timestamp) {
        self.pending.retain(|(_, until, _)| {
            let open = *until > now;
            self.score.false_positive += u64::from(!open);
            open
        });
        for t in &mut self.tracks {
            if t.first_warning.is_some_and(|w| now.since(w) > 86_400_000 + 3_600_000) {
                t.first_warning = None;
            }
        }
    }

    /// The figures at the end of a run at `end`.
    pub(crate) fn finish(mut self, end: Timestamp) -> WarningScore {
        self.expire(end);
        self.score.undecided = self.pending.len() as u64;
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::warn::pipeline::AlertOut;

    const T0: Timestamp = Timestamp(1_764_086_400_000); // 2025-11-25 08:00 PST

    fn note(model: &str, dim: &str, firing: bool) -> Notification {
        let labels: crate::engine::warn::pipeline::Labels =
            [("model", model), ("dimension", dim)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Notification {
            group_labels: labels.clone(),
            firing,
            alerts: vec![AlertOut {
                labels,
                annotations: Default::default(),
                starts_at: T0,
                ends_at: (!firing).then_some(T0),
            }],
        }
    }

    fn scorer() -> Scorer {
        Scorer::new(&["m".to_owned()])
    }

    fn model(name: &str) -> Option<usize> {
        (name == "m").then_some(0)
    }

    #[test]
    fn a_warning_before_a_dry_spell_is_a_true_positive_with_its_lead() {
        let mut s = scorer();
        s.notified(&note("m", "rpd", true), T0, model);
        // Denials every few seconds for ten minutes: one event.
        for i in 0..200 {
            s.exhausted(0, Dimension::Rpd, T0.plus(3_000_000 + i * 3_000));
        }
        let f = s.finish(T0.plus(4_000_000));
        assert_eq!((f.notifications, f.true_positive, f.false_positive), (1, 1, 0));
        assert_eq!((f.exhaustions, f.warned, f.missed), (1, 1, 0));
        assert_eq!((f.lead_min_ms, f.lead_max_ms), (3_000_000, 3_000_000));
    }

    #[test]
    fn a_warning_nothing_follows_is_a_false_positive_and_silence_is_a_miss() {
        let mut s = scorer();
        s.notified(&note("m", "rpm", true), T0, model);
        s.notified(&note("m", "rpm", false), T0.plus(60_000), model);
        // RPM runs out five minutes later: past the two-minute horizon.
        s.exhausted(0, Dimension::Rpm, T0.plus(300_000));
        // A second spell after a gap of more than a minute is a second event.
        s.exhausted(0, Dimension::Rpm, T0.plus(400_000));
        let f = s.finish(T0.plus(500_000));
        assert_eq!((f.notifications, f.resolved), (2, 1));
        assert_eq!((f.true_positive, f.false_positive, f.undecided), (0, 1, 0));
        assert_eq!((f.exhaustions, f.warned, f.missed), (2, 0, 2));
    }

    #[test]
    fn a_warning_the_run_outlives_is_undecided() {
        let mut s = scorer();
        s.notified(&note("m", "rpd", true), T0, model);
        s.notified(&note("other", "rpd", true), T0, model);
        let f = s.finish(T0.plus(60_000));
        assert_eq!((f.true_positive, f.false_positive, f.undecided), (0, 0, 1), "unknown models are not scored");
    }
}

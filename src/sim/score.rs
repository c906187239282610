//! Scoring early warnings against the truth the simulator knows.
//!
//! An *exhaustion event* is the start of a spell in which a model's pool had nothing left on
//! one dimension: the engine denied a request for it (`exhausted` or `cooling`), or the
//! provider answered 429 naming it. A spell continues while such answers keep coming — for
//! a minute dimension, within a minute of each other; for a daily one, within the same
//! Pacific day — and a new one starts after that.
//!
//! - A firing notification is a *true positive* if, for one of its alerts' (model,
//!   dimension), exhaustion follows within that dimension's horizon — two minutes for minute
//!   dimensions, the rest of the Pacific day for daily ones — or is already going on when it
//!   is sent (right, but late); a *false positive* if every horizon passes without; and
//!   *undecided* if the run ends first.
//! - An exhaustion event is *warned* if a firing notification for its (model, dimension) was
//!   sent before it, outside any earlier spell, and within its horizon; lead time = event −
//!   the first such notification. It is warned too, without a lead time, if it starts while
//!   an alert on its (model, dimension) is firing (the operator already knows: a pool alert
//!   that keeps firing through several dry spells warned of each). It is *missed* otherwise.
//! - Precision = true positives ÷ decided firing notifications; recall = warned ÷ exhaustion
//!   events.
//!
//! Memory is bounded: a notification waits only for its horizon, and the rest is per
//! (model, dimension).

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;

use crate::engine::time::next_pacific_midnight;
use crate::engine::warn::Notification;
use crate::engine::{Dimension, Timestamp};

const MINUTE_HORIZON_MS: u64 = 120_000;
const MINUTE_SPELL_GAP_MS: u64 = 60_000;
/// Slots per model: one per dimension.
const DIMS: usize = Dimension::ALL.len();

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
    /// Of the warned events, those that started while an alert on them was already firing.
    pub warned_while_firing: u64,
    /// Exhaustion events without a warning.
    pub missed: u64,
    /// Lead times of warned events, in milliseconds.
    pub lead_ms: Histogram<u64>,
    /// Shortest and longest lead time, exactly (ms; 0 when nothing was warned).
    pub lead_min_ms: u64,
    /// See `lead_min_ms`.
    pub lead_max_ms: u64,
}

/// What the scorer knows of one (model, dimension).
#[derive(Debug, Default)]
struct Slot {
    /// The current or last spell: its last exhaustion answer and its Pacific day's end.
    spell: Option<(Timestamp, Timestamp)>,
    /// Firing notifications for this slot awaiting a verdict, in the order sent: (note id,
    /// sent, horizon end). Horizons of one dimension grow with the sending time.
    pending: VecDeque<(u64, Timestamp, Timestamp)>,
}

/// A firing notification's verdict so far.
#[derive(Debug)]
struct Note {
    /// Slots still open for it.
    open: u32,
    /// Whether exhaustion followed on any of its slots.
    confirmed: bool,
}

/// The scorer.
#[derive(Debug)]
pub(crate) struct Scorer {
    slots: Vec<Slot>,
    /// Firing notifications not yet decided, by id.
    notes: BTreeMap<u64, Note>,
    next_note: u64,
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
        Self {
            slots: (0..models.len() * DIMS).map(|_| Slot::default()).collect(),
            notes: BTreeMap::new(),
            next_note: 0,
            score: WarningScore {
                notifications: 0,
                resolved: 0,
                exhaustions: 0,
                true_positive: 0,
                false_positive: 0,
                undecided: 0,
                warned: 0,
                warned_while_firing: 0,
                missed: 0,
                lead_ms: Histogram::new_with_bounds(1, 400 * 86_400_000, 3).expect("valid bounds"),
                lead_min_ms: 0,
                lead_max_ms: 0,
            },
        }
    }

    /// Whether a spell of `d` is going on in `slot` at `now`.
    fn in_spell(slot: &Slot, d: Dimension, now: Timestamp) -> bool {
        slot.spell.is_some_and(|(last, day_end)| {
            if d.is_daily() {
                day_end == next_pacific_midnight(now)
            } else {
                now.since(last) <= MINUTE_SPELL_GAP_MS
            }
        })
    }

    /// Closes the pending entries of slot `s` whose horizon ended by `now`.
    fn expire(&mut self, s: usize, now: Timestamp) {
        while let Some(&(id, _, until)) = self.slots[s].pending.front() {
            if until > now {
                break;
            }
            self.slots[s].pending.pop_front();
            self.close(id, false);
        }
    }

    /// One slot of note `id` is decided: `confirmed` if exhaustion followed.
    fn close(&mut self, id: u64, confirmed: bool) {
        let Some(note) = self.notes.get_mut(&id) else { return };
        if confirmed && !note.confirmed {
            note.confirmed = true;
            self.score.true_positive += 1;
        }
        note.open -= 1;
        if note.open == 0 {
            if !note.confirmed {
                self.score.false_positive += 1;
            }
            self.notes.remove(&id);
        }
    }

    /// A notification went out at `now`; `model_of` maps a model name to its index.
    pub(crate) fn notified(&mut self, n: &Notification, now: Timestamp, model_of: impl Fn(&str) -> Option<usize>) {
        self.score.notifications += 1;
        if !n.firing {
            self.score.resolved += 1;
            return;
        }
        let mut slots: Vec<(usize, Dimension)> = Vec::new();
        for a in n.alerts.iter().filter(|a| a.ends_at.is_none()) {
            let m = a.labels.get("model").and_then(|m| model_of(m));
            let d = a.labels.get("dimension").and_then(|d| Dimension::ALL.into_iter().find(|x| x.name() == d));
            if let (Some(m), Some(d)) = (m, d) {
                let s = m * DIMS + d.index();
                if !slots.iter().any(|(x, _)| *x == s) {
                    slots.push((s, d));
                }
            }
        }
        if slots.is_empty() {
            return;
        }
        let id = self.next_note;
        self.next_note += 1;
        self.notes.insert(id, Note { open: slots.len() as u32, confirmed: false });
        for (s, d) in slots {
            self.expire(s, now);
            if Self::in_spell(&self.slots[s], d, now) {
                // Sent while the pool is already dry: right, but no warning in advance.
                self.close(id, true);
            } else {
                self.slots[s].pending.push_back((id, now, horizon(d, now)));
            }
        }
    }

    /// The pool of `model` had nothing left on `d` at `now`, while an alert notified on it has
    /// been firing since `firing_since`, if one is. When that begins a spell, says so with the
    /// lead of the warning that foretold it, if any.
    pub(crate) fn exhausted(
        &mut self,
        model: usize,
        d: Dimension,
        now: Timestamp,
        firing_since: Option<Timestamp>,
    ) -> Option<Option<u64>> {
        let s = model * DIMS + d.index();
        self.expire(s, now);
        let continues = Self::in_spell(&self.slots[s], d, now);
        self.slots[s].spell = Some((now, next_pacific_midnight(now)));
        if continues {
            return None;
        }
        self.score.exhaustions += 1;
        // Every notification still within its horizon warned of this spell; the first one
        // gave the lead.
        let pending = std::mem::take(&mut self.slots[s].pending);
        let lead = pending.front().map(|&(_, sent, _)| now.since(sent).max(1));
        match pending.front() {
            Some(&(_, sent, _)) => {
                self.score.warned += 1;
                let lead = now.since(sent).max(1);
                self.score.lead_ms.saturating_record(lead);
                let first = self.score.warned == 1;
                self.score.lead_min_ms = if first { lead } else { self.score.lead_min_ms.min(lead) };
                self.score.lead_max_ms = self.score.lead_max_ms.max(lead);
            }
            // An alert already firing on it: the operator knows, though not in advance.
            None => match firing_since {
                Some(since) => {
                    self.score.warned += 1;
                    self.score.warned_while_firing += 1;
                    return Some(Some(now.since(since).max(1)));
                }
                None => self.score.missed += 1,
            },
        }
        for (id, _, _) in pending {
            self.close(id, true);
        }
        Some(lead)
    }

    /// The figures at the end of a run at `end`.
    pub(crate) fn finish(mut self, end: Timestamp) -> WarningScore {
        for s in 0..self.slots.len() {
            self.expire(s, end);
        }
        self.score.undecided = self.notes.len() as u64;
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
            s.exhausted(0, Dimension::Rpd, T0.plus(3_000_000 + i * 3_000), None);
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
        s.exhausted(0, Dimension::Rpm, T0.plus(300_000), None);
        // A second spell after a gap of more than a minute is a second event.
        s.exhausted(0, Dimension::Rpm, T0.plus(400_000), None);
        let f = s.finish(T0.plus(500_000));
        assert_eq!((f.notifications, f.resolved), (2, 1));
        assert_eq!((f.true_positive, f.false_positive, f.undecided), (0, 1, 0));
        assert_eq!((f.exhaustions, f.warned, f.missed), (2, 0, 2));
    }

    #[test]
    fn each_dimension_keeps_its_own_horizon_and_a_stale_warning_gives_way() {
        let mut s = scorer();
        let mut both = note("m", "rpm", true);
        let mut rpd = both.alerts[0].clone();
        rpd.labels.insert("dimension".into(), "rpd".into());
        both.alerts.push(rpd);
        s.notified(&both, T0, model);
        // The RPM alert resolves ten minutes later.
        s.notified(&note("m", "rpm", false), T0.plus(600_000), model);
        // RPM runs dry three hours later: the RPD alert's day-long horizon does not cover it.
        s.exhausted(0, Dimension::Rpm, T0.plus(3 * 3_600_000), None);
        // A new RPM warning, then a dry spell 50 s later: warned, with a 50 s lead.
        s.notified(&note("m", "rpm", true), T0.plus(4 * 3_600_000), model);
        s.exhausted(0, Dimension::Rpm, T0.plus(4 * 3_600_000 + 50_000), None);
        // A warning sent during that spell is right but late: no lead for anything.
        s.notified(&note("m", "rpm", true), T0.plus(4 * 3_600_000 + 60_000), model);
        let f = s.finish(T0.plus(5 * 3_600_000));
        assert_eq!((f.exhaustions, f.warned, f.missed), (2, 1, 1));
        assert_eq!((f.lead_min_ms, f.lead_max_ms), (50_000, 50_000));
        assert_eq!((f.true_positive, f.false_positive, f.undecided), (2, 0, 1), "the RPD alert waits for midnight");
    }

    #[test]
    fn dry_spells_under_an_alert_still_firing_are_warned() {
        let mut s = scorer();
        s.notified(&note("m", "rpm", true), T0, model);
        // The alert keeps firing for 50 minutes while RPM runs dry again and again (the warner
        // says it is firing since T0).
        for i in 0..10u64 {
            s.exhausted(0, Dimension::Rpm, T0.plus(60_000 + i * 300_000), Some(T0));
        }
        s.notified(&note("m", "rpm", false), T0.plus(3_000_000), model);
        // Once it has resolved, a dry spell with no warning is missed again.
        s.exhausted(0, Dimension::Rpm, T0.plus(3_600_000), None);
        let f = s.finish(T0.plus(4_000_000));
        assert_eq!((f.exhaustions, f.warned, f.warned_while_firing, f.missed), (11, 10, 9, 1));
        assert_eq!((f.lead_min_ms, f.lead_max_ms), (60_000, 60_000), "only the first had a lead in advance");
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

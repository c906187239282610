//! Scoring early warnings against the truth the simulator knows.
//!
//! A *spell* is a stretch in which a model's pool had nothing left on one dimension: the
//! engine denied a request for it (`exhausted` or `cooling`), or the provider answered 429
//! naming it. A spell continues while such answers keep coming — for a minute dimension,
//! within a minute of each other; for a daily one, within the same Pacific day — and a new
//! one begins after that.
//!
//! Every alert states its horizon (the `horizon` annotation, in seconds; without one, two
//! minutes for minute dimensions and the rest of the Pacific day for daily ones).
//!
//! - A firing notification is a *true positive* if, for one of its alerts' (model,
//!   dimension), a spell *begins* within that alert's horizon after it was sent; a spell
//!   already going on when it is sent does not count. It is a *false positive* if every
//!   horizon passes without, and *undecided* if the run ends first.
//! - A spell is *warned in advance* if a firing notification for its (model, dimension) was
//!   sent before it began, outside any earlier spell and after the last one began, and the
//!   spell began within that notification's horizon; its lead time is the spell's start less
//!   the first such notification. It is *warned while firing* if, failing that, it began
//!   while an alert on its (model, dimension) notified before it was still firing (the
//!   operator already knew: no lead time). It is *missed* otherwise.
//! - A spell that begins during the run's *first burst* — the first stretch in which the
//!   pool's load, as the provider counts it, stays at or above half its minute capacity,
//!   for at most its first five minutes —
//!   cannot be foreseen from the run's own history; it is named so (`first_burst`), and is
//!   counted as missed unless a notification did foretell it.
//! - Precision = true positives ÷ decided firing notifications; recall = warned (in advance
//!   or while firing) ÷ spells.
//!
//! An alert that fires on a first denial and stays up all day warns nothing in advance: it
//! scores no lead time, and its notification is true only if a spell begins within its
//! horizon after it.
//!
//! Memory is bounded: a notification waits only for its horizons, the rest is per (model,
//! dimension), and the list of spells is kept up to [`SPELLS_KEPT`].

use std::collections::{BTreeMap, VecDeque};

use hdrhistogram::Histogram;

use crate::engine::time::next_pacific_midnight;
use crate::engine::warn::Notification;
use crate::engine::{Dimension, Timestamp};

const MINUTE_HORIZON_MS: u64 = 120_000;
const MINUTE_SPELL_GAP_MS: u64 = 60_000;
/// Slots per model: one per dimension.
const DIMS: usize = Dimension::ALL.len();
/// Spells listed one by one at most (the counts go on).
pub const SPELLS_KEPT: usize = 10_000;
/// The pool's load at which a burst begins.
const BURST_LOAD: f64 = 0.5;
/// The first burst lasts at most this long (steady traffic above half the capacity is not
/// one long burst).
const FIRST_BURST_MS: u64 = 300_000;

/// How a spell was foretold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foretold {
    /// A notification sent before it began said it would happen within its horizon.
    Advance,
    /// It began under an alert notified before it and still firing.
    WhileFiring,
    /// Nothing foretold it.
    Missed,
}

impl Foretold {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Advance => "advance",
            Self::WhileFiring => "while-firing",
            Self::Missed => "missed",
        }
    }
}

/// One spell as scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spell {
    /// When it began.
    pub at: Timestamp,
    /// Index of the model.
    pub model: usize,
    /// The dimension that ran out.
    pub dimension: Dimension,
    /// How it was foretold.
    pub foretold: Foretold,
    /// Lead time of an advance warning, in milliseconds.
    pub lead_ms: Option<u64>,
    /// Whether it began during the run's first burst (cannot be foreseen).
    pub first_burst: bool,
}

/// The figures.
#[derive(Debug)]
pub struct WarningScore {
    /// Notifications sent (firing and resolved).
    pub notifications: u64,
    /// Of which resolved notices.
    pub resolved: u64,
    /// Spells (exhaustion events).
    pub exhaustions: u64,
    /// Firing notifications followed by a spell beginning within their horizon.
    pub true_positive: u64,
    /// Firing notifications whose horizons passed without a spell beginning.
    pub false_positive: u64,
    /// Firing notifications whose horizon outlasted the run.
    pub undecided: u64,
    /// Spells warned, in advance or while firing.
    pub warned: u64,
    /// Spells warned in advance.
    pub warned_in_advance: u64,
    /// Spells that began under an alert already notified and still firing.
    pub warned_while_firing: u64,
    /// Spells without a warning.
    pub missed: u64,
    /// Of the missed spells, those that began during the run's first burst.
    pub missed_first_burst: u64,
    /// Lead times of spells warned in advance, in milliseconds.
    pub lead_ms: Histogram<u64>,
    /// Shortest and longest lead time, exactly (ms; 0 when nothing was warned in advance).
    pub lead_min_ms: u64,
    /// See `lead_min_ms`.
    pub lead_max_ms: u64,
    /// The spells, in order (the first [`SPELLS_KEPT`]).
    pub spells: Vec<Spell>,
}

/// What the scorer knows of one (model, dimension).
#[derive(Debug, Default)]
struct Slot {
    /// The current or last spell: its last exhaustion answer and its Pacific day's end.
    spell: Option<(Timestamp, Timestamp)>,
    /// Firing notifications for this slot awaiting a spell, in the order sent: (note id,
    /// sent, horizon end, sent outside any spell).
    pending: VecDeque<(u64, Timestamp, Timestamp, bool)>,
}

/// The run's first burst, per model: not begun, going on, or over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Burst {
    #[default]
    Before,
    /// Since when.
    During(Timestamp),
    After,
}

/// A firing notification's verdict so far.
#[derive(Debug)]
struct Note {
    /// Slots still open for it.
    open: u32,
    /// Whether a spell began within its horizon on any of its slots.
    confirmed: bool,
}

/// The scorer.
#[derive(Debug)]
pub(crate) struct Scorer {
    slots: Vec<Slot>,
    bursts: Vec<Burst>,
    /// Firing notifications not yet decided, by id.
    notes: BTreeMap<u64, Note>,
    next_note: u64,
    score: WarningScore,
}

/// The end of an alert's horizon: its `horizon` annotation (`"1800s"`), or the default of
/// its dimension.
fn horizon(d: Dimension, at: Timestamp, stated: Option<&String>) -> Timestamp {
    if let Some(secs) = stated.and_then(|h| h.strip_suffix('s')).and_then(|h| h.parse::<u64>().ok()) {
        return at.plus(secs.saturating_mul(1000));
    }
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
            bursts: vec![Burst::default(); models.len()],
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
                warned_in_advance: 0,
                warned_while_firing: 0,
                missed: 0,
                missed_first_burst: 0,
                lead_ms: Histogram::new_with_bounds(1, 400 * 86_400_000, 3).expect("valid bounds"),
                lead_min_ms: 0,
                lead_max_ms: 0,
                spells: Vec::new(),
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

    /// Closes the pending entries of slot `s` whose horizon ended before `now` (a spell at its
    /// very end is within it).
    fn expire(&mut self, s: usize, now: Timestamp) {
        let mut i = 0;
        while i < self.slots[s].pending.len() {
            let (id, _, until, _) = self.slots[s].pending[i];
            if until >= now {
                i += 1;
                continue;
            }
            self.slots[s].pending.remove(i);
            self.close(id, false);
        }
    }

    /// One slot of note `id` is decided: `confirmed` if a spell began within its horizon.
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

    /// The pool of `model`, as the provider counts it, is at `load` of its minute capacity
    /// at `now` (for the first burst).
    pub(crate) fn load(&mut self, model: usize, load: f64, now: Timestamp) {
        let b = &mut self.bursts[model];
        *b = match (*b, load >= BURST_LOAD) {
            (Burst::Before, true) => Burst::During(now),
            (Burst::During(since), high) if !high || now.since(since) > FIRST_BURST_MS => Burst::After,
            (b, _) => b,
        };
    }

    /// A notification went out at `now`; `model_of` maps a model name to its index.
    pub(crate) fn notified(&mut self, n: &Notification, now: Timestamp, model_of: impl Fn(&str) -> Option<usize>) {
        self.score.notifications += 1;
        if !n.firing {
            self.score.resolved += 1;
            return;
        }
        let mut slots: Vec<(usize, Dimension, Timestamp)> = Vec::new();
        for a in n.alerts.iter().filter(|a| a.ends_at.is_none()) {
            let m = a.labels.get("model").and_then(|m| model_of(m));
            let d = a.labels.get("dimension").and_then(|d| Dimension::ALL.into_iter().find(|x| x.name() == d));
            if let (Some(m), Some(d)) = (m, d) {
                let s = m * DIMS + d.index();
                let until = horizon(d, now, a.annotations.get("horizon"));
                match slots.iter_mut().find(|(x, _, _)| *x == s) {
                    Some(slot) => slot.2 = slot.2.max(until),
                    None => slots.push((s, d, until)),
                }
            }
        }
        if slots.is_empty() {
            return;
        }
        let id = self.next_note;
        self.next_note += 1;
        self.notes.insert(id, Note { open: slots.len() as u32, confirmed: false });
        for (s, d, until) in slots {
            self.expire(s, now);
            let outside = !Self::in_spell(&self.slots[s], d, now);
            self.slots[s].pending.push_back((id, now, until, outside));
        }
    }

    /// The pool of `model` had nothing left on `d` at `now`, while an alert notified on it has
    /// been firing since `firing_since`, if one is. When that begins a spell, says so with the
    /// lead of the warning that foretold it in advance, if any.
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
        // Every notification still within its horizon foretold this spell; the first one
        // sent outside a spell gave the lead.
        let pending = std::mem::take(&mut self.slots[s].pending);
        let lead = pending.iter().find(|p| p.3).map(|&(_, sent, _, _)| now.since(sent).max(1));
        let first_burst = matches!(self.bursts[model], Burst::During(since) if now.since(since) <= FIRST_BURST_MS);
        let foretold = match (lead, firing_since) {
            (Some(lead), _) => {
                self.score.warned_in_advance += 1;
                self.score.lead_ms.saturating_record(lead);
                let first = self.score.warned_in_advance == 1;
                self.score.lead_min_ms = if first { lead } else { self.score.lead_min_ms.min(lead) };
                self.score.lead_max_ms = self.score.lead_max_ms.max(lead);
                Foretold::Advance
            }
            (None, Some(_)) => {
                self.score.warned_while_firing += 1;
                Foretold::WhileFiring
            }
            (None, None) => {
                self.score.missed += 1;
                self.score.missed_first_burst += u64::from(first_burst);
                Foretold::Missed
            }
        };
        if foretold != Foretold::Missed {
            self.score.warned += 1;
        }
        if self.score.spells.len() < SPELLS_KEPT {
            self.score.spells.push(Spell { at: now, model, dimension: d, foretold, lead_ms: lead, first_burst });
        }
        for (id, _, _, _) in pending {
            self.close(id, true);
        }
        Some(match foretold {
            Foretold::WhileFiring => firing_since.map(|since| now.since(since).max(1)),
            _ => lead,
        })
    }

    /// The figures at the end of a run at `end`.
    pub(crate) fn finish(mut self, end: Timestamp) -> WarningScore {
        for s in 0..self.slots.len() {
            self.expire(s, end);
        }
        self.score.undecided = self.notes.values().filter(|n| !n.confirmed).count() as u64;
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::warn::pipeline::AlertOut;

    const T0: Timestamp = Timestamp(1_764_086_400_000); // 2025-11-25 08:00 PST

    fn note(model: &str, dim: &str, firing: bool) -> Notification {
        stated(model, dim, firing, None)
    }

    fn stated(model: &str, dim: &str, firing: bool, horizon_s: Option<u64>) -> Notification {
        let annotations = horizon_s.map(|h| ("horizon".to_owned(), format!("{h}s"))).into_iter().collect();
        let labels: crate::engine::warn::pipeline::Labels =
            [("model", model), ("dimension", dim)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Notification {
            group_labels: labels.clone(),
            firing,
            alerts: vec![AlertOut { labels, annotations, starts_at: T0, ends_at: (!firing).then_some(T0) }],
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
        // A warning sent during that spell, and no spell begins after it: a false positive.
        s.notified(&note("m", "rpm", true), T0.plus(4 * 3_600_000 + 60_000), model);
        let f = s.finish(T0.plus(5 * 3_600_000));
        assert_eq!((f.exhaustions, f.warned, f.missed), (2, 1, 1));
        assert_eq!((f.lead_min_ms, f.lead_max_ms), (50_000, 50_000));
        assert_eq!((f.true_positive, f.false_positive, f.undecided), (1, 1, 1), "the RPD alert waits for midnight");
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

    #[test]
    fn the_stated_horizon_decides_and_an_alert_raised_at_the_first_denial_warns_nothing() {
        let mut s = scorer();
        // Thirty minutes stated: a spell 20 minutes on is foretold, with its lead.
        s.notified(&stated("m", "tpm", true, Some(1_800)), T0, model);
        s.exhausted(0, Dimension::Tpm, T0.plus(1_200_000), None);
        // An alert raised at the first denial of a spell and left firing: that spell is
        // missed, the next ones began under it, and none has a lead.
        s.exhausted(0, Dimension::Rpm, T0.plus(2_000_000), None);
        s.notified(&stated("m", "rpm", true, Some(3_600)), T0.plus(2_010_000), model);
        for i in 1..5u64 {
            s.exhausted(0, Dimension::Rpm, T0.plus(2_000_000 + i * 600_000), Some(T0.plus(2_010_000)));
        }
        let f = s.finish(T0.plus(8_000_000));
        assert_eq!((f.exhaustions, f.warned_in_advance, f.warned_while_firing, f.missed), (6, 1, 4, 1));
        assert_eq!((f.lead_min_ms, f.lead_max_ms), (1_200_000, 1_200_000));
        assert_eq!((f.true_positive, f.false_positive), (2, 0), "a spell began within each horizon");
        let kinds: Vec<&str> = f.spells.iter().map(|s| s.foretold.name()).collect();
        assert_eq!(kinds, ["advance", "missed", "while-firing", "while-firing", "while-firing", "while-firing"]);
    }

    #[test]
    fn a_spell_going_on_does_not_confirm_a_warning_and_the_first_burst_is_named() {
        let mut s = scorer();
        s.load(0, 0.2, T0);
        s.load(0, 0.8, T0.plus(60_000));
        s.exhausted(0, Dimension::Rpm, T0.plus(90_000), None);
        s.notified(&stated("m", "rpm", true, Some(600)), T0.plus(100_000), model);
        // The spell goes on past the horizon; nothing new begins.
        for i in 0..30u64 {
            s.exhausted(0, Dimension::Rpm, T0.plus(120_000 + i * 30_000), None);
        }
        s.load(0, 0.3, T0.plus(1_200_000));
        s.exhausted(0, Dimension::Rpm, T0.plus(3_000_000), None);
        let f = s.finish(T0.plus(3_600_000));
        assert_eq!((f.true_positive, f.false_positive), (0, 1));
        assert_eq!((f.exhaustions, f.missed, f.missed_first_burst), (2, 2, 1));
        assert!(f.spells[0].first_burst && !f.spells[1].first_burst);
    }
}

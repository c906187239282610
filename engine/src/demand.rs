//! What was asked of each model: requests arriving per second over the last minute, counted
//! once per request where it first reaches the engine ([`crate::Engine::note_arrival`]).
//!
//! Admitted usage never exceeds the pool's capacity, so it cannot tell a burst that filled
//! the pool from one that was twice its size; the demand can. Memory: sixty counters a model.

use std::sync::Mutex;

use crate::time::{Timestamp, MINUTE_MS};

/// Seconds a meter keeps.
const SECONDS: usize = (MINUTE_MS / 1000) as usize;

/// One model's arrivals in the last minute, a counter per second.
#[derive(Debug)]
pub(crate) struct Meter {
    /// Per second slot: (the second it counts, arrivals).
    slots: Mutex<[(u64, u64); SECONDS]>,
}

impl Default for Meter {
    fn default() -> Self {
        Self { slots: Mutex::new([(0, 0); SECONDS]) }
    }
}

impl Meter {
    /// A request arrived at `now`.
    pub(crate) fn note(&self, now: Timestamp) {
        let second = now.0 / 1000;
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut slots[(second % SECONDS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    /// Arrivals in the minute up to `now`.
    pub(crate) fn last_minute(&self, now: Timestamp) -> u64 {
        let second = now.0 / 1000;
        let slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.iter().filter(|(s, _)| *s + (SECONDS as u64) > second && *s <= second).map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let m = Meter::default();
        let t0 = Timestamp(1_764_140_400_000);
        for i in 0..90u64 {
            m.note(t0.plus(i * 1000));
        }
        assert_eq!(m.last_minute(t0.plus(89_000)), 60);
        assert_eq!(m.last_minute(t0.plus(200_000)), 0, "an old minute is forgotten");
        m.note(t0.plus(200_500));
        m.note(t0.plus(200_900));
        assert_eq!(m.last_minute(t0.plus(201_000)), 2);
    }
}

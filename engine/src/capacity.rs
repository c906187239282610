//! The pool's capacity per model: counted over the distinct projects of usable keys.

use super::limits::Dimension;
use super::store::{BucketId, Buckets, QuotaStore, Usage};
use super::time::{next_pacific_midnight, Timestamp};
use super::Engine;

/// What one model can still serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Index of the model.
    pub model: usize,
    /// Distinct quota buckets (projects) with at least one usable key (keys disabled by their
    /// health are not usable).
    pub projects: usize,
    /// Usable keys (enabled, and not disabled by the provider's rejection).
    pub keys: usize,
    /// Sum of the provider's limits over those projects, per [`Dimension`] (`tpd`: limited ones).
    pub limits: [u64; 4],
    /// What the engine may use of them (after the safety margin).
    pub usable: [u64; 4],
    /// What is still free now, per dimension.
    pub remaining: [u64; 4],
    /// When the minute windows next free something, if anything is in them.
    pub minute_frees_at: Option<Timestamp>,
    /// When the daily dimensions reset.
    pub day_resets_at: Timestamp,
}

impl Capacity {
    /// The limit sum of one dimension.
    pub fn limit(&self, d: Dimension) -> u64 {
        self.limits[d.index()]
    }
}

impl<S: QuotaStore> Engine<S> {
    /// Capacity of `model` at `now`. Totals follow every pool event; `remaining` reads the
    /// store at once, so a view is never older than the call (a bucket the store cannot
    /// read counts as full).
    pub fn capacity(&self, model: usize, now: Timestamp) -> Capacity {
        self.capacity_with(model, now, &|b| self.store.usage(b, now).ok())
    }
}

impl<S: Buckets> Engine<S> {
    /// [`Engine::capacity`] with each bucket's counters from `usage` (read ahead, for a store
    /// that answers asynchronously: [`Engine::usages_async`]); `None` counts as full.
    pub fn capacity_with(&self, model: usize, now: Timestamp, usage: &dyn Fn(BucketId) -> Option<Usage>) -> Capacity {
        let pool = self.pool.load();
        let totals = pool.totals[model];
        let mut remaining = [0u64; 4];
        let mut minute_frees_at: Option<Timestamp> = None;
        let disabled = self.health.disabled_keys();
        let (mut projects, mut keys) = (totals.buckets, totals.keys);
        let (mut limits, mut usable) = (totals.limits, totals.usable);
        for (g, bl) in pool.groups[model].iter().zip(&pool.group_limits[model]) {
            // Keys the provider rejected serve nothing until a probe revives them; a project
            // left with none is no capacity at all.
            if let Some(d) = &disabled {
                let sick = g.keys.iter().filter(|k| d.binary_search(k).is_ok()).count();
                keys -= sick;
                if sick == g.keys.len() {
                    projects -= 1;
                    let own = pool.projects()[g.project].limits[model].expect("grouped projects serve the model");
                    for d in Dimension::ALL {
                        let (l, u) = (own.get(d), bl.ceilings[1].get(d));
                        limits[d.index()] -= if l == u64::MAX { 0 } else { l.min(limits[d.index()]) };
                        usable[d.index()] -= if u == u64::MAX { 0 } else { u.min(usable[d.index()]) };
                    }
                    continue;
                }
            }
            // What the store cannot tell is not counted as free.
            let Some(u) = usage(g.bucket) else { continue };
            let high = &pool.limits_of(g.bucket).ceilings[1];
            for d in Dimension::ALL {
                let c = high.get(d);
                if c != u64::MAX {
                    let free = if u.cooling_until.is_some() { 0 } else { c.saturating_sub(u.get(d)) };
                    remaining[d.index()] += free;
                }
            }
            if let Some(f) = u.minute_frees_at {
                minute_frees_at = Some(minute_frees_at.map_or(f, |m| m.min(f)));
            }
        }
        Capacity {
            model,
            projects,
            keys,
            limits,
            usable,
            remaining,
            minute_frees_at,
            day_resets_at: next_pacific_midnight(now),
        }
    }
}

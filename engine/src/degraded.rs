//! An explicitly configured degraded mode for a shared store: while the shared store cannot
//! answer, each replica admits from a bounded local share of every limit instead of failing
//! closed.
//!
//! **Worst case.** With `N` replicas, each admits at most `⌊ceiling / N⌋` per window on its own
//! while the shared store is down. Those local counts are unknown to the shared store, and
//! the shared store's counts (up to one full ceiling per window) are unknown to the replicas.
//! So any minute window — or Pacific day — that overlaps an outage can see **up to twice each
//! ceiling** across the pool (the shared store's count plus `N` local shares), and a window
//! wholly inside an outage at most one ceiling. Outside outages nothing changes. A deployment
//! that cannot afford a 429 storm of that size keeps the default: fail closed.
//!
//! The mode is never implied: it exists only where a service wraps its store in [`Degraded`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::limits::{Ceilings, Dimension};
use super::memory::MemoryStore;
use super::store::{BucketId, BucketKey, Buckets, Cost, Grant, QuotaStore, Reservation, Shortfall, StoreError, Usage};
use super::time::Timestamp;

/// Reservations made locally carry this bit in their sequence number.
const LOCAL: u64 = 1 << 63;

/// A shared store with a bounded local fallback. See the [module](self) documentation.
#[derive(Debug)]
pub struct Degraded<S> {
    shared: S,
    local: MemoryStore,
    replicas: u64,
    /// Shared bucket id → local bucket id.
    ids: Mutex<Vec<BucketId>>,
    fallbacks: AtomicU64,
}

impl<S: QuotaStore> Degraded<S> {
    /// `shared`, falling back to a local share of `1 / replicas` of every ceiling while it
    /// fails. `replicas` is the number of replicas sharing the store (at least 1).
    pub fn new(shared: S, replicas: u64) -> Self {
        Self {
            shared,
            local: MemoryStore::new(),
            replicas: replicas.max(1),
            ids: Mutex::new(Vec::new()),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// The shared store.
    pub fn shared(&self) -> &S {
        &self.shared
    }

    /// Calls answered locally because the shared store failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// This replica's share of `c`.
    fn share(&self, c: &Ceilings) -> Ceilings {
        Ceilings(c.0.map(|x| if x == u64::MAX { x } else { x / self.replicas }))
    }

    fn local_id(&self, bucket: BucketId) -> BucketId {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids[bucket.0 as usize]
    }

    fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

fn local_reservation(r: Reservation) -> Reservation {
    Reservation { seq: r.seq | LOCAL, ..r }
}

fn unmarked(r: &Reservation) -> Reservation {
    Reservation { seq: r.seq & !LOCAL, ..*r }
}

impl<S: QuotaStore> Buckets for Degraded<S> {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        let shared = self.shared.bucket(key)?;
        let local = self.local.bucket(key)?;
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let i = shared.0 as usize;
        if ids.len() <= i {
            ids.resize(i + 1, BucketId(u32::MAX));
        }
        ids[i] = local;
        Ok(shared)
    }
}

impl<S: QuotaStore> QuotaStore for Degraded<S> {
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        match self.shared.reserve(bucket, cost, ceilings, now) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.fell_back();
                let answer = self.local.reserve(self.local_id(bucket), cost, &self.share(ceilings), now)?;
                Ok(answer.map(|g| Grant { reservation: local_reservation(g.reservation), ..g }))
            }
        }
    }

    fn reconcile(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> Result<Usage, StoreError> {
        if r.seq & LOCAL != 0 {
            return self.local.reconcile(self.local_id(bucket), &unmarked(r), actual, now);
        }
        self.shared.reconcile(bucket, r, actual, now)
    }

    fn refund(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> Result<Usage, StoreError> {
        if r.seq & LOCAL != 0 {
            return self.local.refund(self.local_id(bucket), &unmarked(r), now);
        }
        self.shared.refund(bucket, r, now)
    }

    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        // Cooled locally too, so that local admissions respect it while the store is down.
        self.local.cool_down(self.local_id(bucket), dimension, until, now)?;
        self.shared.cool_down(bucket, dimension, until, now).or_else(|_| {
            self.fell_back();
            Ok(())
        })
    }

    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        self.shared.usage(bucket, now).or_else(|_| self.local.usage(self.local_id(bucket), now))
    }
}

//! Engine replicas in a simulated run (`[replicas]`): the quota store each replica sees, and
//! the coordination between them, per mode.
//!
//! - `strict`: one shared store (as the Redis store), each admission one round trip of the
//!   configured latency; while the store is down or slower than the deadline, admission fails
//!   closed. Never over-admits.
//! - `cached`: each replica counts its own admissions and learns the others' counts every
//!   `interval`; between syncs it cannot see what the others admitted, so it over-admits.
//! - `leased`: every `interval` each bucket's free capacity is divided among the replicas in
//!   proportion to their demand in the last interval; a replica admits only within its lease.
//!   Never over-admits, but what frees between renewals stays unused: lost capacity.
//! - `unshared`: each replica counts alone (the per-process reference): limit × replicas.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{
    BucketId, BucketKey, Buckets, Ceilings, Cost, Dimension, Grant, MemoryStore, QuotaStore, Reservation, Shortfall,
    StoreError, Timestamp, Usage,
};
use rand::SeedableRng;

use super::gateway::Counting;
use super::run::{SimEngine, SimError};
use crate::engine::ManualClock;
use crate::scenario::{build, ReplicaMode, ReplicasDef, Scenario};

/// What the replicas share: whether the store answers, and the coordinator's last word.
#[derive(Debug)]
pub struct Coordination {
    mode: ReplicaMode,
    count: usize,
    /// The shared store cannot be reached (an outage, or a call past its deadline).
    down: AtomicBool,
    state: Mutex<SyncState>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// When the next sync or renewal is due.
    next_at: u64,
    /// Cached: per replica and bucket, the others' counts at the last sync.
    others: Vec<Vec<[u64; 4]>>,
    /// Leased: per replica and bucket, the lease on each dimension (none yet: an equal share).
    leases: Vec<Vec<Option<[u64; 4]>>>,
    /// Leased: per replica and bucket, admissions asked for since the last renewal.
    demand: Vec<Vec<u64>>,
}

impl Coordination {
    pub(crate) fn new(def: &ReplicasDef, first_sync: u64) -> Arc<Self> {
        let count = def.count as usize;
        Arc::new(Self {
            mode: def.mode,
            count,
            down: AtomicBool::new(false),
            state: Mutex::new(SyncState {
                next_at: first_sync,
                others: vec![Vec::new(); count],
                leases: vec![Vec::new(); count],
                demand: vec![Vec::new(); count],
            }),
        })
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sync (cached) or renewal (leased) due at `now`, over every replica's own counts;
    /// `ceilings(bucket)` gives what the pool may use of a bucket. Skipped while the store is
    /// down: nothing can be exchanged.
    pub(crate) fn sync(&self, own: &[Arc<MemoryStore>], pool: &[(BucketId, Ceilings)], now: u64, next: u64) {
        let buckets = pool.iter().map(|(b, _)| b.0 as usize + 1).max().unwrap_or(0);
        // By bucket id, once: a sync reads every bucket of every replica.
        let mut by_id: Vec<Option<Ceilings>> = vec![None; buckets];
        for (b, c) in pool {
            by_id[b.0 as usize] = Some(*c);
        }
        let ceilings = |b: BucketId| by_id[b.0 as usize].unwrap_or(Ceilings([u64::MAX; 4]));
        let mut s = self.state();
        s.next_at = next;
        if self.is_down() {
            return;
        }
        let t = Timestamp(now);
        let used: Vec<Vec<[u64; 4]>> = own
            .iter()
            .map(|store| {
                (0..buckets)
                    .map(|b| {
                        let u = if by_id[b].is_some() {
                            store.usage(BucketId(b as u32), t).unwrap_or_default()
                        } else {
                            Usage::default()
                        };
                        Dimension::ALL.map(|d| u.get(d))
                    })
                    .collect()
            })
            .collect();
        match self.mode {
            ReplicaMode::Cached => {
                for (i, others) in s.others.iter_mut().enumerate() {
                    *others = (0..buckets)
                        .map(|b| {
                            let mut sum = [0u64; 4];
                            for (j, u) in used.iter().enumerate() {
                                if j != i {
                                    for d in 0..4 {
                                        sum[d] += u[b][d];
                                    }
                                }
                            }
                            sum
                        })
                        .collect();
                }
            }
            ReplicaMode::Leased => {
                let demand = std::mem::take(&mut s.demand);
                let mut leases = vec![vec![None; buckets]; self.count];
                for b in 0..buckets {
                    let c = ceilings(BucketId(b as u32));
                    let wants: Vec<u64> =
                        (0..self.count).map(|i| demand.get(i).and_then(|d| d.get(b)).copied().unwrap_or(0)).collect();
                    for d in 0..4 {
                        if c.0[d] == u64::MAX {
                            continue;
                        }
                        let held: u64 = used.iter().map(|u| u[b][d]).sum();
                        let free = c.0[d].saturating_sub(held);
                        for (i, share) in split(free, &wants).into_iter().enumerate() {
                            let l = leases[i][b].get_or_insert([u64::MAX; 4]);
                            l[d] = used[i][b][d] + share;
                        }
                    }
                }
                s.leases = leases;
                s.demand = vec![vec![0; buckets]; self.count];
            }
            ReplicaMode::Strict | ReplicaMode::Unshared => {}
        }
    }
}

/// `free` units split in proportion to `wants` (equally when nobody wants any), every unit
/// handed out: the remainder goes one by one to the largest fractions, earlier replicas
/// first among equals.
fn split(free: u64, wants: &[u64]) -> Vec<u64> {
    let n = wants.len() as u128;
    let total: u128 = wants.iter().map(|&w| u128::from(w)).sum();
    let (num, den): (Vec<u128>, u128) = if total == 0 {
        (vec![u128::from(free); wants.len()], n)
    } else {
        (wants.iter().map(|&w| u128::from(free) * u128::from(w)).collect(), total)
    };
    let mut shares: Vec<u64> = num.iter().map(|x| (x / den) as u64).collect();
    let mut left = free - shares.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by(|&a, &b| (num[b] % den).cmp(&(num[a] % den)).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// The quota store one simulated engine sees.
#[derive(Debug)]
pub struct SimStore {
    place: Place,
    counting: Counting,
}

/// Where a replica's counts live.
#[derive(Debug)]
pub enum Place {
    /// One engine, its own store.
    Alone(MemoryStore),
    /// Strict replicas: one store shared by all, failing while it is down.
    Shared {
        /// The store.
        store: Arc<MemoryStore>,
        /// Whether it is down.
        with: Arc<Coordination>,
    },
    /// Cached, leased or unshared replicas: counts of its own, bounded as the mode says.
    Replica {
        /// This replica's own counts.
        own: Arc<MemoryStore>,
        /// The coordinator's last sync or leases.
        with: Arc<Coordination>,
        /// Which replica.
        index: usize,
    },
}

impl Place {
    /// The ceilings replica `index` may fill now in `bucket`, and, if they are tighter than
    /// the pool's, when they may loosen (the next sync or renewal).
    fn bounded(&self, bucket: BucketId, ceilings: &Ceilings) -> (Ceilings, Option<u64>) {
        let Self::Replica { with, index, .. } = self else { return (*ceilings, None) };
        let b = bucket.0 as usize;
        let mut s = with.state();
        let next = s.next_at;
        match with.mode {
            ReplicaMode::Cached => {
                let others = s.others[*index].get(b).copied().unwrap_or_default();
                let c = Ceilings(std::array::from_fn(|d| {
                    if ceilings.0[d] == u64::MAX {
                        u64::MAX
                    } else {
                        ceilings.0[d].saturating_sub(others[d])
                    }
                }));
                (c, Some(next))
            }
            ReplicaMode::Leased => {
                let demand = &mut s.demand[*index];
                if demand.len() <= b {
                    demand.resize(b + 1, 0);
                }
                demand[b] += 1;
                let count = with.count as u64;
                let lease = s.leases[*index].get(b).copied().flatten();
                let c = Ceilings(std::array::from_fn(|d| match (ceilings.0[d], lease) {
                    (u64::MAX, _) => u64::MAX,
                    (c, Some(l)) => c.min(l[d]),
                    // Before the first renewal: an equal share.
                    (c, None) => c / count,
                }));
                (c, Some(next))
            }
            ReplicaMode::Strict | ReplicaMode::Unshared => (*ceilings, None),
        }
    }

    fn store(&self) -> Result<&MemoryStore, StoreError> {
        match self {
            Self::Alone(s) => Ok(s),
            Self::Shared { with, .. } if with.is_down() => {
                Err(StoreError::Unavailable("the shared store is down (simulated)".into()))
            }
            Self::Shared { store, .. } => Ok(store),
            Self::Replica { own, .. } => Ok(own),
        }
    }
}

/// A shortfall under bounded ceilings may end at the next sync or renewal.
fn sooner(mut s: Shortfall, next: Option<u64>, bounded: &Ceilings, ceilings: &Ceilings) -> Shortfall {
    if let Some(next) = next {
        let d = s.dimension.index();
        if !s.cooling && bounded.0[d] < ceilings.0[d] {
            s.retry_at = Some(s.retry_at.map_or(Timestamp(next), |r| r.min(Timestamp(next))));
        }
    }
    s
}

impl Buckets for SimStore {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        match &self.place {
            Place::Alone(s) => s.bucket(key),
            Place::Shared { store, .. } => store.bucket(key),
            Place::Replica { own, .. } => own.bucket(key),
        }
    }
}

impl Place {
    /// Reserves `cost` in the counts kept here, bounded as the replica's mode says.
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        let (bounded, next) = self.bounded(bucket, ceilings);
        Ok(self.store()?.reserve(bucket, cost, &bounded, now)?.map_err(|s| sooner(s, next, &bounded, ceilings)))
    }

    /// Whether `cost` would be reserved now, leaving nothing counted (one thread decides, so
    /// a reservation taken back at once is a check).
    fn check(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        Ok(match self.reserve(bucket, cost, ceilings, now)? {
            Ok(g) => Ok(Grant { usage: self.store()?.refund(bucket, &g.reservation, now)?, ..g }),
            Err(s) => Err(s),
        })
    }
}

impl SimStore {
    /// A store at `place` that counts as `counting` says.
    pub(crate) fn new(place: Place, counting: Counting) -> Self {
        Self { place, counting }
    }

    /// Counts `cost` whatever the ceilings (a request that completed, under check-then-act).
    pub(crate) fn count(&self, bucket: BucketId, cost: Cost, now: Timestamp) -> Result<(), StoreError> {
        self.place.reserve(bucket, cost, &Ceilings([u64::MAX; 4]), now).map(|_| ())
    }
}

impl QuotaStore for SimStore {
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        match self.counting {
            Counting::Reserved => self.place.reserve(bucket, cost, ceilings, now),
            Counting::AfterTheFact => self.place.check(bucket, cost, ceilings, now),
            // Unlimited: only a cool-down stops a key.
            Counting::Nothing => self.place.check(bucket, Cost::one(0), &Ceilings([u64::MAX; 4]), now),
        }
    }

    fn reconcile(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> Result<Usage, StoreError> {
        match self.counting {
            Counting::Reserved => self.place.store()?.reconcile(bucket, r, actual, now),
            // Counted now, at completion, whatever the ceilings.
            Counting::AfterTheFact => {
                self.count(bucket, Cost { requests: r.requests, tokens: actual }, now)?;
                self.usage(bucket, now)
            }
            Counting::Nothing => self.usage(bucket, now),
        }
    }

    fn refund(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> Result<Usage, StoreError> {
        match self.counting {
            Counting::Reserved => self.place.store()?.refund(bucket, r, now),
            // Nothing was held.
            Counting::AfterTheFact | Counting::Nothing => self.usage(bucket, now),
        }
    }

    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.place.store()?.cool_down(bucket, dimension, until, now)
    }

    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        self.place.store()?.usage(bucket, now)
    }
}

/// Replicas of the engine and what couples them.
pub(super) struct Replicas {
    pub(super) def: ReplicasDef,
    pub(super) with: Arc<Coordination>,
    /// Cached, leased, unshared: each replica's own counts.
    pub(super) own: Vec<Arc<MemoryStore>>,
    /// Outages under way (they may overlap).
    pub(super) outages: u32,
    /// Round-trip jitter.
    pub(super) rng: rand_pcg::Pcg64,
}

/// The engines of a run: one over its own store, or one per replica as `[replicas]` says.
pub(super) fn engines(sc: &Scenario) -> Result<(Vec<SimEngine>, Option<Replicas>), SimError> {
    let clock = || -> Arc<dyn crate::engine::Clock> { Arc::new(ManualClock::new(sc.start)) };
    let counting = sc.gateway.counting();
    let Some(def) = sc.replicas.clone() else {
        let store = SimStore::new(Place::Alone(MemoryStore::new()), counting);
        return Ok((vec![build::engine_on(sc, clock(), store)?], None));
    };
    let with = Coordination::new(&def, sc.start.0 + def.interval_ms);
    let shared = Arc::new(MemoryStore::new());
    let own: Vec<Arc<MemoryStore>> = (0..def.count).map(|_| Arc::new(MemoryStore::new())).collect();
    let engines = (0..def.count as usize)
        .map(|index| {
            let store = match def.mode {
                ReplicaMode::Strict => Place::Shared { store: Arc::clone(&shared), with: Arc::clone(&with) },
                _ => Place::Replica { own: Arc::clone(&own[index]), with: Arc::clone(&with), index },
            };
            let store = SimStore::new(store, counting);
            build::engine_on(sc, clock(), store)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rng = rand_pcg::Pcg64::seed_from_u64(sc.seed ^ 0x05EE_D0F5_704E);
    Ok((engines, Some(Replicas { def, with, own, outages: 0, rng })))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_split_hands_out_every_unit_in_proportion() {
        assert_eq!(split(1, &[0, 0, 0, 0]), vec![1, 0, 0, 0]);
        assert_eq!(split(10, &[1, 1, 1, 1]), vec![3, 3, 2, 2]);
        assert_eq!(split(10, &[3, 1, 0, 0]), vec![8, 2, 0, 0]);
        assert_eq!(split(7, &[5, 0, 2]), vec![5, 0, 2]);
        assert_eq!(split(0, &[5, 1]), vec![0, 0]);
    }
}

//! The engine: for every request, pick a key and reserve quota on every dimension at once.
//!
//! Pure logic: no I/O, no async runtime, no clock. Every call takes `now`; a denial says when
//! to come back (`retry_at`), and the caller schedules — an event in the simulator, a sleep in
//! real time.
//!
//! - [`time`]: the time type and the Pacific calendar of daily quotas.
//! - [`limits`]: dimensions, limits, and the ceilings (safety margin, reserve) below them.
//! - [`pool`]: projects, keys and their states; buckets per model; capacity totals.
//! - [`store`]: the store trait — atomic reserve, reconcile, refund, cool down.
//! - [`memory`]: the in-memory store.
//! - [`strategy`]: round-robin, least-used, power-of-two-choices, headroom-weighted.
//! - [`estimate`]: token estimators.
//! - [`provider`]: reading 429 answers (quotaId, retryDelay).
//! - [`warn`]: early-warning rules and forecasts.

pub mod estimate;
pub mod limits;
pub mod memory;
pub mod pool;
pub mod provider;
mod redact;
pub mod store;
pub mod strategy;
pub mod time;
pub mod warn;

mod admit;
mod capacity;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub use admit::{AdmitError, Decision, Denial, DenyReason, Outcome, Priority, Request, Ticket};
pub use capacity::Capacity;
pub use estimate::{Chars4, Estimator, Prompt};
pub use limits::{Ceilings, Dimension, Limits};
pub use memory::MemoryStore;
pub use pool::{KeyId, KeySpec, KeyState, ModelSpec, PoolError, PoolEvent, PoolSpec, ProjectSpec, QuotaScope};
pub use provider::{parse_quota_error, QuotaExhausted};
pub use redact::redact;
pub use store::{BucketId, Grant, QuotaStore, Reservation, Shortfall, Usage};
pub use strategy::{Strategy, StrategyKind};
pub use time::{next_pacific_midnight, Timestamp, MINUTE_MS};

/// How admission counts usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AdmissionMode {
    /// Check and reserve every dimension in one atomic step; reconcile at settlement.
    #[default]
    Atomic,
    /// The reference mistake many gateways make: check current usage, count the request only
    /// when it completes. Concurrent requests race past the limits.
    CheckThenAct,
}

/// Which tokens TPM and TPD count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenBasis {
    /// Input tokens only (Gemini).
    #[default]
    Input,
    /// Input and output tokens (other providers).
    Total,
}

/// The engine's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Which bucket to try first.
    pub strategy: StrategyKind,
    /// Fraction of every limit kept for high-priority requests.
    pub reserve: f64,
    /// Fraction of every limit the engine never uses.
    pub safety: f64,
    /// Atomic admission, or the check-then-act reference.
    pub admission: AdmissionMode,
    /// Per project (right for Gemini), or per key (the reference mistake).
    pub scope: QuotaScope,
    /// What token limits count.
    pub basis: TokenBasis,
    /// Output tokens reserved with basis `total` when a request names no `max_output_tokens`
    /// (and, with a learned policy, until it has learned).
    pub output_reserve: u64,
    /// How output tokens are reserved with basis `total`.
    pub output_policy: estimate::OutputPolicy,
    /// Seed of the engine's own randomness (power-of-two choices, headroom weighting).
    pub seed: u64,
    /// Whether settlement replaces reserved tokens by the actual count (`false` is the
    /// reference that keeps every estimate, to show what reconciliation returns).
    pub reconcile: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::default(),
            reserve: 0.0,
            safety: 0.0,
            admission: AdmissionMode::Atomic,
            scope: QuotaScope::Project,
            basis: TokenBasis::Input,
            output_reserve: 1024,
            output_policy: estimate::OutputPolicy::Fixed,
            seed: 0,
            reconcile: true,
        }
    }
}

/// The engine's cached view of one bucket, for strategies: its counters, for at most
/// [`VIEW_TTL_MS`] or until they could fall on their own, whichever is later. Every store call returns fresh
/// counters, so the view follows this engine's own traffic without extra reads; other
/// replicas' traffic shows when the view is refreshed. A stale view only misguides the
/// choice, never admission, which the store decides.
#[derive(Debug, Default)]
struct View {
    /// Used amount per dimension; `u64::MAX` in the first while the bucket cools down.
    used: [AtomicU64; 4],
    until: AtomicU64,
}

/// How long a bucket's cached view serves strategies before it is read again from the store
/// (unless this engine's own calls refresh it sooner).
pub const VIEW_TTL_MS: u64 = 1_000;

/// The engine over a store `S`.
pub struct Engine<S: QuotaStore = MemoryStore> {
    config: EngineConfig,
    pool: pool::Pool,
    store: S,
    /// A strategy other than the built-in one the configuration names, if set.
    custom: Option<Box<dyn Strategy>>,
    estimator: Box<dyn Estimator>,
    outputs: estimate::OutputReserve,
    turn: AtomicUsize,
    rng: AtomicU64,
    /// Per bucket: the cached view.
    views: Vec<View>,
    /// Per model and priority: until when a full scan found no bucket for any request size.
    exhausted: Vec<[AtomicU64; 2]>,
    /// Per model and priority: why (the [`DenyReason`] code of that scan).
    exhausted_reason: Vec<[AtomicU64; 2]>,
    /// Per model and priority: the bucket that frees first.
    exhausted_bucket: Vec<[AtomicU64; 2]>,
}

impl<S: QuotaStore> Engine<S> {
    /// An engine over `store` for the pool `spec`.
    pub fn new(
        config: EngineConfig,
        spec: PoolSpec,
        mut store: S,
        estimator: Box<dyn Estimator>,
    ) -> Result<Self, PoolError> {
        let pool = pool::Pool::new(spec, config.scope, config.safety, config.reserve)?;
        store.ensure_buckets(pool.bucket_count());
        let models = pool.models.len();
        let views = (0..pool.bucket_count()).map(|_| View::default()).collect();
        let outputs = estimate::OutputReserve::new(config.output_policy, config.output_reserve, models);
        Ok(Self {
            custom: None,
            rng: AtomicU64::new(config.seed),
            config,
            pool,
            store,
            estimator,
            outputs,
            turn: AtomicUsize::new(0),
            views,
            exhausted: (0..models).map(|_| Default::default()).collect(),
            exhausted_reason: (0..models).map(|_| Default::default()).collect(),
            exhausted_bucket: (0..models).map(|_| Default::default()).collect(),
        })
    }

    /// Uses `strategy` instead of the built-in one the configuration names.
    pub fn with_strategy(mut self, strategy: Box<dyn Strategy>) -> Self {
        self.custom = Some(strategy);
        self
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The estimator in use.
    pub fn estimator(&self) -> &dyn Estimator {
        self.estimator.as_ref()
    }

    /// Index of model `name`.
    pub fn model(&self, name: &str) -> Option<usize> {
        self.pool.models.iter().position(|m| m.name == name)
    }

    /// The models, in index order.
    pub fn models(&self) -> &[ModelSpec] {
        &self.pool.models
    }

    /// The projects, in index order.
    pub fn projects(&self) -> &[ProjectSpec] {
        &self.pool.projects
    }

    /// Every key the pool has known, including removed and revoked ones.
    pub fn keys(&self) -> &[KeyState] {
        &self.pool.keys
    }

    /// The key with id `id`.
    pub fn key(&self, id: &str) -> Option<KeyId> {
        self.pool.key(id)
    }

    /// The (project, model) a bucket belongs to.
    pub fn bucket_owner(&self, bucket: BucketId) -> (usize, usize) {
        self.pool.bucket_owner(bucket)
    }

    /// The quota buckets that can serve `model` now, with their usable keys.
    pub fn groups(&self, model: usize) -> &[pool::Group] {
        &self.pool.groups[model]
    }

    /// What the engine may use of `bucket` at most (the high-priority ceilings).
    pub fn ceilings(&self, bucket: BucketId) -> &Ceilings {
        &self.pool.ceilings[bucket.0 as usize][1]
    }

    /// The counters of `bucket` now, read from the store.
    pub fn usage(&self, bucket: BucketId, now: Timestamp) -> Usage {
        self.store.usage(bucket, now)
    }

    /// The projects that can serve `model` now (one entry per quota bucket).
    pub fn serving_projects(&self, model: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.pool.groups[model].iter().map(|g| g.project)
    }

    /// Applies a pool event; capacity and candidates follow at once.
    pub fn apply(&mut self, event: PoolEvent) -> Result<(), PoolError> {
        self.pool.apply(event)?;
        self.store.ensure_buckets(self.pool.bucket_count());
        self.views = (0..self.pool.bucket_count()).map(|_| View::default()).collect();
        self.forget_exhaustion(None);
        Ok(())
    }

    /// Records fresh counters of `bucket` in its view.
    fn note(&self, bucket: BucketId, u: &Usage, now: Timestamp) {
        let v = &self.views[bucket.0 as usize];
        let cooling = u.cooling_until.is_some();
        let used = [if cooling { u64::MAX } else { u.minute_requests }, u.minute_tokens, u.day_requests, u.day_tokens];
        for (slot, x) in v.used.iter().zip(used) {
            slot.store(x, Ordering::Relaxed);
        }
        // Counters that fall on their own (window entries leaving) only make the view
        // understate headroom, which misguides nobody; refreshing at every expiry cost more
        // than the strategy. Other replicas' traffic shows within the TTL.
        v.until.store(now.0 + VIEW_TTL_MS, Ordering::Relaxed);
    }

    /// Normalised headroom of `bucket` for priority index `p`, from the view while it holds:
    /// the free fraction of the tightest dimension, zero while cooling down.
    fn headroom(&self, bucket: BucketId, p: usize, now: Timestamp) -> f64 {
        let b = bucket.0 as usize;
        let v = &self.views[b];
        if now.0 >= v.until.load(Ordering::Relaxed) {
            let u = self.store.usage(bucket, now);
            self.note(bucket, &u, now);
        }
        let (ceilings, inverse) = (&self.pool.ceilings[b][p].0, &self.pool.inverse[b][p]);
        let mut h = 1.0f64;
        for i in 0..4 {
            if inverse[i] != 0.0 {
                let used = v.used[i].load(Ordering::Relaxed);
                // Below 2^63 both fit an i64, whose conversion to f64 is one instruction.
                let free = ceilings[i].saturating_sub(used).min(i64::MAX as u64) as i64 as f64;
                // A zero ceiling has an infinite inverse: no headroom at all.
                let x = if inverse[i].is_infinite() { 0.0 } else { free * inverse[i] };
                h = h.min(x);
            }
        }
        h
    }

    fn next_random(&self) -> u64 {
        // SplitMix64 over a counter: deterministic for a given call order. A relaxed load and
        // store, not an atomic add: threads racing here may draw the same word, which only
        // repeats a choice, and the locked add cost as much as the rest of the strategy.
        let state = self.rng.load(Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.store(state, Ordering::Relaxed);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Forgets cached exhaustion of `model` (or of every model): something was freed.
    fn forget_exhaustion(&self, model: Option<usize>) {
        for (m, slots) in self.exhausted.iter().enumerate() {
            if model.is_none_or(|x| x == m) {
                for s in slots {
                    s.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! keysim's engine: for every request to a pool of Gemini API keys, pick a key and reserve
//! quota on every dimension of its project at once — or say when to come back.
//!
//! The core is pure: no I/O and no clock; every core call takes `now`, a denial says when to
//! come back (`retry_at`), and the caller schedules. Around it, what a service needs:
//! a [`Permit`] that returns its quota when dropped unsettled, a fair wait queue per model
//! ([`Engine::acquire`], feature `async`), pool changes through `&self`, and a fallible store
//! whose buckets are named by project and model.
//!
//! ```
//! use keysim_engine::{Engine, Limits, ModelSpec, Outcome, PoolSpec, ProjectSpec, KeySpec, Prompt, Request};
//! let flash = Limits { rpm: 10, tpm: 250_000, rpd: 250, tpd: None };
//! let engine = Engine::builder(PoolSpec {
//!     models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits: flash }],
//!     projects: vec![ProjectSpec { id: "proj-a".into(), limits: vec![Some(flash)] }],
//!     keys: vec![KeySpec { id: "key-1".into(), project: "proj-a".into() }],
//! })
//! .build()?;
//! let model = engine.model("gemini-2.5-flash").unwrap();
//! let permit = engine.try_acquire(&Request::new(model, Prompt::Text("Hello")))?;
//! // … send the request with the key `permit.key_id()` names, then:
//! permit.settle(Outcome::Success { input_tokens: 2, output_tokens: 10 })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - [`clock`]: where `now` comes from when the engine acts on its own.
//! - [`lifecycle`]: send, wait or give up — one request's next step, sans-IO.
//! - [`fair`]: the fair wait queue of one model, sans-IO.
//! - [`time`]: the time type and the Pacific calendar of daily quotas.
//! - [`limits`]: dimensions, limits, and the ceilings (safety margin, reserve) below them.
//! - [`pool`]: projects, keys and their states; buckets per model; capacity totals.
//! - [`store`]: the store traits — atomic reserve, reconcile, refund, cool down; answering at
//!   once ([`QuotaStore`], the simulator's) or awaited ([`AsyncStore`], Redis's: no worker
//!   ever blocks on a round trip). [`AnyStore`] is one chosen at run time.
//! - [`memory`]: the in-memory store.
//! - [`strategy`]: round-robin, least-used, power-of-two-choices, headroom-weighted.
//! - [`estimate`]: token estimators.
//! - [`provider`]: reading 429 answers (quotaId, retryDelay).
//! - [`warn`]: early-warning rules and forecasts.
//! - [`pool_file`] (feature `pool-file`): the pool sections of a TOML file, with diagnostics.
//! - [`permit`]: permits that settle themselves; [`health`]: back-offs, key probes, learned
//!   limits; [`redact`](mod@redact): how key ids appear in logs; [`setting`](mod@setting): named
//!   configuration choices.
//!
//! The root holds what a service needs — the engine and its settings, a request and its
//! answer, permits, the pool it is built from, the stores — and the modules the rest.

pub mod clock;
pub mod estimate;
pub mod fair;
pub mod lifecycle;
pub mod limits;
pub mod memory;
pub mod pool;
#[cfg(feature = "pool-file")]
pub mod pool_file;
pub mod provider;
pub mod redact;
pub mod store;
pub mod strategy;
pub mod time;
pub mod warn;

mod admit;
#[cfg(feature = "async")]
mod any;
mod capacity;
mod config;
pub mod degraded;
mod demand;
pub mod health;
pub mod permit;
mod reconcile;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod setting;
mod settle;
mod slots;
#[cfg(feature = "async")]
mod wait;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

// The root is what a service needs: the engine and its settings, a request and its answer,
// permits, the pool it is built from, a store. Everything else lives in its module (store
// traits and counters in `store`, the pool's inner types in `pool`, clocks in `clock`, …).
pub use admit::{AdmitError, Decision, Denial, DenyReason, Outcome, Priority, Request, Ticket};
#[cfg(feature = "async")]
pub use any::{AnyStore, Blocking};
pub use capacity::Capacity;
pub use config::{Builder, ConfigError};
pub use degraded::Degraded;
pub use estimate::Prompt;
pub use limits::{Dimension, Limits};
pub use memory::MemoryStore;
#[cfg(feature = "async")]
pub use permit::OwnedPermit;
pub use permit::{Permit, TryAcquireError};
pub use pool::{KeySpec, ModelSpec, PoolEvent, PoolSpec, ProjectSpec};
pub use provider::{parse_quota_error, UsageMetadata};
pub use reconcile::{PoolChanges, ReconcileError};
#[cfg(feature = "redis")]
pub use redis_store::{RedisConfig, RedisStore};
pub use store::StoreError;
pub use time::Timestamp;

// Names the engine's own modules reach by `crate::…`; services reach them by their modules.
pub(crate) use clock::Clock;
pub(crate) use estimate::{Chars4, Estimator};
pub(crate) use lifecycle::QueuePolicy;
pub(crate) use limits::Ceilings;
pub(crate) use pool::{Group, KeyId, QuotaScope};
pub(crate) use redact::redact;
pub(crate) use setting::Setting;
pub(crate) use store::{AsyncStore, BucketId, Buckets, QuotaStore, Usage};
pub(crate) use strategy::{Strategy, StrategyKind};
pub(crate) use time::{next_pacific_midnight, MINUTE_MS};
#[cfg(feature = "async")]
pub use wait::AcquireError;

/// Which tokens TPM and TPD count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenBasis {
    /// Input tokens only (Gemini).
    #[default]
    Input,
    /// Input and output tokens (other providers).
    Total,
}

setting!(TokenBasis { Input => "input", Total => "total" });

/// The engine's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Which bucket to try first.
    pub strategy: StrategyKind,
    /// Fraction of every limit kept for high-priority requests.
    pub reserve: f64,
    /// Fraction of every limit the engine never uses.
    pub safety: f64,
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
    /// How the engine backs off and probes when the provider misbehaves.
    pub health: health::HealthConfig,
    /// Whether cached input tokens (`cachedContentTokenCount`) count toward TPM. Google does
    /// not document it; `true` (the default) is the safe assumption: at worst it leaves the
    /// cached share of TPM unused.
    pub cached_tokens_count: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::default(),
            reserve: 0.0,
            safety: 0.0,
            scope: QuotaScope::Project,
            basis: TokenBasis::Input,
            output_reserve: 1024,
            output_policy: estimate::OutputPolicy::Fixed,
            seed: 0,
            reconcile: true,
            health: health::HealthConfig::default(),
            cached_tokens_count: true,
        }
    }
}

/// The engine's cached view of one bucket, for strategies. Every store call returns fresh
/// counters, so the view follows this engine's own traffic without extra reads; other
/// replicas' traffic (with a shared store) shows when the view is refreshed after
/// [`VIEW_TTL_MS`]. A stale view only misguides the choice, never admission, which the
/// store decides.
#[derive(Debug, Default)]
struct View {
    /// Used amount per dimension; `u64::MAX` in the first while the bucket cools down.
    used: [AtomicU64; 4],
    until: AtomicU64,
    /// The bucket's own turn among its keys, so that every key of a project serves.
    turn: AtomicUsize,
}

impl View {
    /// Records fresh counters.
    fn record(&self, u: &Usage, now: Timestamp) {
        let cooling = u.cooling_until.is_some();
        let used = [if cooling { u64::MAX } else { u.minute_requests }, u.minute_tokens, u.day_requests, u.day_tokens];
        for (slot, x) in self.used.iter().zip(used) {
            slot.store(x, Ordering::Relaxed);
        }
        // Counters that fall on their own (window entries leaving) only make the view
        // understate headroom, which misguides nobody; refreshing at every expiry cost more
        // than the strategy. Other replicas' traffic, and counters that fell, show within the
        // TTL.
        let until = now.0 + VIEW_TTL_MS;
        self.until.store(until, Ordering::Relaxed);
    }

    /// The next turn among the bucket's keys.
    fn key_turn(&self) -> usize {
        let turn = self.turn.load(Ordering::Relaxed);
        self.turn.store(turn.wrapping_add(1), Ordering::Relaxed);
        turn
    }
}

/// How long a bucket's cached view serves strategies before it is read again from the store
/// (unless this engine's own calls refresh it sooner).
pub const VIEW_TTL_MS: u64 = 1_000;

/// The engine over a store `S`. Share it by reference or in an `Arc`: every call takes
/// `&self`, pool changes included.
pub struct Engine<S = MemoryStore> {
    config: EngineConfig,
    pool: ArcSwap<pool::Pool>,
    /// Serialises pool changes (admissions never wait for it).
    changing: Mutex<()>,
    store: S,
    clock: Arc<dyn Clock>,
    /// A strategy other than the built-in one the configuration names, if set.
    custom: Option<Box<dyn Strategy>>,
    estimator: Box<dyn Estimator>,
    outputs: estimate::OutputReserve,
    turn: AtomicUsize,
    rng: AtomicU64,
    /// Per bucket id: the cached view.
    views: slots::Slots<View>,
    /// Per model and priority: until when a full scan found no bucket for any request size.
    exhausted: Vec<[AtomicU64; 2]>,
    /// Per model and priority: why (the [`DenyReason`] code of that scan).
    exhausted_reason: Vec<[AtomicU64; 2]>,
    /// Per model and priority: the bucket that frees first.
    exhausted_bucket: Vec<[AtomicU64; 2]>,
    /// Bumped by every forgetting of exhaustion: an admission that scanned an older pool or
    /// older counters does not cache its finding over a newer freeing.
    exhaustion_epoch: AtomicU64,
    /// Per model: the fair wait queue of [`Engine::acquire`].
    #[cfg(feature = "async")]
    queues: Vec<wait::Queue>,
    /// Breakers, disabled keys and their probes, learned limits.
    health: health::Health,
    /// Per model: requests that reached the engine in the last minute.
    demand: Vec<demand::Meter>,
    /// Settlements of owned permits under way in the background.
    #[cfg(feature = "async")]
    background: permit::Background,
}

impl<S: Buckets> Engine<S> {
    /// A request for `model` reached the engine at `now`: once per request where it first asks
    /// ([`Engine::acquire`] counts each call, so a request sent again after the provider
    /// refused it counts again, as it asks the pool again; a caller of [`Engine::admit`] that
    /// queues and retries by itself says so once). The warnings read it as the demand a pool
    /// was asked to carry; with replicas, each engine counts what reaches it.
    pub fn note_arrival(&self, model: usize, now: Timestamp) {
        if let Some(m) = self.demand.get(model) {
            m.note(now);
        }
    }

    /// Requests for `model` that reached the engine in the minute up to `now`.
    pub fn demand(&self, model: usize, now: Timestamp) -> u64 {
        self.demand.get(model).map_or(0, |m| m.last_minute(now))
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The outcome of a successful answer with `usage`, counted as this engine's settings say
    /// (cached input tokens included or not).
    pub fn success(&self, usage: &UsageMetadata) -> Outcome {
        Outcome::Success {
            input_tokens: usage.counted_input(self.config.cached_tokens_count),
            output_tokens: usage.output(),
        }
    }

    /// What the engine has done about the pool's health: keys disabled, probed and revived,
    /// limits learned, model back-offs, and the events.
    pub fn health(&self) -> health::HealthReport {
        self.health.report()
    }

    /// The pool's health as it stands: keys disabled, models backing off (cheap: no events).
    pub fn health_now(&self) -> health::HealthNow {
        self.health.now()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock the engine reads when it acts on its own.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The estimator in use.
    pub fn estimator(&self) -> &dyn Estimator {
        self.estimator.as_ref()
    }

    /// The pool as it is now: a snapshot that later changes do not alter.
    pub fn pool(&self) -> Arc<pool::Pool> {
        self.pool.load_full()
    }

    /// Index of model `name`.
    pub fn model(&self, name: &str) -> Option<usize> {
        self.pool.load().model(name)
    }

    /// The key with id `id`.
    pub fn key(&self, id: &str) -> Option<KeyId> {
        self.pool.load().key(id)
    }

    /// The (project, model) a bucket belongs to.
    pub fn bucket_owner(&self, bucket: BucketId) -> (usize, usize) {
        self.pool.load().bucket_owner(bucket)
    }

    /// Applies a pool event; capacity and candidates follow at once. Admissions under way
    /// finish on the pool they started with; none waits for the change.
    pub fn apply(&self, event: PoolEvent) -> Result<(), ConfigError> {
        let changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let gone = match &event {
            PoolEvent::Remove(id) | PoolEvent::Revoke(id) => self.pool.load().key(id),
            _ => None,
        };
        let next = self.pool.load().apply(event, &mut |k| self.store.bucket(k)).map_err(ConfigError::from)?;
        self.grow_views(&next);
        self.pool.store(Arc::new(next));
        // Waiters are served without the change lock: serving admits, and nothing an
        // admission does may wait for a pool change.
        drop(changing);
        if let Some(k) = gone {
            self.health.forget_key(k);
        }
        self.forget_exhaustion(None);
        #[cfg(feature = "async")]
        self.wake_queues(None);
        Ok(())
    }

    /// Makes sure every bucket of `pool` has a view.
    fn grow_views(&self, pool: &pool::Pool) {
        if let Some(last) = pool.buckets.len().checked_sub(1) {
            self.views.ensure(last);
        }
    }

    /// Records fresh counters of `bucket` in its view.
    fn note(&self, bucket: BucketId, u: &Usage, now: Timestamp) {
        self.views[bucket.0 as usize].record(u, now);
    }

    /// Normalised headroom of `bucket` for priority index `p`, from the view while it holds
    /// (`refresh` reads it again once it has expired): the free fraction of the tightest
    /// dimension, zero while cooling down.
    fn headroom(
        &self,
        limits: &pool::BucketLimits,
        bucket: BucketId,
        p: usize,
        now: Timestamp,
        refresh: &dyn Fn(BucketId) -> Option<Usage>,
    ) -> f64 {
        let v = &self.views[bucket.0 as usize];
        if now.0 >= v.until.load(Ordering::Relaxed) {
            // A store that cannot answer leaves the view as it was; admission will say.
            if let Some(u) = refresh(bucket) {
                self.note(bucket, &u, now);
            }
        }
        let (ceilings, inverse) = (&limits.ceilings[p].0, &limits.inverse[p]);
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
        self.exhaustion_epoch.fetch_add(1, Ordering::SeqCst);
        for (m, slots) in self.exhausted.iter().enumerate() {
            if model.is_none_or(|x| x == m) {
                for s in slots {
                    // Read first: most of the time nothing is cached, and a store would take
                    // the line from every other core.
                    if s.load(Ordering::Relaxed) != 0 {
                        s.store(0, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

impl<S: QuotaStore> Engine<S> {
    /// The counters of `bucket` now, read from the store.
    pub fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        self.store.usage(bucket, now)
    }
}

impl<S: AsyncStore> Engine<S> {
    /// The counters of every bucket serving `model` now (one round trip on a shared store),
    /// by bucket: what [`Engine::capacity_with`] and the warner's evaluation read. Each
    /// answer also refreshes the bucket's view for strategies.
    pub async fn usages_async(&self, model: usize, now: Timestamp) -> Vec<(BucketId, Result<Usage, StoreError>)> {
        let buckets: Vec<BucketId> =
            self.pool.load().groups.get(model).map(|gs| gs.iter().map(|g| g.bucket).collect()).unwrap_or_default();
        let answers = match self.store.usages_async(&buckets, now).await {
            Ok(a) => a,
            Err(e) => buckets.iter().map(|_| Err(e.clone())).collect(),
        };
        for (b, u) in buckets.iter().zip(&answers) {
            if let Ok(u) = u {
                self.note(*b, u, now);
            }
        }
        buckets.into_iter().zip(answers).collect()
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;

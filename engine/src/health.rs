//! Keeping the pool healthy through the provider's misbehaviour: each answer is classified,
//! and only what it says is acted on.
//!
//! - A **capacity** refusal (a 429 with no details, a 503, a timeout) is the provider's
//!   trouble, not a key's: the model backs off pool-wide (jittered, exponential), a circuit
//!   breaker that half-opens with one probe request; no key is disabled.
//! - A **rejected key** (400 `API_KEY_INVALID`, 403 `PERMISSION_DENIED`) disables that key
//!   only — its project's other keys keep serving — and it is probed again with one request
//!   after a cool-down that doubles with each failed probe; a probe that is not rejected
//!   revives it.
//! - A quota 429 naming a different limit than the pool's teaches the pool the new limit.
//!
//! The admission hot path reads one atomic per model (and one per engine for due probes);
//! everything else happens on the slow path, under a lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::limits::Dimension;
use super::pool::KeyId;
use super::time::Timestamp;

/// How quickly the engine backs off and probes. Times in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// A model's first back-off after a capacity refusal; it doubles with each further one.
    pub backoff_ms: u64,
    /// The longest back-off.
    pub backoff_max_ms: u64,
    /// A bucket's back-off after a quota 429 that names no dimension (jittered ± half).
    pub unspecified_ms: u64,
    /// How long a key disabled by a rejection waits for its first probe; it doubles with each
    /// failed probe.
    pub probe_after_ms: u64,
    /// The longest wait between probes.
    pub probe_max_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            backoff_ms: 1_000,
            backoff_max_ms: 60_000,
            unspecified_ms: 10_000,
            probe_after_ms: 60_000,
            probe_max_ms: 3_600_000,
        }
    }
}

/// Something the engine did about the pool's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// A key was disabled because the provider rejected it.
    KeyDisabled {
        /// When.
        at: Timestamp,
        /// The key's id.
        key: String,
        /// Until its next probe.
        probe_at: Timestamp,
    },
    /// A disabled key was let through for one probe request.
    KeyProbed {
        /// When.
        at: Timestamp,
        /// The key's id.
        key: String,
    },
    /// A probed key answered without rejection and serves again.
    KeyRevived {
        /// When.
        at: Timestamp,
        /// The key's id.
        key: String,
    },
    /// A model backs off pool-wide after a capacity refusal.
    ModelBackoff {
        /// When.
        at: Timestamp,
        /// The model's index.
        model: usize,
        /// Until when.
        until: Timestamp,
    },
    /// A model serves again after its back-off (its probe succeeded).
    ModelRecovered {
        /// When.
        at: Timestamp,
        /// The model's index.
        model: usize,
    },
    /// A quota 429 named a different limit than the pool's: the pool follows it.
    LimitLearned {
        /// When.
        at: Timestamp,
        /// The project's id.
        project: String,
        /// The model's name.
        model: String,
        /// The dimension.
        dimension: Dimension,
        /// The limit the pool had.
        from: u64,
        /// The limit the provider enforced.
        to: u64,
    },
}

impl std::fmt::Display for HealthEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyDisabled { key, .. } => write!(f, "key {} disabled: rejected by the provider", crate::redact(key)),
            Self::KeyProbed { key, .. } => write!(f, "key {} probed", crate::redact(key)),
            Self::KeyRevived { key, .. } => write!(f, "key {} revived", crate::redact(key)),
            Self::ModelBackoff { model, until, at } => {
                write!(f, "model #{model} backs off for {} ms (provider capacity)", until.0.saturating_sub(at.0))
            }
            Self::ModelRecovered { model, .. } => write!(f, "model #{model} serves again"),
            Self::LimitLearned { project, model, dimension, from, to, .. } => {
                write!(f, "{model} {} {from} → {to} for {project}", dimension.to_string().to_uppercase())
            }
        }
    }
}

/// What the engine has done about the pool's health so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Keys disabled after a rejection (each time).
    pub keys_disabled: u64,
    /// Probe requests let through.
    pub keys_probed: u64,
    /// Keys revived by a probe.
    pub keys_revived: u64,
    /// Limits learned from 429s.
    pub limits_learned: u64,
    /// Back-offs of a model after capacity refusals.
    pub model_backoffs: u64,
    /// The events, oldest first (the last [`EVENTS_KEPT`]).
    pub events: Vec<HealthEvent>,
}

/// The pool's health as it stands, for warnings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthNow {
    /// Keys disabled after a rejection, with their failed probes so far.
    pub disabled: Vec<(KeyId, u32)>,
    /// Per model: capacity refusals (capacity 429s, 503s, timeouts) so far.
    pub capacity_refusals: Vec<u64>,
    /// Per model: answers so far, served or refused for want of capacity.
    pub answers: Vec<u64>,
    /// Limits learned so far (see [`HealthReport::events`] for which).
    pub limits_learned: u64,
}

/// Events kept for [`HealthReport::events`].
pub const EVENTS_KEPT: usize = 1_000;

/// A model's circuit breaker.
#[derive(Clone, Copy, Debug, Default)]
struct Breaker {
    /// Capacity refusals since it last served.
    failures: u32,
    /// Until when it is open (0: closed).
    open_until: u64,
    /// Half-open: the one probe is out.
    probe_out: bool,
    /// Capacity refusals of the model, ever.
    refusals: u64,
}

/// A key disabled by a rejection.
#[derive(Clone, Copy, Debug)]
struct Sick {
    /// Failed probes so far.
    strikes: u32,
    /// When the next probe is due.
    probe_at: u64,
    /// The probe request is out.
    probe_out: bool,
}

#[derive(Debug, Default)]
struct State {
    breakers: Vec<Breaker>,
    sick: BTreeMap<KeyId, Sick>,
    report: HealthReport,
}

/// The engine's health bookkeeping.
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) config: HealthConfig,
    /// Per model: 0 while its breaker is closed (the fast path), else non-zero.
    gates: Vec<AtomicU64>,
    /// Keys disabled by a rejection (checked when a key is chosen).
    sick: AtomicU64,
    /// Per model: answers served or refused for want of capacity (for the share refused).
    answers: Vec<AtomicU64>,
    state: Mutex<State>,
}

/// What the gate says about an admission of a model.
pub(crate) enum Gate {
    /// Go ahead.
    Open,
    /// Go ahead: this request is the breaker's probe.
    Probe,
    /// Backing off until then.
    Closed(Timestamp),
}

impl Health {
    pub(crate) fn new(config: HealthConfig, models: usize) -> Self {
        Self {
            config,
            gates: (0..models).map(|_| AtomicU64::new(0)).collect(),
            answers: (0..models).map(|_| AtomicU64::new(0)).collect(),
            sick: AtomicU64::new(0),
            state: Mutex::new(State { breakers: vec![Breaker::default(); models], ..State::default() }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(state: &mut State, e: HealthEvent) {
        if state.report.events.len() == EVENTS_KEPT {
            state.report.events.remove(0);
        }
        state.report.events.push(e);
    }

    /// Whether `model` may be admitted at `now` (one relaxed load while all is well).
    #[inline]
    pub(crate) fn gate(&self, model: usize, now: Timestamp) -> Gate {
        if self.gates[model].load(Ordering::Relaxed) == 0 {
            return Gate::Open;
        }
        let mut s = self.state();
        let b = &mut s.breakers[model];
        if b.open_until == 0 {
            return Gate::Open;
        }
        if now.0 < b.open_until {
            return Gate::Closed(Timestamp(b.open_until));
        }
        if b.probe_out {
            // Half-open with its probe out: the others wait for its answer, a back-off at most.
            return Gate::Closed(now.plus(self.config.backoff_ms));
        }
        b.probe_out = true;
        Gate::Probe
    }

    /// The probe of `model` was not sent after all (denied, or dropped unsent): the next
    /// request probes instead.
    pub(crate) fn release_probe(&self, model: usize) {
        if self.gates[model].load(Ordering::Relaxed) != 0 {
            self.state().breakers[model].probe_out = false;
        }
    }

    /// The provider served `model`: its breaker closes.
    #[inline]
    pub(crate) fn served(&self, model: usize, now: Timestamp) {
        self.answers[model].fetch_add(1, Ordering::Relaxed);
        if self.gates[model].load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut s = self.state();
        if s.breakers[model].open_until != 0 {
            s.breakers[model] = Breaker { refusals: s.breakers[model].refusals, ..Breaker::default() };
            self.gates[model].store(0, Ordering::Relaxed);
            Self::log(&mut s, HealthEvent::ModelRecovered { at: now, model });
        }
    }

    /// The provider refused `model` for want of capacity: it backs off, longer each time,
    /// with `jitter` in [0, 1) spreading replicas apart. Returns until when.
    pub(crate) fn unavailable(&self, model: usize, now: Timestamp, jitter: f64) -> Timestamp {
        self.answers[model].fetch_add(1, Ordering::Relaxed);
        let mut s = self.state();
        let b = &mut s.breakers[model];
        b.failures = b.failures.saturating_add(1);
        b.refusals += 1;
        let base = self.config.backoff_ms.saturating_mul(1 << (b.failures - 1).min(20)).min(self.config.backoff_max_ms);
        // Between three quarters and five quarters of the step.
        let wait = (base as f64 * (0.75 + 0.5 * jitter)) as u64;
        let until = now.plus(wait.max(1)).max(Timestamp(b.open_until));
        b.open_until = until.0;
        b.probe_out = false;
        self.gates[model].store(1, Ordering::Relaxed);
        s.report.model_backoffs += 1;
        Self::log(&mut s, HealthEvent::ModelBackoff { at: now, model, until });
        until
    }

    /// Whether `key` may carry a request now: `None` if not (disabled and its probe not due,
    /// or its probe already out: choose another key), `Some(true)` if this request is its
    /// probe, `Some(false)` for an ordinary request. One relaxed load while no key is sick.
    /// Disabled keys stay in the pool (health never changes the pool, so admission never
    /// waits for a pool change): they are skipped here.
    #[inline]
    pub(crate) fn take_key(&self, key: KeyId, id: impl FnOnce() -> String, now: Timestamp) -> Option<bool> {
        if self.sick.load(Ordering::Relaxed) == 0 {
            return Some(false);
        }
        let mut s = self.state();
        let Some(k) = s.sick.get_mut(&key) else { return Some(false) };
        if k.probe_out || now.0 < k.probe_at {
            return None;
        }
        k.probe_out = true;
        s.report.keys_probed += 1;
        Self::log(&mut s, HealthEvent::KeyProbed { at: now, key: id() });
        Some(true)
    }

    /// The probe on `key` was answered without rejecting the key (or, `sent` false, never
    /// went out): the key revives, or probes again.
    pub(crate) fn probe_answered(&self, key: KeyId, sent: bool, id: impl FnOnce() -> String, now: Timestamp) {
        let mut s = self.state();
        let Some(k) = s.sick.get_mut(&key) else { return };
        if !sent {
            k.probe_out = false;
            return;
        }
        s.sick.remove(&key);
        self.sick.fetch_sub(1, Ordering::Relaxed);
        s.report.keys_revived += 1;
        Self::log(&mut s, HealthEvent::KeyRevived { at: now, key: id() });
    }

    /// The provider rejected `key` (`probe`: on its probe): it carries nothing until its next
    /// probe, which waits longer after each failed one.
    pub(crate) fn key_rejected(&self, key: KeyId, probe: bool, id: String, now: Timestamp) {
        let mut s = self.state();
        let strikes = match s.sick.get(&key) {
            // A probe that failed: wait longer.
            Some(k) if probe => k.strikes + 1,
            // Already disabled (other requests were out when it was): nothing new.
            Some(_) => return,
            None => {
                self.sick.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        let wait = self.config.probe_after_ms.saturating_mul(1 << strikes.min(20)).min(self.config.probe_max_ms);
        let probe_at = now.plus(wait);
        s.sick.insert(key, Sick { strikes, probe_at: probe_at.0, probe_out: false });
        s.report.keys_disabled += 1;
        Self::log(&mut s, HealthEvent::KeyDisabled { at: now, key: id, probe_at });
    }

    /// `key` left the pool (removed, revoked): nothing to probe any more.
    pub(crate) fn forget_key(&self, key: KeyId) {
        if self.sick.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.state().sick.remove(&key).is_some() {
            self.sick.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A limit the provider enforces, learned from a 429.
    pub(crate) fn limit_learned(&self, e: HealthEvent) {
        let mut s = self.state();
        s.report.limits_learned += 1;
        Self::log(&mut s, e);
    }

    pub(crate) fn report(&self) -> HealthReport {
        self.state().report.clone()
    }

    /// The keys disabled now, if any (one relaxed load while none is).
    pub(crate) fn disabled_keys(&self) -> Option<Vec<KeyId>> {
        if self.sick.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.state().sick.keys().copied().collect())
    }

    pub(crate) fn now(&self) -> HealthNow {
        let s = self.state();
        HealthNow {
            disabled: s.sick.iter().map(|(k, sick)| (*k, sick.strikes)).collect(),
            capacity_refusals: s.breakers.iter().map(|b| b.refusals).collect(),
            answers: self.answers.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
            limits_learned: s.report.limits_learned,
        }
    }
}

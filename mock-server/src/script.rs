//! What the provider does on its own, over time, that no client asked for: spells of failures
//! (capacity 429s, 503s, 500s, timeouts), keys suspended, deleted and revived, limits changed
//! without notice; and how it answers while doing it (the shape of its quota 429s, whether
//! cached input tokens count toward TPM).
//!
//! One script drives both the simulator (virtual time, ms after the run's start) and the fake
//! hosts (real time, ms after the first request the fake answers), so that a scenario's
//! provider misbehaves the same way in `keysim run` and against `keysim mock`.

use crate::body::QuotaBody;
use crate::judge::{Judge, ModelQuota};

/// What a spell of failures answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StormKind {
    /// 429 `RESOURCE_EXHAUSTED` with no details: Google is short of capacity, no quota is.
    #[default]
    Capacity,
    /// 503 `UNAVAILABLE` ("The model is overloaded").
    Overloaded,
    /// 500 `INTERNAL`.
    Internal,
    /// No answer at all: the client gives up after the storm's `timeout`.
    Timeout,
}

impl StormKind {
    /// Every kind, by scenario name.
    pub const ALL: [(&'static str, Self); 4] = [
        ("capacity", Self::Capacity),
        ("overloaded", Self::Overloaded),
        ("internal", Self::Internal),
        ("timeout", Self::Timeout),
    ];

    /// Its scenario name, which is also the failure's cause in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Capacity => "capacity-429",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
            Self::Timeout => "timeout",
        }
    }
}

/// A spell of failures: from `at_ms` for `for_ms`, a `rate` share of requests, pool-wide, fail
/// as `kind` says. Failures inside one spell are correlated in time, as real outages are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Storm {
    /// Start, ms after the script's start.
    pub at_ms: u64,
    /// Length.
    pub for_ms: u64,
    /// Share of requests that fail meanwhile.
    pub rate: f64,
    /// How they fail.
    pub kind: StormKind,
    /// For [`StormKind::Timeout`]: how long a client waits before it gives up.
    pub timeout_ms: u64,
}

impl Storm {
    /// Whether `t` (ms after the start) falls inside the spell.
    pub fn covers(&self, t: u64) -> bool {
        t >= self.at_ms && t < self.at_ms.saturating_add(self.for_ms)
    }
}

/// A uniform draw in [0, 1) from a request's number and a seed, using no random stream (the
/// same every run, whatever else is drawn): SplitMix64.
pub fn draw(id: u64, seed: u64) -> f64 {
    let mut z = (id ^ seed.rotate_left(17)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Something the provider does on its own, unknown to any engine until it answers.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderEvent {
    /// A key is suspended: 403 `PERMISSION_DENIED`.
    Suspend(String),
    /// A key is deleted: 400 `API_KEY_INVALID`.
    Invalidate(String),
    /// A suspended or deleted key is valid again.
    Revive(String),
    /// A project's limits for a model change (indices of the project and the model).
    Limits {
        /// The project's index.
        project: usize,
        /// The model's index.
        model: usize,
        /// The new limits.
        quota: ModelQuota,
    },
}

impl ProviderEvent {
    /// The provider does it: `judge` changes.
    pub fn apply(&self, judge: &mut Judge) {
        match self {
            Self::Suspend(key) => judge.suspend_key(key),
            Self::Invalidate(key) => judge.delete_key(key),
            Self::Revive(key) => {
                judge.revive_key(key);
            }
            Self::Limits { project, model, quota } => judge.set_limits(*project, *model, quota.clone()),
        }
    }
}

/// A provider event and its time.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderEventAt {
    /// Milliseconds after the start.
    pub at_ms: u64,
    /// What happens.
    pub event: ProviderEvent,
}

/// Cached input tokens (`usageMetadata.cachedContentTokenCount`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CachedTokens {
    /// Share of each prompt's tokens served from the cache.
    pub share: f64,
    /// Whether they count toward TPM (Google does not document it; `promptTokenCount` includes
    /// them either way).
    pub counted: bool,
}

impl Default for CachedTokens {
    /// Nothing cached; were anything, it would count (the safe assumption).
    fn default() -> Self {
        Self { share: 0.0, counted: true }
    }
}

impl CachedTokens {
    /// The cached part of a prompt of `input` tokens.
    pub fn of(&self, input: u64) -> u64 {
        ((input as f64 * self.share).floor() as u64).min(input)
    }

    /// The tokens of a prompt of `input` tokens that count toward TPM.
    pub fn judged(&self, input: u64) -> u64 {
        if self.counted {
            input
        } else {
            input - self.of(input)
        }
    }
}

/// Everything the provider does on its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// Spells of failures.
    pub storms: Vec<Storm>,
    /// Events, in time order.
    pub events: Vec<ProviderEventAt>,
    /// The shape of quota 429 bodies.
    pub quota_body: QuotaBody,
    /// Cached input tokens.
    pub cached: CachedTokens,
}

impl Script {
    /// The spell request `id` falls in at `t` (ms after the start), if it is one of the spell's
    /// share; the first such spell listed wins.
    pub fn storm(&self, id: u64, seed: u64, t: u64) -> Option<&Storm> {
        self.storms.iter().find(|s| s.covers(t) && draw(id, seed) < s.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_cover_their_spell_and_their_share() {
        let s = Storm { at_ms: 1_000, for_ms: 500, rate: 0.25, kind: StormKind::Overloaded, timeout_ms: 0 };
        assert!(!s.covers(999) && s.covers(1_000) && s.covers(1_499) && !s.covers(1_500));
        let script = Script { storms: vec![s], ..Script::default() };
        let hit = (0..10_000).filter(|&id| script.storm(id, 7, 1_200).is_some()).count();
        assert!((2_300..2_700).contains(&hit), "{hit} of 10000 in a 25 % storm");
        assert!((0..1_000).all(|id| script.storm(id, 7, 2_000).is_none()));
    }

    #[test]
    fn cached_tokens_count_only_when_counted() {
        let c = CachedTokens { share: 0.4, counted: false };
        assert_eq!((c.of(1_000), c.judged(1_000)), (400, 600));
        assert_eq!(CachedTokens { counted: true, ..c }.judged(1_000), 1_000);
    }
}

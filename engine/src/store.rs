//! The store: where quota usage lives, and the one place that decides admission atomically.
//!
//! The engine proposes a bucket and the ceilings it may fill; the store checks every dimension
//! and reserves on all of them in one step, or on none. An in-memory store serves one process;
//! a shared store (Redis) serves several replicas with the same contract, each call being one
//! round trip.

use super::limits::{Ceilings, Dimension};
use super::time::Timestamp;

/// Dense index of a quota bucket: one (project, model), or one (key, model) in key scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId(pub u32);

/// What one admission holds in a bucket, to be reconciled or refunded at settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The bucket's sequence number of this entry.
    pub seq: u64,
    /// When it was counted.
    pub at: Timestamp,
    /// The daily period it was counted in (the period's end).
    pub day_ends: Timestamp,
    /// Tokens counted for it.
    pub tokens: u64,
}

/// A successful reservation and the bucket's counters right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// What to reconcile or refund at settlement.
    pub reservation: Reservation,
    /// The bucket's counters, this reservation included.
    pub usage: Usage,
}

/// Why a bucket cannot take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The dimension that frees last.
    pub dimension: Dimension,
    /// Whether the bucket is cooling down after a 429 on that dimension.
    pub cooling: bool,
    /// When the request would fit, if nothing else is admitted meanwhile; `None` if it never
    /// fits under these ceilings.
    pub retry_at: Option<Timestamp>,
    /// The bucket's counters at the time of the refusal.
    pub usage: Usage,
}

/// A bucket's counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests in the last minute.
    pub minute_requests: u64,
    /// Tokens in the last minute.
    pub minute_tokens: u64,
    /// Requests in the current Pacific day.
    pub day_requests: u64,
    /// Tokens in the current Pacific day.
    pub day_tokens: u64,
    /// When the oldest entry of the minute window leaves it, if any.
    pub minute_frees_at: Option<Timestamp>,
    /// When the current Pacific day ends.
    pub day_ends: Timestamp,
    /// Until when the bucket cools down, if it does.
    pub cooling_until: Option<Timestamp>,
}

impl Usage {
    /// Used amount of one dimension.
    pub fn get(&self, d: Dimension) -> u64 {
        match d {
            Dimension::Rpm => self.minute_requests,
            Dimension::Tpm => self.minute_tokens,
            Dimension::Rpd => self.day_requests,
            Dimension::Tpd => self.day_tokens,
        }
    }

    /// Until when these counters can only grow (nothing leaves a window, no day ends, no
    /// cool-down ends before then): how long a cached view of them stays conservative.
    pub fn steady_until(&self) -> Timestamp {
        let minute = self.minute_frees_at.unwrap_or(Timestamp(u64::MAX));
        let cooling = self.cooling_until.unwrap_or(Timestamp(u64::MAX));
        minute.min(self.day_ends).min(cooling)
    }

    /// The fraction of `ceilings` still free on the tightest dimension, in `[0, 1]`
    /// (zero while cooling down).
    pub fn headroom(&self, ceilings: &Ceilings) -> f64 {
        if self.cooling_until.is_some() {
            return 0.0;
        }
        Dimension::ALL
            .iter()
            .map(|&d| {
                let c = ceilings.get(d);
                if c == u64::MAX {
                    1.0
                } else if c == 0 {
                    0.0
                } else {
                    c.saturating_sub(self.get(d)) as f64 / c as f64
                }
            })
            .fold(1.0, f64::min)
    }
}

/// Quota state shared by every admission. Implementations must make [`QuotaStore::reserve`]
/// atomic across all dimensions of a bucket and across concurrent callers.
pub trait QuotaStore: Send + Sync {
    /// Makes sure buckets `0..count` exist.
    fn ensure_buckets(&mut self, count: usize);

    /// Counts one request of `tokens` tokens in `bucket` if every dimension stays within
    /// `ceilings` and the bucket is not cooling down; otherwise counts nothing.
    /// Returns the bucket's counters after the call, as every mutating call does, so that the
    /// engine's view of the bucket stays fresh without another round trip.
    fn reserve(&self, bucket: BucketId, tokens: u64, ceilings: &Ceilings, now: Timestamp) -> Result<Grant, Shortfall>;

    /// Whether [`QuotaStore::reserve`] would succeed now, without counting anything.
    fn check(&self, bucket: BucketId, tokens: u64, ceilings: &Ceilings, now: Timestamp) -> Result<Usage, Shortfall>;

    /// Replaces a reservation's token count by the actual one.
    fn reconcile(&self, bucket: BucketId, reservation: &Reservation, actual_tokens: u64, now: Timestamp) -> Usage;

    /// Takes a reservation back, as if it had never been made.
    fn refund(&self, bucket: BucketId, reservation: &Reservation, now: Timestamp) -> Usage;

    /// Counts a request after the fact, without any check (the `check-then-act` reference mode).
    fn record(&self, bucket: BucketId, tokens: u64, now: Timestamp) -> Usage;

    /// Stops admissions on `dimension` of `bucket` until `until`.
    fn cool_down(&self, bucket: BucketId, dimension: Dimension, until: Timestamp);

    /// The bucket's counters at `now`.
    fn usage(&self, bucket: BucketId, now: Timestamp) -> Usage;
}

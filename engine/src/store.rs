//! The store: where quota usage lives, and the one place that decides admission atomically.
//!
//! The engine proposes a bucket and the ceilings it may fill; the store checks every dimension
//! and reserves on all of them in one step, or on none. An in-memory store serves one process;
//! a shared store (Redis) serves several replicas with the same contract, each call being one
//! round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::limits::{Ceilings, Dimension};
use super::time::Timestamp;

/// A quota bucket's stable identity: the project's id (or `key:<id>` in key scope) and the
/// model's name. Every replica names a bucket the same way, whatever order its
/// configuration lists projects in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// The project's id, or `key:<key id>` in key scope.
    pub owner: String,
    /// The model's name.
    pub model: String,
}

/// A store's local handle of a bucket, handed out by [`Buckets::bucket`]: dense, so that
/// the in-memory store indexes it directly. Only meaningful to the store that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId(pub u32);

/// The store could not answer. Admission fails closed on it: the request is denied with
/// reason `store-unavailable`, and nothing is sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (connection refused, reset, not ready).
    #[error("the quota store is unreachable: {0}")]
    Unavailable(String),
    /// The store did not answer within its deadline.
    #[error("the quota store did not answer within {0:?}")]
    TimedOut(Duration),
    /// The store answered something this engine does not understand (another version).
    #[error("the quota store answered unexpectedly: {0}")]
    Protocol(String),
}

/// What an admission asks a bucket for: requests (one, or a batch's N, as Gemini counts a
/// `batchEmbedContents` of N texts) and the tokens of all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Requests counted against RPM and RPD (at least one).
    pub requests: u64,
    /// Tokens counted against TPM and TPD.
    pub tokens: u64,
}

impl Cost {
    /// One request of `tokens` tokens.
    pub fn one(tokens: u64) -> Self {
        Self { requests: 1, tokens }
    }
}

/// What one admission holds in a bucket, to be reconciled or refunded at settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The bucket's sequence number of this entry (a batch's first; the others follow it).
    pub seq: u64,
    /// When it was counted.
    pub at: Timestamp,
    /// The daily period it was counted in (the period's end).
    pub day_ends: Timestamp,
    /// Tokens counted for it.
    pub tokens: u64,
    /// Requests counted for it (a batch's N).
    pub requests: u64,
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

/// A store behind a pointer is a store: boxed, so that a service can choose one at run time
/// (`Engine<Box<dyn QuotaStore>>`); shared, so that engines in one process can share one
/// (`Engine<Arc<MemoryStore>>`).
macro_rules! forward_store {
    ($($ptr:ident),*) => {$(
        impl<T: Buckets + ?Sized> Buckets for $ptr<T> {
            fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
                (**self).bucket(key)
            }
        }

        impl<T: QuotaStore + ?Sized> QuotaStore for $ptr<T> {

    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        (**self).reserve(bucket, cost, ceilings, now)
    }

    fn reconcile(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> Result<Usage, StoreError> {
        (**self).reconcile(bucket, r, actual, now)
    }

    fn refund(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> Result<Usage, StoreError> {
        (**self).refund(bucket, r, now)
    }

    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        (**self).cool_down(bucket, dimension, until, now)
    }

    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        (**self).usage(bucket, now)
    }
}
    )*};
}

forward_store!(Box, Arc);

/// Naming buckets: local to the store, never I/O.
pub trait Buckets: Send + Sync {
    /// The local handle of the bucket named `key`, created empty if the store has none yet.
    /// The same key always gives the same handle.
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError>;
}

/// Quota state shared by every admission, answering at once (in memory, in the simulator).
/// Implementations must make [`QuotaStore::reserve`] atomic across all dimensions of a
/// bucket and across concurrent callers (and, for a shared store, across processes). Every
/// call may fail with a [`StoreError`]. Every `QuotaStore` is an [`AsyncStore`] whose calls
/// are ready at once.
pub trait QuotaStore: Buckets {
    /// Counts `cost` (its requests and tokens) in `bucket` if every dimension stays within
    /// `ceilings` and the bucket is not cooling down; otherwise counts nothing.
    /// Returns the bucket's counters after the call, as every mutating call does, so that the
    /// engine's view of the bucket stays fresh without another round trip.
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError>;

    /// Replaces a reservation's token count by the actual one.
    fn reconcile(
        &self,
        bucket: BucketId,
        reservation: &Reservation,
        actual_tokens: u64,
        now: Timestamp,
    ) -> Result<Usage, StoreError>;

    /// Takes a reservation back, as if it had never been made.
    fn refund(&self, bucket: BucketId, reservation: &Reservation, now: Timestamp) -> Result<Usage, StoreError>;

    /// Stops admissions on `dimension` of `bucket` until `until` (decided at `now`).
    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The bucket's counters at `now`.
    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError>;
}

/// A store call under way: answered at once (a [`QuotaStore`]), or after I/O (Redis). A
/// future either way; one that is ready costs no allocation.
#[must_use = "a store call does nothing until awaited"]
pub enum StoreCall<'a, T> {
    /// Answered (taken by the first poll).
    Ready(Option<Result<T, StoreError>>),
    /// Waiting on I/O.
    Pending(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>),
}

impl<T> StoreCall<'_, T> {
    /// A call answered with `r`.
    pub fn ready(r: Result<T, StoreError>) -> Self {
        Self::Ready(Some(r))
    }

    /// The answer, if the call needed no I/O (and was not polled yet).
    pub fn now_or_never(self) -> Option<Result<T, StoreError>> {
        match self {
            Self::Ready(r) => r,
            Self::Pending(_) => None,
        }
    }
}

// Nothing in a call is pinned in place: the pending future is boxed.
impl<T> Unpin for StoreCall<'_, T> {}

impl<T> Future for StoreCall<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(r) => Poll::Ready(r.take().expect("a store call is polled once it is ready, not again")),
            Self::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for StoreCall<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "StoreCall::Ready",
            Self::Pending(_) => "StoreCall::Pending",
        })
    }
}

/// Quota state shared by every admission, for services that must never block a worker: every
/// call may wait on I/O (a Redis round trip) and is awaited. The contract is
/// [`QuotaStore`]'s; every `QuotaStore` is one, ready at once.
pub trait AsyncStore: Buckets {
    /// [`QuotaStore::reserve`].
    fn reserve_async(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> StoreCall<'_, Result<Grant, Shortfall>>;

    /// [`QuotaStore::reconcile`].
    fn reconcile_async(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> StoreCall<'_, Usage>;

    /// [`QuotaStore::refund`].
    fn refund_async(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> StoreCall<'_, Usage>;

    /// [`QuotaStore::cool_down`].
    fn cool_down_async(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreCall<'_, ()>;

    /// [`QuotaStore::usage`].
    fn usage_async(&self, bucket: BucketId, now: Timestamp) -> StoreCall<'_, Usage>;

    /// The counters of every bucket of `buckets` (a shared store asks in one round trip).
    fn usages_async(&self, buckets: &[BucketId], now: Timestamp) -> StoreCall<'_, Vec<Result<Usage, StoreError>>>;
}

impl<S: QuotaStore + ?Sized> AsyncStore for S {
    fn reserve_async(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> StoreCall<'_, Result<Grant, Shortfall>> {
        StoreCall::ready(self.reserve(bucket, cost, ceilings, now))
    }

    fn reconcile_async(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> StoreCall<'_, Usage> {
        StoreCall::ready(self.reconcile(bucket, r, actual, now))
    }

    fn refund_async(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> StoreCall<'_, Usage> {
        StoreCall::ready(self.refund(bucket, r, now))
    }

    fn cool_down_async(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreCall<'_, ()> {
        StoreCall::ready(self.cool_down(bucket, dimension, until, now))
    }

    fn usage_async(&self, bucket: BucketId, now: Timestamp) -> StoreCall<'_, Usage> {
        StoreCall::ready(self.usage(bucket, now))
    }

    fn usages_async(&self, buckets: &[BucketId], now: Timestamp) -> StoreCall<'_, Vec<Result<Usage, StoreError>>> {
        StoreCall::ready(Ok(buckets.iter().map(|&b| self.usage(b, now)).collect()))
    }
}

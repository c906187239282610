//! Stores chosen at run time, and async stores for callers without a runtime.

use std::sync::Arc;

use crate::limits::{Ceilings, Dimension};
use crate::memory::MemoryStore;
use crate::store::{
    AsyncStore, BucketId, BucketKey, Buckets, Cost, Grant, QuotaStore, Reservation, Shortfall, StoreCall, StoreError,
    Usage,
};
use crate::time::Timestamp;

/// The store a service chooses at run time: in memory (shared by engines in one process), or
/// Redis (shared by replicas; feature `redis`).
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyStore {
    /// In memory.
    Memory(Arc<MemoryStore>),
    /// On Redis or Redis Cluster.
    #[cfg(feature = "redis")]
    Redis(Box<crate::RedisStore>),
}

impl AnyStore {
    /// The Redis store, if that is the one.
    #[cfg(feature = "redis")]
    pub fn redis(&self) -> Option<&crate::RedisStore> {
        match self {
            Self::Redis(r) => Some(r),
            Self::Memory(_) => None,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            #[cfg(feature = "redis")]
            AnyStore::Redis($s) => $e,
        }
    };
}

impl Buckets for AnyStore {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        each!(self, s => s.bucket(key))
    }
}

impl AsyncStore for AnyStore {
    fn reserve_async(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> StoreCall<'_, Result<Grant, Shortfall>> {
        each!(self, s => s.reserve_async(bucket, cost, ceilings, now))
    }

    fn reconcile_async(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> StoreCall<'_, Usage> {
        each!(self, s => s.reconcile_async(bucket, r, actual, now))
    }

    fn refund_async(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> StoreCall<'_, Usage> {
        each!(self, s => s.refund_async(bucket, r, now))
    }

    fn cool_down_async(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreCall<'_, ()> {
        each!(self, s => s.cool_down_async(bucket, dimension, until, now))
    }

    fn usage_async(&self, bucket: BucketId, now: Timestamp) -> StoreCall<'_, Usage> {
        each!(self, s => s.usage_async(bucket, now))
    }

    fn usages_async(&self, buckets: &[BucketId], now: Timestamp) -> StoreCall<'_, Vec<Result<Usage, StoreError>>> {
        each!(self, s => s.usages_async(buckets, now))
    }
}

/// An async store driven to completion on a runtime of its own, for callers without one (a
/// tool, a test, a synchronous service): every call blocks its thread until the store answers.
/// Never use it inside an async runtime.
pub struct Blocking<S> {
    store: S,
    rt: tokio::runtime::Runtime,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Blocking<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Blocking").field(&self.store).finish()
    }
}

impl<S: AsyncStore> Blocking<S> {
    /// `store`, blocking.
    pub fn new(store: S) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("a runtime for the store: {e}")))?;
        Ok(Self { store, rt })
    }

    /// The store it drives.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Runs `f` with the store on this runtime (for the store's own async methods).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn run<T>(&self, call: StoreCall<'_, T>) -> Result<T, StoreError> {
        match call {
            StoreCall::Ready(r) => r.expect("a ready call is taken once"),
            pending => self.rt.block_on(pending),
        }
    }
}

impl<S: AsyncStore> Buckets for Blocking<S> {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        self.store.bucket(key)
    }
}

impl<S: AsyncStore> QuotaStore for Blocking<S> {
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        self.run(self.store.reserve_async(bucket, cost, ceilings, now))
    }

    fn reconcile(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> Result<Usage, StoreError> {
        self.run(self.store.reconcile_async(bucket, r, actual, now))
    }

    fn refund(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> Result<Usage, StoreError> {
        self.run(self.store.refund_async(bucket, r, now))
    }

    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.run(self.store.cool_down_async(bucket, dimension, until, now))
    }

    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        self.run(self.store.usage_async(bucket, now))
    }
}

//! The in-memory store: one mutex per bucket, an exact sliding minute window and the
//! Pacific day. Memory is bounded by the buckets' limits (a window holds at most RPM
//! entries), never by the number of requests served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::limits::{Ceilings, Dimension};
use super::slots::Slots;
use super::store::{BucketId, BucketKey, Buckets, Cost, Grant, QuotaStore, Reservation, Shortfall, StoreError, Usage};
use super::time::{next_pacific_midnight, Timestamp, MINUTE_MS};

#[derive(Clone, Copy, Debug)]
struct Entry {
    at: u64,
    seq: u64,
    tokens: u64,
}

/// One bucket: what was counted in the last minute and today.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    window: VecDeque<Entry>,
    minute_tokens: u64,
    day_ends: u64,
    day_requests: u64,
    day_tokens: u64,
    next_seq: u64,
    cooling: [u64; 4],
}

impl Bucket {
    /// Drops what left the window and starts a new day when one began.
    fn advance(&mut self, now: u64) {
        while let Some(e) = self.window.front() {
            if now < e.at + MINUTE_MS {
                break;
            }
            self.minute_tokens -= e.tokens;
            self.window.pop_front();
        }
        if now >= self.day_ends {
            self.day_ends = next_pacific_midnight(Timestamp(now)).0;
            self.day_requests = 0;
            self.day_tokens = 0;
        }
    }

    /// When each failing dimension frees enough room for `cost` more; the latest of them
    /// wins.
    fn shortfall(&self, cost: Cost, c: &Ceilings, now: u64) -> Option<Shortfall> {
        let (n, tokens) = (cost.requests.max(1), cost.tokens);
        let mut worst: Option<Shortfall> = None;
        let mut consider = |dimension: Dimension, cooling: bool, retry: Option<u64>| {
            let s = Shortfall { dimension, cooling, retry_at: retry.map(Timestamp), usage: Usage::default() };
            let later = match (&worst, retry) {
                (None, _) => true,
                (Some(w), None) => w.retry_at.is_some(),
                (Some(w), Some(r)) => w.retry_at.is_some_and(|wr| r > wr.0),
            };
            if later {
                worst = Some(s);
            }
        };
        for d in Dimension::ALL {
            if self.cooling[d.index()] > now {
                consider(d, true, Some(self.cooling[d.index()]));
            }
        }
        let rpm = c.get(Dimension::Rpm);
        let len = self.window.len() as u64;
        if len.saturating_add(n) > rpm {
            // The entry whose leaving makes room for `n` more; never, if `n` alone is too many.
            let retry = (n <= rpm).then(|| self.window[(len + n - rpm - 1) as usize].at + MINUTE_MS);
            consider(Dimension::Rpm, false, retry);
        }
        let tpm = c.get(Dimension::Tpm);
        if self.minute_tokens.saturating_add(tokens) > tpm {
            consider(Dimension::Tpm, false, self.tokens_free_at(tokens, tpm));
        }
        let rpd = c.get(Dimension::Rpd);
        if self.day_requests.saturating_add(n) > rpd {
            consider(Dimension::Rpd, false, (n <= rpd).then_some(self.day_ends));
        }
        let tpd = c.get(Dimension::Tpd);
        if self.day_tokens.saturating_add(tokens) > tpd {
            consider(Dimension::Tpd, false, (tokens <= tpd).then_some(self.day_ends));
        }
        worst.map(|w| Shortfall { usage: self.usage(now), ..w })
    }

    /// When enough of the window's tokens have left for `tokens` more to fit under `tpm`.
    fn tokens_free_at(&self, tokens: u64, tpm: u64) -> Option<u64> {
        if tokens > tpm {
            return None;
        }
        let mut excess = self.minute_tokens + tokens - tpm;
        for e in &self.window {
            if e.tokens >= excess {
                return Some(e.at + MINUTE_MS);
            }
            excess -= e.tokens;
        }
        None
    }

    /// Counts `cost`: one window entry per request, the first carrying every token.
    fn push(&mut self, cost: Cost, now: u64) -> Reservation {
        // Callers on several threads may hand in slightly older times: keep the window
        // ordered by counting such an entry at the newest time seen (later = conservative).
        let at = self.window.back().map_or(now, |b| b.at.max(now));
        let (n, tokens) = (cost.requests.max(1), cost.tokens);
        let seq = self.next_seq;
        self.next_seq += n;
        for i in 0..n {
            self.window.push_back(Entry { at, seq: seq + i, tokens: if i == 0 { tokens } else { 0 } });
        }
        self.minute_tokens += tokens;
        self.day_requests += n;
        self.day_tokens += tokens;
        Reservation { seq, at: Timestamp(at), day_ends: Timestamp(self.day_ends), tokens, requests: n }
    }

    fn find(&self, seq: u64) -> Option<usize> {
        // Sequence numbers are consecutive unless a refund removed one: try the direct index
        // first, search only when it misses.
        let first = self.window.front()?.seq;
        let guess = seq.checked_sub(first)? as usize;
        if self.window.get(guess).is_some_and(|e| e.seq == seq) {
            return Some(guess);
        }
        self.window.binary_search_by_key(&seq, |e| e.seq).ok()
    }

    fn usage(&self, now: u64) -> Usage {
        let cooling = self.cooling.iter().copied().filter(|&c| c > now).max();
        Usage {
            minute_requests: self.window.len() as u64,
            minute_tokens: self.minute_tokens,
            day_requests: self.day_requests,
            day_tokens: self.day_tokens,
            minute_frees_at: self.window.front().map(|e| Timestamp(e.at + MINUTE_MS)),
            day_ends: Timestamp(self.day_ends),
            cooling_until: cooling.map(Timestamp),
        }
    }
}

/// Quota state of one process: a mutex per bucket, so admissions on different buckets never
/// wait for each other and admissions on one bucket are atomic. Buckets live in an
/// append-only table, found by their dense handle without a lock; only naming a new bucket
/// takes one. It never fails.
#[derive(Debug, Default)]
pub struct MemoryStore {
    buckets: Slots<Mutex<Bucket>>,
    names: Mutex<HashMap<BucketKey, BucketId>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock_raw(&self, bucket: BucketId) -> MutexGuard<'_, Bucket> {
        // A panic while holding the lock cannot leave a bucket half-updated in a way that
        // breaks its invariants worse than losing the lock would; carry on.
        self.buckets[bucket.0 as usize].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self, bucket: BucketId, now: Timestamp) -> MutexGuard<'_, Bucket> {
        let mut b = self.lock_raw(bucket);
        b.advance(now.0);
        b
    }
}

impl Buckets for MemoryStore {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = names.get(key) {
            return Ok(*id);
        }
        let id = BucketId(names.len() as u32);
        self.buckets.ensure(id.0 as usize);
        names.insert(key.clone(), id);
        Ok(id)
    }
}

impl QuotaStore for MemoryStore {
    fn reserve(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<Grant, Shortfall>, StoreError> {
        let mut b = self.lock(bucket, now);
        Ok(match b.shortfall(cost, ceilings, now.0) {
            Some(s) => Err(s),
            None => {
                let reservation = b.push(cost, now.0);
                Ok(Grant { reservation, usage: b.usage(now.0) })
            }
        })
    }

    fn reconcile(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> Result<Usage, StoreError> {
        let mut b = self.lock(bucket, now);
        if let Some(i) = b.find(r.seq) {
            let e = &mut b.window[i];
            let before = e.tokens;
            e.tokens = actual;
            b.minute_tokens = b.minute_tokens - before + actual;
        }
        if b.day_ends == r.day_ends.0 {
            b.day_tokens = (b.day_tokens + actual).saturating_sub(r.tokens);
        }
        Ok(b.usage(now.0))
    }

    fn refund(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> Result<Usage, StoreError> {
        let mut b = self.lock(bucket, now);
        // A batch's entries are consecutive, and leave the window together.
        if let Some(i) = b.find(r.seq) {
            let last = b.window.iter().skip(i).take_while(|e| e.seq < r.seq + r.requests.max(1)).count();
            for e in b.window.drain(i..i + last).collect::<Vec<_>>() {
                b.minute_tokens -= e.tokens;
            }
        }
        if b.day_ends == r.day_ends.0 {
            b.day_requests = b.day_requests.saturating_sub(r.requests.max(1));
            b.day_tokens = b.day_tokens.saturating_sub(r.tokens);
        }
        Ok(b.usage(now.0))
    }

    fn cool_down(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut b = self.lock_raw(bucket);
        let c = &mut b.cooling[dimension.index()];
        *c = (*c).max(until.0);
        Ok(())
    }

    fn usage(&self, bucket: BucketId, now: Timestamp) -> Result<Usage, StoreError> {
        Ok(self.lock(bucket, now).usage(now.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    const T0: Timestamp = Timestamp(1_764_140_400_000);
    const B: BucketId = BucketId(0);

    fn store() -> MemoryStore {
        let s = MemoryStore::new();
        assert_eq!(s.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap(), B);
        assert_eq!(s.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap(), B, "stable");
        s
    }

    fn ceilings(rpm: u64, tpm: u64, rpd: u64) -> Ceilings {
        Ceilings::from_limits(&Limits { rpm, tpm, rpd, tpd: None }, 0.0, 0.0)
    }

    fn reserve(s: &MemoryStore, tokens: u64, c: &Ceilings, now: Timestamp) -> Result<Grant, Shortfall> {
        s.reserve(B, Cost::one(tokens), c, now).expect("the memory store never fails")
    }

    #[test]
    fn memory_is_bounded_by_the_limit() {
        let s = store();
        let c = ceilings(5, u64::MAX / 4, u64::MAX / 4);
        for i in 0..100_000u64 {
            let _ = reserve(&s, 1, &c, T0.plus(i * 100));
        }
        let b = s.buckets[0].lock().unwrap();
        assert!(b.window.len() <= 5);
    }
}

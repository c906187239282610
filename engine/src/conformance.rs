//! One conformance suite for every quota store: each test is written once, over any
//! [`QuotaStore`], and runs against the in-memory store, the degraded-mode wrapper and Redis
//! (functions, `EVAL` and Cluster), which must answer identically.
//!
//! Redis tests read `KEYSIM_REDIS_URL` (a server) and `KEYSIM_REDIS_CLUSTER` (comma-separated
//! `host:port` of Cluster nodes). Without them they print why they skip — except under CI
//! (`CI` set), where a missing Redis is a failure: `.ci/run` starts both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::limits::{Ceilings, Dimension, Limits};
use crate::store::{BucketId, BucketKey, Cost, Grant, QuotaStore, Shortfall, Usage};
use crate::time::{next_pacific_midnight, Timestamp, MINUTE_MS};

/// 2025-11-26 07:00 UTC, 23:00 in Pacific time: one hour before midnight.
const T0: Timestamp = Timestamp(1_764_140_400_000);

fn key(name: &str) -> BucketKey {
    BucketKey { owner: name.into(), model: "gemini-2.5-flash".into() }
}

fn ceilings(rpm: u64, tpm: u64, rpd: u64) -> Ceilings {
    Ceilings::from_limits(&Limits { rpm, tpm, rpd, tpd: None }, 0.0, 0.0)
}

fn reserve<S: QuotaStore>(s: &S, b: BucketId, tokens: u64, c: &Ceilings, now: Timestamp) -> Result<Grant, Shortfall> {
    s.reserve(b, Cost::one(tokens), c, now).expect("the store answers")
}

fn usage<S: QuotaStore>(s: &S, b: BucketId, now: Timestamp) -> Usage {
    s.usage(b, now).expect("the store answers")
}

pub(crate) fn reserve_is_all_or_nothing<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(10, 100, 1000);
    reserve(s, b, 90, &c, T0).unwrap();
    let err = reserve(s, b, 20, &c, T0).unwrap_err();
    assert_eq!(err.dimension, Dimension::Tpm);
    assert!(!err.cooling);
    assert_eq!(err.retry_at, Some(T0.plus(MINUTE_MS)));
    assert_eq!((err.usage.minute_requests, err.usage.minute_tokens), (1, 90));
    let u = usage(s, b, T0);
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests, u.day_tokens), (1, 90, 1, 90));
}

pub(crate) fn a_request_is_admitted_exactly_at_retry_at<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(2, 1000, 1000);
    let first = reserve(s, b, 1, &c, T0).unwrap();
    assert_eq!(first.reservation.at, T0);
    assert_eq!(first.usage.minute_frees_at, Some(T0.plus(MINUTE_MS)));
    reserve(s, b, 1, &c, T0.plus(5)).unwrap();
    let short = reserve(s, b, 1, &c, T0.plus(10)).unwrap_err();
    assert_eq!((short.dimension, short.retry_at), (Dimension::Rpm, Some(T0.plus(MINUTE_MS))));
    assert!(reserve(s, b, 1, &c, T0.plus(MINUTE_MS - 1)).is_err());
    assert!(reserve(s, b, 1, &c, T0.plus(MINUTE_MS)).is_ok());
    // The oldest entry left; the second leaves 5 ms later.
    let u = usage(s, b, T0.plus(MINUTE_MS));
    assert_eq!((u.minute_requests, u.minute_frees_at), (2, Some(T0.plus(MINUTE_MS + 5))));
}

pub(crate) fn the_window_slides_entry_by_entry<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(3, 1_000_000, 1000);
    for i in 0..3 {
        reserve(s, b, 10, &c, T0.plus(i * 10_000)).unwrap();
    }
    let short = reserve(s, b, 10, &c, T0.plus(30_000)).unwrap_err();
    assert_eq!(short.retry_at, Some(T0.plus(MINUTE_MS)));
    reserve(s, b, 10, &c, T0.plus(MINUTE_MS)).unwrap();
    let short = reserve(s, b, 10, &c, T0.plus(MINUTE_MS + 1)).unwrap_err();
    assert_eq!(short.retry_at, Some(T0.plus(MINUTE_MS + 10_000)));
    let u = usage(s, b, T0.plus(MINUTE_MS + 15_000));
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests), (2, 20, 4));
}

/// Twenty entries a millisecond apart; twelve leave at once, then the rest.
pub(crate) fn many_entries_leave_the_window_at_once<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(100, 1_000_000, 1000);
    for i in 0..20 {
        reserve(s, b, i + 1, &c, T0.plus(i)).unwrap();
    }
    let u = usage(s, b, T0.plus(MINUTE_MS + 11));
    // Entries 0..=11 left (tokens 1..=12, 78 in all); 13..=20 remain.
    assert_eq!((u.minute_requests, u.minute_tokens, u.minute_frees_at), (8, 210 - 78, Some(T0.plus(MINUTE_MS + 12))));
    let u = usage(s, b, T0.plus(2 * MINUTE_MS));
    assert_eq!((u.minute_requests, u.minute_tokens, u.minute_frees_at, u.day_requests), (0, 0, None, 20));
    let head = reserve(s, b, 5, &c, T0.plus(2 * MINUTE_MS)).unwrap().reservation;
    reserve(s, b, 6, &c, T0.plus(2 * MINUTE_MS + 7)).unwrap();
    let u = usage(s, b, T0.plus(2 * MINUTE_MS + 7));
    assert_eq!((u.minute_requests, u.minute_tokens, u.minute_frees_at), (2, 11, Some(T0.plus(3 * MINUTE_MS))));
    // Taking back the oldest entry: the next one leaves first now.
    let u = s.refund(b, &head, T0.plus(2 * MINUTE_MS + 8)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens, u.minute_frees_at), (1, 6, Some(T0.plus(3 * MINUTE_MS + 7))));
}

pub(crate) fn tokens_free_in_the_order_they_were_counted<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(100, 100, 1000);
    reserve(s, b, 30, &c, T0).unwrap();
    reserve(s, b, 40, &c, T0.plus(1_000)).unwrap();
    reserve(s, b, 30, &c, T0.plus(2_000)).unwrap();
    // 50 more need 50 to leave: the first entry frees 30, the second the rest.
    let short = reserve(s, b, 50, &c, T0.plus(3_000)).unwrap_err();
    assert_eq!((short.dimension, short.retry_at), (Dimension::Tpm, Some(T0.plus(1_000 + MINUTE_MS))));
    // More than the ceiling never fits.
    let never = reserve(s, b, 101, &c, T0.plus(3_000)).unwrap_err();
    assert_eq!((never.dimension, never.retry_at), (Dimension::Tpm, None));
}

pub(crate) fn the_daily_token_limit_binds_until_midnight<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = Ceilings::from_limits(&Limits { rpm: 100, tpm: 10_000, rpd: 100, tpd: Some(500) }, 0.0, 0.0);
    reserve(s, b, 400, &c, T0).unwrap();
    let short = reserve(s, b, 200, &c, T0.plus(MINUTE_MS)).unwrap_err();
    let midnight = next_pacific_midnight(T0);
    assert_eq!((short.dimension, short.retry_at), (Dimension::Tpd, Some(midnight)));
    let never = reserve(s, b, 501, &c, T0.plus(MINUTE_MS)).unwrap_err();
    assert_eq!(never.retry_at, None, "larger than the daily ceiling: never");
    reserve(s, b, 200, &c, midnight).unwrap();
}

pub(crate) fn reconcile_and_refund_adjust_every_counter<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(10, 1000, 1000);
    let r = reserve(s, b, 100, &c, T0).unwrap().reservation;
    let u = s.reconcile(b, &r, 40, T0.plus(1)).unwrap();
    assert_eq!((u.minute_tokens, u.day_tokens), (40, 40));
    let r2 = reserve(s, b, 10, &c, T0.plus(2)).unwrap().reservation;
    let u = s.refund(b, &r2, T0.plus(3)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests, u.day_tokens), (1, 40, 1, 40));
    // Reconciling upwards counts the larger figure in both windows.
    let r3 = reserve(s, b, 10, &c, T0.plus(4)).unwrap().reservation;
    let u = s.reconcile(b, &r3, 25, T0.plus(5)).unwrap();
    assert_eq!((u.minute_tokens, u.day_tokens), (65, 65));
    // A reconcile after the entry left the window only touches the day.
    let r4 = reserve(s, b, 50, &c, T0.plus(10)).unwrap().reservation;
    let u = s.reconcile(b, &r4, 20, T0.plus(10 + MINUTE_MS)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_tokens), (0, 0, 85));
}

pub(crate) fn a_refund_after_midnight_leaves_the_new_day_alone<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(10, 1000, 1000);
    let midnight = next_pacific_midnight(T0);
    let r = reserve(s, b, 100, &c, Timestamp(midnight.0 - 10)).unwrap().reservation;
    assert_eq!(r.day_ends, midnight);
    reserve(s, b, 7, &c, midnight).unwrap();
    let u = s.refund(b, &r, midnight.plus(1)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests, u.day_tokens), (1, 7, 1, 7));
}

pub(crate) fn cooling_blocks_until_its_end<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(10, 1000, 1000);
    s.cool_down(b, Dimension::Rpm, T0.plus(500), T0).unwrap();
    s.cool_down(b, Dimension::Rpm, T0.plus(200), T0).unwrap();
    let e = reserve(s, b, 1, &c, T0).unwrap_err();
    assert!(e.cooling);
    assert_eq!((e.dimension, e.retry_at), (Dimension::Rpm, Some(T0.plus(500))), "the later cool-down holds");
    assert_eq!(usage(s, b, T0.plus(1)).cooling_until, Some(T0.plus(500)));
    assert!(reserve(s, b, 1, &c, T0.plus(500)).is_ok());
    assert_eq!(usage(s, b, T0.plus(501)).cooling_until, None);
}

pub(crate) fn the_day_restarts_at_pacific_midnight<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(10, 1000, 1);
    reserve(s, b, 1, &c, T0).unwrap();
    let e = reserve(s, b, 1, &c, T0.plus(MINUTE_MS)).unwrap_err();
    assert_eq!(e.dimension, Dimension::Rpd);
    let midnight = e.retry_at.unwrap();
    assert_eq!(midnight, T0.plus(3_600_000));
    assert!(reserve(s, b, 1, &c, Timestamp(midnight.0 - 1)).is_err());
    assert!(reserve(s, b, 1, &c, midnight).is_ok());
}

/// Pacific midnight every 37 minutes across both daylight-time changes of 2026 and 2027,
/// against chrono-tz's calendar.
pub(crate) fn pacific_days_follow_daylight_time<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let spans = [
        (1_772_928_000_000u64, 1_773_273_600_000u64), // 2026-03-08 ± 2 days
        (1_793_404_800_000, 1_793_750_400_000),       // 2026-11-01 ± 2 days
        (1_804_377_600_000, 1_804_723_200_000),       // 2027-03-14 ± 2 days
        (1_824_854_400_000, 1_825_200_000_000),       // 2027-11-07 ± 2 days
    ];
    for (from, to) in spans {
        let mut t = from;
        while t < to {
            let now = Timestamp(t);
            assert_eq!(usage(s, b, now).day_ends, next_pacific_midnight(now), "at {t}");
            t += 37 * MINUTE_MS;
        }
    }
}

pub(crate) fn buckets_are_named_stably_and_kept_apart<S: QuotaStore>(s: &S) {
    let a = s.bucket(&key("a")).unwrap();
    let b = s.bucket(&key("b")).unwrap();
    let odd = s.bucket(&BucketKey { owner: "a|b{c}:%".into(), model: "m".into() }).unwrap();
    assert_ne!(a, b);
    assert_ne!(odd, a);
    assert_eq!(s.bucket(&key("a")).unwrap(), a, "the same key, the same bucket");
    let c = ceilings(1, 1000, 1000);
    reserve(s, a, 1, &c, T0).unwrap();
    reserve(s, b, 1, &c, T0).unwrap();
    reserve(s, odd, 1, &c, T0).unwrap();
    assert!(reserve(s, a, 1, &c, T0).is_err());
    assert_eq!(usage(s, b, T0).minute_requests, 1);
}

/// Eight threads race for one bucket of RPM 100: exactly 100 get through, and the counters
/// say so.
pub(crate) fn concurrent_reservations_never_exceed_a_limit<S: QuotaStore + 'static>(s: S) {
    let s = Arc::new(s);
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(100, 1_000_000, 1_000_000);
    let granted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, granted) = (Arc::clone(&s), Arc::clone(&granted));
            std::thread::spawn(move || {
                for i in 0..40 {
                    if s.reserve(b, Cost::one(3), &c, T0.plus(i)).expect("the store answers").is_ok() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(granted.load(Ordering::Relaxed), 100);
    let u = usage(&*s, b, T0.plus(40));
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests), (100, 300, 100));
}

/// A batch of N counts N requests, all or none; its refund returns all N; it frees a minute
/// later, when its entries leave the window together.
pub(crate) fn a_batch_counts_all_its_requests<S: QuotaStore>(s: &S) {
    let b = s.bucket(&key("p")).unwrap();
    let c = ceilings(60, 100_000, 1000);
    let batch = |n, tokens| Cost { requests: n, tokens };
    let g = s.reserve(b, batch(50, 500), &c, T0).unwrap().unwrap();
    assert_eq!((g.usage.minute_requests, g.usage.minute_tokens, g.usage.day_requests), (50, 500, 50));
    assert_eq!(g.reservation.requests, 50);
    let short = s.reserve(b, batch(11, 10), &c, T0.plus(1)).unwrap().unwrap_err();
    assert_eq!((short.dimension, short.retry_at), (Dimension::Rpm, Some(T0.plus(MINUTE_MS))));
    assert_eq!(short.usage.minute_requests, 50, "a refused batch counts nothing");
    let h = s.reserve(b, batch(10, 10), &c, T0.plus(2)).unwrap().unwrap();
    assert_eq!(h.usage.minute_requests, 60);
    let never = s.reserve(b, batch(61, 1), &c, T0.plus(3)).unwrap().unwrap_err();
    assert_eq!(never.retry_at, None, "more requests than the limit never fit");
    let u = s.refund(b, &g.reservation, T0.plus(4)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens, u.day_requests, u.day_tokens), (10, 10, 10, 10));
    let u = s.reconcile(b, &h.reservation, 30, T0.plus(5)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens), (10, 30));
    assert_eq!(usage(s, b, T0.plus(2 + MINUTE_MS)).minute_requests, 0, "the batch leaves the window at once");
}

/// The suite, as tests of one store.
macro_rules! suite {
    ($make:expr) => {
        suite!(@ $make; reserve_is_all_or_nothing, a_request_is_admitted_exactly_at_retry_at,
            the_window_slides_entry_by_entry, many_entries_leave_the_window_at_once, tokens_free_in_the_order_they_were_counted,
            the_daily_token_limit_binds_until_midnight, reconcile_and_refund_adjust_every_counter,
            a_refund_after_midnight_leaves_the_new_day_alone,
            cooling_blocks_until_its_end, the_day_restarts_at_pacific_midnight,
            pacific_days_follow_daylight_time, buckets_are_named_stably_and_kept_apart, a_batch_counts_all_its_requests);
        #[test]
        fn concurrent_reservations_never_exceed_a_limit() {
            if let Some(s) = $make(stringify!(concurrent_reservations_never_exceed_a_limit)) {
                crate::conformance::concurrent_reservations_never_exceed_a_limit(s);
            }
        }
    };
    (@ $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                if let Some(s) = $make(stringify!($name)) {
                    crate::conformance::$name(&s);
                }
            }
        )*
    };
}

mod memory {
    fn make(_: &str) -> Option<crate::MemoryStore> {
        Some(crate::MemoryStore::new())
    }
    suite!(make);
}

/// A degraded-mode wrapper answers as its shared store does while that store is up.
mod degraded {
    fn make(_: &str) -> Option<crate::Degraded<crate::MemoryStore>> {
        Some(crate::Degraded::new(crate::MemoryStore::new(), 3))
    }
    suite!(make);
}

#[cfg(feature = "redis")]
pub(crate) mod redis {
    use crate::redis_store::{RedisConfig, RedisStore, RedisTime};

    /// The address in `var`, or why a test skips; under CI a missing one fails.
    pub(crate) fn address(var: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ if std::env::var_os("CI").is_some() => panic!("{var} is not set: CI must start Redis (.ci/run)"),
            _ => {
                eprintln!("skipped: {var} is not set (no Redis to test against; `.ci/run` starts one)");
                None
            }
        }
    }

    /// A key prefix no other test (or run) shares.
    pub(crate) fn prefix(test: &str) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        format!("keysim-test:{test}:{}:{nanos}", std::process::id())
    }

    pub(crate) fn server(test: &str) -> Option<crate::Blocking<RedisStore>> {
        let url = address("KEYSIM_REDIS_URL")?;
        let config = RedisConfig {
            prefix: prefix(test),
            time: RedisTime::Caller,
            deadline: std::time::Duration::from_secs(2),
            ..RedisConfig::new(url)
        };
        Some(crate::Blocking::new(RedisStore::new(config).expect("a valid URL")).expect("a runtime"))
    }

    pub(crate) fn cluster(test: &str) -> Option<crate::Blocking<RedisStore>> {
        let nodes = address("KEYSIM_REDIS_CLUSTER")?;
        let config = RedisConfig {
            prefix: prefix(test),
            time: RedisTime::Caller,
            deadline: std::time::Duration::from_secs(2),
            ..RedisConfig::cluster(nodes.split(',').map(|n| format!("redis://{n}")))
        };
        Some(crate::Blocking::new(RedisStore::new(config).expect("valid node addresses")).expect("a runtime"))
    }

    mod functions {
        fn make(test: &str) -> Option<crate::Blocking<crate::redis_store::RedisStore>> {
            super::server(test)
        }
        suite!(make);
    }

    mod eval {
        fn make(test: &str) -> Option<crate::Blocking<crate::redis_store::RedisStore>> {
            let s = super::server(test)?;
            s.inner().force_eval();
            Some(s)
        }
        suite!(make);
    }

    mod cluster {
        fn make(test: &str) -> Option<crate::Blocking<crate::redis_store::RedisStore>> {
            super::cluster(test)
        }
        suite!(make);
    }
}

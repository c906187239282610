use super::*;
use crate::pool::PoolError;
use crate::provider::QuotaExhausted;

const T0: Timestamp = Timestamp(1_764_140_400_000); // 23:00 Pacific

fn spec(projects: &[(&str, &[&str])], rpm: u64) -> PoolSpec {
    let limits = Limits { rpm, tpm: 1_000_000, rpd: 1000, tpd: None };
    PoolSpec {
        models: vec![ModelSpec { name: "m".into(), limits }],
        projects: projects.iter().map(|(id, _)| ProjectSpec { id: (*id).into(), limits: vec![Some(limits)] }).collect(),
        keys: projects
            .iter()
            .flat_map(|(p, keys)| keys.iter().map(move |k| KeySpec { id: (*k).into(), project: (*p).into() }))
            .collect(),
    }
}

fn engine(config: EngineConfig, spec: PoolSpec) -> Engine {
    Engine::new(config, spec, MemoryStore::new(), Box::new(Chars4)).unwrap()
}

fn req(priority: Priority) -> Request<'static> {
    Request::new(0, Prompt::Chars(400)).priority(priority)
}

fn admitted(e: &Engine, p: Priority, now: Timestamp) -> Option<Ticket> {
    match e.admit(&req(p), now).unwrap() {
        Decision::Admitted(t) => Some(t),
        Decision::Denied(_) => None,
    }
}

#[test]
fn concurrent_requests_cannot_race_past_rpm() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 2));
    let n = (0..3).filter(|_| admitted(&e, Priority::Normal, T0).is_some()).count();
    assert_eq!(n, 2);
}

#[test]
fn keys_of_one_project_share_its_quota() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k1", "k2"])], 2));
    let tickets: Vec<_> = (0..4).filter_map(|_| admitted(&e, Priority::Normal, T0)).collect();
    assert_eq!(tickets.len(), 2);
    let key_scope = EngineConfig { scope: QuotaScope::Key, ..Default::default() };
    let wrong = engine(key_scope, spec(&[("p", &["k1", "k2"])], 2));
    assert_eq!((0..4).filter(|_| admitted(&wrong, Priority::Normal, T0).is_some()).count(), 4);
}

#[test]
fn a_denial_says_when_to_come_back() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 1));
    let _ = admitted(&e, Priority::Normal, T0).unwrap();
    match e.admit(&req(Priority::Normal), T0.plus(1000)).unwrap() {
        Decision::Denied(d) => {
            assert_eq!(d.retry_at, Some(T0.plus(MINUTE_MS)));
            assert_eq!(d.reason, DenyReason::Exhausted(Dimension::Rpm));
        }
        d => panic!("expected a denial, got {d:?}"),
    }
    assert!(admitted(&e, Priority::Normal, T0.plus(MINUTE_MS)).is_some());
}

#[test]
fn the_reserve_is_for_high_priority_only() {
    let config = EngineConfig { reserve: 0.5, ..Default::default() };
    let e = engine(config, spec(&[("p", &["k"])], 4));
    assert_eq!((0..4).filter(|_| admitted(&e, Priority::Normal, T0).is_some()).count(), 2);
    assert_eq!((0..4).filter(|_| admitted(&e, Priority::High, T0).is_some()).count(), 2);
}

#[test]
fn a_rate_limit_cools_down_exactly_its_dimension_and_refunds() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 10));
    let t = admitted(&e, Priority::Normal, T0).unwrap();
    let q = QuotaExhausted::quota(Dimension::Rpm, Some(5_000));
    e.settle(&t, Outcome::RateLimited(q), T0.plus(10)).unwrap();
    assert_eq!(e.usage(t.bucket, T0.plus(10)).unwrap().day_requests, 0);
    match e.admit(&req(Priority::Normal), T0.plus(20)).unwrap() {
        Decision::Denied(d) => assert_eq!(d.reason, DenyReason::CoolingDown(Dimension::Rpm)),
        d => panic!("expected cooling, got {d:?}"),
    }
    assert!(admitted(&e, Priority::Normal, T0.plus(5_010)).is_some());
}

#[test]
fn a_daily_rate_limit_parks_the_project_until_pacific_midnight() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"]), ("q", &["j"])], 10));
    let t = admitted(&e, Priority::Normal, T0).unwrap();
    let q = QuotaExhausted::quota(Dimension::Rpd, Some(5_000));
    e.settle(&t, Outcome::RateLimited(q), T0).unwrap();
    let midnight = T0.plus(3_600_000);
    for i in 0..20 {
        let t2 = admitted(&e, Priority::Normal, T0.plus(10 + i * 60_000)).unwrap();
        assert_ne!(t2.bucket, t.bucket, "the parked project must not serve before midnight");
    }
    assert_eq!(e.usage(t.bucket, midnight).unwrap().cooling_until, None);
}

#[test]
fn reconciliation_returns_over_reserved_tokens() {
    let limits = Limits { rpm: 100, tpm: 250, rpd: 1000, tpd: None };
    let mut s = spec(&[("p", &["k"])], 100);
    s.models[0].limits = limits;
    s.projects[0].limits = vec![Some(limits)];
    let e = engine(EngineConfig::default(), s);
    let t = admitted(&e, Priority::Normal, T0).unwrap(); // 100 estimated
    let _ = admitted(&e, Priority::Normal, T0).unwrap(); // 200
    assert!(admitted(&e, Priority::Normal, T0).is_none());
    e.settle(&t, Outcome::Success { input_tokens: 40, output_tokens: 10 }, T0.plus(1)).unwrap();
    assert!(admitted(&e, Priority::Normal, T0.plus(2)).is_some(), "140 + 100 fits in 250");
}

#[test]
fn capacity_counts_projects_not_keys_and_follows_events() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k1", "k2", "k3"]), ("q", &["j"])], 10));
    let c = e.capacity(0, T0);
    assert_eq!((c.projects, c.keys, c.limit(Dimension::Rpm)), (2, 4, 20));
    e.apply(PoolEvent::Disable("j".into())).unwrap();
    assert_eq!(e.capacity(0, T0).limit(Dimension::Rpm), 10);
    e.apply(PoolEvent::Revoke("k1".into())).unwrap();
    e.apply(PoolEvent::Remove("k2".into())).unwrap();
    assert_eq!(e.capacity(0, T0).keys, 1);
    e.apply(PoolEvent::Remove("k3".into())).unwrap();
    assert_eq!(e.capacity(0, T0).projects, 0);
    assert!(matches!(
        e.admit(&req(Priority::Normal), T0).unwrap(),
        Decision::Denied(Denial { reason: DenyReason::NoUsableKey, .. })
    ));
    e.apply(PoolEvent::Enable("j".into())).unwrap();
    assert!(admitted(&e, Priority::Normal, T0).is_some());
    assert_eq!(e.apply(PoolEvent::Enable("nope".into())), Err(ConfigError::Pool(PoolError::UnknownKey("nope".into()))));
}

#[test]
fn a_request_larger_than_any_window_is_an_error() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 10));
    let huge = Request { prompt: Prompt::Chars(8_000_000), ..req(Priority::Normal) };
    assert!(matches!(e.admit(&huge, T0), Err(AdmitError::TooLarge { dimension: Dimension::Tpm, .. })));
}

#[test]
fn every_strategy_spreads_over_projects() {
    for &strategy in StrategyKind::ALL {
        let config = EngineConfig { strategy, ..Default::default() };
        let e = engine(config, spec(&[("a", &["a1"]), ("b", &["b1"]), ("c", &["c1"])], 2));
        let n = (0..10).filter(|_| admitted(&e, Priority::Normal, T0).is_some()).count();
        assert_eq!(n, 6, "{strategy:?} must use every project");
    }
}

#[test]
fn a_daily_rate_limit_answered_after_midnight_does_not_park_the_new_day() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 10));
    let before_midnight = T0.plus(3_600_000 - 50);
    let t = admitted(&e, Priority::Normal, before_midnight).unwrap();
    let q = QuotaExhausted::quota(Dimension::Rpd, Some(1_000));
    e.settle(&t, Outcome::RateLimited(q), T0.plus(3_600_000 + 30)).unwrap();
    assert!(admitted(&e, Priority::Normal, T0.plus(3_600_000 + 40)).is_some());
}

#[test]
fn the_cached_view_agrees_with_the_store() {
    let config = EngineConfig { reserve: 0.2, strategy: StrategyKind::LeastUsed, ..Default::default() };
    let e = engine(config, spec(&[("p", &["k"]), ("q", &["j"])], 10));
    let mut now = T0;
    for i in 0..40u64 {
        now = now.plus(1_700 * (i % 5));
        if let Some(t) = admitted(&e, if i % 3 == 0 { Priority::High } else { Priority::Normal }, now) {
            e.settle(&t, Outcome::Success { input_tokens: 50 + i, output_tokens: 5 }, now.plus(3)).unwrap();
        }
        for b in 0..2u32 {
            for p in 0..2 {
                // Within its TTL the view may understate headroom (entries left the window
                // since), never overstate it; after the TTL it is exact again.
                let limits = *e.pool.load().limits_of(BucketId(b));
                let exact = e.usage(BucketId(b), now).unwrap().headroom(&limits.ceilings[p]);
                let cached = e.headroom(&limits, BucketId(b), p, now, &|b| e.usage(b, now).ok());
                assert!(cached <= exact + 1e-9, "bucket {b} priority {p} at step {i}: {cached} > {exact}");
            }
        }
    }
    let later = now.plus(VIEW_TTL_MS);
    for b in 0..2u32 {
        for p in 0..2 {
            let limits = *e.pool.load().limits_of(BucketId(b));
            let exact = e.usage(BucketId(b), later).unwrap().headroom(&limits.ceilings[p]);
            let refreshed = e.headroom(&limits, BucketId(b), p, later, &|b| e.usage(b, later).ok());
            assert!((refreshed - exact).abs() < 1e-9, "refreshed after the TTL");
        }
    }
}

#[test]
fn round_robin_serves_every_key_of_every_project() {
    let config = EngineConfig { strategy: StrategyKind::RoundRobin, ..Default::default() };
    let e = engine(config, spec(&[("p", &["p1", "p2"]), ("q", &["q1", "q2"])], 100));
    let mut served = std::collections::HashMap::new();
    for i in 0..40u64 {
        let t = admitted(&e, Priority::Normal, T0.plus(i)).unwrap();
        *served.entry(e.pool().keys()[t.key.0 as usize].id.clone()).or_insert(0) += 1;
        e.settle(&t, Outcome::NotSent, T0.plus(i)).unwrap();
    }
    assert_eq!(served.len(), 4, "{served:?}");
    assert!(served.values().all(|&n| n == 10), "{served:?}");
}

#[test]
fn a_permit_dropped_before_sending_returns_its_quota_and_after_sending_keeps_it() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 10));
    let clock_now = e.clock().now();
    let unsent = e.try_acquire(&req(Priority::Normal)).unwrap();
    let bucket = unsent.ticket().bucket;
    drop(unsent);
    assert_eq!(e.usage(bucket, clock_now).unwrap().day_requests, 0, "never sent: returned");
    let mut sent = e.try_acquire(&req(Priority::Normal)).unwrap();
    sent.mark_sent();
    drop(sent);
    assert_eq!(e.usage(bucket, clock_now).unwrap().day_requests, 1, "sent, then dropped: still counted");
}

mod health {
    use super::*;
    use crate::provider::Exhaustion;

    fn capacity() -> Outcome {
        Outcome::RateLimited(QuotaExhausted { kind: Exhaustion::Capacity, ..Default::default() })
    }

    fn denied_reason(e: &Engine, now: Timestamp) -> Option<(DenyReason, Option<Timestamp>)> {
        match e.admit(&req(Priority::Normal), now).unwrap() {
            Decision::Denied(d) => Some((d.reason, d.retry_at)),
            Decision::Admitted(t) => {
                e.settle(&t, Outcome::NotSent, now).unwrap();
                None
            }
        }
    }

    /// A storm of capacity 429s: no key is disabled, the model backs off (longer each time),
    /// then one probe goes out and its success closes the breaker.
    #[test]
    fn capacity_refusals_back_off_the_model_and_blame_no_key() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k1", "k2"]), ("q", &["k3"])], 100));
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        e.settle(&t, capacity(), T0).unwrap();
        let (reason, until) = denied_reason(&e, T0.plus(1)).expect("backing off");
        assert_eq!(reason, DenyReason::ProviderBackoff);
        let until = until.unwrap();
        assert!((750..=1_250).contains(&(until.0 - T0.0)), "first back-off about 1 s: {}", until.0 - T0.0);
        // The probe after the back-off: one request only, the others wait for its answer.
        let probe = admitted(&e, Priority::Normal, until).expect("the probe");
        assert_eq!(denied_reason(&e, until).map(|d| d.0), Some(DenyReason::ProviderBackoff));
        // It fails too: the back-off doubles.
        e.settle(&probe, Outcome::Unavailable, until).unwrap();
        let (_, again) = denied_reason(&e, until.plus(1)).unwrap();
        assert!((1_500..=2_500).contains(&(again.unwrap().0 - until.0)), "second back-off about 2 s");
        let probe = admitted(&e, Priority::Normal, again.unwrap()).expect("the second probe");
        e.settle(&probe, Outcome::Success { input_tokens: 100, output_tokens: 10 }, again.unwrap()).unwrap();
        let later = again.unwrap().plus(1);
        assert!((0..10).all(|_| admitted(&e, Priority::Normal, later).is_some()), "full service again");
        let h = e.health();
        assert_eq!((h.keys_disabled, h.model_backoffs), (0, 2));
        assert_eq!(e.pool().keys().iter().filter(|k| k.usable()).count(), 3, "every key still serves");
    }

    /// A rejected key is disabled alone; after its cool-down one probe goes out; a failed
    /// probe doubles the wait; a probe that passes revives it.
    #[test]
    fn a_rejected_key_is_disabled_alone_probed_once_and_revived() {
        let config = EngineConfig { strategy: StrategyKind::RoundRobin, ..EngineConfig::default() };
        let e = engine(config, spec(&[("p", &["k1", "k2"])], 1_000));
        let bad = e.key("k1").unwrap();
        let t = (0..4).find_map(|_| admitted(&e, Priority::Normal, T0).filter(|t| t.key == bad)).unwrap();
        let before = e.usage(t.bucket, T0).unwrap().day_requests;
        e.settle(&t, Outcome::KeyRejected, T0).unwrap();
        assert_eq!(e.usage(t.bucket, T0).unwrap().day_requests, before - 1, "nothing was counted: refunded");
        for i in 0..20 {
            let t = admitted(&e, Priority::Normal, T0.plus(i)).expect("the project's other key serves");
            assert_ne!(t.key, bad);
        }
        let probe_at = T0.plus(60_000);
        let mut on_bad = Vec::new();
        for i in 0..10 {
            let t = admitted(&e, Priority::Normal, probe_at.plus(i)).unwrap();
            if t.key == bad {
                on_bad.push(t);
            }
        }
        assert_eq!(on_bad.len(), 1, "exactly one probe while it is out");
        e.settle(&on_bad[0], Outcome::KeyRejected, probe_at.plus(10)).unwrap();
        let second = probe_at.plus(10 + 120_000);
        // A failed probe: the wait doubles (two minutes), and meanwhile the key carries nothing.
        let meanwhile = probe_at.plus(60_000);
        assert!((0..20).all(|i| admitted(&e, Priority::Normal, meanwhile.plus(i)).is_some_and(|t| t.key != bad)));
        let probe = (0..4)
            .find_map(|i| admitted(&e, Priority::Normal, second.plus(i)).filter(|t| t.key == bad))
            .expect("second probe");
        e.settle(&probe, Outcome::Success { input_tokens: 100, output_tokens: 1 }, second.plus(5)).unwrap();
        let served: usize = (0..10)
            .filter(|i| admitted(&e, Priority::Normal, second.plus(10 + i)).is_some_and(|t| t.key == bad))
            .count();
        assert!(served >= 4, "revived, it serves its share again: {served}");
        let h = e.health();
        assert_eq!((h.keys_disabled, h.keys_probed, h.keys_revived), (2, 2, 1));
    }

    /// A 429 whose quotaValue is lower than the pool's limit: the pool learns it, and the
    /// project is admitted within the new limit from then on.
    #[test]
    fn a_cut_limit_is_learned_from_the_429() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 100));
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        let q = QuotaExhausted { limit: Some(3), ..QuotaExhausted::quota(Dimension::Rpm, Some(60_000)) };
        e.settle(&t, Outcome::RateLimited(q), T0).unwrap();
        let h = e.health();
        assert_eq!(h.limits_learned, 1);
        assert_eq!(h.events.last().unwrap().to_string(), "m RPM 100 → 3 for p");
        let after = T0.plus(60_000);
        assert_eq!((0..10).filter(|_| admitted(&e, Priority::Normal, after).is_some()).count(), 3);
    }

    /// A quota 429 that names nothing: a short, jittered back-off of that bucket only.
    #[test]
    fn an_unspecified_quota_429_backs_off_its_bucket_briefly() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 100));
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        e.settle(&t, Outcome::RateLimited(QuotaExhausted::default()), T0).unwrap();
        let (reason, at) = denied_reason(&e, T0.plus(1)).unwrap();
        assert_eq!(reason, DenyReason::CoolingDown(Dimension::Rpm));
        let wait = at.unwrap().0 - T0.0;
        assert!((5_000..=15_000).contains(&wait), "{wait}");
        assert_eq!(e.health().model_backoffs, 0);
        assert!(admitted(&e, Priority::Normal, at.unwrap()).is_some());
    }
}

mod health_review {
    use super::*;
    use crate::provider::Exhaustion;

    fn capacity() -> Outcome {
        Outcome::RateLimited(QuotaExhausted { kind: Exhaustion::Capacity, ..Default::default() })
    }

    /// A probe answered with a quota 429 proves the model serves: the breaker closes rather
    /// than wait forever for a success.
    #[test]
    fn a_probe_answered_with_a_quota_429_closes_the_breaker() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k"]), ("q", &["j"])], 100));
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        e.settle(&t, capacity(), T0).unwrap();
        let later = T0.plus(5_000);
        let probe = admitted(&e, Priority::Normal, later).expect("the probe");
        assert!(probe.model_probe);
        e.settle(&probe, Outcome::RateLimited(QuotaExhausted::quota(Dimension::Rpm, Some(1_000))), later).unwrap();
        assert!(admitted(&e, Priority::Normal, later.plus(1)).is_some_and(|t| !t.model_probe), "closed");
    }

    /// Only the probe's own answer moves the breaker: an older request dropped unsent does
    /// not let a second probe out.
    #[test]
    fn only_the_probe_answers_for_the_model() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k"]), ("q", &["j"])], 100));
        let old = admitted(&e, Priority::Normal, T0).unwrap();
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        e.settle(&t, capacity(), T0).unwrap();
        let later = T0.plus(5_000);
        let _probe = admitted(&e, Priority::Normal, later).expect("the probe");
        e.settle(&old, Outcome::NotSent, later).unwrap();
        assert!(admitted(&e, Priority::Normal, later).is_none(), "still one probe out");
    }

    /// Health never changes the pool: an admission never waits for (or makes) a pool change,
    /// so waiters served under a queue's lock cannot deadlock on one.
    #[test]
    fn key_health_leaves_the_pool_alone() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k1", "k2"])], 1_000));
        let before = e.pool();
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        e.settle(&t, Outcome::KeyRejected, T0).unwrap();
        for i in 0..5 {
            let t = admitted(&e, Priority::Normal, T0.plus(60_000 + i)).unwrap();
            e.settle(&t, Outcome::Success { input_tokens: 100, output_tokens: 1 }, T0.plus(60_000 + i)).unwrap();
        }
        assert!(Arc::ptr_eq(&before, &e.pool()), "no pool change from disabling, probing or reviving");
        assert_eq!(e.health().keys_revived, 1);
    }

    /// A limit the provider names higher than the pool's is not learned.
    #[test]
    fn only_cuts_are_learned() {
        let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 100));
        let t = admitted(&e, Priority::Normal, T0).unwrap();
        let q = QuotaExhausted { limit: Some(500), ..QuotaExhausted::quota(Dimension::Rpm, Some(1_000)) };
        e.settle(&t, Outcome::RateLimited(q), T0).unwrap();
        assert_eq!(e.health().limits_learned, 0);
    }
}

#[test]
fn a_batch_is_admitted_as_all_its_requests() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 60));
    let batch = Request::new(0, Prompt::Chars(4000)).batch(50);
    let Decision::Admitted(t) = e.admit(&batch, T0).unwrap() else { panic!("50 of 60 fit") };
    assert_eq!(t.reservation.requests, 50);
    assert!(matches!(e.admit(&batch, T0).unwrap(), Decision::Denied(_)), "another 50 do not");
    let u = e.usage(t.bucket, T0).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens), (50, 1000));
    assert_eq!(
        e.admit(&Request::new(0, Prompt::Chars(4)).batch(61), T0),
        Err(AdmitError::TooManyRequests { requests: 61, ceiling: 60 })
    );
    e.settle(&t, Outcome::NotSent, T0).unwrap();
    assert_eq!(e.usage(t.bucket, T0).unwrap().minute_requests, 0, "a refund returns every request");
}

#[test]
fn media_tokens_count_with_the_text() {
    let e = engine(EngineConfig::default(), spec(&[("p", &["k"])], 60));
    let image = Request::new(0, Prompt::Text("what is in this picture?")).media_tokens(258);
    let Decision::Admitted(t) = e.admit(&image, T0).unwrap() else { panic!("fits") };
    assert_eq!(t.estimated_input, 6 + 258);
}

#[test]
fn an_owned_permit_settles_from_usage_and_knows_its_project() {
    let e = std::sync::Arc::new(
        Engine::builder(spec(&[("proj-a", &["key-a"])], 60))
            .estimator(Box::new(estimate::Calibrated::new(1, 0.9)))
            .build()
            .unwrap(),
    );
    let text = "a prompt of some length ".repeat(20);
    let permit = e.try_acquire_owned(&Request::new(0, Prompt::Text(&text))).unwrap();
    let moved = std::thread::spawn(move || {
        assert_eq!((permit.project_id(), permit.key_id()), ("proj-a".to_owned(), "key-a".to_owned()));
        let bucket = permit.ticket().bucket;
        let usage = UsageMetadata { prompt: 77, cached: 0, candidates: 5, thoughts: 0 };
        permit.succeeded(&usage).unwrap();
        bucket
    })
    .join()
    .unwrap();
    let u = e.usage(moved, e.clock().now()).unwrap();
    assert_eq!(u.minute_tokens, 77, "settled from the usage");
    // The estimator learned the prompt's real count: its next estimate moved towards 77.
    let after = e.estimator().estimate(0, &Prompt::Text(&text));
    assert_ne!(after, Chars4.estimate(0, &Prompt::Text(&text)), "the lesson was taken");
}

#[test]
fn a_new_pool_applies_whole_or_not_at_all() {
    let e = engine(EngineConfig::default(), spec(&[("p1", &["k1", "k2"])], 10));
    let mut next = spec(&[("p1", &["k1"]), ("p2", &["k3"])], 10);
    next.projects[0].limits[0] = Some(Limits { rpm: 20, tpm: 1_000_000, rpd: 1000, tpd: None });
    let changes = e.reconcile_pool(&next).unwrap();
    assert_eq!(changes.keys_added, ["k3"]);
    assert_eq!(changes.keys_removed, ["k2"]);
    assert_eq!(changes.projects_added, ["p2"]);
    assert_eq!(changes.limits_changed, [("p1".to_owned(), "m".to_owned())]);
    assert!(e.reconcile_pool(&next).unwrap().is_empty(), "the same pool again changes nothing");
    // A bad change anywhere leaves everything as it was: here a new key and a zero limit.
    let mut bad = spec(&[("p1", &["k1", "k4"]), ("p2", &["k3"])], 10);
    bad.projects[1].limits[0] = Some(Limits { rpm: 0, tpm: 1_000_000, rpd: 1000, tpd: None });
    let before = e.pool();
    assert!(matches!(e.reconcile_pool(&bad), Err(ReconcileError::Invalid(_))));
    assert!(e.key("k4").is_none() && Arc::ptr_eq(&before, &e.pool()), "nothing applied");
    let moved = spec(&[("p1", &[]), ("p2", &["k1", "k3"])], 10);
    assert!(matches!(e.reconcile_pool(&moved), Err(ReconcileError::KeyMoved(_))));
    let back = spec(&[("p1", &["k1", "k2"]), ("p2", &["k3"])], 10);
    assert!(matches!(e.reconcile_pool(&back), Err(ReconcileError::KeyReturned(_))));
}

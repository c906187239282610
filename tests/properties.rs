//! Property tests of the accounting: the atomic, project-scoped engine never makes the judge
//! answer 429; windows never hold more than their limit; a denied request fits exactly at its
//! `retry_at`; capacity is the sum over usable projects.

use keysim::engine::{
    BucketKey, Buckets, Ceilings, Chars4, Cost, Decision, Dimension, Engine, EngineConfig, KeySpec, Limits,
    MemoryStore, ModelSpec, PoolEvent, PoolSpec, Priority, ProjectSpec, Prompt, QuotaScope, QuotaStore, Request,
    StrategyKind, Timestamp, TokenBasis, MINUTE_MS,
};
use keysim::scenario::{
    Arrival, EngineDef, EstimatorKind, ModelDef, OnExhausted, ProjectDef, Provider, Scenario, TimedEvent, Tokens,
    TrafficClass,
};
use mock_server::{Enforcement, FaultModel, LatencyModel};
use proptest::prelude::*;

const START: Timestamp = Timestamp(1_764_140_400_000); // 23:00 Pacific: the day rolls over mid-run

#[derive(Debug, Clone)]
struct Setup {
    projects: Vec<(Limits, usize)>,
    traffic: Vec<(Arrival, Tokens, Priority)>,
    events: Vec<(u64, u8, usize)>,
    enforcement: Enforcement,
    strategy: StrategyKind,
    reserve: f64,
    max_wait_ms: u64,
}

fn limits() -> impl Strategy<Value = Limits> {
    (1u64..6, 400u64..6_000, 3u64..60).prop_map(|(rpm, tpm, rpd)| Limits { rpm, tpm, rpd, tpd: None })
}

fn arrival() -> impl Strategy<Value = Arrival> {
    prop_oneof![
        (0.05f64..3.0).prop_map(|rate| Arrival::Poisson { rate }),
        (1u64..6, 1_000u64..60_000).prop_map(|(size, every_ms)| Arrival::Batch { size, every_ms }),
        (0.1f64..5.0, 1_000u64..20_000, 0u64..40_000).prop_map(|(rate, on_ms, off_ms)| Arrival::OnOff {
            rate,
            on_ms,
            off_ms
        }),
    ]
}

fn tokens() -> impl Strategy<Value = Tokens> {
    prop_oneof![
        (1u64..400).prop_map(Tokens::Fixed),
        (10.0f64..200.0, 1.0f64..8.0).prop_map(|(m, f)| Tokens::LogNormal { median: m, p99: m * f }),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec((limits(), 1usize..4), 1..4),
        prop::collection::vec((arrival(), tokens(), prop_oneof![Just(Priority::Normal), Just(Priority::High)]), 1..3),
        prop::collection::vec((0u64..600_000, 0u8..5, 0usize..16), 0..6),
        prop::sample::select(Enforcement::ALL.to_vec()),
        prop::sample::select(<StrategyKind as keysim::engine::Setting>::ALL.to_vec()),
        prop_oneof![Just(0.0), 0.0f64..0.5],
        prop_oneof![Just(0u64), 1_000u64..90_000],
    )
        .prop_map(|(projects, traffic, events, enforcement, strategy, reserve, max_wait_ms)| Setup {
            projects,
            traffic,
            events,
            enforcement,
            strategy,
            reserve,
            max_wait_ms,
        })
}

fn scenario(s: &Setup) -> Scenario {
    let model = ModelDef { name: "m".into(), limits: s.projects[0].0, estimator: None, thinking_tokens: 0 };
    let projects: Vec<ProjectDef> = s
        .projects
        .iter()
        .enumerate()
        .map(|(i, (l, keys))| ProjectDef {
            id: format!("p{i}"),
            tier: keysim::scenario::Tier::Free,
            keys: (0..*keys).map(|k| format!("p{i}-k{k}")).collect(),
            limits: vec![*l],
        })
        .collect();
    let mut known: Vec<String> = projects.iter().flat_map(|p| p.keys.clone()).collect();
    let mut events = Vec::new();
    let mut evs = s.events.clone();
    evs.sort();
    for (n, (at, kind, who)) in evs.into_iter().enumerate() {
        let key = known[who % known.len()].clone();
        let event = match kind {
            0 => PoolEvent::Disable(key),
            1 => PoolEvent::Enable(key),
            2 => PoolEvent::Revoke(key),
            3 => PoolEvent::Remove(key),
            _ => {
                let id = format!("added-{n}");
                known.push(id.clone());
                PoolEvent::Add(KeySpec { id, project: projects[who % projects.len()].id.clone() })
            }
        };
        events.push(TimedEvent { at_ms: at, event });
    }
    Scenario {
        replicas: None,
        gateway: Default::default(),
        name: "prop".into(),
        description: None,
        compare: Vec::new(),
        seed: 9,
        duration_ms: 600_000,
        start: START.plus(1_800_000),
        timeline_ms: 60_000,
        requests_csv: false,
        provider: Provider {
            tokenizer: None,
            enforcement: s.enforcement,
            counts_output: false,
            latency: LatencyModel { median_ms: 900.0, p99_ms: 5_000.0 },
            faults: FaultModel::default(),
            extra_faults: Default::default(),
            script: Default::default(),
        },
        models: vec![model],
        projects,
        engine: EngineDef {
            config: EngineConfig { strategy: s.strategy, reserve: s.reserve, seed: 3, ..EngineConfig::default() },
            estimator: EstimatorKind::Chars4,
            tokenizer: None,
            calibration_quantile: 0.96,
            calibration_base: Default::default(),
            estimate_cache: 0,
            shadow_estimators: Vec::new(),
            on_exhausted: if s.max_wait_ms == 0 { OnExhausted::Reject } else { OnExhausted::Queue },
            max_wait_ms: s.max_wait_ms,
        },
        traffic: s
            .traffic
            .iter()
            .enumerate()
            .map(|(i, (a, t, p))| TrafficClass {
                name: format!("t{i}"),
                arrival: a.clone(),
                prompt_tokens: *t,
                corpus: None,
                output_tokens: Tokens::Fixed(50),
                chars_per_token: 4.0,
                model: 0,
                priority: *p,
                max_output_tokens: None,
                start_ms: 0,
                end_ms: 600_000,
            })
            .collect(),
        events,
        expect: Vec::new(),
        warnings: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_atomic_project_scoped_engine_never_breaches(s in setup()) {
        let sc = scenario(&s);
        let (summary, _) = crate::common::run(&sc);
        let r = &summary.requests;
        prop_assert_eq!(r.breaches, 0, "{:?}", summary.requests);
        prop_assert_eq!(r.total, r.succeeded + r.breaches + r.denied + r.failed);
    }
}

/// Dimension ceilings from limits with neither safety nor reserve.
fn full(l: &Limits) -> Ceilings {
    Ceilings::from_limits(l, 0.0, 0.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn windows_never_exceed_limits_and_retry_at_is_exact(
        l in limits(),
        steps in prop::collection::vec((0u64..20_000, 1u64..800), 1..200),
    ) {
        let store = MemoryStore::new();
        let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
        let c = full(&l);
        let mut now = START;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (gap, tokens) in steps {
            now = now.plus(gap);
            match store.reserve(b, Cost::one(tokens), &c, now).unwrap() {
                Ok(_) => admitted.push((now.0, tokens)),
                Err(s) => {
                    if let Some(at) = s.retry_at {
                        prop_assert!(at > now);
                        if at.0 > now.0 + 1 {
                            prop_assert!(store.reserve(b, Cost::one(tokens), &c, Timestamp(at.0 - 1)).unwrap().is_err(), "fits before retry_at");
                        }
                        now = at;
                        prop_assert!(store.reserve(b, Cost::one(tokens), &c, now).unwrap().is_ok(), "must fit exactly at retry_at");
                        admitted.push((now.0, tokens));
                    } else {
                        prop_assert!(tokens > c.get(Dimension::Tpm));
                    }
                }
            }
            let in_window: Vec<&(u64, u64)> = admitted.iter().filter(|(t, _)| now.0 < t + MINUTE_MS).collect();
            prop_assert!(in_window.len() as u64 <= l.rpm);
            prop_assert!(in_window.iter().map(|(_, k)| k).sum::<u64>() <= l.tpm);
        }
    }

    #[test]
    fn capacity_is_the_sum_over_usable_projects(
        projects in prop::collection::vec((limits(), 0usize..4), 1..6),
        events in prop::collection::vec((0u8..5, 0usize..32), 0..20),
    ) {
        let spec = PoolSpec {
            models: vec![ModelSpec { name: "m".into(), limits: projects[0].0 }],
            projects: projects.iter().enumerate().map(|(i, (l, _))| ProjectSpec { id: format!("p{i}"), limits: vec![Some(*l)] }).collect(),
            keys: projects.iter().enumerate().flat_map(|(i, (_, n))| (0..*n).map(move |k| KeySpec { id: format!("p{i}-{k}"), project: format!("p{i}") })).collect(),
        };
        let mut state: Vec<(String, usize, bool, bool)> = spec.keys.iter().map(|k| (k.id.clone(), k.project[1..].parse().unwrap(), true, true)).collect();
        let engine = Engine::new(EngineConfig::default(), spec, MemoryStore::new(), Box::new(Chars4)).unwrap();
        for (n, (kind, who)) in events.into_iter().enumerate() {
            if kind == 4 || state.is_empty() {
                let p = who % projects.len();
                let id = format!("new-{n}");
                engine.apply(PoolEvent::Add(KeySpec { id: id.clone(), project: format!("p{p}") })).unwrap();
                state.push((id, p, true, true));
            } else {
                let i = who % state.len();
                let id = state[i].0.clone();
                match kind {
                    0 => { engine.apply(PoolEvent::Disable(id)).unwrap(); state[i].2 = false; }
                    1 => { engine.apply(PoolEvent::Enable(id)).unwrap(); state[i].2 = true; }
                    2 => { engine.apply(PoolEvent::Revoke(id)).unwrap(); state[i].3 = false; }
                    _ => { engine.apply(PoolEvent::Remove(id)).unwrap(); state[i].3 = false; }
                }
            }
            let mut usable: Vec<usize> = state.iter().filter(|k| k.2 && k.3).map(|k| k.1).collect();
            usable.sort_unstable();
            usable.dedup();
            let cap = engine.capacity(0, START);
            prop_assert_eq!(cap.projects, usable.len());
            prop_assert_eq!(cap.limit(Dimension::Rpm), usable.iter().map(|&p| projects[p].0.rpm).sum::<u64>());
            prop_assert_eq!(cap.limit(Dimension::Tpm), usable.iter().map(|&p| projects[p].0.tpm).sum::<u64>());
            prop_assert_eq!(cap.limit(Dimension::Rpd), usable.iter().map(|&p| projects[p].0.rpd).sum::<u64>());
            prop_assert_eq!(cap.keys, state.iter().filter(|k| k.2 && k.3).count());
        }
    }
}

#[test]
fn concurrent_threads_never_jointly_exceed_a_limit() {
    // Many threads race for one project's RPM: exactly `rpm` win, whatever the interleaving.
    let limits = Limits { rpm: 7, tpm: 1_000_000, rpd: 1_000, tpd: None };
    let spec = PoolSpec {
        models: vec![ModelSpec { name: "m".into(), limits }],
        projects: vec![ProjectSpec { id: "p".into(), limits: vec![Some(limits)] }],
        keys: (0..4).map(|k| KeySpec { id: format!("k{k}"), project: "p".into() }).collect(),
    };
    let config = EngineConfig { scope: QuotaScope::Project, basis: TokenBasis::Input, ..Default::default() };
    let engine = Engine::new(config, spec, MemoryStore::new(), Box::new(Chars4)).unwrap();
    let wins = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    let req = Request::new(0, Prompt::Chars(40)).priority(Priority::Normal);
                    if let Ok(Decision::Admitted(_)) = engine.admit(&req, START) {
                        wins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 7);
}

/// One step of a service using `acquire`, in the order a proptest draws them.
#[derive(Clone, Debug)]
enum Op {
    /// A caller starts waiting: priority high?, prompt tokens, max wait in seconds, and
    /// whether it sends when granted (or, like a cancelled handler, drops its permit unsent).
    Acquire(bool, u64, u64, bool),
    /// A waiting caller gives up (its future is dropped).
    Cancel(usize),
    /// A caller holding a permit settles it with what the provider counted, or drops it if
    /// it never sent.
    Finish(usize),
    /// Time passes.
    Advance(u64),
    /// A key is disabled, enabled, or one is added to a project.
    Pool(u8, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 1u64..400, 0u64..120, prop_oneof![4 => Just(true), 1 => Just(false)])
            .prop_map(|(h, t, w, s)| Op::Acquire(h, t, w, s)),
        1 => (0usize..64).prop_map(Op::Cancel),
        3 => (0usize..64).prop_map(Op::Finish),
        2 => (1u64..40_000).prop_map(Op::Advance),
        1 => (0u8..3, 0usize..16).prop_map(|(k, w)| Op::Pool(k, w)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random interleavings of acquire, cancel, drop, settle and pool events, driven by hand on
    /// a manual clock: the independent judge never answers 429 to a request the engine let
    /// through, and no counter ever goes below zero (the store's subtractions would panic) or
    /// above its limit.
    #[test]
    fn acquire_cancel_drop_settle_and_pool_events_never_breach(
        projects in prop::collection::vec((limits(), 1usize..3), 1..4),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        use std::future::Future;
        use std::pin::Pin;
        use std::sync::Arc;
        use std::task::{Context, Poll, Waker};
        use keysim::engine::{AcquireError, Clock, ManualClock, Outcome, Permit};
        use mock_server::{Enforcement, FaultModel, Judge, JudgeConfig, LatencyModel, ModelQuota, ProjectQuota, Tier, Verdict};

        let clock = Arc::new(ManualClock::new(START));
        let spec = PoolSpec {
            models: vec![ModelSpec { name: "m".into(), limits: projects[0].0 }],
            projects: projects.iter().enumerate().map(|(i, (l, _))| ProjectSpec { id: format!("p{i}"), limits: vec![Some(*l)] }).collect(),
            keys: projects.iter().enumerate().flat_map(|(i, (_, n))| (0..*n).map(move |k| KeySpec { id: format!("p{i}-k{k}"), project: format!("p{i}") })).collect(),
        };
        let mut keys: Vec<(String, usize)> = spec.keys.iter().map(|k| (k.id.clone(), k.project[1..].parse().unwrap())).collect();
        let engine = Engine::builder(spec).clock(clock.clone()).build().unwrap();
        let mut judge = Judge::new(JudgeConfig {
            enforcement: Enforcement::Sliding,
            models: vec!["m".into()],
            projects: projects.iter().enumerate().map(|(i, (l, _))| ProjectQuota {
                id: format!("p{i}"),
                tier: Tier::Free,
                limits: vec![ModelQuota { rpm: l.rpm, tpm: l.tpm, rpd: l.rpd, tpd: l.tpd }],
            }).collect(),
            latency: LatencyModel { median_ms: 100.0, p99_ms: 200.0 },
            faults: FaultModel::default(),
        });
        let texts: Vec<String> = (1..400).map(|t| "x".repeat(4 * t)).collect();
        type Waiting<'e> = Pin<Box<dyn Future<Output = Result<Permit<'e, MemoryStore>, AcquireError>> + 'e>>;
        let mut waiting: Vec<(Waiting<'_>, u64, bool)> = Vec::new();
        let mut held: Vec<(Permit<'_, MemoryStore>, u64, bool)> = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        for op in ops {
            match op {
                Op::Acquire(high, tokens, wait_s, send) => {
                    let req = Request::new(0, Prompt::Text(&texts[tokens as usize - 1]))
                        .priority(if high { Priority::High } else { Priority::Normal });
                    let e = &engine;
                    waiting.push((Box::pin(async move { e.acquire(&req, std::time::Duration::from_secs(wait_s)).await }), tokens, send));
                }
                Op::Cancel(i) if !waiting.is_empty() => drop(waiting.remove(i % waiting.len())),
                Op::Finish(i) if !held.is_empty() => {
                    let (permit, tokens, sent) = held.remove(i % held.len());
                    if sent {
                        permit.settle(Outcome::Success { input_tokens: tokens, output_tokens: 5 }).unwrap();
                    } else {
                        drop(permit);
                    }
                }
                Op::Advance(ms) => clock.advance(ms),
                Op::Pool(kind, who) => {
                    let (id, project) = keys[who % keys.len()].clone();
                    let event = match kind {
                        0 => PoolEvent::Disable(id),
                        1 => PoolEvent::Enable(id),
                        _ => {
                            let id = format!("p{project}-added-{}", keys.len());
                            keys.push((id.clone(), project));
                            PoolEvent::Add(KeySpec { id, project: format!("p{project}") })
                        }
                    };
                    engine.apply(event).unwrap();
                }
                _ => {}
            }
            // Every waiter is polled after every step, as a runtime would when woken.
            // A granted caller sends at once; the judge decides with its own accounting.
            let mut still = Vec::new();
            for (mut f, tokens, send) in waiting.drain(..) {
                match f.as_mut().poll(&mut cx) {
                    Poll::Ready(Ok(p)) => {
                        if send {
                            let project = engine.bucket_owner(p.ticket().bucket).0;
                            let key_ok = keys.iter().any(|(k, kp)| *kp == project && k == &p.key_id());
                            prop_assert!(key_ok, "the permit names a key of its project");
                            let verdict = judge.submit(project, 0, tokens, clock.now().0);
                            prop_assert_eq!(verdict, Verdict::Accepted, "a breach at {:?}", clock.now());
                        }
                        held.push((p, tokens, send));
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => still.push((f, tokens, send)),
                }
            }
            waiting = still;
            // Nothing the engine counts exceeds a limit.
            let pool = engine.pool();
            for g in pool.groups(0) {
                let u = engine.usage(g.bucket, clock.now()).unwrap();
                let l = &projects[g.project].0;
                prop_assert!(u.minute_requests <= l.rpm && u.minute_tokens <= l.tpm && u.day_requests <= l.rpd, "{:?} over {:?}", u, l);
            }
        }
        // Everything settled or dropped: what remains counted is what was sent.
        drop(waiting);
        for (permit, tokens, sent) in held {
            if sent {
                permit.settle(Outcome::Success { input_tokens: tokens, output_tokens: 5 }).unwrap();
            }
        }
        let now = clock.now();
        for g in engine.pool().groups(0) {
            let u = engine.usage(g.bucket, now).unwrap();
            let j = judge.usage(g.project, 0, now.0);
            prop_assert_eq!(u.day_requests, j.day_requests, "the engine's count of project {} matches what was sent", g.project);
        }
    }
}

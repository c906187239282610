//! keysim's benchmarks, one harness with a group per area: admission and settlement at
//! several pool sizes and strategies, token estimation of a 4 KB prompt (cold and cached),
//! warning evaluation, and end-to-end simulator throughput.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keysim::engine::{
    Chars4, Decision, Engine, EngineConfig, Estimator, KeySpec, Limits, MemoryStore, ModelSpec, Outcome, PoolSpec,
    Priority, ProjectSpec, Prompt, Request, Setting, StrategyKind, Timestamp,
};
use keysim::sim::{simulate, Outputs};

/// A pool of `keys` keys, one per project, with room for everything the bench sends.
fn engine(keys: usize, strategy: StrategyKind) -> Engine {
    let limits = Limits { rpm: 1_000_000, tpm: 10_000_000_000, rpd: 1_000_000_000, tpd: None };
    let spec = PoolSpec {
        models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits }],
        projects: (0..keys).map(|i| ProjectSpec { id: format!("p{i}"), limits: vec![Some(limits)] }).collect(),
        keys: (0..keys).map(|i| KeySpec { id: format!("k{i}"), project: format!("p{i}") }).collect(),
    };
    let config = EngineConfig { strategy, seed: 1, ..EngineConfig::default() };
    Engine::new(config, spec, MemoryStore::new(), Box::new(Chars4)).expect("valid pool")
}

fn admission(c: &mut Criterion) {
    let mut g = c.benchmark_group("admit+settle");
    let req = Request::new(0, Prompt::Chars(2_400)).priority(Priority::Normal);
    let mut cases: Vec<(usize, StrategyKind)> =
        [10, 1_000, 10_000].iter().map(|&n| (n, StrategyKind::PowerOfTwo)).collect();
    cases.extend([StrategyKind::RoundRobin, StrategyKind::LeastUsed, StrategyKind::Headroom].map(|s| (1_000, s)));
    for (keys, strategy) in cases {
        let e = engine(keys, strategy);
        let mut now = 1_764_140_400_000u64;
        g.bench_with_input(BenchmarkId::new(strategy.name(), keys), &keys, |b, _| {
            b.iter(|| {
                now += 1;
                let t = Timestamp(now);
                match e.admit(black_box(&req), t) {
                    Ok(Decision::Admitted(ticket)) => e
                        .settle(&ticket, Outcome::Success { input_tokens: 590, output_tokens: 200 }, t)
                        .expect("settles"),
                    other => panic!("the bench pool never denies: {other:?}"),
                }
            })
        });
    }
    g.finish();
}

/// What `acquire` adds over `admit` when capacity is free: both on the system clock, at
/// 1,000 keys, each request settled as never sent (so windows stay empty however long the
/// bench runs). The acquire future is polled once with a no-op waker: with capacity free it
/// completes at once, so no runtime is measured.
fn acquire(c: &mut Criterion) {
    use keysim::engine::{Clock, SystemClock};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut g = c.benchmark_group("acquire");
    let req = Request::new(0, Prompt::Chars(2_400));
    let e = engine(1_000, StrategyKind::PowerOfTwo);
    g.bench_function("admit+settle/1000", |b| {
        b.iter(|| {
            let now = SystemClock.now();
            match e.admit(black_box(&req), now) {
                Ok(Decision::Admitted(t)) => e.settle(&t, Outcome::NotSent, now).expect("settles"),
                other => panic!("the bench pool never denies: {other:?}"),
            }
        })
    });
    let wait = std::time::Duration::from_secs(30);
    g.bench_function("acquire+settle/1000", |b| {
        let mut cx = Context::from_waker(Waker::noop());
        b.iter(|| {
            let mut f = std::pin::pin!(e.acquire(black_box(&req), wait));
            match f.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(permit)) => permit.settle(Outcome::NotSent).expect("settles"),
                other => panic!("capacity is free: {other:?}"),
            }
        })
    });
    g.finish();
}

fn simulator(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/throughput.toml");
    let sc = keysim::scenario::load(&path, &[]).expect("throughput scenario");
    let requests = simulate(&sc, Outputs::default()).expect("runs").aggregate.counts.total;
    let mut g = c.benchmark_group("simulator");
    g.sample_size(10);
    g.throughput(Throughput::Elements(requests));
    g.bench_function("24h-at-50rps", |b| b.iter(|| simulate(black_box(&sc), Outputs::default()).expect("runs")));
    g.finish();
}

/// Drawing a run's figures (SVG and PNG) and its page, from the quickstart's trace.
fn report(c: &mut Criterion) {
    use keysim::report::plots::{figures, RunData};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml");
    let sc = keysim::scenario::load(&path, &[]).expect("quickstart scenario");
    let r = simulate(&sc, Outputs { trace: true, ..Outputs::default() }).expect("runs");
    let data = RunData {
        scenario: &sc,
        aggregate: &r.aggregate,
        trace: r.trace.as_ref(),
        outcomes: None,
        end_to_end_us: None,
    };
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function("draw-quickstart-figures", |b| {
        b.iter(|| figures(black_box(&data)).iter().map(|f| f.draw().expect("draws").png.len()).sum::<usize>())
    });
    g.bench_function("simulate-quickstart-with-trace", |b| {
        b.iter(|| simulate(black_box(&sc), Outputs { trace: true, ..Outputs::default() }).expect("runs"))
    });
    g.bench_function("simulate-quickstart-without-trace", |b| {
        b.iter(|| simulate(black_box(&sc), Outputs::default()).expect("runs"))
    });
    g.finish();
}

/// A 4 KB prompt of mixed English prose and code, different on every call when `salt` changes.
fn prompt_4k(salt: u64) -> String {
    let base = "Rate limits apply per project, not per API key. fn admit(&self, req: &Request) -> Decision { self.store.reserve(bucket, tokens) } ";
    let mut s = format!("#{salt} ");
    while s.len() < 4096 {
        s.push_str(base);
    }
    s.truncate(4096);
    s
}

fn estimation(c: &mut Criterion) {
    use keysim::engine::estimate::calibrated::Base;
    use keysim::engine::estimate::{Cached, Calibrated, HfTokenizer, Tiktoken};
    let mut g = c.benchmark_group("estimate-4k");
    let hot = prompt_4k(0);
    let mut estimators: Vec<(&str, Box<dyn Estimator>)> = vec![
        ("chars4", Box::new(Chars4)),
        ("tiktoken", Box::new(Tiktoken)),
        ("tiktoken-cached", Box::new(Cached::new(Tiktoken, 4096))),
        ("calibrated", Box::new(Calibrated::new(1, 0.96))),
        ("calibrated-tiktoken", Box::new(Calibrated::with_base(1, 0.96, Base::Tiktoken))),
    ];
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tokenizers/gemini/tokenizer.json");
    if let Ok(bytes) = std::fs::read(&path) {
        let t = HfTokenizer::from_bytes(&bytes).expect("tokenizer loads");
        estimators.push(("gemini-tokenizer", Box::new(t.clone())));
        estimators.push(("gemini-tokenizer-cached", Box::new(Cached::new(t, 4096))));
    } else {
        eprintln!("no Gemini tokenizer at {}: run .ci/fetch-gemini-tokenizer.sh to bench it", path.display());
    }
    for (name, e) in &estimators {
        // Cold: a prompt the estimator (and any cache) has never seen.
        let mut salt = 1u64;
        g.bench_function(BenchmarkId::new("cold", name), |b| {
            b.iter_batched(
                || {
                    salt += 1;
                    prompt_4k(salt)
                },
                |p| e.estimate(0, &Prompt::Text(black_box(&p))),
                criterion::BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("hot", name), |b| b.iter(|| e.estimate(0, &Prompt::Text(black_box(&hot)))));
    }
    g.finish();
}

fn warnings(c: &mut Criterion) {
    use keysim::engine::warn::{Monitor, Rule, Subject};
    use keysim::engine::{Ceilings, Usage};
    let ceilings = Ceilings::from_limits(&Limits { rpm: 1000, tpm: 1_000_000, rpd: 10_000, tpd: None }, 0.0, 0.0);
    let mut m = Monitor::new(Rule::default(), 600_000);
    let mut now = 1_764_140_400_000u64;
    let mut used = 0u64;
    c.bench_function("warn/observe-one-bucket", |b| {
        b.iter(|| {
            now += 10;
            used = (used + 1) % 9_000;
            let u = Usage {
                minute_requests: used % 1000,
                minute_tokens: used * 100 % 1_000_000,
                day_requests: used,
                day_tokens: used * 100,
                minute_frees_at: Some(Timestamp(now + 60_000)),
                day_ends: Timestamp(now + 3_600_000),
                cooling_until: None,
            };
            let labels = [("project", "proj-a"), ("model", "gemini-2.5-flash")];
            let s = Subject { id: 0, alertname: "QuotaNearLimit", labels: &labels, name: "proj-a", projects: 1 };
            m.observe(&s, black_box(&u), &ceilings, Timestamp(now))
        })
    });
}

/// A full evaluation of the warning rules over pools of several sizes, with every bucket
/// busy: per bucket it is what one evaluation costs; divided by the admissions between two
/// evaluations (`evaluate_every`), what warnings cost an admission.
fn warn_evaluate(c: &mut Criterion) {
    use keysim::engine::warn::{WarnConfig, Warner};
    let mut g = c.benchmark_group("warn/evaluate");
    for keys in [10usize, 1_000] {
        let e = engine(keys, StrategyKind::PowerOfTwo);
        let mut now = 1_764_140_400_000u64;
        let req = Request::new(0, Prompt::Chars(2_400)).priority(Priority::Normal);
        for _ in 0..keys * 20 {
            now += 1;
            if let Ok(Decision::Admitted(t)) = e.admit(&req, Timestamp(now)) {
                e.settle(&t, Outcome::Success { input_tokens: 590, output_tokens: 200 }, Timestamp(now))
                    .expect("settles");
            }
        }
        let mut w = Warner::new(WarnConfig::default());
        g.throughput(Throughput::Elements(keys as u64));
        g.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter(|| {
                now += 10_000;
                black_box(w.evaluate(&e, Timestamp(now)))
            })
        });
    }
    g.finish();
}

/// What the proxy's traffic log costs a request: its line built (as the proxy builds it) and
/// handed to the writer's queue, on a log that goes to /dev/null.
fn traffic_log(c: &mut Criterion) {
    use keysim_proxy::traffic::{Line, TrafficLog, TrafficLogDef};
    let def = TrafficLogDef { path: "/dev/null".into(), max_bytes: u64::MAX, files: 1, queue: 1 << 20 };
    let log = TrafficLog::open(&def, Default::default()).expect("/dev/null opens");
    let client = String::from("token-1");
    c.bench_function("proxy/traffic-log-line", |b| {
        b.iter(|| {
            log.record(Box::new(Line {
                v: keysim_proxy::traffic::SCHEMA,
                ts: 1_765_036_800_000,
                client: client.clone(),
                surface: "gemini",
                model: "gemini-2.5-flash".to_owned(),
                ..Default::default()
            }))
        })
    });
}

criterion_group!(benches, admission, acquire, estimation, warnings, warn_evaluate, simulator, report, traffic_log);
criterion_main!(benches);

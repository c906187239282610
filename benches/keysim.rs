//! keysim's benchmarks, one harness with a group per area: admission and settlement at
//! several pool sizes and strategies, and end-to-end simulator throughput.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keysim::engine::{
    Chars4, Decision, Engine, EngineConfig, KeySpec, Limits, MemoryStore, ModelSpec, Outcome, PoolSpec, Priority,
    ProjectSpec, Prompt, Request, StrategyKind, Timestamp,
};
use keysim::sim::{simulate, Outputs};

/// A pool of `keys` keys, one per project, with room for everything the bench sends.
fn engine(keys: usize, strategy: StrategyKind) -> Engine {
    let limits = Limits { rpm: 1_000_000, tpm: 10_000_000_000, rpd: 1_000_000_000, tpd: None };
    let spec = PoolSpec {
        models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits }],
        projects: (0..keys).map(|i| ProjectSpec { id: format!("p{i}"), limits: vec![limits] }).collect(),
        keys: (0..keys).map(|i| KeySpec { id: format!("k{i}"), project: format!("p{i}") }).collect(),
    };
    let config = EngineConfig { strategy, seed: 1, ..EngineConfig::default() };
    Engine::new(config, spec, MemoryStore::new(), Box::new(Chars4)).expect("valid pool")
}

fn admission(c: &mut Criterion) {
    let mut g = c.benchmark_group("admit+settle");
    let req = Request { model: 0, prompt: Prompt::Chars(2_400), priority: Priority::Normal, max_output_tokens: None };
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
                    Ok(Decision::Admitted(ticket)) => {
                        e.settle(&ticket, Outcome::Success { input_tokens: 590, output_tokens: 200 }, t)
                    }
                    other => panic!("the bench pool never denies: {other:?}"),
                }
            })
        });
    }
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

criterion_group!(benches, admission, simulator);
criterion_main!(benches);

//! Admission against the quota stores under concurrency: admissions per second and the
//! admission call's p50/p99 latency with 1, 16 and 64 concurrent callers, for the in-memory
//! store and (given its address) a Redis server or Cluster; and round trips per call.
//!
//! ```sh
//! cargo bench --bench store                                   # in-memory only
//! cargo bench --bench store -- redis://127.0.0.1:6379         # and a Redis server
//! cargo bench --bench store -- redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! ```
//! Each caller is a thread looping admit → settle on one shared engine for `SECONDS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keysim::engine::{
    Chars4, Decision, Engine, EngineConfig, KeySpec, Limits, MemoryStore, ModelSpec, Outcome, PoolSpec, ProjectSpec,
    Prompt, QuotaStore, RedisConfig, RedisStore, Request, SystemClock,
};

const SECONDS: u64 = 3;

fn pool() -> PoolSpec {
    let limits = Limits { rpm: 1_000_000_000, tpm: u64::MAX / 8, rpd: 1_000_000_000_000, tpd: None };
    PoolSpec {
        models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits }],
        projects: (0..100).map(|i| ProjectSpec { id: format!("bench-p{i}"), limits: vec![Some(limits)] }).collect(),
        keys: (0..100).map(|i| KeySpec { id: format!("bench-k{i}"), project: format!("bench-p{i}") }).collect(),
    }
}

/// (admissions per second, p50 µs, p99 µs) with `callers` threads.
fn measure<S: QuotaStore + 'static>(engine: Arc<Engine<S>>, callers: usize) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let e = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let req = Request::new(0, Prompt::Chars(400));
                while Instant::now() < until {
                    let now = keysim::engine::Clock::now(&SystemClock);
                    let started = Instant::now();
                    let decision = e.admit(&req, now).expect("a known model");
                    h.saturating_record((started.elapsed().as_nanos() as u64).max(1));
                    match decision {
                        Decision::Admitted(t) => {
                            let _ = e.settle(&t, Outcome::Success { input_tokens: 95, output_tokens: 5 }, now);
                        }
                        Decision::Denied(d) => panic!("the bench pool never denies: {d:?}"),
                    }
                }
                h
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for t in threads {
        all.add(t.join().expect("caller")).expect("same bounds");
    }
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    (all.len() as f64 / SECONDS as f64, us(0.5), us(0.99))
}

fn engine<S: QuotaStore>(store: S) -> Arc<Engine<S>> {
    Arc::new(Engine::new(EngineConfig::default(), pool(), store, Box::new(Chars4)).expect("valid pool"))
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a store address.
    let url = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!("{:<28} {:>8} {:>14} {:>10} {:>10}", "store", "callers", "admissions/s", "p50 µs", "p99 µs");
    for callers in [1, 16, 64] {
        let (rate, p50, p99) = measure(engine(MemoryStore::new()), callers);
        println!("{:<28} {callers:>8} {rate:>14.0} {p50:>10.2} {p99:>10.2}", "memory");
    }
    let Some(url) = url else { return };
    for callers in [1, 16, 64] {
        let mut config = RedisConfig::parse(&url).expect("a redis:// or redis+cluster:// address");
        config.prefix = format!("keysim-bench:{}", std::process::id());
        config.deadline = Duration::from_secs(1);
        let e = engine(RedisStore::new(config).expect("a valid address"));
        let (rate, p50, p99) = measure(Arc::clone(&e), callers);
        let stats = e.store().stats();
        let calls = 2.0 * rate * SECONDS as f64;
        println!(
            "{:<28} {callers:>8} {rate:>14.0} {p50:>10.2} {p99:>10.2}   round trips per call {:.3}, errors {}",
            keysim::load::redact_target(&url),
            stats.round_trips as f64 / calls,
            stats.errors
        );
    }
}

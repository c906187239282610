//! Admission against the quota stores under concurrency, the way a service admits: admissions
//! per second and the admission's p50/p99 latency with 1, 16 and 64 concurrent callers (tasks
//! on a two-worker tokio runtime), for the in-memory store and (given its address) a Redis
//! server or Cluster; and round trips per admission.
//!
//! ```sh
//! cargo bench --bench store                                   # in-memory only
//! cargo bench --bench store -- redis://127.0.0.1:6379         # and a Redis server
//! cargo bench --bench store -- redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! ```
//! Each caller loops for `SECONDS`: `acquire_owned` (no wait), then the permit settles from
//! an answer's usage — at once in memory, in the background on Redis, as in the proxy. Callers
//! loop as fast as they can (the store's capacity; latency is then mostly queueing), and, on
//! Redis, 64 callers paced to 15,000 admissions a second in all (latency at that load).
//! `KEYSIM_STORE_WARMUP=65` first runs each Redis row unmeasured for that many seconds, so that
//! the minute window is full and entries leave it at every call, as in a service that has
//! run for a while (a row of 3 seconds sees none leave).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keysim::engine::{
    AnyStore, Chars4, Engine, EngineConfig, KeySpec, Limits, ModelSpec, PoolSpec, ProjectSpec, Prompt, RedisConfig,
    RedisStore, Request, UsageMetadata,
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

/// Seconds each row runs unmeasured first (`KEYSIM_STORE_WARMUP`, default none).
fn warmup() -> Duration {
    Duration::from_secs(std::env::var("KEYSIM_STORE_WARMUP").ok().and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// (admissions per second, p50 µs, p99 µs, admissions made in all) with `callers` tasks, each
/// as fast as it can or, with `rate`, all of them together at `rate` admissions a second,
/// measured after `warmup`.
fn measure(
    rt: &tokio::runtime::Runtime,
    engine: Arc<Engine<AnyStore>>,
    callers: usize,
    rate: Option<f64>,
    warmup: Duration,
) -> (f64, f64, f64, u64) {
    let (all, made) = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let from = Instant::now() + warmup;
        let until = from + Duration::from_secs(SECONDS);
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let e = Arc::clone(&engine);
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                    let req = Request::new(0, Prompt::Chars(400));
                    let usage = UsageMetadata { prompt: 95, cached: 0, candidates: 5, thoughts: 0 };
                    // Paced callers start spread over one interval.
                    let every = rate.map(|r| Duration::from_secs_f64(callers as f64 / r));
                    let mut next = start + every.map_or(Duration::ZERO, |e| e.mul_f64(c as f64 / callers as f64));
                    let mut made = 0u64;
                    while Instant::now() < until {
                        if let Some(every) = every {
                            tokio::time::sleep_until(next).await;
                            next += every;
                        }
                        let started = Instant::now();
                        let permit = e.acquire_owned(&req, Duration::ZERO).await;
                        made += 1;
                        if started >= from {
                            h.saturating_record((started.elapsed().as_nanos() as u64).max(1));
                        }
                        match permit {
                            Ok(p) => p.succeeded(&usage).expect("settled or handed to the background"),
                            Err(d) => panic!("the bench pool never denies: {d:?}"),
                        }
                    }
                    (h, made)
                })
            })
            .collect();
        let (mut all, mut made) = (Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"), 0);
        for t in tasks {
            let (h, n) = t.await.expect("caller");
            all.add(h).expect("same bounds");
            made += n;
        }
        engine.drain_settlements(Duration::from_secs(10)).await;
        (all, made)
    });
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    (all.len() as f64 / SECONDS as f64, us(0.5), us(0.99), made)
}

fn engine(store: AnyStore) -> Arc<Engine<AnyStore>> {
    Arc::new(Engine::new(EngineConfig::default(), pool(), store, Box::new(Chars4)).expect("valid pool"))
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a store address.
    let url = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("{:<28} {:>8} {:>14} {:>10} {:>10}", "store", "callers", "admissions/s", "p50 µs", "p99 µs");
    for callers in [1, 16, 64] {
        let (rate, p50, p99, _) =
            measure(&rt, engine(AnyStore::Memory(Default::default())), callers, None, Duration::ZERO);
        println!("{:<28} {callers:>8} {rate:>14.0} {p50:>10.2} {p99:>10.2}", "memory");
    }
    let Some(url) = url else { return };
    for (callers, paced) in [(1, None), (16, None), (64, None), (64, Some(15_000.0))] {
        let mut config = RedisConfig::parse(&url).expect("a redis:// or redis+cluster:// address");
        config.prefix = format!("keysim-bench:{}:{callers}:{paced:?}", std::process::id());
        config.deadline = Duration::from_secs(1);
        let e = engine(AnyStore::Redis(Box::new(RedisStore::new(config).expect("a valid address"))));
        let (rate, p50, p99, made) = measure(&rt, Arc::clone(&e), callers, paced, warmup());
        let stats = e.store().redis().expect("a Redis store").stats();
        let admissions = made as f64;
        let name = match paced {
            Some(r) => format!("{} at {r:.0}/s", keysim::load::redact_target(&url)),
            None => keysim::load::redact_target(&url),
        };
        println!(
            "{name:<28} {callers:>8} {rate:>14.0} {p50:>10.2} {p99:>10.2}   round trips per admission {:.3} (settlement included), errors {}",
            stats.round_trips as f64 / admissions,
            stats.errors
        );
    }
}

//! What only a Redis store can get wrong: round trips, the server's clock, layouts, expiry,
//! deadlines, outages. Each test that stops or slows a server starts its own
//! (`KEYSIM_REDIS_SERVER`), so the shared one stays untouched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::conformance::redis::{address, prefix, server};
use crate::store::QuotaStore;
use crate::{Chars4, Decision, Engine, EngineConfig, KeySpec, Limits, ModelSpec, Outcome, PoolSpec, ProjectSpec};
use crate::{DenyReason, Prompt, Request, MINUTE_MS};

const T0: Timestamp = Timestamp(1_764_140_400_000);

fn pool(projects: usize, rpm: u64) -> PoolSpec {
    let limits = Limits { rpm, tpm: 1_000_000, rpd: 100_000, tpd: None };
    PoolSpec {
        models: vec![ModelSpec { name: "gemini-2.5-flash".into(), limits }],
        projects: (0..projects).map(|i| ProjectSpec { id: format!("p{i}"), limits: vec![Some(limits)] }).collect(),
        keys: (0..projects).map(|i| KeySpec { id: format!("k{i}"), project: format!("p{i}") }).collect(),
    }
}

/// A store that blocks: these tests drive the engine's synchronous API.
type Store = crate::Blocking<RedisStore>;

fn blocking(store: RedisStore) -> Store {
    crate::Blocking::new(store).expect("a runtime")
}

fn engine(store: Store, projects: usize, rpm: u64) -> Engine<Store> {
    Engine::new(EngineConfig::default(), pool(projects, rpm), store, Box::new(Chars4)).expect("valid pool")
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// A redis-server of the test's own on a free port, killed when dropped.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    fn start() -> Option<Self> {
        let bin = address("KEYSIM_REDIS_SERVER")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Some(Self::on(&bin, port))
    }

    fn on(bin: &str, port: u16) -> Self {
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let s = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while redis::Client::open(s.url()).unwrap().get_connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admit(e: &Engine<Store>, now: Timestamp) -> Decision {
    e.admit(&Request::new(0, Prompt::Chars(400)), now).unwrap()
}

#[test]
fn an_admission_and_a_settlement_are_one_round_trip_each() {
    let Some(store) = server("round_trips") else { return };
    let e = engine(store, 10, 1000);
    // The first call loads the function library, and each bucket's view is read once
    // before the strategy has seen it.
    for _ in 0..200 {
        if let Decision::Admitted(t) = admit(&e, T0) {
            e.settle(&t, Outcome::NotSent, T0).unwrap();
        }
    }
    let before = e.store().inner().stats().round_trips;
    for i in 0..100 {
        let now = T0.plus(i);
        let Decision::Admitted(t) = admit(&e, now) else { panic!("room for all") };
        e.settle(&t, Outcome::Success { input_tokens: 90, output_tokens: 10 }, now).unwrap();
    }
    // Views are fresh from every answer: no reads besides the calls themselves.
    assert_eq!(e.store().inner().stats().round_trips - before, 200);
    assert_eq!(e.store().inner().uses_functions(), Some(true));
}

#[test]
fn the_server_clock_counts_not_the_callers() {
    let Some(url) = address("KEYSIM_REDIS_URL") else { return };
    let config = RedisConfig { prefix: prefix("server_clock"), ..RedisConfig::new(url) };
    let s = blocking(RedisStore::new(config).unwrap());
    let b = s.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    let c = Ceilings([10, 1000, 1000, u64::MAX]);
    // The caller claims a time a year ago; the server's clock wins.
    let g = s.reserve(b, Cost::one(1), &c, T0).unwrap().unwrap();
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(g.reservation.at.0.abs_diff(wall) < 5_000, "{} vs {wall}", g.reservation.at.0);
    assert_eq!(g.reservation.day_ends, crate::next_pacific_midnight(Timestamp(wall)));
}

#[test]
fn a_bucket_written_by_another_layout_is_refused_not_misread() {
    let Some(store) = server("layout") else { return };
    let url = address("KEYSIM_REDIS_URL").unwrap();
    let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    let c = Ceilings([10, 1000, 1000, u64::MAX]);
    store.reserve(b, Cost::one(1), &c, T0).unwrap().unwrap();
    let counters = store.inner().names[b.0 as usize].get().unwrap().counters.clone();
    // Counters of layout 1, in this layout's packing; then counters of another size.
    let mut packed = 1.0f64.to_le_bytes().to_vec();
    packed.resize(120, 0);
    let _: () = redis::cmd("SET").arg(&counters).arg(packed).query(&mut raw(&url)).unwrap();
    match store.reserve(b, Cost::one(1), &c, T0) {
        Err(StoreError::Protocol(m)) => assert!(m.contains("layout v1"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _: () = redis::cmd("SET").arg(&counters).arg("v=2").query(&mut raw(&url)).unwrap();
    match store.reserve(b, Cost::one(1), &c, T0) {
        Err(StoreError::Protocol(m)) => assert!(m.contains("another layout"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// On the server's clock, keys live until a minute past the day's end (or a cool-down's end),
/// and a window emptied and made again (or rewritten by a reconcile) keeps its expiry.
#[test]
fn keys_expire_when_nothing_in_them_matters() {
    let Some(url) = address("KEYSIM_REDIS_URL") else { return };
    let store =
        blocking(RedisStore::new(RedisConfig { prefix: prefix("expiry"), ..RedisConfig::new(url.clone()) }).unwrap());
    let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    let c = Ceilings([10, 1000, 1000, u64::MAX]);
    let g = store.reserve(b, Cost::one(5), &c, T0).unwrap().unwrap();
    let names = store.inner().names[b.0 as usize].get().unwrap();
    let mut conn = raw(&url);
    let ttl = |conn: &mut redis::Connection, key: &str| -> i64 { redis::cmd("PTTL").arg(key).query(conn).unwrap() };
    let to_midnight = (g.reservation.day_ends.0 - g.reservation.at.0) as i64;
    for key in [&names.window, &names.counters] {
        let t = ttl(&mut conn, key);
        assert!((to_midnight + 55_000..=to_midnight + 60_000).contains(&t), "{key}: {t} ({to_midnight} to midnight)");
    }
    // A reconcile of the only entry rewrites it without emptying the window.
    store.reconcile(b, &g.reservation, 3, T0).unwrap();
    assert!(ttl(&mut conn, &names.window) > 0, "the window still expires after a reconcile");
    // A window emptied (and so deleted) and made again still expires.
    let b2 = store.bucket(&BucketKey { owner: "q".into(), model: "m".into() }).unwrap();
    let window2 = store.inner().names[b2.0 as usize].get().unwrap().window.clone();
    let h = store.reserve(b2, Cost::one(1), &c, T0).unwrap().unwrap();
    store.refund(b2, &h.reservation, T0).unwrap();
    assert_eq!(ttl(&mut conn, &window2), -2, "an empty window is no key");
    store.reserve(b2, Cost::one(1), &c, T0).unwrap().unwrap();
    assert!(ttl(&mut conn, &window2) > 0, "the remade window expires");
    // A cool-down past midnight keeps them until it ends.
    let wall = g.reservation.at;
    store.cool_down(b, Dimension::Rpd, wall.plus(30 * 3_600_000), wall).unwrap();
    assert!(ttl(&mut conn, &names.counters) > 30 * 3_600_000 - 10_000);
}

/// On a caller's clock (virtual time), nothing expires on the server's.
#[test]
fn keys_on_a_caller_clock_do_not_expire() {
    let Some(store) = server("no_expiry") else { return };
    let url = address("KEYSIM_REDIS_URL").unwrap();
    let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    store.reserve(b, Cost::one(1), &Ceilings([10, 1000, 1000, u64::MAX]), T0).unwrap().unwrap();
    let names = store.inner().names[b.0 as usize].get().unwrap();
    let t: i64 = redis::cmd("PTTL").arg(&names.counters).query(&mut raw(&url)).unwrap();
    assert_eq!(t, -1);
}

/// Counters that expired before their window (evicted, say) start a clean window: the
/// leftover entries count for nothing, not against the new counts.
#[test]
fn a_leftover_window_is_not_counted_against_fresh_counters() {
    let Some(store) = server("leftover") else { return };
    let url = address("KEYSIM_REDIS_URL").unwrap();
    let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    let c = Ceilings([3, 1000, 1000, u64::MAX]);
    for i in 0..3 {
        store.reserve(b, Cost::one(10), &c, T0.plus(i)).unwrap().unwrap();
    }
    let names = store.inner().names[b.0 as usize].get().unwrap();
    let _: () = redis::cmd("DEL").arg(&names.counters).query(&mut raw(&url)).unwrap();
    for i in 0..3 {
        store.reserve(b, Cost::one(10), &c, T0.plus(10 + i)).unwrap().unwrap();
    }
    let u = store.usage(b, T0.plus(MINUTE_MS + 5)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens), (3, 30));
}

#[test]
fn functions_refused_fall_back_to_eval() {
    let Some(store) = server("eval") else { return };
    store.inner().force_eval();
    let e = engine(store, 2, 10);
    assert!(matches!(admit(&e, T0), Decision::Admitted(_)));
    assert_eq!(e.store().inner().uses_functions(), Some(false));
}

#[test]
fn an_unreachable_store_fails_closed_and_says_so() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = blocking(RedisStore::new(RedisConfig::new(format!("redis://:secret-pw@127.0.0.1:{port}"))).unwrap());
    assert!(!format!("{store:?}").contains("secret-pw"), "the password is never shown");
    let e = engine(store, 2, 10);
    match admit(&e, T0) {
        Decision::Denied(d) => assert_eq!(d.reason, DenyReason::StoreUnavailable),
        d => panic!("expected a denial, got {d:?}"),
    }
    // Reconnecting backs off: the next calls fail fast without connecting again.
    let connects_tried = e.store().inner().stats().errors;
    let started = Instant::now();
    for _ in 0..100 {
        assert!(matches!(admit(&e, T0), Decision::Denied(_)));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(e.store().inner().stats().errors >= connects_tried);
}

#[test]
fn a_slow_server_hits_the_deadline_and_admission_fails_closed() {
    let Some(own) = OwnServer::start() else { return };
    let config =
        RedisConfig { prefix: prefix("slow"), deadline: Duration::from_millis(50), ..RedisConfig::new(own.url()) };
    let e = engine(blocking(RedisStore::new(config).unwrap()), 2, 10);
    assert!(matches!(admit(&e, T0), Decision::Admitted(_)), "a healthy server admits");
    let url = own.url();
    let sleeper = std::thread::spawn(move || {
        let slept: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("0.5").query(&mut raw(&url));
        slept.expect("DEBUG SLEEP");
    });
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let d = admit(&e, T0);
    let took = started.elapsed();
    sleeper.join().unwrap();
    match d {
        Decision::Denied(d) => assert_eq!(d.reason, DenyReason::StoreUnavailable),
        d => panic!("expected a denial, got {d:?}"),
    }
    assert!(took < Duration::from_millis(400), "the deadline held: {took:?}");
}

#[test]
fn service_resumes_when_the_server_returns() {
    let Some(own) = OwnServer::start() else { return };
    let bin = address("KEYSIM_REDIS_SERVER").unwrap();
    let config =
        RedisConfig { prefix: prefix("outage"), deadline: Duration::from_millis(200), ..RedisConfig::new(own.url()) };
    let e = engine(blocking(RedisStore::new(config).unwrap()), 1, 1000);
    let mut admitted = 0;
    for _ in 0..5 {
        if let Decision::Admitted(t) = admit(&e, T0) {
            e.settle(&t, Outcome::Success { input_tokens: 100, output_tokens: 0 }, T0).unwrap();
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    let port = own.stop();
    for _ in 0..5 {
        match admit(&e, T0) {
            Decision::Denied(d) => assert_eq!(d.reason, DenyReason::StoreUnavailable),
            d => panic!("nothing is admitted while the store is down: {d:?}"),
        }
    }
    let _back = OwnServer::on(&bin, port);
    // A fresh server (nothing persisted): admissions resume once the back-off allows.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Decision::Admitted(_) = admit(&e, T0) {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn many_buckets_on_a_cluster_never_cross_slots() {
    let Some(store) = crate::conformance::redis::cluster("cluster_engine") else { return };
    let e = engine(store, 50, 5);
    let mut admitted = 0;
    for i in 0..400 {
        match admit(&e, T0.plus(i)) {
            Decision::Admitted(t) => {
                admitted += 1;
                e.settle(&t, Outcome::Success { input_tokens: 100, output_tokens: 1 }, T0.plus(i)).unwrap();
            }
            Decision::Denied(d) => assert_ne!(d.reason, DenyReason::StoreUnavailable, "{d:?}"),
        }
    }
    assert_eq!(admitted, 250, "50 projects × RPM 5");
    assert_eq!(e.store().inner().stats().errors, 0);
}

/// Four replicas, RPM 40, each having admitted its 10 when the store stops mid-minute.
/// Failing closed (the default), nothing more is admitted; in degraded mode each replica
/// admits its share, ⌊40 / 4⌋ = 10, from its own counters, so the minute sees 80 = twice the
/// limit — the stated worst case, and no more.
#[test]
fn degraded_mode_over_admits_at_most_one_more_limit() {
    let Some(own) = OwnServer::start() else { return };
    let limit = 40;
    let replicas = 4;
    let config = |name: &str| RedisConfig {
        prefix: prefix(name),
        time: RedisTime::Caller,
        deadline: Duration::from_millis(100),
        ..RedisConfig::new(own.url())
    };
    let (strict_config, degraded_config) = (config("strict"), config("degraded"));
    let strict: Vec<Engine<Store>> =
        (0..replicas).map(|_| engine(blocking(RedisStore::new(strict_config.clone()).unwrap()), 1, limit)).collect();
    let degraded: Vec<Engine<crate::Degraded<Store>>> = (0..replicas)
        .map(|_| {
            let store =
                crate::Degraded::new(blocking(RedisStore::new(degraded_config.clone()).unwrap()), replicas as u64);
            Engine::new(EngineConfig::default(), pool(1, limit), store, Box::new(Chars4)).unwrap()
        })
        .collect();
    let req = Request::new(0, Prompt::Chars(400));
    let count = |attempts: u64, admit: &dyn Fn(u64) -> bool| (0..attempts).filter(|&i| admit(i)).count() as u64;
    let each = limit / replicas as u64;
    let before: Vec<u64> = strict
        .iter()
        .map(|e| count(each, &|i| matches!(e.admit(&req, T0.plus(i)).unwrap(), Decision::Admitted(_))))
        .chain(
            degraded
                .iter()
                .map(|e| count(each, &|i| matches!(e.admit(&req, T0.plus(i)).unwrap(), Decision::Admitted(_)))),
        )
        .collect();
    assert_eq!(before, vec![each; 2 * replicas], "with the store up, every replica admits");
    own.stop();
    let later = T0.plus(1_000);
    let after_strict: u64 = strict
        .iter()
        .map(|e| count(100, &|i| matches!(e.admit(&req, later.plus(i)).unwrap(), Decision::Admitted(_))))
        .sum();
    let after_degraded: Vec<u64> = degraded
        .iter()
        .map(|e| count(100, &|i| matches!(e.admit(&req, later.plus(i)).unwrap(), Decision::Admitted(_))))
        .collect();
    assert_eq!(after_strict, 0, "fail closed: nothing more");
    assert_eq!(after_degraded, vec![each; replicas], "each replica its share");
    let minute = limit + after_degraded.iter().sum::<u64>();
    assert_eq!(minute, 2 * limit, "the stated bound, reached and not passed");
    assert!(degraded.iter().all(|e| e.store().fallbacks() > 0));
}

#[test]
fn addresses_parse_and_never_show_their_password() {
    let c = RedisConfig::parse("redis+cluster://:s3cret@a:7000,b:7001").unwrap();
    assert!(c.cluster);
    assert_eq!(c.urls, vec!["redis://:s3cret@a:7000", "redis://:s3cret@b:7001"], "the credentials go to every node");
    assert!(!format!("{c:?}").contains("s3cret"));
    match RedisConfig::parse("redis-cluster://:hunter2@cache-1:6379") {
        Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
        Ok(_) => panic!("an unknown scheme is refused"),
    }
}

/// Counts too large for the script's doubles are held at the largest exact one, never
/// lost: a bucket with no token ceilings still counts them.
#[test]
fn huge_counts_are_held_not_lost() {
    let Some(store) = server("huge") else { return };
    let b = store.bucket(&BucketKey { owner: "p".into(), model: "m".into() }).unwrap();
    let unlimited = Ceilings([10, u64::MAX, 1000, u64::MAX]);
    let g = store.reserve(b, Cost::one(1 << 60), &unlimited, T0).unwrap().unwrap();
    assert_eq!(g.usage.minute_tokens, EXACT - 1);
    let u = store.reconcile(b, &g.reservation, 100_000_000_000_000, T0.plus(1)).unwrap();
    assert_eq!(u.minute_tokens, 100_000_000_000_000, "1e14 tokens: counted, and the member still parses");
    let u = store.usage(b, T0.plus(MINUTE_MS)).unwrap();
    assert_eq!((u.minute_requests, u.minute_tokens), (0, 0), "and it leaves the window whole");
}

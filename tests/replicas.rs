//! Engine replicas sharing one quota store: separate `keysim load` processes (and replicas in
//! one process) against one fake, on a real Redis server and a real three-node Cluster.
//!
//! Addresses come from `.ci/redis.sh` (`KEYSIM_REDIS_URL`, `KEYSIM_REDIS_CLUSTER`,
//! `KEYSIM_REDIS_SERVER`); without them the tests print why they skip, except under CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{keysim, temp_dir};
use crate::mock::start_with;

const BURST: &str = "tests/replicas/burst.toml";
const STEADY: &str = "tests/replicas/steady.toml";

/// The address in `var`, or why the test skips; under CI a missing one fails.
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

/// A key prefix of this test's own.
pub(crate) fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("keysim-it:{test}:{}:{nanos}", std::process::id())
}

/// Starts `keysim load` of `scenario` against `base` with `extra` arguments.
fn spawn_load(scenario: &str, base: &str, dir: &Path, extra: &[&str]) -> Child {
    keysim()
        .args(["load", scenario, "--target", base, "--json", "--no-plots", "--out"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keysim load starts")
}

/// Its summary, once it ends.
fn summary(child: Child) -> Value {
    let out = child.wait_with_output().expect("keysim load ends");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

fn n(s: &Value, k: &str) -> u64 {
    s["requests"][k].as_u64().unwrap_or_else(|| panic!("requests.{k} in {s}"))
}

/// `processes` load processes at once, each sending the burst (64 concurrent requests) to
/// one fake; their summaries.
fn burst_from_processes(processes: usize, extra: &[&str]) -> Vec<Value> {
    let m = start_with("sustained", BURST, &[]);
    let dirs: Vec<PathBuf> = (0..processes).map(|i| temp_dir(&format!("replica-{i}"))).collect();
    let children: Vec<Child> = dirs.iter().map(|d| spawn_load(BURST, &m.base, d, extra)).collect();
    children.into_iter().map(summary).collect()
}

fn totals(summaries: &[Value]) -> (u64, u64) {
    for s in summaries {
        assert_eq!(n(s, "total"), 64, "one burst each");
        assert_eq!(n(s, "total"), n(s, "succeeded") + n(s, "breaches") + n(s, "denied") + n(s, "failed"));
    }
    (summaries.iter().map(|s| n(s, "succeeded")).sum(), summaries.iter().map(|s| n(s, "breaches")).sum())
}

/// Four processes, each 64 concurrent requests, one pool of 20 a minute: sharing a Redis
/// they admit 20 between them and nothing breaches; counting alone, each admits 20 and the
/// provider refuses what the pool cannot serve.
#[test]
fn four_replica_processes_on_one_redis_never_breach() {
    let Some(url) = address("KEYSIM_REDIS_URL") else { return };
    let p = prefix("processes");
    let shared = burst_from_processes(4, &["--store", &url, "--store-prefix", &p]);
    assert_eq!(totals(&shared), (20, 0), "shared: the pool's 20, no breach");
    for s in &shared {
        assert_eq!(s["load"]["store"], url.as_str());
        assert_eq!(s["load"]["settle_errors"], 0);
    }
    let alone = burst_from_processes(4, &[]);
    let (succeeded, breaches) = totals(&alone);
    assert_eq!(succeeded, 20, "the provider still serves only its 20");
    assert_eq!(breaches, 60, "each process sent its own 20: limit × 4");
}

#[test]
fn four_replica_processes_on_a_redis_cluster_never_breach() {
    let Some(nodes) = address("KEYSIM_REDIS_CLUSTER") else { return };
    let store = format!("redis+cluster://{nodes}");
    let shared = burst_from_processes(4, &["--store", &store, "--store-prefix", &prefix("cluster")]);
    assert_eq!(totals(&shared), (20, 0));
    for s in &shared {
        assert_eq!(s["requests"]["denied_by_reason"].get("store-unavailable"), None, "no CROSSSLOT or other error");
    }
}

/// Replicas in one process (`--replicas`), each with its own connection.
#[test]
fn replicas_in_one_process_share_the_store() {
    let Some(url) = address("KEYSIM_REDIS_URL") else { return };
    let shared =
        burst_from_processes(1, &["--replicas", "4", "--store", &url, "--store-prefix", &prefix("in-process")]);
    assert_eq!(totals(&shared), (20, 0));
    assert_eq!(shared[0]["load"]["replicas"], 4);
    let alone = burst_from_processes(1, &["--replicas", "4"]);
    let (_, breaches) = totals(&alone);
    assert!(breaches > 0, "four unshared replicas over-admit");
}

/// A redis-server of this test's own, persisting every write (so that a restart keeps the
/// counters, as a production Redis with AOF does).
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    bin: String,
}

impl OwnRedis {
    fn start(bin: String) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = Self { child: None, port, dir: temp_dir("own-redis"), bin };
        s.up();
        s
    }

    fn up(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Requests the store counted today in `project`'s flash bucket under `prefix`, read as
    /// any replica reads it.
    fn day_requests(&self, prefix: &str, project: &str) -> u64 {
        use keysim::engine::{Blocking, BucketKey, Buckets, QuotaStore};
        let mut c = keysim::engine::RedisConfig::parse(&self.url()).expect("a redis URL");
        c.prefix = prefix.into();
        let store = Blocking::new(keysim::engine::RedisStore::new(c).expect("a store")).expect("a runtime");
        let b = store.bucket(&BucketKey { owner: project.into(), model: "gemini-2.5-flash".into() }).unwrap();
        store.usage(b, keysim::engine::Timestamp(0)).expect("the store answers").day_requests
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// Redis goes away three seconds into a nine-second run and returns three seconds later.
/// Meanwhile requests are denied with reason `store-unavailable`, nothing breaches, service
/// resumes, and the store's request counts equal what was sent.
#[test]
fn a_redis_outage_fails_closed_and_service_resumes() {
    let Some(bin) = address("KEYSIM_REDIS_SERVER") else { return };
    let mut redis = OwnRedis::start(bin);
    let m = start_with("sustained", STEADY, &[]);
    let dir = temp_dir("outage");
    let p = prefix("outage");
    let load = spawn_load(STEADY, &m.base, &dir, &["--store", &redis.url(), "--store-prefix", &p]);
    std::thread::sleep(Duration::from_secs(3));
    redis.down();
    std::thread::sleep(Duration::from_secs(3));
    redis.up();
    let s = summary(load);
    let unavailable = s["requests"]["denied_by_reason"]["store-unavailable"].as_u64().unwrap_or(0);
    assert!(unavailable >= 6, "denials say why: {s}");
    assert_eq!(n(&s, "breaches"), 0);
    assert_eq!(n(&s, "failed"), 0);
    assert!(n(&s, "succeeded") >= 18, "served before and after the outage: {}", n(&s, "succeeded"));
    assert_eq!(n(&s, "total"), n(&s, "succeeded") + n(&s, "denied"));
    // Nothing double-counted or lost: the store counted, per project, what was sent. One
    // more is possible: a reservation the server made and persisted whose answer the kill
    // cut off stays counted (conservative: the engine cannot know it was made).
    for row in s["per_project"].as_array().unwrap() {
        let project = row["project"].as_str().unwrap();
        let sent = row["succeeded"].as_u64().unwrap() + row["breaches"].as_u64().unwrap();
        let counted = redis.day_requests(&p, project);
        assert!((sent..=sent + 1).contains(&counted), "{project}: {counted} counted, {sent} sent");
    }
}

/// The simulated replicas of `scenarios/replicas.toml`, with `sets` (and no store trouble
/// unless asked): (breaches, lost capacity, store-unavailable denials, succeeded).
fn simulated(sets: &[&str]) -> (u64, u64, u64, u64) {
    let mut all = vec!["replicas.outages=[]", "replicas.slowdowns=[]"];
    all.extend_from_slice(sets);
    let (s, _) = crate::common::run(&crate::common::scenario("replicas", &all));
    let r = s.replicas.as_ref().expect("the summary describes the replicas");
    assert_eq!(r.count, 4);
    (s.requests.breaches, s.requests.lost_capacity, r.store_unavailable, s.requests.succeeded)
}

/// Strict replicas share one store: no over-admission. Unshared ones each admit the whole
/// limit. Cached ones over-admit more the longer they go between syncs; leased ones never
/// over-admit but lose more capacity the longer they go between renewals.
#[test]
fn simulated_replicas_over_admit_or_lose_capacity_as_their_mode_says() {
    let reject = "engine.on_exhausted=reject";
    let (strict, _, unavailable, _) = simulated(&["replicas.mode=strict", reject]);
    assert_eq!((strict, unavailable), (0, 0));
    let (unshared, ..) = simulated(&["replicas.mode=unshared", reject]);
    assert!(unshared > 250, "four replicas each using the whole limit: {unshared}");
    let cached: Vec<u64> = ["100ms", "1s", "5s"]
        .iter()
        .map(|i| simulated(&["replicas.mode=cached", &format!("replicas.interval={i}"), reject]).0)
        .collect();
    assert!(cached[0] < cached[1] && cached[1] < cached[2], "cached over-admits more with longer syncs: {cached:?}");
    assert!(cached[2] < unshared, "and never as much as unshared replicas");
    let leased: Vec<(u64, u64)> = ["100ms", "1s", "5s"]
        .iter()
        .map(|i| {
            let (b, lost, ..) = simulated(&["replicas.mode=leased", &format!("replicas.interval={i}"), reject]);
            (b, lost)
        })
        .collect();
    assert!(leased.iter().all(|(b, _)| *b == 0), "leases never over-admit: {leased:?}");
    assert!(
        leased[0].1 <= leased[1].1 && leased[1].1 <= leased[2].1 && leased[0].1 < leased[2].1,
        "lost capacity grows with the interval: {leased:?}"
    );
    let (_, strict_lost, ..) = simulated(&["replicas.mode=strict", reject]);
    assert!(strict_lost < leased[0].1, "capacity leased to one replica is lost to the others");
}

/// An outage and a slowdown past the deadline: strict replicas fail closed for their
/// length (denied, store-unavailable), never breach, and serve again after.
#[test]
fn simulated_store_trouble_fails_strict_replicas_closed() {
    let sc = crate::common::scenario("replicas", &[]);
    let (s, _) = crate::common::run(&sc);
    let r = s.replicas.as_ref().unwrap();
    assert_eq!((r.outages, r.slowdowns), (1, 1));
    assert_eq!(s.requests.breaches, 0);
    // Two minutes down and one slow, at 44 requests a minute: about 130 requests.
    assert!((100..=170).contains(&r.store_unavailable), "{}", r.store_unavailable);
    assert_eq!(s.requests.denied_by_reason.get("store-unavailable").copied(), Some(r.store_unavailable));
    let (_, _, none, succeeded) = simulated(&[]);
    assert_eq!(none, 0);
    assert!(s.requests.succeeded < succeeded, "the outage cost what it denied");
}

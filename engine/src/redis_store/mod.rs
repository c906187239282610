//! The quota store on Redis or Redis Cluster, shared by every replica of a service (feature
//! `redis`).
//!
//! Every operation on a bucket is **one round trip**: a call of the function library
//! `keysim_v3_<hash>` (`FCALL`), or the same Lua text through `EVALSHA`/`EVAL` where functions are
//! not allowed (managed proxies, Redis before 7). The script checks and counts every
//! dimension of the bucket atomically, so replicas can never over-admit between them.
//!
//! - **Time** is the Redis server's (`TIME`), never a replica's, and a server clock that steps
//!   back never moves a bucket's time back; the day is the **Pacific** calendar day, computed
//!   by the script, so every replica agrees on midnight Pacific, daylight time included.
//!   [`RedisTime::Caller`] uses the caller's time instead, for virtual time and tests.
//! - **Keys** are `<prefix>:v3:{<owner>|<model>}:w` (the minute window) and `…:m` (counters);
//!   the hash tag keeps a bucket in one Cluster slot, so there are no `CROSSSLOT` errors. Keys
//!   expire once nothing in them matters (the day has ended, cool-downs are over), so memory
//!   is bounded by the buckets in use.
//! - **Versions**: the library, its function and the key prefix carry the layout version
//!   (`v3`), and the function's name also a hash of its code, so two versions of the code
//!   never share a loaded function. A later layout gets new names, and a script that finds a bucket written by
//!   another layout refuses with an error rather than misread it: a rolling deploy cannot
//!   corrupt counters.
//! - **Connections**: one multiplexed connection (a server's, or a Cluster's) carries every
//!   caller's calls, so calls from concurrent tasks go out together (pipelined) and no
//!   caller waits for a connection. A connection that fails is dropped, and reconnecting
//!   backs off exponentially with jitter (failing fast meanwhile). Every call has a
//!   deadline: connect, write and read each time out after it (a first call that loads the
//!   library, or a Cluster redirect, makes a second round trip, bounded alike).
//! - **Fail closed**: every failure is a [`StoreError`], and the engine denies admission with
//!   reason `store-unavailable`. Nothing falls back to per-process counting unless a
//!   [`Degraded`](crate::Degraded) store is configured explicitly.
//!
//! It is an [`AsyncStore`]: every call is awaited, and no thread blocks on a round trip. A
//! caller without an async runtime wraps it in [`Blocking`](crate::Blocking).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::RedisError;

use super::limits::{Ceilings, Dimension};
use super::slots::Slots;
use super::store::{
    AsyncStore, BucketId, BucketKey, Buckets, Cost, Grant, Reservation, Shortfall, StoreCall, StoreError, Usage,
};
use super::time::Timestamp;

/// The Lua text both the function library and `EVAL` run.
const CORE: &str = include_str!("keysim.lua");
/// The layout version in key names (and the layout check in the script).
const LAYOUT: &str = "v3";
/// Tokens at or past this cannot be counted exactly by the script (Lua numbers are doubles).
const EXACT: u64 = 1 << 53;
/// The most requests one admission counts (Gemini's `batchEmbedContents` takes at most a few
/// hundred; the script adds one window entry per request).
const MAX_BATCH: u64 = 100_000;

/// Whose clock a [`RedisStore`] counts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisTime {
    /// The Redis server's `TIME` (default): every replica counts by one clock.
    #[default]
    Server,
    /// The `now` each call passes (virtual time, tests). Replicas must then share a clock.
    Caller,
}

/// How to reach Redis, and how long to wait for it. Its `Debug` hides passwords.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` of a server, or several node addresses of a
    /// Cluster (set [`RedisConfig::cluster`]).
    pub urls: Vec<String>,
    /// Whether `urls` are nodes of a Redis Cluster.
    pub cluster: bool,
    /// Connecting, writing a call and reading its answer each give up after this long.
    pub deadline: Duration,
    /// The first part of every key name.
    pub prefix: String,
    /// Whose clock counts.
    pub time: RedisTime,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("cluster", &self.cluster)
            .field("deadline", &self.deadline)
            .field("prefix", &self.prefix)
            .field("time", &self.time)
            .field("max_idle", &self.max_idle)
            .finish()
    }
}

impl RedisConfig {
    /// A standalone server at `url` with a 250 ms deadline, prefix `keysim`, the server's clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            cluster: false,
            deadline: Duration::from_millis(250),
            prefix: "keysim".into(),
            time: RedisTime::Server,
            max_idle: 64,
        }
    }

    /// A Redis Cluster reached through any of `nodes`.
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { urls: nodes.into_iter().map(Into::into).collect(), cluster: true, ..Self::new("") }
    }

    /// Reads `redis://…` (one server) or `redis+cluster://[user:password@]host:port,host:port`
    /// (Cluster nodes, the credentials for all), as `--store` takes them.
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        if let Some(rest) = spec.strip_prefix("redis+cluster://") {
            let (creds, nodes) = match rest.rfind('@') {
                Some(at) => (format!("{}@", &rest[..at]), &rest[at + 1..]),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> =
                nodes.split(',').filter(|s| !s.is_empty()).map(|n| format!("redis://{creds}{n}")).collect();
            if nodes.is_empty() {
                return Err(StoreError::Unavailable("no cluster node named".into()));
            }
            return Ok(Self::cluster(nodes));
        }
        if spec.starts_with("redis://") || spec.starts_with("rediss://") || spec.starts_with("unix://") {
            return Ok(Self::new(spec));
        }
        Err(StoreError::Unavailable(format!(
            "{}: expected redis://host:port or redis+cluster://host:port,host:port",
            redact_url(spec)
        )))
    }
}

/// What a [`RedisStore`] has done, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Commands sent (each one round trip).
    pub round_trips: u64,
    /// Connections opened.
    pub connects: u64,
    /// Calls that failed (and made the engine fail closed).
    pub errors: u64,
}

/// How the script is invoked on this deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Invoke {
    /// Not known yet: try the function library first.
    Unknown = 0,
    /// `FCALL keysim_v3_<hash>`.
    Function = 1,
    /// `EVALSHA`, falling back to `EVAL`: functions are refused here.
    Eval = 2,
}

/// One multiplexed connection, shared by every caller: a server's, or a Cluster's
/// (following its slots).
#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn send(&mut self, cmd: &redis::Cmd) -> Result<redis::Value, RedisError> {
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn pipeline(&mut self, pipe: &redis::Pipeline) -> Result<Vec<redis::Value>, RedisError> {
        match self {
            Self::Single(c) => pipe.query_async(c).await,
            Self::Cluster(c) => pipe.query_async(c).await,
        }
    }
}

#[allow(clippy::large_enum_variant, reason = "one per store, never moved")]
enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// When the next connection attempt may be made after failures.
struct Backoff {
    next: Option<Instant>,
    delay: Duration,
}

/// A bucket's two key names.
struct Names {
    window: String,
    counters: String,
}

/// The quota store on Redis. See the [module](self) documentation.
pub struct RedisStore {
    config: RedisConfig,
    target: Target,
    /// The connection in use; none until the first call, and again after it failed.
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that callers arriving meanwhile wait for that connection.
    connecting: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
    invoke: AtomicU8,
    /// `keysim_v3_<hash of the code>`: the library's and the function's name, so that every
    /// version of the code is loaded and called under its own name.
    function: String,
    library: String,
    script: redis::Script,
    eval_code: String,
    ids: Mutex<HashMap<BucketKey, BucketId>>,
    names: Slots<OnceLock<Names>>,
    round_trips: AtomicU64,
    connects: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("urls", &self.config.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("cluster", &self.config.cluster)
            .field("deadline", &self.config.deadline)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A URL as it may be shown: without its password.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// A store for `config`. Nothing is connected yet: the first call connects (and loads the
    /// function library), so a store can be built while Redis is still starting, and outside
    /// the async runtime its calls will run on.
    pub fn new(config: RedisConfig) -> Result<Self, StoreError> {
        let target = if config.cluster {
            let client = redis::cluster::ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.deadline.max(Duration::from_millis(500)))
                .response_timeout(config.deadline)
                // One retry, soon: enough to follow a slot that moved (MOVED refreshes the
                // map) without sleeping past the deadline on a cluster that is down.
                .retries(1)
                .min_retry_wait(1)
                .max_retry_wait(10)
                .build()
                .map_err(|e| unavailable(&e))?;
            Target::Cluster(client)
        } else {
            let url = config.urls.first().ok_or_else(|| StoreError::Unavailable("no Redis URL".into()))?;
            Target::Single(redis::Client::open(url.as_str()).map_err(|e| unavailable(&e))?)
        };
        let eval_code = format!("{CORE}\nreturn keysim(KEYS, ARGV)\n");
        let script = redis::Script::new(&eval_code);
        let function = format!("keysim_{LAYOUT}_{}", &script.get_hash()[..12]);
        let library = format!(
            "#!lua name={function}\n{CORE}\nredis.register_function('{function}', function(keys, args) return keysim(keys, args) end)\n"
        );
        Ok(Self {
            config,
            target,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            backoff: Mutex::new(Backoff { next: None, delay: Duration::ZERO }),
            invoke: AtomicU8::new(Invoke::Unknown as u8),
            function,
            library,
            script,
            eval_code,
            ids: Mutex::new(HashMap::new()),
            names: Slots::new(),
            round_trips: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Counters of what this store has done.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            round_trips: self.round_trips.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// Whether calls go through the function library (`true`) or `EVALSHA`/`EVAL`; `None`
    /// before the first call.
    pub fn uses_functions(&self) -> Option<bool> {
        match self.invoke() {
            Invoke::Unknown => None,
            Invoke::Function => Some(true),
            Invoke::Eval => Some(false),
        }
    }

    /// Makes every later call use `EVALSHA`/`EVAL`, as on a deployment that refuses functions.
    pub fn force_eval(&self) {
        self.invoke.store(Invoke::Eval as u8, Ordering::Relaxed);
    }

    /// The first midnight in Pacific time after `now`, as the script computes it (for tests
    /// that compare it with the engine's own calendar).
    pub async fn pacific_midnight(&self, now: Timestamp) -> Result<Timestamp, StoreError> {
        let base = format!("{}:{LAYOUT}:{{probe}}", self.config.prefix);
        let names = Names { window: format!("{base}:w"), counters: format!("{base}:m") };
        let v = self.call_names(&names, "midnight", now, &[]).await?;
        let v: i64 = redis::from_redis_value(v).map_err(|e| StoreError::Protocol(e.to_string()))?;
        Ok(Timestamp(v as u64))
    }

    fn invoke(&self) -> Invoke {
        match self.invoke.load(Ordering::Relaxed) {
            1 => Invoke::Function,
            2 => Invoke::Eval,
            _ => Invoke::Unknown,
        }
    }

    fn time_arg(&self, now: Timestamp) -> String {
        match self.config.time {
            RedisTime::Server => "server".to_owned(),
            RedisTime::Caller => now.0.to_string(),
        }
    }

    /// The shared connection, connecting first if there is none (unless reconnecting backs
    /// off: then the call fails at once).
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = lock(&self.conn).as_ref() {
            return Ok(c.clone());
        }
        let fail_fast = || -> Result<(), StoreError> {
            match lock(&self.backoff).next {
                Some(next) if Instant::now() < next => Err(StoreError::Unavailable(format!(
                    "reconnecting to Redis in {} ms",
                    (next - Instant::now()).as_millis()
                ))),
                _ => Ok(()),
            }
        };
        fail_fast()?;
        let _connecting = self.connecting.lock().await;
        // Another caller may have connected, or failed, meanwhile.
        if let Some(c) = lock(&self.conn).as_ref() {
            return Ok(c.clone());
        }
        fail_fast()?;
        let deadline = self.config.deadline;
        let opening = async {
            match &self.target {
                Target::Single(client) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(deadline.max(Duration::from_millis(500))))
                        .set_response_timeout(Some(deadline));
                    client.get_multiplexed_async_connection_with_config(&config).await.map(Conn::Single)
                }
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        // Opening takes more than a call (a Cluster's every node, and its slot map): a
        // generous bound for it, while a refused connection still fails at once.
        let opened = match tokio::time::timeout((deadline * 4).max(Duration::from_secs(1)), opening).await {
            Ok(c) => c,
            Err(_) => Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        };
        match opened {
            Ok(c) => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                *lock(&self.backoff) = Backoff { next: None, delay: Duration::ZERO };
                *lock(&self.conn) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                // Exponential from 25 ms to half a second (a refused connection costs
                // nothing, and every moment of waiting fails admissions closed), with up to
                // half again of jitter so that replicas do not reconnect in step.
                let mut b = lock(&self.backoff);
                let delay = (b.delay * 2).clamp(Duration::from_millis(25), Duration::from_millis(500));
                let jitter = delay.mul_f64(jitter_fraction() * 0.5);
                *b = Backoff { next: Some(Instant::now() + delay + jitter), delay };
                drop(b);
                Err(self.failure(&e))
            }
        }
    }

    /// A call failed below the protocol (the connection broke): the connection is not used
    /// again; the next call makes a new one. A slow answer is not a broken connection: the
    /// calls of every other caller share it.
    fn broken(&self, e: &RedisError) {
        if !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()) {
            lock(&self.conn).take();
        }
    }

    /// Counts a failed call and says what it was.
    fn failure(&self, e: &RedisError) -> StoreError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if e.is_timeout() {
            StoreError::TimedOut(self.config.deadline)
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            unavailable(e)
        } else {
            StoreError::Protocol(crate::redact(&e.to_string()))
        }
    }

    /// One call of the script on `bucket`: operation `op` at `now` with `args`.
    async fn call(&self, bucket: BucketId, op: &str, now: Timestamp, args: &[u64]) -> Result<redis::Value, StoreError> {
        let names = self.names[bucket.0 as usize].get().expect("buckets are named before use");
        self.call_names(names, op, now, args).await
    }

    async fn call_names(
        &self,
        names: &Names,
        op: &str,
        now: Timestamp,
        args: &[u64],
    ) -> Result<redis::Value, StoreError> {
        let mut conn = self.conn().await?;
        // Every call has the deadline, whatever the connection's own timeouts do.
        match tokio::time::timeout(self.config.deadline * 3, self.run(&mut conn, names, op, now, args)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.broken(&e);
                Err(self.failure(&e))
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::TimedOut(self.config.deadline))
            }
        }
    }

    /// The script's command for `op` on `names`, invoked as `how`.
    fn command(&self, how: &str, names: &Names, op: &str, now: Timestamp, args: &[u64]) -> redis::Cmd {
        let mut cmd = redis::cmd(how);
        match how {
            "FCALL" => cmd.arg(&self.function),
            "EVALSHA" => cmd.arg(self.script.get_hash()),
            _ => cmd.arg(&self.eval_code),
        };
        cmd.arg(2).arg(&names.window).arg(&names.counters).arg(op).arg(self.time_arg(now));
        for a in args {
            // u64::MAX marks an unlimited ceiling.
            if *a == u64::MAX {
                cmd.arg(-1i64);
            } else {
                cmd.arg(*a);
            }
        }
        cmd
    }

    /// Sends the call the way this deployment takes it, learning that way on first use.
    async fn run(
        &self,
        conn: &mut Conn,
        names: &Names,
        op: &str,
        now: Timestamp,
        args: &[u64],
    ) -> Result<redis::Value, RedisError> {
        if self.invoke() != Invoke::Eval {
            let fcall = self.command("FCALL", names, op, now, args);
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            match conn.send(&fcall).await {
                Err(e) if is_missing_function(&e) => {
                    // First use, or a server that lost its functions: load, then call again.
                    self.round_trips.fetch_add(1, Ordering::Relaxed);
                    let mut load = redis::cmd("FUNCTION");
                    load.arg("LOAD").arg("REPLACE").arg(&self.library);
                    match conn.send(&load).await {
                        Ok(_) => {
                            self.invoke.store(Invoke::Function as u8, Ordering::Relaxed);
                            self.round_trips.fetch_add(1, Ordering::Relaxed);
                            return conn.send(&fcall).await;
                        }
                        Err(e) if refuses_functions(&e) => self.invoke.store(Invoke::Eval as u8, Ordering::Relaxed),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if refuses_functions(&e) => self.invoke.store(Invoke::Eval as u8, Ordering::Relaxed),
                other => {
                    if other.is_ok() {
                        self.invoke.store(Invoke::Function as u8, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        let evalsha = self.command("EVALSHA", names, op, now, args);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match conn.send(&evalsha).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                conn.send(&self.command("EVAL", names, op, now, args)).await
            }
            other => other,
        }
    }

    /// The counters of every bucket of `buckets`: one pipelined round trip on a server, the
    /// calls at once on a Cluster (whose buckets live on several nodes).
    async fn usages(&self, buckets: &[BucketId], now: Timestamp) -> Result<Vec<Result<Usage, StoreError>>, StoreError> {
        let mut conn = self.conn().await?;
        if matches!(conn, Conn::Single(_)) && self.invoke() == Invoke::Function {
            let mut pipe = redis::pipe();
            for b in buckets {
                let names = self.names[b.0 as usize].get().expect("buckets are named before use");
                pipe.add_command(self.command("FCALL", names, "usage", now, &[]));
            }
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(self.config.deadline * 3, conn.pipeline(&pipe)).await {
                Ok(Ok(values)) => {
                    return Ok(values.into_iter().map(|v| self.ints(v).and_then(|v| Self::usage_at(&v, 0))).collect())
                }
                Ok(Err(e)) => {
                    self.broken(&e);
                    return Err(self.failure(&e));
                }
                Err(_) => return Err(StoreError::TimedOut(self.config.deadline)),
            }
        }
        let mut out = Vec::with_capacity(buckets.len());
        for &b in buckets {
            let v = self.call(b, "usage", now, &[]).await;
            out.push(v.and_then(|v| Self::usage_at(&self.ints(v)?, 0)));
        }
        Ok(out)
    }

    /// Decodes the script's usage array (7 integers) starting at `at`.
    fn usage_at(v: &[i64], at: usize) -> Result<Usage, StoreError> {
        let f = v.get(at..at + 7).ok_or_else(|| StoreError::Protocol(format!("short answer: {v:?}")))?;
        let opt = |x: i64| (x > 0).then_some(Timestamp(x as u64));
        Ok(Usage {
            minute_requests: f[0] as u64,
            minute_tokens: f[1] as u64,
            day_requests: f[2] as u64,
            day_tokens: f[3] as u64,
            minute_frees_at: opt(f[4]),
            day_ends: Timestamp(f[5] as u64),
            cooling_until: opt(f[6]),
        })
    }

    fn ints(&self, v: redis::Value) -> Result<Vec<i64>, StoreError> {
        redis::from_redis_value(v).map_err(|e| StoreError::Protocol(e.to_string()))
    }

    async fn admission(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> Result<Result<(Reservation, Usage), Shortfall>, StoreError> {
        // Past 2^53 a ceiling is "unlimited" to the script (-1), and a count is held at the
        // largest it can count exactly (conservative against any finite ceiling).
        let c = ceilings.0.map(|x| if x >= EXACT { u64::MAX } else { x });
        let (tokens, requests) = (cost.tokens, cost.requests.clamp(1, MAX_BATCH));
        let v =
            self.ints(self.call(bucket, "reserve", now, &[exact(tokens), c[0], c[1], c[2], c[3], requests]).await?)?;
        let usage = Self::usage_at(&v, 4)?;
        if v[0] == 1 {
            let (seq, at, day_ends) = (v[1] as u64, Timestamp(v[2] as u64), Timestamp(v[3] as u64));
            let reservation = Reservation { seq, at, day_ends, tokens, requests };
            return Ok(Ok((reservation, usage)));
        }
        let dimension = Dimension::ALL
            .get((v[1] as usize).wrapping_sub(1))
            .copied()
            .ok_or_else(|| StoreError::Protocol(format!("unknown dimension {}", v[1])))?;
        let retry_at = (v[3] >= 0).then_some(Timestamp(v[3] as u64));
        Ok(Err(Shortfall { dimension, cooling: v[2] == 1, retry_at, usage }))
    }
}

/// A count the script can hold exactly.
fn exact(x: u64) -> u64 {
    x.min(EXACT - 1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(crate::redact(&e.to_string()))
}

fn is_missing_function(e: &RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// A deployment that does not take functions: too old, or a proxy or ACL that refuses them.
fn refuses_functions(e: &RedisError) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("unknown command")
        || s.contains("unknown subcommand")
        || (s.contains("noperm") && (s.contains("fcall") || s.contains("function")))
}

/// A fraction in [0, 1) from the clock's low bits: jitter needs no generator.
fn jitter_fraction() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// A name part with the characters that structure key names escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '|' => out.push_str("%7C"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

impl Buckets for RedisStore {
    fn bucket(&self, key: &BucketKey) -> Result<BucketId, StoreError> {
        let mut ids = lock(&self.ids);
        if let Some(id) = ids.get(key) {
            return Ok(*id);
        }
        let id = BucketId(ids.len() as u32);
        let base = format!("{}:{LAYOUT}:{{{}|{}}}", self.config.prefix, escape(&key.owner), escape(&key.model));
        self.names.ensure(id.0 as usize);
        let _ = self.names[id.0 as usize].set(Names { window: format!("{base}:w"), counters: format!("{base}:m") });
        ids.insert(key.clone(), id);
        Ok(id)
    }
}

impl AsyncStore for RedisStore {
    fn reserve_async(
        &self,
        bucket: BucketId,
        cost: Cost,
        ceilings: &Ceilings,
        now: Timestamp,
    ) -> StoreCall<'_, Result<Grant, Shortfall>> {
        let ceilings = *ceilings;
        StoreCall::Pending(Box::pin(async move {
            Ok(self
                .admission(bucket, cost, &ceilings, now)
                .await?
                .map(|(reservation, usage)| Grant { reservation, usage }))
        }))
    }

    fn reconcile_async(&self, bucket: BucketId, r: &Reservation, actual: u64, now: Timestamp) -> StoreCall<'_, Usage> {
        let r = *r;
        StoreCall::Pending(Box::pin(async move {
            let args = [r.seq, exact(r.tokens), r.day_ends.0, exact(actual), r.at.0];
            let v = self.ints(self.call(bucket, "reconcile", now, &args).await?)?;
            Self::usage_at(&v, 0)
        }))
    }

    fn refund_async(&self, bucket: BucketId, r: &Reservation, now: Timestamp) -> StoreCall<'_, Usage> {
        let r = *r;
        StoreCall::Pending(Box::pin(async move {
            let requests = r.requests.clamp(1, MAX_BATCH);
            let args = [r.seq, exact(r.tokens), r.day_ends.0, requests];
            let v = self.ints(self.call(bucket, "refund", now, &args).await?)?;
            Self::usage_at(&v, 0)
        }))
    }

    fn cool_down_async(
        &self,
        bucket: BucketId,
        dimension: Dimension,
        until: Timestamp,
        now: Timestamp,
    ) -> StoreCall<'_, ()> {
        StoreCall::Pending(Box::pin(async move {
            self.call(bucket, "cool", now, &[dimension.index() as u64 + 1, until.0]).await.map(drop)
        }))
    }

    fn usage_async(&self, bucket: BucketId, now: Timestamp) -> StoreCall<'_, Usage> {
        StoreCall::Pending(Box::pin(async move {
            let v = self.ints(self.call(bucket, "usage", now, &[]).await?)?;
            Self::usage_at(&v, 0)
        }))
    }

    fn usages_async(&self, buckets: &[BucketId], now: Timestamp) -> StoreCall<'_, Vec<Result<Usage, StoreError>>> {
        let buckets = buckets.to_vec();
        StoreCall::Pending(Box::pin(async move { self.usages(&buckets, now).await }))
    }
}

#[cfg(test)]
mod tests;

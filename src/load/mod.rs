//! `keysim load`: the scenario's traffic in real time, through the same engine, over real
//! HTTP to a Gemini-compatible target (`keysim mock`, or Google's endpoint with real keys).
//!
//! - **Open loop.** Every request has an intended send time from the scenario's arrival
//!   process (`at / time_scale` after the start). It is started then, whatever earlier
//!   requests are doing; latency counts from the intended time, so a late start shows as
//!   latency rather than vanishing (no coordinated omission), and starts more than
//!   [`LATE_MS`] behind schedule are counted.
//! - **The engine in the path.** Admission, queueing up to `max_wait` when denied,
//!   settlement from the real answer: `usageMetadata` on success, the 429 body parsed as it
//!   comes off the wire, anything else a failure.
//! - **Overhead, two ways.** The engine's decision time per request (`overhead_ns`), and the
//!   end-to-end latency, which `--baseline` compares with the same schedule sent straight to
//!   the target with one fixed key and no engine.
//!
//! Time runs on one scaled clock (`--time-scale`); the engine judges windows on it, so run
//! the fake with the same scale. The scenario's `start` anchor is not used: the clock is the
//! real one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::engine::{
    AcquireError, AnyStore, Engine, Prompt, QueuePolicy, RedisConfig, Request, ScaledClock, StoreError, Timestamp,
};
use crate::report::{stopwatch, Aggregate, RequestRecord, Terminal};
use crate::scenario::Scenario;
use crate::sim::{NewRequest, Traffic};

mod target;
use target::Answer;

pub use crate::report::load::{Latency, LoadFigures, LATE_MS};

pub use crate::engine::EDGE_GUARD;

/// How to run. Its `Debug` shows the target and the store without credentials.
#[derive(Clone)]
pub struct LoadOptions {
    /// Base URL of a Gemini-compatible API (`http://127.0.0.1:8080`,
    /// `https://generativelanguage.googleapis.com`).
    pub target: String,
    /// Run the scenario this many times faster than its own clock.
    pub time_scale: f64,
    /// Also send the same schedule without the engine, with one fixed key.
    pub baseline: bool,
    /// Key ids name environment variables holding the real keys.
    pub keys_from_env: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Engine replicas in this process, each with its own store connection; requests go to
    /// them in turn, as a load balancer would send them.
    pub replicas: usize,
    /// The quota store the replicas share: `redis://…` or `redis+cluster://…`; `None` gives
    /// each replica its own in-memory store (the unshared reference: limit × replicas).
    pub store: Option<String>,
    /// The first part of the store's key names (runs sharing a Redis keep apart by it).
    pub store_prefix: String,
    /// The target runs its own engine (`keysim proxy`): send every request straight to it,
    /// none through an engine here.
    pub no_engine: bool,
    /// The token to present to such a target (`x-goog-api-key`).
    pub token: Option<String>,
    /// Write the proxy's traffic log of the requests through the engine here.
    pub traffic_log: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("target", &redact_target(&self.target))
            .field("time_scale", &self.time_scale)
            .field("baseline", &self.baseline)
            .field("keys_from_env", &self.keys_from_env)
            .field("timeout", &self.timeout)
            .field("replicas", &self.replicas)
            .field("store", &self.store.as_deref().map(redact_target))
            .field("store_prefix", &self.store_prefix)
            .field("no_engine", &self.no_engine)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            target: String::new(),
            time_scale: 1.0,
            baseline: false,
            keys_from_env: false,
            timeout: Duration::from_secs(60),
            progress: false,
            replicas: 1,
            store: None,
            store_prefix: "keysim".into(),
            no_engine: false,
            token: None,
            traffic_log: None,
        }
    }
}

/// The engine of a load run: its store is chosen at run time.
pub type LoadEngine = Engine<AnyStore>;

/// A finished load run.
pub struct LoadResult {
    /// Counts and histograms, as a simulated run has them.
    pub aggregate: Aggregate,
    /// The first replica's engine as it ended.
    pub engine: Arc<LoadEngine>,
    /// Real-clock figures.
    pub figures: LoadFigures,
}

/// Why a load run could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The options or the scenario do not allow a run (exit 2).
    #[error("{0}")]
    Bad(String),
    /// Something failed while running (exit 3).
    #[error("{0}")]
    Failed(String),
}

/// One finished request, for the collector.
struct Done {
    new: NewRequest,
    state: Terminal,
    key: Option<usize>,
    project: Option<usize>,
    estimated: Option<u64>,
    input: u64,
    output: u64,
    queue_wait_ms: u64,
    latency_ms: Option<u64>,
    end_ms: u64,
    reason: String,
    lag_us: u64,
    e2e_us: Option<u64>,
    transport_error: bool,
    /// The store could not record its settlement.
    settle_error: bool,
    /// Decision time of its admission, in nanoseconds, when it did not wait.
    admit_ns: Option<u64>,
    /// Whether it waited in the queue.
    delayed: bool,
}

impl Done {
    /// A request that has not ended yet, started `lag_us` behind its time.
    fn new(new: NewRequest, lag_us: u64) -> Self {
        Self {
            new,
            state: Terminal::Denied,
            key: None,
            project: None,
            estimated: None,
            input: new.input,
            output: 0,
            queue_wait_ms: 0,
            latency_ms: None,
            end_ms: 0,
            reason: String::new(),
            lag_us,
            e2e_us: None,
            transport_error: false,
            settle_error: false,
            admit_ns: None,
            delayed: false,
        }
    }

    /// Whether it waited in the queue (was denied at least once before its end).
    fn delayed(&self) -> bool {
        self.delayed
    }
}

pub use crate::engine::redact_url as redact_target;

/// The prompt the scenario's request `r` sends: its corpus text, or synthetic text of its
/// true token count at four characters a token.
fn prompt_text(sc: &Scenario, r: &NewRequest) -> String {
    let class = &sc.traffic[r.class as usize];
    match (r.text, &class.corpus) {
        (Some(i), Some(c)) => c.texts[i as usize].text.clone(),
        _ => "tok ".repeat(r.input as usize).trim_end().to_owned(),
    }
}

struct Shared {
    sc: Scenario,
    /// The replicas (none for a baseline run).
    engines: Vec<Arc<LoadEngine>>,
    http: reqwest::Client,
    target: String,
    clock: ScaledClock,
    /// Key values by engine key index.
    keys: Vec<String>,
    /// The clock's reading when the schedule started.
    origin_ms: u64,
    /// Send straight to a target that runs its own engine, with this token.
    token: Option<String>,
    /// Whether to (no engine here).
    no_engine: bool,
    /// The traffic log, if asked for.
    traffic: Option<keysim_proxy::traffic::TrafficLog>,
}

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp(self.clock.now_ms())
    }

    /// [`EDGE_GUARD`] in the scenario's milliseconds.
    fn guard_ms(&self) -> u64 {
        (EDGE_GUARD.as_secs_f64() * 1000.0 * self.clock.scale()).ceil() as u64
    }

    /// Sends `r` to `model` with key `key`: the answer, or whether the failure was a timeout.
    async fn send(&self, r: &NewRequest, key: &str, prompt: &str) -> (Result<Answer, bool>, Instant) {
        let class = &self.sc.traffic[r.class as usize];
        let model = &self.sc.models[class.model].name;
        let mut body = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]});
        if let Some(max) = class.max_output_tokens {
            body["generationConfig"] = serde_json::json!({"maxOutputTokens": max});
        }
        let url = format!("{}/v1beta/models/{model}:generateContent", self.target);
        let fault = match r.fault {
            Some(mock_server::Fault::Internal) => "internal",
            Some(mock_server::Fault::Overloaded) => "overloaded",
            None => "none",
        };
        let sent = self
            .http
            .post(url)
            .header("x-goog-api-key", key)
            .header("x-keysim-output-tokens", r.output)
            .header("x-keysim-latency-ms", r.latency_ms)
            .header("x-keysim-input-tokens", r.input)
            .header("x-keysim-fault", fault)
            // The scenario's time, so that the fake's script runs on the run's clock.
            .header("x-keysim-script-ms", self.now().since(Timestamp(self.origin_ms)))
            .json(&body)
            .send()
            .await;
        let answer = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (denied, project) = (header("x-keysim-denied"), header("x-keysim-project"));
                match resp.text().await {
                    Ok(body) => Ok(Answer { status, body, denied, project }),
                    Err(e) => Err(e.is_timeout()),
                }
            }
            Err(e) => Err(e.is_timeout()),
        };
        (answer, Instant::now())
    }

    /// The whole life of one request through the engine.
    async fn through_engine(&self, r: NewRequest, intended: Instant, seq: u64) -> Done {
        // Spread over the replicas in arrival order, as a round-robin balancer does.
        let engine = &self.engines[seq as usize % self.engines.len()];
        let started = Instant::now();
        let lag_us = started.saturating_duration_since(intended).as_micros() as u64;
        let class = &self.sc.traffic[r.class as usize];
        let text = prompt_text(&self.sc, &r);
        // As the simulator: the estimator sees corpus text, or the size of the synthetic text.
        let chars = (r.input as f64 * class.chars_per_token + 0.5) as u64;
        let prompt = if r.text.is_some() { Prompt::Text(&text) } else { Prompt::Chars(chars) };
        let request =
            Request::new(class.model, prompt).priority(class.priority).max_output_tokens(class.max_output_tokens);
        // The request arrived when it was meant to, however late its task started.
        let arrival = Timestamp(self.origin_ms + r.at);
        let mut done = Done::new(r, lag_us);
        let now = self.now();
        // The guard a queued request waits beyond its slot (the clock's timer lag) comes out
        // of its wait.
        let max_wait_ms = match self.sc.engine.policy() {
            QueuePolicy::Wait { max_wait_ms } => max_wait_ms.saturating_sub(now.since(arrival) + self.guard_ms()),
            QueuePolicy::Reject => 0,
        };
        let mark = stopwatch::start();
        let acquired = engine.acquire_owned(&request, Duration::from_millis(max_wait_ms)).await;
        let elapsed_ns = stopwatch::elapsed_ns(mark);
        done.delayed = acquired.as_ref().is_ok_and(|p| p.queued()) || self.now() > now && acquired.is_err();
        if !done.delayed {
            done.admit_ns = Some(elapsed_ns);
        }
        let mut permit = match acquired {
            Ok(p) => p,
            Err(AcquireError(reason)) => {
                let now = self.now();
                done.reason = reason.name();
                done.queue_wait_ms = now.since(arrival);
                done.end_ms = now.since(Timestamp(self.origin_ms));
                return done;
            }
        };
        let ticket = *permit.ticket();
        permit.mark_sent();
        let sent_at = self.now();
        done.queue_wait_ms = sent_at.since(arrival);
        done.key = Some(ticket.key.0 as usize);
        let project = permit.project_id();
        done.project = self.sc.projects.iter().position(|p| p.id == project);
        done.estimated = Some(ticket.estimated_input);
        let (answer, answered) = self.send(&r, &self.keys[ticket.key.0 as usize], &text).await;
        let now = self.now();
        done.latency_ms = Some(now.since(sent_at));
        done.end_ms = now.since(Timestamp(self.origin_ms));
        // A store that cannot record it keeps the reservation counted (conservative).
        done.settle_error = match self.judge(answer, answered, intended, &mut done) {
            target::Settle::Usage(usage) => permit.succeeded(&usage),
            target::Settle::Outcome(outcome) => permit.settle(outcome),
        }
        .is_err();
        done
    }

    /// The same request straight to the target with one key, no engine.
    async fn direct(&self, r: NewRequest, intended: Instant) -> Option<u64> {
        let text = prompt_text(&self.sc, &r);
        let (answer, answered) = self.send(&r, &self.keys[0], &text).await;
        matches!(answer, Ok(Answer { status: 200, .. }))
            .then(|| answered.saturating_duration_since(intended).as_micros() as u64)
    }
}

/// One replica's store, as `opts` asks. On a scaled clock the store counts by the callers'
/// (shared) clock; at real speed, by the Redis server's.
fn store(opts: &LoadOptions) -> Result<AnyStore, LoadError> {
    let Some(spec) = &opts.store else { return Ok(AnyStore::Memory(Default::default())) };
    let bad = |e: StoreError| LoadError::Bad(format!("--store: {e}"));
    let config = RedisConfig::parse(spec).map_err(bad)?;
    redis_store(config, &opts.store_prefix, opts.time_scale != 1.0).map_err(bad)
}

pub use crate::proxy::config::redis_store;

fn micros() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Runs `sc` against `opts.target`.
pub fn run_load(sc: &Scenario, opts: &LoadOptions) -> Result<LoadResult, LoadError> {
    if !(opts.time_scale.is_finite() && (0.01..=10_000.0).contains(&opts.time_scale)) {
        return Err(LoadError::Bad("--time-scale must be a number from 0.01 to 10000".into()));
    }
    if !sc.events.is_empty() {
        return Err(LoadError::Bad(format!(
            "{} has pool events; load runs do not replay them yet (simulate it with `keysim run`)",
            sc.name
        )));
    }
    let target = opts.target.trim_end_matches('/').to_owned();
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        return Err(LoadError::Bad(format!(
            "--target must be an http:// or https:// URL, not '{}'",
            redact_target(&target)
        )));
    }
    if sc.gateway != crate::sim::gateway::GatewayKind::Atomic {
        return Err(LoadError::Bad(format!(
            "engine.admission = \"{}\" is a reference gateway, run only in the simulator (keysim run); \
             keysim load runs keysim's engine",
            crate::engine::Setting::name(sc.gateway)
        )));
    }
    if !(1..=256).contains(&opts.replicas) {
        return Err(LoadError::Bad("--replicas must be from 1 to 256".into()));
    }
    // A queued request is admitted a little after its slot frees: one sent exactly at a
    // window's edge can reach the provider before the request it replaces has left the
    // provider's window, if that one's trip took longer.
    let clock = ScaledClock::new(opts.time_scale).with_lag(EDGE_GUARD);
    let engines = (0..opts.replicas)
        .map(|_| {
            let store = store(opts)?;
            crate::scenario::build::engine_on(sc, Arc::new(clock), store)
                .map(Arc::new)
                .map_err(|e| LoadError::Bad(format!("the pool: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = &engines[0];
    let mut keys = Vec::new();
    let mut missing = Vec::new();
    for k in engine.pool().keys() {
        if opts.keys_from_env && !opts.no_engine {
            match std::env::var(&k.id) {
                Ok(v) if !v.is_empty() => keys.push(v),
                _ => missing.push(k.id.clone()),
            }
        } else {
            keys.push(k.id.clone());
        }
    }
    if !missing.is_empty() {
        return Err(LoadError::Bad(format!("--keys-from-env: no value in the environment for {}", missing.join(", "))));
    }
    let servable = crate::sim::servable(sc).map_err(|e| LoadError::Failed(e.to_string()))?;
    let http = reqwest::Client::builder()
        .timeout(opts.timeout)
        .pool_max_idle_per_host(1024)
        // Idle connections go before a server's idle timeout (the fake's is 10 s) can close
        // one under a request about to use it.
        .pool_idle_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| LoadError::Failed(format!("HTTP client: {e}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Failed(format!("runtime: {e}")))?;
    let shared = Arc::new(Shared {
        sc: sc.clone(),
        engines,
        http,
        target: target.clone(),
        clock,
        keys,
        origin_ms: clock.now_ms(),
        token: opts.token.clone(),
        no_engine: opts.no_engine,
        traffic: match &opts.traffic_log {
            Some(path) => Some(open_traffic_log(path)?),
            None => None,
        },
    });
    let (mut agg, mut figures) = rt.block_on(schedule(shared.clone(), opts.progress, false))?;
    // Settlements the store had not taken yet, in the background: taken before the counts;
    // those it refused count as settlement errors.
    for e in &shared.engines {
        rt.block_on(e.drain_settlements(Duration::from_secs(5)));
        figures.settle_errors += e.settlements_failed();
    }
    let baseline = if opts.baseline {
        let base = Arc::new(Shared {
            sc: sc.clone(),
            engines: Vec::new(),
            http: shared.http.clone(),
            target: shared.target.clone(),
            clock,
            keys: shared.keys.clone(),
            origin_ms: clock.now_ms(),
            token: shared.token.clone(),
            no_engine: false,
            traffic: None,
        });
        let b = rt.block_on(schedule(base, opts.progress, true))?.1;
        Some((b.end_to_end, b.end_to_end_us))
    } else {
        None
    };
    let (baseline, baseline_end_to_end_us) = baseline.map_or((None, None), |(l, h)| (Some(l), h));
    agg.servable = Some(servable);
    // Every request has reported; their tasks let go of the shared state right after.
    let (mut shared, until) = (shared, Instant::now() + Duration::from_secs(5));
    let shared = loop {
        match Arc::try_unwrap(shared) {
            Ok(s) => break s,
            Err(s) if Instant::now() < until => {
                shared = s;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return Err(LoadError::Failed("requests still running".into())),
        }
    };
    let engine = shared.engines.into_iter().next().expect("at least one replica");
    Ok(LoadResult {
        aggregate: agg,
        engine,
        figures: LoadFigures {
            target: redact_target(&target),
            replicas: opts.replicas,
            store: opts.store.as_deref().map_or_else(|| "memory".to_owned(), redact_target),
            time_scale: opts.time_scale,
            baseline_end_to_end: baseline,
            baseline_end_to_end_us,
            ..figures
        },
    })
}

/// The traffic log `keysim load --traffic-log` writes: the proxy's, in one file (no rotation),
/// with a queue deep enough that the collector never drops a line.
fn open_traffic_log(path: &std::path::Path) -> Result<keysim_proxy::traffic::TrafficLog, LoadError> {
    let def =
        keysim_proxy::traffic::TrafficLogDef { path: path.to_owned(), max_bytes: u64::MAX, files: 1, queue: 1 << 20 };
    keysim_proxy::traffic::TrafficLog::open(&def, Default::default())
        .map_err(|e| LoadError::Bad(format!("cannot open the traffic log {}: {e}", path.display())))
}

/// A request through the engine here, as the proxy's traffic log holds it: times in the
/// scenario's calendar, the client named by its traffic class.
fn traffic_line(sc: &Scenario, d: &Done) -> keysim_proxy::traffic::Line {
    let class = &sc.traffic[d.new.class as usize];
    let (outcome, answered) = match d.state {
        Terminal::Succeeded => ("served", true),
        Terminal::Denied => ("denied", false),
        Terminal::Breach => ("breach", false),
        Terminal::Failed => ("failed", false),
    };
    keysim_proxy::traffic::Line {
        v: keysim_proxy::traffic::SCHEMA,
        ts: sc.start.0 + d.new.at,
        client: class.name.clone(),
        surface: "gemini",
        model: sc.models[class.model].name.clone(),
        stream: false,
        batch: 1,
        max_output: class.max_output_tokens,
        estimate: d.estimated,
        input: answered.then_some(d.input),
        output: answered.then_some(d.output),
        cached: None,
        thinking: None,
        project: d.project.map(|p| sc.projects[p].id.clone()),
        outcome,
        reason: (!d.reason.is_empty()).then(|| d.reason.clone()),
        wait_ms: d.queue_wait_ms as f64,
        upstream_ms: d.latency_ms.map(|l| l as f64),
        total_ms: d.end_ms.saturating_sub(d.new.at) as f64,
        retries: 0,
        breaches: u32::from(d.state == Terminal::Breach),
    }
}

/// What a request task reports.
enum Report {
    /// A request through the engine.
    Engine(Box<Done>),
    /// A baseline request: its start lag and, if it succeeded, its end-to-end time (µs).
    Direct(u64, Option<u64>),
}

/// Starts every request of the scenario at its time while a collector counts what they did;
/// fails if any request went unreported.
async fn schedule(shared: Arc<Shared>, progress: bool, direct: bool) -> Result<(Aggregate, LoadFigures), LoadError> {
    let sc = &shared.sc;
    let (tx, rx) = mpsc::unbounded_channel::<Report>();
    let collector = tokio::spawn(collect(shared.clone(), rx));
    let bar = progress.then(|| crate::report::progress(sc.duration_ms, if direct { "baseline" } else { "load" }));
    let start = Instant::now();
    let mut started = 0u64;
    for r in Traffic::new(sc) {
        let intended = start + Duration::from_secs_f64(r.at as f64 / 1000.0 / shared.clock.scale());
        tokio::time::sleep_until(intended.into()).await;
        if let Some(b) = &bar {
            b.set_position(r.at / 1000);
        }
        let seq = started;
        started += 1;
        let (s, tx) = (shared.clone(), tx.clone());
        tokio::spawn(async move {
            let report = if direct {
                let lag = Instant::now().saturating_duration_since(intended).as_micros() as u64;
                Report::Direct(lag, s.direct(r, intended).await)
            } else if s.no_engine {
                Report::Engine(Box::new(s.through_target(r, intended).await))
            } else {
                Report::Engine(Box::new(s.through_engine(r, intended, seq).await))
            };
            drop(s);
            let _ = tx.send(report);
        });
    }
    drop(tx);
    let (agg, mut figures, reported) =
        collector.await.map_err(|e| LoadError::Failed(format!("the collector failed: {e}")))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if reported != started {
        return Err(LoadError::Failed(format!(
            "{} of {started} requests never reported (a task failed)",
            started - reported
        )));
    }
    figures.started = started;
    Ok((agg, figures))
}

/// Counts reports as they come, so nothing piles up while the schedule runs.
async fn collect(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Report>) -> (Aggregate, LoadFigures, u64) {
    let sc = &shared.sc;
    let (mut lag, mut e2e, mut unqueued) = (micros(), micros(), micros());
    let mut figures = LoadFigures::default();
    let mut agg = Aggregate::default();
    let mut outcomes = crate::report::trace::Outcomes::new(sc.timeline_ms);
    let mut reported = 0u64;
    while let Some(report) = rx.recv().await {
        reported += 1;
        let d = match report {
            Report::Direct(l, e) => {
                lag.saturating_record(l.max(1));
                figures.late_sends += u64::from(l > LATE_MS * 1000);
                if let Some(e) = e {
                    e2e.saturating_record(e.max(1));
                }
                continue;
            }
            Report::Engine(d) => d,
        };
        lag.saturating_record(d.lag_us.max(1));
        figures.late_sends += u64::from(d.lag_us > LATE_MS * 1000);
        figures.transport_errors += u64::from(d.transport_error);
        figures.settle_errors += u64::from(d.settle_error);
        if let Some(e) = d.e2e_us {
            e2e.saturating_record(e.max(1));
            if !d.delayed() {
                unqueued.saturating_record(e.max(1));
            }
        }
        agg.delayed += u64::from(d.delayed());
        outcomes.record(d.end_ms, d.state);
        let class = &sc.traffic[d.new.class as usize];
        agg.record(&RequestRecord {
            id: 0,
            class: &class.name,
            priority: class.priority,
            model: class.model,
            arrival_ms: d.new.at,
            end_ms: d.end_ms,
            state: d.state,
            key: d.key,
            project: d.project,
            input_tokens: d.input,
            estimated_input: d.estimated,
            output_tokens: d.output,
            queue_wait_ms: d.queue_wait_ms,
            latency_ms: d.latency_ms,
            reason: &d.reason,
        });
        if let Some(ns) = d.admit_ns {
            agg.admit_ns.saturating_record(ns);
        }
        if let Some(log) = &shared.traffic {
            log.record(Box::new(traffic_line(sc, &d)));
        }
        if let (Terminal::Succeeded, Some(est)) = (d.state, d.estimated) {
            let lang = match (d.new.text, &class.corpus) {
                (Some(i), Some(c)) => c.texts[i as usize].lang.as_str(),
                _ => "synthetic",
            };
            agg.estimation(lang, est, d.input, false);
        }
    }
    figures.start_lag = Latency::of(&lag);
    figures.end_to_end = Latency::of(&e2e);
    figures.end_to_end_unqueued = Latency::of(&unqueued);
    figures.end_to_end_us = Some(e2e);
    figures.outcomes = Some(outcomes);
    (agg, figures, reported)
}

//! keysim's proxy (`keysim proxy`, or the `keysim-proxy` binary): the engine in front of Gemini
//! for real clients. It depends on the engine and its HTTP stack, and on none of the lab.
//!
//! Clients call it as they would call Gemini (its REST surface or the OpenAI-compatible one),
//! with the proxy's own token instead of a key. Every request is admitted by the engine
//! (atomic reservation on its project, the fair queue up to `max_wait`), sent upstream with
//! the key the engine chose, streamed back as it arrives, and settled from the answer's usage.
//!
//! - [`file`]: the config file: the pool sections and `[proxy]`.
//! - [`config`]: the keys' values, tokens, the store, and a reload's pool changes.
//! - [`cli`]: the command line, shared by `keysim proxy` and `keysim-proxy`.
//! - [`notify`]: where warning notifications go — log lines, JSON lines, a webhook.
//! - [`forward`]: one client request: admission, upstream, relay, settlement, retries.
//! - [`relay`]: a successful answer relayed (streams piece by piece) and settled.
//! - [`reply`]: answers passed on, and the proxy's own errors in each surface's shape.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` and the admin API.
//! - [`metrics`]: the Prometheus metrics.
//! - [`tap`]: usage read off a stream as it passes.
//!
//! [`serve`] takes a listener and a shutdown future: tests bind `127.0.0.1:0`.

pub use keysim_engine as engine;

pub mod admin;
pub mod cli;
pub mod config;
pub mod file;
pub mod forward;
pub mod metrics;
pub mod notify;
pub mod relay;
pub mod reply;
pub mod tap;
pub mod traffic;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::engine::clock::{ScaledClock, EDGE_GUARD};
use crate::engine::warn::Warner;
use crate::engine::{AnyStore, Engine};
use crate::notify::{LogLine, Sink};
pub use config::{Loaded, ProxyError};
use metrics::Metrics;

/// The proxy's engine: its store is chosen at start (memory or Redis).
pub type ProxyEngine = Engine<AnyStore>;

/// A response body: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Everything the proxy's handlers share.
pub struct State {
    /// How much faster than real time the engine's clock runs (1 but in lab runs).
    pub time_scale: f64,
    /// The engine (shared with the permits requests hold).
    pub engine: Arc<ProxyEngine>,
    /// The config in force (tokens, key values, settings); swapped whole on reload.
    pub loaded: ArcSwap<Loaded>,
    /// Where the config was read from (reloads read it again).
    pub path: Option<PathBuf>,
    /// The upstream client.
    pub http: reqwest::Client,
    /// The metrics.
    pub metrics: Metrics,
    /// Shutting down: `/readyz` says so.
    pub draining: AtomicBool,
    /// Requests in flight.
    pub inflight: AtomicUsize,
    /// Next key for requests that need no admission (model lists, countTokens).
    pub next_key: AtomicUsize,
    /// Serialises reloads.
    pub reloading: Mutex<()>,
    /// Settings given on the command line, which every reload keeps.
    pub overrides: Overrides,
    /// The address it serves on, once serving (a reload may not leave it open).
    pub bound: std::sync::OnceLock<std::net::SocketAddr>,
    /// Scrapes, readiness checks and admin reads at once (each may read every bucket).
    pub probes: tokio::sync::Semaphore,
    /// The traffic log, if on (as configured at start; a reload does not move it).
    pub traffic: Option<traffic::TrafficLog>,
}

/// `[proxy]` settings given on the command line: they win over the file, at start and on
/// every reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--store`.
    pub store: Option<String>,
}

impl Overrides {
    /// `loaded` with these settings applied.
    pub fn apply(&self, loaded: &mut Loaded) {
        if let Some(l) = &self.listen {
            loaded.proxy.listen = l.clone();
        }
        if let Some(u) = &self.upstream {
            loaded.proxy.upstream = u.trim_end_matches('/').to_owned();
        }
        if self.store.is_some() {
            loaded.proxy.store = self.store.clone();
        }
    }
}

impl State {
    /// The state for `loaded`, read from `path` (for reloads).
    ///
    /// `clock` is real time in production; lab runs may run it faster, in step with a fake on
    /// the same scale.
    pub fn new(
        mut loaded: Loaded,
        path: Option<PathBuf>,
        overrides: Overrides,
        clock: ScaledClock,
    ) -> Result<Arc<Self>, ProxyError> {
        overrides.apply(&mut loaded);
        let time_scale = clock.scale();
        let store = config::store(&loaded.proxy, time_scale != 1.0)?;
        // Queued requests are let go a little after their slot frees (see `EDGE_GUARD`).
        let clock = clock.with_lag(EDGE_GUARD);
        let pool = &loaded.pool;
        let engine = crate::engine::pool_file::build::engine_on(
            &pool.models,
            &pool.projects,
            &pool.engine,
            Arc::new(clock),
            store,
        )
        .map_err(|e| ProxyError::Config(format!("the pool: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(loaded.proxy.connect_timeout_ms))
            .timeout(Duration::from_millis(loaded.proxy.timeout_ms))
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A redirect is the client's to follow (or not), as Gemini's own answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProxyError::Start(format!("HTTP client: {e}")))?;
        let models: Vec<String> = loaded.pool.models.iter().map(|m| m.name.clone()).collect();
        let metrics = Metrics::new(&models);
        let traffic =
            match &loaded.proxy.traffic_log {
                Some(def) => Some(traffic::TrafficLog::open(def, metrics.traffic_dropped.clone()).map_err(|e| {
                    ProxyError::Start(format!("cannot open the traffic log {}: {e}", def.path.display()))
                })?),
                None => None,
            };
        Ok(Arc::new(Self {
            metrics,
            traffic,
            time_scale,
            engine: Arc::new(engine),
            loaded: ArcSwap::from_pointee(loaded),
            path,
            http,
            draining: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            next_key: AtomicUsize::new(0),
            reloading: Mutex::new(()),
            overrides,
            bound: std::sync::OnceLock::new(),
            probes: tokio::sync::Semaphore::new(2),
        }))
    }

    /// Reads the config file again and applies what changed in the pool.
    pub fn reload(&self) -> Result<config::Changes, ProxyError> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.as_ref().ok_or_else(|| ProxyError::Config("no config file to reload".into()))?;
        let result = config::load(path).and_then(|mut next| {
            self.overrides.apply(&mut next);
            config::apply(self, next)
        });
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics.reloads.get_or_create(&metrics::ResultLabel { result: label.into() }).inc();
        match &result {
            Ok(c) => tracing::info!(target: "keysim::proxy", changes = %c, "config reloaded"),
            Err(e) => {
                tracing::warn!(target: "keysim::proxy", error = %e, "config reload failed; the pool is unchanged")
            }
        }
        result
    }
}

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets the
/// requests in flight finish (at most the config's `drain`), and returns.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let _ = state.bound.set(addr);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let warnings = tokio::spawn(warn_loop(state.clone(), stop_rx.clone()));
    let settings = state.loaded.load().proxy.clone();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // At most `max_connections` open at once: past it, accepting waits for one to close.
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let service = stack(state.clone(), &settings);
    let mut shutdown = std::pin::pin!(shutdown);
    // Set once told to stop: it keeps accepting until then, reporting not ready, so that load
    // balancers take it out before it closes.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let until = closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        let accepted = tokio::select! {
            a = accept(&listener, &connections) => a,
            () = &mut shutdown, if closing.is_none() => {
                state.draining.store(true, Ordering::SeqCst);
                let delay = Duration::from_millis(state.loaded.load().proxy.shutdown_delay_ms);
                closing = Some(tokio::time::Instant::now() + delay);
                continue;
            }
            () = tokio::time::sleep_until(until), if closing.is_some() => break,
        };
        let (stream, slot) = match accepted {
            Ok(s) => s,
            // Out of descriptors and the like: wait a little rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(settings.header_timeout_ms))
            .serve_connection(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Requests in flight finish (at most `drain`); idle connections close at once.
    let drain = Duration::from_millis(state.loaded.load().proxy.drain_ms);
    let until = tokio::time::Instant::now() + drain;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        let left = settings.max_connections - connections.available_permits();
        tracing::warn!(target: "keysim::proxy", connections = left, "drain time over; closing what is left");
    }
    // Settlements still under way in the background (a store round trip each) get what is
    // left of the drain, and a second at least.
    let settling = until.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
    let unsettled = state.engine.drain_settlements(settling).await;
    if unsettled > 0 || state.engine.settlements_failed() > 0 {
        tracing::warn!(
            target: "keysim::proxy",
            unsettled,
            failed = state.engine.settlements_failed(),
            "settlements the store did not take: their reservations expire with their windows"
        );
    }
    warnings.abort();
    // The traffic log's last lines reach its file before the process ends (unless the file
    // stopped taking them).
    if state.traffic.is_some() {
        let writing = state.clone();
        let closed = tokio::task::spawn_blocking(move || {
            writing.traffic.as_ref().is_none_or(|log| log.close(Duration::from_secs(5)))
        });
        if !matches!(closed.await, Ok(true)) {
            tracing::warn!(target: "keysim::proxy", "the traffic log did not take its last lines within 5 s");
        }
    }
    Ok(())
}

/// The next connection, once the connection cap has room for it (the slot frees when it
/// closes).
async fn accept(
    listener: &tokio::net::TcpListener,
    cap: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = cap.clone().acquire_owned().await.map_err(std::io::Error::other)?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

/// The request body the handlers read: limited to Gemini's 20 MB, each piece within
/// `body_timeout`.
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tower_http::BoxError>;

/// Request ids: the client's `x-request-id` when it sends one, else one of this process's own.
#[derive(Clone)]
struct Ids {
    prefix: u32,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl tower_http::request_id::MakeRequestId for Ids {
    fn make_request_id<B>(&mut self, _: &hyper::Request<B>) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = hyper::header::HeaderValue::from_str(&format!("{:08x}-{n:x}", self.prefix)).ok()?;
        Some(tower_http::request_id::RequestId::new(id))
    }
}

/// The service every connection runs: request ids in and out, a tracing span per request, a
/// panic answered as a 500 rather than a dropped connection, the body limit and timeout, then
/// the handlers.
fn stack(
    state: Arc<State>,
    settings: &file::ProxyDef,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<Body>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send,
> {
    use tower::ServiceBuilder;
    use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
    let prefix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let ids = Ids { prefix, next: Default::default() };
    let service = ServiceBuilder::new()
        .map_response(|r: hyper::Response<_>| r.map(reply::boxed))
        .layer(SetRequestIdLayer::x_request_id(ids))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &hyper::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send + 'static>| {
            reply::error(reply::Surface::Gemini, 500, "INTERNAL", "the proxy failed on this request")
        }))
        .map_response(|r: hyper::Response<_>| {
            // The body limit's own refusal, in Gemini's shape.
            if r.status() == hyper::StatusCode::PAYLOAD_TOO_LARGE && !reply::is_json(r.headers()) {
                return reply::error(
                    reply::Surface::Gemini,
                    413,
                    "INVALID_ARGUMENT",
                    "the request is larger than 20 MB",
                );
            }
            r.map(reply::boxed)
        })
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_millis(settings.body_timeout_ms)))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(forward::MAX_BODY))
        .map_request(
            |r: hyper::Request<tower_http::body::Limited<tower_http::timeout::TimeoutBody<hyper::body::Incoming>>>| {
                r.map(BodyExt::boxed_unsync)
            },
        )
        .service_fn(move |req: hyper::Request<RequestBody>| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(forward::handle(state, req).await) }
        });
    hyper_util::service::TowerToHyperService::new(service)
}

/// Evaluates the warning rules on the engine every `evaluate_every` and sends what is due: a
/// log line, the webhook, and the firing-alerts gauge.
async fn warn_loop(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let Some(def) = state.loaded.load().pool.warnings.clone() else { return };
    let mut warner = Warner::new(def.config.clone());
    let mut log = def.log.then_some(LogLine);
    let mut webhook = def.webhook.as_ref().and_then(|w| match crate::notify::webhook::Webhook::start(w) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(target: "keysim::webhook", "no webhook: {e}");
            None
        }
    });
    let every = Duration::from_millis(def.config.evaluate_every_ms.max(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        let usages = admin::Usages::read(&state.engine).await;
        let now = usages.now;
        for n in warner.evaluate_with(&state.engine, now, &|b| usages.get(b)) {
            state.metrics.notified(&n);
            if let Some(l) = log.as_mut() {
                let _ = l.send(&n, now);
            }
            if let Some(w) = webhook.as_mut() {
                let _ = w.send(&n, now);
            }
        }
    }
    if let Some(w) = webhook {
        let _ = tokio::task::spawn_blocking(move || w.finish(Duration::from_secs(2))).await;
    }
}

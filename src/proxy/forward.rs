//! One client request through the proxy: route, authenticate, admit, send upstream with the
//! chosen key, relay the answer as it arrives, settle from its usage, and retry on another
//! project after a quota 429 or a rejected key, within the retry budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::metrics::{ModelLabel, ReasonLabels, RequestLabels, ResultLabel};
use super::tap::{usage_in, UsageTap};
use super::{Body, State};
use crate::engine::{
    parse_quota_error, AcquireError, DenyReason, Exhaustion, Outcome, Priority, Prompt, QueuePolicy, Reason, Request,
    Ticket, TryAcquireError,
};

/// The largest request body the proxy reads (Gemini's own limit).
const MAX_BODY: usize = mock_server::host::MAX_BODY;

/// Which API a request came in on: errors are written in its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Gemini's REST API.
    Gemini,
    /// The OpenAI-compatible one under `/v1beta/openai/`.
    OpenAi,
}

impl Surface {
    fn name(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::OpenAi => "openai",
        }
    }
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// Uses quota: admitted by the engine. `stream` answers arrive piece by piece.
    Admitted { model: String, stream: bool },
    /// Uses no generation quota (model lists, countTokens): any usable key.
    Free,
}

/// Routes a request to its handler.
pub async fn handle(state: Arc<State>, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" | "/metrics" => super::admin::probe(&state, path),
        p if p.starts_with("/admin/") => super::admin::admin(&state, req).await,
        p if p.starts_with("/v1beta/") || p.starts_with("/v1/") => {
            state.inflight.fetch_add(1, Ordering::SeqCst);
            state.metrics.inflight.inc();
            let _done = Inflight(&state);
            client(&state, req).await
        }
        _ => error(Surface::Gemini, 404, "NOT_FOUND", "this proxy serves Gemini's API under /v1beta/"),
    }
}

/// Counts a request in flight until dropped.
struct Inflight<'a>(&'a State);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.inflight.dec();
    }
}

/// The token a client presents: `x-goog-api-key`, `Authorization: Bearer`, or `?key=`.
fn presented(req: &hyper::Request<Incoming>) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    if let Some(v) = h.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("key=")).map(str::to_owned)
}

/// Whether `token` is one of `tokens`, compared in constant time.
pub fn token_matches(tokens: &[String], token: Option<&str>) -> bool {
    let Some(t) = token else { return false };
    tokens.iter().fold(false, |ok, known| ok | bool::from(known.as_bytes().ct_eq(t.as_bytes())))
}

/// A client request on the Gemini or OpenAI surface.
async fn client(state: &Arc<State>, req: hyper::Request<Incoming>) -> hyper::Response<Body> {
    let path = req.uri().path().to_owned();
    let surface = if path.starts_with("/v1beta/openai/") { Surface::OpenAi } else { Surface::Gemini };
    let loaded = state.loaded.load_full();
    if !loaded.client_tokens.is_empty() && !token_matches(&loaded.client_tokens, presented(&req).as_deref()) {
        count(state, surface, "unauthenticated");
        return error(
            surface,
            401,
            "UNAUTHENTICATED",
            "a valid proxy token is required (x-goog-api-key or Authorization: Bearer)",
        );
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let json: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let Some(op) = classify(&parts.method, &path, json.as_ref()) else {
        count(state, surface, "rejected");
        return error(surface, 404, "NOT_FOUND", &format!("{path} is not an endpoint this proxy serves"));
    };
    let call = Call { surface, parts, body };
    match op {
        Op::Free => free(state, &call).await,
        Op::Admitted { model, stream } => match json {
            // A body that is not JSON is the provider's to refuse; it counts nothing.
            None => free(state, &call).await,
            Some(v) => admitted(state, &call, &model, stream, &v).await,
        },
    }
}

/// A request's parts, kept for every attempt.
struct Call {
    surface: Surface,
    parts: hyper::http::request::Parts,
    body: Bytes,
}

/// What `method` on `path` asks for; `None` for endpoints the proxy does not serve.
fn classify(method: &hyper::Method, path: &str, body: Option<&Value>) -> Option<Op> {
    let bare = |m: &str| m.trim_start_matches("models/").to_owned();
    if let Some(rest) = path.strip_prefix("/v1beta/openai/") {
        return match (method.as_str(), rest.trim_end_matches('/')) {
            ("GET", r) if r == "models" || r.starts_with("models/") => Some(Op::Free),
            ("POST", "chat/completions") => {
                let model = body.and_then(|v| v.get("model")?.as_str()).map(bare).unwrap_or_default();
                let stream = body.and_then(|v| v.get("stream")?.as_bool()).unwrap_or(false);
                Some(Op::Admitted { model, stream })
            }
            ("POST", "embeddings") => {
                let model = body.and_then(|v| v.get("model")?.as_str()).map(bare).unwrap_or_default();
                Some(Op::Admitted { model, stream: false })
            }
            _ => None,
        };
    }
    let rest = path.strip_prefix("/v1beta/").or_else(|| path.strip_prefix("/v1/"))?;
    let rest = rest.strip_prefix("models")?;
    if method == hyper::Method::GET {
        return (rest.is_empty() || rest.starts_with('/')).then_some(Op::Free);
    }
    let (model, action) = rest.strip_prefix('/')?.rsplit_once(':')?;
    match action {
        "generateContent" | "embedContent" | "batchEmbedContents" => {
            Some(Op::Admitted { model: model.to_owned(), stream: false })
        }
        // Both forms stream: server-sent events (`alt=sse`) or a JSON array, element by element.
        "streamGenerateContent" => Some(Op::Admitted { model: model.to_owned(), stream: true }),
        "countTokens" => Some(Op::Free),
        _ => None,
    }
}

/// Reads the body within Gemini's size limit.
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, hyper::Response<Body>> {
    let said = headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let too_large = || error(Surface::Gemini, 413, "INVALID_ARGUMENT", "the request is larger than 20 MB");
    if said.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(Duration::from_secs(30), Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(error(Surface::Gemini, 400, "INVALID_ARGUMENT", "the request body could not be read")),
        Err(_) => Err(error(Surface::Gemini, 408, "DEADLINE_EXCEEDED", "the request body did not arrive in time")),
    }
}

/// The text a request's estimate counts: every `text`, string `content` and `input`.
fn prompt_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("text" | "content" | "input", Value::String(s)) => {
                        out.push_str(s);
                        out.push('\n');
                    }
                    ("input", Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(|s| {
                        out.push_str(s);
                        out.push('\n');
                    }),
                    // Settings and tools count little and are not prompt text.
                    ("generationConfig" | "generation_config" | "safetySettings" | "response_format", _) => {}
                    _ => prompt_text(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| prompt_text(x, out)),
        _ => {}
    }
}

/// The output cap a request names, if any.
fn max_output(v: &Value) -> Option<u64> {
    let config = v.get("generationConfig").or_else(|| v.get("generation_config"));
    config
        .and_then(|c| c.get("maxOutputTokens").or_else(|| c.get("max_output_tokens")))
        .or_else(|| v.get("max_completion_tokens"))
        .or_else(|| v.get("max_tokens"))
        .and_then(Value::as_u64)
}

/// A request admitted by the engine, with its attempts.
async fn admitted(state: &Arc<State>, call: &Call, model: &str, stream: bool, v: &Value) -> hyper::Response<Body> {
    let surface = call.surface;
    let Some(m) = state.engine.model(model) else {
        count(state, surface, "rejected");
        let msg = format!("models/{model} is not found for API version v1beta, or is not served by this proxy's pool");
        return error(surface, 404, "NOT_FOUND", &msg);
    };
    let mut text = String::new();
    prompt_text(v, &mut text);
    let high = call.parts.headers.get("x-keysim-priority").is_some_and(|p| p.as_bytes() == b"high");
    let request = Request::new(m, Prompt::Text(&text)).max_output_tokens(max_output(v)).priority(if high {
        Priority::High
    } else {
        Priority::Normal
    });
    let loaded = state.loaded.load_full();
    let max_wait = match loaded.scenario.engine.policy() {
        QueuePolicy::Wait { max_wait_ms } => Duration::from_millis(max_wait_ms),
        QueuePolicy::Reject => Duration::ZERO,
    };
    let labels = ModelLabel { model: model.to_owned() };
    let arrival = Instant::now();
    let mut attempt = 0;
    loop {
        let depth = state.metrics.queue_depth.get_or_create(&labels).clone();
        depth.inc();
        let started = Instant::now();
        let acquired = {
            let _left = scopeguard_dec(&depth);
            state.engine.acquire(&request, max_wait.saturating_sub(arrival.elapsed())).await
        };
        state.metrics.queue_wait.get_or_create(&labels).observe(arrival.elapsed().as_secs_f64());
        let mut permit = match acquired {
            Ok(p) => p,
            Err(AcquireError(reason)) => return denial(state, surface, model, reason, &request),
        };
        if !permit.queued() {
            state.metrics.decision.observe(started.elapsed().as_secs_f64());
        }
        state.metrics.admissions.get_or_create(&labels).inc();
        let key_id = permit.key_id();
        let project = state.engine.pool().projects()[state.engine.bucket_owner(permit.ticket().bucket).0].id.clone();
        let Some(secret) = loaded.keys.get(&key_id).cloned() else {
            // Cannot happen: every key of the pool has a value; return what it holds.
            drop(permit);
            return error(surface, 500, "INTERNAL", "the proxy has no value for the key it chose");
        };
        permit.mark_sent();
        let held = Held { state: state.clone(), ticket: Some(permit.into_ticket()) };
        let sent = Instant::now();
        let answer = send(state, call, &secret).await;
        state.metrics.upstream_latency.get_or_create(&labels).observe(sent.elapsed().as_secs_f64());
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                let (cause, outcome, status, code) = if e.is_timeout() {
                    ("timeout", Outcome::Unavailable, 504, "DEADLINE_EXCEEDED")
                } else {
                    ("transport", Outcome::Failed, 502, "UNAVAILABLE")
                };
                held.settle(outcome);
                fail(state, model, cause);
                count(state, surface, "failed");
                return error(surface, status, code, "the upstream API did not answer");
            }
        };
        let status = resp.status().as_u16();
        if status == 200 {
            count(state, surface, "succeeded");
            return relay(state, held, resp, &project, stream, m, &text).await;
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        let body_text = String::from_utf8_lossy(&body);
        let (outcome, retry, cause) = judge_failure(status, &body_text);
        if let Outcome::RateLimited(q) = &outcome {
            if q.kind != Exhaustion::Capacity {
                state.metrics.breaches.get_or_create(&labels).inc();
            }
        }
        held.settle(outcome);
        if let Some(c) = cause {
            fail(state, model, c);
        }
        if retry && attempt < loaded.proxy.retries {
            attempt += 1;
            state.metrics.retries.get_or_create(&labels).inc();
            continue;
        }
        count(state, surface, if status == 429 { "rate_limited" } else { "failed" });
        return passthrough(status, &headers, hide(&body, &secret));
    }
}

/// Decrements `g` when dropped (a request leaving admission, however it leaves).
fn scopeguard_dec(g: &prometheus_client::metrics::gauge::Gauge) -> impl Drop + '_ {
    struct Dec<'a>(&'a prometheus_client::metrics::gauge::Gauge);
    impl Drop for Dec<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    Dec(g)
}

/// What an upstream failure tells the engine, whether another key may do better, and its cause.
fn judge_failure(status: u16, body: &str) -> (Outcome, bool, Option<&'static str>) {
    match status {
        429 => {
            let q = parse_quota_error(body);
            let capacity = q.kind == Exhaustion::Capacity;
            (Outcome::RateLimited(q), !capacity, capacity.then_some("capacity-429"))
        }
        400 if body.contains("API_KEY_INVALID") => (Outcome::KeyRejected, true, Some("api-key-invalid")),
        403 => (Outcome::KeyRejected, true, Some("permission-denied")),
        500 => (Outcome::Failed, false, Some("internal")),
        503 => (Outcome::Unavailable, false, Some("overloaded")),
        504 => (Outcome::Unavailable, false, Some("timeout")),
        // The request itself was refused (400, 404 …): the provider counts nothing.
        s if (400..500).contains(&s) => (Outcome::NotSent, false, None),
        _ => (Outcome::Failed, false, Some("http-5xx")),
    }
}

/// A ticket sent upstream: settled with what happened, or, if dropped unsettled (a client
/// gone, a task cancelled), as failed, which keeps its estimate counted.
struct Held {
    state: Arc<State>,
    ticket: Option<Ticket>,
}

impl Held {
    fn settle(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            settle(&self.state, &t, outcome);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            settle(&self.state, &t, Outcome::Failed);
        }
    }
}

fn settle(state: &State, t: &Ticket, outcome: Outcome) {
    if state.engine.settle(t, outcome, state.engine.clock().now()).is_err() {
        state.metrics.store_errors.inc();
    }
}

/// Headers not passed on: hop-by-hop ones, lengths (recomputed), credentials, compression
/// (usage is read off the answer, which must arrive as it is).
fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "x-goog-api-key"
            | "authorization"
            | "accept-encoding"
    )
}

/// Sends the call upstream with `key`.
async fn send(state: &State, call: &Call, key: &str) -> Result<reqwest::Response, reqwest::Error> {
    let upstream = &state.loaded.load().proxy.upstream;
    let query = call.parts.uri.query().map(|q| {
        let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with("key=") && !kv.is_empty()).collect();
        kept.join("&")
    });
    let url = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{upstream}{}?{q}", call.parts.uri.path()),
        None => format!("{upstream}{}", call.parts.uri.path()),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &call.parts.headers {
        if passes(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    let (name, value) = match call.surface {
        Surface::Gemini => ("x-goog-api-key", key.to_owned()),
        Surface::OpenAi => ("authorization", format!("Bearer {key}")),
    };
    if let Ok(mut v) = HeaderValue::from_str(&value) {
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    state.http.request(call.parts.method.clone(), url).headers(headers).body(call.body.clone()).send().await
}

/// A request that uses no generation quota, sent with the next usable key.
async fn free(state: &Arc<State>, call: &Call) -> hyper::Response<Body> {
    let pool = state.engine.pool();
    let disabled: Vec<u32> = state.engine.health_now().disabled.iter().map(|(k, _)| k.0).collect();
    let usable: Vec<&str> = pool
        .keys()
        .iter()
        .enumerate()
        .filter(|(i, k)| k.usable() && !disabled.contains(&(*i as u32)))
        .map(|(_, k)| k.id.as_str())
        .collect();
    if usable.is_empty() {
        return error(call.surface, 503, "UNAVAILABLE", "the pool has no usable key");
    }
    let id = usable[state.next_key.fetch_add(1, Ordering::Relaxed) % usable.len()];
    let loaded = state.loaded.load_full();
    let Some(secret) = loaded.keys.get(id) else {
        return error(call.surface, 500, "INTERNAL", "the proxy has no value for the key it chose");
    };
    match send(state, call, secret).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            count(state, call.surface, if status == 200 { "succeeded" } else { "failed" });
            passthrough(status, &headers, hide(&body, secret))
        }
        Err(e) => {
            count(state, call.surface, "failed");
            let (status, code) = if e.is_timeout() { (504, "DEADLINE_EXCEEDED") } else { (502, "UNAVAILABLE") };
            error(call.surface, status, code, "the upstream API did not answer")
        }
    }
}

/// An upstream body with the key it was sent with, should it appear, shown redacted.
fn hide(body: &[u8], key: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    if key.len() >= 4 && text.contains(key) {
        Bytes::from(text.replace(key, &crate::engine::redact(key)))
    } else {
        Bytes::copy_from_slice(body)
    }
}

/// The upstream answer `status`, `headers`, `body`, passed on.
fn passthrough(status: u16, headers: &HeaderMap, body: Bytes) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        if passes(k) {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
    resp
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// A successful answer: a whole one settled from its usage, a stream relayed piece by piece
/// while its usage is read, and settled when it ends (at its estimate if it broke before
/// stating any usage).
async fn relay(
    state: &Arc<State>,
    held: Held,
    mut resp: reqwest::Response,
    project: &str,
    stream: bool,
    model: usize,
    prompt: &str,
) -> hyper::Response<Body> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut out = hyper::Response::new(full(Bytes::new()));
    if !stream {
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(_) => {
                drop(held);
                fail(state, &state.engine.pool().models()[model].name, "broken-answer");
                return error(Surface::Gemini, 502, "UNAVAILABLE", "the upstream answer broke off");
            }
        };
        let usage = usage_in(&body);
        match usage {
            Some(u) => {
                if state.engine.learns() {
                    state.engine.learn(model, &Prompt::Text(prompt), u.prompt);
                }
                held.settle(state.engine.success(&u));
            }
            None => held.settle(Outcome::Failed),
        }
        out = passthrough(status, &headers, body);
    } else {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
        let st = state.clone();
        let model_name = state.engine.pool().models()[model].name.clone();
        tokio::spawn(async move {
            let mut tap = UsageTap::default();
            let mut broken = false;
            loop {
                match resp.chunk().await {
                    Ok(Some(b)) => {
                        tap.feed(&b);
                        if tx.send(Ok(b)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        broken = true;
                        let _ = tx.send(Err(std::io::Error::other("the upstream stream broke off"))).await;
                        break;
                    }
                }
            }
            if broken {
                fail(&st, &model_name, "broken-stream");
            }
            let how = if tap.usage.is_some() { "usage" } else { "estimate" };
            st.metrics.streams.get_or_create(&ResultLabel { result: how.into() }).inc();
            match tap.usage {
                Some(u) => held.settle(st.engine.success(&u)),
                None => held.settle(Outcome::Failed),
            }
        });
        *out.body_mut() = Channel(rx).boxed();
        for (k, v) in &headers {
            if passes(k) {
                out.headers_mut().append(k.clone(), v.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(project) {
        out.headers_mut().insert("x-keysim-project", v);
    }
    out
}

/// A body fed piece by piece from a channel; an error aborts the connection, so a client
/// sees a broken stream as broken.
struct Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|x| x.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// The engine did not admit the request: Gemini's own 429 with a `retryDelay` from the
/// engine's `retry_at` (and `Retry-After` on the OpenAI surface), 503 when the store cannot
/// answer, 400 for a request no project could ever take.
fn denial(state: &State, surface: Surface, model: &str, reason: Reason, req: &Request<'_>) -> hyper::Response<Body> {
    let labels = ReasonLabels { model: model.to_owned(), reason: reason.name() };
    state.metrics.denials.get_or_create(&labels).inc();
    count(state, surface, "denied");
    let d = match reason {
        Reason::TooLarge => {
            return error(
                surface,
                400,
                "INVALID_ARGUMENT",
                "the request is larger than any project of the pool can take",
            );
        }
        Reason::UnknownModel => return error(surface, 404, "NOT_FOUND", &format!("models/{model} is not served")),
        Reason::Denied(d) => d,
    };
    let now = state.engine.clock().now();
    let retry_at = match state.engine.try_acquire(req) {
        Err(TryAcquireError::Denied(den)) => den.retry_at,
        // Freed just now: the client may come back at once (the permit returns unsent).
        Ok(_) => Some(now),
        Err(_) => None,
    };
    let secs = retry_at.map_or(60, |t| t.since(now).div_ceil(1000).max(1));
    let (status, code) = match d {
        DenyReason::StoreUnavailable => (503, "UNAVAILABLE"),
        _ => (429, "RESOURCE_EXHAUSTED"),
    };
    let message = format!(
        "Resource has been exhausted (e.g. check quota). The key pool has no quota left for {model} ({}); retry in {secs}s.",
        reason.name()
    );
    let mut resp = error_with(
        surface,
        status,
        code,
        &message,
        json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }]),
    );
    let h = resp.headers_mut();
    h.insert("retry-after", HeaderValue::from(secs));
    if let Ok(v) = HeaderValue::from_str(&reason.name()) {
        h.insert("x-keysim-denied", v);
    }
    resp
}

fn count(state: &State, surface: Surface, outcome: &str) {
    let labels = RequestLabels { surface: surface.name().into(), outcome: outcome.into() };
    state.metrics.requests.get_or_create(&labels).inc();
}

fn fail(state: &State, model: &str, cause: &str) {
    tracing::warn!(target: "keysim::proxy", model, cause, "upstream failure");
    state.metrics.failures.get_or_create(&ReasonLabels { model: model.to_owned(), reason: cause.to_owned() }).inc();
}

/// An error answer in the surface's shape.
pub fn error(surface: Surface, status: u16, code: &str, message: &str) -> hyper::Response<Body> {
    error_with(surface, status, code, message, Value::Null)
}

fn error_with(surface: Surface, status: u16, code: &str, message: &str, details: Value) -> hyper::Response<Body> {
    let mut e = json!({"code": status, "message": message, "status": code});
    if !details.is_null() {
        e["details"] = details;
    }
    if surface == Surface::OpenAi {
        e["type"] = json!(code.to_ascii_lowercase());
        e["param"] = Value::Null;
    }
    let mut resp = hyper::Response::new(full(Bytes::from(json!({ "error": e }).to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=UTF-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, path: &str, body: &str) -> Option<Op> {
        let v: Option<Value> = serde_json::from_str(body).ok();
        classify(&method.parse().unwrap(), path, v.as_ref())
    }

    fn admitted(model: &str, stream: bool) -> Option<Op> {
        Some(Op::Admitted { model: model.into(), stream })
    }

    #[test]
    fn routes_every_surface_and_refuses_the_rest() {
        let m = "gemini-2.5-flash";
        assert_eq!(op("POST", "/v1beta/models/gemini-2.5-flash:generateContent", "{}"), admitted(m, false));
        assert_eq!(op("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "{}"), admitted(m, true));
        assert_eq!(op("POST", "/v1/models/gemini-2.5-flash:streamGenerateContent", "{}"), admitted(m, true));
        assert_eq!(op("POST", "/v1beta/models/e:batchEmbedContents", "{}"), admitted("e", false));
        assert_eq!(op("POST", "/v1beta/models/gemini-2.5-flash:countTokens", "{}"), Some(Op::Free));
        assert_eq!(op("GET", "/v1beta/models", ""), Some(Op::Free));
        assert_eq!(op("GET", "/v1beta/models/gemini-2.5-flash", ""), Some(Op::Free));
        let chat = r#"{"model":"models/gemini-2.5-flash","stream":true}"#;
        assert_eq!(op("POST", "/v1beta/openai/chat/completions", chat), admitted(m, true));
        assert_eq!(op("POST", "/v1beta/openai/embeddings", r#"{"model":"e"}"#), admitted("e", false));
        assert_eq!(op("GET", "/v1beta/openai/models", ""), Some(Op::Free));
        for (method, path) in [
            ("POST", "/v1beta/models/gemini-2.5-flash:deleteEverything"),
            ("POST", "/v1beta/files"),
            ("DELETE", "/v1beta/openai/chat/completions"),
            ("POST", "/v1beta/cachedContents"),
            ("GET", "/v1beta/modelsx"),
        ] {
            assert_eq!(op(method, path, "{}"), None, "{method} {path}");
        }
    }

    #[test]
    fn the_estimate_reads_prompt_text_only() {
        let body = json!({
            "contents": [{"role": "user", "parts": [{"text": "hello"}, {"inlineData": {"data": "QUFB"}}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 42, "stopSequences": ["zzz"]},
        });
        let mut text = String::new();
        prompt_text(&body, &mut text);
        assert_eq!(text, "hello\nbe brief\n");
        assert_eq!(max_output(&body), Some(42));
        let chat = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "text", "text": "there"}]}], "max_completion_tokens": 7});
        let mut text = String::new();
        prompt_text(&chat, &mut text);
        assert_eq!(text, "hi\nthere\n");
        assert_eq!(max_output(&chat), Some(7));
        let mut text = String::new();
        prompt_text(&json!({"input": ["a", "b"]}), &mut text);
        assert_eq!(text, "a\nb\n");
    }

    #[test]
    fn tokens_match_exactly() {
        let tokens = vec!["token-one-0000000".to_owned(), "token-two-0000000".to_owned()];
        assert!(token_matches(&tokens, Some("token-two-0000000")));
        for wrong in [None, Some(""), Some("token-two-000000"), Some("token-two-00000000"), Some("TOKEN-ONE-0000000")] {
            assert!(!token_matches(&tokens, wrong), "{wrong:?}");
        }
        assert!(!token_matches(&[], Some("anything")));
    }

    #[test]
    fn upstream_failures_tell_the_engine_what_happened() {
        let quota = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"10"}]}]}}"#;
        let (o, retry, cause) = judge_failure(429, quota);
        assert!(matches!(o, Outcome::RateLimited(q) if q.kind != Exhaustion::Capacity) && retry && cause.is_none());
        let (o, retry, cause) = judge_failure(429, r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#);
        assert!(matches!(o, Outcome::RateLimited(_)) && !retry && cause == Some("capacity-429"));
        assert_eq!(judge_failure(400, "API_KEY_INVALID"), (Outcome::KeyRejected, true, Some("api-key-invalid")));
        assert_eq!(judge_failure(403, ""), (Outcome::KeyRejected, true, Some("permission-denied")));
        assert_eq!(judge_failure(503, ""), (Outcome::Unavailable, false, Some("overloaded")));
        assert_eq!(judge_failure(400, "INVALID_ARGUMENT"), (Outcome::NotSent, false, None));
    }

    #[test]
    fn keys_in_upstream_bodies_are_hidden() {
        let key = &format!("AIza{}", "SyKeysimProxyUnitTestKey".to_owned() + &"Z".repeat(11));
        let out = hide(format!("{{\"error\":\"key {key} is bad\"}}").as_bytes(), key);
        let out = String::from_utf8_lossy(&out);
        assert!(!out.contains(&key[4..]) && out.contains("AIza…"), "{out}");
    }
}

//! One client request through the proxy: route, authenticate, admit, send upstream with the
//! chosen key, relay the answer as it arrives, settle from its usage, and retry on another
//! project after a quota 429 or a rejected key, within the retry budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::metrics::{ModelLabel, ReasonLabels, RequestLabels};
use super::relay::{relay, settled, Answer};
pub use super::reply::{error, Surface};
use super::reply::{error_with, hide, passes, passthrough};
use super::traffic::{Line, SCHEMA};
use super::{Body, RequestBody, State};
use crate::engine::estimate::media::media_tokens;
use crate::engine::lifecycle::{QueuePolicy, Reason};
use crate::engine::provider::{failure, Exhaustion};
use crate::engine::{parse_quota_error, AcquireError, Decision, DenyReason, Outcome, Prompt, Request};

/// The largest request body the proxy reads (Gemini's own limit, 20 MB).
pub const MAX_BODY: usize = 20 * 1024 * 1024;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// Uses quota: admitted by the engine. `stream` answers arrive piece by piece.
    Admitted { model: String, stream: bool },
    /// Uses no generation quota (model lists, countTokens): any usable key.
    Free,
}

/// Routes a request to its handler.
pub async fn handle(state: Arc<State>, req: hyper::Request<RequestBody>) -> hyper::Response<Body> {
    let path = req.uri().path();
    match path {
        "/healthz" | "/readyz" | "/metrics" => {
            let path = path.to_owned();
            super::admin::probe(state, &path).await
        }
        p if p.starts_with("/admin/") => super::admin::admin(state, req).await,
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
fn presented(req: &hyper::Request<RequestBody>) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    if let Some(v) = h.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
}

/// Whether `token` is one of `tokens`, compared in constant time.
pub fn token_matches(tokens: &[String], token: Option<&str>) -> bool {
    token_index(tokens, token).is_some()
}

/// The place of `token` among `tokens`: every one is compared, in constant time.
pub fn token_index(tokens: &[String], token: Option<&str>) -> Option<usize> {
    use subtle::ConditionallySelectable;
    let t = token?;
    let (mut found, mut any) = (0u64, subtle::Choice::from(0));
    for (i, known) in tokens.iter().enumerate() {
        let hit = known.as_bytes().ct_eq(t.as_bytes());
        found.conditional_assign(&(i as u64), hit);
        any |= hit;
    }
    bool::from(any).then_some(found as usize)
}

/// A client request on the Gemini or OpenAI surface.
async fn client(state: &Arc<State>, req: hyper::Request<RequestBody>) -> hyper::Response<Body> {
    let path = req.uri().path().to_owned();
    let surface = if path.starts_with("/v1beta/openai/") { Surface::OpenAi } else { Surface::Gemini };
    let loaded = state.loaded.load_full();
    let client = match loaded.client_tokens.is_empty() {
        true => Some(None),
        false => token_index(&loaded.client_tokens, presented(&req).as_deref()).map(Some),
    };
    let Some(client) = client else {
        count(state, surface, "unauthenticated");
        return error(
            surface,
            401,
            "UNAUTHENTICATED",
            "a valid proxy token is required (x-goog-api-key or Authorization: Bearer)",
        );
    };
    if !plain_path(&path) {
        count(state, surface, "rejected");
        let msg = "the request path must not hold '.', '..', '//', '\\' or escaped separators";
        return error(surface, 400, "INVALID_ARGUMENT", msg);
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let json: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let Some(op) = classify(&parts.method, &path, json.as_ref()) else {
        count(state, surface, "rejected");
        return error(surface, 404, "NOT_FOUND", &format!("{path} is not an endpoint this proxy serves"));
    };
    // An OpenAI stream is settled from the usage chunk the provider sends only when asked:
    // asked for upstream, and kept from a client that did not ask for it.
    let hide_usage = surface == Surface::OpenAi
        && matches!(op, Op::Admitted { stream: true, .. })
        && json.as_ref().is_some_and(|v| v.is_object() && v["stream_options"]["include_usage"].as_bool() != Some(true));
    let body = match (&json, hide_usage) {
        (Some(v), true) => {
            let mut v = v.clone();
            v["stream_options"]["include_usage"] = Value::Bool(true);
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        _ => body,
    };
    let client = client.map_or_else(|| "anonymous".to_owned(), |i| format!("token-{}", i + 1));
    let call = Call { surface, parts, body, hide_usage, client };
    match op {
        Op::Free => free(state, &call).await,
        Op::Admitted { model, stream } => match json {
            Some(v @ Value::Object(_)) => admitted(state, &call, &model, stream, &v).await,
            // Sent as it is, a body this proxy cannot read would go uncounted.
            other => {
                count(state, surface, "rejected");
                let found = match other {
                    None => "a body that is not JSON",
                    Some(Value::Array(_)) => "a JSON array",
                    Some(Value::String(_)) => "a JSON string",
                    Some(Value::Null) => "JSON null",
                    Some(_) => "a JSON number or boolean",
                };
                let msg = format!(
                    "Invalid JSON payload received: a request that uses quota must have a JSON object as its body ({{...}}); found {found}."
                );
                error(surface, 400, "INVALID_ARGUMENT", &msg)
            }
        },
    }
}

/// Whether `path` is plain: no `.` or `..` segment, no empty segment, no backslash and no
/// escaped separator or dot, so that the path sent upstream is the path that was routed.
fn plain_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !(path.contains('\\') || lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c"))
        && path.split('/').skip(1).all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A request's parts, kept for every attempt.
struct Call {
    surface: Surface,
    parts: hyper::http::request::Parts,
    /// The body sent upstream.
    body: Bytes,
    /// An OpenAI stream whose client did not ask for usage: the usage chunk asked for on its
    /// behalf is not passed on.
    hide_usage: bool,
    /// Who sent it, as the traffic log names it (`token-N`, `anonymous`).
    client: String,
}

/// What `method` on `path` asks for; `None` for endpoints the proxy does not serve.
fn classify(method: &hyper::Method, path: &str, body: Option<&Value>) -> Option<Op> {
    let bare = |m: &str| m.trim_start_matches("models/").to_owned();
    if let Some(rest) = path.strip_prefix("/v1beta/openai/") {
        return match (method.as_str(), rest.trim_end_matches('/')) {
            ("GET", r) if r == "models" || r.strip_prefix("models/").is_some_and(model_id) => Some(Op::Free),
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
        return (rest.is_empty() || rest.strip_prefix('/').is_some_and(model_id)).then_some(Op::Free);
    }
    if method != hyper::Method::POST {
        return None;
    }
    let (model, action) = rest.strip_prefix('/')?.rsplit_once(':')?;
    if !model_id(model) {
        return None;
    }
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

/// Whether `id` can be a model's id: letters, digits, `.`, `-` and `_` only.
fn model_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Reads the body (the service's layers hold it to Gemini's size limit and the body timeout).
async fn read_body(body: RequestBody) -> Result<Bytes, hyper::Response<Body>> {
    match body.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(Surface::Gemini, 413, "INVALID_ARGUMENT", "the request is larger than 20 MB"))
        }
        Err(e) if e.downcast_ref::<tower_http::timeout::TimeoutError>().is_some() => {
            Err(error(Surface::Gemini, 408, "DEADLINE_EXCEEDED", "the request body did not arrive in time"))
        }
        Err(_) => Err(error(Surface::Gemini, 400, "INVALID_ARGUMENT", "the request body could not be read")),
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

/// How many requests a body counts as: a `batchEmbedContents`' requests, an OpenAI
/// `embeddings` input list's entries (Gemini counts each), else one.
fn batch_size(v: &Value) -> u64 {
    let n = match (v.get("requests"), v.get("input")) {
        (Some(Value::Array(r)), _) => r.len(),
        (_, Some(Value::Array(i))) if v.get("messages").is_none() => i.len(),
        _ => 1,
    };
    n.max(1) as u64
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
    let request = Request::new(m, Prompt::Text(&text))
        .max_output_tokens(max_output(v))
        .batch(batch_size(v))
        .media_tokens(media_tokens(v));
    let loaded = state.loaded.load_full();
    let max_wait = match loaded.pool.engine.policy() {
        QueuePolicy::Wait { max_wait_ms } => Duration::from_millis(max_wait_ms),
        QueuePolicy::Reject => Duration::ZERO,
    };
    let labels = ModelLabel { model: model.to_owned() };
    let arrival = Instant::now();
    let mut line = state.traffic.as_ref().map(|_| {
        Box::new(Line {
            v: SCHEMA,
            ts: state.engine.clock().now().0,
            client: call.client.clone(),
            surface: surface.name(),
            model: model.to_owned(),
            stream,
            batch: batch_size(v),
            max_output: max_output(v),
            ..Default::default()
        })
    });
    let mut attempt = 0;
    loop {
        let depth = state.metrics.queue_depth.get_or_create(&labels).clone();
        depth.inc();
        let started = Instant::now();
        let acquired = {
            let _left = scopeguard_dec(&depth);
            state.engine.acquire_owned(&request, max_wait.saturating_sub(arrival.elapsed())).await
        };
        let waited = arrival.elapsed();
        state.metrics.queue_wait.get_or_create(&labels).observe(waited.as_secs_f64());
        if let Some(l) = line.as_mut() {
            l.wait_ms = ms(state, waited);
        }
        let mut permit = match acquired {
            Ok(p) => p,
            Err(AcquireError(reason)) => {
                logged(state, line, arrival, "denied", Some(reason.name()));
                return denial(state, surface, model, reason, &request).await;
            }
        };
        if let Some(l) = line.as_mut() {
            l.estimate = Some(permit.ticket().estimated_input);
        }
        if !permit.queued() {
            state.metrics.decision.observe(started.elapsed().as_secs_f64());
        }
        state.metrics.admissions.get_or_create(&labels).inc();
        // A reload while it waited may have added the key it got: the config of now.
        let loaded = state.loaded.load_full();
        let (key_id, project) = (permit.key_id(), permit.project_id());
        if let Some(l) = line.as_mut() {
            l.project = Some(project.clone());
        }
        let Some(secret) = loaded.keys.get(&key_id).cloned() else {
            // Cannot happen: every key of the pool has a value; return what it holds.
            drop(permit);
            return error(surface, 500, "INTERNAL", "the proxy has no value for the key it chose");
        };
        permit.mark_sent();
        let held = permit;
        let sent = Instant::now();
        let answer = send(state, call, &secret, true).await;
        state.metrics.upstream_latency.get_or_create(&labels).observe(sent.elapsed().as_secs_f64());
        if let Some(l) = line.as_mut() {
            l.upstream_ms = Some(ms(state, sent.elapsed()));
        }
        let resp = match answer {
            Ok(r) => r,
            Err(e) => {
                let (cause, outcome, status, code) = if e.is_timeout() {
                    ("timeout", Outcome::Unavailable, 504, "DEADLINE_EXCEEDED")
                } else {
                    ("transport", Outcome::Failed, 502, "UNAVAILABLE")
                };
                settled(state, held.settle(outcome));
                fail(state, model, cause);
                count(state, surface, "failed");
                logged(state, line, arrival, "failed", Some(cause.into()));
                return error(surface, status, code, "the upstream API did not answer");
            }
        };
        let status = resp.status().as_u16();
        if status == 200 {
            count(state, surface, "succeeded");
            let logged = line.map(|l| (l, arrival, sent));
            let answer = Answer { surface, project: &project, stream, model: m, hide_usage: call.hide_usage, logged };
            return relay(state, held, resp, answer).await;
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        let body_text = String::from_utf8_lossy(&body);
        let (outcome, retry, cause) = judge_failure(status, &body_text);
        let breach = matches!(&outcome, Outcome::RateLimited(q) if q.kind != Exhaustion::Capacity);
        if breach {
            state.metrics.breaches.get_or_create(&labels).inc();
        }
        if let Some(l) = line.as_mut() {
            l.breaches += u32::from(breach);
            l.upstream_ms = Some(ms(state, sent.elapsed()));
        }
        settled(state, held.settle(outcome));
        if let Some(c) = cause {
            fail(state, model, c);
        }
        if retry && attempt < loaded.proxy.retries {
            attempt += 1;
            state.metrics.retries.get_or_create(&labels).inc();
            if let Some(l) = line.as_mut() {
                l.retries = attempt;
            }
            continue;
        }
        match (breach, cause) {
            (true, _) => logged(state, line, arrival, "breach", None),
            (false, Some(c)) => logged(state, line, arrival, "failed", Some(c.into())),
            (false, None) => logged(state, line, arrival, "failed", Some(format!("http-{status}"))),
        }
        count(state, surface, if status == 429 { "rate_limited" } else { "failed" });
        return passthrough(status, &headers, hide(&body, &secret));
    }
}

/// `d` of real time in milliseconds of the engine's clock, to the microsecond: the same
/// but in lab runs on a faster clock, whose log then reads as the engine lived it.
pub(super) fn ms(state: &State, d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0 * state.time_scale
}

/// Ends a request's traffic log line (`outcome`, `reason`, its total time) and hands it to
/// the log, if there is one.
pub(super) fn logged(
    state: &State,
    line: Option<Box<Line>>,
    arrival: Instant,
    outcome: &'static str,
    reason: Option<String>,
) {
    let (Some(log), Some(mut l)) = (&state.traffic, line) else { return };
    l.outcome = outcome;
    l.reason = reason;
    l.total_ms = ms(state, arrival.elapsed());
    log.record(l);
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
        s => match failure(s, body) {
            // Another key may do better than a rejected one.
            Some((cause, outcome)) => (outcome, outcome == Outcome::KeyRejected, Some(cause)),
            // The request itself was refused (400, 404 …): the provider counts nothing.
            None if (400..500).contains(&s) => (Outcome::NotSent, false, None),
            None => (Outcome::Failed, false, Some("http-5xx")),
        },
    }
}

/// The query sent upstream: never the client's `key`; a request that uses quota keeps only
/// `alt` (`fields=` could strip the usage it is settled from); lists keep their paging.
fn upstream_query(q: &str, admitted: bool) -> String {
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| match admitted {
            true => kv.starts_with("alt=") || kv.starts_with("$alt="),
            false => !kv.starts_with("key=") && !kv.is_empty(),
        })
        .collect();
    kept.join("&")
}

/// Sends the call upstream with `key`.
async fn send(state: &State, call: &Call, key: &str, admitted: bool) -> Result<reqwest::Response, reqwest::Error> {
    let upstream = &state.loaded.load().proxy.upstream;
    let query = call.parts.uri.query().map(|q| upstream_query(q, admitted));
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
    match send(state, call, secret, false).await {
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

/// The engine did not admit the request: Gemini's own 429 with a `retryDelay` from the
/// engine's `retry_at` (and `Retry-After` on the OpenAI surface), 503 when the store cannot
/// answer, 400 for a request no project could ever take.
async fn denial(
    state: &State,
    surface: Surface,
    model: &str,
    reason: Reason,
    req: &Request<'_>,
) -> hyper::Response<Body> {
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
    let retry_at = match state.engine.admit_async(req, now).await {
        Ok(Decision::Denied(den)) => den.retry_at,
        // Freed just now: the client may come back at once (what it took returns unsent).
        Ok(Decision::Admitted(t)) => {
            let _ = state.engine.settle_async(&t, Outcome::NotSent, now).await;
            Some(now)
        }
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

pub(super) fn fail(state: &State, model: &str, cause: &str) {
    tracing::warn!(target: "keysim::proxy", model, cause, "upstream failure");
    state.metrics.failures.get_or_create(&ReasonLabels { model: model.to_owned(), reason: cause.to_owned() }).inc();
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
    fn only_plain_paths_are_routed() {
        for ok in ["/v1beta/models", "/v1beta/models/gemini-2.5-flash:generateContent", "/v1beta/openai/models"] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "/v1beta/models/../files",
            "/v1beta/models/%2e%2e/files",
            "/v1beta/models/%2E%2E/cachedContents",
            "/v1beta/models/x%2Ffiles",
            "/v1beta//models",
            "/v1beta/./models",
            "/v1beta/models\\..\\files",
        ] {
            assert!(!plain_path(bad), "{bad}");
        }
        assert_eq!(op("GET", "/v1beta/models/a/b", ""), None, "one model id, no deeper");
        assert_eq!(op("GET", "/v1beta/openai/models/a/b", ""), None);
        assert_eq!(op("POST", "/v1beta/models/a/b:generateContent", "{}"), None);
        assert_eq!(op("GET", "/v1beta/models/x%3AgenerateContent", ""), None, "ids are plain");
        assert_eq!(op("PUT", "/v1beta/models/gemini-2.5-flash:generateContent", "{}"), None, "actions are POST");
        assert_eq!(op("DELETE", "/v1beta/models/gemini-2.5-flash", ""), None);
    }

    #[test]
    fn nothing_that_could_hide_usage_or_redirect_a_request_goes_upstream() {
        assert_eq!(upstream_query("alt=sse&key=tok&fields=candidates&$fields=x", true), "alt=sse");
        assert_eq!(upstream_query("pageSize=5&key=tok&pageToken=a", false), "pageSize=5&pageToken=a");
        for name in
            ["x-goog-fieldmask", "x-http-method-override", "x-goog-user-project", "authorization", "x-goog-api-key"]
        {
            assert!(!passes(&hyper::header::HeaderName::from_static(name)), "{name}");
        }
        assert!(passes(&hyper::header::HeaderName::from_static("x-goog-api-client")));
    }

    #[test]
    fn exposure_needs_both_tokens_beyond_loopback() {
        use super::super::config::check_exposure;
        let local: std::net::SocketAddr = "127.0.0.1:8090".parse().unwrap();
        let open: std::net::SocketAddr = "0.0.0.0:8090".parse().unwrap();
        assert!(check_exposure(&local, 0, false).is_ok());
        assert!(check_exposure(&open, 1, true).is_ok());
        assert!(check_exposure(&open, 1, false).unwrap_err().contains("an admin token"));
        assert!(check_exposure(&open, 0, true).unwrap_err().contains("client tokens"));
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
        let invalid = r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(judge_failure(400, invalid), (Outcome::KeyRejected, true, Some("api-key-invalid")));
        let spoof =
            r#"{"error":{"code":400,"message":"Unknown name \"API_KEY_INVALID\"","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(judge_failure(400, spoof), (Outcome::NotSent, false, None), "a client cannot get a key disabled");
        let leaked =
            r#"{"error":{"code":403,"message":"Your API key was reported as leaked.","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(judge_failure(403, leaked), (Outcome::KeyRejected, true, Some("permission-denied")));
        assert_eq!(judge_failure(403, "{}"), (Outcome::NotSent, false, None));
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

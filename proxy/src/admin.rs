//! Probes (`/healthz`, `/readyz`), the Prometheus scrape (`/metrics`) and the admin API
//! (`/admin/pool`, `/admin/capacity`, `/admin/keys`, `POST /admin/reload`). Admin answers
//! show key ids redacted, and need the admin token.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::{json, Value};

use super::forward::token_matches;
use super::reply::{error, Surface};
use super::{Body, ProxyEngine, RequestBody, State};
use crate::engine::redact::{redact, redact_text, redact_url};
use crate::engine::store::{BucketId, Usage};
use crate::engine::{Dimension, StoreError, Timestamp};

fn answer(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(body.into()).map_err(|never| match never {}).boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    resp
}

fn json_answer(status: u16, v: &Value) -> hyper::Response<Body> {
    answer(status, "application/json", serde_json::to_vec_pretty(v).unwrap_or_default())
}

/// Every bucket's counters, read at once (one round trip a model on Redis, never blocking a
/// worker), for the probes and the admin API.
pub(crate) struct Usages {
    /// When they were read.
    pub(crate) now: Timestamp,
    map: HashMap<BucketId, Result<Usage, StoreError>>,
}

impl Usages {
    /// Reads every bucket of `engine`'s pool.
    pub(crate) async fn read(engine: &ProxyEngine) -> Self {
        let now = engine.clock().now();
        let mut map = HashMap::new();
        for m in 0..engine.pool().models().len() {
            map.extend(engine.usages_async(m, now).await);
        }
        Self { now, map }
    }

    /// A bucket's counters, if the store gave them.
    pub(crate) fn get(&self, bucket: BucketId) -> Option<Usage> {
        self.map.get(&bucket).and_then(|u| u.as_ref().ok()).copied()
    }

    /// Buckets the store could not read.
    pub(crate) fn failed(&self) -> usize {
        self.map.values().filter(|u| u.is_err()).count()
    }
}

/// Runs `f` with every bucket's counters read first: at most two at once, however many ask.
async fn with_usages(
    state: Arc<State>,
    f: impl FnOnce(&State, &Usages) -> hyper::Response<Body>,
) -> hyper::Response<Body> {
    let Ok(_turn) = state.probes.acquire().await else {
        return error(Surface::Gemini, 503, "UNAVAILABLE", "shutting down");
    };
    let usages = Usages::read(&state.engine).await;
    f(&state, &usages)
}

/// `/healthz` (the process serves), `/readyz` (it should get traffic: not draining, the store
/// answers, some key is usable) and `/metrics`; the last two off the reactor.
pub async fn probe(state: Arc<State>, path: &str) -> hyper::Response<Body> {
    if path == "/healthz" {
        return json_answer(200, &json!({"status": "ok"}));
    }
    let readyz = path == "/readyz";
    with_usages(state, move |s, u| {
        if readyz {
            let (ready, why) = readiness(s, u);
            json_answer(if ready { 200 } else { 503 }, &json!({"ready": ready, "reason": why}))
        } else {
            let text = s.metrics.scrape(&s.engine, u);
            answer(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
    })
    .await
}

fn readiness(state: &State, usages: &Usages) -> (bool, &'static str) {
    if state.draining.load(Ordering::SeqCst) {
        return (false, "shutting down");
    }
    let pool = state.engine.pool();
    let buckets = (0..pool.models().len()).map(|m| pool.groups(m).len()).sum::<usize>();
    if buckets > 0 && usages.failed() == buckets {
        return (false, "the quota store does not answer");
    }
    if !pool.keys().iter().any(|k| k.usable()) {
        return (false, "no usable key");
    }
    (true, "ready")
}

/// The admin API.
pub async fn admin(state: Arc<State>, req: hyper::Request<RequestBody>) -> hyper::Response<Body> {
    let loaded = state.loaded.load_full();
    if let Some(token) = &loaded.admin_token {
        let presented = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !token_matches(std::slice::from_ref(token), presented) {
            return error(
                Surface::Gemini,
                401,
                "UNAUTHENTICATED",
                "the admin API needs the admin token (Authorization: Bearer)",
            );
        }
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/admin/pool") => json_answer(200, &pool(&state)),
        ("GET", "/admin/capacity") => with_usages(state, |s, u| json_answer(200, &capacity(s, u))).await,
        ("GET", "/admin/keys") => json_answer(200, &keys(&state)),
        ("GET", "/admin/scenario") => answer(200, "application/toml", scenario(&state)),
        ("POST", "/admin/reload") => {
            // It reads files: on the blocking pool.
            let reload = tokio::task::spawn_blocking(move || match state.reload() {
                Ok(c) => json_answer(200, &json!({"reloaded": true, "changes": c})),
                Err(e) => json_answer(400, &json!({"reloaded": false, "error": redact_text(&e.to_string())})),
            });
            reload.await.unwrap_or_else(|_| error(Surface::Gemini, 500, "INTERNAL", "the reload failed"))
        }
        _ => error(
            Surface::Gemini,
            404,
            "NOT_FOUND",
            "admin endpoints: GET /admin/pool, /admin/capacity, /admin/keys, /admin/scenario; POST /admin/reload",
        ),
    }
}

fn pool(state: &State) -> Value {
    let pool = state.engine.pool();
    let models: Vec<Value> =
        pool.models().iter().map(|m| json!({"name": m.name, "limits": limits(&m.limits)})).collect();
    let projects: Vec<Value> = pool
        .projects()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let per_model: serde_json::Map<String, Value> = pool
                .models()
                .iter()
                .zip(&p.limits)
                .map(|(m, l)| (m.name.clone(), l.as_ref().map_or(Value::Null, limits)))
                .collect();
            let keys: Vec<String> =
                pool.keys().iter().filter(|k| k.project == i && !k.removed).map(|k| redact(&k.id)).collect();
            json!({"id": p.id, "limits": per_model, "keys": keys})
        })
        .collect();
    let loaded = state.loaded.load();
    json!({
        "models": models,
        "projects": projects,
        "upstream": redact_url(&loaded.proxy.upstream),
        "store": loaded.proxy.store.as_deref().map_or_else(|| "memory".to_owned(), redact_url),
    })
}

/// The pool the proxy serves now (keys that left it, limits it learned), and its engine's
/// settings, as the pool sections of a scenario file: key ids only (redacted where they look
/// like secrets), never a key's value.
fn scenario(state: &State) -> String {
    use crate::engine::setting::Setting;
    use std::fmt::Write;
    let q = |x: &str| serde_json::to_string(x).unwrap_or_default();
    let pool = state.engine.pool();
    let loaded = state.loaded.load();
    let def = &loaded.pool;
    let mut out = String::new();
    let _ =
        writeln!(out, "# The pool this keysim proxy serves now and its engine's settings, from GET /admin/scenario.");
    let _ = writeln!(out, "# Key ids only (redacted where they look like secrets); no key values.");
    let _ =
        writeln!(out, "[scenario]\nname = {}\nduration = \"24h\"\nseed = {}\n", q(&def.name), def.engine.config.seed);
    let limit_fields = |out: &mut String, l: &crate::engine::Limits| {
        let _ = write!(out, "rpm = {}\ntpm = {}\nrpd = {}\n", l.rpm, l.tpm, l.rpd);
        if let Some(tpd) = l.tpd {
            let _ = writeln!(out, "tpd = {tpd}");
        }
    };
    for (i, m) in pool.models().iter().enumerate() {
        let _ = writeln!(out, "[[models]]\nname = {}", q(&m.name));
        limit_fields(&mut out, &m.limits);
        if let Some(md) = def.models.get(i).filter(|md| md.name == m.name) {
            if let Some(e) = md.estimator {
                let _ = writeln!(out, "estimator = {}", q(e.name()));
            }
            if md.thinking_tokens > 0 {
                let _ = writeln!(out, "thinking_tokens = {}", md.thinking_tokens);
            }
        }
        out.push('\n');
    }
    for (i, p) in pool.projects().iter().enumerate() {
        let keys: Vec<String> =
            pool.keys().iter().filter(|k| k.project == i && k.usable()).map(|k| q(&redact(&k.id))).collect();
        if keys.is_empty() {
            continue;
        }
        let tier = def.projects.iter().find(|d| d.id == p.id).map_or("free", |d| d.tier.name());
        let _ = writeln!(out, "[[projects]]\nid = {}\ntier = {}\nkeys = [{}]", q(&p.id), q(tier), keys.join(", "));
        for (m, l) in pool.models().iter().zip(&p.limits) {
            if let Some(l) = l.filter(|l| *l != m.limits) {
                let tpd = l.tpd.map_or(String::new(), |t| format!(", tpd = {t}"));
                let _ = writeln!(
                    out,
                    "limits.{} = {{ rpm = {}, tpm = {}, rpd = {}{tpd} }}",
                    q(&m.name),
                    l.rpm,
                    l.tpm,
                    l.rpd
                );
            }
        }
        out.push('\n');
    }
    let e = &def.engine;
    let c = &e.config;
    let _ =
        writeln!(out, "[engine]\nstrategy = {}\nreserve = {}\nsafety = {}", q(c.strategy.name()), c.reserve, c.safety);
    let _ = writeln!(out, "token_basis = {}\noutput_reserve = {}", q(c.basis.name()), c.output_reserve);
    let _ = writeln!(out, "reconcile = {}\ncached_tokens_count = {}", c.reconcile, c.cached_tokens_count);
    let _ = writeln!(out, "estimator = {}", q(e.estimator.name()));
    let _ = writeln!(out, "on_exhausted = {}\nmax_wait = \"{}ms\"", q(e.on_exhausted.name()), e.max_wait_ms);
    out
}

fn limits(l: &crate::engine::Limits) -> Value {
    let mut o = serde_json::Map::new();
    for d in Dimension::ALL {
        let v = l.get(d);
        if v != u64::MAX {
            o.insert(d.name().to_owned(), json!(v));
        }
    }
    Value::Object(o)
}

fn capacity(state: &State, usages: &Usages) -> Value {
    let pool = state.engine.pool();
    let now = usages.now;
    let models: Vec<Value> = pool
        .models()
        .iter()
        .enumerate()
        .map(|(m, model)| {
            let c = state.engine.capacity_with(m, now, &|b| usages.get(b));
            let per = |a: &[u64; 4]| {
                let o: serde_json::Map<String, Value> =
                    Dimension::ALL.iter().map(|d| (d.name().to_owned(), json!(a[d.index()]))).collect();
                Value::Object(o)
            };
            json!({
                "model": model.name,
                "projects": c.projects,
                "usable_keys": c.keys,
                "limits": per(&c.limits),
                "usable": per(&c.usable),
                "remaining": per(&c.remaining),
                "minute_frees_at": c.minute_frees_at.map(|t| t.to_rfc3339()),
                "day_resets_at": c.day_resets_at.to_rfc3339(),
            })
        })
        .collect();
    json!({ "models": models })
}

fn keys(state: &State) -> Value {
    let pool = state.engine.pool();
    let health = state.engine.health_now();
    let keys: Vec<Value> = pool
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let probes = health.disabled.iter().find(|(id, _)| id.0 as usize == i).map(|(_, n)| *n);
            let state = match (k.removed, k.revoked, k.enabled, probes) {
                (true, ..) => "removed",
                (_, true, ..) => "revoked",
                (_, _, false, _) => "disabled",
                (.., Some(_)) => "rejected-by-provider",
                _ => "serving",
            };
            json!({
                "key": redact(&k.id),
                "project": pool.projects()[k.project].id,
                "state": state,
                "failed_probes": probes,
            })
        })
        .collect();
    json!({ "keys": keys })
}

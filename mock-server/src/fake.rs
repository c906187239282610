//! The fake Gemini API as one function: an HTTP request in, an answer out, with the judge
//! deciding every quota question. Hosts (wiremock, or the sustained host) only move bytes.
//!
//! Speaks `generateContent`, `streamGenerateContent` (server-sent events with `alt=sse`, a
//! JSON array without), `countTokens`, `GET models` (paged) and `GET models/{model}`, and the
//! OpenAI-compatible `chat/completions` (plain and streamed). Keys come from
//! `x-goog-api-key`, `?key=` or, on the OpenAI path, `Authorization: Bearer`. Bodies and
//! errors are Gemini's own (see [`crate::body`]).
//!
//! Fake-only extensions, so that a load run can replay a simulated scenario exactly: a
//! request may state its true input count (`x-keysim-input-tokens`), its answer's length
//! (`x-keysim-output-tokens`), how long the fake takes to give it (`x-keysim-latency-ms`, on
//! the fake's clock; slow answers still apply on top) and whether it fails (`x-keysim-fault: internal | overloaded | capacity |
//! timeout | none`; a timeout answers 504 after the stated latency), and the time of the
//! provider's script (`x-keysim-script-ms`, ms since the run's start; without it, the script
//! counts from the first request the fake answers).
//! Stated counts are capped at the limits the models advertise.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde_json::{json, Value};

use crate::body::{self, ErrorAnswer, UsageMetadata};
use crate::judge::{Fault, FaultModel, Judge, JudgeConfig, KeyState, LatencySampler, Verdict};
use crate::script::{Script, StormKind};
use crate::shape;
use crate::validate::{self, Kind};

/// The most output tokens an answer has (the `outputTokenLimit` models advertise); also the
/// cap on an output count a request states.
pub const MAX_TOKENS: u64 = 65_536;
/// The most input tokens a prompt has (the `inputTokenLimit` models advertise).
pub const MAX_INPUT_TOKENS: u64 = 1_048_576;

/// Counts the input tokens of a prompt's text (the truth the judge enforces).
pub type TokenCounter = Box<dyn Fn(&str) -> u64 + Send + Sync>;

/// About four characters a token, rounded up: the count when no tokenizer is given.
pub fn chars_per_four(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Failures beyond the judge's 500/503 rates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExtraFaults {
    /// Share of requests whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Share of successful answers that take `slow_factor` times longer.
    pub slow_rate: f64,
    /// How much longer a slow answer takes.
    pub slow_factor: f64,
    /// Every this many milliseconds (0: never) a burst of 503s starts ...
    pub burst_every_ms: u64,
    /// ... and lasts this long.
    pub burst_ms: u64,
}

/// What the fake is made of.
pub struct FakeConfig {
    /// Models, projects, quotas, latency and the 500/503 rates.
    pub judge: JudgeConfig,
    /// Keys and the index of their project.
    pub keys: Vec<(String, usize)>,
    /// Dropped connections, slow answers, 503 bursts.
    pub extra: ExtraFaults,
    /// Output tokens of answers that do not say (log-normal median and p99).
    pub output_median: f64,
    /// See `output_median`.
    pub output_p99: f64,
    /// The input-token truth.
    pub count: TokenCounter,
    /// Seed of latencies, faults and output sizes.
    pub seed: u64,
    /// Whether token limits count output tokens too (Gemini: input only).
    pub counts_output: bool,
    /// What the provider does on its own over time (times count from the first request).
    pub script: Script,
    /// Per model (in the judge's order): thinking tokens an answer reports, unless the
    /// request's `thinkingBudget` is lower.
    pub thinking: Vec<u64>,
}

/// One HTTP request, as the fake needs it.
#[derive(Clone, Copy, Debug)]
pub struct ApiRequest<'a> {
    /// `GET`, `POST` …
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// Header lookup by lower-case name.
    pub headers: &'a [(String, String)],
    /// The body.
    pub body: &'a [u8],
}

impl ApiRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<String> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| decode(v))
    }
}

/// The answer's body.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// One JSON document.
    Json(Value),
    /// Server-sent events, each `data: <json>` (already serialised).
    Events(Vec<String>),
    /// A streamed JSON array, its elements already serialised.
    Array(Vec<String>),
}

/// What to send back.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub payload: Payload,
    /// How long to wait before answering, in milliseconds.
    pub delay_ms: u64,
    /// Drop the connection instead of answering.
    pub drop: bool,
}

impl Answer {
    fn json(status: u16, body: Value, delay_ms: u64) -> Self {
        Self { status, payload: Payload::Json(body), delay_ms, drop: false }
    }

    /// An error answer after `delay_ms`.
    pub fn error(e: ErrorAnswer, delay_ms: u64) -> Self {
        Self::json(e.status, e.body, delay_ms)
    }

    /// The content type of the body.
    pub fn content_type(&self) -> &'static str {
        match self.payload {
            Payload::Events(_) => "text/event-stream",
            Payload::Json(_) | Payload::Array(_) => "application/json; charset=UTF-8",
        }
    }

    /// The body as bytes, all at once.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body_pieces().concat()
    }

    /// The body in the pieces a streaming host sends one after another: one for a JSON
    /// document, one per event or array element of a stream.
    pub fn body_pieces(&self) -> Vec<Vec<u8>> {
        match &self.payload {
            Payload::Json(v) => vec![serde_json::to_vec(v).expect("JSON values serialise")],
            Payload::Events(events) => events.iter().map(|e| format!("data: {e}\r\n\r\n").into_bytes()).collect(),
            Payload::Array(items) => {
                let last = items.len().saturating_sub(1);
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let open = if i == 0 { "[" } else { ",\r\n" };
                        let close = if i == last { "]" } else { "" };
                        format!("{open}{item}{close}").into_bytes()
                    })
                    .collect()
            }
        }
    }
}

struct State {
    judge: Judge,
    rng: rand_pcg::Pcg64Mcg,
    /// The latest time the judge was asked at.
    last_now: u64,
    /// The first of the script's events not yet applied.
    next_event: usize,
}

/// The fake API.
pub struct Fake {
    state: Mutex<State>,
    models: Vec<String>,
    latency: LatencySampler,
    /// Errors come back quickly, at a tenth of the median latency.
    error_ms: u64,
    faults: FaultModel,
    extra: ExtraFaults,
    output: Option<LogNormal<f64>>,
    output_median: u64,
    counts_output: bool,
    count: TokenCounter,
    responses: AtomicU64,
    /// The instant 503 bursts and the script count from: the first request's.
    epoch_ms: AtomicU64,
    script: Script,
    thinking: Vec<u64>,
    /// Generating requests so far: each one's number draws its share of a storm.
    generating: AtomicU64,
    /// Script events applied so far (read without the lock).
    events_done: AtomicUsize,
    seed: u64,
    /// Quota 429s answered so far (breaches, seen from the provider's side).
    quota_refusals: AtomicU64,
}

/// Which surface a request came in on (errors of the OpenAI one are wrapped in an array).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Gemini,
    OpenAi,
}

impl Fake {
    /// A fake serving `config`.
    pub fn new(config: FakeConfig) -> Self {
        let mut judge = Judge::new(config.judge.clone());
        for (k, p) in &config.keys {
            judge.issue_key(k, *p);
        }
        let output = (config.output_p99 > config.output_median && config.output_median > 0.0).then(|| {
            let sigma = (config.output_p99 / config.output_median).ln() / 2.326_347_874;
            LogNormal::new(config.output_median.ln(), sigma).expect("finite sigma")
        });
        Self {
            state: Mutex::new(State {
                judge,
                rng: rand_pcg::Pcg64Mcg::seed_from_u64(config.seed),
                last_now: 0,
                next_event: 0,
            }),
            counts_output: config.counts_output,
            models: config.judge.models.clone(),
            latency: config.judge.latency.sampler(),
            error_ms: config.judge.latency.error_ms(),
            faults: config.judge.faults,
            extra: config.extra,
            output,
            output_median: config.output_median.max(1.0) as u64,
            count: config.count,
            responses: AtomicU64::new(0),
            epoch_ms: AtomicU64::new(0),
            script: config.script,
            thinking: config.thinking,
            generating: AtomicU64::new(0),
            events_done: AtomicUsize::new(0),
            seed: config.seed,
            quota_refusals: AtomicU64::new(0),
        }
    }

    /// The models served.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// Issues a key for project `project` while serving.
    pub fn issue_key(&self, key: &str, project: usize) {
        self.lock().judge.issue_key(key, project);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers `req` at `now` (milliseconds since the Unix epoch, on the fake's clock).
    pub fn handle(&self, req: &ApiRequest<'_>, now: u64) -> Answer {
        let _ = self.epoch_ms.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
        if self.events_done.load(Ordering::Relaxed) < self.script.events.len() {
            self.follow_script(self.script_time(req, now));
        }
        let path = req.path.trim_end_matches('/');
        let surface = if path.starts_with("/v1beta/openai/") { Surface::OpenAi } else { Surface::Gemini };
        let wrap = |a: Answer| match (surface, a.payload) {
            (Surface::OpenAi, Payload::Json(v)) if a.status >= 400 => {
                Answer { payload: Payload::Json(openai_error(v, a.status)), ..a }
            }
            (_, payload) => Answer { payload, ..a },
        };
        let answer = match (req.method, path) {
            ("GET", "/keysim/usage") => self.usage_report(now),
            ("GET", "/v1beta/models") => self.with_key(req, surface, |_| self.list_models(req)),
            ("GET", p) if p.starts_with("/v1beta/models/") => {
                let name = &p["/v1beta/models/".len()..];
                self.with_key(req, surface, |_| self.get_model(name))
            }
            ("GET", "/v1beta/openai/models") => self.with_key(req, surface, |_| {
                let data: Vec<Value> = self
                    .models
                    .iter()
                    .map(|m| json!({"id": format!("models/{m}"), "object": "model", "owned_by": "google"}))
                    .collect();
                Answer::json(200, json!({"object": "list", "data": data}), 0)
            }),
            ("GET", p) if p.starts_with("/v1beta/openai/models/") => {
                let name = decode(&p["/v1beta/openai/models/".len()..]);
                let name = name.trim_start_matches("models/").to_owned();
                self.with_key(req, surface, |_| match self.model_index(&name) {
                    Some(_) => Answer::json(
                        200,
                        json!({"id": format!("models/{name}"), "object": "model", "owned_by": "google"}),
                        0,
                    ),
                    None => Answer::error(body::model_not_found(&name), 0),
                })
            }
            ("POST", "/v1beta/openai/embeddings") => {
                self.with_key(req, surface, |project| self.openai_embeddings(req, project, now))
            }
            ("POST", "/v1beta/openai/chat/completions") => {
                self.with_key(req, surface, |project| self.chat_completions(req, project, now))
            }
            ("POST", p) if p.starts_with("/v1beta/models/") => {
                let rest = &p["/v1beta/models/".len()..];
                match rest.split_once(':') {
                    Some((model, "generateContent")) => {
                        self.with_key(req, surface, |project| self.generate(req, model, project, now, None))
                    }
                    Some((model, "streamGenerateContent")) => {
                        let sse = req.query("alt").as_deref() == Some("sse");
                        self.with_key(req, surface, |project| self.generate(req, model, project, now, Some(sse)))
                    }
                    Some((model, "countTokens")) => {
                        self.with_key(req, surface, |project| self.count_tokens(req, model, project, now))
                    }
                    Some((model, "embedContent")) => {
                        self.with_key(req, surface, |project| self.embed_content(req, model, project, now, false))
                    }
                    Some((model, "batchEmbedContents")) => {
                        self.with_key(req, surface, |project| self.embed_content(req, model, project, now, true))
                    }
                    _ => not_found(),
                }
            }
            _ => not_found(),
        };
        wrap(answer)
    }

    /// Authenticates `req`, then runs `f` with the key's project.
    fn with_key(&self, req: &ApiRequest<'_>, surface: Surface, f: impl FnOnce(usize) -> Answer) -> Answer {
        let fast = self.error_ms;
        let bearer = req
            .header("authorization")
            .and_then(|a| a.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, token)| token.trim());
        let from_query = req.query("key");
        let google = req.header("x-goog-api-key").or(from_query.as_deref());
        let key = match (google, bearer, surface) {
            (Some(_), Some(_), _) => return Answer::error(body::multiple_credentials(), fast),
            (Some(k), None, _) | (None, Some(k), Surface::OpenAi) => k,
            (None, Some(_), Surface::Gemini) | (None, None, _) => return Answer::error(body::missing_key(), fast),
        };
        let state = self.lock().judge.key_state(key);
        match state {
            KeyState::Valid(project) => f(project),
            KeyState::Suspended => Answer::error(body::suspended_key(), fast),
            KeyState::Invalid => Answer::error(body::api_key_invalid(), fast),
        }
    }

    fn list_models(&self, req: &ApiRequest<'_>) -> Answer {
        let size =
            req.query("pageSize").and_then(|s| s.parse::<usize>().ok()).filter(|n| *n > 0).unwrap_or(50).min(1000);
        let start = req.query("pageToken").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
        let page: Vec<Value> = self.models.iter().skip(start).take(size).map(|m| model_json(m)).collect();
        let mut out = json!({ "models": page });
        if start.saturating_add(size) < self.models.len() {
            out["nextPageToken"] = json!((start + size).to_string());
        }
        Answer::json(200, out, 0)
    }

    fn get_model(&self, name: &str) -> Answer {
        match self.models.iter().find(|m| m.as_str() == name) {
            Some(m) => Answer::json(200, model_json(m), 0),
            None => Answer::error(body::model_not_found(name), 0),
        }
    }

    fn model_index(&self, model: &str) -> Option<usize> {
        self.models.iter().position(|m| m == model)
    }

    /// Milliseconds since the first request.
    fn since_start(&self, now: u64) -> u64 {
        now.saturating_sub(self.epoch_ms.load(Ordering::Relaxed))
    }

    /// The script's time for `req`: the run's own clock where the caller states it
    /// (`x-keysim-script-ms`, as `keysim load` does), else milliseconds since the first request.
    fn script_time(&self, req: &ApiRequest<'_>, now: u64) -> u64 {
        req.header("x-keysim-script-ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| self.since_start(now))
    }

    /// Applies the script's events due by `t` (keys suspended or revived, limits changed).
    fn follow_script(&self, t: u64) {
        let events = &self.script.events;
        if self.events_done.load(Ordering::Relaxed) >= events.len() {
            return;
        }
        let mut state = self.lock();
        while let Some(e) = events.get(state.next_event).filter(|e| e.at_ms <= t) {
            e.event.apply(&mut state.judge);
            state.next_event += 1;
        }
        self.events_done.store(state.next_event, Ordering::Relaxed);
    }

    /// The storm a request falls in at script time `t`, if it is one of its share: its kind
    /// and, for a timeout, how long the answer takes.
    fn storm(&self, t: u64) -> Option<(StormKind, u64)> {
        if self.script.storms.is_empty() {
            return None;
        }
        let n = self.generating.fetch_add(1, Ordering::Relaxed);
        self.script.storm(n, self.seed, t).map(|s| (s.kind, s.timeout_ms))
    }

    /// The provider's answer when it fails as `kind` says (a timeout after `wait_ms`).
    fn failure(&self, kind: StormKind, wait_ms: u64) -> Answer {
        let fast = self.error_ms;
        match kind {
            StormKind::Capacity => Answer::error(body::capacity_exhausted(), fast),
            StormKind::Overloaded => Answer::error(body::overloaded(), fast),
            StormKind::Internal => Answer::error(body::internal(), fast),
            StormKind::Timeout => Answer::error(body::deadline_exceeded(), wait_ms),
        }
    }

    /// A failure only a real-time host has (503 burst, dropped connection), if any.
    fn fault(&self, state: &mut State, now: u64) -> Option<Answer> {
        let fast = self.error_ms;
        let e = &self.extra;
        if e.burst_every_ms > 0 {
            let since = self.since_start(now);
            if since % e.burst_every_ms >= e.burst_every_ms - e.burst_ms {
                return Some(Answer::error(body::overloaded(), fast));
            }
        }
        if e.drop_rate > 0.0 && state.rng.random::<f64>() < e.drop_rate {
            return Some(Answer { status: 0, payload: Payload::Json(Value::Null), delay_ms: fast, drop: true });
        }
        None
    }

    /// Everything a generating request goes through: its true counts, the provider's own
    /// failures, the judge, and the answer's size and latency. `Ok((input, output, finish,
    /// delay))`, or the error answer.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &self,
        req: &ApiRequest<'_>,
        model: &str,
        project: usize,
        m: usize,
        (prompt, media): (&str, u64),
        cap: Option<u64>,
        now: u64,
    ) -> Result<(u64, u64, &'static str, u64), Answer> {
        let number = |name: &str| req.header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let input = number("x-keysim-input-tokens").unwrap_or_else(|| (self.count)(prompt).saturating_add(media));
        if input > MAX_INPUT_TOKENS {
            let msg = format!(
                "The input token count ({input}) exceeds the maximum number of tokens allowed ({MAX_INPUT_TOKENS})."
            );
            return Err(Answer::error(validate::invalid("contents", &msg), 0));
        }
        let asked = number("x-keysim-output-tokens");
        let mut state = self.lock();
        // Time reaches the judge in order, whatever order requests took the lock in.
        let now = now.max(state.last_now);
        state.last_now = now;
        // A replayed request says which failure it drew (`none` included); others draw here.
        let stated = req.header("x-keysim-fault").map(str::trim);
        let drawn = match stated.and_then(|v| StormKind::ALL.iter().find(|(n, _)| *n == v)) {
            Some((_, kind)) => Some(*kind),
            None if stated == Some("none") => None,
            None => self.faults.draw(&mut state.rng).map(|f| match f {
                Fault::Internal => StormKind::Internal,
                Fault::Overloaded => StormKind::Overloaded,
            }),
        };
        if let Some(a) = self.fault(&mut state, now) {
            return Err(a);
        }
        // A stated timeout takes the stated latency (30 s if none is stated).
        let stated_wait = number("x-keysim-latency-ms").unwrap_or(30_000).min(3_600_000);
        let storm = || self.storm(self.script_time(req, now));
        if let Some((kind, wait)) = drawn.map(|k| (k, stated_wait)).or_else(storm) {
            return Err(self.failure(kind, wait));
        }
        let (output, finish) = self.output_tokens(&mut state, asked, cap);
        let counted = self.script.cached.judged(input);
        let judged = if self.counts_output { counted.saturating_add(output) } else { counted };
        if let Verdict::Exhausted { violations, retry_after_ms } = state.judge.submit(project, m, judged, now) {
            self.quota_refusals.fetch_add(1, Ordering::Relaxed);
            let tier = state.judge.config().projects[project].tier;
            let shape = self.script.quota_body;
            let body = body::quota_exceeded_as(shape, &violations, tier, model, retry_after_ms, 1_000 + project as u64);
            return Err(Answer::error(body, self.error_ms));
        }
        let delay = self.delay(&mut state, req);
        Ok((input, output, finish, delay))
    }

    /// `generateContent` (`stream = None`) or `streamGenerateContent` (`Some(sse)`).
    fn generate(&self, req: &ApiRequest<'_>, model: &str, project: usize, now: u64, stream: Option<bool>) -> Answer {
        let Some(m) = self.model_index(model) else { return Answer::error(body::model_not_found(model), 0) };
        if embed::embeds(model) {
            return Answer::error(body::model_not_found(model), 0);
        }
        let request = match validate::request(req.body, Kind::Generate) {
            Ok(v) => v,
            Err(e) => return Answer::error(e, 0),
        };
        let cap = gemini_max_output(&request);
        let media = shape::media_tokens(validate::get(&request, "contents"));
        let (input, output, finish, delay) =
            match self.admit(req, model, project, m, (&gemini_prompt(&request), media), cap, now) {
                Ok(x) => x,
                Err(a) => return a,
            };
        let n = self.responses.fetch_add(1, Ordering::Relaxed);
        let id = format!("keysim-{n:012x}");
        // JSON where the request asks for it (from its schema), cut at its stop sequences.
        let (cfg, seed) = (validate::get(&request, "generation_config"), self.seed ^ n);
        let text = shape::stop_at(shape::json_answer(cfg, seed).unwrap_or_else(|| answer_text(output)), cfg);
        let cached = self.script.cached.of(input);
        let candidates = output * shape::candidate_count(cfg);
        let budget =
            cfg.and_then(|c| validate::get(c, "thinking_config")).and_then(|t| validate::get(t, "thinking_budget"));
        let budget = budget.and_then(Value::as_i64).filter(|b| *b >= 0).map_or(u64::MAX, |b| b as u64);
        let thoughts = self.thinking.get(m).copied().unwrap_or(0).min(budget);
        let usage = UsageMetadata { prompt: input, cached, candidates, thoughts };
        let Some(sse) = stream else {
            let mut body = body::generate_content(&text, &usage, model, &id);
            shape::finish(&mut body, &request, finish, seed);
            return Answer::json(200, body, delay);
        };
        // Up to three chunks; each carries cumulative usage, the last the finish reason.
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        let parts = words.len().clamp(1, 3);
        let mut chunks = Vec::with_capacity(parts);
        let mut sent = 0u64;
        for i in 0..parts {
            let lo = words.len() * i / parts;
            let hi = words.len() * (i + 1) / parts;
            let piece: String = words[lo..hi].concat();
            sent = if i + 1 == parts { output } else { output * (i as u64 + 1) / parts as u64 };
            let mut c = json!({
                "candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                "usageMetadata": UsageMetadata { candidates: sent, ..usage }.to_json(),
                "modelVersion": format!("models/{model}"),
                "responseId": id,
            });
            if i + 1 == parts {
                c["candidates"][0]["finishReason"] = json!(finish);
            }
            chunks.push(c.to_string());
        }
        debug_assert_eq!(sent, output);
        let payload = if sse { Payload::Events(chunks) } else { Payload::Array(chunks) };
        Answer { status: 200, payload, delay_ms: delay, drop: false }
    }

    fn count_tokens(&self, req: &ApiRequest<'_>, model: &str, project: usize, now: u64) -> Answer {
        let Some(m) = self.model_index(model) else { return Answer::error(body::model_not_found(model), 0) };
        let request = match validate::request(req.body, Kind::Count) {
            Ok(v) => v,
            Err(e) => return Answer::error(e, 0),
        };
        let inner = validate::get(&request, "generate_content_request").unwrap_or(&request);
        let media = shape::media_tokens(validate::get(inner, "contents"));
        let text = (self.count)(&gemini_prompt(inner));
        let total = text + media;
        let mut details = vec![json!({"modality": "TEXT", "tokenCount": text})];
        if media > 0 {
            details.push(json!({"modality": "IMAGE", "tokenCount": media}));
        }
        // Free: nothing is counted, but a project whose minute is full is refused.
        let mut state = self.lock();
        let minute_full = match state.judge.peek(project, m, 0, now) {
            Verdict::Exhausted { violations, retry_after_ms } => {
                let rpm: Vec<_> =
                    violations.into_iter().filter(|v| v.dimension == crate::judge::Dimension::Rpm).collect();
                (!rpm.is_empty()).then_some((rpm, retry_after_ms))
            }
            Verdict::Accepted => None,
        };
        if let Some((violations, retry_after_ms)) = minute_full {
            let tier = state.judge.config().projects[project].tier;
            return Answer::error(body::quota_exceeded(&violations, tier, model, retry_after_ms), self.error_ms);
        }
        drop(state);
        Answer::json(200, json!({"totalTokens": total, "promptTokensDetails": details}), 0)
    }

    /// Output tokens of an answer and its finish reason.
    fn output_tokens(&self, state: &mut State, asked: Option<u64>, cap: Option<u64>) -> (u64, &'static str) {
        let cap = Some(cap.unwrap_or(MAX_TOKENS).min(MAX_TOKENS));
        let want = asked.unwrap_or_else(|| match &self.output {
            Some(d) => (d.sample(&mut state.rng) + 0.5).clamp(1.0, MAX_TOKENS as f64) as u64,
            None => self.output_median,
        });
        match cap {
            Some(c) if want > c => (c, "MAX_TOKENS"),
            _ => (want, "STOP"),
        }
    }

    /// How long a successful answer takes: the stated latency (a replayed request's draw) or
    /// one drawn here, and slow answers on top of either.
    fn delay(&self, state: &mut State, req: &ApiRequest<'_>) -> u64 {
        let stated = req.header("x-keysim-latency-ms").and_then(|v| v.trim().parse::<u64>().ok());
        let base = stated.map_or_else(|| self.latency.sample(&mut state.rng), |ms| ms.min(3_600_000));
        let e = &self.extra;
        if e.slow_rate > 0.0 && state.rng.random::<f64>() < e.slow_rate {
            (base as f64 * e.slow_factor.max(1.0)) as u64
        } else {
            base
        }
    }
}

/// Percent-decodes a query value (`+` is a space); bad escapes stay as they are.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn model_json(m: &str) -> Value {
    json!({
        "name": format!("models/{m}"),
        "version": "001",
        "displayName": m,
        "description": "A model served by keysim's fake Gemini API.",
        "inputTokenLimit": MAX_INPUT_TOKENS,
        "outputTokenLimit": MAX_TOKENS,
        "supportedGenerationMethods": if embed::embeds(m) {
            json!(["embedContent", "batchEmbedContents", "countTokens"])
        } else {
            json!(["generateContent", "countTokens"])
        },
    })
}

fn not_found() -> Answer {
    Answer::json(404, json!({"error": {"code": 404, "message": "Method not found.", "status": "NOT_FOUND"}}), 0)
}

/// An error body in the shape the OpenAI SDKs read (`error.message`, `error.type`,
/// `error.param`, `error.code`), keeping Gemini's `status` and `details` beside them.
fn openai_error(mut v: Value, status: u16) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_denied_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    if let Some(e) = v.get_mut("error").and_then(Value::as_object_mut) {
        e.entry("type").or_insert(json!(kind));
        e.entry("param").or_insert(Value::Null);
    }
    v
}

/// All text of a Gemini request: system instruction and contents (camelCase or snake_case).
fn gemini_prompt(req: &Value) -> String {
    let mut out = String::new();
    let mut parts = |content: &Value| {
        for p in content["parts"].as_array().into_iter().flatten() {
            if let Some(t) = p["text"].as_str() {
                out.push_str(t);
            }
        }
    };
    for key in ["systemInstruction", "system_instruction"] {
        if let Some(s) = req.get(key) {
            parts(s);
        }
    }
    match &req["contents"] {
        Value::Array(items) => items.iter().for_each(&mut parts),
        Value::Object(_) => parts(&req["contents"]),
        _ => {}
    }
    out
}

fn gemini_max_output(req: &Value) -> Option<u64> {
    let cfg = req.get("generationConfig").or_else(|| req.get("generation_config"))?;
    cfg.get("maxOutputTokens").or_else(|| cfg.get("max_output_tokens"))?.as_u64()
}

/// An answer of `tokens` tokens at four characters each.
fn answer_text(tokens: u64) -> String {
    "tok ".repeat(tokens as usize).trim_end().to_owned()
}

mod chat;
mod embed;
mod stats;

#[cfg(test)]
mod tests;

//! A successful upstream answer on its way to the client: a whole one settled from its
//! usage, a stream relayed piece by piece while the tap reads its usage, settled when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use tokio::sync::mpsc;

use super::metrics::ResultLabel;
use super::reply::{error, passes, passthrough, Surface};
use super::tap::{usage_in, UsageTap};
use super::traffic::Line;
use super::{Body, State};
use crate::engine::{AnyStore, Outcome, OwnedPermit, StoreError, UsageMetadata};

/// How long a stream waits for a client that has stopped reading (its socket still open)
/// before giving up on it, as if it had hung up.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// A permit sent upstream: the engine's owned permit, which settles as failed (keeping its
/// estimate counted) if dropped unsettled — a client gone, a task cancelled.
pub(super) type Held = OwnedPermit<AnyStore>;

/// Counts a settlement the store could not record (the reservation stays counted).
pub(super) fn settled(state: &State, r: Result<(), StoreError>) {
    if r.is_err() {
        state.metrics.store_errors.inc();
    }
}

/// What a successful answer is, for relaying it.
pub(super) struct Answer<'a> {
    pub(super) surface: Surface,
    pub(super) project: &'a str,
    pub(super) stream: bool,
    pub(super) model: usize,
    /// Keep the usage chunk (asked for on the client's behalf) from the client.
    pub(super) hide_usage: bool,
    /// Its traffic log line, with its arrival and when it was sent (when the log is on).
    pub(super) logged: Option<Logged>,
}

/// A traffic log line on its way, with its request's arrival and sending.
pub(super) type Logged = (Box<Line>, Instant, Instant);

/// Ends the line of a request upstream answered: its usage, its time upstream, its outcome.
fn log_answer(state: &State, logged: Option<Logged>, usage: Option<&UsageMetadata>, failed: Option<&str>) {
    let Some((mut line, arrival, sent)) = logged else { return };
    if let Some(u) = usage {
        line.usage(u);
    }
    line.upstream_ms = Some(super::forward::ms(state, sent.elapsed()));
    let outcome = if failed.is_some() { "failed" } else { "served" };
    super::forward::logged(state, Some(line), arrival, outcome, failed.map(str::to_owned));
}

/// A successful answer: a whole one settled from its usage, a stream relayed piece by piece
/// while its usage is read, and settled when it ends (at its estimate if it stated no usage).
pub(super) async fn relay(
    state: &Arc<State>,
    held: Held,
    resp: reqwest::Response,
    a: Answer<'_>,
) -> hyper::Response<Body> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut out = if a.stream {
        let mut out = hyper::Response::new(stream(state.clone(), held, resp, a.model, a.hide_usage, a.logged));
        *out.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        for (k, v) in &headers {
            if passes(k) {
                out.headers_mut().append(k.clone(), v.clone());
            }
        }
        out
    } else {
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(_) => {
                settled(state, held.settle(Outcome::Failed));
                super::forward::fail(state, &state.engine.pool().models()[a.model].name, "broken-answer");
                log_answer(state, a.logged, None, Some("broken-answer"));
                return error(a.surface, 502, "UNAVAILABLE", "the upstream answer broke off");
            }
        };
        let usage = usage_in(&body);
        match &usage {
            Some(u) => settled(state, held.succeeded(u)),
            None => settled(state, held.settle(Outcome::Failed)),
        }
        log_answer(state, a.logged, usage.as_ref(), None);
        passthrough(status, &headers, body)
    };
    if let Ok(v) = HeaderValue::from_str(a.project) {
        out.headers_mut().insert("x-keysim-project", v);
    }
    out
}

/// How a stream ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Upstream finished it.
    Whole,
    /// Upstream broke it off.
    Broken,
    /// The client hung up, or stopped reading for [`STALLED_CLIENT`].
    ClientGone,
}

/// Relays `resp` from a task of its own, reading its usage as it passes; settles when it ends.
fn stream(
    state: Arc<State>,
    held: Held,
    mut resp: reqwest::Response,
    model: usize,
    hide_usage: bool,
    logged: Option<Logged>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let cut = Arc::new(AtomicBool::new(false));
    let body = Channel { rx, cut: cut.clone() };
    tokio::spawn(async move {
        let mut tap = UsageTap::default();
        let mut filter = hide_usage.then(UsageChunks::default);
        let end = loop {
            match resp.chunk().await {
                Ok(Some(b)) => {
                    tap.feed(&b);
                    let b = match filter.as_mut() {
                        Some(f) => f.pass(&b),
                        None => b,
                    };
                    if b.is_empty() {
                        continue;
                    }
                    match tokio::time::timeout(STALLED_CLIENT, tx.send(Ok(b))).await {
                        Ok(Ok(())) => {}
                        _ => break End::ClientGone,
                    }
                }
                Ok(None) => break End::Whole,
                Err(_) => {
                    let broke = Err(std::io::Error::other("the upstream stream broke off"));
                    let _ = tokio::time::timeout(STALLED_CLIENT, tx.send(broke)).await;
                    break End::Broken;
                }
            }
        };
        if end != End::Whole {
            // The client must not take what it got for the whole answer.
            cut.store(true, Ordering::SeqCst);
        }
        drop(tx);
        if end == End::Broken {
            super::forward::fail(&state, &state.engine.pool().models()[model].name, "broken-stream");
        }
        let how = if tap.usage.is_some() { "usage" } else { "estimate" };
        state.metrics.streams.get_or_create(&ResultLabel { result: how.into() }).inc();
        settled(
            &state,
            match (&tap.usage, end) {
                (Some(u), End::Whole) => held.succeeded(u),
                (u, _) => held.ended_early(u.as_ref()),
            },
        );
        let failed = match end {
            End::Whole => None,
            End::Broken => Some("broken-stream"),
            End::ClientGone => Some("client-gone"),
        };
        log_answer(&state, logged, tap.usage.as_ref(), failed);
    });
    body.boxed_unsync()
}

/// Keeps OpenAI's usage chunk (`"choices": []` with a `usage`) out of a stream: whole events
/// pass as they complete, that one is dropped.
#[derive(Default)]
struct UsageChunks {
    /// The event being received.
    pending: Vec<u8>,
}

impl UsageChunks {
    /// The complete events of what has arrived, but the usage chunk.
    fn pass(&mut self, bytes: &[u8]) -> Bytes {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            if !usage_only(event) {
                out.extend_from_slice(event);
            }
            start += end;
        }
        self.pending.drain(..start);
        Bytes::from(out)
    }
}

/// Where the first server-sent event of `b` ends (past its blank line), if it is complete.
fn event_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else {
            None
        }
    })
}

/// Whether `event` is OpenAI's usage chunk: no choices, a usage.
fn usage_only(event: &[u8]) -> bool {
    let text = String::from_utf8_lossy(event);
    let data: String = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    serde_json::from_str::<serde_json::Value>(&data)
        .is_ok_and(|v| v["choices"].as_array().is_some_and(|c| c.is_empty()) && v["usage"].is_object())
}

/// A body fed piece by piece from a channel. An error, or the relay cutting the stream
/// short, aborts the connection, so a client sees a broken stream as broken rather than as
/// a whole one.
struct Channel {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    cut: Arc<AtomicBool>,
}

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|x| match x {
            Some(r) => Some(r.map(hyper::body::Frame::data)),
            None if self.cut.load(Ordering::SeqCst) => Some(Err(std::io::Error::other("the stream was cut short"))),
            None => None,
        })
    }
}

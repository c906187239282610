//! A successful upstream answer on its way to the client: a whole one settled from its
//! usage, a stream relayed piece by piece while the tap reads its usage, settled when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use tokio::sync::mpsc;

use super::metrics::ResultLabel;
use super::reply::{error, passes, passthrough, Surface};
use super::tap::{usage_in, UsageTap};
use super::{Body, State};
use crate::engine::{Outcome, Prompt, Ticket, UsageMetadata};

/// How long a stream waits for a client that has stopped reading (its socket still open)
/// before giving up on it, as if it had hung up.
const STALLED_CLIENT: Duration = Duration::from_secs(60);

/// A ticket sent upstream: settled with what happened, or, if dropped unsettled (a client
/// gone, a task cancelled), as failed, which keeps its estimate counted.
pub(super) struct Held {
    pub(super) state: Arc<State>,
    pub(super) ticket: Option<Ticket>,
}

impl Held {
    /// Settles with `outcome`.
    pub(super) fn settle(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            settle(&self.state, &t, outcome);
        }
    }

    /// Settles an answer that ended early (broken off, or its client gone) from the usage it
    /// had stated: the prompt's count is exact (every Gemini chunk states it), output is at
    /// least what was reserved for it.
    fn settle_partial(mut self, usage: &UsageMetadata) {
        if let Some(t) = self.ticket.take() {
            let outcome = match self.state.engine.success(usage) {
                Outcome::Success { input_tokens, output_tokens } => {
                    Outcome::Success { input_tokens, output_tokens: output_tokens.max(t.reserved_output) }
                }
                other => other,
            };
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

/// What a successful answer is, for relaying it.
pub(super) struct Answer<'a> {
    pub(super) surface: Surface,
    pub(super) project: &'a str,
    pub(super) stream: bool,
    pub(super) model: usize,
    pub(super) prompt: &'a str,
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
        let mut out = hyper::Response::new(stream(state.clone(), held, resp, a.model));
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
                drop(held);
                super::forward::fail(state, &state.engine.pool().models()[a.model].name, "broken-answer");
                return error(a.surface, 502, "UNAVAILABLE", "the upstream answer broke off");
            }
        };
        match usage_in(&body) {
            Some(u) => {
                if state.engine.learns() {
                    state.engine.learn(a.model, &Prompt::Text(a.prompt), u.prompt);
                }
                held.settle(state.engine.success(&u));
            }
            None => held.settle(Outcome::Failed),
        }
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
fn stream(state: Arc<State>, held: Held, mut resp: reqwest::Response, model: usize) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let cut = Arc::new(AtomicBool::new(false));
    let body = Channel { rx, cut: cut.clone() };
    tokio::spawn(async move {
        let mut tap = UsageTap::default();
        let end = loop {
            match resp.chunk().await {
                Ok(Some(b)) => {
                    tap.feed(&b);
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
        match (tap.usage, end) {
            (Some(u), End::Whole) => held.settle(state.engine.success(&u)),
            (Some(u), _) => held.settle_partial(&u),
            (None, _) => held.settle(Outcome::Failed),
        }
    });
    body.boxed()
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

//! Hosts that serve the [`Fake`] over HTTP/1.1.
//!
//! - [`serve`]: the sustained host, on hyper: keep-alive connections, answers delayed by the
//!   fake's latency (streams arrive piece by piece over it) without holding anything per
//!   request once it is answered, dropped connections for real. Memory stays flat however
//!   many requests it serves.
//! - [`start_wiremock`]: the same fake mounted in a wiremock `MockServer`, for tests and for
//!   users whose tests already use wiremock. wiremock keeps a copy of every matched request
//!   (even with recording disabled), so its memory grows with traffic; it cannot drop a
//!   connection either, and answers 503 where the sustained host would drop.
//!
//! Both read time from a [`Clock`], which may run faster than real time (`--time-scale`):
//! quotas are judged on the scaled clock and latencies shrink by the same factor.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::mpsc;

use crate::fake::{Answer, ApiRequest, Fake};

/// The largest request body either host accepts (Gemini's own limit is 20 MB).
pub const MAX_BODY: usize = 20 * 1024 * 1024;

/// How long the sustained host waits for what clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For a request's headers, from the connection's first byte or its previous answer: a
    /// connection that sends nothing, or half a request, is closed after it.
    pub header: Duration,
    /// For a request's body once its headers are in (a `Content-Length` larger than the body
    /// sent waits this long): 408 after it.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { header: Duration::from_secs(10), body: Duration::from_secs(30) }
    }
}

/// The fake's clock: Unix milliseconds, optionally running `scale` times faster than real
/// time from the moment it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    origin_ms: u64,
    scale: f64,
}

impl Clock {
    /// Real time, sped up `scale` times (1 for real time).
    pub fn new(scale: f64) -> Self {
        let origin_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self::starting_at(origin_ms, scale)
    }

    /// A clock that reads `origin_ms` now and runs `scale` times faster than real time.
    pub fn starting_at(origin_ms: u64, scale: f64) -> Self {
        Self { origin: Instant::now(), origin_ms, scale: if scale.is_finite() && scale > 0.0 { scale } else { 1.0 } }
    }

    /// Now, in Unix milliseconds on this clock.
    pub fn now_ms(&self) -> u64 {
        self.origin_ms + (self.origin.elapsed().as_secs_f64() * 1000.0 * self.scale) as u64
    }

    /// How long `ms` of this clock's time takes in real time.
    pub fn real(&self, ms: u64) -> Duration {
        Duration::from_secs_f64(ms as f64 / 1000.0 / self.scale)
    }

    /// How much faster than real time it runs.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

/// Header names and values (values that are not text are left out).
fn pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
}

/// The fake's answer to one request, now.
fn ask(
    fake: &Fake,
    clock: &Clock,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    fake.handle(&ApiRequest { method, path, query, headers, body }, clock.now_ms())
}

type Body = BoxBody<Bytes, Infallible>;

fn response(a: &Answer, body: Body) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(a.status)
        .header("content-type", a.content_type())
        .header("server", "keysim-fake-gemini")
        .body(body)
        .expect("valid status and headers")
}

/// A body fed piece by piece from a channel.
struct Channel(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Sends `a` after its latency. A stream's pieces are spread over the latency: the first
/// after its share, the rest each a share later, as a model writing its answer would.
async fn answer(a: Answer, clock: Clock) -> Result<hyper::Response<Body>, std::io::Error> {
    let pieces = a.body_pieces();
    if pieces.len() <= 1 || a.drop {
        if a.delay_ms > 0 {
            tokio::time::sleep(clock.real(a.delay_ms)).await;
        }
        if a.drop {
            // An error from the service makes hyper close the connection unanswered.
            return Err(std::io::Error::other("dropped by fault injection"));
        }
        let bytes = Bytes::from(pieces.into_iter().next().unwrap_or_default());
        return Ok(response(&a, Full::new(bytes).boxed()));
    }
    let share = clock.real(a.delay_ms / pieces.len() as u64);
    tokio::time::sleep(share).await;
    let (tx, rx) = mpsc::channel(pieces.len());
    tokio::spawn(async move {
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(share).await;
            }
            if tx.send(Bytes::from(piece)).await.is_err() {
                return;
            }
        }
    });
    Ok(response(&a, Channel(rx).boxed()))
}

/// Serves `fake` on `listener` until `shutdown` completes, with the default [`Timeouts`].
pub async fn serve(
    fake: Arc<Fake>,
    listener: tokio::net::TcpListener,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(fake, listener, clock, Timeouts::default(), shutdown).await
}

/// Reads a request's body within `limits`: the bytes, or the answer that refuses it (413 for
/// a body over [`MAX_BODY`], said or found; 408 for one that does not arrive in time; 400 for
/// one that cannot be read).
async fn read_body(
    headers: &hyper::HeaderMap,
    body: hyper::body::Incoming,
    timeouts: Timeouts,
) -> Result<Bytes, crate::body::ErrorAnswer> {
    let said = headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if said.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(crate::body::payload_too_large());
    }
    match tokio::time::timeout(timeouts.body, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err(crate::body::request_timeout()),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(crate::body::payload_too_large())
        }
        Ok(Err(_)) => Err(crate::body::unreadable_body()),
    }
}

/// Serves `fake` on `listener` until `shutdown` completes.
pub async fn serve_with(
    fake: Arc<Fake>,
    listener: tokio::net::TcpListener,
    clock: Clock,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Aborted handshakes and full descriptor tables pass; the host goes on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let fake = fake.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let fake = fake.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = match read_body(&parts.headers, body, timeouts).await {
                        Ok(b) => b,
                        Err(e) => {
                            let mut r = answer(Answer::error(e, 0), clock).await?;
                            // What is left of the body is not read: the connection closes.
                            r.headers_mut().insert(hyper::header::CONNECTION, "close".parse().expect("valid"));
                            return Ok(r);
                        }
                    };
                    let headers = pairs(&parts.headers);
                    let (path, query) = (parts.uri.path(), parts.uri.query().unwrap_or_default());
                    answer(ask(&fake, &clock, parts.method.as_str(), path, query, &headers, &body), clock).await
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(feature = "wiremock")]
mod wiremock;
#[cfg(feature = "wiremock")]
pub use self::wiremock::{start_wiremock, Responder};

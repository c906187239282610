//! The webhook sink: Alertmanager version-4 payloads POSTed by a sender thread, on reqwest
//! (http or https; TLS by rustls with the web's root certificates, plus those of a `ca_file`).
//! The run only queues (a bounded queue; when it is full the notification is counted as
//! dropped, never waited for). Each attempt has a timeout; failed attempts (connection errors,
//! timeouts, 5xx, 429) are retried with exponential backoff and jitter; other 4xx answers are
//! final.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use tokio::sync::mpsc::{channel, error::TrySendError, Sender};

use super::Sink;
use crate::engine::pool_file::WebhookDef;
use crate::engine::warn::payload::alertmanager_v4;
use crate::engine::warn::Notification;
use crate::engine::Timestamp;

/// Notifications waiting for the sender at most.
pub const QUEUE: usize = 256;
/// First retry delay; doubles with every retry (with jitter), up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the sender did (real-clock figures: they depend on the receiver).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Notifications the receiver accepted (2xx).
    pub delivered: u64,
    /// Notifications given up on after every attempt, or answered with a final 4xx.
    pub failed: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Notifications not queued because the queue was full, or still queued at shutdown.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    /// Once set (ms since `epoch`), the sender stops trying and drops what is left.
    stop_at: AtomicU64,
    /// Notifications queued for the sender.
    queued: AtomicU64,
    /// Of those, dropped by the sender at shutdown.
    dropped_queued: AtomicU64,
}

/// The webhook sink.
pub struct Webhook {
    tx: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    /// Says the sender ended.
    done: std::sync::mpsc::Receiver<()>,
    counters: Arc<Counters>,
    receiver: String,
    epoch: Instant,
}

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    why: String,
    retry: bool,
}

/// `scheme://host:port` of the receiver: its path and query may carry a token.
fn redacted(url: &reqwest::Url) -> String {
    crate::engine::redact::redact_url(url.as_str())
}

/// One POST of `body`, within `timeout`.
async fn post(client: &reqwest::Client, url: &reqwest::Url, body: &[u8], timeout: Duration) -> Result<(), Failure> {
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .timeout(timeout)
        .send()
        .await;
    // reqwest's errors quote the url, whose query may hold a token: only their kind.
    let answer = sent.map_err(|e| Failure {
        why: if e.is_timeout() {
            "timed out".into()
        } else if e.is_connect() {
            "connection refused or failed (TLS included)".into()
        } else {
            "the request failed".into()
        },
        retry: true,
    })?;
    match answer.status().as_u16() {
        200..=299 => Ok(()),
        s @ (429 | 500..=599) => Err(Failure { why: format!("status {s}"), retry: true }),
        s => Err(Failure { why: format!("status {s}"), retry: false }),
    }
}

impl Webhook {
    /// A sink posting to `def`'s receiver: each attempt limited to its timeout, its retries
    /// after a failed one, payloads naming its receiver. Fails on a url or a `ca_file` that
    /// cannot be used.
    pub fn start(def: &WebhookDef) -> Result<Self, String> {
        let url = reqwest::Url::parse(&def.url).map_err(|e| format!("webhook url: {e}"))?;
        let mut client = reqwest::Client::builder().user_agent(concat!("keysim/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &def.ca_file {
            for cert in reqwest::Certificate::from_pem_bundle(&ca.pem)
                .map_err(|e| format!("webhook ca_file {}: {e}", ca.path))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client.build().map_err(|e| format!("webhook client: {e}"))?;
        let (timeout, retries) = (Duration::from_millis(def.timeout_ms), def.retries);
        let (tx, mut rx) = channel::<Vec<u8>>(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let epoch = Instant::now();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("webhook sender: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("keysim-webhook".into())
            .spawn(move || {
                let stop_at = || match c.stop_at.load(Ordering::Relaxed) {
                    0 => None,
                    ms => Some(epoch + Duration::from_millis(ms)),
                };
                let stopped = || stop_at().is_some_and(|at| Instant::now() >= at);
                runtime.block_on(async {
                    while let Some(body) = rx.recv().await {
                        if stopped() {
                            c.dropped.fetch_add(1, Ordering::Relaxed);
                            c.dropped_queued.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        // Every attempt is cut where shutdown's grace ends.
                        let attempt = || async {
                            let left = stop_at().map_or(timeout, |at| at.saturating_duration_since(Instant::now()));
                            post(&client, &url, &body, timeout.min(left).max(Duration::from_millis(1))).await
                        };
                        let backoff = ExponentialBuilder::default()
                            .with_min_delay(BACKOFF)
                            .with_max_delay(MAX_BACKOFF)
                            .with_max_times(retries as usize)
                            .with_jitter();
                        let sent = attempt
                            .retry(backoff)
                            .sleep(tokio::time::sleep)
                            .when(|f: &Failure| f.retry && !stopped())
                            .notify(|_, _| {
                                c.retries.fetch_add(1, Ordering::Relaxed);
                            })
                            .await;
                        match sent {
                            Ok(()) => {
                                c.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(f) => {
                                let what = if f.retry { "webhook delivery failed" } else { "webhook refused a notification" };
                                tracing::warn!(target: "keysim::webhook", url = %redacted(&url), why = %f.why, "{what}");
                                c.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("webhook sender: {e}"))?;
        Ok(Self { tx: Some(tx), thread: Some(thread), done, counters, receiver: def.receiver.clone(), epoch })
    }

    /// Waits for queued notifications at most `grace` (every attempt is cut at that point),
    /// then counts what is left as dropped and returns the figures.
    pub fn finish(mut self, grace: Duration) -> WebhookStats {
        let stop = self.epoch.elapsed() + grace;
        self.counters.stop_at.store(stop.as_millis().max(1) as u64, Ordering::Relaxed);
        self.tx = None;
        // The sender stops by itself within the grace; a little slack for scheduling, and
        // should it still hang, it is left behind rather than the run.
        let ended = self.done.recv_timeout(grace + Duration::from_secs(1)).is_ok();
        if let Some(t) = self.thread.take() {
            if ended {
                let _ = t.join();
            }
        }
        let c = &self.counters;
        let (delivered, failed, dropped) =
            (c.delivered.load(Ordering::Relaxed), c.failed.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed));
        let queued = c.queued.load(Ordering::Relaxed);
        WebhookStats {
            delivered,
            failed,
            retries: c.retries.load(Ordering::Relaxed),
            dropped: dropped + queued.saturating_sub(delivered + failed + c.dropped_queued.load(Ordering::Relaxed)),
        }
    }
}

impl Sink for Webhook {
    fn send(&mut self, n: &Notification, _at: Timestamp) -> std::io::Result<()> {
        let body = serde_json::to_vec(&alertmanager_v4(n, &self.receiver)).map_err(std::io::Error::other)?;
        if let Some(tx) = &self.tx {
            match tx.try_send(body) {
                Ok(()) => {
                    self.counters.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

//! The webhook sink: Alertmanager version-4 payloads POSTed over HTTP/1.1 by a sender
//! thread. The run only queues (a bounded queue; when it is full the notification is counted
//! as dropped, never waited for). Each attempt has a timeout; failed attempts (connection
//! errors, timeouts, 5xx, 429) are retried with exponential backoff; other 4xx answers are
//! final. Plain `http://` only: put a relay in front of receivers that need TLS.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Sink;
use crate::engine::warn::payload::alertmanager_v4;
use crate::engine::warn::Notification;
use crate::engine::Timestamp;

/// Notifications waiting for the sender at most.
pub const QUEUE: usize = 256;
/// First retry delay; doubles with every retry, up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A parsed `http://host[:port][/path]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                "https is not supported; post to a local http relay".into()
            } else {
                "expected http://host:port/path".into()
            });
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        if authority.contains('@') {
            return Err("credentials in the url are not supported".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err("the url has no host".into());
        }
        Ok(Self { host: host.to_owned(), port, path: path.to_owned() })
    }

    /// `http://host:port`, without the path (which may carry a token): for messages.
    pub fn redacted(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    fn addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.trim_start_matches('[').trim_end_matches(']'), self.port).to_socket_addrs()?.collect())
    }
}

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
}

/// The webhook sink.
pub struct Webhook {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    receiver: String,
    epoch: Instant,
}

/// The outcome of one attempt.
enum Attempt {
    Delivered,
    Retry(String),
    Final(String),
}

fn post(target: &Target, body: &[u8], timeout: Duration) -> Attempt {
    let addrs = match target.addrs() {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return Attempt::Retry("no address".into()),
        Err(e) => return Attempt::Retry(e.to_string()),
    };
    let mut stream = match addrs.iter().find_map(|a| TcpStream::connect_timeout(a, timeout).ok()) {
        Some(s) => s,
        None => return Attempt::Retry("connection refused or timed out".into()),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: keysim/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        target.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Err(e) = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)) {
        return Attempt::Retry(e.to_string());
    }
    let mut line = String::new();
    if let Err(e) = BufReader::new(&stream).read_line(&mut line) {
        return Attempt::Retry(e.to_string());
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) => Attempt::Delivered,
        Some(s @ (429 | 500..=599)) => Attempt::Retry(format!("status {s}")),
        Some(s) => Attempt::Final(format!("status {s}")),
        None => Attempt::Retry("no HTTP status line".into()),
    }
}

impl Webhook {
    /// A sink posting to `target`: each attempt limited to `timeout`, `retries` more after a
    /// failed one, payloads naming `receiver`.
    pub fn start(target: Target, timeout: Duration, retries: u32, receiver: impl Into<String>) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let epoch = Instant::now();
        let thread = std::thread::Builder::new()
            .name("keysim-webhook".into())
            .spawn(move || {
                let stopped = || {
                    let at = c.stop_at.load(Ordering::Relaxed);
                    at != 0 && epoch.elapsed().as_millis() as u64 >= at
                };
                for body in rx {
                    if stopped() {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut backoff = BACKOFF;
                    for attempt in 0..=retries {
                        if attempt > 0 {
                            c.retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        match post(&target, &body, timeout) {
                            Attempt::Delivered => {
                                c.delivered.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Attempt::Final(why) => {
                                tracing::warn!(target: "keysim::webhook", url = %target.redacted(), %why, "webhook refused a notification");
                                c.failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Attempt::Retry(why) if attempt == retries || stopped() => {
                                tracing::warn!(target: "keysim::webhook", url = %target.redacted(), %why, attempts = attempt + 1, "webhook delivery failed");
                                c.failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Attempt::Retry(_) => {}
                        }
                    }
                }
            })
            .expect("spawning the webhook thread");
        Self { tx: Some(tx), thread: Some(thread), counters, receiver: receiver.into(), epoch }
    }

    /// Waits for queued notifications at most `grace`, then drops the rest; returns the
    /// figures.
    pub fn finish(mut self, grace: Duration) -> WebhookStats {
        let stop = self.epoch.elapsed() + grace;
        self.counters.stop_at.store(stop.as_millis().max(1) as u64, Ordering::Relaxed);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let c = &self.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Sink for Webhook {
    fn send(&mut self, n: &Notification, _at: Timestamp) -> std::io::Result<()> {
        let body = serde_json::to_vec(&alertmanager_v4(n, &self.receiver)).map_err(std::io::Error::other)?;
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(body) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_redact() {
        let t = Target::parse("http://127.0.0.1:9093/api/v2/alerts?token=s3cret").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 9093, "/api/v2/alerts?token=s3cret"));
        assert_eq!(t.redacted(), "http://127.0.0.1:9093");
        assert_eq!(Target::parse("http://hooks.local").unwrap().port, 80);
        assert!(Target::parse("https://hooks.slack.com/x").unwrap_err().contains("https"));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://a:notaport/").is_err());
    }
}

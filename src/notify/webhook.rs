//! The webhook sink: Alertmanager version-4 payloads POSTed over HTTP/1.1 by a sender
//! thread. The run only queues (a bounded queue; when it is full the notification is counted
//! as dropped, never waited for). Each attempt has a timeout; failed attempts (connection
//! errors, timeouts, 5xx, 429) are retried with exponential backoff; other 4xx answers are
//! final. Plain `http://` only: put a relay in front of receivers that need TLS.

use std::io::{Read, Write};
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
    /// Parses `url`. Errors never echo the url's text, which may carry a token.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                "https is not supported; post to a local http relay".into()
            } else {
                "expected http://host:port/path".into()
            });
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let tail = tail.split('#').next().unwrap_or_default();
        let path = if tail.starts_with('/') { tail.to_owned() } else { format!("/{tail}") };
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the url's path has spaces or control characters".into());
        }
        if authority.contains('@') {
            return Err("credentials in the url are not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("an IPv6 host needs its closing ']'")?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse::<u16>().map_err(|_| "the url's port is not a number from 0 to 65535")?),
                None if after.is_empty() => (h, 80),
                None => return Err("unexpected text after the IPv6 host".into()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "the url's port is not a number from 0 to 65535")?),
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            return Err("the url has no host".into());
        }
        Ok(Self { host: host.to_owned(), port, path })
    }

    /// `http://host:port`, without the path (which may carry a token): for messages.
    pub fn redacted(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    fn addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
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
    /// Notifications queued for the sender.
    queued: AtomicU64,
    /// Of those, dropped by the sender at shutdown.
    dropped_queued: AtomicU64,
}

/// The webhook sink.
pub struct Webhook {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
    /// Says the sender ended.
    done: std::sync::mpsc::Receiver<()>,
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

/// Longest status line read.
const MAX_STATUS_LINE: usize = 8_192;

/// One POST, all of it (connect, send, read the status line) within `deadline`.
fn post(target: &Target, addrs: &[SocketAddr], body: &[u8], deadline: Instant) -> Attempt {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let Some(mut stream) = addrs.iter().find_map(|a| TcpStream::connect_timeout(a, left()).ok()) else {
        return Attempt::Retry("connection refused or timed out".into());
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: keysim/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let _ = stream.set_write_timeout(Some(left()));
    if let Err(e) = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)) {
        return Attempt::Retry(e.to_string());
    }
    // Read up to the end of the status line, however it is split, never past the deadline
    // and never more than MAX_STATUS_LINE bytes.
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') {
        if Instant::now() >= deadline || line.len() > MAX_STATUS_LINE {
            return Attempt::Retry("no status line in time".into());
        }
        let _ = stream.set_read_timeout(Some(left()));
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted) => {}
            Err(e) => return Attempt::Retry(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&line);
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
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keysim-webhook".into())
            .spawn(move || {
                let stopped = || {
                    let at = c.stop_at.load(Ordering::Relaxed);
                    at != 0 && epoch.elapsed().as_millis() as u64 >= at
                };
                // Resolved once, here, off the run's thread.
                let mut addrs = target.addrs().unwrap_or_default();
                for body in rx {
                    if addrs.is_empty() {
                        addrs = target.addrs().unwrap_or_default();
                    }
                    if stopped() {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                        c.dropped_queued.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut backoff = BACKOFF;
                    for attempt in 0..=retries {
                        if attempt > 0 {
                            c.retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        let mut deadline = Instant::now() + timeout;
                        let stop = c.stop_at.load(Ordering::Relaxed);
                        if stop != 0 {
                            deadline = deadline.min(epoch + Duration::from_millis(stop));
                        }
                        match post(&target, &addrs, &body, deadline) {
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
                let _ = done_tx.send(());
            })
            .expect("spawning the webhook thread");
        Self { tx: Some(tx), thread: Some(thread), done, counters, receiver: receiver.into(), epoch }
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
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
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
        let q = Target::parse("http://hooks.local?token=s3cret#frag").unwrap();
        assert_eq!((q.host.as_str(), q.port, q.path.as_str()), ("hooks.local", 80, "/?token=s3cret"));
        assert!(!Target::parse("http://host:8080x?token=s3cret").unwrap_err().contains("s3cret"));
        let v6 = Target::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.host_header()), ("::1", 9000, "[::1]:9000".to_owned()));
        assert!(Target::parse("http://h/a b").is_err());
        assert!(Target::parse("http://h/a\r\nX: y").is_err());
        assert_eq!(Target::parse("http://hooks.local").unwrap().port, 80);
        assert!(Target::parse("https://hooks.slack.com/x").unwrap_err().contains("https"));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://a:notaport/").is_err());
    }
}

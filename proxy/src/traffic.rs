//! The traffic log (`[proxy] traffic_log`): one JSON line per request the proxy admits or
//! refuses, in schema [`SCHEMA`], for the lab to replay. Never prompt text, never a key, never
//! a client's token (a client is named by its token's place in the config).
//!
//! Written off the request path: a request hands its line to a bounded channel and goes on;
//! a line that finds the channel full is dropped and counted
//! (`keysim_traffic_log_dropped_total`), never waited for, and wakes nothing. A thread of its
//! own takes the queued lines twenty times a second, flushes twice a second and at shutdown, and rotates the file by size
//! (`traffic.jsonl` → `traffic.jsonl.1` → …, keeping `files` in all).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// The version of the line's schema: a reader refuses lines of a later one.
pub const SCHEMA: u32 = 1;

/// Lines waiting for the writer at most, by default; more are dropped.
pub const QUEUE: usize = 65_536;

/// How often the writer flushes what it has.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// How often the writer takes what is queued: the queue holds what arrives in between.
const TURN: Duration = Duration::from_millis(50);

/// Where the log goes and how much of it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficLogDef {
    /// The file (relative: to the config file's folder).
    pub path: PathBuf,
    /// A file is rotated once it holds this many bytes.
    pub max_bytes: u64,
    /// Files kept, the one being written included.
    pub files: u32,
    /// Lines waiting for the writer at most.
    pub queue: usize,
}

/// One request, as the log holds it. Times are milliseconds; token counts are the
/// provider's (`usageMetadata`) where it answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Line {
    /// [`SCHEMA`].
    pub v: u32,
    /// Arrival, ms since the Unix epoch (UTC) by the engine's clock (scaled in lab runs, as
    /// are the times below).
    pub ts: u64,
    /// The client: `token-N` for the N-th client token of the config, `anonymous` without
    /// tokens.
    pub client: String,
    /// `gemini` or `openai`.
    pub surface: &'static str,
    /// The model asked for.
    pub model: String,
    /// A streamed answer.
    pub stream: bool,
    /// Requests it counts as (a `batchEmbedContents` of N: N).
    pub batch: u64,
    /// The output cap it asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u64>,
    /// The engine's estimate of its input tokens (admitted requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
    /// `promptTokenCount` (cached tokens included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<u64>,
    /// `candidatesTokenCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<u64>,
    /// `cachedContentTokenCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<u64>,
    /// `thoughtsTokenCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<u64>,
    /// The project that served it (its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// `served`, `denied`, `breach` (a quota 429 after admission) or `failed`.
    pub outcome: &'static str,
    /// Why it was denied (the engine's reason) or failed (the cause).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// From arrival to admission or denial.
    pub wait_ms: f64,
    /// The last attempt's time upstream, to the end of its answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// From arrival to the end of the answer.
    pub total_ms: f64,
    /// Attempts after the first (another key after a quota 429 or a rejected key).
    pub retries: u32,
    /// Quota 429s it met on the way, the last attempt's included.
    pub breaches: u32,
}

impl Line {
    /// Fills the provider's token counts from an answer's usage.
    pub fn usage(&mut self, u: &crate::engine::UsageMetadata) {
        self.input = Some(u.prompt);
        self.output = Some(u.candidates);
        self.cached = Some(u.cached);
        self.thinking = Some(u.thoughts);
    }
}

enum Msg {
    Line(Box<Line>),
    Close,
}

/// The log being written.
pub struct TrafficLog {
    tx: SyncSender<Msg>,
    dropped: Counter,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl TrafficLog {
    /// Opens (appending to) `def.path` and starts its writer; lines that cannot be queued
    /// count in `dropped`.
    pub fn open(def: &TrafficLogDef, dropped: Counter) -> std::io::Result<Self> {
        let file = append(&def.path)?;
        let written = file.metadata()?.len();
        let (tx, rx) = sync_channel(def.queue.max(1));
        let writer = Writer { def: def.clone(), out: BufWriter::with_capacity(1 << 16, file), written };
        let handle = std::thread::Builder::new().name("traffic-log".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx, dropped, writer: Mutex::new(Some(handle)) })
    }

    /// Hands `line` to the writer, or drops and counts it if the queue is full: never waits.
    pub fn record(&self, line: Box<Line>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(Msg::Line(line)) {
            self.dropped.inc();
        }
    }

    /// Writes what is queued, flushes and stops the writer (at shutdown), waiting for it at
    /// most `within`: a log on a disk or pipe that stopped taking lines does not hold the
    /// process. Whether the writer finished.
    pub fn close(&self, within: Duration) -> bool {
        let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else { return true };
        let (tx, (done_tx, done_rx)) = (self.tx.clone(), std::sync::mpsc::channel());
        let closing = std::thread::Builder::new().name("traffic-log-close".into()).spawn(move || {
            if tx.send(Msg::Close).is_ok() {
                let _ = handle.join();
            }
            let _ = done_tx.send(());
        });
        closing.is_ok() && done_rx.recv_timeout(within).is_ok()
    }
}

impl Drop for TrafficLog {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    def: TrafficLogDef,
    out: BufWriter<File>,
    written: u64,
}

impl Writer {
    /// Every [`TURN`], writes what is queued; flushes every [`FLUSH_EVERY`]. It never sleeps on
    /// the queue itself, so a request that queues a line wakes no thread.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut failing = false;
        let mut flushed = Instant::now();
        loop {
            std::thread::sleep(TURN);
            let mut result = Ok(());
            let closed = loop {
                match rx.try_recv() {
                    Ok(Msg::Line(line)) => result = result.and(self.write(&line)),
                    Ok(Msg::Close) | Err(TryRecvError::Disconnected) => break true,
                    Err(TryRecvError::Empty) => break false,
                }
            };
            if closed {
                if let Err(e) = result.and(self.out.flush()) {
                    tracing::warn!(target: "keysim::proxy", error = %e, "the traffic log's last lines were not written");
                }
                return;
            }
            if flushed.elapsed() >= FLUSH_EVERY {
                result = result.and(self.out.flush());
                flushed = Instant::now();
            }
            // Said once per spell of failures (a full disk), not once a line.
            match (result, failing) {
                (Err(e), false) => {
                    tracing::warn!(target: "keysim::proxy", error = %e, path = %self.def.path.display(), "writing the traffic log failed; lines are lost until it works again");
                    failing = true;
                }
                (Ok(()), true) => failing = false,
                _ => {}
            }
        }
    }

    fn write(&mut self, line: &Line) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.written > 0 && self.written + bytes.len() as u64 > self.def.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// `path` → `path.1` → … → `path.(files-1)`; the oldest goes; a new `path` is begun.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let name = |i: u32| -> PathBuf {
            let mut p = self.def.path.clone().into_os_string();
            p.push(format!(".{i}"));
            p.into()
        };
        let keep = self.def.files.max(1);
        if keep == 1 {
            std::fs::remove_file(&self.def.path)?;
        } else {
            let _ = std::fs::remove_file(name(keep - 1));
            for i in (1..keep - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            std::fs::rename(&self.def.path, name(1))?;
        }
        self.out = BufWriter::with_capacity(1 << 16, append(&self.def.path)?);
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> Line {
        Line {
            v: SCHEMA,
            ts: i,
            client: "token-1".into(),
            surface: "gemini",
            model: "m".into(),
            outcome: "served",
            ..Default::default()
        }
    }

    #[test]
    fn lines_are_written_flushed_at_close_and_rotated_by_size() {
        let dir = std::env::temp_dir().join(format!("keysim-traffic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let def = TrafficLogDef { path: dir.join("t.jsonl"), max_bytes: 2_000, files: 3, queue: QUEUE };
        let log = TrafficLog::open(&def, Counter::default()).unwrap();
        for i in 0..100 {
            log.record(Box::new(line(i)));
        }
        assert!(log.close(Duration::from_secs(10)));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let (now, one, two) = (read(&def.path), read(&dir.join("t.jsonl.1")), read(&dir.join("t.jsonl.2")));
        assert!(!dir.join("t.jsonl.3").exists(), "three files kept in all");
        for f in [&now, &one, &two] {
            assert!(!f.is_empty() && f.len() <= 2_000, "{}", f.len());
        }
        // The newest lines, in order, across the files kept.
        let all: Vec<u64> = [two, one, now]
            .concat()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"].as_u64().unwrap())
            .collect();
        assert_eq!(*all.last().unwrap(), 99);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // A writer that never reads: the queue fills, and then every line is dropped at once.
        let (tx, _rx) = sync_channel(2);
        let dropped = Counter::default();
        let log = TrafficLog { tx, dropped: dropped.clone(), writer: Mutex::new(None) };
        let started = std::time::Instant::now();
        for i in 0..10 {
            log.record(Box::new(line(i)));
        }
        assert_eq!(dropped.get(), 8);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

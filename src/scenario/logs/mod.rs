//! Traffic logs the lab replays: the proxy's own (schema v1) and logs teams already have
//! (LiteLLM's, OpenTelemetry GenAI spans, any CSV through a column mapping), read into one
//! form, a [`Log`] of [`Record`]s; then cut to a window and to clients, grown or thinned
//! ([`grow`]), and split into one traffic class per (client, model).
//!
//! A log is read once per process whatever the number of scenarios built on it (a plan's
//! grid builds one per point): [`read`] keeps what it read by path, size and time.

mod formats;
mod litellm;
mod otel;
mod table;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

pub(crate) use formats::parse_seconds;
pub use formats::{Columns, Format};
pub use table::pacific;
pub(super) use table::{log_classes, LogTraffic};

const DAY_MS: u64 = 86_400_000;

/// What became of a logged request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Served,
    /// Denied by the gateway that logged it (never sent).
    Denied,
    /// Refused by the provider with a quota 429 after admission.
    Breach,
    /// Failed on the way or on the provider's side, not for quota.
    Failed(mock_server::Fault),
}

/// One request of a log, in the lab's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    /// Arrival, ms since the Unix epoch.
    pub ts: u64,
    /// Index into [`Log::clients`].
    pub client: u32,
    /// Index into [`Log::models`] (the name as logged; `""` where the line names none).
    pub model: u32,
    /// The provider's input token count, where it answered.
    pub input: Option<u64>,
    /// The provider's output token count, where it answered.
    pub output: Option<u64>,
    /// The gateway's estimate of its input, where it made one.
    pub estimate: Option<u64>,
    /// Its time upstream, where it was served.
    pub latency_ms: Option<u64>,
    /// What became of it.
    pub outcome: Outcome,
    /// Requests it counts as (a batch of N embeddings: N).
    pub batch: u32,
    /// A streamed answer.
    pub stream: bool,
    /// Its line in the file (1-based).
    pub line: u32,
}

/// A log read into records, by arrival.
#[derive(Debug, Default)]
pub struct Log {
    /// The records, sorted by arrival (file order among equals).
    pub records: Vec<Record>,
    /// Client names, by index.
    pub clients: Vec<String>,
    /// Model names as logged, by index.
    pub models: Vec<String>,
}

/// A line that could not be read: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// Its line (1-based).
    pub line: usize,
    /// Its column (1-based), where known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, column {c}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Collects records, naming clients and models once.
#[derive(Default)]
pub(crate) struct Builder {
    log: Log,
    clients: HashMap<String, u32>,
    models: HashMap<String, u32>,
}

impl Builder {
    fn intern(names: &mut Vec<String>, index: &mut HashMap<String, u32>, name: &str) -> u32 {
        if let Some(&i) = index.get(name) {
            return i;
        }
        let i = names.len() as u32;
        names.push(name.to_owned());
        index.insert(name.to_owned(), i);
        i
    }

    /// The index of client `name`.
    pub(crate) fn client(&mut self, name: &str) -> u32 {
        Self::intern(&mut self.log.clients, &mut self.clients, name)
    }

    /// The index of model `name`, as logged less any provider prefix (`models/`, `gemini/`).
    pub(crate) fn model(&mut self, name: &str) -> u32 {
        let bare = name.rsplit('/').next().unwrap_or(name);
        Self::intern(&mut self.log.models, &mut self.models, bare)
    }

    pub(crate) fn push(&mut self, r: Record) {
        self.log.records.push(r);
    }

    fn finish(mut self) -> Log {
        // Stable: file order among equal times.
        self.log.records.sort_by_key(|r| r.ts);
        self.log
    }
}

type Cached = (PathBuf, u64, Option<std::time::SystemTime>, Format, Arc<Log>);

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// How many logs a process keeps read at most.
const CACHED: usize = 4;

/// Reads the log at `path` in `format` (or once read, its copy): one record per request.
pub fn read(path: &Path, format: &Format) -> Result<Arc<Log>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let (len, modified) = (meta.len(), meta.modified().ok());
    let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((.., log)) =
        cache.iter().find(|(p, l, m, f, _)| p == path && *l == len && *m == modified && f == format)
    {
        return Ok(log.clone());
    }
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(|e| e.to_string())?);
    let format = match format {
        Format::Auto => Format::detect(std::io::BufRead::fill_buf(&mut input).map_err(|e| e.to_string())?),
        f => f.clone(),
    };
    let mut b = Builder::default();
    formats::read(&mut input, &format, &mut b).map_err(|e| e.to_string())?;
    let log = Arc::new(b.finish());
    if log.records.is_empty() {
        return Err("holds no requests".into());
    }
    if cache.len() == CACHED {
        cache.remove(0);
    }
    cache.push((path.to_path_buf(), len, modified, format, log.clone()));
    Ok(log)
}

/// Demand grown (or thinned) to `scale` times the log's: which records arrive, and when.
///
/// Below 1, each request is kept with probability `scale` (independent thinning: every
/// minute's demand shrinks by the same factor in expectation, and its shape stays). Above 1,
/// the log itself is laid over copies of it shifted in time, and for the fraction above a
/// whole number a thinned copy: copy `j` takes each request `j` days later when the window
/// covers more than `j` days (the same hour on another day), and always some minutes more
/// (drawn between 1 and 15, within half the window), wrapping around the window's end. So
/// every copy keeps the log's requests (sizes, models, clients) and its shape within the
/// day and within the minute, while copies' bursts fall at other seconds, as independent
/// users' would; the expected count of each minute is `scale` times the log's, smoothed
/// over at most a quarter of an hour. `records` are those in `[start, end)`; the result is
/// sorted by time (copy order among equals), deterministic for `seed`.
pub fn grow<'a>(records: &[&'a Record], start: u64, end: u64, scale: f64, seed: u64) -> Vec<(u64, &'a Record)> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let span = end.saturating_sub(start).max(1);
    let whole = scale.floor() as u64;
    let part = scale - whole as f64;
    let days = span / DAY_MS;
    let mut out = Vec::with_capacity((records.len() as f64 * scale.max(0.0) * 1.01) as usize + 16);
    let copies = whole + u64::from(part > 0.0);
    for j in 0..copies {
        let keep = if j < whole { 1.0 } else { part };
        let shift = if j == 0 {
            0
        } else {
            let (lo, hi) = (60_000.min(span / 4), (15 * 60_000).min(span / 2));
            let minutes = if hi > lo { rng.random_range(lo..hi) } else { lo };
            let day = if days > j { j * DAY_MS } else { 0 };
            (day + minutes) % span
        };
        for r in records {
            if keep < 1.0 && rng.random::<f64>() >= keep {
                continue;
            }
            let at = start + (r.ts - start + shift) % span;
            out.push((at, *r));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64, every_ms: u64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                ts: 1_000_000 + i * every_ms,
                client: 0,
                model: 0,
                input: Some(100 + i),
                output: Some(10),
                estimate: None,
                latency_ms: None,
                outcome: Outcome::Served,
                batch: 1,
                stream: false,
                line: i as u32 + 1,
            })
            .collect()
    }

    #[test]
    fn growth_multiplies_every_stretch_and_keeps_each_request() {
        // A burst of 60 in the first second of each minute, for an hour.
        let recs: Vec<Record> = (0..60u64)
            .flat_map(|m| {
                records(60, 10).into_iter().map(move |mut r| {
                    r.ts += m * 60_000;
                    r
                })
            })
            .collect();
        let refs: Vec<&Record> = recs.iter().collect();
        let (start, end) = (1_000_000, 1_000_000 + 3_600_000);
        for scale in [0.5, 1.0, 1.5, 2.0, 3.25] {
            let grown = grow(&refs, start, end, scale, 7);
            let want = recs.len() as f64 * scale;
            assert!((grown.len() as f64 - want).abs() <= want * 0.05 + 1.0, "{scale}: {} for {want}", grown.len());
            assert!(grown.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
            assert!(grown.iter().all(|(at, _)| (start..end).contains(at)), "within the window");
            // Each quarter hour holds its share.
            for q in 0..4 {
                let n = grown.iter().filter(|(at, _)| (at - start) / 900_000 == q).count() as f64;
                assert!((n - want / 4.0).abs() <= want * 0.08, "{scale}: quarter {q} holds {n} of {want}");
            }
        }
        assert_eq!(grow(&refs, start, end, 1.0, 1), grow(&refs, start, end, 1.0, 2), "1x is the log itself");
        assert_eq!(grow(&refs, start, end, 2.5, 3), grow(&refs, start, end, 2.5, 3), "deterministic");
        // Copies do not stack their bursts on the log's own seconds.
        let twice = grow(&refs, start, end, 2.0, 9);
        let max_per_s = |v: &[(u64, &Record)]| {
            let mut per = std::collections::HashMap::new();
            for (at, _) in v {
                *per.entry(at / 1000).or_insert(0) += 1;
            }
            per.into_values().max().unwrap_or(0)
        };
        assert_eq!(max_per_s(&twice), 60, "a copy's burst falls at another second");
    }
}

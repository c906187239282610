//! Reports: one aggregator fed by every run (simulated or real-time), and its writers.
//!
//! - [`Aggregate`]: counts, token totals and histograms, bounded in memory whatever the
//!   run's length.
//! - [`summary`]: `summary.json` — the user-facing contract — and expectations.
//! - [`table`]: the terminal summary.
//! - [`RequestLog`]: `requests.csv`, one row per request, streamed.
//! - [`stopwatch`]: a cheap real-clock stopwatch for engine decision time.
//! - [`score`]: warnings scored against what really ran out.
//! - [`load`]: a load run's real-clock figures.

pub mod chart;
pub mod html;
pub mod load;
pub mod plots;
pub mod score;
pub mod stopwatch;
pub mod summary;
pub mod table;
pub mod trace;

use std::collections::BTreeMap;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{Priority, Setting};

/// The one state every request ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminal {
    /// Admitted and answered.
    Succeeded,
    /// Admitted and answered 429: the engine's failure.
    Breach,
    /// Never sent: denied by the engine (or queued past its wait).
    Denied,
    /// Sent and failed for another reason (5xx, invalid key).
    Failed,
}

impl Terminal {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Breach => "breach",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// Request counts by terminal state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every request.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Breaches.
    pub breaches: u64,
    /// Denied.
    pub denied: u64,
    /// Failed.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, t: Terminal) {
        self.total += 1;
        match t {
            Terminal::Succeeded => self.succeeded += 1,
            Terminal::Breach => self.breaches += 1,
            Terminal::Denied => self.denied += 1,
            Terminal::Failed => self.failed += 1,
        }
    }

    /// Succeeded / total (1 when there were no requests).
    pub fn success_rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.succeeded as f64 / self.total as f64
        }
    }
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct RequestRecord<'a> {
    /// Sequence number in arrival order.
    pub id: u64,
    /// Traffic class name.
    pub class: &'a str,
    /// Priority.
    pub priority: Priority,
    /// Model index.
    pub model: usize,
    /// Arrival, ms from the run's start.
    pub arrival_ms: u64,
    /// End, ms from the run's start.
    pub end_ms: u64,
    /// How it ended.
    pub state: Terminal,
    /// Key index used, if sent.
    pub key: Option<usize>,
    /// Project index of the bucket charged or named by the denial.
    pub project: Option<usize>,
    /// True input tokens.
    pub input_tokens: u64,
    /// Estimated input tokens (if the engine estimated).
    pub estimated_input: Option<u64>,
    /// Output tokens (succeeded requests).
    pub output_tokens: u64,
    /// Time spent queued before sending or giving up.
    pub queue_wait_ms: u64,
    /// Response time after sending.
    pub latency_ms: Option<u64>,
    /// Why it ended that way (denial reason, error).
    pub reason: &'a str,
}

fn histogram(high: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, high, 3).expect("valid histogram bounds")
}

/// How far estimates were from the true input counts, for one language.
#[derive(Debug)]
pub struct EstimateStats {
    /// Requests measured (succeeded ones, after warm-up: their true count is known).
    pub requests: u64,
    /// Succeeded requests estimated before the estimator warmed up (not measured).
    pub warm_up: u64,
    /// Sum of |estimate − actual| / actual.
    pub abs_error_sum: f64,
    /// Sum of (estimate − actual) / actual.
    pub signed_error_sum: f64,
    /// Estimates below the true count.
    pub under: u64,
    /// |error| in hundredths of a percent.
    pub abs_error: Histogram<u64>,
}

impl Default for EstimateStats {
    fn default() -> Self {
        Self {
            requests: 0,
            warm_up: 0,
            abs_error_sum: 0.0,
            signed_error_sum: 0.0,
            under: 0,
            abs_error: histogram(10_000_000),
        }
    }
}

/// Everything a run's report is made of, in memory bounded by pool size.
#[derive(Debug)]
pub struct Aggregate {
    /// All requests.
    pub counts: Counts,
    /// By priority (normal, high).
    pub by_priority: [Counts; 2],
    /// Per key, per model: `per_key[key][model]`.
    pub per_key: Vec<Vec<Counts>>,
    /// Per project, per model: `per_project[project][model]`.
    pub per_project: Vec<Vec<Counts>>,
    /// Denials by reason.
    pub deny_reasons: BTreeMap<String, u64>,
    /// Failures by cause (`capacity-429`, `overloaded`, `internal`, `api-key-invalid`,
    /// `permission-denied`, `timeout`, `transport`, …): never breaches.
    pub fail_reasons: BTreeMap<String, u64>,
    /// True input tokens of succeeded requests.
    pub input_actual: u64,
    /// Estimated input tokens of succeeded requests.
    pub input_estimated: u64,
    /// Output tokens of succeeded requests.
    pub output_actual: u64,
    /// Requests that waited in the queue at least once.
    pub delayed: u64,
    /// Requests denied or delayed at a moment when the provider would have accepted them.
    pub lost_capacity: u64,
    /// Keys a reference gateway blacklisted after errors (`rotate-blacklist`).
    pub blacklisted: u64,
    /// Requests an ideal dispatcher could have served (see the simulator's oracle).
    pub servable: Option<u64>,
    /// Queue wait in ms (requests that waited or were denied after waiting).
    pub queue_wait_ms: Histogram<u64>,
    /// Response latency in ms.
    pub latency_ms: Histogram<u64>,
    /// Estimation accuracy by language (`synthetic` for prompts known only by size).
    pub estimation: BTreeMap<String, EstimateStats>,
    /// The same per shadow estimator, in `shadow_estimators` order.
    pub shadow_estimation: Vec<BTreeMap<String, EstimateStats>>,
    /// Early-warning figures, when warnings ran.
    pub warnings: Option<score::WarningScore>,
    /// Admission decision time in ns, on the real clock.
    pub admit_ns: Histogram<u64>,
    /// Settlement time in ns, on the real clock.
    pub settle_ns: Histogram<u64>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            by_priority: [Counts::default(); 2],
            per_key: Vec::new(),
            per_project: Vec::new(),
            deny_reasons: BTreeMap::new(),
            fail_reasons: BTreeMap::new(),
            estimation: BTreeMap::new(),
            shadow_estimation: Vec::new(),
            warnings: None,
            input_actual: 0,
            input_estimated: 0,
            output_actual: 0,
            delayed: 0,
            lost_capacity: 0,
            blacklisted: 0,
            servable: None,
            queue_wait_ms: histogram(90 * 86_400_000),
            latency_ms: histogram(86_400_000),
            admit_ns: histogram(60_000_000_000),
            settle_ns: histogram(60_000_000_000),
        }
    }
}

impl Aggregate {
    /// Counts a finished request.
    pub fn record(&mut self, r: &RequestRecord<'_>) {
        self.counts.add(r.state);
        self.by_priority[usize::from(r.priority == Priority::High)].add(r.state);
        if let Some(k) = r.key {
            cell(&mut self.per_key, k, r.model).add(r.state);
        }
        if let Some(p) = r.project {
            cell(&mut self.per_project, p, r.model).add(r.state);
        }
        if r.state == Terminal::Denied {
            *self.deny_reasons.entry(r.reason.to_owned()).or_default() += 1;
        }
        if r.state == Terminal::Failed {
            *self.fail_reasons.entry(r.reason.to_owned()).or_default() += 1;
        }
        if r.state == Terminal::Succeeded {
            self.input_actual += r.input_tokens;
            self.input_estimated += r.estimated_input.unwrap_or(0);
            self.output_actual += r.output_tokens;
        }
        if r.queue_wait_ms > 0 {
            self.queue_wait_ms.saturating_record(r.queue_wait_ms);
        }
        if let Some(l) = r.latency_ms {
            self.latency_ms.saturating_record(l.max(1));
        }
    }
}

fn cell(table: &mut Vec<Vec<Counts>>, row: usize, col: usize) -> &mut Counts {
    if table.len() <= row {
        table.resize_with(row + 1, Vec::new);
    }
    let r = &mut table[row];
    if r.len() <= col {
        r.resize(col + 1, Counts::default());
    }
    &mut r[col]
}

/// Counts of `table[row][col]`, zero where nothing was recorded.
pub fn counts_at(table: &[Vec<Counts>], row: usize, col: usize) -> Counts {
    table.get(row).and_then(|r| r.get(col)).copied().unwrap_or_default()
}

impl Aggregate {
    /// Counts one estimate against the true count, under `lang`; `cold` estimates (made
    /// before the estimator warmed up) are only counted.
    pub fn estimation(&mut self, lang: &str, estimated: u64, actual: u64, cold: bool) {
        EstimateStats::add(&mut self.estimation, lang, estimated, actual, cold);
    }

    /// As [`Aggregate::estimation`], for shadow estimator `i`.
    pub fn shadow_estimation(&mut self, i: usize, lang: &str, estimated: u64, actual: u64, cold: bool) {
        if self.shadow_estimation.len() <= i {
            self.shadow_estimation.resize_with(i + 1, BTreeMap::new);
        }
        EstimateStats::add(&mut self.shadow_estimation[i], lang, estimated, actual, cold);
    }
}

impl EstimateStats {
    fn add(by_lang: &mut BTreeMap<String, EstimateStats>, lang: &str, estimated: u64, actual: u64, cold: bool) {
        if actual == 0 {
            return;
        }
        if !by_lang.contains_key(lang) {
            by_lang.insert(lang.to_owned(), EstimateStats::default());
        }
        let s = by_lang.get_mut(lang).expect("inserted above");
        if cold {
            s.warm_up += 1;
            return;
        }
        let err = (estimated as f64 - actual as f64) / actual as f64;
        s.requests += 1;
        s.abs_error_sum += err.abs();
        s.signed_error_sum += err;
        s.under += u64::from(estimated < actual);
        s.abs_error.saturating_record((err.abs() * 10_000.0).round() as u64 + 1);
    }
}

/// `requests.csv`, written one row at a time.
pub struct RequestLog<W: Write> {
    out: csv::Writer<W>,
}

impl<W: Write> RequestLog<W> {
    /// A log writing its header to `w`.
    pub fn new(w: W) -> csv::Result<Self> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record([
            "id",
            "class",
            "priority",
            "model",
            "arrival_ms",
            "end_ms",
            "state",
            "key",
            "project",
            "input_tokens",
            "estimated_input",
            "output_tokens",
            "queue_wait_ms",
            "latency_ms",
            "reason",
        ])?;
        Ok(Self { out })
    }

    /// Writes one request; names are resolved by the caller.
    pub fn write(&mut self, r: &RequestRecord<'_>, model: &str, key: &str, project: &str) -> csv::Result<()> {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        self.out.write_record([
            r.id.to_string().as_str(),
            r.class,
            r.priority.name(),
            model,
            &r.arrival_ms.to_string(),
            &r.end_ms.to_string(),
            r.state.name(),
            key,
            project,
            &r.input_tokens.to_string(),
            &opt(r.estimated_input),
            &r.output_tokens.to_string(),
            &r.queue_wait_ms.to_string(),
            &opt(r.latency_ms),
            r.reason,
        ])
    }

    /// Flushes everything written.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub use keysim_engine::redact::redact;

/// A progress bar over `duration_ms` of scenario time, counted in seconds, on stderr. It
/// draws only on a terminal.
pub fn progress(duration_ms: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::with_draw_target(Some(duration_ms / 1000), indicatif::ProgressDrawTarget::stderr());
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} s of traffic, {elapsed} so far")
            .expect("a valid template"),
    );
    b.set_message(what.to_owned());
    b
}

/// A progress bar over `len` units of work (`what`: "points", "variants"), on stderr; it
/// draws only on a terminal.
pub fn count_progress(len: u64, doing: &str, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    let template = format!("{doing} [{{bar:40}}] {{pos}}/{{len}} {what}, {{elapsed}} so far");
    b.set_style(indicatif::ProgressStyle::with_template(&template).expect("a valid template"));
    b
}

//! What a load run adds to the report: its real-clock figures.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A send this far behind its intended time counts as late.
pub const LATE_MS: u64 = 10;

/// Percentiles of a latency, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of `h` (µs), in ms.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        if h.is_empty() {
            return Self::default();
        }
        Self { count: h.len(), p50: ms(h.value_at_quantile(0.5)), p99: ms(h.value_at_quantile(0.99)), max: ms(h.max()) }
    }
}

/// What a load run adds to `summary.json` (real-clock figures).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LoadFigures {
    /// The target, without path or query.
    pub target: String,
    /// Engine replicas the requests were spread over.
    pub replicas: usize,
    /// The store they shared (`memory` = one each, not shared), without credentials.
    pub store: String,
    /// Settlements the store could not record (their reservations stay counted).
    pub settle_errors: u64,
    /// How much faster than the scenario's clock it ran.
    pub time_scale: f64,
    /// Requests started.
    pub started: u64,
    /// Of those, started more than `LATE_MS` after their intended time.
    pub late_sends: u64,
    /// How far behind schedule starts were.
    pub start_lag: Latency,
    /// HTTP requests that failed below HTTP (connection refused, reset, timeout).
    pub transport_errors: u64,
    /// Intended start to answer, through the engine, succeeded requests only (queue waits
    /// included).
    pub end_to_end: Latency,
    /// The same for requests the engine admitted at once: the engine's cost on the path.
    pub end_to_end_unqueued: Latency,
    /// The same without the engine (with `--baseline`).
    pub baseline_end_to_end: Option<Latency>,
    /// The end-to-end distribution, in µs, for plots.
    #[serde(skip)]
    pub end_to_end_us: Option<Histogram<u64>>,
    /// The baseline's, in µs, for plots.
    #[serde(skip)]
    pub baseline_end_to_end_us: Option<Histogram<u64>>,
    /// Requests by terminal state over time, for plots.
    #[serde(skip)]
    pub outcomes: Option<super::trace::Outcomes>,
}

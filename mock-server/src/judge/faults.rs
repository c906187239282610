//! How long the provider takes to answer, and how often it fails on its own.

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// Response time: a log-normal distribution given its median and 99th percentile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyModel {
    /// Median response time in milliseconds.
    pub median_ms: f64,
    /// 99th-percentile response time in milliseconds (at least the median).
    pub p99_ms: f64,
}

/// The z-score of the 99th percentile of a standard normal distribution.
const Z_P99: f64 = 2.326_347_874;

impl LatencyModel {
    /// A successful answer's latency in milliseconds.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        self.sampler().sample(rng)
    }

    /// A sampler that draws many latencies without recomputing the distribution.
    pub fn sampler(&self) -> LatencySampler {
        if self.p99_ms <= self.median_ms || self.median_ms <= 0.0 {
            return LatencySampler::Fixed(self.median_ms.max(0.0).round() as u64);
        }
        let sigma = (self.p99_ms / self.median_ms).ln() / Z_P99;
        LatencySampler::LogNormal(LogNormal::new(self.median_ms.ln(), sigma).expect("sigma is finite and positive"))
    }

    /// An error answer's latency: errors come back quickly, at a tenth of the median.
    pub fn error_ms(&self) -> u64 {
        (self.median_ms / 10.0).round() as u64
    }
}

/// Draws latencies of one [`LatencyModel`].
#[derive(Clone, Copy, Debug)]
pub enum LatencySampler {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Log-normal milliseconds.
    LogNormal(LogNormal<f64>),
}

impl LatencySampler {
    /// One latency in milliseconds, capped at an hour.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Self::Fixed(ms) => *ms,
            // `+ 0.5` then truncation rounds a positive number without a libm call.
            Self::LogNormal(d) => (d.sample(rng) + 0.5).min(3_600_000.0) as u64,
        }
    }
}

/// A failure the provider produces on its own, independent of quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 500 `INTERNAL`.
    Internal,
    /// 503 `UNAVAILABLE`: "The model is overloaded."
    Overloaded,
}

/// How often the provider fails on its own. Failed requests are not counted against quota.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultModel {
    /// Probability of a 500 per request.
    pub internal_rate: f64,
    /// Probability of a 503 per request.
    pub overloaded_rate: f64,
}

impl FaultModel {
    /// Draws whether this request fails. Draws nothing when both rates are zero, so a
    /// scenario without faults keeps the same random streams.
    pub fn draw(&self, rng: &mut impl Rng) -> Option<Fault> {
        if self.internal_rate <= 0.0 && self.overloaded_rate <= 0.0 {
            return None;
        }
        let x: f64 = rng.random();
        if x < self.internal_rate {
            Some(Fault::Internal)
        } else if x < self.internal_rate + self.overloaded_rate {
            Some(Fault::Overloaded)
        } else {
            None
        }
    }
}

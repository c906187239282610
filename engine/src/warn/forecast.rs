//! A linear forecast of a bucket's usage: least squares over the recent samples, as
//! Prometheus' `predict_linear`, with memory fixed at [`SAMPLES`].

use std::collections::VecDeque;

use crate::Timestamp;

/// Samples a trend keeps.
pub const SAMPLES: usize = 32;

/// Recent `(time, used)` samples of one bucket dimension.
#[derive(Clone, Debug, Default)]
pub struct Trend {
    samples: VecDeque<(u64, f64)>,
    window_ms: u64,
}

impl Trend {
    /// A trend over the last `window_ms` milliseconds (and at most [`SAMPLES`] samples).
    pub fn new(window_ms: u64) -> Self {
        Self { samples: VecDeque::with_capacity(SAMPLES), window_ms }
    }

    /// Forgets every sample (a daily counter starting a new day).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Adds a sample of `used` at `now`.
    pub fn push(&mut self, now: Timestamp, used: f64) {
        while self.samples.front().is_some_and(|(t, _)| now.0.saturating_sub(*t) > self.window_ms) {
            self.samples.pop_front();
        }
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now.0, used));
    }

    /// Usage growth per millisecond, by least squares; `None` with fewer than two samples
    /// or no spread in time.
    ///
    /// Fed a cumulative counter, this is the recent rate of use.
    pub fn slope(&self) -> Option<f64> {
        let n = self.samples.len();
        if n < 2 {
            return None;
        }
        let t0 = self.samples[0].0;
        let (mut st, mut su, mut stt, mut stu) = (0.0, 0.0, 0.0, 0.0);
        for &(t, u) in &self.samples {
            let x = t.saturating_sub(t0) as f64;
            st += x;
            su += u;
            stt += x * x;
            stu += x * u;
        }
        let n = n as f64;
        let denom = n * stt - st * st;
        (denom > 0.0).then(|| (n * stu - st * su) / denom)
    }

    /// When usage would reach `limit` if the trend holds; `None` if it is not growing.
    pub fn exhaustion_at(&self, limit: f64, now: Timestamp) -> Option<Timestamp> {
        let (_, last) = *self.samples.back()?;
        if last >= limit {
            return Some(now);
        }
        let slope = self.slope()?;
        (slope > 0.0).then(|| now.plus(((limit - last) / slope).ceil() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_764_140_400_000);

    #[test]
    fn a_steady_climb_forecasts_its_crossing() {
        let mut t = Trend::new(600_000);
        for i in 0..10u64 {
            t.push(T0.plus(i * 60_000), 10.0 * i as f64);
        }
        // 90 used at minute 9, ten per minute: 200 is reached 11 minutes later.
        let now = T0.plus(9 * 60_000);
        assert_eq!(t.exhaustion_at(200.0, now), Some(now.plus(11 * 60_000)));
        assert!((t.slope().unwrap() - 10.0 / 60_000.0).abs() < 1e-12);
    }

    #[test]
    fn flat_or_falling_usage_never_runs_out() {
        let mut t = Trend::new(600_000);
        for i in 0..5u64 {
            t.push(T0.plus(i * 1_000), 50.0 - i as f64);
        }
        assert_eq!(t.exhaustion_at(100.0, T0.plus(5_000)), None);
        assert_eq!(Trend::new(1_000).exhaustion_at(1.0, T0), None);
    }

    #[test]
    fn memory_is_bounded_and_old_samples_age_out() {
        let mut t = Trend::new(10_000);
        for i in 0..1_000u64 {
            t.push(T0.plus(i * 100), i as f64);
        }
        assert!(t.samples.len() <= SAMPLES);
        t.push(T0.plus(1_000_000), 5.0);
        assert_eq!(t.samples.len(), 1, "everything older than the window left");
    }
}

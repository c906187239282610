//! How many output tokens to reserve where token limits count output too.
//!
//! The request's `max_output_tokens` bounds its answer, so reserving it can never
//! under-count — and usually reserves many times what the answer uses. The learned policy
//! reserves a high quantile of the output counts settled requests reported
//! (`candidatesTokenCount + thoughtsTokenCount`), capped by the request's maximum; settlement
//! reconciles the reservation to the actual count either way.

use std::sync::Mutex;

/// Output counts kept per model.
pub const WINDOW: usize = 256;
/// Observations before the learned quantile replaces the fixed reservation.
pub const WARM_UP: usize = 16;
/// Recompute the quantile after this many new observations.
const REFRESH: usize = 8;

/// The policy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum OutputPolicy {
    /// The request's `max_output_tokens`, else the engine's `output_reserve`.
    #[default]
    Fixed,
    /// This quantile (0.5 to 0.999) of recent output counts per model, capped by the
    /// request's `max_output_tokens`; the fixed reservation until warmed up.
    Learned {
        /// Share of answers expected to fit their reservation.
        quantile: f64,
    },
}

#[derive(Debug, Default)]
struct Window {
    seen: Vec<u64>,
    next: usize,
    since_refresh: usize,
    learned: Option<u64>,
}

/// Per-model reservations under an [`OutputPolicy`].
#[derive(Debug)]
pub struct OutputReserve {
    policy: OutputPolicy,
    fallback: u64,
    windows: Vec<Mutex<Window>>,
}

impl OutputReserve {
    /// Reservations for `models` models; `fallback` applies where a request names no maximum
    /// and nothing is learned.
    pub fn new(policy: OutputPolicy, fallback: u64, models: usize) -> Self {
        let models = if matches!(policy, OutputPolicy::Learned { .. }) { models } else { 0 };
        Self { policy, fallback, windows: (0..models).map(|_| Mutex::default()).collect() }
    }

    /// Output tokens to reserve for a request to `model` with maximum `max_output`.
    pub fn reserve(&self, model: usize, max_output: Option<u64>) -> u64 {
        let fixed = max_output.unwrap_or(self.fallback);
        match self.windows.get(model) {
            Some(w) => match w.lock().unwrap_or_else(|p| p.into_inner()).learned {
                Some(q) => max_output.map_or(q, |m| q.min(m)),
                None => fixed,
            },
            None => fixed,
        }
    }

    /// Learns that a request to `model` produced `output` tokens.
    pub fn observe(&self, model: usize, output: u64) {
        let (Some(w), OutputPolicy::Learned { quantile }) = (self.windows.get(model), self.policy) else { return };
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if w.seen.len() < WINDOW {
            w.seen.push(output);
        } else {
            let i = w.next;
            w.seen[i] = output;
        }
        w.next = (w.next + 1) % WINDOW;
        w.since_refresh += 1;
        if w.seen.len() >= WARM_UP && (w.since_refresh >= REFRESH || w.learned.is_none()) {
            let mut sorted = w.seen.clone();
            let k = ((sorted.len() as f64 * quantile.clamp(0.5, 0.999)).ceil() as usize).clamp(1, sorted.len()) - 1;
            let (_, q, _) = sorted.select_nth_unstable(k);
            w.learned = Some(*q);
            w.since_refresh = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_reserves_the_maximum_or_the_fallback() {
        let r = OutputReserve::new(OutputPolicy::Fixed, 1024, 1);
        r.observe(0, 10);
        assert_eq!(r.reserve(0, Some(8192)), 8192);
        assert_eq!(r.reserve(0, None), 1024);
    }

    #[test]
    fn learned_reserves_the_quantile_capped_by_the_maximum() {
        let r = OutputReserve::new(OutputPolicy::Learned { quantile: 0.9 }, 1024, 2);
        for i in 0..WARM_UP as u64 - 1 {
            r.observe(0, 100 + i);
        }
        assert_eq!(r.reserve(0, Some(8192)), 8192, "not warmed up");
        for i in 0..WINDOW as u64 * 2 {
            r.observe(0, 1 + i % 100);
        }
        let q = r.reserve(0, Some(8192));
        assert!((88..=92).contains(&q), "about the 90th percentile of 1..=100: {q}");
        assert_eq!(r.reserve(0, Some(50)), 50, "never above the request's maximum");
        assert_eq!(r.reserve(1, None), 1024, "models learn apart");
    }
}

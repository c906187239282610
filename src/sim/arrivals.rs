//! Traffic generators: when the next request of a class arrives, and how large it is.

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::scenario::{Arrival, Recorded, Tokens};

/// The z-score of the 99th percentile of a standard normal distribution.
const Z_P99: f64 = 2.326_347_874;
const DAY_MS: u64 = 86_400_000;

/// Draws token counts.
#[derive(Clone, Copy, Debug)]
pub enum TokenDraw {
    /// Always this many.
    Fixed(u64),
    /// Log-normal.
    LogNormal(LogNormal<f64>),
}

impl TokenDraw {
    /// The sampler for a distribution.
    pub fn new(t: &Tokens) -> Self {
        match *t {
            Tokens::Fixed(n) => Self::Fixed(n),
            Tokens::LogNormal { median, p99 } if p99 <= median => Self::Fixed(median.round() as u64),
            Tokens::LogNormal { median, p99 } => {
                let sigma = (p99 / median).ln() / Z_P99;
                Self::LogNormal(LogNormal::new(median.ln(), sigma).expect("validated median and p99"))
            }
        }
    }

    /// One draw, at least 1 token, capped at ten million.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match self {
            Self::Fixed(n) => *n,
            // `+ 0.5` then truncation rounds a positive number without a libm call.
            Self::LogNormal(d) => (d.sample(rng) + 0.5).clamp(1.0, 1e7) as u64,
        }
    }
}

/// The arrival process of one class, as a stream of offsets (ms from the start).
#[derive(Debug)]
pub struct Arrivals {
    arrival: Arrival,
    start_ms: u64,
    end_ms: u64,
    /// Offset of the last arrival, in fractional milliseconds.
    t: f64,
    /// Requests still to release at the current instant (bursts), or the trace position.
    cursor: u64,
    /// Milliseconds after Pacific midnight of the scenario's start, for diurnal cycles.
    day_phase_ms: u64,
    started: bool,
}

impl Arrivals {
    /// A stream for `arrival` active in `[start_ms, end_ms)`.
    pub fn new(arrival: Arrival, start_ms: u64, end_ms: u64, day_phase_ms: u64) -> Self {
        Self { arrival, start_ms, end_ms, t: start_ms as f64, cursor: 0, day_phase_ms, started: false }
    }

    /// The next arrival's offset and, for traces and logs, its record.
    pub fn next(&mut self, rng: &mut impl Rng) -> Option<(u64, Option<Recorded>)> {
        let (at, tokens) = self.advance(rng)?;
        (at < self.end_ms).then_some((at, tokens))
    }

    fn exp_gap(rng: &mut impl Rng, rate_per_s: f64) -> f64 {
        Exp::new(rate_per_s / 1000.0).expect("positive rate").sample(rng)
    }

    fn advance(&mut self, rng: &mut impl Rng) -> Option<(u64, Option<Recorded>)> {
        let first = !self.started;
        self.started = true;
        match &self.arrival {
            Arrival::Constant { rate } => {
                if !first {
                    self.t += 1000.0 / rate;
                }
                Some((self.t as u64, None))
            }
            Arrival::Poisson { rate } => {
                self.t += Self::exp_gap(rng, *rate);
                Some((self.t as u64, None))
            }
            Arrival::Batch { size, every_ms } => {
                if self.cursor == 0 {
                    if !first {
                        self.t += *every_ms as f64;
                    }
                    self.cursor = *size;
                }
                self.cursor -= 1;
                Some((self.t as u64, None))
            }
            Arrival::OnOff { rate, on_ms, off_ms } => {
                let cycle = (on_ms + off_ms) as f64;
                loop {
                    self.t += Self::exp_gap(rng, *rate);
                    let phase = (self.t - self.start_ms as f64) % cycle;
                    if phase < *on_ms as f64 {
                        return Some((self.t as u64, None));
                    }
                    // Skip the silent part and draw a fresh gap from the next on-period's
                    // start: memorylessness keeps the process Poisson while on.
                    self.t += cycle - phase;
                    if self.t >= self.end_ms as f64 {
                        return Some((self.end_ms, None));
                    }
                }
            }
            Arrival::Ramp { from, to, over_ms } => {
                let (from, to, over) = (*from, *to, *over_ms as f64);
                let start = self.start_ms as f64;
                self.thin(rng, from.max(to), |t| {
                    let x = ((t - start) / over).clamp(0.0, 1.0);
                    from + (to - from) * x
                })
            }
            Arrival::Diurnal { min, max, peak_ms } => {
                let (min, max, peak, phase) = (*min, *max, *peak_ms as f64, self.day_phase_ms as f64);
                self.thin(rng, max, |t| {
                    let tod = (t + phase) % DAY_MS as f64;
                    let angle = 2.0 * std::f64::consts::PI * (tod - peak) / DAY_MS as f64;
                    min + (max - min) * (1.0 + angle.cos()) / 2.0
                })
            }
            Arrival::Trace(trace) => {
                let n = trace.rows.len() as u64;
                if !trace.repeat && self.cursor >= n {
                    return None;
                }
                let pass = self.cursor / n;
                let row = trace.rows[(self.cursor % n) as usize];
                self.cursor += 1;
                let at = self.start_ms + pass * trace.period_ms + row.at;
                Some((at, Some(row)))
            }
        }
    }

    /// Lewis–Shedler thinning of a Poisson process with a rate that changes over time.
    fn thin(
        &mut self,
        rng: &mut impl Rng,
        max_rate: f64,
        rate_at: impl Fn(f64) -> f64,
    ) -> Option<(u64, Option<Recorded>)> {
        if max_rate <= 0.0 {
            return None;
        }
        loop {
            self.t += Self::exp_gap(rng, max_rate);
            if self.t >= self.end_ms as f64 {
                return Some((self.end_ms, None));
            }
            if rng.random::<f64>() * max_rate <= rate_at(self.t) {
                return Some((self.t as u64, None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    fn count(arrival: Arrival, end: u64) -> usize {
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let mut a = Arrivals::new(arrival, 0, end, 0);
        std::iter::from_fn(|| a.next(&mut rng)).count()
    }

    #[test]
    fn constant_and_poisson_rates() {
        assert_eq!(count(Arrival::Constant { rate: 2.0 }, 60_000), 120);
        let n = count(Arrival::Poisson { rate: 10.0 }, 600_000);
        assert!((5_700..6_300).contains(&n), "{n}");
    }

    #[test]
    fn bursts_arrive_together() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let mut a = Arrivals::new(Arrival::Batch { size: 3, every_ms: 20_000 }, 0, 60_000, 0);
        let times: Vec<u64> = std::iter::from_fn(|| a.next(&mut rng)).map(|(t, _)| t).collect();
        assert_eq!(times, vec![0, 0, 0, 20_000, 20_000, 20_000, 40_000, 40_000, 40_000]);
    }

    #[test]
    fn on_off_is_silent_when_off() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let mut a = Arrivals::new(Arrival::OnOff { rate: 50.0, on_ms: 1_000, off_ms: 9_000 }, 0, 100_000, 0);
        for (t, _) in std::iter::from_fn(|| a.next(&mut rng)) {
            assert!(t % 10_000 < 1_000, "arrival at {t} falls in an off period");
        }
    }

    #[test]
    fn a_ramp_grows() {
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        let mut a = Arrivals::new(Arrival::Ramp { from: 0.0, to: 20.0, over_ms: 100_000 }, 0, 100_000, 0);
        let times: Vec<u64> = std::iter::from_fn(|| a.next(&mut rng)).map(|(t, _)| t).collect();
        let first_half = times.iter().filter(|t| **t < 50_000).count();
        assert!(first_half * 2 < times.len(), "{first_half} of {}", times.len());
    }

    #[test]
    fn lognormal_tokens_hit_their_median() {
        let d = TokenDraw::new(&Tokens::LogNormal { median: 600.0, p99: 6000.0 });
        let mut rng = Pcg64Mcg::seed_from_u64(9);
        let mut v: Vec<u64> = (0..20_001).map(|_| d.sample(&mut rng)).collect();
        v.sort_unstable();
        assert!((560..640).contains(&v[10_000]), "median {}", v[10_000]);
        assert!((5_200..6_900).contains(&v[19_800]), "p99 {}", v[19_800]);
    }
}

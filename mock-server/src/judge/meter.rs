//! The judge's counters: one minute meter per semantics, and the Pacific day.

use std::collections::VecDeque;

use super::Enforcement;
use crate::pacific;

const MINUTE_MS: u64 = 60_000;

/// Counts one (project, model)'s requests and input tokens per minute.
pub(super) enum MinuteMeter {
    /// Accepted requests of the last 60 s: `(accepted_at, tokens)`, oldest first.
    Sliding { rpm: u64, tpm: u64, log: VecDeque<(u64, u64)>, tokens: u64 },
    /// Counters of the current calendar minute.
    Fixed { rpm: u64, tpm: u64, minute: u64, requests: u64, tokens: u64 },
    /// Two buckets refilled continuously; levels are what is still available.
    Bucket { rpm: u64, tpm: u64, at: u64, requests: f64, tokens: f64 },
}

impl MinuteMeter {
    pub(super) fn new(enforcement: Enforcement, rpm: u64, tpm: u64) -> Self {
        match enforcement {
            Enforcement::Sliding => Self::Sliding { rpm, tpm, log: VecDeque::new(), tokens: 0 },
            Enforcement::FixedMinute => Self::Fixed { rpm, tpm, minute: 0, requests: 0, tokens: 0 },
            Enforcement::TokenBucket => Self::Bucket { rpm, tpm, at: 0, requests: rpm as f64, tokens: tpm as f64 },
        }
    }

    fn advance(&mut self, now: u64) {
        match self {
            Self::Sliding { log, tokens, .. } => {
                while let Some(&(at, t)) = log.front() {
                    if now < at + MINUTE_MS {
                        break;
                    }
                    log.pop_front();
                    *tokens -= t;
                }
            }
            Self::Fixed { minute, requests, tokens, .. } => {
                if now / MINUTE_MS != *minute {
                    *minute = now / MINUTE_MS;
                    *requests = 0;
                    *tokens = 0;
                }
            }
            Self::Bucket { rpm, tpm, at, requests, tokens } => {
                if now > *at {
                    let elapsed = (now - *at) as f64;
                    *requests = (*requests + elapsed * *rpm as f64 / MINUTE_MS as f64).min(*rpm as f64);
                    *tokens = (*tokens + elapsed * *tpm as f64 / MINUTE_MS as f64).min(*tpm as f64);
                    *at = now;
                }
            }
        }
    }

    /// How long until one more request of `input` tokens fits, per dimension (`None`: fits now).
    pub(super) fn waits(&mut self, now: u64, input: u64) -> (Option<u64>, Option<u64>) {
        self.advance(now);
        match self {
            Self::Sliding { rpm, tpm, log, tokens } => {
                let rpm_wait = if (log.len() as u64) < *rpm {
                    None
                } else if *rpm == 0 {
                    Some(MINUTE_MS)
                } else {
                    let oldest_to_leave = log[log.len() - *rpm as usize].0;
                    Some(oldest_to_leave + MINUTE_MS - now)
                };
                let tpm_wait = if *tokens + input <= *tpm {
                    None
                } else if input > *tpm {
                    Some(MINUTE_MS)
                } else {
                    let mut excess = *tokens + input - *tpm;
                    let mut leave_at = now;
                    for &(at, t) in log.iter() {
                        leave_at = at + MINUTE_MS;
                        if t >= excess {
                            break;
                        }
                        excess -= t;
                    }
                    Some(leave_at - now)
                };
                (rpm_wait, tpm_wait)
            }
            Self::Fixed { rpm, tpm, requests, tokens, .. } => {
                let to_next_minute = MINUTE_MS - now % MINUTE_MS;
                let rpm_wait = (*requests >= *rpm).then_some(to_next_minute);
                let tpm_wait = (*tokens + input > *tpm).then_some(to_next_minute);
                (rpm_wait, tpm_wait)
            }
            Self::Bucket { rpm, tpm, requests, tokens, .. } => {
                let wait = |level: f64, need: f64, limit: u64| -> Option<u64> {
                    if level + 1e-9 >= need {
                        None
                    } else if need > limit as f64 {
                        Some(MINUTE_MS)
                    } else {
                        Some(((need - level) * MINUTE_MS as f64 / limit as f64).ceil() as u64)
                    }
                };
                (wait(*requests, 1.0, *rpm), wait(*tokens, input as f64, *tpm))
            }
        }
    }

    /// Counts an accepted request.
    pub(super) fn record(&mut self, now: u64, input: u64) {
        self.advance(now);
        match self {
            Self::Sliding { log, tokens, .. } => {
                log.push_back((now, input));
                *tokens += input;
            }
            Self::Fixed { requests, tokens, .. } => {
                *requests += 1;
                *tokens += input;
            }
            Self::Bucket { requests, tokens, .. } => {
                *requests -= 1.0;
                *tokens -= input as f64;
            }
        }
    }

    /// `(requests, tokens)` counted now; for a token bucket, what has been drawn from it.
    pub(super) fn usage(&mut self, now: u64) -> (u64, u64) {
        self.advance(now);
        match self {
            Self::Sliding { log, tokens, .. } => (log.len() as u64, *tokens),
            Self::Fixed { requests, tokens, .. } => (*requests, *tokens),
            Self::Bucket { rpm, tpm, requests, tokens, .. } => {
                ((*rpm as f64 - *requests).round() as u64, (*tpm as f64 - *tokens).round() as u64)
            }
        }
    }
}

/// Counts one (project, model)'s requests and tokens of the current Pacific day.
#[derive(Default)]
pub(super) struct DayMeter {
    ends_at: u64,
    requests: u64,
    tokens: u64,
}

impl DayMeter {
    fn advance(&mut self, now: u64) {
        if now >= self.ends_at {
            self.ends_at = pacific::next_midnight_ms(now);
            self.requests = 0;
            self.tokens = 0;
        }
    }

    pub(super) fn waits(&mut self, now: u64, input: u64, rpd: u64, tpd: Option<u64>) -> (Option<u64>, Option<u64>) {
        self.advance(now);
        let to_midnight = self.ends_at - now;
        let rpd_wait = (self.requests >= rpd).then_some(to_midnight);
        let tpd_wait = tpd.and_then(|tpd| (self.tokens + input > tpd).then_some(to_midnight));
        (rpd_wait, tpd_wait)
    }

    pub(super) fn record(&mut self, now: u64, input: u64) {
        self.advance(now);
        self.requests += 1;
        self.tokens += input;
    }

    pub(super) fn usage(&mut self, now: u64) -> (u64, u64) {
        self.advance(now);
        (self.requests, self.tokens)
    }
}

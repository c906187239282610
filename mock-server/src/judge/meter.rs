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
    /// Two buckets refilled continuously; levels are what is still available, in units of
    /// 1/60000 request or token so that a refill of `limit` per minute adds exactly `limit`
    /// per millisecond: integer arithmetic, no rounding drift.
    Bucket { rpm: u64, tpm: u64, at: u64, requests: u128, tokens: u128 },
}

impl MinuteMeter {
    /// New limits from now on; what was counted stays.
    pub(super) fn set_limits(&mut self, new_rpm: u64, new_tpm: u64) {
        match self {
            Self::Sliding { rpm, tpm, .. } | Self::Fixed { rpm, tpm, .. } => {
                (*rpm, *tpm) = (new_rpm, new_tpm);
            }
            Self::Bucket { rpm, tpm, requests, tokens, .. } => {
                (*rpm, *tpm) = (new_rpm, new_tpm);
                *requests = (*requests).min(scaled(new_rpm));
                *tokens = (*tokens).min(scaled(new_tpm));
            }
        }
    }

    pub(super) fn new(enforcement: Enforcement, rpm: u64, tpm: u64) -> Self {
        match enforcement {
            Enforcement::Sliding => Self::Sliding { rpm, tpm, log: VecDeque::new(), tokens: 0 },
            Enforcement::FixedMinute => Self::Fixed { rpm, tpm, minute: 0, requests: 0, tokens: 0 },
            Enforcement::TokenBucket => Self::Bucket { rpm, tpm, at: 0, requests: scaled(rpm), tokens: scaled(tpm) },
        }
    }

    /// Brings the meter to `now`: drops what left the window, refills, starts a new minute.
    pub(super) fn advance(&mut self, now: u64) {
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
                    let elapsed = u128::from(now - *at);
                    *requests = (*requests + elapsed * u128::from(*rpm)).min(scaled(*rpm));
                    *tokens = (*tokens + elapsed * u128::from(*tpm)).min(scaled(*tpm));
                    *at = now;
                }
            }
        }
    }

    /// How long until one more request of `input` tokens fits, per dimension (`None`: fits
    /// now). The meter must have been advanced to `now`.
    pub(super) fn waits(&self, now: u64, input: u64) -> (Option<u64>, Option<u64>) {
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
                let tpm_wait = if tokens.saturating_add(input) <= *tpm {
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
                let tpm_wait = (tokens.saturating_add(input) > *tpm).then_some(to_next_minute);
                (rpm_wait, tpm_wait)
            }
            Self::Bucket { rpm, tpm, requests, tokens, .. } => {
                // Refill is `limit` scaled units per millisecond.
                let wait = |level: u128, need: u64, limit: u64| -> Option<u64> {
                    let need = scaled(need);
                    if level >= need {
                        None
                    } else if need > scaled(limit) {
                        Some(MINUTE_MS)
                    } else {
                        Some(((need - level).div_ceil(u128::from(limit))) as u64)
                    }
                };
                (wait(*requests, 1, *rpm), wait(*tokens, input, *tpm))
            }
        }
    }

    /// Counts an accepted request. The meter must have been advanced to `now`.
    pub(super) fn record(&mut self, now: u64, input: u64) {
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
                *requests = requests.saturating_sub(scaled(1));
                *tokens = tokens.saturating_sub(scaled(input));
            }
        }
    }

    /// `(requests, tokens)` counted now; for a token bucket, what has been drawn from it.
    pub(super) fn usage(&mut self, now: u64) -> (u64, u64) {
        self.advance(now);
        self.counted()
    }

    /// `(requests, tokens)` as of the last time the meter was advanced.
    pub(super) fn counted(&self) -> (u64, u64) {
        match self {
            Self::Sliding { log, tokens, .. } => (log.len() as u64, *tokens),
            Self::Fixed { requests, tokens, .. } => (*requests, *tokens),
            Self::Bucket { rpm, tpm, requests, tokens, .. } => {
                let drawn = |limit: u64, level: u128| (scaled(limit) - level).div_ceil(u128::from(MINUTE_MS)) as u64;
                (drawn(*rpm, *requests), drawn(*tpm, *tokens))
            }
        }
    }
}

/// `n` in units of 1/60000.
fn scaled(n: u64) -> u128 {
    u128::from(n) * u128::from(MINUTE_MS)
}

/// Counts one (project, model)'s requests and tokens of the current Pacific day.
#[derive(Default)]
pub(super) struct DayMeter {
    ends_at: u64,
    requests: u64,
    tokens: u64,
}

impl DayMeter {
    /// Starts a new day if one began.
    pub(super) fn advance(&mut self, now: u64) {
        if now >= self.ends_at {
            self.ends_at = pacific::next_midnight_ms(now);
            self.requests = 0;
            self.tokens = 0;
        }
    }

    /// Waits per daily dimension; the meter must have been advanced to `now`.
    pub(super) fn waits(&self, now: u64, input: u64, rpd: u64, tpd: Option<u64>) -> (Option<u64>, Option<u64>) {
        let to_midnight = self.ends_at - now;
        let rpd_wait = (self.requests >= rpd).then_some(to_midnight);
        let tpd_wait = tpd.and_then(|tpd| (self.tokens.saturating_add(input) > tpd).then_some(to_midnight));
        (rpd_wait, tpd_wait)
    }

    /// Counts an accepted request; the meter must have been advanced to `now`.
    pub(super) fn record(&mut self, input: u64) {
        self.requests += 1;
        self.tokens += input;
    }

    pub(super) fn usage(&mut self, now: u64) -> (u64, u64) {
        self.advance(now);
        self.counted()
    }

    /// `(requests, tokens)` as of the last time the meter was advanced.
    pub(super) fn counted(&self) -> (u64, u64) {
        (self.requests, self.tokens)
    }
}

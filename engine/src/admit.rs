//! Admission and settlement: the engine's two calls on every request.

use std::sync::atomic::Ordering;

use super::estimate::Prompt;
use super::limits::Dimension;
use super::pool::KeyId;
use super::provider::QuotaExhausted;
use super::store::{BucketId, QuotaStore, Reservation, Shortfall, StoreError};
use super::strategy::Choice;
use super::time::{next_pacific_midnight, Timestamp, MINUTE_MS};
use super::{AdmissionMode, Engine, TokenBasis};

/// A request's priority. Only high priority may use the reserved fraction of each limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Ordinary traffic.
    #[default]
    Normal,
    /// Traffic that may use the reserve.
    High,
}

crate::setting!(Priority { Normal => "normal", High => "high" });

impl Priority {
    fn index(self) -> usize {
        self as usize
    }
}

/// A request as the engine sees it before sending.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Index of the model.
    pub model: usize,
    /// The prompt (or its size).
    pub prompt: Prompt<'a>,
    /// Its priority.
    pub priority: Priority,
    /// `generationConfig.maxOutputTokens`, if set; reserved with basis `total`.
    pub max_output_tokens: Option<u64>,
}

impl<'a> Request<'a> {
    /// A normal-priority request for model index `model` with no output limit.
    pub fn new(model: usize, prompt: Prompt<'a>) -> Self {
        Self { model, prompt, priority: Priority::Normal, max_output_tokens: None }
    }

    /// The same request at `priority`.
    pub fn priority(self, priority: Priority) -> Self {
        Self { priority, ..self }
    }

    /// The same request with `generationConfig.maxOutputTokens`.
    pub fn max_output_tokens(self, max: Option<u64>) -> Self {
        Self { max_output_tokens: max, ..self }
    }
}

/// An admitted request: which key to send it with, and what it holds — the plain record of
/// the sans-IO layer, for callers that settle themselves (a simulator). A service takes a
/// [`Permit`](crate::Permit) instead, which cannot leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a ticket holds quota until it is settled"]
pub struct Ticket {
    /// The key to use.
    pub key: KeyId,
    /// The quota bucket charged.
    pub bucket: BucketId,
    /// Index of the model.
    pub model: usize,
    /// Estimated input tokens.
    pub estimated_input: u64,
    /// Output tokens reserved (basis `total` only).
    pub reserved_output: u64,
    /// What the store holds for it; `None` in check-then-act mode, which holds nothing.
    pub reservation: Option<Reservation>,
}

/// Why no key could take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Every candidate is at its ceiling on this dimension (the one that frees last).
    Exhausted(Dimension),
    /// Every candidate cools down after a 429 on this dimension.
    CoolingDown(Dimension),
    /// No usable key serves the model.
    NoUsableKey,
    /// The quota store did not answer: admission fails closed.
    StoreUnavailable,
}

impl DenyReason {
    fn code(self) -> u64 {
        match self {
            Self::Exhausted(d) => d.index() as u64,
            Self::CoolingDown(d) => 4 + d.index() as u64,
            Self::NoUsableKey => 8,
            Self::StoreUnavailable => 9,
        }
    }

    fn from_code(c: u64) -> Self {
        match c {
            0..=3 => Self::Exhausted(Dimension::ALL[c as usize]),
            4..=7 => Self::CoolingDown(Dimension::ALL[c as usize - 4]),
            9 => Self::StoreUnavailable,
            _ => Self::NoUsableKey,
        }
    }

    /// A short name for reports (`exhausted:rpm`, `cooling:rpd`, `no-usable-key`).
    pub fn name(self) -> String {
        match self {
            Self::Exhausted(d) => format!("exhausted:{d}"),
            Self::CoolingDown(d) => format!("cooling:{d}"),
            Self::NoUsableKey => "no-usable-key".to_owned(),
            Self::StoreUnavailable => "store-unavailable".to_owned(),
        }
    }
}

/// A denial: an expected outcome, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// When to try again; `None` if waiting will not help.
    pub retry_at: Option<Timestamp>,
    /// Why.
    pub reason: DenyReason,
    /// The bucket that frees first, if any was tried.
    pub bucket: Option<BucketId>,
}

/// The engine's answer to [`Engine::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it with this ticket, then settle the ticket.
    Admitted(Ticket),
    /// Do not send it now.
    Denied(Denial),
}

/// A request that can never be admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmitError {
    /// The model index is not in the pool.
    #[error("unknown model index {0}")]
    UnknownModel(usize),
    /// The request needs more tokens than any bucket's per-minute or per-day ceiling allows.
    #[error("request of {tokens} tokens exceeds the largest {dimension} ceiling of the pool ({ceiling})")]
    TooLarge {
        /// Tokens the request counts.
        tokens: u64,
        /// The dimension it cannot fit.
        dimension: Dimension,
        /// The largest ceiling of that dimension.
        ceiling: u64,
    },
}

/// What really happened to an admitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; counts from `usageMetadata` (`output` = candidates + thoughts).
    Success {
        /// `promptTokenCount`.
        input_tokens: u64,
        /// `candidatesTokenCount + thoughtsTokenCount`.
        output_tokens: u64,
    },
    /// Answered 429.
    RateLimited(QuotaExhausted),
    /// Failed otherwise after sending; the provider may have counted it, so it stays counted.
    Failed,
    /// Never sent; everything it held is returned.
    NotSent,
}

impl<S: QuotaStore> Engine<S> {
    /// Picks a key for `req` and reserves its quota on every dimension at once, at `now`.
    ///
    /// The sans-IO core: the [`Ticket`] must be settled with [`Engine::settle`]. Services
    /// use [`Engine::try_acquire`] or [`Engine::acquire`], whose permits settle themselves.
    pub fn admit(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        let model = req.model;
        let pool = self.pool.load();
        let groups = pool.groups.get(model).ok_or(AdmitError::UnknownModel(model))?;
        if groups.is_empty() {
            return Ok(Decision::Denied(Denial { retry_at: None, reason: DenyReason::NoUsableKey, bucket: None }));
        }
        let estimated_input = self.estimator.estimate(model, &req.prompt);
        let reserved_output = match self.config.basis {
            TokenBasis::Input => 0,
            TokenBasis::Total => self.outputs.reserve(model, req.max_output_tokens),
        };
        let tokens = estimated_input.saturating_add(reserved_output);
        let p = req.priority.index();
        let [tpm_max, tpd_max] = pool.largest[model][p];
        for (dimension, ceiling) in [(Dimension::Tpm, tpm_max), (Dimension::Tpd, tpd_max)] {
            if tokens > ceiling {
                return Err(AdmitError::TooLarge { tokens, dimension, ceiling });
            }
        }
        let epoch = self.exhaustion_epoch.load(Ordering::SeqCst);
        let until = self.exhausted[model][p].load(Ordering::Relaxed);
        if now.0 < until {
            let reason = DenyReason::from_code(self.exhausted_reason[model][p].load(Ordering::Relaxed));
            return Ok(Decision::Denied(Denial {
                retry_at: Some(Timestamp(until)),
                reason,
                bucket: Some(BucketId(self.exhausted_bucket[model][p].load(Ordering::Relaxed) as u32)),
            }));
        }

        // Like the random word: a plain load and store, a repeated turn only repeats a choice.
        let turn = self.turn.load(Ordering::Relaxed);
        self.turn.store(turn.wrapping_add(1), Ordering::Relaxed);
        let limits = &pool.group_limits[model];
        let headroom = |i: usize| self.headroom(&limits[i], groups[i].bucket, p, now);
        let choice = Choice { n: groups.len(), headroom: &headroom, random: self.next_random(), turn };
        let proposed = match &self.custom {
            None => self.config.strategy.propose(&choice),
            Some(s) => s.propose(&Choice { n: choice.n, headroom: &headroom, random: choice.random, turn }),
        };
        let fallback = (0..groups.len()).map(|j| (turn + j) % groups.len()).filter(|i| !proposed.contains(&Some(*i)));
        let mut earliest: Option<(Shortfall, BucketId)> = None;
        let mut size_matters = false;
        for i in proposed.into_iter().flatten().chain(fallback) {
            let g = &groups[i];
            let ceilings = &limits[i].ceilings[p];
            // Matched in place rather than mapped: the answers are large, and copying them
            // through combinators cost more than the rest of a strategy.
            let (reservation, answer) = match self.config.admission {
                AdmissionMode::Atomic => match self.store.reserve(g.bucket, tokens, ceilings, now) {
                    Ok(Ok(grant)) => (Some(grant.reservation), Ok(grant.usage)),
                    Ok(Err(s)) => (None, Err(s)),
                    Err(_) => return Ok(self.store_unavailable(g.bucket)),
                },
                AdmissionMode::CheckThenAct => match self.store.check(g.bucket, tokens, ceilings, now) {
                    Ok(answer) => (None, answer),
                    Err(_) => return Ok(self.store_unavailable(g.bucket)),
                },
            };
            match answer {
                Ok(usage) => {
                    let view = &self.views[g.bucket.0 as usize];
                    view.record(&usage, now);
                    let key = g.keys[view.key_turn() % g.keys.len()];
                    let ticket = Ticket { key, bucket: g.bucket, model, estimated_input, reserved_output, reservation };
                    return Ok(Decision::Admitted(ticket));
                }
                Err(s) => {
                    self.note(g.bucket, &s.usage, now);
                    size_matters |= s.dimension.counts_tokens() && !s.cooling;
                    if earlier(&s, earliest.as_ref().map(|e| &e.0)) {
                        earliest = Some((s, g.bucket));
                    }
                }
            }
        }
        let (s, bucket) = earliest.expect("at least one group was tried");
        let reason = if s.cooling { DenyReason::CoolingDown(s.dimension) } else { DenyReason::Exhausted(s.dimension) };
        if let (false, Some(at)) = (size_matters, s.retry_at) {
            self.exhausted_reason[model][p].store(reason.code(), Ordering::Relaxed);
            self.exhausted_bucket[model][p].store(u64::from(bucket.0), Ordering::Relaxed);
            self.exhausted[model][p].store(at.0, Ordering::SeqCst);
            // Something was freed (or the pool changed) since this scan began: its finding
            // may be stale, so it is not kept.
            if self.exhaustion_epoch.load(Ordering::SeqCst) != epoch {
                self.exhausted[model][p].store(0, Ordering::SeqCst);
            }
        }
        Ok(Decision::Denied(Denial { retry_at: s.retry_at, reason, bucket: Some(bucket) }))
    }

    /// Fail closed: nothing is sent on a count nobody could check.
    #[cold]
    fn store_unavailable(&self, bucket: BucketId) -> Decision {
        Decision::Denied(Denial { retry_at: None, reason: DenyReason::StoreUnavailable, bucket: Some(bucket) })
    }

    /// Teaches the estimator the actual input tokens of a prompt it estimated (from
    /// `usageMetadata.promptTokenCount`).
    pub fn learn(&self, model: usize, prompt: &Prompt<'_>, actual_input: u64) {
        self.estimator.observe(model, prompt, actual_input);
    }

    /// Whether [`Engine::learn`] does anything with this engine's estimator.
    pub fn learns(&self) -> bool {
        self.estimator.learns()
    }

    /// Reconciles `ticket` with what really happened, at `now`; says whether that freed
    /// capacity (a refund, a count below the reservation), so that a caller with its own
    /// waiters (a simulator) knows to serve them. When the store cannot be reached the error
    /// says so; the reservation then stays as counted (conservative).
    pub fn settle(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Result<bool, StoreError> {
        let freed = self.settle_inner(ticket, outcome, now)?;
        if freed {
            self.forget_exhaustion(Some(ticket.model));
            #[cfg(feature = "async")]
            self.wake_queues(Some(ticket.model));
        }
        Ok(freed)
    }

    /// Settles; whether capacity was freed (waiters may be served now).
    fn settle_inner(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Result<bool, StoreError> {
        let b = ticket.bucket;
        match (outcome, ticket.reservation) {
            (Outcome::Success { input_tokens, output_tokens }, r) => {
                let counted = match self.config.basis {
                    TokenBasis::Input => input_tokens,
                    TokenBasis::Total => {
                        self.outputs.observe(ticket.model, output_tokens);
                        input_tokens + output_tokens
                    }
                };
                let (usage, freed) = match r {
                    Some(_) if !self.config.reconcile => return Ok(false),
                    Some(r) => (self.store.reconcile(b, &r, counted, now)?, counted < r.tokens),
                    None => (self.store.record(b, counted, now)?, false),
                };
                self.note(b, &usage, now);
                Ok(freed)
            }
            (Outcome::RateLimited(q), r) => {
                if let Some(r) = r {
                    let usage = self.store.refund(b, &r, now)?;
                    self.note(b, &usage, now);
                }
                let dimension = q.dimension.unwrap_or(Dimension::Rpm);
                let until = if dimension.is_daily() {
                    // The day the request was counted in, which may have ended while the
                    // answer travelled: then the new day's quota is fresh and nothing cools.
                    r.map_or_else(|| next_pacific_midnight(now), |r| r.day_ends)
                } else {
                    now.plus(q.retry_after_ms.unwrap_or(MINUTE_MS))
                };
                if until > now {
                    self.store.cool_down(b, dimension, until, now)?;
                    self.views[b.0 as usize].until.store(0, Ordering::Relaxed);
                }
                Ok(r.is_some())
            }
            (Outcome::Failed, Some(_)) => Ok(false),
            (Outcome::Failed, None) => {
                let usage = self.store.record(b, ticket.estimated_input + ticket.reserved_output, now)?;
                self.note(b, &usage, now);
                Ok(false)
            }
            (Outcome::NotSent, Some(r)) => {
                let usage = self.store.refund(b, &r, now)?;
                self.note(b, &usage, now);
                Ok(true)
            }
            (Outcome::NotSent, None) => Ok(false),
        }
    }
}

/// Whether shortfall `s` frees earlier than `than` (`None` retry = never).
fn earlier(s: &Shortfall, than: Option<&Shortfall>) -> bool {
    match (than, s.retry_at) {
        (None, _) => true,
        (Some(t), Some(r)) => t.retry_at.is_none_or(|tr| r < tr),
        (Some(_), None) => false,
    }
}

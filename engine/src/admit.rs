//! Admission: the engine's first call on every request (settlement, the second, is in
//! `settle`).

use std::sync::atomic::Ordering;

use super::estimate::Prompt;
use super::health::Gate;
use super::limits::{Ceilings, Dimension};
use super::pool::{KeyId, Pool};
use super::provider::QuotaExhausted;
use super::store::{AsyncStore, BucketId, Buckets, Cost, Grant, QuotaStore, Reservation, Shortfall, Usage};
use super::strategy::Choice;
use super::time::Timestamp;
use super::{Engine, TokenBasis};

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
    /// Requests it counts as against RPM and RPD: 1, or a batch's N (Gemini counts a
    /// `batchEmbedContents` of N texts as N requests). Its prompt holds all of their text.
    pub requests: u64,
    /// Tokens of its parts that are not text (images, documents, audio, video), as the
    /// provider counts them ([`estimate::media`](crate::estimate::media)); added to the
    /// estimate of its text.
    pub media_tokens: u64,
}

impl<'a> Request<'a> {
    /// A normal-priority request for model index `model` with no output limit.
    pub fn new(model: usize, prompt: Prompt<'a>) -> Self {
        Self { model, prompt, priority: Priority::Normal, max_output_tokens: None, requests: 1, media_tokens: 0 }
    }

    /// The same request as a batch of `n` requests (at least one), admitted all or none.
    pub fn batch(self, n: u64) -> Self {
        Self { requests: n.max(1), ..self }
    }

    /// The same request with `tokens` of parts that are not text.
    pub fn media_tokens(self, tokens: u64) -> Self {
        Self { media_tokens: tokens, ..self }
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
    /// What the store holds for it.
    pub reservation: Reservation,
    /// The one request let through to test a model backing off for want of capacity.
    pub model_probe: bool,
    /// The one request let through to test a key disabled after a rejection.
    pub key_probe: bool,
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
    /// The provider is short of capacity for this model: it backs off pool-wide.
    ProviderBackoff,
}

impl DenyReason {
    fn code(self) -> u64 {
        match self {
            Self::Exhausted(d) => d.index() as u64,
            Self::CoolingDown(d) => 4 + d.index() as u64,
            Self::NoUsableKey => 8,
            Self::StoreUnavailable => 9,
            Self::ProviderBackoff => 10,
        }
    }

    fn from_code(c: u64) -> Self {
        match c {
            0..=3 => Self::Exhausted(Dimension::ALL[c as usize]),
            4..=7 => Self::CoolingDown(Dimension::ALL[c as usize - 4]),
            9 => Self::StoreUnavailable,
            10 => Self::ProviderBackoff,
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
            Self::ProviderBackoff => "provider-backoff".to_owned(),
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
    /// A batch counts more requests than any bucket's per-minute ceiling allows.
    #[error("a batch of {requests} requests exceeds the largest rpm ceiling of the pool ({ceiling})")]
    TooManyRequests {
        /// Requests the batch counts.
        requests: u64,
        /// The largest RPM ceiling.
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
    /// The provider could not serve it for want of capacity (a 503, a timeout): the model
    /// backs off pool-wide, no key is blamed; it stays counted, as [`Outcome::Failed`]. (A 429
    /// with no details is [`Outcome::RateLimited`] of kind capacity, to the same effect.)
    Unavailable,
    /// The provider rejected the key (400 `API_KEY_INVALID`, 403 `PERMISSION_DENIED`): that
    /// key is disabled until a probe; nothing was counted, so everything held returns.
    KeyRejected,
    /// Never sent; everything it held is returned.
    NotSent,
}

/// The candidates of one admission, in the order they are tried: the strategy's proposals,
/// then every other bucket from the turn on.
struct Order {
    proposed: [Option<usize>; 2],
    turn: usize,
    n: usize,
    k: usize,
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.k < 2 + self.n {
            let k = self.k;
            self.k += 1;
            let i = match k {
                0 | 1 => self.proposed[k],
                _ => Some((self.turn + k - 2) % self.n).filter(|i| !self.proposed.contains(&Some(*i))),
            };
            if i.is_some() {
                return i;
            }
        }
        None
    }
}

/// One admission under way, past its prologue: what it asks for, the buckets left to try,
/// and what the scan has found. `P` holds the pool snapshot it runs on.
struct Admission<P> {
    pool: P,
    model: usize,
    p: usize,
    cost: Cost,
    estimated_input: u64,
    reserved_output: u64,
    epoch: u64,
    order: Order,
    earliest: Option<(Shortfall, BucketId)>,
    size_matters: bool,
}

/// The next thing an admission needs.
enum Next {
    /// A store's answer for group `i`: reserve `cost` in `bucket` under `ceilings`.
    Try(usize, BucketId, Ceilings),
    /// Nothing more: the decision.
    Done(Decision),
}

/// What an answer for one bucket means.
enum Answered {
    /// Admitted.
    Granted(Ticket),
    /// The bucket had room but none of its keys may serve now: give back what it reserved
    /// and go on.
    NoKey(Reservation),
    /// Go on with the next bucket.
    Next,
}

impl<S: Buckets> Engine<S> {
    /// The prologue of an admission past the health gate: the estimate, the size checks, the
    /// cached exhaustion, the strategy's order. `refresh` reads a bucket whose view expired.
    fn begin<P: std::ops::Deref<Target = Pool>>(
        &self,
        req: &Request<'_>,
        now: Timestamp,
        pool: P,
        refresh: &dyn Fn(BucketId) -> Option<Usage>,
    ) -> Result<Result<Admission<P>, Decision>, AdmitError> {
        let model = req.model;
        let groups = pool.groups.get(model).ok_or(AdmitError::UnknownModel(model))?;
        if groups.is_empty() {
            return Ok(Err(Decision::Denied(Denial { retry_at: None, reason: DenyReason::NoUsableKey, bucket: None })));
        }
        let estimated_input = self.estimator.estimate(model, &req.prompt).saturating_add(req.media_tokens);
        let reserved_output = match self.config.basis {
            TokenBasis::Input => 0,
            TokenBasis::Total => self.outputs.reserve(model, req.max_output_tokens),
        };
        let tokens = estimated_input.saturating_add(reserved_output);
        let requests = req.requests.max(1);
        let cost = Cost { requests, tokens };
        let p = req.priority.index();
        let [tpm_max, tpd_max] = pool.largest[model][p];
        for (dimension, ceiling) in [(Dimension::Tpm, tpm_max), (Dimension::Tpd, tpd_max)] {
            if tokens > ceiling {
                return Err(AdmitError::TooLarge { tokens, dimension, ceiling });
            }
        }
        if requests > 1 {
            let rpm_max = pool.group_limits[model].iter().map(|l| l.ceilings[p].get(Dimension::Rpm)).max();
            if let Some(ceiling) = rpm_max.filter(|&c| requests > c) {
                return Err(AdmitError::TooManyRequests { requests, ceiling });
            }
        }
        let epoch = self.exhaustion_epoch.load(Ordering::SeqCst);
        let until = self.exhausted[model][p].load(Ordering::Relaxed);
        if now.0 < until {
            let reason = DenyReason::from_code(self.exhausted_reason[model][p].load(Ordering::Relaxed));
            return Ok(Err(Decision::Denied(Denial {
                retry_at: Some(Timestamp(until)),
                reason,
                bucket: Some(BucketId(self.exhausted_bucket[model][p].load(Ordering::Relaxed) as u32)),
            })));
        }
        // Like the random word: a plain load and store, a repeated turn only repeats a choice.
        let turn = self.turn.load(Ordering::Relaxed);
        self.turn.store(turn.wrapping_add(1), Ordering::Relaxed);
        let limits = &pool.group_limits[model];
        let headroom = |i: usize| self.headroom(&limits[i], groups[i].bucket, p, now, refresh);
        let choice = Choice { n: groups.len(), headroom: &headroom, random: self.next_random(), turn };
        let proposed = match &self.custom {
            None => self.config.strategy.propose(&choice),
            Some(s) => s.propose(&Choice { n: choice.n, headroom: &headroom, random: choice.random, turn }),
        };
        let order = Order { proposed, turn, n: groups.len(), k: 0 };
        Ok(Ok(Admission {
            pool,
            model,
            p,
            cost,
            estimated_input,
            reserved_output,
            epoch,
            order,
            earliest: None,
            size_matters: false,
        }))
    }

    /// The next bucket to try, or the denial once every bucket said no.
    fn next_try<P: std::ops::Deref<Target = Pool>>(&self, a: &mut Admission<P>, now: Timestamp) -> Next {
        if let Some(i) = a.order.next() {
            let g = &a.pool.groups[a.model][i];
            return Next::Try(i, g.bucket, a.pool.group_limits[a.model][i].ceilings[a.p]);
        }
        let Some((s, bucket)) = a.earliest.take() else {
            // Every project had room but each key was out on its probe.
            let retry_at = Some(now.plus(self.health.config.backoff_ms));
            return Next::Done(Decision::Denied(Denial { retry_at, reason: DenyReason::NoUsableKey, bucket: None }));
        };
        let reason = if s.cooling { DenyReason::CoolingDown(s.dimension) } else { DenyReason::Exhausted(s.dimension) };
        let (model, p) = (a.model, a.p);
        if let (false, Some(at)) = (a.size_matters, s.retry_at) {
            self.exhausted_reason[model][p].store(reason.code(), Ordering::Relaxed);
            self.exhausted_bucket[model][p].store(u64::from(bucket.0), Ordering::Relaxed);
            self.exhausted[model][p].store(at.0, Ordering::SeqCst);
            // Something was freed (or the pool changed) since this scan began: its finding
            // may be stale, so it is not kept.
            if self.exhaustion_epoch.load(Ordering::SeqCst) != a.epoch {
                self.exhausted[model][p].store(0, Ordering::SeqCst);
            }
        }
        Next::Done(Decision::Denied(Denial { retry_at: s.retry_at, reason, bucket: Some(bucket) }))
    }

    /// What bucket `i`'s answer means: a ticket (with one of its keys), no key of it free, or
    /// its shortfall noted.
    fn answered<P: std::ops::Deref<Target = Pool>>(
        &self,
        a: &mut Admission<P>,
        i: usize,
        answer: Result<Grant, Shortfall>,
        now: Timestamp,
    ) -> Answered {
        let g = &a.pool.groups[a.model][i];
        match answer {
            Ok(Grant { reservation, usage }) => {
                let view = &self.views[g.bucket.0 as usize];
                view.record(&usage, now);
                // Keys in turn, skipping keys disabled after a rejection (a due one carries
                // its one probe).
                let (n, turn) = (g.keys.len(), view.key_turn());
                let id = |k: KeyId| a.pool.keys()[k.0 as usize].id.clone();
                let key = (0..n)
                    .map(|j| g.keys[(turn + j) % n])
                    .find_map(|k| self.health.take_key(k, || id(k), now).map(|probe| (k, probe)));
                match key {
                    Some((key, key_probe)) => Answered::Granted(Ticket {
                        key,
                        bucket: g.bucket,
                        model: a.model,
                        estimated_input: a.estimated_input,
                        reserved_output: a.reserved_output,
                        reservation,
                        model_probe: false,
                        key_probe,
                    }),
                    // No key of the project may serve now: try another project, and cache
                    // no exhaustion (this project had room).
                    None => {
                        a.size_matters = true;
                        Answered::NoKey(reservation)
                    }
                }
            }
            Err(s) => {
                self.note(g.bucket, &s.usage, now);
                a.size_matters |= s.dimension.counts_tokens() && !s.cooling;
                if earlier(&s, a.earliest.as_ref().map(|e| &e.0)) {
                    a.earliest = Some((s, g.bucket));
                }
                Answered::Next
            }
        }
    }

    /// The health gate before an admission: closed (denied), open, or this request probes.
    fn gate(&self, req: &Request<'_>, now: Timestamp) -> Result<bool, Decision> {
        if req.model >= self.health_models() {
            return Ok(false);
        }
        match self.health.gate(req.model, now) {
            Gate::Open => Ok(false),
            Gate::Probe => Ok(true),
            Gate::Closed(at) => {
                let reason = DenyReason::ProviderBackoff;
                Err(Decision::Denied(Denial { retry_at: Some(at), reason, bucket: None }))
            }
        }
    }

    /// After an admission that carried the model's probe: the ticket carries it, or the probe
    /// is released.
    fn after_probe(&self, model: usize, decision: &mut Result<Decision, AdmitError>) {
        match decision {
            Ok(Decision::Admitted(t)) => t.model_probe = true,
            _ => self.health.release_probe(model),
        }
    }

    fn health_models(&self) -> usize {
        self.exhausted.len()
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
}

impl<S: QuotaStore> Engine<S> {
    /// Picks a key for `req` and reserves its quota on every dimension at once, at `now`.
    ///
    /// The sans-IO core: the [`Ticket`] must be settled with [`Engine::settle`]. Services
    /// use [`Engine::try_acquire`] or [`Engine::acquire`], whose permits settle themselves.
    pub fn admit(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        let probe = match self.gate(req, now) {
            Ok(probe) => probe,
            Err(denied) => return Ok(denied),
        };
        let mut decision = self.admit_in(req, now);
        if probe {
            self.after_probe(req.model, &mut decision);
        }
        decision
    }

    /// Admission past the health gate.
    fn admit_in(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        let refresh = |b: BucketId| self.store.usage(b, now).ok();
        let pool = self.pool.load();
        let mut a = match self.begin(req, now, &**pool, &refresh)? {
            Ok(a) => a,
            Err(decision) => return Ok(decision),
        };
        loop {
            let (i, bucket, ceilings) = match self.next_try(&mut a, now) {
                Next::Try(i, b, c) => (i, b, c),
                Next::Done(d) => return Ok(d),
            };
            let Ok(answer) = self.store.reserve(bucket, a.cost, &ceilings, now) else {
                return Ok(self.store_unavailable(bucket));
            };
            match self.answered(&mut a, i, answer, now) {
                Answered::Granted(t) => return Ok(Decision::Admitted(t)),
                Answered::NoKey(r) => {
                    if self.store.refund(bucket, &r, now).is_err() {
                        return Ok(self.store_unavailable(bucket));
                    }
                }
                Answered::Next => {}
            }
        }
    }
}

impl<S: AsyncStore> Engine<S> {
    /// [`Engine::admit`] on a store that may wait on I/O: the same decision, reached without
    /// blocking a thread. Views of buckets are refreshed by every answer, not read ahead.
    pub async fn admit_async(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        let probe = match self.gate(req, now) {
            Ok(probe) => probe,
            Err(denied) => return Ok(denied),
        };
        let mut decision = self.admit_in_async(req, now).await;
        if probe {
            self.after_probe(req.model, &mut decision);
        }
        decision
    }

    async fn admit_in_async(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        let pool = self.pool.load_full();
        let mut a = match self.begin(req, now, &*pool, &|_| None)? {
            Ok(a) => a,
            Err(decision) => return Ok(decision),
        };
        loop {
            let (i, bucket, ceilings) = match self.next_try(&mut a, now) {
                Next::Try(i, b, c) => (i, b, c),
                Next::Done(d) => return Ok(d),
            };
            let Ok(answer) = self.store.reserve_async(bucket, a.cost, &ceilings, now).await else {
                return Ok(self.store_unavailable(bucket));
            };
            match self.answered(&mut a, i, answer, now) {
                Answered::Granted(t) => return Ok(Decision::Admitted(t)),
                Answered::NoKey(r) => {
                    if self.store.refund_async(bucket, &r, now).await.is_err() {
                        return Ok(self.store_unavailable(bucket));
                    }
                }
                Answered::Next => {}
            }
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

//! Settlement: what an answer means for its bucket (reconcile, refund, cool down), for the
//! pool's health and for the limits the pool learns — one plan, carried out by a store that
//! answers at once or by one that is awaited.

use std::sync::atomic::Ordering;

use super::admit::{Outcome, Ticket};
use super::health::HealthEvent;
use super::limits::Dimension;
use super::pool::{PoolEvent, QuotaScope};
use super::provider::{Exhaustion, QuotaExhausted};
use super::store::{AsyncStore, BucketId, Buckets, QuotaStore, Reservation, StoreError};
use super::time::{Timestamp, MINUTE_MS};
use super::{Engine, TokenBasis};

impl<S: Buckets> Engine<S> {
    /// After a settlement's store calls: the pool's health, the freed capacity.
    fn settled(
        &self,
        ticket: &Ticket,
        outcome: Outcome,
        now: Timestamp,
        freed: Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        // After the bucket's own settlement (a cool-down is in place before any pool change
        // serves waiters), and whatever the store said.
        self.note_health(ticket, outcome, now);
        let freed = freed?;
        if freed {
            self.forget_exhaustion(Some(ticket.model));
            #[cfg(feature = "async")]
            self.wake_queues(Some(ticket.model));
        }
        Ok(freed)
    }

    /// What settling `ticket` with `outcome` asks of the store.
    fn settle_plan(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> SettlePlan {
        let b = ticket.bucket;
        let mut plan = SettlePlan { op: None, cool: None, freed: false };
        match (outcome, ticket.reservation) {
            (Outcome::Success { input_tokens, output_tokens }, r) => {
                let counted = match self.config.basis {
                    TokenBasis::Input => input_tokens,
                    TokenBasis::Total => {
                        self.outputs.observe(ticket.model, output_tokens);
                        input_tokens + output_tokens
                    }
                };
                if self.config.reconcile {
                    plan.op = Some(SettleOp::Reconcile(b, r, counted));
                    plan.freed = counted < r.tokens;
                }
            }
            (Outcome::RateLimited(q), r) => {
                plan.op = Some(SettleOp::Refund(b, r));
                plan.freed = true;
                // The provider's capacity, not this bucket's quota: the model's breaker has it.
                if q.kind == Exhaustion::Capacity {
                    return plan;
                }
                let q = match (q.kind, q.retry_after_ms) {
                    // Which quota is not said: a short back-off of the bucket, jittered so that
                    // replicas do not come back in step.
                    (Exhaustion::Unspecified, None) => {
                        let half = self.health.config.unspecified_ms / 2;
                        let jitter = if half == 0 { 0 } else { self.next_random() % (2 * half + 1) };
                        QuotaExhausted { retry_after_ms: Some(half + jitter), ..q }
                    }
                    _ => q,
                };
                let dimension = q.dimension.unwrap_or(Dimension::Rpm);
                let until = if dimension.is_daily() {
                    // The day the request was counted in, which may have ended while the
                    // answer travelled: then the new day's quota is fresh and nothing cools.
                    r.day_ends
                } else {
                    now.plus(q.retry_after_ms.unwrap_or(MINUTE_MS))
                };
                if until > now {
                    plan.cool = Some((b, dimension, until));
                }
            }
            // Sent, and perhaps counted by the provider: the reservation stands.
            (Outcome::Failed | Outcome::Unavailable, _) => {}
            (Outcome::NotSent | Outcome::KeyRejected, r) => {
                plan.op = Some(SettleOp::Refund(b, r));
                plan.freed = true;
            }
        }
        plan
    }

    /// What an answer says about the pool's health: the model's breaker, the key, the limits.
    fn note_health(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) {
        let model = ticket.model;
        let capacity = match outcome {
            Outcome::Unavailable => true,
            Outcome::RateLimited(q) => q.kind == Exhaustion::Capacity,
            _ => false,
        };
        if capacity {
            let jitter = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
            self.health.unavailable(model, now, jitter);
        } else {
            match outcome {
                // The model served (a quota 429 is a served answer too).
                Outcome::Success { .. } | Outcome::RateLimited(_) => self.health.served(model, now),
                // Inconclusive: if this was the model's probe, the next request probes instead.
                _ if ticket.model_probe => self.health.release_probe(model),
                _ => {}
            }
        }
        let key_id = || self.pool.load().keys().get(ticket.key.0 as usize).map(|k| k.id.clone()).unwrap_or_default();
        match outcome {
            Outcome::KeyRejected => self.health.key_rejected(ticket.key, ticket.key_probe, key_id(), now),
            _ if ticket.key_probe => {
                // Answered by the provider without rejecting the key: it serves again. Dropped
                // or failed without an answer: probe again.
                let answered =
                    matches!(outcome, Outcome::Success { .. } | Outcome::RateLimited(_) | Outcome::Unavailable);
                self.health.probe_answered(ticket.key, answered, key_id, now);
            }
            _ => {}
        }
        if let Outcome::RateLimited(q) = outcome {
            self.learn_limit(ticket, &q, now);
        }
    }

    /// A quota 429 that names a limit other than the pool's: the pool follows the provider.
    fn learn_limit(&self, ticket: &Ticket, q: &QuotaExhausted, now: Timestamp) {
        let (Exhaustion::Quota, Some(d), Some(to)) = (q.kind, q.dimension, q.limit) else { return };
        if to == 0 || self.config.scope != QuotaScope::Project {
            return;
        }
        let event = {
            let pool = self.pool.load();
            let (p, m) = pool.bucket_owner(ticket.bucket);
            let (Some(project), Some(model)) = (pool.projects().get(p), pool.models().get(m)) else { return };
            let Some(Some(limits)) = project.limits.get(m) else { return };
            let from = limits.get(d);
            // Only cuts are learned: a higher value (a stale answer, a limit the operator set
            // lower on purpose) never raises the pool's.
            if to >= from {
                return;
            }
            let mut limits = *limits;
            match d {
                Dimension::Rpm => limits.rpm = to,
                Dimension::Tpm => limits.tpm = to,
                Dimension::Rpd => limits.rpd = to,
                Dimension::Tpd => limits.tpd = Some(to),
            }
            (
                PoolEvent::SetLimits { project: project.id.clone(), model: model.name.clone(), limits },
                project.id.clone(),
                model.name.clone(),
                from,
            )
        };
        let (change, project, model, from) = event;
        if self.apply(change).is_ok() {
            self.health.limit_learned(HealthEvent::LimitLearned { at: now, project, model, dimension: d, from, to });
        }
    }

    /// A cool-down is in place: the bucket's view is read again at its next use.
    fn cooled(&self, bucket: BucketId) {
        self.views[bucket.0 as usize].until.store(0, Ordering::Relaxed);
    }
}

/// What a settlement asks of the store.
struct SettlePlan {
    op: Option<SettleOp>,
    /// Cool the bucket down on this dimension until then (after `op`).
    cool: Option<(BucketId, Dimension, Timestamp)>,
    /// Whether it frees capacity, once the store has done it.
    freed: bool,
}

/// One counting call of a settlement.
#[derive(Clone, Copy)]
enum SettleOp {
    Reconcile(BucketId, Reservation, u64),
    Refund(BucketId, Reservation),
}

impl SettleOp {
    fn bucket(self) -> BucketId {
        match self {
            Self::Reconcile(b, ..) | Self::Refund(b, _) => b,
        }
    }
}

impl<S: QuotaStore> Engine<S> {
    /// Reconciles `ticket` with what really happened, at `now`; says whether that freed
    /// capacity (a refund, a count below the reservation), so that a caller with its own
    /// waiters (a simulator) knows to serve them. When the store cannot be reached the error
    /// says so; the reservation then stays as counted (conservative).
    pub fn settle(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Result<bool, StoreError> {
        let plan = self.settle_plan(ticket, outcome, now);
        let freed = (|| {
            if let Some(op) = plan.op {
                let usage = match op {
                    SettleOp::Reconcile(b, r, counted) => self.store.reconcile(b, &r, counted, now)?,
                    SettleOp::Refund(b, r) => self.store.refund(b, &r, now)?,
                };
                self.note(op.bucket(), &usage, now);
            }
            if let Some((b, d, until)) = plan.cool {
                self.store.cool_down(b, d, until, now)?;
                self.cooled(b);
            }
            Ok(plan.freed)
        })();
        self.settled(ticket, outcome, now, freed)
    }
}

impl<S: AsyncStore> Engine<S> {
    /// [`Engine::settle`] on a store that may wait on I/O.
    pub async fn settle_async(&self, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Result<bool, StoreError> {
        let plan = self.settle_plan(ticket, outcome, now);
        let freed = async {
            if let Some(op) = plan.op {
                let usage = match op {
                    SettleOp::Reconcile(b, r, counted) => self.store.reconcile_async(b, &r, counted, now).await?,
                    SettleOp::Refund(b, r) => self.store.refund_async(b, &r, now).await?,
                };
                self.note(op.bucket(), &usage, now);
            }
            if let Some((b, d, until)) = plan.cool {
                self.store.cool_down_async(b, d, until, now).await?;
                self.cooled(b);
            }
            Ok(plan.freed)
        }
        .await;
        self.settled(ticket, outcome, now, freed)
    }
}

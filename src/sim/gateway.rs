//! The gateways a simulated run can put in front of the provider: keysim's engine, or one of
//! the reference gateways people run today, kept here to be compared against
//! (`engine.admission` in a scenario). The engine serves none of them: each reference is the
//! engine's pool, key choice and queue over the simulator's store, with the reference's own
//! way of counting ([`Counting`], carried out by [`SimStore`]) and of settling ([`Gateway`]).
//!
//! - `atomic`: keysim — check and reserve every dimension at once, reconcile at settlement.
//! - `check-then-act`: check usage, count a request only when it completes; concurrent
//!   requests race past the limits.
//! - `none`: count nothing; rotate keys round-robin, knowing no projects.
//! - `rotate-blacklist`: as `none`; a key that fails [`BLACKLIST_AFTER`] times in a row, for
//!   whatever reason, is blacklisted for good.
//! - `cooldown-retrydelay`: as `none`; a key that gets a 429 cools down for its `retryDelay`
//!   (a minute if none), until midnight Pacific on a daily one.

use crate::engine::pool_file::EngineDef;
use crate::engine::{
    next_pacific_midnight, AdmitError, Cost, Decision, Dimension, KeyId, Outcome, PoolEvent, QuotaScope, QuotaStore,
    Request, StoreError, StrategyKind, Ticket, Timestamp, MINUTE_MS,
};

use super::run::SimEngine;

/// Which gateway a run simulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GatewayKind {
    /// keysim's engine.
    #[default]
    Atomic,
    /// The reference mistake many gateways make: check, count at completion.
    CheckThenAct,
    /// Reference: no accounting at all.
    None,
    /// Reference: rotate keys, blacklist a key after consecutive failures.
    RotateBlacklist,
    /// Reference: rotate keys, cool a key down on a 429.
    CooldownRetryDelay,
}

crate::engine::setting!(GatewayKind {
    Atomic => "atomic",
    CheckThenAct => "check-then-act",
    None => "none",
    RotateBlacklist => "rotate-blacklist",
    CooldownRetryDelay => "cooldown-retrydelay",
});

/// Consecutive failures after which `rotate-blacklist` blacklists a key.
pub const BLACKLIST_AFTER: u32 = 3;

/// How a gateway's store counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counting {
    /// Reserve at admission, reconcile or refund at settlement (keysim).
    #[default]
    Reserved,
    /// Check at admission; count what completed, at completion.
    AfterTheFact,
    /// Nothing: only a cool-down stops a key.
    Nothing,
}

impl GatewayKind {
    /// One of the key-rotating references (no accounting, no project awareness, no key
    /// health).
    pub fn rotates(self) -> bool {
        matches!(self, Self::None | Self::RotateBlacklist | Self::CooldownRetryDelay)
    }

    /// How its store counts.
    pub fn counting(self) -> Counting {
        match self {
            Self::Atomic => Counting::Reserved,
            Self::CheckThenAct => Counting::AfterTheFact,
            _ => Counting::Nothing,
        }
    }

    /// The engine settings it runs with: the rotating references know nothing of projects
    /// (a bucket per key) and take keys in turn.
    pub fn engine_def(self, def: &EngineDef) -> EngineDef {
        let mut def = def.clone();
        if self.rotates() {
            def.config.scope = QuotaScope::Key;
            def.config.strategy = StrategyKind::RoundRobin;
        }
        def
    }

    /// The gateway's own state for one engine.
    pub(crate) fn gateway(self) -> Box<dyn Gateway> {
        match self {
            Self::Atomic => Box::new(Keysim),
            Self::CheckThenAct => Box::new(CheckThenAct),
            kind => Box::new(Rotator { kind, strikes: Vec::new(), blacklisted: 0 }),
        }
    }
}

/// Whether a settlement freed capacity, or the store could not be reached.
pub(crate) type Settled = Result<bool, StoreError>;

/// What a gateway does with a request and with its answer.
pub(crate) trait Gateway {
    /// Picks a key for `req` (or says when to come back).
    fn admit(&self, engine: &SimEngine, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {
        engine.admit(req, now)
    }

    /// Takes the answer to `ticket` into account; says whether that freed capacity.
    fn settle(
        &mut self,
        engine: &SimEngine,
        ticket: &Ticket,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Keys it blacklisted after errors.
    fn keys_disabled(&self) -> u64 {
        0
    }
}

/// keysim's engine, as a service runs it.
struct Keysim;

impl Gateway for Keysim {
    fn settle(&mut self, engine: &SimEngine, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Settled {
        engine.settle(ticket, outcome, now)
    }
}

/// Check at admission, count at completion: the engine over a store that counts after the
/// fact ([`Counting::AfterTheFact`]).
struct CheckThenAct;

impl Gateway for CheckThenAct {
    fn settle(&mut self, engine: &SimEngine, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Settled {
        // A failure that may have reached the provider counts at its estimate (the engine
        // keeps a reservation as counted; this store holds none).
        if matches!(outcome, Outcome::Failed | Outcome::Unavailable) {
            let tokens = ticket.estimated_input + ticket.reserved_output;
            engine.store().count(ticket.bucket, Cost::one(tokens), now)?;
        }
        engine.settle(ticket, outcome, now)
    }
}

/// The key-rotating references: nothing counted, nothing learned about the pool's health.
struct Rotator {
    kind: GatewayKind,
    /// `rotate-blacklist`: consecutive failures per key.
    strikes: Vec<u32>,
    blacklisted: u64,
}

impl Gateway for Rotator {
    fn settle(&mut self, engine: &SimEngine, ticket: &Ticket, outcome: Outcome, now: Timestamp) -> Settled {
        match self.kind {
            GatewayKind::CooldownRetryDelay => {
                if let Outcome::RateLimited(q) = outcome {
                    let until = match q.dimension {
                        Some(d) if d.is_daily() => next_pacific_midnight(now),
                        _ => now.plus(q.retry_after_ms.unwrap_or(MINUTE_MS)),
                    };
                    engine.store().cool_down(ticket.bucket, q.dimension.unwrap_or(Dimension::Rpm), until, now)?;
                }
            }
            GatewayKind::RotateBlacklist => {
                let failed = !matches!(outcome, Outcome::Success { .. } | Outcome::NotSent);
                if self.strike(ticket.key, failed) {
                    let id = engine.pool().keys().get(ticket.key.0 as usize).map(|k| k.id.clone());
                    if let Some(id) = id {
                        // Blacklisted for good; a key the pool already lost stays lost.
                        let _ = engine.apply(PoolEvent::Revoke(id));
                    }
                }
            }
            _ => {}
        }
        Ok(false)
    }

    fn keys_disabled(&self) -> u64 {
        self.blacklisted
    }
}

impl Rotator {
    /// Counts a failure (or clears the count): whether `key` reached [`BLACKLIST_AFTER`] just now.
    fn strike(&mut self, key: KeyId, failed: bool) -> bool {
        let k = key.0 as usize;
        if self.strikes.len() <= k {
            self.strikes.resize(k + 1, 0);
        }
        if !failed {
            self.strikes[k] = 0;
            return false;
        }
        self.strikes[k] += 1;
        let reached = self.strikes[k] == BLACKLIST_AFTER;
        self.blacklisted += u64::from(reached);
        reached
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Engine, KeySpec, Limits, ManualClock, MemoryStore, ModelSpec, PoolSpec, ProjectSpec, Prompt};
    use crate::sim::replicas::Place;
    use crate::sim::replicas::SimStore;

    fn engine(kind: GatewayKind, keys: &[&str], rpm: u64) -> SimEngine {
        let limits = Limits { rpm, tpm: 1_000_000, rpd: 1_000, tpd: None };
        let spec = PoolSpec {
            models: vec![ModelSpec { name: "m".into(), limits }],
            projects: vec![ProjectSpec { id: "p".into(), limits: vec![Some(limits)] }],
            keys: keys.iter().map(|k| KeySpec { id: (*k).into(), project: "p".into() }).collect(),
        };
        let mut config = crate::engine::EngineConfig::default();
        if kind.rotates() {
            config.scope = QuotaScope::Key;
        }
        Engine::builder(spec)
            .config(config)
            .clock(Arc::new(ManualClock::new(Timestamp(0))))
            .store(SimStore::new(Place::Alone(MemoryStore::new()), kind.counting()))
            .build()
            .unwrap()
    }

    fn admitted(g: &dyn Gateway, e: &SimEngine, now: u64) -> Option<Ticket> {
        match g.admit(e, &Request::new(0, Prompt::Chars(40)), Timestamp(now)).unwrap() {
            Decision::Admitted(t) => Some(t),
            Decision::Denied(_) => None,
        }
    }

    #[test]
    fn check_then_act_lets_in_flight_requests_race_and_counts_what_completed() {
        let (e, mut g) = (engine(GatewayKind::CheckThenAct, &["k"], 2), GatewayKind::CheckThenAct.gateway());
        let tickets: Vec<_> = (0..3).filter_map(|_| admitted(&*g, &e, 0)).collect();
        assert_eq!(tickets.len(), 3, "nothing is counted until completion");
        for t in &tickets {
            g.settle(&e, t, Outcome::Success { input_tokens: 10, output_tokens: 5 }, Timestamp(1)).unwrap();
        }
        let u = e.usage(tickets[0].bucket, Timestamp(2)).unwrap();
        assert_eq!((u.minute_requests, u.minute_tokens), (3, 30), "counted at completion, past the limit");
        assert!(admitted(&*g, &e, 2).is_none(), "the next check sees them");
    }

    #[test]
    fn atomic_admission_does_not_race() {
        let (e, g) = (engine(GatewayKind::Atomic, &["k"], 2), GatewayKind::Atomic.gateway());
        assert_eq!((0..3).filter(|_| admitted(&*g, &e, 0).is_some()).count(), 2);
    }

    #[test]
    fn rotate_blacklist_revokes_a_key_after_three_failures_in_a_row() {
        let (e, mut g) = (engine(GatewayKind::RotateBlacklist, &["a", "b"], 2), GatewayKind::RotateBlacklist.gateway());
        let mut seen = Vec::new();
        for i in 0..8 {
            let t = admitted(&*g, &e, i).expect("nothing is counted");
            seen.push(t.key);
            let outcome = if t.key == KeyId(0) {
                Outcome::Failed
            } else {
                Outcome::Success { input_tokens: 1, output_tokens: 1 }
            };
            g.settle(&e, &t, outcome, Timestamp(i)).unwrap();
        }
        assert_eq!(g.keys_disabled(), 1);
        assert!(e.pool().keys()[0].revoked);
        assert_eq!(seen.iter().filter(|k| **k == KeyId(0)).count(), 3, "key a served until its third failure");
    }

    #[test]
    fn cooldown_retrydelay_cools_a_key_for_its_retry_delay() {
        let kind = GatewayKind::CooldownRetryDelay;
        let (e, mut g) = (engine(kind, &["a"], 2), kind.gateway());
        let t = admitted(&*g, &e, 0).unwrap();
        let q = crate::engine::QuotaExhausted { retry_after_ms: Some(5_000), ..Default::default() };
        g.settle(&e, &t, Outcome::RateLimited(q), Timestamp(10)).unwrap();
        assert!(admitted(&*g, &e, 20).is_none(), "cooling");
        assert!(admitted(&*g, &e, 5_011).is_some(), "back after its retryDelay");
    }
}

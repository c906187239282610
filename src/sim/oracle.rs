//! The oracle: what the pool could truly have served, for utilisation.
//!
//! An ideal dispatcher that knows the provider's true state and every request's true token
//! count, tries each serving project in turn (first fit, rotating) and may wait as long as the
//! engine may. It sees the same arrivals and pool events as the run, in the same order, and
//! decides with its own judge, so it runs on a thread of its own: the traffic source hands it
//! arrivals in batches, and the run collects the count at the end. Deterministic all the
//! same — its input order is fixed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::thread::{Scope, ScopedJoinHandle};

use mock_server::{Judge, Verdict};

use super::pipe::{pipe, BatchReceiver, BatchSender};
use super::run::{build_engine, build_judge};
use super::SimError;
use crate::engine::{Engine, KeySpec, PoolEvent};
use crate::scenario::Scenario;

/// One request as the oracle sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offer {
    /// Arrival, ms since the epoch.
    pub(crate) at: u64,
    /// Model index.
    pub(crate) model: u32,
    /// True input tokens.
    pub(crate) tokens: u64,
    /// Latest time it may be served.
    pub(crate) deadline: u64,
}

/// Starts the oracle on a thread of `scope`: arrivals go into the sender, in arrival order;
/// the thread returns how many requests it served.
pub(crate) fn spawn<'scope>(
    scope: &'scope Scope<'scope, '_>,
    sc: &'scope Scenario,
) -> (BatchSender<Offer>, ScopedJoinHandle<'scope, Result<u64, SimError>>) {
    let (tx, rx) = pipe::<Offer>(4096);
    let thread = std::thread::Builder::new()
        .name("keysim-oracle".into())
        .spawn_scoped(scope, move || Oracle::new(sc)?.run(sc, rx))
        .expect("spawning the oracle thread");
    (tx, thread)
}

struct Oracle {
    judge: Judge,
    pool: Engine,
    next_event: usize,
    retries: BinaryHeap<Reverse<(u64, u64, Offer)>>,
    seq: u64,
    turn: usize,
    servable: u64,
}

impl PartialEq for Offer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.model, self.tokens, self.deadline) == (other.at, other.model, other.tokens, other.deadline)
    }
}
impl Eq for Offer {}
impl PartialOrd for Offer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Offer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.model, self.tokens, self.deadline).cmp(&(other.at, other.model, other.tokens, other.deadline))
    }
}

impl Oracle {
    fn new(sc: &Scenario) -> Result<Self, SimError> {
        Ok(Self {
            judge: build_judge(sc),
            pool: build_engine(sc)?,
            next_event: 0,
            retries: BinaryHeap::new(),
            seq: 0,
            turn: 0,
            servable: 0,
        })
    }

    fn run(mut self, sc: &Scenario, mut rx: BatchReceiver<Offer>) -> Result<u64, SimError> {
        while let Some(o) = rx.next() {
            self.advance_to(sc, o.at)?;
            self.try_offer(o, o.at);
        }
        self.advance_to(sc, u64::MAX)?;
        Ok(self.servable)
    }

    /// Processes pool events and retries up to and including `t`, in time order (pool events
    /// first among equals, as the run schedules them first).
    fn advance_to(&mut self, sc: &Scenario, t: u64) -> Result<(), SimError> {
        loop {
            let pool_at = sc.events.get(self.next_event).map(|e| sc.start.0 + e.at_ms);
            let retry_at = self.retries.peek().map(|r| r.0 .0);
            match (pool_at, retry_at) {
                (Some(p), r) if p <= t && r.is_none_or(|r| p <= r) => {
                    let event = sc.events[self.next_event].event.clone();
                    self.next_event += 1;
                    match &event {
                        PoolEvent::Add(KeySpec { id, project }) => {
                            let p = sc.projects.iter().position(|x| &x.id == project).expect("validated project");
                            self.judge.issue_key(id, p);
                        }
                        PoolEvent::Revoke(id) => self.judge.delete_key(id),
                        _ => {}
                    }
                    self.pool.apply(event)?;
                }
                (_, Some(r)) if r <= t => {
                    let Reverse((now, _, o)) = self.retries.pop().expect("peeked");
                    self.try_offer(o, now);
                }
                _ => return Ok(()),
            }
        }
    }

    fn try_offer(&mut self, o: Offer, now: u64) {
        let model = o.model as usize;
        let n = self.pool.serving_projects(model).len();
        let mut wait = u64::MAX;
        for j in 0..n {
            let p = self.pool.serving_projects(model).nth((self.turn + j) % n).expect("j < n");
            match self.judge.submit(p, model, o.tokens, now) {
                Verdict::Accepted => {
                    self.turn = self.turn.wrapping_add(1);
                    self.servable += 1;
                    return;
                }
                Verdict::Exhausted { retry_after_ms, .. } => wait = wait.min(retry_after_ms.max(1)),
            }
        }
        if n > 0 && now.saturating_add(wait) <= o.deadline {
            self.retries.push(Reverse((now + wait, self.seq, o)));
            self.seq += 1;
        }
    }
}

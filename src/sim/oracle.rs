//! The oracle: what the pool could truly have served, for utilisation.
//!
//! An ideal dispatcher that knows the provider's true state and every request's true token
//! count, tries each serving project in turn (first fit, rotating) and may wait as long as the
//! engine may. Waiting requests queue per model in arrival order (their deadlines' order) and
//! are served from the head when the provider next has room, one wake-up per model, so an
//! overloaded run costs what an uncongested one does. It sees the same arrivals and pool events as the run, in the same order, and
//! decides with its own judge, so it runs on a thread of its own: the traffic source hands it
//! arrivals in batches, and the run collects the count at the end. Deterministic all the
//! same — its input order is fixed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::thread::{Scope, ScopedJoinHandle};

use mock_server::{Judge, Verdict};

use super::pipe::{pipe, BatchReceiver, BatchSender};
use super::SimError;
use crate::engine::{Engine, KeySpec, PoolEvent};
use crate::scenario::build;
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
    let (tx, rx) = pipe::<Offer>(super::pipe::BATCH);
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
    /// Per model: offers waiting in arrival order, and when the head is tried next.
    waiting: Vec<(VecDeque<Offer>, Option<u64>)>,
    /// Wake-ups of the models' queues (stale ones are skipped).
    timers: BinaryHeap<Reverse<(u64, u32)>>,
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
            judge: build::judge(sc),
            pool: build::sim_engine(sc)?,
            next_event: 0,
            waiting: sc.models.iter().map(|_| (VecDeque::new(), None)).collect(),
            timers: BinaryHeap::new(),
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
            let retry_at = self.timers.peek().map(|r| r.0 .0);
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
                    let Reverse((now, model)) = self.timers.pop().expect("peeked");
                    if self.waiting[model as usize].1 == Some(now) {
                        self.serve(model as usize, now);
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// A new offer: behind the model's waiters, or tried at once.
    fn try_offer(&mut self, o: Offer, now: u64) {
        let model = o.model as usize;
        let (queue, wake) = &mut self.waiting[model];
        if !queue.is_empty() {
            if wake.is_some_and(|w| w <= o.deadline) {
                queue.push_back(o);
            }
            return;
        }
        if let Err(Some(wait)) = self.attempt(&o, now) {
            if now.saturating_add(wait) <= o.deadline {
                self.waiting[model].0.push_back(o);
                self.wake(model, now + wait);
            }
        }
    }

    /// Serves the model's waiters from the head at `now`, until the provider has no room.
    fn serve(&mut self, model: usize, now: u64) {
        self.waiting[model].1 = None;
        while let Some(o) = self.waiting[model].0.front().copied() {
            match self.attempt(&o, now) {
                Ok(()) | Err(None) => {
                    self.waiting[model].0.pop_front();
                }
                Err(Some(wait)) => {
                    let next = now + wait;
                    let queue = &mut self.waiting[model].0;
                    // Whoever must be served before the next chance cannot be.
                    while queue.front().is_some_and(|o| o.deadline < next) {
                        queue.pop_front();
                    }
                    if !queue.is_empty() {
                        self.wake(model, next);
                    }
                    return;
                }
            }
        }
    }

    fn wake(&mut self, model: usize, at: u64) {
        self.waiting[model].1 = Some(at);
        self.timers.push(Reverse((at, model as u32)));
    }

    /// Tries `o` on each serving project in turn; `Err` with how long until one has room
    /// (`None`: no project serves the model).
    fn attempt(&mut self, o: &Offer, now: u64) -> Result<(), Option<u64>> {
        let model = o.model as usize;
        let pool = self.pool.pool();
        let n = pool.serving_projects(model).len();
        let mut wait = u64::MAX;
        for j in 0..n {
            let p = pool.serving_projects(model).nth((self.turn + j) % n).expect("j < n");
            match self.judge.submit(p, model, o.tokens, now) {
                Verdict::Accepted => {
                    self.turn = self.turn.wrapping_add(1);
                    self.servable += 1;
                    return Ok(());
                }
                Verdict::Exhausted { retry_after_ms, .. } => wait = wait.min(retry_after_ms.max(1)),
            }
        }
        Err((n > 0).then_some(wait))
    }
}

//! One simulated run: the event loop and its handlers.

use std::io::Write;

use rand::Rng;

use mock_server::body::{capacity_exhausted, quota_exceeded_as};
use mock_server::script::StormKind;
use mock_server::{Fault, Judge, KeyState as JudgeKey, Verdict};

use super::gateway::Gateway;
use super::ledger::{Done, Entry, Ledger, Reason, MAX_SHADOWS, NO_SHADOW};
use super::observe::{Interval, Observers, TIMELINE_HEADER, TRACE_BUDGET};
use super::pipe::BatchReceiver;
use super::queue::EventQueue;
use super::replicas::{engines, Replicas, SimStore};
use super::traffic::{NewRequest, Traffic};
use crate::engine::fair::{FairQueue, Served};
use crate::engine::warn::Warner;
use crate::engine::Estimator;
use crate::engine::{
    parse_quota_error, step, AdmitError, ConfigError, Decision, DenyReason, Engine, KeySpec, Outcome, PoolEvent,
    Prompt, QueuePolicy, QuotaExhausted, Request, Step, Ticket, Timestamp, UsageMetadata,
};
use crate::report::score::Scorer;
use crate::report::trace::Trace;
use crate::report::{stopwatch, Aggregate, Terminal};
use crate::scenario::build;
use crate::scenario::{ReplicaMode, Scenario};

/// A simulated engine: over its own store, or one replica's view of a shared one.
pub type SimEngine = Engine<SimStore>;

/// Where a run streams its CSV files (either may be absent).
#[derive(Default)]
pub struct Outputs<'w> {
    /// `timeline.csv`.
    pub timeline: Option<&'w mut (dyn Write + Send)>,
    /// `requests.csv` (written on a thread of its own, hence `Send`).
    pub requests: Option<&'w mut (dyn Write + Send)>,
    /// Where warning notifications go (when the scenario has `[warnings]`).
    pub notifications: Option<&'w mut dyn crate::notify::Sink>,
    /// Told the simulated milliseconds done at every timeline tick (a progress bar).
    pub progress: Option<&'w dyn Fn(u64)>,
    /// Whether to keep the run's [`Trace`] for plots.
    pub trace: bool,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario's engine does not hold together (validation should have caught it).
    #[error("the engine: {0}")]
    Config(#[from] ConfigError),
    /// A helper thread of the run (traffic, ledger, oracle) failed.
    #[error("{0}")]
    Helper(String),
    /// Writing a CSV file failed.
    #[error("writing {what}: {source}")]
    Write {
        /// Which file.
        what: &'static str,
        /// The error.
        source: csv::Error,
    },
}

/// What a run produced, besides the CSV files.
pub struct RunResult {
    /// Every count and histogram.
    pub aggregate: Aggregate,
    /// The engine as it ended (pool state, capacity); with replicas, the first.
    pub engine: SimEngine,
    /// Simulated events processed.
    pub events: u64,
    /// The run over time, when [`Outputs::trace`] asked for it.
    pub trace: Option<Trace>,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    /// The fair queue of a model is due.
    Wake(u32),
    Complete(u32),
    Pool(u32),
    Tick,
    Warn,
    /// A request's admission after its round trip to a shared store.
    Admit(u32),
    /// The shared store goes down (`true`) or comes back.
    Store(bool),
    /// Replicas sync their counts or renew their leases.
    Sync,
    /// The provider does something on its own.
    Provider(u32),
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    Nothing,
    Success,
    RateLimited(QuotaExhausted),
    Failed(&'static str),
}

#[derive(Clone, Copy, Debug)]
struct Req {
    id: u64,
    class: u32,
    arrival: u64,
    input: u64,
    output: u64,
    chars: u64,
    /// Index of the prompt in the class's corpus, if it sends real text.
    text: Option<u32>,
    latency_ms: u64,
    fault: Option<Fault>,
    ticket: Option<Ticket>,
    sent_at: u64,
    pending: Pending,
    delayed: bool,
    /// The replica it goes through.
    replica: u32,
    /// Its round trip to the store passed the deadline: admission fails closed.
    timed_out: bool,
}

struct Sim<'s, 'w, 'scope> {
    sc: &'s Scenario,
    /// What decides: the engine, the judge, the fair queues.
    world: World,
    /// Requests in flight, by slot.
    slab: Slab,
    /// What watches: counting, timelines, traces, warnings.
    obs: Observers<'w, 'scope>,
    traffic: BatchReceiver<NewRequest>,
    /// The next request of the traffic, not yet arrived.
    next_arrival: Option<NewRequest>,
    queue: EventQueue<Ev>,
    events: u64,
}

/// What decides a request's fate: the engine, the provider's judge, the engine's fair queues.
struct World {
    /// One engine, or one per replica (requests go to them in turn).
    engines: Vec<SimEngine>,
    /// Per engine: keysim's way of admitting and settling, or a reference gateway's.
    gateways: Vec<Box<dyn Gateway>>,
    /// How the replicas share quota, if there are several.
    replicas: Option<Replicas>,
    judge: Judge,
    /// The judge's view of each engine key (by engine key index), kept in step with pool
    /// events so that sending needs no lookup by name.
    key_states: Vec<JudgeKey>,
    /// Per model: the fair wait queue, and the instant its wake-up is scheduled for.
    waiting: Vec<(FairQueue<u32>, Option<Timestamp>)>,
    policy: QueuePolicy,
    /// Whether the engine's estimator learns from settled requests.
    learns: bool,
}

impl World {
    /// The first engine: the pool, capacity and warnings are read from it.
    fn engine(&self) -> &SimEngine {
        &self.engines[0]
    }
}

/// Requests in flight, in reusable slots: memory follows what is in flight, not the run.
#[derive(Default)]
struct Slab {
    reqs: Vec<Req>,
    free: Vec<u32>,
    next_id: u64,
}

/// What an ideal dispatcher could have served of the scenario's traffic (the oracle alone,
/// without the engine): the denominator of utilisation for runs that are not simulated.
pub fn servable(sc: &Scenario) -> Result<u64, SimError> {
    std::thread::scope(|scope| {
        let (to_oracle, oracle) = super::oracle::spawn(scope, sc);
        let (mut traffic, producer) = Traffic::new(sc).spawn(scope, to_oracle);
        while traffic.next().is_some() {}
        drop(traffic);
        producer.join().map_err(|_| SimError::Helper("the traffic thread panicked".into()))?;
        oracle.join().map_err(|_| SimError::Helper("the oracle thread panicked".into()))?
    })
}

/// Runs `sc` to the end: every request that arrives before `duration` ends in exactly one
/// terminal state, even if that takes longer than `duration`.
///
/// The run's decisions happen on the calling thread; the traffic source, the ledger and the
/// oracle work beside it on threads of their own, each fed in a fixed order, so the outcome
/// is the same on any machine.
pub fn simulate(sc: &Scenario, out: Outputs<'_>) -> Result<RunResult, SimError> {
    let (engines, replicas) = engines(sc)?;
    let judge = build::judge(sc);
    let Outputs { timeline, requests, notifications, progress, trace } = out;
    let models: Vec<String> = sc.models.iter().map(|m| m.name.clone()).collect();
    let timeline = match timeline {
        Some(w) => {
            let mut w = csv::Writer::from_writer(w);
            w.write_record(TIMELINE_HEADER).map_err(|source| SimError::Write { what: "timeline.csv", source })?;
            Some(w)
        }
        None => None,
    };
    std::thread::scope(|scope| {
        let (to_oracle, oracle) = super::oracle::spawn(scope, sc);
        let (traffic, producer) = Traffic::new(sc).spawn(scope, to_oracle);
        let mut sim = Sim {
            sc,
            world: World {
                learns: engines[0].learns(),
                gateways: engines.iter().map(|_| sc.gateway.gateway()).collect(),
                engines,
                replicas,
                judge,
                key_states: Vec::new(),
                waiting: sc.models.iter().map(|_| (FairQueue::new(), None)).collect(),
                policy: sc.engine.policy(),
            },
            slab: Slab::default(),
            obs: Observers {
                ledger: Ledger::spawn(scope, sc, requests),
                agg: Aggregate::default(),
                intervals: vec![Interval::default(); sc.projects.len() * sc.models.len()],
                timeline,
                shadows: sc.engine.shadow_estimators.iter().map(|k| build::build_estimator(sc, *k)).collect(),
                warner: sc.warnings.as_ref().map(|w| Warner::new(w.config.clone())),
                scorer: Scorer::new(&models),
                trace: trace.then(|| {
                    let projects = sc.projects.iter().map(|p| p.id.clone()).collect();
                    Trace::new(projects, models.clone(), TRACE_BUDGET, sc.timeline_ms)
                }),
                notifications,
                progress,
                interval_from: 0,
            },
            traffic,
            next_arrival: None,
            queue: EventQueue::default(),
            events: 0,
        };
        sim.sync_keys();
        let ran = sim.run();
        let Sim { traffic, world, obs, events, .. } = sim;
        let Observers { ledger, agg: timing, mut timeline, warner, scorer, trace, .. } = obs;
        let World { engines, gateways, .. } = world;
        let engine = engines.into_iter().next().expect("at least one engine");
        // Close every channel before waiting, so that no helper waits on a run that ended.
        drop(traffic);
        let counted = ledger.finish();
        producer.join().map_err(|_| SimError::Helper("the traffic thread panicked".into()))?;
        let servable = oracle.join().map_err(|_| SimError::Helper("the oracle thread panicked".into()))?;
        ran?;
        if let Some(w) = timeline.as_mut() {
            w.flush().map_err(|e| SimError::Write { what: "timeline.csv", source: e.into() })?;
        }
        let mut aggregate = counted?;
        aggregate.servable = Some(servable?);
        aggregate.admit_ns = timing.admit_ns;
        aggregate.settle_ns = timing.settle_ns;
        aggregate.delayed = timing.delayed;
        aggregate.lost_capacity = timing.lost_capacity;
        aggregate.blacklisted = gateways.iter().map(|g| g.keys_disabled()).sum();
        let score = scorer.finish(Timestamp(sc.start.0 + sc.duration_ms));
        aggregate.warnings = warner.map(|_| score);
        let trace = trace.map(|mut t| {
            t.health_events(&engine.health().events, sc.start);
            t
        });
        Ok(RunResult { aggregate, engine, events, trace })
    })
}

/// One settlement in this many is timed on the real clock.
const SETTLE_SAMPLE: u64 = 8;

impl Sim<'_, '_, '_> {
    fn abs(&self, offset: u64) -> u64 {
        self.sc.start.0 + offset
    }

    fn run(&mut self) -> Result<(), SimError> {
        self.next_arrival = self.traffic.next();
        for (i, e) in self.sc.events.iter().enumerate() {
            self.queue.push(self.abs(e.at_ms), Ev::Pool(i as u32));
        }
        for (i, e) in self.sc.provider.script.events.iter().enumerate() {
            self.queue.push(self.abs(e.at_ms), Ev::Provider(i as u32));
        }
        self.queue.push(self.abs(self.sc.timeline_ms.min(self.sc.duration_ms)), Ev::Tick);
        if let Some(w) = &self.obs.warner {
            self.queue.push(self.abs(w.config().evaluate_every_ms.min(self.sc.duration_ms)), Ev::Warn);
        }
        if let Some(rep) = &self.world.replicas {
            for o in &rep.def.outages {
                self.queue.push(self.abs(o.at_ms), Ev::Store(true));
                self.queue.push(self.abs(o.at_ms.saturating_add(o.for_ms)), Ev::Store(false));
            }
            if matches!(rep.def.mode, ReplicaMode::Cached | ReplicaMode::Leased) {
                self.queue.push(self.abs(rep.def.interval_ms), Ev::Sync);
            }
        }
        loop {
            // Arrivals come straight from the traffic; events due at the same instant go first.
            let due = self.next_arrival.map_or(u64::MAX, |n| self.abs(n.at));
            let Some((now, ev)) = self.queue.pop_until(due) else {
                let Some(n) = self.next_arrival.take() else { return Ok(()) };
                self.next_arrival = self.traffic.next();
                self.events += 1;
                self.arrive(n)?;
                continue;
            };
            self.events += 1;
            match ev {
                Ev::Wake(m) => self.wake(m as usize, now),
                Ev::Complete(r) => self.complete(r, now)?,
                Ev::Pool(i) => self.pool_event(i as usize, now)?,
                Ev::Tick => self.tick(now)?,
                Ev::Warn => self.warn(now)?,
                Ev::Admit(r) => self.reach_engine(r, now),
                Ev::Store(down) => self.store_event(down, now),
                Ev::Sync => self.sync(now),
                Ev::Provider(i) => {
                    self.sc.provider.script.events[i as usize].event.apply(&mut self.world.judge);
                    self.sync_keys();
                }
            }
        }
    }

    fn new_req(&mut self, n: NewRequest) -> u32 {
        let c = &self.sc.traffic[n.class as usize];
        let req = Req {
            id: 0,
            class: n.class,
            arrival: self.abs(n.at),
            input: n.input,
            output: n.output,
            chars: (n.input as f64 * c.chars_per_token + 0.5) as u64,
            text: n.text,
            latency_ms: n.latency_ms,
            fault: n.fault,
            ticket: None,
            sent_at: 0,
            pending: Pending::Nothing,
            delayed: false,
            replica: 0,
            timed_out: false,
        };
        match self.slab.free.pop() {
            Some(i) => {
                self.slab.reqs[i as usize] = req;
                i
            }
            None => {
                self.slab.reqs.push(req);
                (self.slab.reqs.len() - 1) as u32
            }
        }
    }

    fn arrive(&mut self, n: NewRequest) -> Result<(), SimError> {
        let r = self.new_req(n);
        let id = self.slab.next_id;
        self.slab.reqs[r as usize].id = id;
        self.slab.next_id += 1;
        let now = self.abs(n.at);
        if let Some(rep) = &mut self.world.replicas {
            let def = &rep.def;
            self.slab.reqs[r as usize].replica = (id % u64::from(def.count)) as u32;
            if def.mode == ReplicaMode::Strict {
                // One round trip to the shared store before the engine can answer.
                let offset = now - self.sc.start.0;
                let rtt = match def.slowdowns.iter().find(|s| s.covers(offset)) {
                    Some(slow) => slow.latency_ms,
                    None if def.jitter_ms > 0 => {
                        def.latency_ms - def.jitter_ms + rep.rng.random_range(0..=2 * def.jitter_ms)
                    }
                    None => def.latency_ms,
                };
                if rtt > 0 {
                    self.slab.reqs[r as usize].timed_out = rtt > def.deadline_ms;
                    self.queue.push(now + rtt.min(def.deadline_ms), Ev::Admit(r));
                    return Ok(());
                }
            }
        }
        self.reach_engine(r, now);
        Ok(())
    }

    /// Request `r` reaches its engine at `now`: sent, queued or denied.
    fn reach_engine(&mut self, r: u32, now: u64) {
        let req = self.slab.reqs[r as usize];
        let c = &self.sc.traffic[req.class as usize];
        let (model, priority) = (c.model, c.priority);
        // The warner watches the first engine: the whole pool's demand counts there.
        self.world.engines[0].note_arrival(model, Timestamp(now));
        let deadline = self.world.policy.deadline(Timestamp(req.arrival));
        let retry = if self.world.waiting[model].0.must_queue(priority) {
            None
        } else {
            let decision = self.admit(r, now);
            let bucket = match &decision {
                Ok(Decision::Denied(d)) => d.bucket,
                _ => None,
            };
            match step(decision, deadline, Timestamp(now)) {
                Step::Send(ticket) => {
                    self.send(r, ticket, now);
                    return;
                }
                Step::WaitUntil(at, why) => Some((at, why)),
                Step::GiveUp(reason) => {
                    self.lost_capacity(r, now);
                    let project = bucket.map(|b| self.world.engine().bucket_owner(b).0);
                    let waited = now - req.arrival;
                    self.finish(r, now, Terminal::Denied, project, Reason::GaveUp(reason), waited, (NO_SHADOW, 0));
                    return;
                }
            }
        };
        self.lost_capacity(r, now);
        self.slab.reqs[r as usize].delayed = true;
        self.obs.agg.delayed += 1;
        match self.world.waiting[model].0.push(r, priority, deadline, retry) {
            Ok(_) => self.schedule_wake(model),
            Err((r, reason)) => {
                self.finish(r, now, Terminal::Denied, None, Reason::GaveUp(reason), now - req.arrival, (NO_SHADOW, 0));
            }
        }
    }

    /// The shared store goes down or comes back.
    fn store_event(&mut self, down: bool, now: u64) {
        let Some(rep) = &mut self.world.replicas else { return };
        rep.outages = if down { rep.outages + 1 } else { rep.outages.saturating_sub(1) };
        rep.with.set_down(rep.outages > 0);
        if !down {
            self.serve_all(now);
        }
    }

    /// Replicas sync their counts (cached) or renew their leases (leased); waiters may fit.
    fn sync(&mut self, now: u64) {
        let Some(rep) = &self.world.replicas else { return };
        let pool = self.world.engine().pool();
        let buckets: Vec<_> = (0..pool.models().len())
            .flat_map(|m| pool.groups(m).iter().map(|g| (g.bucket, *pool.ceilings(g.bucket))))
            .collect();
        let next = now + rep.def.interval_ms;
        rep.with.sync(&rep.own, &buckets, now, next);
        let max_wait = match self.world.policy {
            QueuePolicy::Wait { max_wait_ms } => max_wait_ms,
            QueuePolicy::Reject => 0,
        };
        if next <= self.abs(self.sc.duration_ms) + max_wait {
            self.queue.push(next, Ev::Sync);
        }
        self.serve_all(now);
    }

    /// Serves every model's waiters now.
    fn serve_all(&mut self, now: u64) {
        for model in 0..self.world.waiting.len() {
            if !self.world.waiting[model].0.is_empty() {
                self.dispatch(model, now);
            }
        }
    }

    /// Asks the engine about request `r` at `now`, timing the call; a denial is scored.
    fn admit(&mut self, r: u32, now: u64) -> Result<Decision, AdmitError> {
        let req = self.slab.reqs[r as usize];
        let c = &self.sc.traffic[req.class as usize];
        let prompt = match (req.text, &c.corpus) {
            (Some(i), Some(corpus)) => Prompt::Text(&corpus.texts[i as usize].text),
            _ => Prompt::Chars(req.chars),
        };
        let request = Request::new(c.model, prompt).priority(c.priority).max_output_tokens(c.max_output_tokens);
        // A round trip past the deadline: this call finds the store unreachable.
        let timed_out = std::mem::take(&mut self.slab.reqs[r as usize].timed_out);
        if let (true, Some(rep)) = (timed_out, &self.world.replicas) {
            rep.with.set_down(true);
        }
        let started = stopwatch::start();
        let replica = req.replica as usize;
        let decision = self.world.gateways[replica].admit(&self.world.engines[replica], &request, Timestamp(now));
        if let (true, Some(rep)) = (timed_out, &self.world.replicas) {
            rep.with.set_down(rep.outages > 0);
        }
        self.obs.agg.admit_ns.saturating_record(stopwatch::elapsed_ns(started));
        if let Ok(Decision::Denied(d)) = &decision {
            if let DenyReason::Exhausted(dim) | DenyReason::CoolingDown(dim) = d.reason {
                self.exhausted(c.model, dim, now);
            }
        }
        decision
    }

    /// Counts `r` as lost capacity if the provider would have taken it now.
    fn lost_capacity(&mut self, r: u32, now: u64) {
        let model = self.sc.traffic[self.slab.reqs[r as usize].class as usize].model;
        if self.provider_would_accept(model, self.judged(r), now) {
            self.obs.agg.lost_capacity += 1;
        }
    }

    /// Schedules the wake-up of `model`'s queue, unless it is scheduled for that instant.
    fn schedule_wake(&mut self, model: usize) {
        let (q, scheduled) = &mut self.world.waiting[model];
        if let Some(at) = q.wake_at() {
            if *scheduled != Some(at) {
                *scheduled = Some(at);
                self.queue.push(at.0, Ev::Wake(model as u32));
            }
        }
    }

    /// The queue of `model` is due (or capacity freed): serve its waiters in order.
    fn wake(&mut self, model: usize, now: u64) {
        if self.world.waiting[model].1 != Some(Timestamp(now)) {
            return; // superseded by an earlier wake-up
        }
        self.world.waiting[model].1 = None;
        self.dispatch(model, now);
    }

    fn dispatch(&mut self, model: usize, now: u64) {
        let mut queue = std::mem::take(&mut self.world.waiting[model].0);
        let mut served = Vec::new();
        queue.dispatch(Timestamp(now), |&r, _| self.admit(r, now), |s| served.push(s));
        self.world.waiting[model].0 = queue;
        for s in served {
            match s {
                Served::Granted(r, ticket) => self.send(r, ticket, now),
                Served::GaveUp(r, reason) => {
                    let waited = now - self.slab.reqs[r as usize].arrival;
                    self.finish(r, now, Terminal::Denied, None, Reason::GaveUp(reason), waited, (NO_SHADOW, 0));
                }
            }
        }
        self.schedule_wake(model);
    }

    /// Whether any project that can serve `model` would accept `tokens` now.
    fn provider_would_accept(&mut self, model: usize, tokens: u64, now: u64) -> bool {
        let judge = &mut self.world.judge;
        self.world.engines[0]
            .pool()
            .serving_projects(model)
            .any(|p| judge.peek(p, model, tokens, now) == Verdict::Accepted)
    }

    /// The tokens of request `r` the provider counts against token limits.
    fn judged(&self, r: u32) -> u64 {
        let req = &self.slab.reqs[r as usize];
        super::traffic::Counting::of(self.sc).judged(req.input, req.output)
    }

    fn send(&mut self, r: u32, ticket: Ticket, now: u64) {
        let id = self.slab.reqs[r as usize].id;
        let storm = self.sc.provider.script.storm(id, self.sc.seed, now - self.sc.start.0).copied();
        let req = &mut self.slab.reqs[r as usize];
        req.ticket = Some(ticket);
        req.sent_at = now;
        let latency_ms = req.latency_ms;
        let latency = self.sc.provider.latency;
        let (pending, delay) = match self.world.key_states[ticket.key.0 as usize] {
            JudgeKey::Invalid => (Pending::Failed("api-key-invalid"), latency.error_ms()),
            JudgeKey::Suspended => (Pending::Failed("permission-denied"), latency.error_ms()),
            JudgeKey::Valid(project) => match req.fault {
                Some(Fault::Internal) => (Pending::Failed("internal"), latency.error_ms()),
                Some(Fault::Overloaded) => (Pending::Failed("overloaded"), latency.error_ms()),
                // A spell of failures: refused (or left unanswered) before any quota is
                // looked at.
                None if storm.is_some() => {
                    let s = storm.expect("in a storm");
                    let after = if s.kind == StormKind::Timeout { s.timeout_ms } else { latency.error_ms() };
                    (Pending::Failed(s.kind.name()), after)
                }
                None => {
                    let tokens = self.judged(r);
                    match self.world.judge.submit(project, ticket.model, tokens, now) {
                        Verdict::Accepted => {
                            let u = self.world.judge.counted(project, ticket.model);
                            let iv = &mut self.obs.intervals[project * self.sc.models.len() + ticket.model];
                            iv.requests += 1;
                            iv.tokens += tokens;
                            iv.rpm_peak = iv.rpm_peak.max(u.minute_requests);
                            iv.tpm_peak = iv.tpm_peak.max(u.minute_tokens);
                            (Pending::Success, latency_ms)
                        }
                        Verdict::Exhausted { violations, retry_after_ms } => {
                            let tier = self.world.judge.config().projects[project].tier;
                            let model = &self.sc.models[ticket.model].name;
                            let shape = self.sc.provider.script.quota_body;
                            let number = 1_000 + project as u64;
                            let answer = quota_exceeded_as(shape, &violations, tier, model, retry_after_ms, number);
                            // The engine reads the body as it would off the wire.
                            let q = parse_quota_error(&answer.body.to_string());
                            if let Some(dim) = q.dimension {
                                self.exhausted(ticket.model, dim, now);
                            }
                            self.obs.intervals[project * self.sc.models.len() + ticket.model].breaches += 1;
                            (Pending::RateLimited(q), latency.error_ms())
                        }
                    }
                }
            },
        };
        self.slab.reqs[r as usize].pending = pending;
        self.queue.push(now + delay, Ev::Complete(r));
    }

    fn complete(&mut self, r: u32, now: u64) -> Result<(), SimError> {
        let req = self.slab.reqs[r as usize];
        let ticket = req.ticket.expect("completed requests were sent");
        let (mut shadow, mut cold) = (NO_SHADOW, 0u8);
        if matches!(req.pending, Pending::Success) && (self.world.learns || !self.obs.shadows.is_empty()) {
            let c = &self.sc.traffic[req.class as usize];
            let prompt = match (req.text, &c.corpus) {
                (Some(i), Some(corpus)) => Prompt::Text(&corpus.texts[i as usize].text),
                _ => Prompt::Chars(req.chars),
            };
            if self.world.learns {
                let engine = &self.world.engines[req.replica as usize];
                cold |= u8::from(!engine.estimator().warmed_up(ticket.model, &prompt));
                engine.learn(ticket.model, &prompt, req.input);
            }
            // Shadows estimate at settlement, then learn: each estimate comes before its
            // own request's count is known, as the engine's did at admission.
            for (i, (s, out)) in self.obs.shadows.iter().zip(&mut shadow).enumerate() {
                cold |= u8::from(!s.warmed_up(ticket.model, &prompt)) << (i + 1);
                *out = s.estimate(ticket.model, &prompt);
                s.observe(ticket.model, &prompt, req.input);
            }
        }
        let (outcome, state, reason) = match req.pending {
            Pending::Success => {
                let cached = self.sc.provider.script.cached.of(req.input);
                let usage = UsageMetadata { prompt: req.input, cached, candidates: req.output, thoughts: 0 };
                (self.world.engines[req.replica as usize].success(&usage), Terminal::Succeeded, Reason::None)
            }
            Pending::RateLimited(q) => (Outcome::RateLimited(q), Terminal::Breach, Reason::RateLimited),
            Pending::Failed(why) => {
                // What the answer tells the engine: a rejected key, the provider's capacity,
                // or nothing in particular.
                let outcome = match why {
                    "api-key-invalid" | "permission-denied" => Outcome::KeyRejected,
                    "overloaded" | "timeout" => Outcome::Unavailable,
                    // The engine reads the body as it would off the wire.
                    "capacity-429" => Outcome::RateLimited(parse_quota_error(&capacity_exhausted().body.to_string())),
                    _ => Outcome::Failed,
                };
                (outcome, Terminal::Failed, Reason::Failed(why))
            }
            Pending::Nothing => unreachable!("a completion is scheduled only with its outcome"),
        };
        // Settlement is timed on one call in SETTLE_SAMPLE: reading the clock costs about as
        // much as settling, and the distribution needs no more.
        let started = (req.id % SETTLE_SAMPLE == 0).then(stopwatch::start);
        // A shared store that is down keeps the reservation as counted (conservative).
        let replica = req.replica as usize;
        let engine = &self.world.engines[replica];
        let freed = self.world.gateways[replica].settle(engine, &ticket, outcome, Timestamp(now)).unwrap_or(false);
        if let Some(started) = started {
            self.obs.agg.settle_ns.saturating_record(stopwatch::elapsed_ns(started));
        }
        // Capacity freed before its time (a refund, a count below the reservation): the
        // model's waiters need not wait for the queue's timer.
        if freed && !self.world.waiting[ticket.model].0.is_empty() {
            self.dispatch(ticket.model, now);
        }
        let project = Some(self.world.engine().bucket_owner(ticket.bucket).0);
        self.finish(r, now, state, project, reason, req.sent_at - req.arrival, (shadow, cold));
        Ok(())
    }

    /// Hands a finished request to the ledger and frees its slot.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        r: u32,
        now: u64,
        state: Terminal,
        project: Option<usize>,
        reason: Reason,
        waited: u64,
        (shadow, cold): ([u64; MAX_SHADOWS], u8),
    ) {
        let req = &self.slab.reqs[r as usize];
        let c = &self.sc.traffic[req.class as usize];
        let sent = state != Terminal::Denied;
        if let Some(t) = self.obs.trace.as_mut() {
            t.outcomes.record(now - self.sc.start.0, state);
        }
        let ticket = req.ticket.filter(|_| sent);
        self.obs.ledger.push(Entry::Done(Done {
            id: req.id,
            class: req.class,
            priority: c.priority,
            model: c.model as u32,
            arrival_ms: req.arrival - self.sc.start.0,
            end_ms: now - self.sc.start.0,
            state,
            key: ticket.map(|t| t.key.0),
            project: project.map(|p| p as u32),
            input: req.input,
            text: req.text,
            estimated: ticket.map(|t| t.estimated_input),
            output: if state == Terminal::Succeeded { req.output } else { 0 },
            waited_ms: waited,
            latency_ms: sent.then(|| now - req.sent_at),
            reason,
            shadow,
            cold,
        }));
        self.slab.free.push(r);
    }

    fn pool_event(&mut self, i: usize, now: u64) -> Result<(), SimError> {
        let event = self.sc.events[i].event.clone();
        match &event {
            PoolEvent::Add(KeySpec { id, project }) => {
                let p = self.sc.projects.iter().position(|x| &x.id == project).expect("validated project");
                self.world.judge.issue_key(id, p);
                self.obs.ledger.push(Entry::KeyAdded(id.clone()));
            }
            PoolEvent::Revoke(id) => {
                self.world.judge.delete_key(id);
            }
            _ => {}
        }
        for engine in &self.world.engines {
            engine.apply(event.clone())?;
        }
        self.sync_keys();
        // The pool changed: waiters may be served by it now rather than at their timer.
        self.serve_all(now);
        Ok(())
    }

    fn sync_keys(&mut self) {
        self.world.key_states =
            self.world.engine().pool().keys().iter().map(|k| self.world.judge.key_state(&k.id)).collect();
    }

    /// Evaluates the warning rules and sends what is due; schedules the next evaluation.
    fn warn(&mut self, now: u64) -> Result<(), SimError> {
        if let Some(next) = self.obs.warn(self.sc, &self.world.engines[0], &mut self.world.judge, now)? {
            self.queue.push(self.abs(next), Ev::Warn);
        }
        Ok(())
    }

    /// The pool of `model` had nothing left on `dim`.
    fn exhausted(&mut self, model: usize, dim: crate::engine::Dimension, now: u64) {
        self.obs.exhausted(self.sc, model, dim, now);
    }

    /// Closes an interval of the timeline and the trace; schedules the next.
    fn tick(&mut self, now: u64) -> Result<(), SimError> {
        if let Some(next) = self.obs.tick(self.sc, &self.world.engines[0], &mut self.world.judge, now)? {
            self.queue.push(self.abs(next), Ev::Tick);
        }
        Ok(())
    }
}

//! One simulated run: the event loop and its handlers.

use std::io::Write;

use mock_server::body::quota_exceeded;
use mock_server::{Fault, Judge, JudgeConfig, KeyState as JudgeKey, LatencySampler, ModelQuota, ProjectQuota, Verdict};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

use super::arrivals::{Arrivals, TokenDraw};
use super::oracle::{Offer, OracleHandle};
use super::queue::EventQueue;
use super::stream_seed;
use crate::engine::{
    parse_quota_error, AdmitError, Chars4, Decision, Engine, KeySpec, MemoryStore, ModelSpec, Outcome, PoolError,
    PoolEvent, PoolSpec, ProjectSpec, Prompt, QuotaExhausted, Request, Ticket, Timestamp,
};
use crate::report::{stopwatch, Aggregate, RequestLog, RequestRecord, Terminal};
use crate::scenario::{OnExhausted, Scenario};

/// Where a run streams its CSV files (either may be absent).
#[derive(Default)]
pub struct Outputs<'w> {
    /// `timeline.csv`.
    pub timeline: Option<&'w mut dyn Write>,
    /// `requests.csv`.
    pub requests: Option<&'w mut dyn Write>,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario's pool does not hold together (validation should have caught it).
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    /// The oracle failed.
    #[error("oracle: {0}")]
    Oracle(String),
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
    /// The engine as it ended (pool state, capacity).
    pub engine: Engine,
    /// Simulated events processed.
    pub events: u64,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Arrive(u32),
    Attempt(u32),
    Complete(u32),
    Pool(u32),
    Tick,
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
    ticket: Option<Ticket>,
    sent_at: u64,
    pending: Pending,
    delayed: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Interval {
    requests: u64,
    tokens: u64,
    breaches: u64,
    rpm_peak: u64,
    tpm_peak: u64,
}

struct Sim<'s, 'w> {
    sc: &'s Scenario,
    engine: Engine,
    judge: Judge,
    oracle: OracleHandle,
    queue: EventQueue<Ev>,
    reqs: Vec<Req>,
    free: Vec<u32>,
    next_id: u64,
    arrivals: Vec<Arrivals>,
    prompt_draws: Vec<TokenDraw>,
    output_draws: Vec<TokenDraw>,
    rng_arrivals: Pcg64Mcg,
    rng_tokens: Pcg64Mcg,
    rng_latency: Pcg64Mcg,
    rng_faults: Pcg64Mcg,
    agg: Aggregate,
    intervals: Vec<Interval>,
    /// The judge's view of each engine key (by engine key index), kept in step with pool
    /// events so that sending needs no lookup by name.
    key_states: Vec<JudgeKey>,
    latency: LatencySampler,
    timeline: Option<csv::Writer<&'w mut dyn Write>>,
    requests: Option<RequestLog<&'w mut dyn Write>>,
    events: u64,
}

/// The engine a scenario describes, over an in-memory store.
pub fn build_engine(sc: &Scenario) -> Result<Engine, PoolError> {
    let spec = PoolSpec {
        models: sc.models.iter().map(|m| ModelSpec { name: m.name.clone(), limits: m.limits }).collect(),
        projects: sc.projects.iter().map(|p| ProjectSpec { id: p.id.clone(), limits: p.limits.clone() }).collect(),
        keys: sc
            .projects
            .iter()
            .flat_map(|p| p.keys.iter().map(|k| KeySpec { id: k.clone(), project: p.id.clone() }))
            .collect(),
    };
    Engine::new(sc.engine.config.clone(), spec, MemoryStore::new(), Box::new(Chars4))
}

/// The judge a scenario describes, with its initial keys issued.
pub fn build_judge(sc: &Scenario) -> Judge {
    let mut judge = Judge::new(JudgeConfig {
        enforcement: sc.provider.enforcement,
        models: sc.models.iter().map(|m| m.name.clone()).collect(),
        projects: sc
            .projects
            .iter()
            .map(|p| ProjectQuota {
                id: p.id.clone(),
                tier: p.tier,
                limits: p
                    .limits
                    .iter()
                    .map(|l| ModelQuota { rpm: l.rpm, tpm: l.tpm, rpd: l.rpd, tpd: l.tpd })
                    .collect(),
            })
            .collect(),
        latency: sc.provider.latency,
        faults: sc.provider.faults,
    });
    for (i, p) in sc.projects.iter().enumerate() {
        for k in &p.keys {
            judge.issue_key(k, i);
        }
    }
    judge
}

/// Runs `sc` to the end: every request that arrives before `duration` ends in exactly one
/// terminal state, even if that takes longer than `duration`.
pub fn simulate(sc: &Scenario, out: Outputs<'_>) -> Result<RunResult, SimError> {
    let engine = build_engine(sc)?;
    let judge = build_judge(sc);
    let oracle = OracleHandle::spawn(sc);
    let day_phase =
        sc.start.0.saturating_sub(crate::engine::next_pacific_midnight(sc.start).0.saturating_sub(86_400_000));
    let seed = sc.seed;
    let timeline = match out.timeline {
        Some(w) => {
            let mut w = csv::Writer::from_writer(w);
            w.write_record(TIMELINE_HEADER).map_err(|source| SimError::Write { what: "timeline.csv", source })?;
            Some(w)
        }
        None => None,
    };
    let requests = match out.requests {
        Some(w) => Some(RequestLog::new(w).map_err(|source| SimError::Write { what: "requests.csv", source })?),
        None => None,
    };
    let mut sim = Sim {
        sc,
        engine,
        judge,
        oracle,
        queue: EventQueue::default(),
        reqs: Vec::new(),
        free: Vec::new(),
        next_id: 0,
        arrivals: sc
            .traffic
            .iter()
            .map(|t| Arrivals::new(t.arrival.clone(), t.start_ms, t.end_ms.min(sc.duration_ms), day_phase))
            .collect(),
        prompt_draws: sc.traffic.iter().map(|t| TokenDraw::new(&t.prompt_tokens)).collect(),
        output_draws: sc.traffic.iter().map(|t| TokenDraw::new(&t.output_tokens)).collect(),
        rng_arrivals: Pcg64Mcg::seed_from_u64(stream_seed(seed, 1)),
        rng_tokens: Pcg64Mcg::seed_from_u64(stream_seed(seed, 2)),
        rng_latency: Pcg64Mcg::seed_from_u64(stream_seed(seed, 3)),
        rng_faults: Pcg64Mcg::seed_from_u64(stream_seed(seed, 4)),
        agg: Aggregate::default(),
        intervals: vec![Interval::default(); sc.projects.len() * sc.models.len()],
        key_states: Vec::new(),
        latency: sc.provider.latency.sampler(),
        timeline,
        requests,
        events: 0,
    };
    sim.sync_keys();
    sim.run()?;
    if let Some(w) = sim.timeline.as_mut() {
        w.flush().map_err(|e| SimError::Write { what: "timeline.csv", source: e.into() })?;
    }
    if let Some(log) = sim.requests.take() {
        log.finish().map_err(|e| SimError::Write { what: "requests.csv", source: e.into() })?;
    }
    sim.agg.servable = Some(sim.oracle.finish()?);
    Ok(RunResult { aggregate: sim.agg, engine: sim.engine, events: sim.events })
}

/// One settlement in this many is timed on the real clock.
const SETTLE_SAMPLE: u64 = 8;

const TIMELINE_HEADER: [&str; 13] = [
    "t_s",
    "time",
    "project",
    "model",
    "requests",
    "breaches",
    "input_tokens",
    "rpm_peak",
    "rpm_limit",
    "tpm_peak",
    "tpm_limit",
    "rpd_used",
    "rpd_limit",
];

impl Sim<'_, '_> {
    fn abs(&self, offset: u64) -> u64 {
        self.sc.start.0 + offset
    }

    fn run(&mut self) -> Result<(), SimError> {
        for class in 0..self.sc.traffic.len() {
            self.schedule_arrival(class as u32);
        }
        for (i, e) in self.sc.events.iter().enumerate() {
            self.queue.push(self.abs(e.at_ms), Ev::Pool(i as u32));
        }
        self.queue.push(self.abs(self.sc.timeline_ms.min(self.sc.duration_ms)), Ev::Tick);
        while let Some((now, ev)) = self.queue.pop() {
            self.events += 1;
            match ev {
                Ev::Arrive(r) => self.arrive(r, now)?,
                Ev::Attempt(r) => self.attempt(r, now)?,
                Ev::Complete(r) => self.complete(r, now)?,
                Ev::Pool(i) => self.pool_event(i as usize)?,
                Ev::Tick => self.tick(now)?,
            }
        }
        Ok(())
    }

    fn schedule_arrival(&mut self, class: u32) {
        if let Some((at, tokens)) = self.arrivals[class as usize].next(&mut self.rng_arrivals) {
            // A trace row carries its own token counts; they ride in the request slot.
            let r = self.new_req(class, self.abs(at), tokens);
            self.queue.push(self.abs(at), Ev::Arrive(r));
        }
    }

    fn new_req(&mut self, class: u32, arrival: u64, tokens: Option<(u64, u64)>) -> u32 {
        let c = &self.sc.traffic[class as usize];
        let (input, output) = match tokens {
            Some(t) => t,
            None => (
                self.prompt_draws[class as usize].sample(&mut self.rng_tokens),
                self.output_draws[class as usize].sample(&mut self.rng_tokens),
            ),
        };
        let req = Req {
            id: 0,
            class,
            arrival,
            input,
            output,
            chars: (input as f64 * c.chars_per_token + 0.5) as u64,
            ticket: None,
            sent_at: 0,
            pending: Pending::Nothing,
            delayed: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.reqs[i as usize] = req;
                i
            }
            None => {
                self.reqs.push(req);
                (self.reqs.len() - 1) as u32
            }
        }
    }

    fn arrive(&mut self, r: u32, now: u64) -> Result<(), SimError> {
        let class = self.reqs[r as usize].class;
        self.reqs[r as usize].id = self.next_id;
        self.next_id += 1;
        self.schedule_arrival(class);
        let c = &self.sc.traffic[class as usize];
        let deadline = match self.sc.engine.on_exhausted {
            OnExhausted::Queue => now + self.sc.engine.max_wait_ms,
            OnExhausted::Reject => now,
        };
        self.oracle.offer(Offer { at: now, model: c.model as u32, tokens: self.reqs[r as usize].input, deadline });
        self.attempt(r, now)
    }

    fn attempt(&mut self, r: u32, now: u64) -> Result<(), SimError> {
        let req = self.reqs[r as usize];
        let c = &self.sc.traffic[req.class as usize];
        let request = Request {
            model: c.model,
            prompt: Prompt::Chars(req.chars),
            priority: c.priority,
            max_output_tokens: c.max_output_tokens,
        };
        let started = stopwatch::start();
        let decision = self.engine.admit(&request, Timestamp(now));
        self.agg.admit_ns.saturating_record(stopwatch::elapsed_ns(started));
        match decision {
            Ok(Decision::Admitted(ticket)) => {
                self.send(r, ticket, now);
                Ok(())
            }
            Ok(Decision::Denied(d)) => {
                if !req.delayed && self.provider_would_accept(c.model, req.input, now) {
                    self.agg.lost_capacity += 1;
                }
                let project = d.bucket.map(|b| self.engine.bucket_owner(b).0);
                let waited = now - req.arrival;
                match d.retry_at {
                    Some(at)
                        if self.sc.engine.on_exhausted == OnExhausted::Queue
                            && at.0 - req.arrival <= self.sc.engine.max_wait_ms =>
                    {
                        if !req.delayed {
                            self.reqs[r as usize].delayed = true;
                            self.agg.delayed += 1;
                        }
                        self.queue.push(at.0.max(now + 1), Ev::Attempt(r));
                        Ok(())
                    }
                    _ => self.finish(r, now, Terminal::Denied, project, &d.reason.name(), waited),
                }
            }
            Err(AdmitError::TooLarge { .. }) | Err(_) => {
                self.finish(r, now, Terminal::Denied, None, "too-large", now - req.arrival)
            }
        }
    }

    /// Whether any project that can serve `model` would accept `input` tokens now.
    fn provider_would_accept(&mut self, model: usize, input: u64, now: u64) -> bool {
        let judge = &mut self.judge;
        self.engine.serving_projects(model).any(|p| judge.peek(p, model, input, now) == Verdict::Accepted)
    }

    fn send(&mut self, r: u32, ticket: Ticket, now: u64) {
        let req = &mut self.reqs[r as usize];
        req.ticket = Some(ticket);
        req.sent_at = now;
        let latency = self.sc.provider.latency;
        let (pending, delay) = match self.key_states[ticket.key.0 as usize] {
            JudgeKey::Invalid => (Pending::Failed("api-key-invalid"), latency.error_ms()),
            JudgeKey::Valid(project) => match self.sc.provider.faults.draw(&mut self.rng_faults) {
                Some(Fault::Internal) => (Pending::Failed("internal"), latency.error_ms()),
                Some(Fault::Overloaded) => (Pending::Failed("overloaded"), latency.error_ms()),
                None => {
                    let input = self.reqs[r as usize].input;
                    match self.judge.submit(project, ticket.model, input, now) {
                        Verdict::Accepted => {
                            let u = self.judge.counted(project, ticket.model);
                            let iv = &mut self.intervals[project * self.sc.models.len() + ticket.model];
                            iv.requests += 1;
                            iv.tokens += input;
                            iv.rpm_peak = iv.rpm_peak.max(u.minute_requests);
                            iv.tpm_peak = iv.tpm_peak.max(u.minute_tokens);
                            (Pending::Success, self.latency.sample(&mut self.rng_latency))
                        }
                        Verdict::Exhausted { violations, retry_after_ms } => {
                            let tier = self.judge.config().projects[project].tier;
                            let model = &self.sc.models[ticket.model].name;
                            let answer = quota_exceeded(&violations, tier, model, retry_after_ms);
                            // The engine reads the body as it would off the wire.
                            let q = parse_quota_error(&answer.body.to_string());
                            self.intervals[project * self.sc.models.len() + ticket.model].breaches += 1;
                            (Pending::RateLimited(q), latency.error_ms())
                        }
                    }
                }
            },
        };
        self.reqs[r as usize].pending = pending;
        self.queue.push(now + delay, Ev::Complete(r));
    }

    fn complete(&mut self, r: u32, now: u64) -> Result<(), SimError> {
        let req = self.reqs[r as usize];
        let ticket = req.ticket.expect("completed requests were sent");
        let (outcome, state, reason) = match req.pending {
            Pending::Success => {
                (Outcome::Success { input_tokens: req.input, output_tokens: req.output }, Terminal::Succeeded, "")
            }
            Pending::RateLimited(q) => (Outcome::RateLimited(q), Terminal::Breach, "rate-limited"),
            Pending::Failed(why) => (Outcome::Failed, Terminal::Failed, why),
            Pending::Nothing => unreachable!("a completion is scheduled only with its outcome"),
        };
        // Settlement is timed on one call in SETTLE_SAMPLE: reading the clock costs about as
        // much as settling, and the distribution needs no more.
        if req.id % SETTLE_SAMPLE == 0 {
            let started = stopwatch::start();
            self.engine.settle(&ticket, outcome, Timestamp(now));
            self.agg.settle_ns.saturating_record(stopwatch::elapsed_ns(started));
        } else {
            self.engine.settle(&ticket, outcome, Timestamp(now));
        }
        let project = Some(self.engine.bucket_owner(ticket.bucket).0);
        self.finish(r, now, state, project, reason, req.sent_at - req.arrival)
    }

    fn finish(
        &mut self,
        r: u32,
        now: u64,
        state: Terminal,
        project: Option<usize>,
        reason: &str,
        waited: u64,
    ) -> Result<(), SimError> {
        let req = self.reqs[r as usize];
        let c = &self.sc.traffic[req.class as usize];
        let sent = state != Terminal::Denied;
        let record = RequestRecord {
            id: req.id,
            class: &c.name,
            priority: c.priority,
            model: c.model,
            arrival_ms: req.arrival - self.sc.start.0,
            end_ms: now - self.sc.start.0,
            state,
            key: req.ticket.filter(|_| sent).map(|t| t.key.0 as usize),
            project,
            input_tokens: req.input,
            estimated_input: req.ticket.filter(|_| sent).map(|t| t.estimated_input),
            output_tokens: if state == Terminal::Succeeded { req.output } else { 0 },
            queue_wait_ms: waited,
            latency_ms: sent.then(|| now - req.sent_at),
            reason,
        };
        self.agg.record(&record);
        if let Some(log) = self.requests.as_mut() {
            let model = &self.sc.models[c.model].name;
            let key = record.key.map_or_else(String::new, |k| crate::report::redact(&self.engine.keys()[k].id));
            let project = record.project.map_or("", |p| self.engine.projects()[p].id.as_str());
            log.write(&record, model, &key, project)
                .map_err(|source| SimError::Write { what: "requests.csv", source })?;
        }
        self.free.push(r);
        Ok(())
    }

    fn pool_event(&mut self, i: usize) -> Result<(), SimError> {
        let event = self.sc.events[i].event.clone();
        match &event {
            PoolEvent::Add(KeySpec { id, project }) => {
                let p = self.sc.projects.iter().position(|x| &x.id == project).expect("validated project");
                self.judge.issue_key(id, p);
            }
            PoolEvent::Revoke(id) => {
                self.judge.delete_key(id);
            }
            _ => {}
        }
        self.engine.apply(event)?;
        self.sync_keys();
        Ok(())
    }

    fn sync_keys(&mut self) {
        self.key_states = self.engine.keys().iter().map(|k| self.judge.key_state(&k.id)).collect();
    }

    fn tick(&mut self, now: u64) -> Result<(), SimError> {
        let offset = now - self.sc.start.0;
        if let Some(w) = self.timeline.as_mut() {
            let models = self.sc.models.len();
            let t_s = format!("{:.0}", offset as f64 / 1000.0);
            let time = Timestamp(now).to_rfc3339();
            for (p, project) in self.sc.projects.iter().enumerate() {
                for (m, model) in self.sc.models.iter().enumerate() {
                    let iv = self.intervals[p * models + m];
                    let u = self.judge.usage(p, m, now);
                    let l = self.judge.limits(p, m);
                    let row = [
                        t_s.clone(),
                        time.clone(),
                        project.id.clone(),
                        model.name.clone(),
                        iv.requests.to_string(),
                        iv.breaches.to_string(),
                        iv.tokens.to_string(),
                        iv.rpm_peak.to_string(),
                        l.rpm.to_string(),
                        iv.tpm_peak.to_string(),
                        l.tpm.to_string(),
                        u.day_requests.to_string(),
                        l.rpd.to_string(),
                    ];
                    w.write_record(&row).map_err(|source| SimError::Write { what: "timeline.csv", source })?;
                }
            }
        }
        self.intervals.iter_mut().for_each(|iv| *iv = Interval::default());
        if offset < self.sc.duration_ms {
            let next = (offset + self.sc.timeline_ms).min(self.sc.duration_ms);
            self.queue.push(self.abs(next), Ev::Tick);
        }
        Ok(())
    }
}

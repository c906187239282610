//! The ledger: where finished requests are counted and, on request, written to
//! `requests.csv` — on a thread of its own, fed in batches, in the order requests finished.

use std::io::Write;
use std::thread::{Scope, ScopedJoinHandle};

use super::pipe::{pipe, BatchSender, BATCH};
use super::SimError;
use crate::engine::{Priority, Reason as GaveUp};
use crate::report::{redact, Aggregate, RequestLog, RequestRecord, Terminal};
use crate::scenario::Scenario;

/// Why a request ended the way it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Nothing to say (succeeded).
    None,
    /// Answered 429.
    RateLimited,
    /// Failed with this error.
    Failed(&'static str),
    /// Never sent: the engine's reason.
    GaveUp(GaveUp),
}

impl Reason {
    fn name(self) -> String {
        match self {
            Reason::None => String::new(),
            Reason::RateLimited => "rate-limited".into(),
            Reason::Failed(why) => why.into(),
            Reason::GaveUp(r) => r.name(),
        }
    }
}

/// A finished request, by indices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Done {
    pub(crate) id: u64,
    pub(crate) class: u32,
    pub(crate) priority: Priority,
    pub(crate) model: u32,
    pub(crate) arrival_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) state: Terminal,
    pub(crate) key: Option<u32>,
    pub(crate) project: Option<u32>,
    pub(crate) input: u64,
    pub(crate) text: Option<u32>,
    pub(crate) estimated: Option<u64>,
    pub(crate) output: u64,
    pub(crate) waited_ms: u64,
    pub(crate) latency_ms: Option<u64>,
    pub(crate) reason: Reason,
    /// The shadow estimators' estimates, in `shadow_estimators` order (succeeded requests).
    pub(crate) shadow: [u64; MAX_SHADOWS],
    /// Which estimates were made before their estimator warmed up: bit 0 the engine's,
    /// bit `i + 1` shadow `i`'s.
    pub(crate) cold: u8,
}

/// At most this many shadow estimators (one of each kind).
pub(crate) const MAX_SHADOWS: usize = <crate::scenario::EstimatorKind as crate::engine::Setting>::ALL.len();
/// No shadow estimates.
pub(crate) const NO_SHADOW: [u64; MAX_SHADOWS] = [u64::MAX; MAX_SHADOWS];

/// What the run tells the ledger.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A request finished.
    Done(Done),
    /// A key joined the pool (its index is the next one).
    KeyAdded(String),
}

/// The run's end of the ledger.
pub(crate) struct Ledger<'scope> {
    tx: Option<BatchSender<Entry>>,
    thread: Option<ScopedJoinHandle<'scope, Result<Aggregate, SimError>>>,
}

impl<'scope> Ledger<'scope> {
    /// Starts the ledger on a thread of `scope`, writing `requests.csv` to `requests` if given.
    pub(crate) fn spawn<W: Write + Send + 'scope>(
        scope: &'scope Scope<'scope, '_>,
        sc: &'scope Scenario,
        requests: Option<W>,
    ) -> Self {
        let (tx, mut rx) = pipe::<Entry>(BATCH);
        let thread = std::thread::Builder::new()
            .name("keysim-ledger".into())
            .spawn_scoped(scope, move || {
                let mut keys: Vec<String> = sc.projects.iter().flat_map(|p| p.keys.iter().map(|k| redact(k))).collect();
                let mut log = match requests {
                    Some(w) => {
                        Some(RequestLog::new(w).map_err(|source| SimError::Write { what: "requests.csv", source })?)
                    }
                    None => None,
                };
                let mut agg = Aggregate::default();
                while let Some(entry) = rx.next() {
                    match entry {
                        Entry::KeyAdded(k) => keys.push(redact(&k)),
                        Entry::Done(d) => record(sc, &keys, &mut agg, log.as_mut(), &d)?,
                    }
                }
                if let Some(log) = log {
                    log.finish().map_err(|e| SimError::Write { what: "requests.csv", source: e.into() })?;
                }
                Ok(agg)
            })
            .expect("spawning the ledger thread");
        Self { tx: Some(tx), thread: Some(thread) }
    }

    /// Records an entry.
    pub(crate) fn push(&mut self, e: Entry) {
        if let Some(tx) = &mut self.tx {
            // Fails only if the ledger stopped on a write error, which `finish` reports.
            tx.push(e);
        }
    }

    /// Waits for the ledger and returns its aggregate.
    pub(crate) fn finish(mut self) -> Result<Aggregate, SimError> {
        self.tx = None;
        let thread = self.thread.take().expect("joined once");
        thread.join().map_err(|_| SimError::Helper("the ledger thread panicked".into()))?
    }
}

fn record<W: Write>(
    sc: &Scenario,
    keys: &[String],
    agg: &mut Aggregate,
    log: Option<&mut RequestLog<W>>,
    d: &Done,
) -> Result<(), SimError> {
    let reason = d.reason.name();
    let r = RequestRecord {
        id: d.id,
        class: &sc.traffic[d.class as usize].name,
        priority: d.priority,
        model: d.model as usize,
        arrival_ms: d.arrival_ms,
        end_ms: d.end_ms,
        state: d.state,
        key: d.key.map(|k| k as usize),
        project: d.project.map(|p| p as usize),
        input_tokens: d.input,
        estimated_input: d.estimated,
        output_tokens: d.output,
        queue_wait_ms: d.waited_ms,
        latency_ms: d.latency_ms,
        reason: &reason,
    };
    agg.record(&r);
    if let (Terminal::Succeeded, Some(est)) = (d.state, d.estimated) {
        let class = &sc.traffic[d.class as usize];
        let lang = match (d.text, &class.corpus) {
            (Some(i), Some(c)) => c.texts[i as usize].lang.as_str(),
            _ => "synthetic",
        };
        agg.estimation(lang, est, d.input, d.cold & 1 != 0);
        for (i, &shadow) in d.shadow.iter().enumerate().take(sc.engine.shadow_estimators.len()) {
            agg.shadow_estimation(i, lang, shadow, d.input, d.cold & (2 << i) != 0);
        }
    }
    if let Some(log) = log {
        let model = &sc.models[d.model as usize].name;
        let key = d.key.map_or("", |k| keys[k as usize].as_str());
        let project = d.project.map_or("", |p| sc.projects[p as usize].id.as_str());
        log.write(&r, model, key, project).map_err(|source| SimError::Write { what: "requests.csv", source })?;
    }
    Ok(())
}

//! The traffic source: every class's arrivals, token sizes and provider behaviour (latency,
//! faults), merged into one stream in time order.
//!
//! Everything random about a request — when it arrives, how large it is, how long the provider
//! will take and whether it fails on its own — is drawn when the request is made, and none of
//! it depends on what the engine decides. So the stream is produced on a thread of its own and
//! handed to the run in batches. Each class draws from its own random streams, so adding a
//! class leaves the others' traffic unchanged.

use std::thread::{Scope, ScopedJoinHandle};

use mock_server::{Fault, FaultModel, LatencySampler};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::arrivals::{Arrivals, TokenDraw};
use super::oracle::Offer;
use super::pipe::{pipe, BatchReceiver, BatchSender};
use super::stream_seed;
use crate::scenario::Scenario;

/// One request as the traffic makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NewRequest {
    /// Arrival, ms after the run's start.
    pub(crate) at: u64,
    /// Traffic class index.
    pub(crate) class: u32,
    /// True input tokens.
    pub(crate) input: u64,
    /// True output tokens.
    pub(crate) output: u64,
    /// Index of the prompt in the class's corpus, if it sends real text.
    pub(crate) text: Option<u32>,
    /// How long the provider takes to answer it, if it answers successfully.
    pub(crate) latency_ms: u64,
    /// Whether the provider fails it on its own.
    pub(crate) fault: Option<Fault>,
}

impl NewRequest {
    /// The tokens the provider counts against token limits.
    pub(crate) fn judged(&self, counting: Counting) -> u64 {
        counting.judged(self.input, self.output)
    }
}

/// How the provider counts a request's tokens against token limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counting {
    /// Whether output tokens count too (Gemini: input only).
    pub(crate) counts_output: bool,
    /// Whether (and which share of) cached input tokens count.
    pub(crate) cached: mock_server::script::CachedTokens,
}

impl Counting {
    /// The provider's way, as the scenario sets it.
    pub(crate) fn of(sc: &Scenario) -> Self {
        Self { counts_output: sc.provider.counts_output, cached: sc.provider.script.cached }
    }

    /// The tokens counted of a request with these true counts: its input (less the cached
    /// part where that does not count), and its output where that counts.
    pub(crate) fn judged(self, input: u64, output: u64) -> u64 {
        self.cached.judged(input) + if self.counts_output { output } else { 0 }
    }
}

struct Class {
    arrivals: Arrivals,
    /// True input counts of the class's corpus texts, if it has one.
    corpus: Option<Vec<u64>>,
    prompt: TokenDraw,
    output: TokenDraw,
    rng_arrivals: Pcg64Mcg,
    rng_tokens: Pcg64Mcg,
    latency: LatencySampler,
    faults: FaultModel,
    rng_provider: Pcg64Mcg,
    next: Option<NewRequest>,
}

impl Class {
    fn draw(&mut self, class: u32) {
        self.next = self.arrivals.next(&mut self.rng_arrivals).map(|(at, recorded)| {
            let mut text = None;
            let (input, output) = recorded.map(|r| (r.input, r.output)).unwrap_or_else(|| match &self.corpus {
                Some(counts) => {
                    let i = self.rng_tokens.random_range(0..counts.len());
                    text = Some(i as u32);
                    (counts[i], self.output.sample(&mut self.rng_tokens))
                }
                None => (self.prompt.sample(&mut self.rng_tokens), self.output.sample(&mut self.rng_tokens)),
            });
            let (latency_ms, fault) = match recorded.and_then(|r| r.answer) {
                // A log tells what the provider did.
                Some(a) => (a.latency_ms.unwrap_or_else(|| self.latency.sample(&mut self.rng_provider)), a.fault),
                None => (self.latency.sample(&mut self.rng_provider), self.faults.draw(&mut self.rng_provider)),
            };
            NewRequest { at, class, input, output, text, latency_ms, fault }
        });
    }
}

/// Every class's requests, merged by time (class order among equals).
pub(crate) struct Traffic {
    classes: Vec<Class>,
    /// Per class: the model index, for the oracle.
    models: Vec<u32>,
    /// The run's start, ms since the epoch.
    start: u64,
    /// How long a request may wait for quota (zero when the engine rejects at once).
    max_wait_ms: u64,
    /// Whether the provider counts output tokens against token limits.
    counting: Counting,
}

impl Traffic {
    /// The traffic of `sc`.
    pub(crate) fn new(sc: &Scenario) -> Self {
        let day_phase =
            sc.start.0.saturating_sub(crate::engine::next_pacific_midnight(sc.start).0.saturating_sub(86_400_000));
        let classes = sc
            .traffic
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let i = i as u64;
                let mut c = Class {
                    corpus: t.corpus.as_ref().map(|c| c.texts.iter().map(|x| x.tokens).collect()),
                    arrivals: Arrivals::new(t.arrival.clone(), t.start_ms, t.end_ms.min(sc.duration_ms), day_phase),
                    prompt: TokenDraw::new(&t.prompt_tokens),
                    output: TokenDraw::new(&t.output_tokens),
                    rng_arrivals: Pcg64Mcg::seed_from_u64(stream_seed(sc.seed, 100 + 3 * i)),
                    rng_tokens: Pcg64Mcg::seed_from_u64(stream_seed(sc.seed, 101 + 3 * i)),
                    latency: sc.provider.latency.sampler(),
                    faults: sc.provider.faults,
                    rng_provider: Pcg64Mcg::seed_from_u64(stream_seed(sc.seed, 102 + 3 * i)),
                    next: None,
                };
                c.draw(i as u32);
                c
            })
            .collect();
        let max_wait_ms = sc.engine.policy().max_wait_ms();
        Self {
            classes,
            models: sc.traffic.iter().map(|t| t.model as u32).collect(),
            start: sc.start.0,
            max_wait_ms,
            counting: Counting::of(sc),
        }
    }

    /// Starts producing on a thread of `scope`: the run reads requests from the receiver, and
    /// the oracle gets each one too.
    pub(crate) fn spawn<'scope>(
        self,
        scope: &'scope Scope<'scope, '_>,
        mut oracle: BatchSender<Offer>,
    ) -> (BatchReceiver<NewRequest>, ScopedJoinHandle<'scope, ()>) {
        let (mut tx, rx) = pipe(super::pipe::BATCH);
        let (models, start, wait) = (self.models.clone(), self.start, self.max_wait_ms);
        let counting = self.counting;
        let handle = std::thread::Builder::new()
            .name("keysim-traffic".into())
            .spawn_scoped(scope, move || {
                for r in self {
                    let at = start + r.at;
                    let offer =
                        Offer { at, model: models[r.class as usize], tokens: r.judged(counting), deadline: at + wait };
                    // The run stops reading only when it has failed; then so do we.
                    if !tx.push(r) || !oracle.push(offer) {
                        return;
                    }
                }
            })
            .expect("spawning the traffic thread");
        (rx, handle)
    }
}

impl Iterator for Traffic {
    type Item = NewRequest;

    fn next(&mut self) -> Option<NewRequest> {
        let (i, _) = self
            .classes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next.map(|n| (i, n.at)))
            .min_by_key(|&(i, at)| (at, i))?;
        let c = &mut self.classes[i];
        let out = c.next.take();
        c.draw(i as u32);
        out
    }
}

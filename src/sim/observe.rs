//! What watches a run without deciding anything: the ledger's counts, real-clock timings,
//! the timeline and the trace, exhaustion scoring, warnings and progress. The simulator's
//! decisions live in its world (engine, judge, fair queues); these only look at it.

use std::io::Write;

use mock_server::Judge;

use super::ledger::Ledger;
use super::run::SimError;
use crate::engine::warn::Warner;
use crate::engine::{Engine, Estimator, QuotaStore, Timestamp};
use crate::report::score::Scorer;
use crate::report::trace::{Cell, Notice, Room, Trace};
use crate::report::Aggregate;
use crate::scenario::Scenario;

/// Cells of usage a run's trace keeps at most (about 16 bytes each).
pub(super) const TRACE_BUDGET: usize = 2_000_000;

pub(super) const TIMELINE_HEADER: [&str; 13] = [
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

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Interval {
    pub(super) requests: u64,
    pub(super) tokens: u64,
    pub(super) breaches: u64,
    pub(super) rpm_peak: u64,
    pub(super) tpm_peak: u64,
}

/// What watches the run without deciding anything: the ledger that counts finished requests,
/// real-clock timings, the timeline and trace, exhaustion scoring, warnings and progress.
pub(super) struct Observers<'w, 'scope> {
    pub(super) ledger: Ledger<'scope>,
    /// Real-clock timings and queue counts; the ledger counts everything else.
    pub(super) agg: Aggregate,
    pub(super) intervals: Vec<Interval>,
    pub(super) timeline: Option<csv::Writer<&'w mut (dyn Write + Send)>>,
    /// Estimators measured beside the engine's (`shadow_estimators`).
    pub(super) shadows: Vec<Box<dyn Estimator>>,
    /// Early warnings, when the scenario has them.
    pub(super) warner: Option<Warner>,
    /// Exhaustion spells and how well warnings foretold them.
    pub(super) scorer: Scorer,
    pub(super) trace: Option<Trace>,
    /// Offset of the previous timeline tick: where the current interval began.
    pub(super) interval_from: u64,
    pub(super) notifications: Option<&'w mut dyn crate::notify::Sink>,
    pub(super) progress: Option<&'w dyn Fn(u64)>,
}

impl Observers<'_, '_> {
    /// Evaluates the warning rules and sends what is due.
    pub(super) fn warn(
        &mut self,
        sc: &Scenario,
        engine: &Engine<impl QuotaStore>,
        judge: &mut Judge,
        now: u64,
    ) -> Result<Option<u64>, SimError> {
        let Some(warner) = &mut self.warner else { return Ok(None) };
        // The pool's load as the provider counts it, for the scorer's first burst: its
        // requests in the last minute against what its projects carry at their prompt size.
        for m in 0..sc.models.len() {
            let (mut requests, mut tokens) = (0u64, 0u64);
            let mut limits = Vec::new();
            for p in engine.pool().serving_projects(m) {
                let u = judge.usage(p, m, now);
                requests += u.minute_requests;
                tokens += u.minute_tokens;
                let l = judge.limits(p, m);
                limits.push((l.rpm as f64, l.tpm as f64));
            }
            let per_request = tokens as f64 / requests.max(1) as f64;
            let carries: f64 =
                limits.iter().map(|(rpm, tpm)| if per_request > 0.0 { rpm.min(tpm / per_request) } else { *rpm }).sum();
            let load = requests as f64 / carries.max(1.0);
            self.scorer.load(m, load, Timestamp(now));
        }
        let notifications = warner.evaluate(engine, Timestamp(now));
        let model_of = |name: &str| sc.models.iter().position(|m| m.name == name);
        for n in &notifications {
            self.scorer.notified(n, Timestamp(now), model_of);
            if let Some(t) = self.trace.as_mut() {
                let mut about: Vec<(usize, usize)> = n
                    .alerts
                    .iter()
                    .filter_map(|a| {
                        let m = model_of(a.labels.get("model")?)?;
                        let d = a.labels.get("dimension")?;
                        Some((m, crate::engine::Dimension::ALL.iter().position(|x| x.name() == d)?))
                    })
                    .collect();
                about.sort_unstable();
                about.dedup();
                t.notice(Notice { at_ms: now - sc.start.0, firing: n.firing, about });
            }
            if let Some(sink) = self.notifications.as_mut() {
                sink.send(n, Timestamp(now))
                    .map_err(|e| SimError::Write { what: "notifications", source: e.into() })?;
            }
        }
        let offset = now - sc.start.0;
        Ok((offset < sc.duration_ms).then(|| (offset + warner.config().evaluate_every_ms).min(sc.duration_ms)))
    }

    /// The pool of `model` had nothing left on `dim`: scored, and traced when a spell begins.
    pub(super) fn exhausted(&mut self, sc: &Scenario, model: usize, dim: crate::engine::Dimension, now: u64) {
        let firing = self.warner.as_ref().and_then(|w| w.firing_since(&sc.models[model].name, dim.name()));
        if let Some(lead) = self.scorer.exhausted(model, dim, Timestamp(now), firing) {
            if let Some(t) = self.trace.as_mut() {
                t.spell(sc.start, Timestamp(now), model, dim.index(), lead);
            }
        }
    }

    /// Records this interval's usage and capacity in the trace.
    fn trace_tick(&mut self, sc: &Scenario, engine: &Engine<impl QuotaStore>, judge: &mut Judge, now: u64) {
        let models = sc.models.len();
        let frac =
            |used: u64, limit: u64| if limit == 0 || limit == u64::MAX { 0.0 } else { used as f32 / limit as f32 };
        let mut cells = Vec::with_capacity(self.intervals.len());
        for p in 0..sc.projects.len() {
            for m in 0..models {
                let iv = self.intervals[p * models + m];
                let u = judge.usage(p, m, now);
                let l = judge.limits(p, m);
                cells.push(Cell {
                    rpm: frac(iv.rpm_peak, l.rpm),
                    tpm: frac(iv.tpm_peak, l.tpm),
                    rpd: frac(u.day_requests, l.rpd),
                    tpd: l.tpd.map_or(0.0, |t| frac(u.day_tokens, t)),
                    requests: iv.requests as u32,
                    breaches: iv.breaches as u32,
                });
            }
        }
        let rooms: Vec<Room> = (0..models)
            .map(|m| {
                let c = engine.capacity(m, Timestamp(now));
                let mut remaining = [0.0f32; 4];
                for (d, r) in remaining.iter_mut().enumerate() {
                    *r = if c.usable[d] == 0 { 0.0 } else { c.remaining[d] as f32 / c.usable[d] as f32 };
                }
                Room { remaining, projects: c.projects as u32, keys: c.keys as u32 }
            })
            .collect();
        if let Some(t) = self.trace.as_mut() {
            // Each point is drawn from its interval's start.
            t.tick(self.interval_from, &cells, &rooms);
        }
    }

    /// Writes the interval's timeline rows and trace point, then starts the next interval;
    /// returns when the next tick is due (an offset), if the run goes on.
    pub(super) fn tick(
        &mut self,
        sc: &Scenario,
        engine: &Engine<impl QuotaStore>,
        judge: &mut Judge,
        now: u64,
    ) -> Result<Option<u64>, SimError> {
        let offset = now - sc.start.0;
        if let Some(p) = self.progress {
            p(offset);
        }
        if let Some(w) = self.timeline.as_mut() {
            let models = sc.models.len();
            let t_s = format!("{:.0}", offset as f64 / 1000.0);
            let time = Timestamp(now).to_rfc3339();
            for (p, project) in sc.projects.iter().enumerate() {
                for (m, model) in sc.models.iter().enumerate() {
                    let iv = self.intervals[p * models + m];
                    let u = judge.usage(p, m, now);
                    let l = judge.limits(p, m);
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
        if self.trace.is_some() {
            self.trace_tick(sc, engine, judge, now);
        }
        self.interval_from = offset;
        self.intervals.iter_mut().for_each(|iv| *iv = Interval::default());
        Ok((offset < sc.duration_ms).then(|| (offset + sc.timeline_ms).min(sc.duration_ms)))
    }
}

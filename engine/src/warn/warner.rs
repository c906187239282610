//! The warner: evaluates the rules over every quota bucket and every model's pool at a fixed
//! interval, as Prometheus evaluates alerting rules, and hands what changed to the
//! notification pipeline.
//!
//! Two modes:
//! - `pipeline` (the product): per model pool, `PoolAtRisk` (the chance of running dry within
//!   a horizon, from the recent busiest minutes; see [`super::risk`]) and `PoolNearLimit`
//!   (level and reset-aware forecast, `for`, hysteresis), and per project bucket
//!   `QuotaNearLimit` when `project_alerts` asks for it; grouping, group wait and interval,
//!   repeat throttling; a firing pool alert mutes the project alerts of the same model and
//!   dimension, and a firing `PoolAtRisk` its model's `PoolNearLimit` of that dimension (the
//!   operator already knows the pool is short); resolved notices; alerts about the pool's health (see
//!   [`super::health`]).
//! - `naive` (the reference): a threshold per key (`KeyNearLimit`), no forecast, no `for`,
//!   no hysteresis, no grouping — one notification per crossing, up or down.
//!
//! Memory is bounded by the pool: one series per (bucket, dimension) and per (model,
//! dimension), or per (key, dimension) in naive mode; series of buckets or keys that left
//! the pool are forgotten, and groups are dropped once resolved.

use super::health::{HealthAlertConfig, HealthAlerts};
use super::monitor::{Monitor, Subject};
use super::pipeline::{AlertOut, Inhibit, Labels, Notification, Pipeline, Route};
use super::risk::{Risk, RiskConfig};
use super::rule::{Rule, Transition};
use crate::{BucketId, Buckets, Ceilings, Engine, QuotaStore, Timestamp, Usage};

/// Which warning engine runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WarnMode {
    /// Forecast-aware rules and the notification pipeline.
    #[default]
    Pipeline,
    /// The per-key threshold reference.
    Naive,
}

impl WarnMode {
    /// Its name in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Naive => "naive",
        }
    }
}

/// The warner's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WarnConfig {
    /// Pipeline or naive.
    pub mode: WarnMode,
    /// The rule (naive mode uses only `warn_at`).
    pub rule: Rule,
    /// How much history the forecast fits.
    pub trend_window_ms: u64,
    /// How often rules are evaluated.
    pub evaluate_every_ms: u64,
    /// Grouping and throttling.
    pub route: Route,
    /// Whether a firing pool alert mutes the project alerts of its model and dimension.
    pub inhibit: bool,
    /// Alerts about the pool's health (pipeline mode only).
    pub health: HealthAlertConfig,
    /// `PoolAtRisk` (pipeline mode only).
    pub risk: RiskConfig,
    /// Whether each project bucket is watched too (`QuotaNearLimit`; pipeline mode only).
    /// They tell that one project runs out, not the pool.
    pub project_alerts: bool,
}

impl Default for WarnConfig {
    fn default() -> Self {
        Self {
            mode: WarnMode::Pipeline,
            rule: Rule::default(),
            trend_window_ms: 600_000,
            evaluate_every_ms: 10_000,
            // One evaluation's wait, not Alertmanager's 30 s: a burst that will run the pool dry
            // does so within seconds, and alerts of one evaluation still go out together.
            route: Route { group_wait_ms: 10_000, ..Route::default() },
            inhibit: true,
            health: HealthAlertConfig::default(),
            risk: RiskConfig::default(),
            project_alerts: false,
        }
    }
}

/// A project's alert goes out beside its pool's only if the project runs out within this
/// share of the time the pool has left.
const IMBALANCE: f64 = 0.5;

/// Subject ids: buckets as they are, pools and keys above them.
const POOL: u64 = 1 << 32;
const KEY: u64 = 2 << 32;

/// Evaluates warnings for one engine.
#[derive(Debug)]
pub struct Warner {
    config: WarnConfig,
    monitor: Monitor,
    pipeline: Pipeline,
    health: HealthAlerts,
    risk: Risk,
    /// Alerts notified as firing that still fire, with when each started.
    notified: std::collections::BTreeMap<Labels, Timestamp>,
}

impl Warner {
    /// A warner with `config`.
    pub fn new(config: WarnConfig) -> Self {
        let rule = match config.mode {
            WarnMode::Pipeline => config.rule,
            WarnMode::Naive => Rule { clear_below: config.rule.warn_at, for_ms: 0, forecast: false, ..config.rule },
        };
        let inhibits = if config.inhibit && config.mode == WarnMode::Pipeline {
            let one = |k: &str, v: &str| -> Labels { [(k.to_owned(), v.to_owned())].into_iter().collect() };
            let mutes = |source: &str, target: &str| Inhibit {
                source: one("alertname", source),
                target: one("alertname", target),
                equal: vec!["model".into(), "dimension".into()],
            };
            vec![
                mutes("PoolNearLimit", "QuotaNearLimit"),
                mutes("PoolAtRisk", "QuotaNearLimit"),
                mutes("PoolAtRisk", "PoolNearLimit"),
            ]
        } else {
            Vec::new()
        };
        Self {
            monitor: Monitor::new(rule, config.trend_window_ms),
            pipeline: Pipeline::new(config.route.clone(), inhibits),
            health: HealthAlerts::default(),
            risk: Risk::default(),
            notified: Default::default(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &WarnConfig {
        &self.config
    }

    /// Series watched (bounded by the pool).
    pub fn series(&self) -> usize {
        self.monitor.len()
    }

    /// Since when an alert naming `model` and `dimension` has been firing, if one that was
    /// notified is firing now (the earliest start): the operator knows that pool is short.
    pub fn firing_since(&self, model: &str, dimension: &str) -> Option<Timestamp> {
        let about = |l: &Labels| {
            l.get("model").is_some_and(|m| m == model) && l.get("dimension").is_some_and(|d| d == dimension)
        };
        self.notified.iter().filter(|(l, _)| about(l)).map(|(_, t)| *t).min()
    }

    /// Evaluates every bucket and pool of `engine` at `now`; returns the notifications due.
    pub fn evaluate<S: QuotaStore>(&mut self, engine: &Engine<S>, now: Timestamp) -> Vec<Notification> {
        self.evaluate_with(engine, now, &|b| engine.usage(b, now).ok())
    }

    /// [`Warner::evaluate`] with each bucket's counters from `usage` (read ahead, for a store
    /// that answers asynchronously: [`Engine::usages_async`]); a bucket it has no counters for
    /// is watched as full, as admission sees it.
    pub fn evaluate_with<S: Buckets>(
        &mut self,
        engine: &Engine<S>,
        now: Timestamp,
        usage: &dyn Fn(BucketId) -> Option<Usage>,
    ) -> Vec<Notification> {
        let out = self.evaluate_rules(engine, now, usage);
        for a in out.iter().flat_map(|n| &n.alerts) {
            match a.ends_at {
                None => {
                    self.notified.entry(a.labels.clone()).or_insert(a.starts_at);
                }
                Some(_) => {
                    self.notified.remove(&a.labels);
                }
            }
        }
        // Resolved while muted, or resolved without a notice (`send_resolved = false`): gone.
        if self.config.mode == WarnMode::Pipeline {
            let pipeline = &self.pipeline;
            self.notified.retain(|l, _| pipeline.is_firing(l));
        }
        out
    }

    fn evaluate_rules<S: Buckets>(
        &mut self,
        engine: &Engine<S>,
        now: Timestamp,
        read: &dyn Fn(BucketId) -> Option<Usage>,
    ) -> Vec<Notification> {
        let mut changes = Vec::new();
        let engine_pool = engine.pool();
        let ep = &*engine_pool;
        for (m, spec) in ep.models().iter().enumerate() {
            let model = spec.name.as_str();
            let groups = ep.groups(m);
            // A bucket the store cannot read is watched as full: that is what admission sees.
            let full = |g: &crate::Group| {
                let c = ep.ceilings(g.bucket);
                Usage {
                    minute_requests: c.get(crate::Dimension::Rpm),
                    minute_tokens: c.get(crate::Dimension::Tpm),
                    day_requests: c.get(crate::Dimension::Rpd),
                    day_tokens: c.get(crate::Dimension::Tpd),
                    minute_frees_at: None,
                    day_ends: crate::next_pacific_midnight(now),
                    cooling_until: None,
                }
            };
            let usage: Vec<Usage> = groups.iter().map(|g| read(g.bucket).unwrap_or_else(|| full(g))).collect();
            if self.config.mode == WarnMode::Naive {
                for (g, u) in groups.iter().zip(&usage) {
                    let project = ep.projects()[g.project].id.as_str();
                    for k in &g.keys {
                        let key = crate::redact(&ep.keys()[k.0 as usize].id);
                        let labels = [("key", key.as_str()), ("project", project), ("model", model)];
                        let id = KEY + u64::from(k.0) * ep.models().len() as u64 + m as u64;
                        let s = Subject { id, alertname: "KeyNearLimit", labels: &labels, name: &key, projects: 1 };
                        changes.extend(self.monitor.observe(&s, u, ep.ceilings(g.bucket), now));
                    }
                }
                continue;
            }
            if groups.is_empty() {
                changes.extend(self.risk.emptied(m, model));
                continue;
            }
            // The pool first: a project's own alert is worth sending only where it runs out
            // clearly before its pool does (an imbalance); where the whole pool runs dry, the
            // pool's alert says it once.
            let mut pool = Usage { day_ends: now, ..Usage::default() };
            let mut pool_ceilings = [0u64; 4];
            for (g, u) in groups.iter().zip(&usage) {
                add_usage(&mut pool, u);
                for (sum, x) in pool_ceilings.iter_mut().zip(ep.ceilings(g.bucket).0) {
                    *sum = sum.saturating_add(x);
                }
            }
            let labels = [("model", model)];
            let name = format!("the {model} pool");
            let pool_id = POOL + m as u64;
            let s = Subject {
                id: pool_id,
                alertname: "PoolNearLimit",
                labels: &labels,
                name: &name,
                projects: groups.len() as u32,
            };
            changes.extend(self.monitor.observe(&s, &pool, &Ceilings(pool_ceilings), now));
            let parts: Vec<(&crate::Group, &str, &Ceilings)> = groups
                .iter()
                .map(|g| (g, ep.projects()[g.project].id.as_str(), ep.normal_ceilings(g.bucket)))
                .collect();
            changes.extend(self.risk.evaluate(&self.config.risk, m, model, &parts, &usage, engine.demand(m, now), now));
            if !self.config.project_alerts {
                continue;
            }
            let monitor = &self.monitor;
            let pool_runs_out: Vec<Option<Timestamp>> = crate::Dimension::ALL
                .iter()
                .map(|d| monitor.last(pool_id, *d).and_then(|o| o.exhausts_at.filter(|e| *e < o.resets_at)))
                .collect();
            let gate = |d: crate::Dimension, own: Option<Timestamp>| match pool_runs_out[d.index()] {
                None => true,
                Some(p) => own.is_some_and(|o| o.since(now) as f64 <= IMBALANCE * p.since(now) as f64),
            };
            let per_key = engine.config().scope == crate::QuotaScope::Key;
            for (g, u) in groups.iter().zip(&usage) {
                let project = ep.projects()[g.project].id.as_str();
                // With quota counted per key, each key is a bucket of its own: name it.
                let key = match (per_key, g.keys.first()) {
                    (true, Some(k)) => Some(crate::redact(&ep.keys()[k.0 as usize].id)),
                    _ => None,
                };
                let mut labels = vec![("project", project), ("model", model)];
                if let Some(k) = &key {
                    labels.push(("key", k.as_str()));
                }
                let s = Subject {
                    id: u64::from(g.bucket.0),
                    alertname: "QuotaNearLimit",
                    labels: &labels,
                    name: project,
                    projects: 1,
                };
                changes.extend(self.monitor.observe_gated(&s, u, ep.ceilings(g.bucket), now, &gate));
            }
        }
        changes.extend(self.monitor.forget_unseen(now));
        let buckets: Vec<u32> =
            ep.models().iter().enumerate().flat_map(|(m, _)| ep.groups(m).iter().map(|g| g.bucket.0)).collect();
        self.risk.retain_buckets(&buckets);
        match self.config.mode {
            WarnMode::Naive => changes
                .into_iter()
                .map(|c| {
                    let resolved = c.transition == Transition::Resolved;
                    Notification {
                        group_labels: c.labels.clone(),
                        firing: !resolved,
                        alerts: vec![AlertOut {
                            labels: c.labels,
                            annotations: c.annotations,
                            starts_at: c.since,
                            ends_at: resolved.then_some(now),
                        }],
                    }
                })
                .collect(),
            WarnMode::Pipeline => {
                for c in changes {
                    match c.transition {
                        Transition::Fired => self.pipeline.fire(c.labels, c.annotations, now),
                        Transition::Resolved => self.pipeline.resolve(&c.labels, now),
                        Transition::Reminded => self.pipeline.remind(c.labels, c.annotations, now),
                    }
                }
                self.health.evaluate(engine, &self.config.health, now, &mut self.pipeline);
                self.pipeline.flush(now)
            }
        }
    }
}

fn add_usage(sum: &mut Usage, u: &Usage) {
    sum.minute_requests += u.minute_requests;
    sum.minute_tokens += u.minute_tokens;
    sum.day_requests += u.day_requests;
    sum.day_tokens += u.day_tokens;
    sum.day_ends = u.day_ends;
    sum.minute_frees_at = match (sum.minute_frees_at, u.minute_frees_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

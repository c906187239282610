//! `summary.json`: the user-facing contract of a run, and the expectations checked on it.
//!
//! Everything here is deterministic for a scenario and seed except `overhead_ns` (measured on
//! the real clock), which is kept in its own object.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{redact, Aggregate, Counts};
use crate::engine::{Buckets, Dimension, Engine, Setting, Timestamp};
use crate::scenario::{Expectation, Metric, Scenario};

/// Percentiles of real-clock engine time, in nanoseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Overhead {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Number of calls measured.
    pub calls: u64,
    /// Settlement time percentiles (p50, p99).
    pub settle_p50: u64,
    /// Settlement 99th percentile.
    pub settle_p99: u64,
}

/// Percentiles of a duration in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Millis {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
    /// Number of samples.
    pub count: u64,
}

/// Token totals of succeeded requests.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tokens {
    /// True input tokens (usageMetadata.promptTokenCount).
    pub input_actual: u64,
    /// What the estimator predicted for them.
    pub input_estimated: u64,
    /// Output tokens.
    pub output_actual: u64,
}

/// Requests by terminal state, plus how many waited and how much capacity was lost.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Requests {
    /// Every request that arrived.
    pub total: u64,
    /// Answered.
    pub succeeded: u64,
    /// Admitted, answered 429.
    pub breaches: u64,
    /// Never sent.
    pub denied: u64,
    /// Sent, failed otherwise.
    pub failed: u64,
    /// Waited in the queue at least once.
    pub delayed: u64,
    /// Denied or delayed while the provider would have accepted them.
    pub lost_capacity: u64,
    /// What an ideal dispatcher could have served.
    pub servable: u64,
    /// High-priority requests.
    pub high_priority: Counts,
    /// Denials by reason.
    pub denied_by_reason: std::collections::BTreeMap<String, u64>,
    /// Failures by cause: a capacity 429, a 5xx, a rejected key, a timeout are failures,
    /// counted apart from breaches (quota 429s).
    pub failed_by_reason: std::collections::BTreeMap<String, u64>,
}

/// `summary.health`: what the engine did about the provider's misbehaviour.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct HealthInfo {
    /// Keys disabled after the provider rejected them (each time).
    pub keys_disabled: u64,
    /// Probe requests let through to disabled keys.
    pub keys_probed: u64,
    /// Keys a probe revived.
    pub keys_revived: u64,
    /// Limits learned from 429s ("gemini-2.5-flash RPD 250 → 20 for proj-3").
    pub limits_learned: u64,
    /// Back-offs of a model after capacity refusals.
    pub model_backoffs: u64,
    /// What happened, in words (the first 50).
    pub events: Vec<String>,
}

/// Estimation accuracy for one language.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Accuracy {
    /// Requests measured: succeeded ones, estimated after the estimator warmed up.
    pub requests: u64,
    /// Succeeded requests estimated before the estimator warmed up, left out of the figures
    /// (a learning estimator's first guesses; always 0 for the others).
    pub warm_up_requests: u64,
    /// Mean absolute error, percent of the true count.
    pub mae_pct: f64,
    /// Mean signed error, percent (positive: over-estimates).
    pub bias_pct: f64,
    /// 95th percentile of the absolute error, percent.
    pub p95_error_pct: f64,
    /// Share of requests whose estimate was below the true count.
    pub under_estimate_rate: f64,
}

/// How good the engine's token estimates were.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Estimation {
    /// The estimator.
    pub estimator: String,
    /// By language (`synthetic` for prompts known only by size).
    pub by_language: std::collections::BTreeMap<String, Accuracy>,
    /// Estimators measured beside the engine's on the same succeeded requests
    /// (`shadow_estimators`), by name, then by language.
    pub shadows: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Accuracy>>,
}

/// Accuracy by language from the ledger's sums.
fn accuracy(
    by_lang: &std::collections::BTreeMap<String, super::EstimateStats>,
) -> std::collections::BTreeMap<String, Accuracy> {
    by_lang
        .iter()
        .map(|(lang, e)| {
            let n = e.requests.max(1) as f64;
            let a = Accuracy {
                requests: e.requests,
                warm_up_requests: e.warm_up,
                mae_pct: round6(e.abs_error_sum / n * 100.0),
                bias_pct: round6(e.signed_error_sum / n * 100.0),
                p95_error_pct: round6(e.abs_error.value_at_quantile(0.95).saturating_sub(1) as f64 / 100.0),
                under_estimate_rate: round6(e.under as f64 / n),
            };
            (lang.clone(), a)
        })
        .collect()
}

/// Early-warning figures, scored against what really ran out (see `report::score`).
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct Warnings {
    /// Whether warning rules ran (`[warnings]` in the scenario).
    pub enabled: bool,
    /// `pipeline` or `naive` (empty when off).
    pub mode: &'static str,
    /// Notifications sent, firing and resolved.
    pub notifications: u64,
    /// Of which resolved notices.
    pub resolved: u64,
    /// Firing notifications followed by real exhaustion within their horizon.
    pub true_positive: u64,
    /// Firing notifications not followed by exhaustion.
    pub false_positive: u64,
    /// Firing notifications whose horizon outlasted the run.
    pub undecided: u64,
    /// Exhaustion events: spells in which a model's pool had nothing left on a dimension.
    pub exhaustions: u64,
    /// Spells warned: in advance, or while an alert notified before them was firing.
    pub warned: u64,
    /// Spells foretold in advance by a notification, within its stated horizon.
    pub warned_in_advance: u64,
    /// Spells that began while an alert on them, notified before, was still firing.
    pub warned_while_firing: u64,
    /// Spells without a warning.
    pub missed: u64,
    /// Of the missed spells, those that began during the run's first burst (which the run's
    /// own history cannot foresee).
    pub missed_first_burst: u64,
    /// True positives ÷ decided firing notifications (`null` when none was decided).
    pub precision: Option<f64>,
    /// Warned ÷ exhaustion events (`null` when nothing ran out).
    pub recall: Option<f64>,
    /// Notifications per exhaustion event (all notifications when nothing ran out).
    pub notifications_per_exhaustion: f64,
    /// Notifications per hour of the run.
    pub notifications_per_hour: f64,
    /// Lead time of the spells warned in advance, in seconds.
    pub lead_time_s: LeadTime,
    /// Every spell (up to 10,000): when it began, on what, and how it was foretold.
    pub spells: Vec<SpellRow>,
    /// What the webhook did, if one is configured (real-clock figures).
    pub webhook: Option<crate::notify::webhook::WebhookStats>,
}

/// One spell in which a model's pool had nothing left on one dimension.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpellRow {
    /// When it began (seconds from the run's start).
    pub t_s: f64,
    /// The model.
    pub model: String,
    /// The dimension that ran out.
    pub dimension: &'static str,
    /// `advance`, `while-firing` or `missed`.
    pub foretold: &'static str,
    /// Lead time of an advance warning, in seconds.
    pub lead_s: Option<f64>,
    /// Whether it began during the run's first burst.
    pub first_burst: bool,
}

/// Lead time of warned exhaustion events, in seconds.
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct LeadTime {
    /// Shortest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// Longest.
    pub max: f64,
}

/// `a ÷ b`, rounded, if `b` is not 0.
fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| round6(a as f64 / b as f64))
}

impl Warnings {
    fn new(sc: &Scenario, score: Option<&super::score::WarningScore>) -> Self {
        let (Some(def), Some(s)) = (&sc.warnings, score) else { return Self::default() };
        let secs = |ms: u64| round6(ms as f64 / 1000.0);
        let lead = if s.lead_ms.is_empty() {
            LeadTime::default()
        } else {
            let p50 = s.lead_ms.value_at_quantile(0.5).clamp(s.lead_min_ms, s.lead_max_ms);
            LeadTime { min: secs(s.lead_min_ms), p50: secs(p50), max: secs(s.lead_max_ms) }
        };
        Self {
            enabled: true,
            mode: def.config.mode.name(),
            notifications: s.notifications,
            resolved: s.resolved,
            true_positive: s.true_positive,
            false_positive: s.false_positive,
            undecided: s.undecided,
            exhaustions: s.exhaustions,
            warned: s.warned,
            warned_in_advance: s.warned_in_advance,
            warned_while_firing: s.warned_while_firing,
            missed: s.missed,
            missed_first_burst: s.missed_first_burst,
            precision: ratio(s.true_positive, s.true_positive + s.false_positive),
            recall: ratio(s.warned, s.exhaustions),
            notifications_per_exhaustion: round6(s.notifications as f64 / s.exhaustions.max(1) as f64),
            notifications_per_hour: round6(s.notifications as f64 * 3_600_000.0 / sc.duration_ms.max(1) as f64),
            lead_time_s: lead,
            spells: s
                .spells
                .iter()
                .map(|x| SpellRow {
                    t_s: secs(x.at.since(sc.start)),
                    model: sc.models[x.model].name.clone(),
                    dimension: x.dimension.name(),
                    foretold: x.foretold.name(),
                    lead_s: x.lead_ms.map(secs),
                    first_burst: x.first_burst,
                })
                .collect(),
            webhook: None,
        }
    }
}

/// How a run ran: simulated in virtual time, or real-time load over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// `keysim run`: the simulator.
    Sim,
    /// `keysim load`: real time against an HTTP target.
    Load,
}

crate::engine::setting!(RunMode { Sim => "sim", Load => "load" });

impl Serialize for RunMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for RunMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One (key, model) row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KeyRow {
    /// The key (redacted if it looks like a secret).
    pub key: String,
    /// Its project.
    pub project: String,
    /// The model.
    pub model: String,
    /// Its state at the end of the run.
    pub state: &'static str,
    /// Requests it served.
    pub succeeded: u64,
    /// 429s it received.
    pub breaches: u64,
    /// Other failures.
    pub failed: u64,
    /// Denials that named this key's quota bucket (shared by its project's keys).
    pub denied: u64,
}

/// One (project, model) row.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProjectRow {
    /// Project id.
    pub project: String,
    /// Model.
    pub model: String,
    /// Counts of requests charged to (or denied on) this project.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Capacity of one model at the end of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CapacityRow {
    /// Model.
    pub model: String,
    /// Projects with a usable key.
    pub projects: usize,
    /// Usable keys.
    pub keys: usize,
    /// Sum of RPM limits.
    pub rpm: u64,
    /// Sum of TPM limits.
    pub tpm: u64,
    /// Sum of RPD limits.
    pub rpd: u64,
}

/// An expectation and how the run fared.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExpectationResult {
    /// The metric.
    pub name: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// The measured value.
    pub actual: f64,
    /// The comparison, e.g. `">= 0.99"`.
    pub limit: String,
}

/// The engine settings of the run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EngineInfo {
    /// Strategy name.
    pub strategy: &'static str,
    /// The gateway: `atomic` (keysim), or a reference (`check-then-act`, `none`,
    /// `rotate-blacklist`, `cooldown-retrydelay`).
    pub admission: &'static str,
    /// `project` or `key`.
    pub quota_scope: &'static str,
    /// Reserve fraction.
    pub reserve: f64,
    /// Safety fraction.
    pub safety: f64,
    /// Estimator name.
    pub estimator: String,
    /// Minute semantics of the judge.
    pub enforcement: &'static str,
}

/// `summary.replicas`: the replicas of a simulated run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplicasInfo {
    /// How many engines.
    pub count: u32,
    /// `strict`, `cached`, `leased` or `unshared`.
    pub mode: &'static str,
    /// Cached: sync interval; leased: renewal interval (ms).
    pub interval_ms: u64,
    /// Strict: median round trip to the store (ms).
    pub latency_ms: u64,
    /// A store call slower than this fails closed (ms).
    pub deadline_ms: u64,
    /// Spells the store was down, and slow.
    pub outages: usize,
    /// Spells the store was slow.
    pub slowdowns: usize,
    /// Requests denied because the store could not answer.
    pub store_unavailable: u64,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// `sim` or `load`.
    pub mode: RunMode,
    /// Start of the run (RFC 3339, UTC).
    pub start: String,
    /// Length of traffic, in seconds.
    pub duration_s: f64,
    /// Engine settings.
    pub engine: EngineInfo,
    /// Requests.
    pub requests: Requests,
    /// Tokens.
    pub tokens: Tokens,
    /// Succeeded / servable.
    pub utilization: f64,
    /// Succeeded / total.
    pub success_rate: f64,
    /// Queue wait of requests that waited.
    pub queue_wait_ms: Millis,
    /// Provider latency of sent requests.
    pub latency_ms: Millis,
    /// Token estimation accuracy.
    pub estimation: Estimation,
    /// Warnings.
    pub warnings: Warnings,
    /// Real-clock figures of a load run (`mode = "load"`); null for simulations.
    pub load: Option<super::load::LoadFigures>,
    /// What the engine did about the provider's misbehaviour.
    pub health: HealthInfo,
    /// Simulated engine replicas and how they shared quota (`[replicas]`); null for one engine.
    /// Their over-admission shows as `requests.breaches`, their cost as `requests.lost_capacity`.
    pub replicas: Option<ReplicasInfo>,
    /// Capacity at the end.
    pub capacity: Vec<CapacityRow>,
    /// Per (project, model).
    pub per_project: Vec<ProjectRow>,
    /// Per (key, model).
    pub per_key: Vec<KeyRow>,
    /// Expectations.
    pub expectations: Vec<ExpectationResult>,
    /// Engine time on the real clock: the one figure that differs between identical runs.
    pub overhead_ns: Overhead,
}

fn millis(h: &Histogram<u64>) -> Millis {
    Millis { p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99), max: h.max(), count: h.len() }
}

impl Summary {
    /// Builds the summary of a finished run.
    pub fn new<S: Buckets>(sc: &Scenario, mode: RunMode, agg: &Aggregate, engine: &Engine<S>) -> Self {
        let c = &agg.counts;
        let servable = agg.servable.unwrap_or(c.total);
        let end = Timestamp(sc.start.0 + sc.duration_ms);
        let cfg = engine.config();
        let pool = engine.pool();
        let (models, projects) = (pool.models(), pool.projects());
        let per_key = engine_keys(engine, agg);
        let per_project = agg
            .per_project
            .iter()
            .enumerate()
            .flat_map(|(p, row)| row.iter().enumerate().map(move |(m, c)| (p, m, *c)))
            .filter(|(_, _, c)| c.total > 0)
            .map(|(p, m, counts)| ProjectRow { project: projects[p].id.clone(), model: models[m].name.clone(), counts })
            .collect();
        let capacity = (0..models.len())
            .map(|m| {
                // The pool's totals only: what the run left unused is in the timeline.
                let cap = engine.capacity_with(m, end, &|_| None);
                CapacityRow {
                    model: models[m].name.clone(),
                    projects: cap.projects,
                    keys: cap.keys,
                    rpm: cap.limit(Dimension::Rpm),
                    tpm: cap.limit(Dimension::Tpm),
                    rpd: cap.limit(Dimension::Rpd),
                }
            })
            .collect();
        let o = &agg.admit_ns;
        let mut s = Summary {
            scenario: sc.name.clone(),
            seed: sc.seed,
            mode,
            start: sc.start.to_rfc3339(),
            duration_s: sc.duration_ms as f64 / 1000.0,
            engine: EngineInfo {
                strategy: cfg.strategy.name(),
                admission: sc.gateway.name(),
                quota_scope: cfg.scope.name(),
                reserve: cfg.reserve,
                safety: cfg.safety,
                estimator: engine.estimator().name().to_owned(),
                enforcement: sc.provider.enforcement.name(),
            },
            requests: Requests {
                total: c.total,
                succeeded: c.succeeded,
                breaches: c.breaches,
                denied: c.denied,
                failed: c.failed,
                delayed: agg.delayed,
                lost_capacity: agg.lost_capacity,
                servable,
                high_priority: agg.by_priority[1],
                denied_by_reason: agg.deny_reasons.clone(),
                failed_by_reason: agg.fail_reasons.clone(),
            },
            tokens: Tokens {
                input_actual: agg.input_actual,
                input_estimated: agg.input_estimated,
                output_actual: agg.output_actual,
            },
            utilization: if servable == 0 { 1.0 } else { round6(c.succeeded as f64 / servable as f64) },
            success_rate: round6(c.success_rate()),
            queue_wait_ms: millis(&agg.queue_wait_ms),
            latency_ms: millis(&agg.latency_ms),
            estimation: Estimation {
                estimator: engine.estimator().name().to_owned(),
                by_language: accuracy(&agg.estimation),
                shadows: sc
                    .engine
                    .shadow_estimators
                    .iter()
                    .zip(&agg.shadow_estimation)
                    .map(|(k, by_lang)| (k.name().to_owned(), accuracy(by_lang)))
                    .collect(),
            },
            warnings: Warnings::new(sc, agg.warnings.as_ref()),
            load: None,
            health: {
                let h = engine.health();
                let model = |i: usize| models.get(i).map_or("?", |m| m.name.as_str());
                let events = h
                    .events
                    .iter()
                    .take(50)
                    .map(|e| match e {
                        crate::engine::health::HealthEvent::ModelBackoff { model: m, until, at } => format!(
                            "{} backs off for {} ms (provider capacity)",
                            model(*m),
                            until.0.saturating_sub(at.0)
                        ),
                        crate::engine::health::HealthEvent::ModelRecovered { model: m, .. } => {
                            format!("{} serves again", model(*m))
                        }
                        e => e.to_string(),
                    })
                    .collect();
                HealthInfo {
                    keys_disabled: h.keys_disabled + agg.blacklisted,
                    keys_probed: h.keys_probed,
                    keys_revived: h.keys_revived,
                    limits_learned: h.limits_learned,
                    model_backoffs: h.model_backoffs,
                    events,
                }
            },
            replicas: sc.replicas.as_ref().map(|r| ReplicasInfo {
                count: r.count,
                mode: r.mode.name(),
                interval_ms: r.interval_ms,
                latency_ms: r.latency_ms,
                deadline_ms: r.deadline_ms,
                outages: r.outages.len(),
                slowdowns: r.slowdowns.len(),
                store_unavailable: agg.deny_reasons.get("store-unavailable").copied().unwrap_or(0),
            }),
            capacity,
            per_project,
            per_key,
            expectations: Vec::new(),
            overhead_ns: Overhead {
                p50: o.value_at_quantile(0.5),
                p99: o.value_at_quantile(0.99),
                p999: o.value_at_quantile(0.999),
                max: o.max(),
                calls: o.len(),
                settle_p50: agg.settle_ns.value_at_quantile(0.5),
                settle_p99: agg.settle_ns.value_at_quantile(0.99),
            },
        };
        s.expectations = sc.expect.iter().map(|e| s.check(e)).collect();
        s
    }

    /// The value of a metric in this run.
    pub fn metric(&self, m: Metric) -> f64 {
        let r = &self.requests;
        match m {
            Metric::Breaches => r.breaches as f64,
            Metric::Succeeded => r.succeeded as f64,
            Metric::Denied => r.denied as f64,
            Metric::Failed => r.failed as f64,
            Metric::Total => r.total as f64,
            Metric::SuccessRate => self.success_rate,
            Metric::HighSuccessRate => round6(r.high_priority.success_rate()),
            Metric::Utilization => self.utilization,
            Metric::QueueWaitP99 => self.queue_wait_ms.p99 as f64,
            Metric::OverheadP99 => self.overhead_ns.p99 as f64,
            Metric::Notifications => self.warnings.notifications as f64,
            Metric::WarningsMissed => self.warnings.missed as f64,
            Metric::WarningsPrecision => self.warnings.precision.unwrap_or(1.0),
            Metric::WarningsRecall => self.warnings.recall.unwrap_or(1.0),
            Metric::WarningsFalsePositive => self.warnings.false_positive as f64,
            Metric::WarningLeadTimeMin => self.warnings.lead_time_s.min,
            Metric::WarningLeadTimeP50 => self.warnings.lead_time_s.p50,
            Metric::NotificationsPerHour => self.warnings.notifications_per_hour,
            Metric::NotificationsPerSpell => self.warnings.notifications_per_exhaustion,
        }
    }

    fn check(&self, e: &Expectation) -> ExpectationResult {
        let actual = self.metric(e.metric);
        ExpectationResult {
            name: e.metric.name(),
            ok: e.cmp.holds(actual, e.limit),
            actual,
            limit: format!("{} {}", e.cmp.symbol(), e.limit),
        }
    }

    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.expectations.iter().all(|e| e.ok)
    }
}

fn engine_keys<S: Buckets>(engine: &Engine<S>, agg: &Aggregate) -> Vec<KeyRow> {
    let pool = engine.pool();
    let (models, projects) = (pool.models(), pool.projects());
    let mut rows = Vec::new();
    for (k, key) in pool.keys().iter().enumerate() {
        for (m, model) in models.iter().enumerate() {
            let counts = super::counts_at(&agg.per_key, k, m);
            let denied = super::counts_at(&agg.per_project, key.project, m).denied;
            rows.push(KeyRow {
                key: redact(&key.id),
                project: projects[key.project].id.clone(),
                model: model.name.clone(),
                state: if key.revoked {
                    "revoked"
                } else if key.removed {
                    "removed"
                } else if !key.enabled {
                    "disabled"
                } else {
                    "active"
                },
                succeeded: counts.succeeded,
                breaches: counts.breaches,
                failed: counts.failed,
                denied,
            });
        }
    }
    rows
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

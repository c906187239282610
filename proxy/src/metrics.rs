//! The proxy's Prometheus metrics (prometheus-client): counters and histograms as requests
//! go by, and gauges of the pool (usage and limit per project, model and dimension, what is
//! left, usable keys, warnings firing) read from the engine when scraped.
//!
//! Labels name projects, models, dimensions and reasons, never keys: a key's id appears
//! nowhere in a scrape.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::store::Buckets;
use crate::engine::warn::Notification;
use crate::engine::Dimension;
use crate::engine::Engine;

/// Labels of one model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The model's name.
    pub model: String,
}

/// A model and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The model's name.
    pub model: String,
    /// The reason or cause.
    pub reason: String,
}

/// How a request the proxy served ended, by surface.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `gemini` or `openai`.
    pub surface: String,
    /// `succeeded`, `denied`, `rate_limited`, `failed`, `rejected` (bad request or token).
    pub outcome: String,
}

/// A project, model and dimension.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketLabels {
    /// The project's id.
    pub project: String,
    /// The model's name.
    pub model: String,
    /// `rpm`, `tpm`, `rpd` or `tpd`.
    pub dimension: String,
}

/// A model and dimension.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DimensionLabels {
    /// The model's name.
    pub model: String,
    /// `rpm`, `tpm`, `rpd` or `tpd`.
    pub dimension: String,
}

/// An alert's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    /// `PoolNearLimit`, `KeyDisabled` …
    pub alertname: String,
}

/// A result (of a reload, of a stream's settlement).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// What happened.
    pub result: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn seconds() -> Histogram {
    // 100 µs to about 30 min.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 25))
}

fn fine_seconds() -> Histogram {
    // 1 µs to about 30 ms: the engine's decisions.
    Histogram::new(exponential_buckets(0.000_001, 2.0, 16))
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by surface and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests admitted by the engine (each attempt).
    pub admissions: Family<ModelLabel, Counter>,
    /// Requests the engine did not admit, by reason.
    pub denials: Family<ReasonLabels, Counter>,
    /// Quota 429s from upstream (requests the provider refused for quota).
    pub breaches: Family<ModelLabel, Counter>,
    /// Upstream failures by cause (`internal`, `overloaded`, `timeout`, `capacity-429`,
    /// `api-key-invalid`, `permission-denied`, `transport`, `broken-stream` …).
    pub failures: Family<ReasonLabels, Counter>,
    /// Attempts again on another key after a quota 429 or a rejected key.
    pub retries: Family<ModelLabel, Counter>,
    /// Requests in admission now (waiting in the fair queue, or being decided).
    pub queue_depth: Family<ModelLabel, Gauge>,
    /// Time from arrival to admission or denial.
    pub queue_wait: Family<ModelLabel, Histogram>,
    /// Time from sending upstream to the answer's headers.
    pub upstream_latency: Family<ModelLabel, Histogram>,
    /// The engine's decision time for requests admitted without waiting.
    pub decision: Histogram,
    /// Requests in flight.
    pub inflight: Gauge,
    /// Store errors (a store that cannot answer).
    pub store_errors: Counter,
    /// Config reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// Streams settled from their usage (`usage`) or at their estimate (`estimate`).
    pub streams: Family<ResultLabel, Counter>,
    /// Traffic log lines dropped (its queue was full, or its writer gone).
    pub traffic_dropped: Counter,
    usage: Family<BucketLabels, FGauge>,
    limit: Family<BucketLabels, FGauge>,
    remaining: Family<DimensionLabels, FGauge>,
    usable_keys: Family<ModelLabel, Gauge>,
    keys_disabled: Gauge,
    warnings_firing: Family<AlertLabel, Gauge>,
    /// Alerts firing now, by their labels, from the notifications sent.
    firing: Mutex<BTreeMap<Vec<(String, String)>, String>>,
}

/// Alerts the warnings pipeline can fire.
const ALERTS: &[&str] = &[
    "PoolAtRisk",
    "PoolNearLimit",
    "QuotaNearLimit",
    "KeyNearLimit",
    "KeyDisabled",
    "PoolLostKeys",
    "ProviderCapacity",
    "LimitChanged",
];

/// Failure causes, each exported from the start.
const CAUSES: &[&str] = &[
    "internal",
    "overloaded",
    "timeout",
    "capacity-429",
    "api-key-invalid",
    "permission-denied",
    "transport",
    "broken-stream",
];

impl Metrics {
    /// A registry with every metric, prefixed `keysim_`, and a zero series for every model's
    /// usual labels, so that dashboards show 0 rather than no data.
    pub fn new(models: &[String]) -> Self {
        let m = Self::empty();
        for surface in ["gemini", "openai"] {
            for outcome in ["succeeded", "denied", "rate_limited", "failed", "unauthenticated", "rejected"] {
                let _ = m.requests.get_or_create(&RequestLabels { surface: surface.into(), outcome: outcome.into() });
            }
        }
        for model in models {
            let l = ModelLabel { model: model.clone() };
            let _ = m.admissions.get_or_create(&l);
            let _ = m.breaches.get_or_create(&l);
            let _ = m.retries.get_or_create(&l);
            let _ = m.queue_depth.get_or_create(&l);
            let _ = m.queue_wait.get_or_create(&l);
            let _ = m.upstream_latency.get_or_create(&l);
            let reasons = Dimension::ALL.iter().map(|d| format!("exhausted:{}", d.name()));
            for reason in reasons.chain(["store-unavailable".to_owned()]) {
                let _ = m.denials.get_or_create(&ReasonLabels { model: model.clone(), reason });
            }
            for cause in CAUSES {
                let _ = m.failures.get_or_create(&ReasonLabels { model: model.clone(), reason: (*cause).to_owned() });
            }
        }
        for result in ["ok", "error"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result: result.into() });
        }
        for result in ["usage", "estimate"] {
            let _ = m.streams.get_or_create(&ResultLabel { result: result.into() });
        }
        m
    }

    fn empty() -> Self {
        let mut registry = Registry::with_prefix("keysim");
        let m = Self {
            requests: Family::default(),
            admissions: Family::default(),
            denials: Family::default(),
            breaches: Family::default(),
            failures: Family::default(),
            retries: Family::default(),
            queue_depth: Family::default(),
            queue_wait: Family::new_with_constructor(seconds),
            upstream_latency: Family::new_with_constructor(seconds),
            decision: fine_seconds(),
            inflight: Gauge::default(),
            store_errors: Counter::default(),
            reloads: Family::default(),
            streams: Family::default(),
            traffic_dropped: Counter::default(),
            usage: Family::default(),
            limit: Family::default(),
            remaining: Family::default(),
            usable_keys: Family::default(),
            keys_disabled: Gauge::default(),
            warnings_firing: Family::default(),
            firing: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("proxy_requests", "Requests the proxy answered, by surface and outcome", m.requests.clone());
        r.register("admissions", "Requests the engine admitted (each attempt)", m.admissions.clone());
        r.register("denials", "Requests the engine did not admit, by reason", m.denials.clone());
        r.register("breaches", "Quota 429s from upstream", m.breaches.clone());
        r.register("failures", "Upstream failures by cause", m.failures.clone());
        r.register("retries", "Attempts again on another project or key", m.retries.clone());
        r.register("queue_depth", "Requests in admission now (queued or being decided)", m.queue_depth.clone());
        r.register("queue_wait_seconds", "Time from arrival to admission or denial", m.queue_wait.clone());
        r.register(
            "upstream_latency_seconds",
            "Time from sending upstream to the answer's headers",
            m.upstream_latency.clone(),
        );
        r.register(
            "decision_seconds",
            "The engine's decision time, requests admitted without waiting",
            m.decision.clone(),
        );
        r.register("inflight", "Requests in flight", m.inflight.clone());
        r.register("store_errors", "Quota store errors", m.store_errors.clone());
        r.register("config_reloads", "Config reloads by result", m.reloads.clone());
        r.register("streams_settled", "Streams settled from their usage or at their estimate", m.streams.clone());
        r.register("traffic_log_dropped", "Traffic log lines dropped, never waited for", m.traffic_dropped.clone());
        r.register("usage", "Usage per project, model and dimension (minute or Pacific day)", m.usage.clone());
        r.register("limit", "The provider's limit per project, model and dimension", m.limit.clone());
        r.register("remaining", "What the pool has left per model and dimension", m.remaining.clone());
        r.register("usable_keys", "Keys that can serve each model", m.usable_keys.clone());
        r.register("keys_disabled", "Keys disabled after the provider rejected them", m.keys_disabled.clone());
        r.register("warnings_firing", "Warnings firing now, by alert name", m.warnings_firing.clone());
        Self { registry, ..m }
    }

    /// Notes the alerts of `n` as firing or resolved.
    pub fn notified(&self, n: &Notification) {
        let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        for a in &n.alerts {
            let labels: Vec<(String, String)> = a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if a.ends_at.is_none() {
                let name = a.labels.get("alertname").cloned().unwrap_or_default();
                firing.insert(labels, name);
            } else {
                firing.remove(&labels);
            }
        }
    }

    /// Refreshes the pool gauges from `engine` and its buckets' counters `usages`, then
    /// renders the text format.
    pub(crate) fn scrape<S: Buckets>(&self, engine: &Engine<S>, usages: &crate::admin::Usages) -> String {
        self.refresh(engine, usages);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn refresh<S: Buckets>(&self, engine: &Engine<S>, usages: &crate::admin::Usages) {
        let now = usages.now;
        let pool = engine.pool();
        let dims = |d: Dimension| d.name().to_owned();
        self.usage.clear();
        self.limit.clear();
        self.remaining.clear();
        for (m, model) in pool.models().iter().enumerate() {
            for g in pool.groups(m) {
                let project = &pool.projects()[g.project];
                let limits = project.limits.get(m).copied().flatten().unwrap_or(model.limits);
                let usage = usages.get(g.bucket);
                if usage.is_none() {
                    self.store_errors.inc();
                }
                for d in Dimension::ALL {
                    let labels =
                        BucketLabels { project: project.id.clone(), model: model.name.clone(), dimension: dims(d) };
                    let limit = limits.get(d);
                    if limit != u64::MAX {
                        self.limit.get_or_create(&labels).set(limit as f64);
                    }
                    if let Some(u) = &usage {
                        let used = match d {
                            Dimension::Rpm => u.minute_requests,
                            Dimension::Tpm => u.minute_tokens,
                            Dimension::Rpd => u.day_requests,
                            Dimension::Tpd => u.day_tokens,
                        };
                        self.usage.get_or_create(&labels).set(used as f64);
                    }
                }
            }
            let cap = engine.capacity_with(m, now, &|b| usages.get(b));
            for d in Dimension::ALL {
                if cap.limit(d) == 0 && d == Dimension::Tpd {
                    continue;
                }
                let labels = DimensionLabels { model: model.name.clone(), dimension: dims(d) };
                self.remaining.get_or_create(&labels).set(cap.remaining[d.index()] as f64);
            }
            self.usable_keys.get_or_create(&ModelLabel { model: model.name.clone() }).set(cap.keys as i64);
        }
        self.keys_disabled.set(engine.health_now().disabled.len() as i64);
        self.warnings_firing.clear();
        for name in ALERTS {
            let _ = self.warnings_firing.get_or_create(&AlertLabel { alertname: (*name).to_owned() });
        }
        let firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        for name in firing.values() {
            self.warnings_firing.get_or_create(&AlertLabel { alertname: name.clone() }).inc();
        }
    }
}

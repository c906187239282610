//! Alerts about the pool's health, beside the quota rules and through the same pipeline:
//!
//! - `KeyDisabled` (per key): the provider rejected the key (400 `API_KEY_INVALID`, 403
//!   `PERMISSION_DENIED`); it carries nothing but probes until one passes. Resolves when a
//!   probe revives it.
//! - `PoolLostKeys`: at least [`HealthAlertConfig::lost_keys_share`] of the pool's usable keys
//!   are disabled so. Resolves when the share falls below it.
//! - `ProviderCapacity` (per model): within [`HealthAlertConfig::storm_window_ms`], the
//!   provider refused the model for want of capacity (capacity 429s, 503s, timeouts) at least
//!   [`HealthAlertConfig::storm_refusals`] times and at least
//!   [`HealthAlertConfig::storm_share`] of its answers: a storm, not background flakiness
//!   (the engine backs off pool-wide meanwhile). Resolves once a window's refusals fall below
//!   half that share (or to none).
//! - `LimitChanged` (per project, model and limit): a 429 named a limit other than the pool's
//!   ("gemini-2.5-flash RPD 250 → 20 for proj-3"); the pool follows it. An event, not a
//!   state: it fires once and resolves after [`HealthAlertConfig::limit_changed_for_ms`].
//!
//! None of them carries a `dimension` label: they say what went wrong, not that a quota is
//! about to run out, and are not scored as forecasts.

use std::collections::{BTreeMap, VecDeque};

use super::pipeline::{Labels, Pipeline};
use crate::health::HealthEvent;
use crate::{Engine, Timestamp};

/// Thresholds of the health alerts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthAlertConfig {
    /// Whether health alerts are raised at all.
    pub enabled: bool,
    /// Share of usable keys disabled at which `PoolLostKeys` fires.
    pub lost_keys_share: f64,
    /// Capacity refusals within `storm_window_ms` at which `ProviderCapacity` fires.
    pub storm_refusals: u64,
    /// Share of a window's answers refused at which `ProviderCapacity` fires.
    pub storm_share: f64,
    /// See `storm_refusals`.
    pub storm_window_ms: u64,
    /// How long a `LimitChanged` alert stays firing.
    pub limit_changed_for_ms: u64,
}

impl Default for HealthAlertConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lost_keys_share: 0.25,
            storm_refusals: 3,
            storm_share: 0.2,
            storm_window_ms: 60_000,
            limit_changed_for_ms: 3_600_000,
        }
    }
}

/// The health alerts firing, and what has been seen of the engine's events.
#[derive(Debug, Default)]
pub(crate) struct HealthAlerts {
    /// Firing alerts and their annotations.
    firing: BTreeMap<Labels, Labels>,
    /// `LimitChanged` alerts and when each resolves.
    changed: BTreeMap<Labels, (Labels, Timestamp)>,
    /// Limits learned that were already alerted on.
    learned_seen: u64,
    /// Per model, (capacity refusals, answers) so far at each evaluation within the storm
    /// window.
    refusals: Vec<VecDeque<(Timestamp, u64, u64)>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl HealthAlerts {
    /// Evaluates `engine`'s health at `now` and hands what changed to `pipeline`.
    pub(crate) fn evaluate<S: crate::Buckets>(
        &mut self,
        engine: &Engine<S>,
        config: &HealthAlertConfig,
        now: Timestamp,
        pipeline: &mut Pipeline,
    ) {
        if !config.enabled {
            return;
        }
        let health = engine.health_now();
        let pool = engine.pool();
        let mut want: BTreeMap<Labels, Labels> = BTreeMap::new();
        let mut disabled = 0usize;
        for (k, _) in &health.disabled {
            let Some(key) = pool.keys().get(k.0 as usize).filter(|k| k.usable()) else { continue };
            disabled += 1;
            let id = crate::redact(&key.id);
            let project = pool.projects()[key.project].id.as_str();
            let summary = format!("key {id} of {project} disabled: the provider rejects it; probed until it serves");
            want.insert(
                labels(&[("alertname", "KeyDisabled"), ("key", &id), ("project", project), ("severity", "warning")]),
                labels(&[("summary", &summary)]),
            );
        }
        let usable = pool.keys().iter().filter(|k| k.usable()).count();
        if usable > 0 && disabled as f64 >= config.lost_keys_share * usable as f64 && disabled > 0 {
            let summary = format!("{disabled} of the pool's {usable} keys are disabled: the provider rejects them");
            want.insert(
                labels(&[("alertname", "PoolLostKeys"), ("severity", "critical")]),
                labels(&[("summary", &summary)]),
            );
        }
        self.refusals.resize_with(health.capacity_refusals.len(), VecDeque::new);
        let counts = health.capacity_refusals.iter().zip(&health.answers);
        for (m, ((&refused, &answered), seen)) in counts.zip(&mut self.refusals).enumerate() {
            // The counts a window ago: the oldest evaluation still inside it.
            while seen.len() > 1 && now.since(seen[1].0) >= config.storm_window_ms {
                seen.pop_front();
            }
            let (_, r0, a0) = seen.front().copied().unwrap_or((now, 0, 0));
            seen.push_back((now, refused, answered));
            let (r, a) = (refused - r0, answered - a0);
            let share = r as f64 / a.max(1) as f64;
            let model = pool.models()[m].name.as_str();
            let l = labels(&[("alertname", "ProviderCapacity"), ("model", model), ("severity", "warning")]);
            let storming = r >= config.storm_refusals && share >= config.storm_share;
            let lasting = self.firing.contains_key(&l) && r > 0 && share >= config.storm_share / 2.0;
            if storming || lasting {
                let summary = format!(
                    "the provider refuses {model} for want of capacity: the engine backs off pool-wide, no key is \
                     blamed"
                );
                want.insert(l, labels(&[("summary", &summary)]));
            }
        }
        if health.limits_learned > self.learned_seen {
            let new = (health.limits_learned - self.learned_seen) as usize;
            self.learned_seen = health.limits_learned;
            let events = engine.health().events;
            let learned = events.iter().rev().filter(|e| matches!(e, HealthEvent::LimitLearned { .. })).take(new);
            let mut fresh: Vec<Labels> = Vec::new();
            for e in learned {
                let HealthEvent::LimitLearned { project, model, dimension, .. } = e else { continue };
                let limit = dimension.name();
                let l = labels(&[
                    ("alertname", "LimitChanged"),
                    ("project", project),
                    ("model", model),
                    ("limit", limit),
                    ("severity", "warning"),
                ]);
                let a = labels(&[("summary", &format!("limit changed: {e}"))]);
                // Newest first: a limit learned twice since the last evaluation says its latest.
                if !fresh.contains(&l) {
                    fresh.push(l.clone());
                    self.changed.insert(l, (a, now.plus(config.limit_changed_for_ms)));
                }
            }
        }
        self.changed.retain(|_, (_, until)| *until > now);
        for (l, (a, _)) in &self.changed {
            want.insert(l.clone(), a.clone());
        }
        for (l, a) in &want {
            if self.firing.get(l) != Some(a) {
                pipeline.fire(l.clone(), a.clone(), now);
            }
        }
        for l in self.firing.keys().filter(|l| !want.contains_key(*l)) {
            pipeline.resolve(l, now);
        }
        self.firing = want;
    }
}

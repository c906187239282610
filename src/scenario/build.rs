//! Building what a scenario describes — the engine and the judge — in one place, shared by
//! `run`, `load`, `plan`, `compare` and `mock`.

use std::sync::Arc;

use mock_server::{Judge, JudgeConfig, ModelQuota, ProjectQuota};

use super::{EstimatorKind, Scenario};
use crate::engine::estimate::{Cached, Calibrated, PerModel, Tiktoken};
use crate::engine::{
    Chars4, Clock, ConfigError, Engine, Estimator, KeySpec, ManualClock, MemoryStore, ModelSpec, PoolSpec, ProjectSpec,
    QuotaStore,
};

/// The pool a scenario starts with.
pub fn pool_spec(sc: &Scenario) -> PoolSpec {
    PoolSpec {
        models: sc.models.iter().map(|m| ModelSpec { name: m.name.clone(), limits: m.limits }).collect(),
        projects: sc
            .projects
            .iter()
            .map(|p| ProjectSpec { id: p.id.clone(), limits: p.limits.iter().map(|l| Some(*l)).collect() })
            .collect(),
        keys: sc
            .projects
            .iter()
            .flat_map(|p| p.keys.iter().map(|k| KeySpec { id: k.clone(), project: p.id.clone() }))
            .collect(),
    }
}

/// The engine a scenario describes, over an in-memory store, on `clock`.
pub fn engine(sc: &Scenario, clock: Arc<dyn Clock>) -> Result<Engine, ConfigError> {
    engine_on(sc, clock, MemoryStore::new())
}

/// The engine a scenario describes, over `store`, on `clock`.
pub fn engine_on<S: QuotaStore>(sc: &Scenario, clock: Arc<dyn Clock>, store: S) -> Result<Engine<S>, ConfigError> {
    Engine::builder(pool_spec(sc))
        .config(sc.engine.config.clone())
        .estimator(estimator(sc))
        .clock(clock)
        .store(store)
        .build()
}

/// The engine of a simulated run: virtual time on a manual clock at the scenario's start.
pub fn sim_engine(sc: &Scenario) -> Result<Engine, ConfigError> {
    engine(sc, Arc::new(ManualClock::new(sc.start)))
}

/// The estimator a scenario chooses, per model where models override it.
pub fn estimator(sc: &Scenario) -> Box<dyn Estimator> {
    let def = &sc.engine;
    if sc.models.iter().all(|m| m.estimator.is_none_or(|k| k == def.estimator)) {
        return build_estimator(sc, def.estimator);
    }
    let per_model = sc.models.iter().map(|m| build_estimator(sc, m.estimator.unwrap_or(def.estimator))).collect();
    Box::new(PerModel::new(per_model))
}

/// One estimator of `kind`, with the scenario's settings.
pub fn build_estimator(sc: &Scenario, kind: EstimatorKind) -> Box<dyn Estimator> {
    let def = &sc.engine;
    let cache = def.estimate_cache;
    match kind {
        EstimatorKind::Chars4 => Box::new(Chars4),
        EstimatorKind::Tiktoken if cache > 0 => Box::new(Cached::new(Tiktoken, cache)),
        EstimatorKind::Tiktoken => Box::new(Tiktoken),
        EstimatorKind::Tokenizer => {
            let t =
                def.tokenizer.as_ref().expect("validated: the tokenizer estimator has a tokenizer").tokenizer.clone();
            if cache > 0 {
                Box::new(Cached::new(t, cache))
            } else {
                Box::new(t)
            }
        }
        EstimatorKind::Calibrated => {
            Box::new(Calibrated::with_base(sc.models.len(), def.calibration_quantile, def.calibration_base))
        }
    }
}

/// The judge a scenario describes, with its initial keys issued.
pub fn judge(sc: &Scenario) -> Judge {
    let mut judge = Judge::new(judge_config(sc));
    for (i, p) in sc.projects.iter().enumerate() {
        for k in &p.keys {
            judge.issue_key(k, i);
        }
    }
    judge
}

/// The judge's settings for a scenario (its keys are issued apart).
pub fn judge_config(sc: &Scenario) -> JudgeConfig {
    JudgeConfig {
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
    }
}

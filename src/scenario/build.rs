//! Building what a scenario describes — the engine and the judge — in one place, shared by
//! `run`, `load`, `plan`, `compare` and `mock`.

use std::sync::Arc;

use mock_server::{Judge, JudgeConfig, ModelQuota, ProjectQuota};

use super::{EstimatorKind, Scenario, Tier};
use crate::engine::pool_file::build;
use crate::engine::{Buckets, Clock, ConfigError, Engine, Estimator, ManualClock, MemoryStore, PoolSpec};

/// The pool a scenario starts with.
pub fn pool_spec(sc: &Scenario) -> PoolSpec {
    build::pool_spec(&sc.models, &sc.projects)
}

/// The engine a scenario describes, over an in-memory store, on `clock`.
pub fn engine(sc: &Scenario, clock: Arc<dyn Clock>) -> Result<Engine, ConfigError> {
    engine_on(sc, clock, MemoryStore::new())
}

/// The engine a scenario describes, over `store`, on `clock`.
pub fn engine_on<S: Buckets>(sc: &Scenario, clock: Arc<dyn Clock>, store: S) -> Result<Engine<S>, ConfigError> {
    build::engine_on(&sc.models, &sc.projects, &sc.gateway.engine_def(&sc.engine), clock, store)
}

/// The engine of a simulated run: virtual time on a manual clock at the scenario's start.
pub fn sim_engine(sc: &Scenario) -> Result<Engine, ConfigError> {
    engine(sc, Arc::new(ManualClock::new(sc.start)))
}

/// The estimator a scenario chooses, per model where models override it.
pub fn estimator(sc: &Scenario) -> Box<dyn Estimator> {
    build::estimator(&sc.models, &sc.engine)
}

/// One estimator of `kind`, with the scenario's settings.
pub fn build_estimator(sc: &Scenario, kind: EstimatorKind) -> Box<dyn Estimator> {
    build::build_estimator(sc.models.len(), &sc.engine, kind)
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
                tier: match p.tier {
                    Tier::Free => mock_server::Tier::Free,
                    Tier::Paid => mock_server::Tier::Paid,
                },
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

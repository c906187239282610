//! The engine a pool file describes: its pool, its estimator, the engine itself.

use std::sync::Arc;

use super::model::{EngineDef, EstimatorKind, ModelDef, ProjectDef};
use crate::estimate::{Cached, Calibrated, PerModel, Tiktoken};
use crate::{Buckets, Chars4, Clock, ConfigError, Engine, Estimator, KeySpec, ModelSpec, PoolSpec, ProjectSpec};

/// The pool of `models` and `projects`.
pub fn pool_spec(models: &[ModelDef], projects: &[ProjectDef]) -> PoolSpec {
    PoolSpec {
        models: models.iter().map(|m| ModelSpec { name: m.name.clone(), limits: m.limits }).collect(),
        projects: projects
            .iter()
            .map(|p| ProjectSpec { id: p.id.clone(), limits: p.limits.iter().map(|l| Some(*l)).collect() })
            .collect(),
        keys: projects
            .iter()
            .flat_map(|p| p.keys.iter().map(|k| KeySpec { id: k.clone(), project: p.id.clone() }))
            .collect(),
    }
}

/// The engine of `models`, `projects` and `def`, over `store`, on `clock`.
pub fn engine_on<S: Buckets>(
    models: &[ModelDef],
    projects: &[ProjectDef],
    def: &EngineDef,
    clock: Arc<dyn Clock>,
    store: S,
) -> Result<Engine<S>, ConfigError> {
    Engine::builder(pool_spec(models, projects))
        .config(def.config.clone())
        .estimator(estimator(models, def))
        .clock(clock)
        .store(store)
        .build()
}

/// The estimator `def` chooses, per model where models override it.
pub fn estimator(models: &[ModelDef], def: &EngineDef) -> Box<dyn Estimator> {
    if models.iter().all(|m| m.estimator.is_none_or(|k| k == def.estimator)) {
        return build_estimator(models.len(), def, def.estimator);
    }
    let per_model =
        models.iter().map(|m| build_estimator(models.len(), def, m.estimator.unwrap_or(def.estimator))).collect();
    Box::new(PerModel::new(per_model))
}

/// One estimator of `kind`, with `def`'s settings, for a pool of `models` models.
pub fn build_estimator(models: usize, def: &EngineDef, kind: EstimatorKind) -> Box<dyn Estimator> {
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
            Box::new(Calibrated::with_base(models, def.calibration_quantile, def.calibration_base))
        }
    }
}

//! Building an engine: its settings validated once, at construction, with typed errors.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::clock::{Clock, SystemClock};
use crate::estimate::{Chars4, Estimator, OutputReserve};
use crate::pool::{Pool, PoolBuildError, PoolError, PoolSpec};
use crate::store::{Buckets, StoreError};
use crate::strategy::Strategy;
use crate::{Engine, EngineConfig, MemoryStore};

/// Why an engine cannot be built, or a pool change not applied.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A fraction outside `[0, 1)`: it is refused, never clamped.
    #[error("{field} must be at least 0 and below 1, not {value}")]
    Fraction {
        /// The setting (`reserve`, `safety`).
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The pool does not hold together.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The store could not name the pool's buckets.
    #[error("naming the pool's buckets in the store: {0}")]
    Store(#[from] StoreError),
}

impl From<PoolBuildError<StoreError>> for ConfigError {
    fn from(e: PoolBuildError<StoreError>) -> Self {
        match e {
            PoolBuildError::Pool(p) => Self::Pool(p),
            PoolBuildError::Store(s) => Self::Store(s),
        }
    }
}

impl EngineConfig {
    /// Checks every setting; the first that is out of range is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("reserve", self.reserve), ("safety", self.safety)] {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::Fraction { field, value });
            }
        }
        Ok(())
    }
}

/// Builds an [`Engine`]: the pool is required, everything else has a default (default
/// settings, the in-memory store, the `chars4` estimator, the system clock).
pub struct Builder<S = MemoryStore> {
    spec: PoolSpec,
    config: EngineConfig,
    store: S,
    estimator: Option<Box<dyn Estimator>>,
    clock: Option<Arc<dyn Clock>>,
    strategy: Option<Box<dyn Strategy>>,
}

impl Engine<MemoryStore> {
    /// Starts building an engine for the pool `spec`.
    pub fn builder(spec: PoolSpec) -> Builder<MemoryStore> {
        Builder {
            spec,
            config: EngineConfig::default(),
            store: MemoryStore::new(),
            estimator: None,
            clock: None,
            strategy: None,
        }
    }
}

impl<S: Buckets> Engine<S> {
    /// An engine over `store` for the pool `spec`, on the system clock.
    pub fn new(
        config: EngineConfig,
        spec: PoolSpec,
        store: S,
        estimator: Box<dyn Estimator>,
    ) -> Result<Self, ConfigError> {
        Engine::builder(spec).config(config).store(store).estimator(estimator).build()
    }
}

impl<S: Buckets> Builder<S> {
    /// The engine's settings.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Where quota usage lives.
    pub fn store<T: Buckets>(self, store: T) -> Builder<T> {
        let Builder { spec, config, estimator, clock, strategy, .. } = self;
        Builder { spec, config, store, estimator, clock, strategy }
    }

    /// How input tokens are estimated before sending.
    pub fn estimator(mut self, estimator: Box<dyn Estimator>) -> Self {
        self.estimator = Some(estimator);
        self
    }

    /// The clock the engine reads when it acts on its own (dropped permits, waiters).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A strategy other than the built-in one the settings name.
    pub fn strategy(mut self, strategy: Box<dyn Strategy>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// The engine, or the first thing wrong with its settings or pool.
    pub fn build(self) -> Result<Engine<S>, ConfigError> {
        let Builder { spec, config, store, estimator, clock, strategy } = self;
        config.validate()?;
        let pool = Pool::new(spec, config.scope, (config.safety, config.reserve), &mut |k| store.bucket(k))?;
        let models = pool.models().len();
        let outputs = OutputReserve::new(config.output_policy, config.output_reserve, models);
        let health = crate::health::Health::new(config.health, models);
        let engine = Engine {
            custom: strategy,
            rng: AtomicU64::new(config.seed),
            pool: ArcSwap::from_pointee(pool),
            changing: Mutex::new(()),
            config,
            store,
            clock: clock.unwrap_or_else(|| Arc::new(SystemClock)),
            estimator: estimator.unwrap_or_else(|| Box::new(Chars4)),
            outputs,
            turn: AtomicUsize::new(0),
            views: crate::slots::Slots::new(),
            exhausted: (0..models).map(|_| Default::default()).collect(),
            demand: (0..models).map(|_| Default::default()).collect(),
            exhausted_reason: (0..models).map(|_| Default::default()).collect(),
            exhausted_bucket: (0..models).map(|_| Default::default()).collect(),
            exhaustion_epoch: AtomicU64::new(0),
            #[cfg(feature = "async")]
            queues: (0..models).map(|_| Default::default()).collect(),
            #[cfg(feature = "async")]
            background: Default::default(),
            health,
        };
        engine.grow_views(&engine.pool.load());
        Ok(engine)
    }
}

//! keysim: a quota-aware engine in front of a pool of Google Gemini API keys, and the
//! laboratory that proves it before it meets production traffic.
//!
//! - [`engine`]: the `keysim-engine` crate, re-exported — pool, atomic multi-dimension
//!   admission, settlement, the fair wait queue, strategies, estimation, warnings, capacity.
//! - [`scenario`]: scenario files — parsing, validation with precise diagnostics.
//! - [`sim`]: the deterministic discrete-event simulator that drives engine and judge in
//!   virtual time.
//! - [`load`]: the same traffic and engine in real time over real HTTP (`keysim load`).
//! - [`plan`]: capacity planning — grids of pool sizes and rates, simulated on all cores.
//! - [`tune`]: warnings tuned on a scenario's own traffic — `[warnings]` settings swept on all
//!   cores against a goal.
//! - [`proxy`]: the `keysim-proxy` crate, re-exported — `keysim proxy`, the engine in front of
//!   Gemini for real clients.
//! - [`notify`]: where warning notifications go — log lines, JSON lines, a webhook (the
//!   proxy crate's).
//! - [`report`]: one aggregator fed by runs; summary, CSV writers and the terminal table.
//! - [`cli`]: the `keysim` command line.

pub mod cli;
/// The engine (crate `keysim-engine`). Its root is what a service needs; the lab reaches into
/// its modules as well, and names what it uses from them here once.
pub mod engine {
    pub use keysim_engine::*;

    pub use keysim_engine::clock::{Clock, ManualClock, ScaledClock, SystemClock, EDGE_GUARD};
    pub use keysim_engine::estimate::{Chars4, Estimator};
    pub use keysim_engine::lifecycle::{step, QueuePolicy, Reason, Step};
    pub use keysim_engine::limits::Ceilings;
    pub use keysim_engine::permit::BACKGROUND_SETTLEMENTS;
    pub use keysim_engine::pool::{Group, KeyId, KeyState, Pool, PoolError, QuotaScope};
    pub use keysim_engine::provider::{failure, key_rejected, Exhaustion, QuotaExhausted};
    pub use keysim_engine::redact::{redact, redact_text, redact_url};
    pub use keysim_engine::redis_store::{RedisStats, RedisTime};
    pub use keysim_engine::setting::Setting;
    pub use keysim_engine::store::{
        AsyncStore, BucketId, BucketKey, Buckets, Cost, Grant, QuotaStore, Reservation, Shortfall, StoreCall, Usage,
    };
    pub use keysim_engine::strategy::{Strategy, StrategyKind};
    pub use keysim_engine::time::{next_pacific_midnight, MINUTE_MS};
}
pub mod load;
pub use keysim_proxy::notify;
pub mod plan;
pub use keysim_proxy as proxy;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod tune;

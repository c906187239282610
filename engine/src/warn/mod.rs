//! Early warnings, before the pool runs dry: rules evaluated on every bucket's usage, in the
//! manner of Prometheus alerting rules, but aware of when each window resets.
//!
//! - [`forecast`]: a linear trend of a bucket's usage (as `predict_linear`) and when it
//!   would reach its limit.
//! - [`rule`]: the rule and the per-series state machine — inactive, pending for `for`,
//!   firing, resolved with hysteresis — with the forecast test that a bucket which recovers
//!   at its next reset before running out is not worth a warning.
//!
//! - [`monitor`]: a trend and a rule state per (bucket, dimension), turning counters into
//!   alerts fired and resolved.
//! - [`pipeline`]: grouping, group wait and interval, repeat throttling, inhibition and
//!   resolved notices, with Alertmanager's semantics.
//! - [`risk`]: `PoolAtRisk`, the chance that a pool runs dry within a horizon, from the
//!   recent distribution of its busiest minutes against its effective capacity.
//! - [`health`]: alerts about the pool's health (keys disabled, a pool that lost keys, a
//!   provider short of capacity, a limit changed) through the same pipeline.
//! - [`payload`]: the Alertmanager version-4 webhook body of a notification.
//! - [`warner`]: evaluates the rules over an engine's buckets and pools at an interval, in
//!   `pipeline` mode or the `naive` reference.
//!
//! Pure like the rest of the engine: every call takes `now`.

pub mod forecast;
pub mod health;
pub mod monitor;
pub mod payload;
pub mod pipeline;
pub mod risk;
pub mod rule;
pub mod warner;

pub use forecast::Trend;
pub use health::HealthAlertConfig;
pub use monitor::{Change, Monitor, Subject};
pub use pipeline::{Inhibit, Notification, Pipeline, Route};
pub use risk::RiskConfig;
pub use rule::{AlertState, Observation, Rule, Series, Transition};
pub use warner::{WarnConfig, WarnMode, Warner};

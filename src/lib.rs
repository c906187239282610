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
pub use keysim_engine as engine;
pub mod load;
pub use keysim_proxy::notify;
pub mod plan;
pub use keysim_proxy as proxy;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod tune;

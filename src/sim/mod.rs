//! The discrete-event simulator: scripted traffic through the engine against the judge, in
//! virtual time.
//!
//! Deterministic by construction: one seeded random stream per subsystem (arrivals, token
//! sizes, latency, faults), an event queue ordered by (time, sequence), no wall clock in any
//! decision. The real clock is read only to measure the engine's decision time, which is
//! reported apart.
//!
//! - [`queue`]: the event queue.
//! - [`arrivals`]: arrival processes and token-size draws.
//! - [`run`]: one run of a scenario ([`simulate`]).
//! - [`gateway`]: keysim's engine or a reference gateway, as `engine.admission` says.
//! - `traffic`, `ledger`, `oracle`: the traffic source, the counting of finished requests,
//!   and what the pool could truly have served — each on a thread of its own beside the run.

pub mod arrivals;
pub mod gateway;
mod ledger;
mod observe;
mod oracle;
mod pipe;
pub mod queue;
pub mod replicas;
pub mod run;
mod traffic;

pub use run::{servable, simulate, Outputs, RunResult, SimError};
pub(crate) use traffic::{NewRequest, Traffic};

/// Seeds of the independent random streams, derived from the scenario's seed.
pub(crate) fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

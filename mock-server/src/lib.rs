//! The fake Gemini API.
//!
//! The crate holds the **judge**: a model of how Google enforces Gemini quotas, written
//! independently of keysim's engine so that one accounting bug cannot hide on both sides.
//! The judge is pure — every call takes the time — so the simulator can drive it in virtual
//! time, and HTTP hosts can serve it in real time.
//!
//! - [`judge`]: per (project, model) enforcement of RPM, TPM, RPD and TPD with selectable
//!   semantics, the latency and fault model, and the verdicts.
//! - [`body`]: the provider's answers as data — `generateContent` responses with
//!   `usageMetadata`, and error bodies (429 `RESOURCE_EXHAUSTED` with `QuotaFailure` and
//!   `RetryInfo`, 400, 403, 404, 500, 503) exactly as Gemini sends them.
//! - [`fake`]: the HTTP API as one function of a request — routing, keys, the judge's
//!   verdicts, latency and faults — for any host to serve.
//! - `host` (feature `hosts`): HTTP hosts of the fake — a sustained hyper host with flat
//!   memory, and (feature `wiremock`) a wiremock `MockServer` for tests.
//! - [`pacific`]: the calendar of the daily quota (midnight America/Los_Angeles).
//! - [`shape`]: answers shaped by the request (JSON from its schema, function calls,
//!   candidates, stop sequences) and the tokens of images, audio and video.
//! - [`validate`]: requests read and checked as Gemini does, with its 400s.
//! - [`script`]: what the provider does on its own over time (failure storms, keys suspended
//!   and revived, limits cut), for the simulator and the hosts alike.

pub mod body;
pub mod fake;
#[cfg(feature = "hosts")]
pub mod host;
pub mod judge;
pub mod pacific;
pub mod script;
pub mod shape;
pub mod validate;

pub use judge::{
    Dimension, Enforcement, Fault, FaultModel, Judge, JudgeConfig, KeyState, LatencyModel, LatencySampler, ModelQuota,
    ProjectQuota, Tier, Usage, Verdict, Violation,
};

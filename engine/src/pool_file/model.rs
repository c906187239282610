//! The validated pool definitions: every value typed and checked, every reference resolved.

use crate::estimate::HfTokenizer;
use crate::{EngineConfig, Limits};

/// The `[warnings]` table: the warner's settings and where notifications go.
#[derive(Clone, Debug, PartialEq)]
pub struct WarningsDef {
    /// Rules, evaluation and the notification pipeline.
    pub config: crate::warn::WarnConfig,
    /// Whether each notification is also logged (tracing, target `keysim::warnings`).
    pub log: bool,
    /// An Alertmanager-style webhook receiver, if any.
    pub webhook: Option<WebhookDef>,
}

/// Where and how to post notifications.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDef {
    /// `http://host:port/path` or `https://host/path`.
    pub url: String,
    /// The whole of one attempt (connect, TLS, send, answer), ms.
    pub timeout_ms: u64,
    /// Further attempts after a failed one.
    pub retries: u32,
    /// The `receiver` field of the payload.
    pub receiver: String,
    /// Root certificates trusted besides the web's (a private CA's), if any.
    pub ca_file: Option<PemFile>,
}

/// A PEM file read while parsing: its path as written and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFile {
    /// The path as written in the file that names it.
    pub path: String,
    /// The file's contents.
    pub pem: Vec<u8>,
}

/// A `tokenizer.json` loaded from a file.
#[derive(Clone, Debug)]
pub struct TokenizerFile {
    /// The path as written in the scenario.
    pub path: String,
    /// The loaded tokenizer.
    pub tokenizer: HfTokenizer,
}

impl PartialEq for TokenizerFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// A model with default limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    /// Model name.
    pub name: String,
    /// Default limits per project.
    pub limits: Limits,
    /// The estimator for this model, if it differs from the engine's.
    pub estimator: Option<EstimatorKind>,
    /// Thinking tokens the fake's answers report (`thoughtsTokenCount`), unless a request's
    /// `thinkingBudget` is lower (0 turns thinking off).
    pub thinking_tokens: u64,
}

/// The token estimators a scenario can choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EstimatorKind {
    /// Four characters per token.
    Chars4,
    /// tiktoken's o200k encoding.
    Tiktoken,
    /// The scenario's `tokenizer.json`.
    Tokenizer,
    /// Learned from `usageMetadata`.
    Calibrated,
}

crate::setting!(EstimatorKind {
    Chars4 => "chars4",
    Tiktoken => "tiktoken",
    Tokenizer => "tokenizer",
    Calibrated => "calibrated",
});

/// A project with its keys.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectDef {
    /// Project id.
    pub id: String,
    /// Billing tier.
    pub tier: Tier,
    /// Key ids present at the start.
    pub keys: Vec<String>,
    /// Limits per model (defaults with this project's overrides).
    pub limits: Vec<Limits>,
}

/// What to do when the engine denies a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExhausted {
    /// Wait for `retry_at`, up to `max_wait`.
    Queue,
    /// Give up at once.
    Reject,
}

crate::setting!(OnExhausted { Queue => "queue", Reject => "reject" });

/// The engine's settings in a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineDef {
    /// Engine configuration.
    pub config: EngineConfig,
    /// The estimator.
    pub estimator: EstimatorKind,
    /// The tokenizer of the `tokenizer` estimator (by default the provider's).
    pub tokenizer: Option<TokenizerFile>,
    /// The quantile the `calibrated` estimator aims at.
    pub calibration_quantile: f64,
    /// What the `calibrated` estimator learns ratios to.
    pub calibration_base: crate::estimate::calibrated::Base,
    /// Entries of the estimate cache (zero: no cache).
    pub estimate_cache: usize,
    /// Estimators run beside the engine's on every succeeded request, for their accuracy only.
    pub shadow_estimators: Vec<EstimatorKind>,
    /// Queue or reject on denial.
    pub on_exhausted: OnExhausted,
    /// Longest wait in the queue, in milliseconds.
    pub max_wait_ms: u64,
}

impl EngineDef {
    /// Whether and how long a denied request waits: `on_exhausted` with `max_wait`.
    pub fn policy(&self) -> crate::QueuePolicy {
        match self.on_exhausted {
            OnExhausted::Queue => crate::QueuePolicy::Wait { max_wait_ms: self.max_wait_ms },
            OnExhausted::Reject => crate::QueuePolicy::Reject,
        }
    }
}

/// A project's billing tier (free-tier quota ids differ; the pool's limits say the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The free tier.
    #[default]
    Free,
    /// A paid tier.
    Paid,
}

crate::setting!(Tier { Free => "free", Paid => "paid" });

//! The validated scenario: every value typed and checked, every reference resolved.

use std::sync::Arc;

pub use mock_server::script::{ProviderEvent, ProviderEventAt, Storm, StormKind};
use mock_server::{Enforcement, FaultModel, LatencyModel};

use super::units::Cmp;
pub use crate::engine::pool_file::model::*;
use crate::engine::{PoolEvent, Priority, Timestamp};

/// A scenario ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name (the default output folder).
    pub name: String,
    /// What it shows, in a sentence or two (shown atop its report).
    pub description: Option<String>,
    /// `keysim compare`'s variants: a name and its settings (`--set` syntax).
    pub compare: Vec<(String, Vec<String>)>,
    /// The seed of every random stream.
    pub seed: u64,
    /// Simulated time, in milliseconds.
    pub duration_ms: u64,
    /// The calendar instant the run starts at.
    pub start: Timestamp,
    /// Timeline interval, in milliseconds.
    pub timeline_ms: u64,
    /// Whether to write one CSV row per request.
    pub requests_csv: bool,
    /// How the provider enforces quotas.
    pub provider: Provider,
    /// Models and their default limits.
    pub models: Vec<ModelDef>,
    /// Projects, their keys and resolved limits.
    pub projects: Vec<ProjectDef>,
    /// The engine under test.
    pub engine: EngineDef,
    /// keysim's engine, or the reference gateway it is compared with (`engine.admission`).
    pub gateway: crate::sim::gateway::GatewayKind,
    /// Traffic classes.
    pub traffic: Vec<TrafficClass>,
    /// Pool events, by time.
    pub events: Vec<TimedEvent>,
    /// Expectations the run is checked against.
    pub expect: Vec<Expectation>,
    /// Early warnings, if the scenario turns them on.
    pub warnings: Option<WarningsDef>,
    /// Engine replicas sharing the pool, if more than one engine runs.
    pub replicas: Option<ReplicasDef>,
}

/// The judge's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    /// The provider's tokenizer: where it is set, true input counts of text prompts come
    /// from it.
    pub tokenizer: Option<TokenizerFile>,
    /// Minute semantics.
    pub enforcement: Enforcement,
    /// Whether token limits count output tokens too (Gemini counts input only).
    pub counts_output: bool,
    /// Response times.
    pub latency: LatencyModel,
    /// Server-side failures.
    pub faults: FaultModel,
    /// Failures only a real-time host produces (dropped connections, slow answers, 503
    /// bursts); the simulator does not model them.
    pub extra_faults: mock_server::fake::ExtraFaults,
    /// What the provider does on its own: spells of failures, key states and limits changed
    /// over time (`[[events]]` `suspend`, `invalidate`, `revive`, `limits`), the shape of its
    /// quota 429s, cached tokens.
    pub script: mock_server::script::Script,
}

/// A distribution of token counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tokens {
    /// Always this many.
    Fixed(u64),
    /// Log-normal with this median and 99th percentile.
    LogNormal {
        /// Median.
        median: f64,
        /// 99th percentile.
        p99: f64,
    },
}

impl Tokens {
    /// Median and 99th percentile (equal for a fixed count).
    pub fn median_p99(&self) -> (f64, f64) {
        match *self {
            Self::Fixed(n) => (n as f64, n as f64),
            Self::LogNormal { median, p99 } => (median, p99),
        }
    }
}

/// How requests of a class arrive.
#[derive(Clone, Debug, PartialEq)]
pub enum Arrival {
    /// Evenly spaced, `rate` per second.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// A Poisson process of `rate` per second.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// `size` requests at the same instant, every `every_ms`.
    Batch {
        /// Requests per burst.
        size: u64,
        /// Milliseconds between bursts.
        every_ms: u64,
    },
    /// Poisson at `rate` during `on_ms`, silent during `off_ms`, repeating.
    OnOff {
        /// Requests per second while on.
        rate: f64,
        /// Milliseconds on.
        on_ms: u64,
        /// Milliseconds off.
        off_ms: u64,
    },
    /// Poisson with a rate moving linearly from `from` to `to` over `over_ms`, then holding.
    Ramp {
        /// Starting rate per second.
        from: f64,
        /// Final rate per second.
        to: f64,
        /// Milliseconds to get there.
        over_ms: u64,
    },
    /// Poisson with a daily cycle between `min` and `max`, peaking at `peak_ms` after midnight
    /// Pacific.
    Diurnal {
        /// Lowest rate per second.
        min: f64,
        /// Highest rate per second.
        max: f64,
        /// Time of day of the peak, milliseconds after Pacific midnight.
        peak_ms: u64,
    },
    /// Replay of recorded requests.
    Trace(Trace),
}

/// Recorded requests to replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Where they came from (for reports).
    pub file: String,
    /// The requests, by time.
    pub rows: Vec<Recorded>,
    /// Replay again from the start when the trace ends.
    pub repeat: bool,
    /// Span of one pass of the trace in milliseconds (last offset plus the mean gap).
    pub period_ms: u64,
}

/// One recorded request of a trace or a traffic log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recorded {
    /// Offset from the trace's start (ms, already divided by any speed-up).
    pub at: u64,
    /// Input tokens (ground truth).
    pub input: u64,
    /// Output tokens (ground truth).
    pub output: u64,
    /// What the provider did with it, where the record tells (a traffic log); otherwise the
    /// scenario's provider draws its latency and failures.
    pub answer: Option<Answered>,
}

/// What the provider did with a recorded request, as its log tells.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answered {
    /// Its time upstream (served requests); otherwise drawn from the provider's latency.
    pub latency_ms: Option<u64>,
    /// It failed on the provider's side (not for quota).
    pub fault: Option<mock_server::Fault>,
}

/// One class of traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficClass {
    /// Name in reports.
    pub name: String,
    /// Arrival process.
    pub arrival: Arrival,
    /// Input tokens (ground truth) of prompts known only by size.
    pub prompt_tokens: Tokens,
    /// Texts to draw prompts from, if the class sends real text.
    pub corpus: Option<Corpus>,
    /// Output tokens (ground truth).
    pub output_tokens: Tokens,
    /// Characters per input token of this class's text; the prompt length shown to the
    /// estimator is tokens × this.
    pub chars_per_token: f64,
    /// Model index.
    pub model: usize,
    /// Priority.
    pub priority: Priority,
    /// `maxOutputTokens` sent with each request.
    pub max_output_tokens: Option<u64>,
    /// Active from this offset (ms).
    pub start_ms: u64,
    /// Active until this offset (ms).
    pub end_ms: u64,
}

/// Texts a traffic class draws its prompts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// The file, as written in the scenario.
    pub file: String,
    /// The texts (after any language filter).
    pub texts: Arc<Vec<CorpusText>>,
}

/// One prompt of a corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusText {
    /// Its language (`english`, `arabic`, `chinese`, `code` …).
    pub lang: String,
    /// The prompt.
    pub text: String,
    /// Its true input token count: from the provider's tokenizer where one is set, else
    /// from the corpus file.
    pub tokens: u64,
}

/// A pool event at an offset from the start.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedEvent {
    /// Milliseconds after the start.
    pub at_ms: u64,
    /// What happens.
    pub event: PoolEvent,
}

/// A figure an expectation can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Number of breaches.
    Breaches,
    /// Number of succeeded requests.
    Succeeded,
    /// Number of denied requests.
    Denied,
    /// Number of failed requests.
    Failed,
    /// Succeeded / total.
    SuccessRate,
    /// Succeeded / total among high-priority requests.
    HighSuccessRate,
    /// Succeeded / servable.
    Utilization,
    /// 99th percentile of queue wait, in milliseconds.
    QueueWaitP99,
    /// 99th percentile of engine overhead, in nanoseconds.
    OverheadP99,
    /// Number of requests that ended in each other state.
    Total,
    /// Warning notifications sent.
    Notifications,
    /// Exhaustion events without a warning.
    WarningsMissed,
    /// Warnings not followed by exhaustion.
    WarningsFalsePositive,
    /// Shortest lead time of a warned exhaustion, in seconds.
    WarningLeadTimeMin,
    /// True positives ÷ decided warnings (1 when none was decided).
    WarningsPrecision,
    /// Warned ÷ exhaustion events (1 when nothing ran out).
    WarningsRecall,
    /// Median lead time of the spells warned in advance, in seconds (0 when none was).
    WarningLeadTimeP50,
    /// Warning notifications per hour of the run.
    NotificationsPerHour,
    /// Warning notifications per spell (all of them when nothing ran out).
    NotificationsPerSpell,
}

impl Metric {
    /// Every metric with its name in `[expect]`.
    pub const NAMES: [(&'static str, Metric); 19] = [
        ("breaches", Metric::Breaches),
        ("succeeded", Metric::Succeeded),
        ("denied", Metric::Denied),
        ("failed", Metric::Failed),
        ("total", Metric::Total),
        ("success_rate", Metric::SuccessRate),
        ("high_priority_success_rate", Metric::HighSuccessRate),
        ("utilization", Metric::Utilization),
        ("queue_wait_p99", Metric::QueueWaitP99),
        ("overhead_p99_ns", Metric::OverheadP99),
        ("notifications", Metric::Notifications),
        ("warnings_missed", Metric::WarningsMissed),
        ("warnings_false_positive", Metric::WarningsFalsePositive),
        ("warning_lead_time_min_s", Metric::WarningLeadTimeMin),
        ("warnings_precision", Metric::WarningsPrecision),
        ("warnings_recall", Metric::WarningsRecall),
        ("warning_lead_time_p50_s", Metric::WarningLeadTimeP50),
        ("notifications_per_hour", Metric::NotificationsPerHour),
        ("notifications_per_spell", Metric::NotificationsPerSpell),
    ];

    /// Its name in `[expect]`.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, m)| *m == self).map(|(n, _)| *n).expect("every metric has a name")
    }
}

/// `metric <op> limit`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expectation {
    /// What is checked.
    pub metric: Metric,
    /// How.
    pub cmp: Cmp,
    /// Against what.
    pub limit: f64,
}

/// How simulated replicas share quota (`[replicas] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicaMode {
    /// One shared store, every admission a round trip to it (the Redis store).
    #[default]
    Strict,
    /// Each replica counts locally and learns the others' counts every `interval`.
    Cached,
    /// Each replica admits from a lease of the free capacity, renewed every `interval` in
    /// proportion to its recent demand.
    Leased,
    /// Each replica counts alone, never sharing: the per-process reference (limit × count).
    Unshared,
}

crate::engine::setting!(ReplicaMode { Strict => "strict", Cached => "cached", Leased => "leased", Unshared => "unshared" });

/// A spell of the shared store's trouble: down, or slow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSpell {
    /// When it starts, ms after the run's start.
    pub at_ms: u64,
    /// How long it lasts.
    pub for_ms: u64,
    /// Slowdowns: the round trip meanwhile.
    pub latency_ms: u64,
}

impl StoreSpell {
    /// Whether `t` (ms after the start) falls in the spell.
    pub fn covers(&self, t: u64) -> bool {
        t >= self.at_ms && t < self.at_ms.saturating_add(self.for_ms)
    }
}

/// `[replicas]`: engine replicas in a simulated run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicasDef {
    /// How many (requests go to them in turn).
    pub count: u32,
    /// How they share quota.
    pub mode: ReplicaMode,
    /// Strict: the median round trip to the store.
    pub latency_ms: u64,
    /// Strict: each round trip varies uniformly by up to this much either way.
    pub jitter_ms: u64,
    /// Cached: how often counts are synced; leased: how often leases are renewed.
    pub interval_ms: u64,
    /// A store call slower than this fails, and admission fails closed.
    pub deadline_ms: u64,
    /// Spells when the store is down.
    pub outages: Vec<StoreSpell>,
    /// Spells when the store is slow.
    pub slowdowns: Vec<StoreSpell>,
}

impl Default for ReplicasDef {
    fn default() -> Self {
        Self {
            count: 2,
            mode: ReplicaMode::Strict,
            latency_ms: 1,
            jitter_ms: 0,
            interval_ms: 1_000,
            deadline_ms: 50,
            outages: Vec::new(),
            slowdowns: Vec::new(),
        }
    }
}

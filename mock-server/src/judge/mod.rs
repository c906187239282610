//! The judge: Gemini's quota enforcement as a pure model.
//!
//! Limits apply per (project, model). Every key of a project draws on the same quota. The
//! judge counts only requests it accepts, with their **true** input token counts, and
//! answers a request that would exceed any dimension with the dimensions it violates and the
//! time after which it would fit. It never reads a clock: every call takes `now` in
//! milliseconds since the Unix epoch.

mod faults;
mod meter;

use std::collections::HashMap;

pub use faults::{Fault, FaultModel, LatencyModel, LatencySampler};
use meter::{DayMeter, MinuteMeter};

/// How the provider counts a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Enforcement {
    /// A window of the last 60 seconds, moved at every request.
    Sliding,
    /// Calendar minutes: counters restart at every whole minute.
    FixedMinute,
    /// A bucket of `limit` units refilled continuously at `limit` per minute.
    TokenBucket,
}

impl Enforcement {
    /// Every semantics, for tests that must hold under each of them.
    pub const ALL: [Enforcement; 3] = [Self::Sliding, Self::FixedMinute, Self::TokenBucket];

    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sliding => "sliding",
            Self::FixedMinute => "fixed-minute",
            Self::TokenBucket => "token-bucket",
        }
    }
}

/// The billing tier of a project; it names the quota ids of 429 answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Free of charge; quota ids end in `-FreeTier`.
    Free,
    /// Billing enabled.
    Paid,
}

/// A limit dimension of Gemini's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per minute.
    Rpm,
    /// Input tokens per minute.
    Tpm,
    /// Requests per day (Pacific).
    Rpd,
    /// Input tokens per day (Pacific).
    Tpd,
}

/// The limits of one model in one project. `tpd = None` means no daily token limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelQuota {
    /// Requests per minute.
    pub rpm: u64,
    /// Input tokens per minute.
    pub tpm: u64,
    /// Requests per Pacific day.
    pub rpd: u64,
    /// Input tokens per Pacific day, if limited.
    pub tpd: Option<u64>,
}

/// A Google Cloud project as the provider sees it.
#[derive(Clone, Debug)]
pub struct ProjectQuota {
    /// The project's id.
    pub id: String,
    /// Its billing tier.
    pub tier: Tier,
    /// Limits per model, in the order of [`JudgeConfig::models`].
    pub limits: Vec<ModelQuota>,
}

/// Everything the judge needs to know.
#[derive(Clone, Debug)]
pub struct JudgeConfig {
    /// Minute semantics.
    pub enforcement: Enforcement,
    /// Model names (without the `models/` prefix).
    pub models: Vec<String>,
    /// Projects and their quotas.
    pub projects: Vec<ProjectQuota>,
    /// How long answers take.
    pub latency: LatencyModel,
    /// Server-side failures.
    pub faults: FaultModel,
}

/// One exceeded dimension of a 429 answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The exhausted dimension.
    pub dimension: Dimension,
    /// Its limit (the `quotaValue`).
    pub limit: u64,
}

/// The judge's decision on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted and counted.
    Accepted,
    /// Refused with 429: which dimensions are exhausted, and after how long the request
    /// would fit (the longest wait over the violated dimensions).
    Exhausted {
        /// The violated dimensions, in dimension order.
        violations: Vec<Violation>,
        /// Milliseconds until the request would fit.
        retry_after_ms: u64,
    },
}

/// What a key lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// A valid key of this project (index into [`JudgeConfig::projects`]).
    Valid(usize),
    /// A key the provider never issued or that was deleted: 400 `API_KEY_INVALID`.
    Invalid,
    /// A key the provider suspended (blocked, no permission): 403 `PERMISSION_DENIED`.
    Suspended,
}

/// The provider's current count in one (project, model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests counted in the current minute (as the semantics counts it).
    pub minute_requests: u64,
    /// Input tokens counted in the current minute.
    pub minute_tokens: u64,
    /// Requests counted today (Pacific).
    pub day_requests: u64,
    /// Input tokens counted today (Pacific).
    pub day_tokens: u64,
}

struct Cell {
    limits: ModelQuota,
    minute: MinuteMeter,
    day: DayMeter,
}

/// Gemini's quota enforcement for a set of projects.
pub struct Judge {
    config: JudgeConfig,
    cells: Vec<Cell>,
    keys: HashMap<String, KeyState>,
    /// The project each key was issued for, kept while it is invalid or suspended.
    owners: HashMap<String, usize>,
}

impl Judge {
    /// A judge with every counter empty.
    pub fn new(config: JudgeConfig) -> Self {
        let cells = config
            .projects
            .iter()
            .flat_map(|p| p.limits.iter())
            .map(|limits| Cell {
                limits: limits.clone(),
                minute: MinuteMeter::new(config.enforcement, limits.rpm, limits.tpm),
                day: DayMeter::default(),
            })
            .collect();
        Self { config, cells, keys: HashMap::new(), owners: HashMap::new() }
    }

    /// The configuration this judge enforces.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Issues `key` for project `project`.
    pub fn issue_key(&mut self, key: &str, project: usize) {
        assert!(project < self.config.projects.len(), "project index out of range");
        self.keys.insert(key.to_owned(), KeyState::Valid(project));
        self.owners.insert(key.to_owned(), project);
    }

    /// Suspends `key`: later requests with it get 403 `PERMISSION_DENIED`.
    pub fn suspend_key(&mut self, key: &str) {
        self.keys.insert(key.to_owned(), KeyState::Suspended);
    }

    /// Makes a deleted or suspended `key` valid again for the project it was issued for;
    /// `false` if it never was issued.
    pub fn revive_key(&mut self, key: &str) -> bool {
        match self.owners.get(key) {
            Some(&project) => {
                self.keys.insert(key.to_owned(), KeyState::Valid(project));
                true
            }
            None => false,
        }
    }

    /// Changes the limits of (`project`, `model`) from now on (the provider cut or raised
    /// them); what was counted stays counted.
    pub fn set_limits(&mut self, project: usize, model: usize, limits: ModelQuota) {
        let cell = self.cell_mut(project, model);
        cell.minute.set_limits(limits.rpm, limits.tpm);
        cell.limits = limits;
    }

    /// Deletes `key`: later requests with it get 400 `API_KEY_INVALID`.
    pub fn delete_key(&mut self, key: &str) {
        self.keys.insert(key.to_owned(), KeyState::Invalid);
    }

    /// Which project `key` belongs to, if any.
    pub fn key_state(&self, key: &str) -> KeyState {
        self.keys.get(key).copied().unwrap_or(KeyState::Invalid)
    }

    /// The index of model `name`, if the provider serves it.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.config.models.iter().position(|m| m == name)
    }

    /// Decides a request of `input_tokens` true input tokens to `model` of `project` at `now`,
    /// and counts it if accepted.
    pub fn submit(&mut self, project: usize, model: usize, input_tokens: u64, now: u64) -> Verdict {
        let verdict = self.peek(project, model, input_tokens, now);
        if verdict == Verdict::Accepted {
            let cell = self.cell_mut(project, model);
            cell.minute.record(now, input_tokens);
            cell.day.record(input_tokens);
        }
        verdict
    }

    /// What [`Judge::submit`] would answer, without counting anything.
    pub fn peek(&mut self, project: usize, model: usize, input_tokens: u64, now: u64) -> Verdict {
        let cell = self.cell_mut(project, model);
        cell.minute.advance(now);
        cell.day.advance(now);
        let limits = cell.limits.clone();
        let mut violations = Vec::new();
        let mut wait = 0u64;
        let mut note = |dimension, limit, w: Option<u64>| {
            if let Some(w) = w {
                violations.push(Violation { dimension, limit });
                wait = wait.max(w);
            }
        };
        let (rpm_wait, tpm_wait) = cell.minute.waits(now, input_tokens);
        note(Dimension::Rpm, limits.rpm, rpm_wait);
        note(Dimension::Tpm, limits.tpm, tpm_wait);
        let (rpd_wait, tpd_wait) = cell.day.waits(now, input_tokens, limits.rpd, limits.tpd);
        note(Dimension::Rpd, limits.rpd, rpd_wait);
        if let Some(tpd) = limits.tpd {
            note(Dimension::Tpd, tpd, tpd_wait);
        }
        if violations.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Exhausted { violations, retry_after_ms: wait }
        }
    }

    /// The provider's count for (`project`, `model`) at `now`.
    pub fn usage(&mut self, project: usize, model: usize, now: u64) -> Usage {
        let cell = self.cell_mut(project, model);
        let (minute_requests, minute_tokens) = cell.minute.usage(now);
        let (day_requests, day_tokens) = cell.day.usage(now);
        Usage { minute_requests, minute_tokens, day_requests, day_tokens }
    }

    /// The count for (`project`, `model`) as of the last call that touched it, without
    /// moving its windows: the figures right after a [`Judge::submit`], at no cost.
    pub fn counted(&self, project: usize, model: usize) -> Usage {
        let cell = &self.cells[project * self.config.models.len() + model];
        let (minute_requests, minute_tokens) = cell.minute.counted();
        let (day_requests, day_tokens) = cell.day.counted();
        Usage { minute_requests, minute_tokens, day_requests, day_tokens }
    }

    /// The limits of (`project`, `model`).
    pub fn limits(&self, project: usize, model: usize) -> &ModelQuota {
        &self.cells[project * self.config.models.len() + model].limits
    }

    fn cell_mut(&mut self, project: usize, model: usize) -> &mut Cell {
        let models = self.config.models.len();
        assert!(model < models, "model index out of range");
        &mut self.cells[project * models + model]
    }
}

#[cfg(test)]
mod tests;

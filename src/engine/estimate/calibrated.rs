//! An estimator that learns from the provider's own counts.
//!
//! For each model and script it keeps the last [`WINDOW`] observed ratios of actual tokens
//! (`usageMetadata.promptTokenCount`) to a base measure of the prompt, and estimates with a
//! high quantile of them: the margin above the typical ratio is exactly as wide as the
//! observed spread, so under-estimates stay rare (about `1 - quantile` of requests) without
//! reserving more than the data says is needed. Before enough observations it uses a
//! conservative prior. Memory is fixed: a window per (model, script).
//!
//! The base is either characters (whitespace runs counted once) — cheap, and tight for prose —
//! or tiktoken's token count, whose ratio to Gemini's count varies far less on source code
//! (on the project's corpus: 6 % against 31 % for characters).

use std::sync::Mutex;

use super::{Estimator, Prompt, Script};

/// Observations kept per (model, script).
pub const WINDOW: usize = 256;
/// Observations before the learned ratio replaces the prior.
pub const WARM_UP: usize = 16;
/// Recompute the quantile after this many new observations.
const REFRESH: usize = 8;

/// What the learned ratios are ratios to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Base {
    /// Characters, each whitespace run counted once.
    #[default]
    Chars,
    /// tiktoken's o200k token count (prompts known only by length fall back to characters).
    Tiktoken,
}

/// Tokens per base unit before anything is learned: on the high side of what common
/// tokenizers produce for each script.
fn prior(base: Base, script: Option<Script>) -> f64 {
    if base == Base::Tiktoken && script.is_some() {
        return 1.5;
    }
    match script {
        Some(Script::Latin) => 0.32,
        Some(Script::Cyrillic) => 0.45,
        Some(Script::Arabic) => 0.55,
        Some(Script::Cjk) => 1.25,
        Some(Script::Code) => 0.45,
        Some(Script::Other) | None => 0.6,
    }
}

#[derive(Debug)]
struct State {
    ratios: Vec<f64>,
    next: usize,
    since_refresh: usize,
    learned: Option<f64>,
}

impl State {
    fn new() -> Self {
        Self { ratios: Vec::with_capacity(WINDOW), next: 0, since_refresh: 0, learned: None }
    }

    fn push(&mut self, ratio: f64, quantile: f64) {
        if self.ratios.len() < WINDOW {
            self.ratios.push(ratio);
        } else {
            self.ratios[self.next] = ratio;
        }
        self.next = (self.next + 1) % WINDOW;
        self.since_refresh += 1;
        if self.ratios.len() >= WARM_UP && (self.since_refresh >= REFRESH || self.learned.is_none()) {
            let mut sorted = self.ratios.clone();
            let k = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
            let (_, q, _) = sorted.select_nth_unstable_by(k, f64::total_cmp);
            self.learned = Some(*q);
            self.since_refresh = 0;
        }
    }
}

/// A text's size as the ratios are learned over: characters, with each run of whitespace
/// counted once. Tokenizers fold runs of spaces (code indentation) into few tokens, so raw
/// character counts make code's ratio swing with its indentation.
fn size(text: &str) -> u64 {
    // Bytewise: a character starts at every byte that is not a UTF-8 continuation byte, and
    // the whitespace that matters (indentation, line breaks) is ASCII.
    let (mut n, mut in_space) = (0u64, false);
    for &b in text.as_bytes() {
        if b & 0xC0 == 0x80 {
            continue;
        }
        let space = matches!(b, b' ' | b'\n' | b'\t' | b'\r');
        n += u64::from(!(space && in_space));
        in_space = space;
    }
    n
}

/// The calibrated estimator.
pub struct Calibrated {
    quantile: f64,
    base: Base,
    tiktoken: Option<super::Cached<super::Tiktoken>>,
    /// Per model: one state per script, plus one for prompts known only by length.
    states: Vec<[Mutex<State>; 7]>,
}

impl Calibrated {
    /// An estimator for `models` models aiming at `quantile` (0.5 to 0.999) of observed
    /// ratios: about `1 - quantile` of requests will be under-estimated.
    pub fn new(models: usize, quantile: f64) -> Self {
        Self::with_base(models, quantile, Base::Chars)
    }

    /// As [`Calibrated::new`], learning ratios to `base`.
    pub fn with_base(models: usize, quantile: f64, base: Base) -> Self {
        let quantile = quantile.clamp(0.5, 0.999);
        let tiktoken = (base == Base::Tiktoken).then(|| super::Cached::new(super::Tiktoken, 4096));
        Self {
            quantile,
            base,
            tiktoken,
            states: (0..models.max(1)).map(|_| std::array::from_fn(|_| Mutex::new(State::new()))).collect(),
        }
    }

    fn state(&self, model: usize, script: Option<Script>) -> &Mutex<State> {
        let per_model = &self.states[model.min(self.states.len() - 1)];
        &per_model[script.map_or(6, Script::index)]
    }

    fn classify(&self, model: usize, prompt: &Prompt<'_>) -> (Option<Script>, u64) {
        match (prompt, &self.tiktoken) {
            (Prompt::Text(t), Some(tk)) => (Some(Script::of(t)), tk.estimate(model, prompt).max(1)),
            (Prompt::Text(t), None) => (Some(Script::of(t)), size(t)),
            (Prompt::Chars(n), _) => (None, *n),
        }
    }

    /// The tokens-per-character ratio used now for `model` and `script`.
    pub fn ratio(&self, model: usize, script: Option<Script>) -> f64 {
        let s = self.state(model, script).lock().unwrap_or_else(|p| p.into_inner());
        s.learned.unwrap_or_else(|| prior(self.base, script))
    }
}

impl std::fmt::Debug for Calibrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrated").field("quantile", &self.quantile).field("base", &self.base).finish()
    }
}

impl Estimator for Calibrated {
    fn name(&self) -> &str {
        match self.base {
            Base::Chars => "calibrated",
            Base::Tiktoken => "calibrated/tiktoken",
        }
    }

    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64 {
        let (script, chars) = self.classify(model, prompt);
        // The small allowance keeps float noise from rounding an exact ratio up a token.
        (chars as f64 * self.ratio(model, script) - 1e-6).ceil().max(0.0) as u64
    }

    fn learns(&self) -> bool {
        true
    }

    fn observe(&self, model: usize, prompt: &Prompt<'_>, actual: u64) {
        let (script, chars) = self.classify(model, prompt);
        if chars == 0 {
            return;
        }
        let ratio = actual as f64 / chars as f64;
        self.state(model, script).lock().unwrap_or_else(|p| p.into_inner()).push(ratio, self.quantile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_conservative_then_learns_the_quantile() {
        let c = Calibrated::new(1, 0.95);
        let text = "a".repeat(1000);
        assert_eq!(c.estimate(0, &Prompt::Text(&text)), 320, "latin prior");
        // Ratios 0.20 .. 0.299 spread evenly: the 95th percentile is about 0.295.
        for i in 0..200 {
            c.observe(0, &Prompt::Text(&text), 200 + (i % 100));
        }
        let est = c.estimate(0, &Prompt::Text(&text));
        assert!((293..=297).contains(&est), "{est}");
    }

    #[test]
    fn scripts_and_models_learn_apart() {
        let c = Calibrated::new(2, 0.9);
        let latin = "word ".repeat(100);
        let cjk = "汉字".repeat(100);
        for _ in 0..50 {
            c.observe(0, &Prompt::Text(&latin), 100);
            c.observe(0, &Prompt::Text(&cjk), 150);
        }
        assert_eq!(c.estimate(0, &Prompt::Text(&latin)), 100);
        assert_eq!(c.estimate(0, &Prompt::Text(&cjk)), 150);
        assert_eq!(c.estimate(1, &Prompt::Text(&latin)), 160, "model 1 still on the prior");
    }

    #[test]
    fn under_estimates_stay_near_one_minus_the_quantile() {
        let c = Calibrated::new(1, 0.96);
        let text = "x".repeat(400);
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 1000) as f64 / 1000.0
        };
        let (mut under, mut n) = (0, 0);
        for i in 0..5_000 {
            let actual = (100.0 * (0.9 + 0.2 * next())).round() as u64;
            if i > 500 {
                n += 1;
                under += u32::from(c.estimate(0, &Prompt::Text(&text)) < actual);
            }
            c.observe(0, &Prompt::Text(&text), actual);
        }
        let rate = f64::from(under) / f64::from(n);
        assert!(rate <= 0.06, "under-estimate rate {rate}");
    }
}

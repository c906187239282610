//! Token estimation before a request is sent.
//!
//! Gemini counts TPM on input tokens, so the pre-send estimate of the prompt decides whether
//! TPM holds. Estimators see the prompt (its text, or only its size when the text is not at
//! hand) and learn from the actual counts reported at settlement.
//!
//! - [`Chars4`]: Google's rule of thumb.
//! - [`tiktoken`] (feature `tiktoken`): tiktoken's o200k, embedded.
//! - [`hf`] (feature `tokenizers`): any Hugging Face `tokenizer.json` (the Gemini/Gemma one
//!   among them), handed in as bytes.
//! - [`calibrated`]: learns characters per token from `usageMetadata`, per model and script,
//!   with a safety margin from the observed error quantile.
//! - [`output`]: how many output tokens to reserve where limits count them.
//! - [`cache`]: a bounded cache in front of any estimator, so a hot prompt is tokenized once.
//! - [`script`]: which writing system (or code) a text is in.
//! - [`media`]: tokens of the parts that are not text (images, PDFs, audio, video).

pub mod cache;
pub mod calibrated;
#[cfg(feature = "tokenizers")]
pub mod hf;
pub mod media;
pub mod output;
pub mod script;
#[cfg(feature = "tiktoken")]
pub mod tiktoken;

pub use cache::Cached;
pub use calibrated::Calibrated;
#[cfg(feature = "tokenizers")]
pub use hf::{HfTokenizer, TokenizerError};
pub use output::{OutputPolicy, OutputReserve};
pub use script::Script;
#[cfg(feature = "tiktoken")]
pub use tiktoken::Tiktoken;

/// What an estimator may look at.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// The prompt's text.
    Text(&'a str),
    /// Only the prompt's length in characters.
    Chars(u64),
}

impl Prompt<'_> {
    /// Length in characters (Unicode scalar values).
    pub fn chars(&self) -> u64 {
        match self {
            Prompt::Text(t) => t.chars().count() as u64,
            Prompt::Chars(n) => *n,
        }
    }
}

/// Estimates input tokens of a prompt.
pub trait Estimator: Send + Sync {
    /// The estimator's name in reports.
    fn name(&self) -> &str;

    /// Estimated input tokens of `prompt` for model index `model`.
    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64;

    /// Learns from the actual input tokens the provider reported for a prompt.
    fn observe(&self, _model: usize, _prompt: &Prompt<'_>, _actual: u64) {}

    /// Whether [`Estimator::observe`] does anything (callers may skip preparing it if not).
    fn learns(&self) -> bool {
        false
    }

    /// Whether the estimate of `prompt` comes from what was learned rather than from a
    /// starting guess (always, for estimators that do not learn).
    fn warmed_up(&self, _model: usize, _prompt: &Prompt<'_>) -> bool {
        true
    }
}

impl<E: Estimator + ?Sized> Estimator for Box<E> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64 {
        (**self).estimate(model, prompt)
    }

    fn observe(&self, model: usize, prompt: &Prompt<'_>, actual: u64) {
        (**self).observe(model, prompt, actual)
    }

    fn learns(&self) -> bool {
        (**self).learns()
    }

    fn warmed_up(&self, model: usize, prompt: &Prompt<'_>) -> bool {
        (**self).warmed_up(model, prompt)
    }
}

/// A different estimator per model (by model index; the last one serves any other index).
pub struct PerModel {
    name: String,
    by_model: Vec<Box<dyn Estimator>>,
}

impl PerModel {
    /// One estimator per model, in model order (at least one).
    pub fn new(by_model: Vec<Box<dyn Estimator>>) -> Self {
        assert!(!by_model.is_empty(), "at least one estimator");
        let mut names: Vec<&str> = by_model.iter().map(|e| e.name()).collect();
        names.dedup();
        Self { name: names.join("+"), by_model }
    }

    fn get(&self, model: usize) -> &dyn Estimator {
        self.by_model[model.min(self.by_model.len() - 1)].as_ref()
    }
}

impl Estimator for PerModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64 {
        self.get(model).estimate(model, prompt)
    }

    fn observe(&self, model: usize, prompt: &Prompt<'_>, actual: u64) {
        self.get(model).observe(model, prompt, actual)
    }

    fn learns(&self) -> bool {
        self.by_model.iter().any(|e| e.learns())
    }

    fn warmed_up(&self, model: usize, prompt: &Prompt<'_>) -> bool {
        self.get(model).warmed_up(model, prompt)
    }
}

/// Google's rule of thumb: about four characters per token, rounded up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chars4;

impl Estimator for Chars4 {
    fn name(&self) -> &str {
        "chars4"
    }

    fn estimate(&self, _model: usize, prompt: &Prompt<'_>) -> u64 {
        prompt.chars().div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars4_rounds_up_and_counts_characters_not_bytes() {
        assert_eq!(Chars4.estimate(0, &Prompt::Chars(9)), 3);
        assert_eq!(Chars4.estimate(0, &Prompt::Text("héllo")), 2);
        assert_eq!(Chars4.estimate(0, &Prompt::Text("")), 0);
    }
}

//! OpenAI's o200k BPE via tiktoken (feature `tiktoken`): its vocabulary is embedded in the
//! binary, so it works offline.

use super::{Estimator, Prompt};

/// OpenAI's o200k BPE via tiktoken: a real tokenizer to compare the heuristics against.
/// Without the text it falls back to four characters per token.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tiktoken;

impl Estimator for Tiktoken {
    fn name(&self) -> &str {
        "tiktoken"
    }

    fn estimate(&self, _model: usize, prompt: &Prompt<'_>) -> u64 {
        match prompt {
            Prompt::Text(t) => tiktoken_rs::o200k_base_singleton().encode_ordinary(t).len() as u64,
            Prompt::Chars(n) => n.div_ceil(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_counts_real_tokens() {
        let n = Tiktoken.estimate(0, &Prompt::Text("Hello, world! This is a test."));
        assert!((6..=10).contains(&n), "{n}");
        assert_eq!(Tiktoken.estimate(0, &Prompt::Chars(10)), 3);
    }
}

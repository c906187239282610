//! Any Hugging Face `tokenizer.json` as an estimator (feature `tokenizers`), such as the
//! Gemini (Gemma) tokenizer. Pure: the caller reads the file and hands its bytes in.

use super::{Estimator, Prompt};

/// A Hugging Face tokenizer (`tokenizer.json`). Without the text it falls back to four
/// characters per token. Cloning shares the loaded tokenizer.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: std::sync::Arc<tokenizers::Tokenizer>,
}

/// Why a tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid tokenizer.json: {0}")]
pub struct TokenizerError(String);

impl HfTokenizer {
    /// Loads a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenizerError> {
        tokenizers::Tokenizer::from_bytes(bytes)
            .map(|t| Self { inner: std::sync::Arc::new(t) })
            .map_err(|e| TokenizerError(e.to_string()))
    }

    /// Tokens of `text`, without special tokens.
    pub fn count(&self, text: &str) -> u64 {
        // Encoding fails only on inputs the model cannot represent at all; count characters
        // then, the most a byte-fallback tokenizer could produce.
        self.inner.encode(text, false).map_or(text.chars().count() as u64, |e| e.len() as u64)
    }
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish()
    }
}

impl Estimator for HfTokenizer {
    fn name(&self) -> &str {
        "tokenizer"
    }

    fn estimate(&self, _model: usize, prompt: &Prompt<'_>) -> u64 {
        match prompt {
            Prompt::Text(t) => self.count(t),
            Prompt::Chars(n) => n.div_ceil(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_hf_tokenizer_loads_and_counts() {
        // A word-level tokenizer written inline: enough to exercise loading and counting.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;
        let t = HfTokenizer::from_bytes(json.as_bytes()).unwrap();
        assert_eq!(t.count("hello world hello"), 3);
        assert_eq!(t.estimate(0, &Prompt::Text("hello there")), 2);
        assert!(HfTokenizer::from_bytes(b"{not json").is_err());
    }
}

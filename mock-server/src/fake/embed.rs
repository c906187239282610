//! Embeddings: `embedContent`, `batchEmbedContents` and the OpenAI-compatible `embeddings`.
//!
//! Only embedding models embed (a model whose name says `embedding`); each embedded content
//! is one request against that model's own limits, its text's tokens against its TPM. Vectors
//! are deterministic: the same text gives the same unit vector, of `outputDimensionality`
//! (OpenAI: `dimensions`) values, 3072 by default.

use serde_json::{json, Value};

use super::{Answer, ApiRequest, Fake};
use crate::body::{self, ErrorAnswer};
use crate::judge::Verdict;
use crate::validate::{self, get, Kind};

/// Values of a vector when the request does not say.
const DEFAULT_DIMENSIONS: usize = 3072;

/// The input limit of an embedding model, in tokens per text.
const EMBED_INPUT_TOKENS: u64 = 2_048;

/// Whether `model` embeds.
pub(super) fn embeds(model: &str) -> bool {
    model.contains("embedding")
}

/// 404 for a model that does not embed, as Gemini words it.
fn not_for_embedding(model: &str) -> ErrorAnswer {
    let mut e = body::model_not_found(model);
    let msg = e.body["error"]["message"].as_str().unwrap_or_default().replace("generateContent", "embedContent");
    e.body["error"]["message"] = json!(msg);
    e
}

/// A deterministic unit vector of `n` values for `text`.
fn vector(text: &str, n: usize) -> Vec<f32> {
    // FNV-1a of the text seeds a SplitMix64 stream.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut values: Vec<f32> = (0..n)
        .map(|_| {
            h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = h;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    values.iter_mut().for_each(|v| *v /= norm);
    values
}

/// `values` as little-endian bytes in standard base64.
fn base64_f32(values: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text of a `Content`.
fn text_of(content: Option<&Value>) -> String {
    let mut out = String::new();
    let parts = content.and_then(|c| get(c, "parts"));
    for p in parts.and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = get(p, "text").and_then(Value::as_str) {
            out.push_str(t);
        }
    }
    out
}

impl Fake {
    /// Counts each text as one request of `model` for `project`: the token counts, or the 429
    /// of the first one refused (those before it were counted, as the provider counts them).
    fn admit_embeddings(&self, model: &str, project: usize, texts: &[String], now: u64) -> Result<Vec<u64>, Answer> {
        let Some(m) = self.model_index(model) else { return Err(Answer::error(not_for_embedding(model), 0)) };
        let counts: Vec<u64> = texts.iter().map(|t| (self.count)(t)).collect();
        if let Some(over) = counts.iter().find(|&&n| n > EMBED_INPUT_TOKENS) {
            let msg = format!(
                "The input token count ({over}) exceeds the maximum number of tokens allowed ({EMBED_INPUT_TOKENS})."
            );
            return Err(Answer::error(validate::invalid("content", &msg), 0));
        }
        let mut state = self.lock();
        let now = now.max(state.last_now);
        state.last_now = now;
        for &tokens in &counts {
            if let Verdict::Exhausted { violations, retry_after_ms } = state.judge.submit(project, m, tokens, now) {
                let tier = state.judge.config().projects[project].tier;
                let e = body::quota_exceeded_as(
                    self.script.quota_body,
                    &violations,
                    tier,
                    model,
                    retry_after_ms,
                    1_000 + project as u64,
                );
                return Err(Answer::error(e, self.error_ms));
            }
        }
        Ok(counts)
    }

    /// `embedContent` (`batch` false) or `batchEmbedContents`.
    pub(super) fn embed_content(
        &self,
        req: &ApiRequest<'_>,
        model: &str,
        project: usize,
        now: u64,
        batch: bool,
    ) -> Answer {
        if !embeds(model) || self.model_index(model).is_none() {
            return Answer::error(not_for_embedding(model), 0);
        }
        let kind = if batch { Kind::BatchEmbed } else { Kind::Embed };
        let request = match validate::request(req.body, kind) {
            Ok(v) => v,
            Err(e) => return Answer::error(e, 0),
        };
        let items: Vec<&Value> = if batch {
            get(&request, "requests").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
        } else {
            vec![&request]
        };
        let texts: Vec<String> = items.iter().map(|r| text_of(get(r, "content"))).collect();
        if let Err(a) = self.admit_embeddings(model, project, &texts, now) {
            return a;
        }
        let embedding = |r: &Value, text: &str| {
            let n = get(r, "output_dimensionality")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .map_or(DEFAULT_DIMENSIONS, |n| (n as usize).min(DEFAULT_DIMENSIONS));
            json!({"values": vector(text, n)})
        };
        let delay = self.error_ms * 2;
        if batch {
            let all: Vec<Value> = items.iter().zip(&texts).map(|(r, t)| embedding(r, t)).collect();
            Answer::json(200, json!({"embeddings": all}), delay)
        } else {
            Answer::json(200, json!({"embedding": embedding(&request, &texts[0])}), delay)
        }
    }

    /// OpenAI-compatible `embeddings`.
    pub(super) fn openai_embeddings(&self, req: &ApiRequest<'_>, project: usize, now: u64) -> Answer {
        let request = match validate::embeddings(req.body) {
            Ok(v) => v,
            Err(e) => return Answer::error(e, 0),
        };
        let model = request["model"].as_str().unwrap_or_default().trim_start_matches("models/").to_owned();
        if !embeds(&model) || self.model_index(&model).is_none() {
            return Answer::error(not_for_embedding(&model), 0);
        }
        let texts: Vec<String> = match &request["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let counts = match self.admit_embeddings(&model, project, &texts, now) {
            Ok(c) => c,
            Err(a) => return a,
        };
        let n = request["dimensions"].as_u64().map_or(DEFAULT_DIMENSIONS, |n| (n as usize).min(DEFAULT_DIMENSIONS));
        // The OpenAI SDKs ask for base64 (little-endian f32s) unless told otherwise.
        let base64 = request["encoding_format"].as_str() == Some("base64");
        let data: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = vector(t, n);
                let embedding = if base64 { json!(base64_f32(&v)) } else { json!(v) };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let tokens: u64 = counts.iter().sum();
        let body = json!({"object": "list", "data": data, "model": model,
                          "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
        Answer::json(200, body, self.error_ms * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_the_same_for_the_same_text() {
        let a = vector("hello", 768);
        assert_eq!(a.len(), 768);
        assert!((a.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
        assert_eq!(a, vector("hello", 768));
        assert_ne!(a, vector("hello!", 768));
    }

    #[test]
    fn base64_vectors_are_little_endian_f32s() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}

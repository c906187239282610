//! Reading usage off an answer as it streams past, without holding the stream.
//!
//! Gemini streams are server-sent events (`data: {…}`) or one JSON array whose elements
//! arrive one by one; OpenAI streams are server-sent events ending in `data: [DONE]`. Each
//! form is a run of top-level JSON objects with other bytes between them, so the tap keeps
//! only the object being received, and from each complete one the usage it states: Gemini's
//! `usageMetadata` (every chunk carries the prompt's count; the last one the totals) or
//! OpenAI's `usage`.

use crate::engine::UsageMetadata;
use serde_json::Value;

/// The largest object the tap keeps: a chunk bigger than this is skipped (its usage lost, the
/// request settled at its estimate if no other chunk states one).
const MAX_OBJECT: usize = 1024 * 1024;

/// Usage seen so far in a stream.
#[derive(Debug, Default)]
pub struct UsageTap {
    /// Bytes of the object being received.
    object: Vec<u8>,
    /// Nesting depth inside it (0: between objects).
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The object is too large and is being skipped.
    skipping: bool,
    /// The latest usage stated.
    pub usage: Option<UsageMetadata>,
}

impl UsageTap {
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.depth == 0 {
                if b == b'{' {
                    self.depth = 1;
                    self.object.clear();
                    self.object.push(b);
                    self.skipping = false;
                }
                continue;
            }
            if !self.skipping {
                if self.object.len() >= MAX_OBJECT {
                    self.skipping = true;
                    self.object = Vec::new();
                } else {
                    self.object.push(b);
                }
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 && !self.skipping {
                        self.complete();
                    }
                }
                _ => {}
            }
        }
    }

    fn complete(&mut self) {
        let Ok(v) = serde_json::from_slice::<Value>(&self.object) else { return };
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
    }
}

/// The usage a whole answer states, read from its last `usageMetadata` (or OpenAI `usage`)
/// object alone, without parsing the rest of the answer.
pub fn usage_in(body: &[u8]) -> Option<UsageMetadata> {
    for name in [&b"\"usageMetadata\""[..], &b"\"usage\""[..]] {
        let Some(at) = body.windows(name.len()).rposition(|w| w == name) else { continue };
        let rest = &body[at + name.len()..];
        let colon = rest.iter().position(|&b| b == b':')?;
        let mut values = serde_json::Deserializer::from_slice(&rest[colon + 1..]).into_iter::<Value>();
        let Some(Ok(u)) = values.next() else { continue };
        let wrapped = if name.len() == 15 {
            serde_json::json!({ "usageMetadata": u })
        } else {
            serde_json::json!({ "usage": u })
        };
        if let Some(usage) = usage_of(&wrapped) {
            return Some(usage);
        }
    }
    None
}

/// The usage an answer (or one streamed chunk) states: Gemini's `usageMetadata` or OpenAI's
/// `usage` (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`).
pub fn usage_of(v: &Value) -> Option<UsageMetadata> {
    if let Some(u) = v.get("usageMetadata") {
        return UsageMetadata::parse(u);
    }
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |x: Option<&Value>| x.and_then(Value::as_u64).unwrap_or(0);
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64)?;
    let cached = n(u.pointer("/prompt_tokens_details/cached_tokens")).min(prompt);
    Some(UsageMetadata { prompt, cached, candidates: n(u.get("completion_tokens")), thoughts: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tapped(pieces: &[&str]) -> Option<UsageMetadata> {
        let mut t = UsageTap::default();
        for p in pieces {
            t.feed(p.as_bytes());
        }
        t.usage
    }

    #[test]
    fn reads_the_last_usage_of_server_sent_events_split_anywhere() {
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a}\\\"{\"}]}}],\"usageMetadata\":{\"promptTokenCount\":7}}\r\n\r\ndata: {\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":12,\"thoughtsTokenCount\":3}}\r\n\r\n";
        for cut in 0..stream.len() {
            let u = tapped(&[&stream[..cut], &stream[cut..]]).expect("usage");
            assert_eq!((u.prompt, u.candidates, u.thoughts), (7, 12, 3), "cut at {cut}");
        }
    }

    #[test]
    fn reads_a_streamed_json_array_and_openai_chunks() {
        let array = "[{\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":1}}\n,\r\n{\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":9}}\n]";
        assert_eq!(tapped(&[array]).map(|u| u.candidates), Some(9));
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\ndata: [DONE]\n\n";
        let u = tapped(&[openai]).expect("usage");
        assert_eq!((u.prompt, u.cached, u.candidates), (11, 2, 4));
    }

    #[test]
    fn reads_a_whole_answer_s_usage_without_parsing_the_rest() {
        let gemini = br#"{"candidates":[{"content":{"parts":[{"text":""usage": 1"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"cachedContentTokenCount":2}}"#;
        let u = usage_in(gemini).expect("usage");
        assert_eq!((u.prompt, u.candidates, u.cached), (9, 4, 2));
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
        assert_eq!(usage_in(openai).map(|u| (u.prompt, u.candidates)), Some((3, 5)));
        assert_eq!(usage_in(br#"{"embedding":{"values":[0.1]}}"#), None);
    }

    #[test]
    fn a_stream_without_usage_states_none() {
        assert_eq!(tapped(&["data: {\"choices\":[]}\n\ndata: [DONE]\n\n"]), None);
        assert_eq!(tapped(&["data: {\"usageMetadata\":{\"promptTok"]), None);
    }
}

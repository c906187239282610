//! What a faithful answer looks like beyond its text: JSON that matches the request's schema,
//! function calls when the request's tools and mode ask for them, and the tokens of parts that
//! are not text (an image is 258 tokens, as Gemini counts it).
//!
//! Everything here is deterministic: the same request and seed give the same answer.

use serde_json::{json, Map, Value};

use crate::validate::get;

/// Tokens of an image (per tile of up to 768×768; the fake counts one tile), and of a PDF page.
pub const IMAGE_TOKENS: u64 = 258;
/// Tokens per second of audio.
pub const AUDIO_TOKENS_PER_S: u64 = 32;
/// Tokens per second of video.
pub const VIDEO_TOKENS_PER_S: u64 = 263;

/// A small deterministic stream (SplitMix64), with a budget of values to generate: a schema
/// cannot make an answer larger than that, however it nests or whatever sizes it asks for.
struct Draw(u64, u32);

/// Values one answer may hold, and the longest array generated.
const VALUES: u32 = 4_096;
const LONGEST: u64 = 64;

impl Draw {
    fn new(seed: u64) -> Self {
        Self(seed, VALUES)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: [&str; 12] =
    ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"];

/// A value of `schema` (Gemini's `Schema`, or JSON Schema: `type` in either case,
/// `properties`, `required`, `items`, `enum`, `anyOf`, `minItems`/`maxItems`, `minimum`/`maximum`).
fn value_of(schema: &Value, d: &mut Draw, depth: u32) -> Value {
    if d.1 == 0 {
        return Value::Null;
    }
    d.1 -= 1;
    if let Some(e) = get(schema, "enum").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        return e[d.below(e.len() as u64) as usize].clone();
    }
    if let Some(any) = get(schema, "any_of").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        return value_of(&any[0], d, depth);
    }
    let ty = match get(schema, "type") {
        Some(Value::String(t)) => t.to_ascii_lowercase(),
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null").to_owned()
        }
        _ if get(schema, "properties").is_some() => "object".into(),
        _ => "string".into(),
    };
    let bound = |k: &str| get(schema, k).and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
    match ty.as_str() {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = get(schema, "properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    if depth < 8 {
                        out.insert(name.clone(), value_of(sub, d, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
        "array" => {
            let lo = bound("min_items").unwrap_or(1.0).max(0.0) as u64;
            let hi = bound("max_items").map_or(lo.max(3), |h| h as u64).max(lo);
            let n = (lo + d.below(hi - lo + 1)).min(LONGEST);
            let items = get(schema, "items").cloned().unwrap_or(json!({"type": "string"}));
            Value::Array((0..n).filter(|_| depth < 8).map(|_| value_of(&items, d, depth + 1)).collect())
        }
        "integer" => {
            // In i128, so that no bounds overflow; the value stays within [lo, hi] ⊂ i64.
            let lo = i128::from(bound("minimum").unwrap_or(0.0) as i64);
            let hi = bound("maximum").map_or(lo + 100, |h| i128::from(h as i64)).max(lo);
            let span = (hi - lo + 1) as u128;
            json!((lo + (u128::from(d.next()) % span) as i128) as i64)
        }
        "number" => {
            let lo = bound("minimum").unwrap_or(0.0);
            let hi = bound("maximum").unwrap_or(lo + 100.0).max(lo);
            json!(lo + (hi - lo) * (d.below(1_000) as f64 / 1_000.0))
        }
        "boolean" => json!(d.below(2) == 1),
        "null" => Value::Null,
        _ => json!(format!("{} {}", WORDS[d.below(12) as usize], WORDS[d.below(12) as usize])),
    }
}

/// JSON text that matches the request's response schema, if it asks for JSON.
pub fn json_answer(generation_config: Option<&Value>, seed: u64) -> Option<String> {
    let cfg = generation_config?;
    let mime = get(cfg, "response_mime_type").and_then(Value::as_str)?;
    let schema = get(cfg, "response_schema").or_else(|| get(cfg, "response_json_schema"));
    let mut d = Draw::new(seed);
    match (mime, schema) {
        ("application/json", Some(s)) => Some(value_of(s, &mut d, 0).to_string()),
        ("application/json", None) => Some(json!({"answer": WORDS[d.below(12) as usize]}).to_string()),
        ("text/x.enum", Some(s)) => Some(value_of(s, &mut d, 0).as_str().unwrap_or_default().to_owned()),
        _ => None,
    }
}

/// The function call the request asks for, if its mode is `ANY` (or `VALIDATED`) and it
/// declares functions: the first allowed one, with arguments from its parameters' schema.
pub fn function_call(request: &Value, seed: u64) -> Option<Value> {
    let config = get(request, "tool_config").and_then(|t| get(t, "function_calling_config"));
    let mode = config.and_then(|c| get(c, "mode")).and_then(Value::as_str).unwrap_or("AUTO");
    if !matches!(mode, "ANY" | "VALIDATED") {
        return None;
    }
    let allowed: Vec<&str> = config
        .and_then(|c| get(c, "allowed_function_names"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let declared = get(request, "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| get(t, "function_declarations").and_then(Value::as_array))
        .flatten();
    let f = declared.into_iter().find(|f| {
        let name = get(f, "name").and_then(Value::as_str).unwrap_or_default();
        allowed.is_empty() || allowed.contains(&name)
    })?;
    let name = get(f, "name").and_then(Value::as_str)?;
    let params = get(f, "parameters").or_else(|| get(f, "parameters_json_schema"));
    let args = params.map_or(json!({}), |p| value_of(p, &mut Draw::new(seed), 0));
    Some(json!({"name": name, "args": args}))
}

/// `text` cut before the first of the request's stop sequences it contains.
pub fn stop_at(text: String, generation_config: Option<&Value>) -> String {
    let stops = generation_config.and_then(|c| get(c, "stop_sequences")).and_then(Value::as_array);
    let cut = stops
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s))
        .min();
    match cut {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// How many candidates the request asks for.
pub fn candidate_count(generation_config: Option<&Value>) -> u64 {
    generation_config.and_then(|c| get(c, "candidate_count")).and_then(Value::as_u64).unwrap_or(1).clamp(1, 8)
}

/// Completes a `generateContent` body: the finish reason, a function call in place of text
/// where the request asks for one, and as many candidates as it asks for.
pub fn finish(body: &mut Value, request: &Value, finish: &str, seed: u64) {
    let first = &mut body["candidates"][0];
    first["finishReason"] = json!(finish);
    if let Some(call) = function_call(request, seed) {
        first["content"]["parts"] = json!([{"functionCall": call}]);
        first["finishReason"] = json!("STOP");
    }
    let n = candidate_count(get(request, "generation_config"));
    let one = body["candidates"][0].clone();
    let all: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = one.clone();
            c["index"] = json!(i);
            c
        })
        .collect();
    body["candidates"] = Value::Array(all);
}

/// The assistant message of an OpenAI-compatible chat answer of `text`: JSON from
/// `response_format` (`json_schema` or `json_object`), or a tool call when tools are given and
/// `tool_choice` requires one (`"required"` or a named function). With the finish reason.
pub fn openai_message(request: &Value, text: String, finish: &'static str, seed: u64) -> (Value, &'static str) {
    let tools: Vec<&Value> = request["tools"].as_array().into_iter().flatten().collect();
    let named = request["tool_choice"]["function"]["name"].as_str();
    let required = request["tool_choice"].as_str() == Some("required") || named.is_some();
    let chosen = tools.iter().map(|t| &t["function"]).find(|f| named.is_none_or(|n| f["name"].as_str() == Some(n)));
    if let (true, Some(f)) = (required, chosen) {
        let args = f.get("parameters").map_or(json!({}), |p| value_of(p, &mut Draw::new(seed), 0));
        let call = json!({"id": format!("call_{seed:016x}"), "type": "function",
                          "function": {"name": f["name"], "arguments": args.to_string()}});
        return (json!({"role": "assistant", "content": null, "tool_calls": [call]}), "tool_calls");
    }
    let format = &request["response_format"];
    let content = match format["type"].as_str() {
        Some("json_schema") => value_of(&format["json_schema"]["schema"], &mut Draw::new(seed), 0).to_string(),
        Some("json_object") => json!({"answer": WORDS[Draw::new(seed).below(12) as usize]}).to_string(),
        _ => text,
    };
    (json!({"role": "assistant", "content": content}), finish)
}

/// Tokens of a request's parts that are not text: images and PDF pages at 258, audio and video
/// by their stated seconds (`videoMetadata` end − start, else one second), function calls and
/// responses as their JSON text (four characters a token).
pub fn media_tokens(contents: Option<&Value>) -> u64 {
    let mut total = 0u64;
    let items: &[Value] = match contents {
        Some(Value::Array(a)) => a,
        Some(other) => std::slice::from_ref(other),
        None => &[],
    };
    for c in items {
        for p in get(c, "parts").and_then(Value::as_array).into_iter().flatten() {
            let blob = get(p, "inline_data").or_else(|| get(p, "file_data"));
            if let Some(b) = blob {
                let mime = get(b, "mime_type").and_then(Value::as_str).unwrap_or_default();
                let seconds = get(p, "video_metadata").map_or(1, |v| {
                    let at =
                        |k| get(v, k).and_then(Value::as_str).and_then(|s| s.trim_end_matches('s').parse::<f64>().ok());
                    (at("end_offset").unwrap_or(1.0) - at("start_offset").unwrap_or(0.0)).clamp(1.0, 86_400.0).ceil()
                        as u64
                });
                total = total.saturating_add(match mime.split('/').next() {
                    Some("image") => IMAGE_TOKENS,
                    Some("audio") => AUDIO_TOKENS_PER_S * seconds,
                    Some("video") => VIDEO_TOKENS_PER_S * seconds,
                    _ => IMAGE_TOKENS,
                });
            }
            for k in ["function_call", "function_response"] {
                if let Some(v) = get(p, k) {
                    total = total.saturating_add((v.to_string().len() as u64).div_ceil(4));
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_follow_the_schema() {
        let cfg = json!({"responseMimeType": "application/json", "responseSchema": {
            "type": "OBJECT", "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER", "minimum": 1, "maximum": 9},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}, "minItems": 2, "maxItems": 2}}}});
        let text = json_answer(Some(&cfg), 7).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["name"].is_string() && (1..=9).contains(&v["age"].as_i64().unwrap()), "{v}");
        assert_eq!(v["tags"].as_array().unwrap().len(), 2);
        assert_eq!(text, json_answer(Some(&cfg), 7).unwrap(), "deterministic per seed");
    }

    #[test]
    fn functions_are_called_when_the_mode_asks() {
        let mut req = json!({"tools": [{"functionDeclarations": [{"name": "get_weather",
            "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}]});
        assert_eq!(function_call(&req, 1), None, "AUTO: the fake answers in text");
        req["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
        let call = function_call(&req, 1).unwrap();
        assert_eq!(call["name"], "get_weather");
        assert!(call["args"]["city"].is_string());
    }

    #[test]
    fn hostile_schemas_stay_small_and_in_bounds() {
        let huge = json!({"type": "ARRAY", "minItems": 1_000_000_000u64,
            "items": {"type": "ARRAY", "minItems": 1_000, "items": {"type": "INTEGER",
                "minimum": i64::MIN, "maximum": i64::MAX}}});
        let cfg = json!({"responseMimeType": "application/json", "responseSchema": huge});
        let v: Value = serde_json::from_str(&json_answer(Some(&cfg), 3).unwrap()).unwrap();
        let count = v.as_array().unwrap().iter().map(|a| a.as_array().map_or(0, Vec::len)).sum::<usize>();
        assert!(v.as_array().unwrap().len() <= 64 && count <= 4_096, "{count}");
        let edge = json!({"responseMimeType": "application/json", "responseSchema":
            {"type": "INTEGER", "minimum": i64::MAX, "maximum": i64::MAX}});
        assert_eq!(json_answer(Some(&edge), 1).unwrap(), i64::MAX.to_string());
    }

    #[test]
    fn an_image_is_258_tokens() {
        let contents = json!([{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}, {"text": "x"}]}]);
        assert_eq!(media_tokens(Some(&contents)), 258);
    }
}

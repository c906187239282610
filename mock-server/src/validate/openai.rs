//! The OpenAI-compatible surface's checks: what Gemini refuses there (no messages, unknown
//! roles, out-of-range numbers, bad embedding inputs), answered in OpenAI's error shape.

use serde_json::{json, Value};

use super::parse_error;
use crate::body::ErrorAnswer;

/// Checks an OpenAI-compatible chat request: `Ok(body)` or an OpenAI-shaped 400.
pub fn chat(body: &[u8]) -> Result<Value, ErrorAnswer> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| openai_invalid(None, &format!("Invalid JSON payload received. {}", parse_error(&e))))?;
    let Some(obj) = v.as_object() else { return Err(openai_invalid(None, "The request body must be a JSON object.")) };
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(openai_invalid(Some("model"), "model is required and must be a string."));
    }
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(openai_invalid(Some("messages"), "messages must not be empty.")),
        _ => return Err(openai_invalid(Some("messages"), "messages is required and must be an array.")),
    };
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !matches!(role, Some("system" | "developer" | "user" | "assistant" | "tool" | "function")) {
            let msg = format!("messages[{i}].role must be one of system, developer, user, assistant, tool.");
            return Err(openai_invalid(Some(&format!("messages[{i}].role")), &msg));
        }
        match m.get("content") {
            None | Some(Value::Null) if role == Some("assistant") => {}
            Some(Value::String(_) | Value::Array(_)) => {}
            _ => {
                let msg = format!("messages[{i}].content must be a string or an array of content parts.");
                return Err(openai_invalid(Some(&format!("messages[{i}].content")), &msg));
            }
        }
    }
    let checks: [(&str, f64, f64); 6] = [
        ("max_tokens", 1.0, f64::from(i32::MAX)),
        ("max_completion_tokens", 1.0, f64::from(i32::MAX)),
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("n", 1.0, 8.0),
        ("presence_penalty", -2.0, 2.0),
    ];
    for (name, lo, hi) in checks {
        if let Some(x) = obj.get(name).filter(|x| !x.is_null()) {
            if !x.as_f64().is_some_and(|x| (lo..=hi).contains(&x)) {
                let msg = format!("{name} must be a number from {lo} to {hi}, got {x}.");
                return Err(openai_invalid(Some(name), &msg));
            }
        }
    }
    if obj.get("stream").is_some_and(|s| !s.is_boolean() && !s.is_null()) {
        return Err(openai_invalid(Some("stream"), "stream must be a boolean."));
    }
    Ok(v)
}

/// Checks an OpenAI-compatible embeddings request.
pub fn embeddings(body: &[u8]) -> Result<Value, ErrorAnswer> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| openai_invalid(None, &format!("Invalid JSON payload received. {}", parse_error(&e))))?;
    if !v.get("model").is_some_and(Value::is_string) {
        return Err(openai_invalid(Some("model"), "model is required and must be a string."));
    }
    let ok = match v.get("input") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| !s.is_empty())),
        _ => false,
    };
    if !ok {
        return Err(openai_invalid(Some("input"), "input must be a non-empty string or array of non-empty strings."));
    }
    if v["input"].as_array().is_some_and(|a| a.len() > 2_048) {
        return Err(openai_invalid(Some("input"), "input must have at most 2048 items."));
    }
    if let Some(d) = v.get("dimensions").filter(|d| !d.is_null()) {
        if !d.as_u64().is_some_and(|d| (1..=3072).contains(&d)) {
            return Err(openai_invalid(Some("dimensions"), "dimensions must be an integer from 1 to 3072."));
        }
    }
    Ok(v)
}

/// An OpenAI-shaped 400: `{"error": {"message", "type", "param", "code"}}`.
pub fn openai_invalid(param: Option<&str>, message: &str) -> ErrorAnswer {
    ErrorAnswer {
        status: 400,
        body: json!({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                "code": "invalid_argument", "status": "INVALID_ARGUMENT"}}),
    }
}

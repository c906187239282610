//! OpenAI-compatible `chat/completions`: answers and streams as OpenAI's API gives them (usage
//! in a stream only when asked, in a last chunk of its own).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{answer_text, Answer, ApiRequest, Fake, Payload};
use crate::{body, shape, validate};

impl Fake {
    pub(super) fn chat_completions(&self, req: &ApiRequest<'_>, project: usize, now: u64) -> Answer {
        let request = match validate::chat(req.body) {
            Ok(v) => v,
            Err(e) => return Answer::error(e, 0),
        };
        let model = request["model"].as_str().unwrap_or_default().trim_start_matches("models/").to_owned();
        let Some(m) = self.model_index(&model) else { return Answer::error(body::model_not_found(&model), 0) };
        let cap = request["max_completion_tokens"].as_u64().or_else(|| request["max_tokens"].as_u64());
        let (input, output, finish, delay) =
            match self.admit(req, &model, project, m, (&openai_prompt(&request), 0), cap, now) {
                Ok(x) => x,
                Err(a) => return a,
            };
        let n = self.responses.fetch_add(1, Ordering::Relaxed);
        let id = format!("chatcmpl-keysim-{n:012x}");
        let created = now / 1000;
        let finish = if finish == "MAX_TOKENS" { "length" } else { "stop" };
        let text = answer_text(output);
        let mut usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
        let cached = self.script.cached.of(input);
        if cached > 0 {
            usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
        }
        if request["stream"].as_bool() == Some(true) {
            let chunk = |choices: Value, usage: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": choices, "usage": usage})
                .to_string()
            };
            let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
            let mut events = vec![
                chunk(choice(json!({"role": "assistant", "content": text}), Value::Null), Value::Null),
                chunk(choice(json!({}), json!(finish)), Value::Null),
            ];
            // As OpenAI's API: usage only when asked (`stream_options.include_usage`), in a last
            // chunk of its own with no choices.
            if request["stream_options"]["include_usage"].as_bool() == Some(true) {
                events.push(chunk(json!([]), usage));
            }
            events.push("[DONE]".to_owned());
            return Answer { status: 200, payload: Payload::Events(events), delay_ms: delay, drop: false };
        }
        let (message, finish) = shape::openai_message(&request, text, finish, self.seed ^ n);
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        });
        Answer::json(200, body, delay)
    }
}

/// All text of an OpenAI chat request.
fn openai_prompt(req: &Value) -> String {
    let mut out = String::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(s) => out.push_str(s),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).for_each(|t| out.push_str(t)),
            _ => {}
        }
    }
    out
}

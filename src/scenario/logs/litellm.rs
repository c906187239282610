//! LiteLLM's logs: its standard logging payload (`StandardLoggingPayload`, as a callback
//! writes it, one JSON object per line) and its spend logs (`LiteLLM_SpendLogs` rows, as
//! `/spend/logs` answers: one array, or `{"data": [...]}`, or one row per line).
//!
//! | record | payload | spend log |
//! |---|---|---|
//! | arrival | `startTime` (epoch seconds) | `startTime` (ISO 8601) |
//! | model | `model_group`, else `model` (less its `provider/` prefix) | same |
//! | input, output | `prompt_tokens`, `completion_tokens` (successes) | same |
//! | client | `metadata.user_api_key_alias`, `…_team_alias`, `…_user_id`, `end_user`, `user`, else `key-` and 8 characters of the key's hash | same, with `api_key` the hash |
//! | outcome | `status` `success`; `failure` with a 429 (`error_information.error_code`, or `RateLimitError`/`RESOURCE_EXHAUSTED` in `error_str`) a breach, else a failure | `status` (absent: success) |
//! | latency | `endTime - startTime` | `request_duration_ms`, else the same |
//! | stream | `stream` | — |

use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;

use super::formats::{fault, json_documents, json_error, parse_ms, Doc};
use super::{Builder, LineError, Outcome, Record};

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "startTime")]
    start: Option<Value>,
    #[serde(rename = "endTime")]
    end: Option<Value>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    model_group: Option<String>,
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    end_user: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    error_str: Option<String>,
    #[serde(default)]
    error_information: Option<Value>,
    #[serde(default)]
    request_duration_ms: Option<f64>,
}

/// Reads LiteLLM's payloads or spend logs from `input`: JSON lines as they come, or one
/// document (an array, `{"data": [...]}`, or a payload spread over lines) whole.
pub(super) fn read(input: &mut dyn BufRead, b: &mut Builder) -> Result<(), LineError> {
    let mut entry = 0;
    json_documents(input, b, |doc, n, b| {
        let p: Payload = match doc {
            Doc::Line(text) => serde_json::from_slice(text).map_err(|e| json_error(n, &e))?,
            Doc::Entry(v) => {
                entry += 1;
                serde_json::from_value(v).map_err(|e| LineError {
                    line: n as usize,
                    column: None,
                    message: format!("entry {entry}: {e}"),
                })?
            }
        };
        one(p, n, b)
    })
}

fn time(v: &Option<Value>) -> Option<u64> {
    match v.as_ref()? {
        Value::Number(n) => n.as_f64().and_then(|x| parse_ms(&x.to_string())),
        Value::String(s) => parse_ms(s),
        _ => None,
    }
}

fn one(p: Payload, n: u32, b: &mut Builder) -> Result<(), LineError> {
    let bad = |message: String| LineError { line: n as usize, column: None, message };
    let ts = time(&p.start).ok_or_else(|| bad("no `startTime` (epoch seconds or an ISO 8601 time)".into()))?;
    let model = p.model_group.filter(|m| !m.is_empty()).or(p.model).unwrap_or_default();
    let meta = p.metadata.as_ref();
    let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let client = ["user_api_key_alias", "user_api_key_team_alias", "user_api_key_user_id"]
        .iter()
        .find_map(|k| text(k).map(str::to_owned))
        .or(p.end_user.filter(|s| !s.is_empty()))
        .or(p.user.filter(|s| !s.is_empty()))
        .or_else(|| {
            let hash = text("user_api_key_hash").map(str::to_owned).or(p.api_key.filter(|s| !s.is_empty()))?;
            Some(format!("key-{}", hash.chars().take(8).collect::<String>()))
        })
        .unwrap_or_else(|| "anonymous".into());
    let status = p.status.or_else(|| text("status").map(str::to_owned)).unwrap_or_else(|| "success".into());
    let outcome = match status.as_str() {
        "success" => Outcome::Served,
        "failure" => {
            let info = p.error_information.as_ref().or_else(|| meta.and_then(|m| m.get("error_information")));
            let code = info.and_then(|i| i.get("error_code")).map(|c| c.to_string()).unwrap_or_default();
            let why = p.error_str.unwrap_or_default();
            let quota =
                code.contains("429") || ["RateLimitError", "RESOURCE_EXHAUSTED", "429"].iter().any(|s| why.contains(s));
            if quota {
                Outcome::Breach
            } else {
                Outcome::Failed(fault(&why))
            }
        }
        other => return Err(bad(format!("unknown `status` '{other}' (success or failure)"))),
    };
    let served = outcome == Outcome::Served;
    let latency_ms = served
        .then(|| {
            p.request_duration_ms.map(|d| d.max(0.0).round() as u64).or_else(|| Some(time(&p.end)?.saturating_sub(ts)))
        })
        .flatten();
    let (client, model) = (b.client(&client), b.model(&model));
    b.push(Record {
        ts,
        client,
        model,
        input: p.prompt_tokens.filter(|_| served),
        output: p.completion_tokens.filter(|_| served),
        estimate: None,
        latency_ms,
        outcome,
        batch: 1,
        stream: p.stream.unwrap_or(false),
        line: n,
    });
    Ok(())
}

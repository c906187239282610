//! OpenTelemetry GenAI spans as JSON: OTLP exports (what the collector's file exporter
//! writes, one `ExportTraceServiceRequest` per line), or one span per line with its
//! attributes as an object (as console exporters print them).
//!
//! | record | attribute |
//! |---|---|
//! | arrival | the span's start (`startTimeUnixNano`, or `start_time`) |
//! | model | `gen_ai.request.model`, else `gen_ai.response.model` |
//! | input, output | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` (or the older `prompt_tokens`, `completion_tokens`) |
//! | client | `user.id`, `enduser.id`, else the resource's `service.name` |
//! | outcome | status error or `error.type`: a 429 (`429`, `RateLimitError`, `RESOURCE_EXHAUSTED`) a breach, else a failure |
//! | latency | the span's end less its start |
//! | stream | `gen_ai.request.stream` |
//!
//! Spans that are not model calls (no `gen_ai.request.model`, or an operation such as
//! `execute_tool` or `invoke_agent`) are left out.

use serde_json::{Map, Value};

use super::formats::{fault, json_documents, json_error, parse_ms, Doc};
use super::{Builder, LineError, Outcome, Record};

/// Operations that are not a call to a model.
const NOT_CALLS: [&str; 5] = ["execute_tool", "invoke_agent", "create_agent", "invoke_workflow", "retrieval"];

/// Reads spans from `input`: a JSON document per line, or one document spread over lines (an
/// export pretty-printed, an array of spans), then read whole.
pub(super) fn read(input: &mut dyn std::io::BufRead, b: &mut Builder) -> Result<(), LineError> {
    json_documents(input, b, |doc, n, b| match doc {
        Doc::Line(text) => document(text, n, b),
        Doc::Entry(v) => value(&v, n, b),
    })
}

/// One JSON document of line `n`.
fn document(text: &[u8], n: u32, b: &mut Builder) -> Result<(), LineError> {
    let v: Value = serde_json::from_slice(text).map_err(|e| json_error(n, &e))?;
    value(&v, n, b)
}

/// An export (`resourceSpans`) or a span, of line `n`.
fn value(v: &Value, n: u32, b: &mut Builder) -> Result<(), LineError> {
    match v.get("resourceSpans") {
        Some(Value::Array(resources)) => {
            for r in resources {
                let attrs = r.get("resource").and_then(|r| r.get("attributes"));
                let service = attrs.and_then(|a| attr(a, "service.name")).and_then(as_text);
                let scopes = r.get("scopeSpans").or_else(|| r.get("instrumentationLibrarySpans"));
                for s in scopes.and_then(Value::as_array).into_iter().flatten() {
                    for span in s.get("spans").and_then(Value::as_array).into_iter().flatten() {
                        one(span, service.as_deref(), n, b)?;
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(LineError { line: n as usize, column: None, message: "`resourceSpans` is not an array".into() }),
        None => {
            let attrs = v.get("resource").and_then(|r| r.get("attributes"));
            let service = attrs.and_then(|a| attr(a, "service.name")).and_then(as_text);
            one(v, service.as_deref(), n, b)
        }
    }
}

/// Attribute `key` of `attrs`: OTLP's `[{key, value: {stringValue|intValue|…}}]`, or an object.
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    match attrs {
        Value::Array(kvs) => kvs.iter().find(|kv| kv.get("key").and_then(Value::as_str) == Some(key)).and_then(|kv| {
            let v = kv.get("value")?;
            match v {
                Value::Object(o) => any_value(o),
                other => Some(other),
            }
        }),
        Value::Object(o) => o.get(key),
        _ => None,
    }
}

fn any_value(o: &Map<String, Value>) -> Option<&Value> {
    ["stringValue", "intValue", "doubleValue", "boolValue"].iter().find_map(|k| o.get(*k))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|x| *x >= 0.0).map(|x| x as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_time(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => parse_ms(&n.to_string()),
        Value::String(s) => parse_ms(s),
        _ => None,
    }
}

fn one(span: &Value, service: Option<&str>, n: u32, b: &mut Builder) -> Result<(), LineError> {
    let bad = |message: &str| LineError { line: n as usize, column: None, message: message.to_owned() };
    let Some(attrs) = span.get("attributes") else { return Ok(()) };
    let get = |k: &str| attr(attrs, k);
    let op = get("gen_ai.operation.name").and_then(as_text).unwrap_or_default();
    let Some(model) = get("gen_ai.request.model").or_else(|| get("gen_ai.response.model")).and_then(as_text) else {
        return Ok(());
    };
    if NOT_CALLS.contains(&op.as_str()) {
        return Ok(());
    }
    let start = span.get("startTimeUnixNano").or_else(|| span.get("start_time"));
    let ts = start.and_then(as_time).ok_or_else(|| bad("a GenAI span without a start time"))?;
    let end = span.get("endTimeUnixNano").or_else(|| span.get("end_time")).and_then(as_time);
    let status = span.get("status");
    let code = status.and_then(|s| s.get("code").or_else(|| s.get("status_code")));
    let errored = matches!(code, Some(Value::Number(c)) if c.as_u64() == Some(2))
        || matches!(code, Some(Value::String(c)) if c.contains("ERROR"));
    let error = get("error.type").and_then(as_text);
    let outcome = match (errored || error.is_some(), error.unwrap_or_default()) {
        (false, _) => Outcome::Served,
        (true, e) => {
            let message = status.and_then(|s| s.get("message").or_else(|| s.get("description")));
            let why = format!("{e} {}", message.and_then(Value::as_str).unwrap_or(""));
            if ["429", "RateLimit", "RESOURCE_EXHAUSTED"].iter().any(|s| why.contains(s)) {
                Outcome::Breach
            } else {
                Outcome::Failed(fault(&why))
            }
        }
    };
    let served = outcome == Outcome::Served;
    let count = |a: &str, old: &str| get(a).or_else(|| get(old)).and_then(as_count).filter(|_| served);
    let client = get("user.id")
        .or_else(|| get("enduser.id"))
        .and_then(as_text)
        .or_else(|| service.map(str::to_owned))
        .unwrap_or_else(|| "anonymous".into());
    let (client, model) = (b.client(&client), b.model(&model));
    b.push(Record {
        ts,
        client,
        model,
        input: count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output: count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        estimate: None,
        latency_ms: end.filter(|_| served).map(|e| e.saturating_sub(ts)),
        outcome,
        batch: 1,
        stream: get("gen_ai.request.stream").and_then(Value::as_bool).unwrap_or(false),
        line: n,
    });
    Ok(())
}

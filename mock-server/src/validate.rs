//! Request validation as Gemini does it: a request body is read as the protocol buffer it
//! stands for (field names in camelCase or snake_case, each of its type), then checked field by
//! field. What Gemini refuses gets its 400 `INVALID_ARGUMENT`, with the message shapes Gemini
//! uses and a `BadRequest` detail naming the field:
//!
//! - the body is not JSON, or its root is not an object: "Invalid JSON payload received. …";
//! - a field Gemini does not know: "Invalid JSON payload received. Unknown name \"x\" at 'y':
//!   Cannot find field.";
//! - a value of the wrong type, or an enum value that does not exist: "Invalid value at
//!   'generation_config.temperature' (TYPE_FLOAT), \"hot\"";
//! - a value out of range, a required field missing: "* GenerateContentRequest.contents: contents
//!   is not specified", one line per problem.
//!
//! The OpenAI-compatible surface is checked for what Gemini refuses there (no messages, unknown
//! roles, out-of-range numbers) and answers in OpenAI's error shape.

use serde_json::{json, Value};

use crate::body::ErrorAnswer;

/// A field's type, as the protocol buffer declares it.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Float,
    Bool,
    /// Base64 bytes.
    Bytes,
    /// An enum: its type name and values.
    Enum(&'static str, &'static [&'static str]),
    Msg(&'static Message),
    /// A `google.protobuf.Struct` or `Value`, a schema: any JSON.
    Any,
}

/// A field: snake_case name, type, repeated or not.
struct Field(&'static str, Ty, bool);

struct Message {
    name: &'static str,
    fields: &'static [Field],
}

const PKG: &str = "type.googleapis.com/google.ai.generativelanguage.v1beta.";

const HARM_CATEGORY: Ty = Ty::Enum(
    "HarmCategory",
    &[
        "HARM_CATEGORY_UNSPECIFIED",
        "HARM_CATEGORY_DEROGATORY",
        "HARM_CATEGORY_TOXICITY",
        "HARM_CATEGORY_VIOLENCE",
        "HARM_CATEGORY_SEXUAL",
        "HARM_CATEGORY_MEDICAL",
        "HARM_CATEGORY_DANGEROUS",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_CIVIC_INTEGRITY",
    ],
);
const HARM_THRESHOLD: Ty = Ty::Enum(
    "SafetySetting.HarmBlockThreshold",
    &[
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
        "BLOCK_LOW_AND_ABOVE",
        "BLOCK_MEDIUM_AND_ABOVE",
        "BLOCK_ONLY_HIGH",
        "BLOCK_NONE",
        "OFF",
    ],
);
const MODALITY: Ty = Ty::Enum("GenerationConfig.Modality", &["MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"]);
const MODE: Ty = Ty::Enum("FunctionCallingConfig.Mode", &["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"]);
const TASK: Ty = Ty::Enum(
    "TaskType",
    &[
        "TASK_TYPE_UNSPECIFIED",
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    ],
);

static BLOB: Message =
    Message { name: "Blob", fields: &[Field("mime_type", Ty::Str, false), Field("data", Ty::Bytes, false)] };
static FILE_DATA: Message =
    Message { name: "FileData", fields: &[Field("mime_type", Ty::Str, false), Field("file_uri", Ty::Str, false)] };
static FUNCTION_CALL: Message = Message {
    name: "FunctionCall",
    fields: &[Field("id", Ty::Str, false), Field("name", Ty::Str, false), Field("args", Ty::Any, false)],
};
static FUNCTION_RESPONSE: Message = Message {
    name: "FunctionResponse",
    fields: &[
        Field("id", Ty::Str, false),
        Field("name", Ty::Str, false),
        Field("response", Ty::Any, false),
        Field("parts", Ty::Any, false),
        Field("will_continue", Ty::Bool, false),
        Field("scheduling", Ty::Any, false),
    ],
};
/// The fields of a part that carry its data (exactly one must be set).
const PART_DATA: [&str; 7] = [
    "text",
    "inline_data",
    "file_data",
    "function_call",
    "function_response",
    "executable_code",
    "code_execution_result",
];
static PART: Message = Message {
    name: "Part",
    fields: &[
        Field("text", Ty::Str, false),
        Field("inline_data", Ty::Msg(&BLOB), false),
        Field("file_data", Ty::Msg(&FILE_DATA), false),
        Field("function_call", Ty::Msg(&FUNCTION_CALL), false),
        Field("function_response", Ty::Msg(&FUNCTION_RESPONSE), false),
        Field("executable_code", Ty::Any, false),
        Field("code_execution_result", Ty::Any, false),
        Field("thought", Ty::Bool, false),
        Field("thought_signature", Ty::Bytes, false),
        Field("video_metadata", Ty::Any, false),
        Field("part_metadata", Ty::Any, false),
        Field("media_resolution", Ty::Any, false),
    ],
};
static CONTENT: Message =
    Message { name: "Content", fields: &[Field("role", Ty::Str, false), Field("parts", Ty::Msg(&PART), true)] };
static FUNCTION_DECLARATION: Message = Message {
    name: "FunctionDeclaration",
    fields: &[
        Field("name", Ty::Str, false),
        Field("description", Ty::Str, false),
        Field("parameters", Ty::Any, false),
        Field("parameters_json_schema", Ty::Any, false),
        Field("response", Ty::Any, false),
        Field("response_json_schema", Ty::Any, false),
        Field("behavior", Ty::Any, false),
    ],
};
static TOOL: Message = Message {
    name: "Tool",
    fields: &[
        Field("function_declarations", Ty::Msg(&FUNCTION_DECLARATION), true),
        Field("google_search", Ty::Any, false),
        Field("google_search_retrieval", Ty::Any, false),
        Field("code_execution", Ty::Any, false),
        Field("url_context", Ty::Any, false),
        Field("computer_use", Ty::Any, false),
        Field("file_search", Ty::Any, false),
        Field("google_maps", Ty::Any, false),
    ],
};
static FUNCTION_CALLING_CONFIG: Message = Message {
    name: "FunctionCallingConfig",
    fields: &[Field("mode", MODE, false), Field("allowed_function_names", Ty::Str, true)],
};
static TOOL_CONFIG: Message = Message {
    name: "ToolConfig",
    fields: &[
        Field("function_calling_config", Ty::Msg(&FUNCTION_CALLING_CONFIG), false),
        Field("retrieval_config", Ty::Any, false),
    ],
};
static SAFETY_SETTING: Message = Message {
    name: "SafetySetting",
    fields: &[Field("category", HARM_CATEGORY, false), Field("threshold", HARM_THRESHOLD, false)],
};
static THINKING_CONFIG: Message = Message {
    name: "ThinkingConfig",
    fields: &[
        Field("include_thoughts", Ty::Bool, false),
        Field("thinking_budget", Ty::Int, false),
        Field("thinking_level", Ty::Any, false),
    ],
};
static GENERATION_CONFIG: Message = Message {
    name: "GenerationConfig",
    fields: &[
        Field("candidate_count", Ty::Int, false),
        Field("stop_sequences", Ty::Str, true),
        Field("max_output_tokens", Ty::Int, false),
        Field("temperature", Ty::Float, false),
        Field("top_p", Ty::Float, false),
        Field("top_k", Ty::Int, false),
        Field("seed", Ty::Int, false),
        Field("response_mime_type", Ty::Str, false),
        Field("response_schema", Ty::Any, false),
        Field("response_json_schema", Ty::Any, false),
        Field("presence_penalty", Ty::Float, false),
        Field("frequency_penalty", Ty::Float, false),
        Field("response_logprobs", Ty::Bool, false),
        Field("logprobs", Ty::Int, false),
        Field("enable_enhanced_civic_answers", Ty::Bool, false),
        Field("response_modalities", MODALITY, true),
        Field("speech_config", Ty::Any, false),
        Field("thinking_config", Ty::Msg(&THINKING_CONFIG), false),
        Field("media_resolution", Ty::Any, false),
        Field("image_config", Ty::Any, false),
    ],
};
static GENERATE: Message = Message {
    name: "GenerateContentRequest",
    fields: &[
        Field("model", Ty::Str, false),
        Field("contents", Ty::Msg(&CONTENT), true),
        Field("system_instruction", Ty::Msg(&CONTENT), false),
        Field("tools", Ty::Msg(&TOOL), true),
        Field("tool_config", Ty::Msg(&TOOL_CONFIG), false),
        Field("safety_settings", Ty::Msg(&SAFETY_SETTING), true),
        Field("generation_config", Ty::Msg(&GENERATION_CONFIG), false),
        Field("cached_content", Ty::Str, false),
        Field("labels", Ty::Any, false),
        Field("store", Ty::Bool, false),
    ],
};
static COUNT: Message = Message {
    name: "CountTokensRequest",
    fields: &[Field("contents", Ty::Msg(&CONTENT), true), Field("generate_content_request", Ty::Msg(&GENERATE), false)],
};
static EMBED: Message = Message {
    name: "EmbedContentRequest",
    fields: &[
        Field("model", Ty::Str, false),
        Field("content", Ty::Msg(&CONTENT), false),
        Field("task_type", TASK, false),
        Field("title", Ty::Str, false),
        Field("output_dimensionality", Ty::Int, false),
    ],
};
static BATCH_EMBED: Message =
    Message { name: "BatchEmbedContentsRequest", fields: &[Field("requests", Ty::Msg(&EMBED), true)] };

/// What a body is checked as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `generateContent` and `streamGenerateContent`.
    Generate,
    /// `countTokens`.
    Count,
    /// `embedContent`.
    Embed,
    /// `batchEmbedContents`.
    BatchEmbed,
}

/// Whether `key` names the field `snake`: as it is, or in the JSON mapping's camelCase
/// (compared without building the camelCase name).
fn names(snake: &str, key: &str) -> bool {
    if key == snake {
        return true;
    }
    let mut k = key.bytes();
    let mut up = false;
    for c in snake.bytes() {
        if c == b'_' {
            up = true;
            continue;
        }
        let want = if up { c.to_ascii_uppercase() } else { c };
        up = false;
        if k.next() != Some(want) {
            return false;
        }
    }
    k.next().is_none()
}

/// A 400 `INVALID_ARGUMENT` whose message is `message`, naming `field` in a `BadRequest`.
pub fn invalid(field: &str, message: &str) -> ErrorAnswer {
    let mut violation = json!({"description": message});
    if !field.is_empty() {
        violation["field"] = json!(field);
    }
    ErrorAnswer {
        status: 400,
        body: json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        ]}}),
    }
}

/// A field's path, built into text only when an error names it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Field(Self::Root, name) => write!(f, "{name}"),
            Self::Field(parent, name) => write!(f, "{parent}.{name}"),
            Self::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A JSON value as Gemini quotes it in an error.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Reads `v` as message `m` at `path`: the first structural error, if any.
fn structure(v: &Value, m: &Message, path: &Path<'_>) -> Result<(), ErrorAnswer> {
    let Value::Object(map) = v else {
        let msg = format!("Invalid value at '{path}' ({PKG}{}), {}", m.name, shown(v));
        return Err(invalid(&path.to_string(), &msg));
    };
    for (key, value) in map {
        let Some(field) = m.fields.iter().find(|f| names(f.0, key)) else {
            let at = if matches!(path, Path::Root) { String::new() } else { format!(" at '{path}'") };
            let msg = format!("Invalid JSON payload received. Unknown name \"{key}\"{at}: Cannot find field.");
            return Err(invalid(&Path::Field(path, key).to_string(), &msg));
        };
        let here = Path::Field(path, field.0);
        if value.is_null() {
            continue;
        }
        match (field.2, value) {
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    typed(item, field.1, &Path::Index(&here, i))?;
                }
            }
            (true, other) => {
                // A repeated field given one value: Gemini reads it as that value's type.
                typed(other, field.1, &here)?;
                if !matches!(field.1, Ty::Msg(_)) || !other.is_object() {
                    return Err(type_error(&here, field.1, other));
                }
            }
            (false, other) => typed(other, field.1, &here)?,
        }
    }
    Ok(())
}

fn type_name(t: Ty) -> String {
    match t {
        Ty::Str => "TYPE_STRING".into(),
        Ty::Int => "TYPE_INT32".into(),
        Ty::Float => "TYPE_FLOAT".into(),
        Ty::Bool => "TYPE_BOOL".into(),
        Ty::Bytes => "TYPE_BYTES".into(),
        Ty::Enum(name, _) => format!("{PKG}{name}"),
        Ty::Msg(m) => format!("{PKG}{}", m.name),
        Ty::Any => "google.protobuf.Value".into(),
    }
}

fn type_error(path: &Path<'_>, t: Ty, v: &Value) -> ErrorAnswer {
    invalid(&path.to_string(), &format!("Invalid value at '{path}' ({}), {}", type_name(t), shown(v)))
}

fn typed(v: &Value, t: Ty, path: &Path<'_>) -> Result<(), ErrorAnswer> {
    let ok = match t {
        Ty::Str => v.is_string(),
        // Integers may come as JSON numbers or as strings of digits.
        // Integers as JSON numbers (`100.0` and `1e2` too), or as strings of digits.
        Ty::Int => {
            v.as_i64().is_some()
                || v.as_f64().is_some_and(|x| x.fract() == 0.0 && x.abs() < 9.2e18)
                || v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok())
        }
        // Floats as JSON numbers or quoted ("0.7", "NaN", "Infinity").
        Ty::Float => v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok()),
        Ty::Bool => v.is_boolean(),
        Ty::Bytes => v.as_str().is_some_and(is_base64),
        Ty::Enum(_, values) => v.as_str().is_some_and(|s| values.contains(&s)) || v.as_u64().is_some(),
        Ty::Msg(m) => return structure(v, m, path),
        Ty::Any => true,
    };
    if ok {
        return Ok(());
    }
    if let (Ty::Bytes, Some(s)) = (t, v.as_str()) {
        let msg = format!("Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for {}", shown(&json!(s)));
        return Err(invalid(&path.to_string(), &msg));
    }
    Err(type_error(path, t, v))
}

fn is_base64(s: &str) -> bool {
    let s = s.trim_end_matches('=');
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')) && s.len() % 4 != 1
}

/// A field of `v` by its snake_case name, in either spelling.
pub fn get<'a>(v: &'a Value, snake: &str) -> Option<&'a Value> {
    let map = v.as_object()?;
    map.get(snake).or_else(|| map.iter().find(|(k, _)| names(snake, k)).map(|(_, x)| x)).filter(|x| !x.is_null())
}

/// Problems found by the field checks, as (field path, description).
type Problems = Vec<(String, String)>;

fn check_contents(contents: &Value, path: &Path<'_>, out: &mut Problems) {
    let items: &[Value] = match contents {
        Value::Array(a) => a,
        other => std::slice::from_ref(other),
    };
    if items.is_empty() {
        out.push((path.to_string(), "contents is not specified".into()));
    }
    for (i, c) in items.iter().enumerate() {
        let here = Path::Index(path, i);
        if let Some(role) = get(c, "role").and_then(Value::as_str) {
            if !["user", "model", "function", "tool", ""].contains(&role) {
                out.push((Path::Field(&here, "role").to_string(), "Please use a valid role: user, model.".into()));
            }
        }
        check_parts(get(c, "parts"), &Path::Field(&here, "parts"), out);
    }
}

fn check_parts(parts: Option<&Value>, path: &Path<'_>, out: &mut Problems) {
    let parts: &[Value] = match parts {
        Some(Value::Array(a)) => a,
        Some(other) => std::slice::from_ref(other),
        None => &[],
    };
    if parts.is_empty() {
        out.push((path.to_string(), "contents.parts must not be empty.".into()));
    }
    for (j, p) in parts.iter().enumerate() {
        let Some(map) = p.as_object() else { continue };
        // One pass over the part's fields: how many carry data.
        let set = map.iter().filter(|(k, v)| !v.is_null() && PART_DATA.iter().any(|d| names(d, k))).count();
        if set != 1 {
            let here = Path::Index(path, j);
            let what = if set == 0 {
                "required oneof field 'data' must have one initialized field"
            } else {
                "oneof field 'data' is already set. Cannot set more than one"
            };
            out.push((Path::Field(&here, "data").to_string(), what.into()));
        }
        if let Some(b) = get(p, "inline_data") {
            if get(b, "mime_type").and_then(Value::as_str).is_none_or(str::is_empty) {
                let here = Path::Index(path, j);
                out.push((
                    Path::Field(&here, "inline_data.mime_type").to_string(),
                    "mime_type must be specified.".into(),
                ));
            }
        }
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
}

fn check_generation(cfg: &Value, out: &mut Problems) {
    let path = "generation_config";
    let mut range = |name: &str, lo: f64, hi: f64, what: &str| {
        if let Some(x) = number(get(cfg, name)) {
            if !(lo..=hi).contains(&x) {
                out.push((format!("{path}.{name}"), format!("{name} must be {what} (got {x}).")));
            }
        }
    };
    range("candidate_count", 1.0, 8.0, "between 1 and 8");
    range("max_output_tokens", 1.0, f64::from(i32::MAX), "positive");
    range("temperature", 0.0, 2.0, "in the range [0.0, 2.0]");
    range("top_p", 0.0, 1.0, "in the range [0.0, 1.0]");
    range("top_k", 1.0, f64::from(i32::MAX), "positive");
    range("presence_penalty", -2.0, 2.0, "in the range [-2.0, 2.0)");
    range("frequency_penalty", -2.0, 2.0, "in the range [-2.0, 2.0)");
    range("logprobs", 0.0, 20.0, "in the range [0, 20]");
    if let Some(Value::Array(stops)) = get(cfg, "stop_sequences") {
        if stops.len() > 5 {
            out.push((format!("{path}.stop_sequences"), "stop_sequences must have at most 5 elements.".into()));
        }
    }
    const MIME: [&str; 5] = ["text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"];
    let mime = get(cfg, "response_mime_type").and_then(Value::as_str);
    if let Some(m) = mime.filter(|m| !m.is_empty() && !MIME.contains(m)) {
        out.push((
            format!("{path}.response_mime_type"),
            format!(
                "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` \
                 and `text/x.enum`, got {m}."
            ),
        ));
    }
    let schema = get(cfg, "response_schema").or_else(|| get(cfg, "response_json_schema"));
    if schema.is_some() && !matches!(mime, Some("application/json" | "text/x.enum")) {
        out.push((
            format!("{path}.response_mime_type"),
            "response_mime_type must be application/json or text/x.enum when a response schema is set.".into(),
        ));
    }
    if let Some(b) = get(cfg, "thinking_config").and_then(|t| number(get(t, "thinking_budget"))) {
        if !(-1.0..=32_768.0).contains(&b) {
            out.push((
                format!("{path}.thinking_config.thinking_budget"),
                "thinking_budget must be -1 (dynamic) or in the range [0, 32768].".into(),
            ));
        }
    }
}

fn check_tools(req: &Value, out: &mut Problems) {
    let mut declared = 0usize;
    for (i, tool) in get(req, "tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, f) in get(tool, "function_declarations").and_then(Value::as_array).into_iter().flatten().enumerate() {
            declared += 1;
            let name = get(f, "name").and_then(Value::as_str).unwrap_or("");
            let valid = name.len() <= 64
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
            if !valid {
                out.push((
                    format!("tools[{i}].function_declarations[{j}].name"),
                    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, \
                     A-Z, 0-9), underscores (_), dots (.) or dashes (-), with a maximum length of 64."
                        .into(),
                ));
            }
        }
    }
    let config = get(req, "tool_config").and_then(|t| get(t, "function_calling_config"));
    let mode = config.and_then(|c| get(c, "mode")).and_then(Value::as_str).unwrap_or("AUTO");
    if matches!(mode, "ANY" | "VALIDATED") && declared == 0 {
        out.push((
            "tool_config.function_calling_config.mode".into(),
            "Function calling mode ANY requires function_declarations to be set.".into(),
        ));
    }
    let allowed = config.and_then(|c| get(c, "allowed_function_names")).and_then(Value::as_array);
    if allowed.is_some_and(|a| !a.is_empty()) && mode != "ANY" && mode != "VALIDATED" {
        out.push((
            "tool_config.function_calling_config.allowed_function_names".into(),
            "allowed_function_names may only be set when the mode is ANY.".into(),
        ));
    }
}

fn check_safety(req: &Value, out: &mut Problems) {
    let mut seen = Vec::new();
    for (i, s) in get(req, "safety_settings").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let category = get(s, "category").and_then(Value::as_str).unwrap_or("");
        if seen.contains(&category) {
            out.push((format!("safety_settings[{i}].category"), format!("duplicate category {category}.")));
        }
        seen.push(category);
    }
}

/// Problems as Gemini reports them: one line per field, the request's type in front.
fn report(request: &str, problems: Problems) -> Result<(), ErrorAnswer> {
    let Some((first, _)) = problems.first() else { return Ok(()) };
    let message: String = problems.iter().map(|(f, d)| format!("* {request}.{f}: {d}\n")).collect();
    let mut e = invalid(first, &message);
    let violations: Vec<Value> = problems.iter().map(|(f, d)| json!({"field": f, "description": d})).collect();
    e.body["error"]["details"][0]["fieldViolations"] = Value::Array(violations);
    Err(e)
}

/// Reads a request body of `kind`: the body's JSON, or Gemini's 400.
pub fn request(body: &[u8], kind: Kind) -> Result<Value, ErrorAnswer> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        let msg = format!("Invalid JSON payload received. {}", parse_error(&e));
        invalid("", &msg)
    })?;
    if !v.is_object() {
        return Err(invalid("", "Invalid JSON payload received. Root element must be a message."));
    }
    let (message, name) = match kind {
        Kind::Generate => (&GENERATE, "GenerateContentRequest"),
        Kind::Count => (&COUNT, "CountTokensRequest"),
        Kind::Embed => (&EMBED, "EmbedContentRequest"),
        Kind::BatchEmbed => (&BATCH_EMBED, "BatchEmbedContentsRequest"),
    };
    structure(&v, message, &Path::Root)?;
    let mut problems = Problems::new();
    match kind {
        Kind::Generate => generate(&v, &mut problems),
        Kind::Count => match get(&v, "generate_content_request") {
            Some(inner) => {
                generate(inner, &mut problems);
                if get(&v, "contents").is_some() {
                    problems.push(("contents".into(), "contents and generate_content_request are exclusive.".into()));
                }
            }
            None => match get(&v, "contents") {
                Some(c) => check_contents(c, &Path::Field(&Path::Root, "contents"), &mut problems),
                None => problems.push(("contents".into(), "contents is not specified".into())),
            },
        },
        Kind::Embed => embed(&v, "", &mut problems),
        Kind::BatchEmbed => {
            let requests = get(&v, "requests").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            if requests.is_empty() {
                problems.push(("requests".into(), "requests must not be empty.".into()));
            }
            if requests.len() > 100 {
                problems.push(("requests".into(), "at most 100 requests can be in one batch.".into()));
            }
            for (i, r) in requests.iter().enumerate() {
                embed(r, &format!("requests[{i}]."), &mut problems);
            }
        }
    }
    report(name, problems)?;
    Ok(v)
}

fn generate(v: &Value, problems: &mut Problems) {
    match get(v, "contents") {
        Some(c) => check_contents(c, &Path::Field(&Path::Root, "contents"), problems),
        None => problems.push(("contents".into(), "contents is not specified".into())),
    }
    if let Some(s) = get(v, "system_instruction") {
        check_parts(get(s, "parts"), &Path::Field(&Path::Root, "system_instruction.parts"), problems);
    }
    if let Some(cfg) = get(v, "generation_config") {
        check_generation(cfg, problems);
    }
    check_tools(v, problems);
    check_safety(v, problems);
}

fn embed(v: &Value, prefix: &str, problems: &mut Problems) {
    match get(v, "content") {
        Some(c) => {
            let path = format!("{prefix}content.parts");
            check_parts(get(c, "parts"), &Path::Field(&Path::Root, &path), problems)
        }
        None => problems.push((format!("{prefix}content"), "content is not specified".into())),
    }
    if let Some(d) = number(get(v, "output_dimensionality")) {
        if !(1.0..=3072.0).contains(&d) {
            problems.push((
                format!("{prefix}output_dimensionality"),
                "output_dimensionality must be in the range [1, 3072].".into(),
            ));
        }
    }
}

/// serde_json's parse error as Gemini words its own.
pub(crate) fn parse_error(e: &serde_json::Error) -> String {
    let what = e.to_string();
    let what = what.split(" at line").next().unwrap_or(&what);
    format!("{what} (line {}, column {}).", e.line(), e.column())
}

mod openai;
pub use openai::{chat, embeddings, openai_invalid};

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str, kind: Kind) -> String {
        match request(body.as_bytes(), kind) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => {
                assert_eq!((e.status, e.body["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")), "{body}");
                e.body["error"]["message"].as_str().unwrap().to_owned()
            }
        }
    }

    #[test]
    fn valid_requests_pass_in_either_spelling() {
        for body in [
            r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
            r#"{"contents":[{"parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":5,"temperature":0.3}}"#,
            r#"{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}]}]}"#,
            r#"{"contents":[{"parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather"}]}],
               "toolConfig":{"functionCallingConfig":{"mode":"ANY"}}}"#,
            r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"responseMimeType":"application/json",
               "responseSchema":{"type":"OBJECT"},"candidateCount":2,"stopSequences":["a"]}}"#,
        ] {
            assert!(request(body.as_bytes(), Kind::Generate).is_ok(), "{body}");
        }
    }

    #[test]
    fn proto_json_number_forms_are_accepted() {
        let body = r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"maxOutputTokens":100.0,
            "topK":"40","temperature":"0.7"},"tools":[{"functionDeclarations":[{"name":"server:tool"}]}]}"#;
        assert!(request(body.as_bytes(), Kind::Generate).is_ok());
        assert!(request(br#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"topK":1.5}}"#, Kind::Generate)
            .is_err());
    }

    #[test]
    fn messages_name_the_field_as_gemini_does() {
        assert_eq!(refused("{}", Kind::Generate), "* GenerateContentRequest.contents: contents is not specified\n");
        let m = refused(r#"{"contents":42}"#, Kind::Generate);
        assert!(
            m.starts_with(
                "Invalid value at 'contents' (type.googleapis.com/google.ai.generativelanguage.v1beta.Content), 42"
            ),
            "{m}"
        );
        let m = refused(r#"{"contents":[],"foo":1}"#, Kind::Generate);
        assert_eq!(m, "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.");
        let m =
            refused(r#"{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"temprature":1}}"#, Kind::Generate);
        assert!(m.contains("Unknown name \"temprature\" at 'generation_config'"), "{m}");
        let m = refused(r#"{"safetySettings":[{"category":"HARM_CATEGORY_FOO"}],"contents":[]}"#, Kind::Generate);
        assert!(m.starts_with("Invalid value at 'safety_settings[0].category'"), "{m}");
    }
}

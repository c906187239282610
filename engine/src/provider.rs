//! Reading the provider's answers: which quota a 429 names and how long to wait.

use serde_json::Value;

use super::limits::Dimension;

/// What kind of refusal a 429 is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Exhaustion {
    /// A quota of the project ran out: the body names it (`QuotaFailure`, or the legacy
    /// `ErrorInfo` with `quota_limit`).
    Quota,
    /// A quota, but the body does not say which ("You exceeded your current quota" with only a
    /// `Help` link, or an unreadable body): a short back-off of that bucket.
    #[default]
    Unspecified,
    /// Not a quota: "Resource has been exhausted" with no details at all, when the provider is
    /// short of capacity. The model backs off pool-wide; no key or project is to blame.
    Capacity,
}

/// What a 429 answer says about the exhausted quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaExhausted {
    /// The dimension its `quotaId` names (the longest-lasting one if it names several);
    /// `None` when the body names none.
    pub dimension: Option<Dimension>,
    /// `RetryInfo.retryDelay` in milliseconds, if given.
    pub retry_after_ms: Option<u64>,
    /// The limit the provider enforced on that dimension (`quotaValue`, or the legacy
    /// `quota_limit_value`), if given: the live signal of a limit that changed.
    pub limit: Option<u64>,
    /// What kind of refusal it is.
    pub kind: Exhaustion,
}

impl QuotaExhausted {
    /// A quota 429 naming `dimension`.
    pub fn quota(dimension: Dimension, retry_after_ms: Option<u64>) -> Self {
        Self { dimension: Some(dimension), retry_after_ms, limit: None, kind: Exhaustion::Quota }
    }
}

/// The dimension a Gemini `quotaId` (or `quotaMetric`) refers to.
pub fn dimension_of_quota_id(id: &str) -> Option<Dimension> {
    let tokens = id.contains("Token");
    if id.contains("PerMinute") {
        Some(if tokens { Dimension::Tpm } else { Dimension::Rpm })
    } else if id.contains("PerDay") {
        Some(if tokens { Dimension::Tpd } else { Dimension::Rpd })
    } else {
        None
    }
}

/// Parses a duration of the protobuf JSON form `"46s"` or `"26.211922938s"` into milliseconds.
pub fn parse_proto_duration(s: &str) -> Option<u64> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).ceil() as u64)
}

/// A count written as a JSON string or number.
fn count(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

/// What a failed answer (not a 429) tells the engine, with the failure's name as reports
/// give it: a rejected key (`api-key-invalid`, `permission-denied`), the provider short of
/// capacity (`overloaded` 503, `timeout` 504), or nothing in particular (`internal` 500).
/// `None` for any other status: the caller decides (a refused request counts nothing).
pub fn failure(status: u16, body: &str) -> Option<(&'static str, crate::Outcome)> {
    use crate::Outcome;
    match status {
        500 => Some(("internal", Outcome::Failed)),
        503 => Some(("overloaded", Outcome::Unavailable)),
        504 => Some(("timeout", Outcome::Unavailable)),
        400 if key_rejected(400, body) => Some(("api-key-invalid", Outcome::KeyRejected)),
        403 if key_rejected(403, body) => Some(("permission-denied", Outcome::KeyRejected)),
        _ => None,
    }
}

/// Whether an error answer says the provider rejected the key itself (deleted, invalid,
/// leaked, suspended, its API blocked), as opposed to the request: a 400 whose `ErrorInfo`
/// reason is `API_KEY_INVALID`, or a 403 with a key-level `ErrorInfo` reason or, without
/// details, a message about the key. Read from the parsed error, never from the text at large:
/// Gemini quotes a request's unknown field names in its 400 messages, so a client could
/// otherwise name a field `API_KEY_INVALID` and have keys disabled.
pub fn key_rejected(status: u16, body: &str) -> bool {
    const KEY_REASONS: &[&str] = &[
        "API_KEY_INVALID",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
        "SERVICE_DISABLED",
        "CONSUMER_SUSPENDED",
        "CONSUMER_INVALID",
    ];
    const KEY_MESSAGES: &[&str] = &[
        "Your API key was reported as leaked",
        "Method doesn't allow unregistered callers",
        "Permission denied: Consumer",
        "Permission denied: the API key",
        "API key expired",
        "API key not valid",
    ];
    let Ok(v) = serde_json::from_str::<Value>(body) else { return false };
    let error = &v["error"];
    let reasons: Vec<&str> = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.rpc.ErrorInfo")))
        .filter_map(|d| d["reason"].as_str())
        .collect();
    match status {
        400 => reasons.contains(&"API_KEY_INVALID"),
        403 if !reasons.is_empty() => reasons.iter().any(|r| KEY_REASONS.contains(r)),
        // Gemini's leaked, suspended and missing-key answers carry no details; they are
        // told by how their messages begin, never by a word anywhere in them (a resource
        // refusal quotes the resource's name: "… access the File suspended …").
        403 => error["message"].as_str().is_some_and(|m| KEY_MESSAGES.iter().any(|p| m.starts_with(p))),
        _ => false,
    }
}

/// Reads a 429 body, in any of the shapes Gemini has used: `QuotaFailure` (with `RetryInfo`
/// and `Help`), only a `Help` link, the legacy `ErrorInfo` with `quota_limit`, and the bare
/// "Resource has been exhausted" with no details (capacity, not quota). Unknown or malformed
/// bodies are [`Exhaustion::Unspecified`] rather than an error: a short, conservative back-off.
pub fn parse_quota_error(body: &str) -> QuotaExhausted {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return QuotaExhausted::default();
    };
    let mut out = QuotaExhausted::default();
    let Some(error) = v.get("error").filter(|e| e.is_object()) else {
        return out;
    };
    let details = error.get("details").and_then(Value::as_array).filter(|d| !d.is_empty());
    let Some(details) = details else {
        out.kind = Exhaustion::Capacity;
        return out;
    };
    // A daily exhaustion outlasts a minute one: keep the longest, with its limit.
    let name = |out: &mut QuotaExhausted, dim: Dimension, limit: Option<u64>| {
        out.kind = Exhaustion::Quota;
        if out.dimension.is_none_or(|cur| dim.is_daily() && !cur.is_daily()) {
            out.dimension = Some(dim);
            out.limit = limit;
        }
    };
    for d in details {
        let kind = d.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("google.rpc.QuotaFailure") {
            let violations = d.get("violations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                let id = v.get("quotaId").or_else(|| v.get("quotaMetric")).and_then(Value::as_str);
                if let Some(dim) = id.and_then(dimension_of_quota_id) {
                    name(&mut out, dim, count(v.get("quotaValue")));
                }
            }
        } else if kind.ends_with("google.rpc.ErrorInfo") {
            let meta = d.get("metadata");
            let id = meta.and_then(|m| m.get("quota_limit").or_else(|| m.get("quota_metric"))).and_then(Value::as_str);
            if let Some(dim) = id.and_then(dimension_of_quota_id) {
                name(&mut out, dim, count(meta.and_then(|m| m.get("quota_limit_value"))));
            }
        } else if kind.ends_with("google.rpc.RetryInfo") {
            out.retry_after_ms = d.get("retryDelay").and_then(Value::as_str).and_then(parse_proto_duration);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_key_is_told_from_a_refused_request() {
        let invalid = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert!(key_rejected(400, invalid));
        let spoof = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"API_KEY_INVALID\": Cannot find field.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest"}]}}"#;
        assert!(!key_rejected(400, spoof));
        let leaked = r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#;
        assert!(key_rejected(403, leaked));
        for name in ["abc", "suspended", "api-key"] {
            let file = format!(
                r#"{{"error":{{"code":403,"message":"You do not have permission to access the File {name} or it may not exist.","status":"PERMISSION_DENIED"}}}}"#
            );
            assert!(!key_rejected(403, &file), "{name}");
        }
        let suspended = r#"{"error":{"code":403,"message":"Permission denied: the API key has been suspended.","status":"PERMISSION_DENIED"}}"#;
        assert!(key_rejected(403, suspended));
        let blocked = r#"{"error":{"code":403,"message":"x","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_SERVICE_BLOCKED"}]}}"#;
        assert!(key_rejected(403, blocked));
        assert!(!key_rejected(403, "not json") && !key_rejected(500, invalid));
    }

    #[test]
    fn reads_the_documented_body() {
        let body = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[
 {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-pro"},"quotaValue":"2"}]},
 {"@type":"type.googleapis.com/google.rpc.Help","links":[]},
 {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"46s"}]}}"#;
        assert_eq!(
            parse_quota_error(body),
            QuotaExhausted {
                dimension: Some(Dimension::Rpm),
                retry_after_ms: Some(46_000),
                limit: Some(2),
                kind: Exhaustion::Quota
            }
        );
    }

    #[test]
    fn daily_wins_over_minute_in_any_order() {
        let body = r#"{"error":{"details":[
 {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"26.211922938s"},
 {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
   {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"},
   {"quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier"}]}]}}"#;
        let q = parse_quota_error(body);
        assert_eq!(q.dimension, Some(Dimension::Rpd));
        assert_eq!(q.retry_after_ms, Some(26_212));
    }

    #[test]
    fn names_every_documented_quota_id() {
        for (id, d) in [
            ("GenerateRequestsPerMinutePerProjectPerModel", Dimension::Rpm),
            ("GenerateContentInputTokensPerModelPerMinute-FreeTier", Dimension::Tpm),
            ("GenerateContentPaidTierInputTokensPerModelPerMinute", Dimension::Tpm),
            ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", Dimension::Rpd),
            ("GenerateContentInputTokensPerModelPerDay-FreeTier", Dimension::Tpd),
        ] {
            assert_eq!(dimension_of_quota_id(id), Some(d), "{id}");
        }
    }

    #[test]
    fn the_bare_body_is_capacity_and_garbage_says_nothing() {
        let bare = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(parse_quota_error(bare), QuotaExhausted { kind: Exhaustion::Capacity, ..Default::default() });
        assert_eq!(parse_quota_error("not json"), QuotaExhausted::default());
        assert_eq!(parse_quota_error("not json").kind, Exhaustion::Unspecified);
    }

    #[test]
    fn a_help_link_alone_is_an_unspecified_quota() {
        let body = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[
 {"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]}]}}"#;
        let q = parse_quota_error(body);
        assert_eq!((q.kind, q.dimension, q.limit), (Exhaustion::Unspecified, None, None));
    }

    #[test]
    fn reads_the_legacy_error_info_with_its_limit() {
        let body = r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Generate Content API requests per minute' and limit 'GenerateContent request limit per minute for a region' of service 'generativelanguage.googleapis.com' for consumer 'project_number:1234'.","status":"RESOURCE_EXHAUSTED","details":[
 {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com","consumer":"projects/1234","quota_limit_value":"60","quota_limit":"GenerateContentRequestsPerMinutePerProjectPerRegion","quota_metric":"generativelanguage.googleapis.com/generate_content_requests","quota_location":"us-central1"}}]}}"#;
        let q = parse_quota_error(body);
        assert_eq!((q.kind, q.dimension, q.limit), (Exhaustion::Quota, Some(Dimension::Rpm), Some(60)));
    }

    #[test]
    fn a_daily_limit_cut_is_read_from_quota_value() {
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[
 {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
   {"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaValue":"10"},
   {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"20"}]},
 {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"562476.75s"}]}}"#;
        let q = parse_quota_error(body);
        assert_eq!((q.dimension, q.limit, q.retry_after_ms), (Some(Dimension::Rpd), Some(20), Some(562_476_750)));
    }
}

/// The counts of a successful answer's `usageMetadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageMetadata {
    /// `promptTokenCount` (cached tokens included).
    pub prompt: u64,
    /// `cachedContentTokenCount`: the part of the prompt served from a cache.
    pub cached: u64,
    /// `candidatesTokenCount`.
    pub candidates: u64,
    /// `thoughtsTokenCount`.
    pub thoughts: u64,
}

impl UsageMetadata {
    /// Reads the `usageMetadata` object of an answer (the whole answer or the object itself);
    /// `None` when it has no `promptTokenCount`.
    pub fn parse(answer: &Value) -> Option<Self> {
        let u = answer.get("usageMetadata").unwrap_or(answer);
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        u.get("promptTokenCount").and_then(Value::as_u64)?;
        Some(Self {
            prompt: n("promptTokenCount"),
            cached: n("cachedContentTokenCount").min(n("promptTokenCount")),
            candidates: n("candidatesTokenCount"),
            thoughts: n("thoughtsTokenCount"),
        })
    }

    /// The input tokens that count toward TPM: the prompt, less its cached part where
    /// `cached_tokens_count` is false (Google does not document which holds).
    pub fn counted_input(&self, cached_tokens_count: bool) -> u64 {
        if cached_tokens_count {
            self.prompt
        } else {
            self.prompt.saturating_sub(self.cached)
        }
    }

    /// The output tokens: candidates and thoughts.
    pub fn output(&self) -> u64 {
        self.candidates + self.thoughts
    }
}

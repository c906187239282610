//! Gemini's answers as data: the JSON bodies and status codes of `generateContent` and of
//! its errors, as the real API sends them (see the project's reference notes on the API).

use serde_json::{json, Value};

use crate::judge::{Dimension, Tier, Violation};

const RATE_LIMIT_DOCS: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

/// An error answer: HTTP status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorAnswer {
    /// The HTTP status code.
    pub status: u16,
    /// The JSON body, `{"error": {...}}`.
    pub body: Value,
}

/// Token counts of an answer, as `usageMetadata` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageMetadata {
    /// `promptTokenCount`: input tokens (including cached ones).
    pub prompt: u64,
    /// `cachedContentTokenCount`: the part of the prompt served from a cache.
    pub cached: u64,
    /// `candidatesTokenCount`: output tokens, thoughts excluded.
    pub candidates: u64,
    /// `thoughtsTokenCount`: thinking tokens.
    pub thoughts: u64,
}

impl UsageMetadata {
    /// The `usageMetadata` object. Zero-valued fields are omitted, as Gemini does.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: u64| {
            if v > 0 {
                m.insert(k.to_owned(), json!(v));
            }
        };
        put("promptTokenCount", self.prompt);
        put("cachedContentTokenCount", self.cached);
        put("candidatesTokenCount", self.candidates);
        put("totalTokenCount", self.prompt + self.candidates + self.thoughts);
        put("thoughtsTokenCount", self.thoughts);
        if self.prompt > 0 {
            m.insert("promptTokensDetails".to_owned(), json!([{"modality": "TEXT", "tokenCount": self.prompt}]));
        }
        if self.cached > 0 {
            m.insert("cacheTokensDetails".to_owned(), json!([{"modality": "TEXT", "tokenCount": self.cached}]));
        }
        Value::Object(m)
    }
}

/// A successful `generateContent` body.
pub fn generate_content(text: &str, usage: &UsageMetadata, model: &str, response_id: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": [{"text": text}], "role": "model"},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": usage.to_json(),
        "modelVersion": format!("models/{model}"),
        "responseId": response_id
    })
}

/// The `quotaId` Gemini names for an exhausted dimension.
pub fn quota_id(dimension: Dimension, tier: Tier) -> &'static str {
    match (dimension, tier) {
        (Dimension::Rpm, Tier::Free) => "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        (Dimension::Rpm, Tier::Paid) => "GenerateRequestsPerMinutePerProjectPerModel",
        (Dimension::Tpm, Tier::Free) => "GenerateContentInputTokensPerModelPerMinute-FreeTier",
        (Dimension::Tpm, Tier::Paid) => "GenerateContentPaidTierInputTokensPerModelPerMinute",
        (Dimension::Rpd, Tier::Free) => "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        (Dimension::Rpd, Tier::Paid) => "GenerateRequestsPerDayPerProjectPerModel",
        (Dimension::Tpd, Tier::Free) => "GenerateContentInputTokensPerModelPerDay-FreeTier",
        (Dimension::Tpd, Tier::Paid) => "GenerateContentPaidTierInputTokensPerModelPerDay",
    }
}

/// The `quotaMetric` Gemini names for an exhausted dimension.
pub fn quota_metric(dimension: Dimension, tier: Tier) -> &'static str {
    match (dimension, tier) {
        (Dimension::Rpm | Dimension::Rpd, Tier::Free) => {
            "generativelanguage.googleapis.com/generate_content_free_tier_requests"
        }
        (Dimension::Rpm | Dimension::Rpd, Tier::Paid) => {
            "generativelanguage.googleapis.com/generate_content_paid_tier_requests"
        }
        (Dimension::Tpm | Dimension::Tpd, Tier::Free) => {
            "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
        }
        (Dimension::Tpm | Dimension::Tpd, Tier::Paid) => {
            "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count"
        }
    }
}

/// The 429 `RESOURCE_EXHAUSTED` answer, with `QuotaFailure`, `Help` and `RetryInfo` details.
pub fn quota_exceeded(violations: &[Violation], tier: Tier, model: &str, retry_after_ms: u64) -> ErrorAnswer {
    let mut message = format!(
        "You exceeded your current quota, please check your plan and billing details. \
         For more information on this error, head to: {RATE_LIMIT_DOCS}."
    );
    for v in violations {
        message.push_str(&format!(
            "\n* Quota exceeded for metric: {}, limit: {}, model: {model}",
            quota_metric(v.dimension, tier),
            v.limit
        ));
    }
    message.push_str(&format!("\nPlease retry in {:.9}s.", retry_after_ms as f64 / 1000.0));
    let violations: Vec<Value> = violations
        .iter()
        .map(|v| {
            json!({
                "quotaMetric": quota_metric(v.dimension, tier),
                "quotaId": quota_id(v.dimension, tier),
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": v.limit.to_string()
            })
        })
        .collect();
    let retry_s = retry_after_ms.div_ceil(1000);
    ErrorAnswer {
        status: 429,
        body: json!({"error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
                {"@type": "type.googleapis.com/google.rpc.Help", "links": [
                    {"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}
                ]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{retry_s}s")}
            ]
        }}),
    }
}

fn plain(status: u16, code_name: &str, message: &str, details: Option<Value>) -> ErrorAnswer {
    let mut error = json!({"code": status, "message": message, "status": code_name});
    if let Some(details) = details {
        error["details"] = details;
    }
    ErrorAnswer { status, body: json!({ "error": error }) }
}

/// 400 `INVALID_ARGUMENT`: the key is not one the provider issued.
pub fn api_key_invalid() -> ErrorAnswer {
    const MSG: &str = "API key not valid. Please pass a valid API key.";
    let details = json!([
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": MSG}
    ]);
    plain(400, "INVALID_ARGUMENT", MSG, Some(details))
}

/// 400 `INVALID_ARGUMENT`: both a key and a bearer token were sent.
pub fn multiple_credentials() -> ErrorAnswer {
    plain(400, "INVALID_ARGUMENT", "Multiple authentication credentials received. Please pass only one.", None)
}

/// 403 `PERMISSION_DENIED`: no key at all.
pub fn missing_key() -> ErrorAnswer {
    plain(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). \
         Please use API Key or other form of API consumer identity to call this API.",
        None,
    )
}

/// 403 `PERMISSION_DENIED`: the key was reported as leaked.
pub fn leaked_key() -> ErrorAnswer {
    plain(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.", None)
}

/// 404 `NOT_FOUND`: the model does not exist.
pub fn model_not_found(model: &str) -> ErrorAnswer {
    let msg = format!(
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. \
         Call ListModels to see the list of available models and their supported methods."
    );
    plain(404, "NOT_FOUND", &msg, None)
}

/// 408: the request's body did not arrive in time.
pub fn request_timeout() -> ErrorAnswer {
    plain(408, "DEADLINE_EXCEEDED", "The request body was not received in time.", None)
}

/// 400: the request's body could not be read (the connection failed while sending it).
pub fn unreadable_body() -> ErrorAnswer {
    plain(400, "INVALID_ARGUMENT", "The request body could not be read.", None)
}

/// 413: the request body is larger than the API accepts.
pub fn payload_too_large() -> ErrorAnswer {
    plain(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes.", None)
}

/// 429 `RESOURCE_EXHAUSTED` with no details at all: the provider is short of capacity, not
/// the caller's quota (retrying elsewhere will not help; waiting will).
pub fn capacity_exhausted() -> ErrorAnswer {
    plain(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", None)
}

/// 403 `PERMISSION_DENIED`: the key was suspended.
pub fn suspended_key() -> ErrorAnswer {
    plain(403, "PERMISSION_DENIED", "Permission denied: the API key has been suspended.", None)
}

/// The shapes a quota 429 has come in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuotaBody {
    /// `QuotaFailure` (with `quotaValue`), `Help` and `RetryInfo`: today's.
    #[default]
    QuotaFailure,
    /// "You exceeded your current quota" with only a `Help` link.
    HelpOnly,
    /// The legacy `ErrorInfo` with `quota_limit`, `quota_limit_value` and `consumer`.
    ErrorInfo,
}

impl QuotaBody {
    /// Every shape, by scenario name.
    pub const ALL: [(&'static str, Self); 3] =
        [("quota-failure", Self::QuotaFailure), ("help-only", Self::HelpOnly), ("error-info", Self::ErrorInfo)];
}

/// A quota 429 in `shape`; `project_number` names the consumer of the legacy shape.
pub fn quota_exceeded_as(
    shape: QuotaBody,
    violations: &[Violation],
    tier: Tier,
    model: &str,
    retry_after_ms: u64,
    project_number: u64,
) -> ErrorAnswer {
    match shape {
        QuotaBody::QuotaFailure => quota_exceeded(violations, tier, model, retry_after_ms),
        QuotaBody::HelpOnly => {
            let msg = format!(
                "You exceeded your current quota, please check your plan and billing details. \
                 For more information on this error, head to: {RATE_LIMIT_DOCS}."
            );
            let details = json!([{"@type": "type.googleapis.com/google.rpc.Help", "links": [
                {"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}
            ]}]);
            plain(429, "RESOURCE_EXHAUSTED", &msg, Some(details))
        }
        QuotaBody::ErrorInfo => {
            // The legacy shape names one limit: the longest-lasting one violated.
            let v = violations.iter().max_by_key(|v| matches!(v.dimension, Dimension::Rpd | Dimension::Tpd)).copied();
            let (id, metric, limit) =
                v.map_or(("", "", 0), |v| (quota_id(v.dimension, tier), quota_metric(v.dimension, tier), v.limit));
            let msg = format!(
                "Quota exceeded for quota metric '{metric}' and limit '{id}' of service \
                 'generativelanguage.googleapis.com' for consumer 'project_number:{project_number}'."
            );
            let details = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com", "consumer": format!("projects/{project_number}"),
                             "quota_limit": id, "quota_metric": metric, "quota_limit_value": limit.to_string()}
            }]);
            plain(429, "RESOURCE_EXHAUSTED", &msg, Some(details))
        }
    }
}

/// 500 `INTERNAL`.
pub fn internal() -> ErrorAnswer {
    plain(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in \
         https://developers.generativeai.google/guide/troubleshooting",
        None,
    )
}

/// 504 `DEADLINE_EXCEEDED`: no answer in time (sent after the client's wait, if it waited).
pub fn deadline_exceeded() -> ErrorAnswer {
    plain(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", None)
}

/// 503 `UNAVAILABLE`: the model is overloaded.
pub fn overloaded() -> ErrorAnswer {
    plain(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_body_has_the_three_details() {
        let v = [Violation { dimension: Dimension::Rpm, limit: 2 }];
        let a = quota_exceeded(&v, Tier::Free, "gemini-2.5-pro", 45_200);
        assert_eq!(a.status, 429);
        let e = &a.body["error"];
        assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
        let d = e["details"].as_array().unwrap();
        assert_eq!(d[0]["violations"][0]["quotaId"], "GenerateRequestsPerMinutePerProjectPerModel-FreeTier");
        assert_eq!(d[0]["violations"][0]["quotaValue"], "2");
        assert_eq!(d[0]["violations"][0]["quotaDimensions"]["model"], "gemini-2.5-pro");
        assert_eq!(d[2]["retryDelay"], "46s");
        assert!(e["message"].as_str().unwrap().ends_with("Please retry in 45.200000000s."));
    }

    #[test]
    fn usage_omits_zero_fields() {
        let u = UsageMetadata { prompt: 5, cached: 0, candidates: 44, thoughts: 0 };
        let j = u.to_json();
        assert_eq!(j["totalTokenCount"], 49);
        assert!(j.get("thoughtsTokenCount").is_none());
    }
}

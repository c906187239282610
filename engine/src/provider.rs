//! Reading the provider's answers: which quota a 429 names and how long to wait.

use serde_json::Value;

use super::limits::Dimension;

/// What a 429 answer says about the exhausted quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaExhausted {
    /// The dimension its `quotaId` names (the longest-lasting one if it names several);
    /// `None` for the legacy bare body.
    pub dimension: Option<Dimension>,
    /// `RetryInfo.retryDelay` in milliseconds, if given.
    pub retry_after_ms: Option<u64>,
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

/// Reads a 429 body. Unknown or malformed bodies give an empty answer rather than an error:
/// the caller then cools down conservatively.
pub fn parse_quota_error(body: &str) -> QuotaExhausted {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return QuotaExhausted::default();
    };
    let mut out = QuotaExhausted::default();
    let details = v.pointer("/error/details").and_then(Value::as_array);
    for d in details.into_iter().flatten() {
        let kind = d.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("google.rpc.QuotaFailure") {
            let violations = d.get("violations").and_then(Value::as_array);
            for v in violations.into_iter().flatten() {
                let id = v.get("quotaId").or_else(|| v.get("quotaMetric")).and_then(Value::as_str);
                if let Some(dim) = id.and_then(dimension_of_quota_id) {
                    // A daily exhaustion outlasts a minute one: keep the longest.
                    if out.dimension.is_none_or(|cur| dim.is_daily() && !cur.is_daily()) {
                        out.dimension = Some(dim);
                    }
                }
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
    fn reads_the_documented_body() {
        let body = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[
 {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-pro"},"quotaValue":"2"}]},
 {"@type":"type.googleapis.com/google.rpc.Help","links":[]},
 {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"46s"}]}}"#;
        assert_eq!(
            parse_quota_error(body),
            QuotaExhausted { dimension: Some(Dimension::Rpm), retry_after_ms: Some(46_000) }
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
    fn the_legacy_bare_body_and_garbage_say_nothing() {
        let bare = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(parse_quota_error(bare), QuotaExhausted::default());
        assert_eq!(parse_quota_error("not json"), QuotaExhausted::default());
    }
}

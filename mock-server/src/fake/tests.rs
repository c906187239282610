//! The fake's answers, request by request.
use super::*;
use crate::judge::{Enforcement, LatencyModel, ModelQuota, ProjectQuota, Tier};

const NOW: u64 = 1_764_140_400_000;

fn fake(rpm: u64) -> Fake {
    scripted(rpm, Script::default())
}

fn scripted(rpm: u64, script: Script) -> Fake {
    let judge = JudgeConfig {
        enforcement: Enforcement::Sliding,
        models: vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()],
        projects: vec![ProjectQuota {
            id: "proj-a".into(),
            tier: Tier::Free,
            limits: vec![ModelQuota { rpm, tpm: 250_000, rpd: 250, tpd: None }; 2],
        }],
        latency: LatencyModel { median_ms: 100.0, p99_ms: 100.0 },
        faults: FaultModel::default(),
    };
    Fake::new(FakeConfig {
        judge,
        keys: vec![("key-a".into(), 0)],
        extra: ExtraFaults::default(),
        script,
        thinking: vec![0, 40],
        output_median: 50.0,
        output_p99: 50.0,
        count: Box::new(chars_per_four),
        seed: 1,
        counts_output: false,
    })
}

fn post(f: &Fake, path: &str, query: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    post_at(f, NOW, path, query, headers, body)
}

fn post_at(f: &Fake, now: u64, path: &str, query: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    f.handle(&ApiRequest { method: "POST", path, query, headers: &headers, body: body.as_bytes() }, now)
}

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
/// A prompt with no generation settings.
const PLAIN: &str = r#"{"contents":[{"parts":[{"text":"abcd"}]}]}"#;
const ASK: &str =
    r#"{"contents":[{"role":"user","parts":[{"text":"abcdefghijklmnop"}]}],"generationConfig":{"maxOutputTokens":30}}"#;

fn json(a: &Answer) -> Value {
    serde_json::from_slice(&a.body_bytes()).unwrap()
}

#[test]
fn generates_with_usage_metadata_and_honours_max_output() {
    let f = fake(10);
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a")], ASK);
    assert_eq!(a.status, 200);
    assert_eq!(a.delay_ms, 100);
    let v = json(&a);
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 4, "16 characters");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 30, "50 asked, capped at 30");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["modelVersion"], "models/gemini-2.5-flash");
    let a = post(&f, GEN, "key=key-a", &[("x-keysim-output-tokens", "7")], ASK);
    assert_eq!(json(&a)["usageMetadata"]["candidatesTokenCount"], 7, "the key in the query, the size asked");
}

#[test]
fn keys_are_checked_as_gemini_checks_them() {
    let f = fake(10);
    let a = post(&f, GEN, "", &[], ASK);
    assert_eq!((a.status, json(&a)["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
    let a = post(&f, GEN, "", &[("x-goog-api-key", "nope")], ASK);
    assert_eq!(json(&a)["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a"), ("authorization", "Bearer key-a")], ASK);
    assert_eq!(a.status, 400);
    let a = post(&f, "/v1beta/models/gemini-9:generateContent", "", &[("x-goog-api-key", "key-a")], ASK);
    assert_eq!(a.status, 404);
}

#[test]
fn the_third_request_against_rpm_two_gets_gemini_s_429() {
    let f = fake(2);
    for _ in 0..2 {
        assert_eq!(post(&f, GEN, "", &[("x-goog-api-key", "key-a")], ASK).status, 200);
    }
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a")], ASK);
    assert_eq!(a.status, 429);
    let e = &json(&a)["error"];
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    let retry = e["details"].as_array().unwrap().iter().find(|d| d["@type"].as_str().unwrap().ends_with("RetryInfo"));
    assert_eq!(retry.unwrap()["retryDelay"], "60s");
    // The OpenAI surface gives the same error in the shape the OpenAI SDKs read.
    let chat = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#;
    let a = post(&f, "/v1beta/openai/chat/completions", "", &[("authorization", "Bearer key-a")], chat);
    assert_eq!(a.status, 429);
    let e = &json(&a)["error"];
    assert_eq!((e["code"].as_u64(), e["type"].as_str()), (Some(429), Some("rate_limit_error")));
    assert!(e["message"].as_str().unwrap().contains("You exceeded your current quota"), "{e}");
    assert!(e["details"].as_array().is_some_and(|d| !d.is_empty()), "the quota details are kept");
}

#[test]
fn streams_as_events_or_as_an_array_with_cumulative_usage() {
    let f = fake(10);
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let a = post(&f, path, "alt=sse", &[("x-goog-api-key", "key-a"), ("x-keysim-output-tokens", "9")], ASK);
    assert_eq!(a.content_type(), "text/event-stream");
    let text = String::from_utf8(a.body_bytes()).unwrap();
    let events: Vec<Value> =
        text.split("\r\n\r\n").filter(|e| !e.is_empty()).map(|e| serde_json::from_str(&e[6..]).unwrap()).collect();
    assert_eq!(events.len(), 3);
    let counts: Vec<u64> =
        events.iter().map(|e| e["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap()).collect();
    assert_eq!(counts, [3, 6, 9]);
    assert!(events[..2].iter().all(|e| e["candidates"][0].get("finishReason").is_none()));
    assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
    let a = post(&f, path, "", &[("x-goog-api-key", "key-a"), ("x-keysim-output-tokens", "9")], ASK);
    let arr: Vec<Value> = serde_json::from_slice(&a.body_bytes()).unwrap();
    assert_eq!(arr.len(), 3);
}

#[test]
fn counts_tokens_for_free_and_lists_models_in_pages() {
    let f = fake(10);
    let path = "/v1beta/models/gemini-2.5-flash:countTokens";
    let a = post(&f, path, "", &[("x-goog-api-key", "key-a")], r#"{"contents":[{"parts":[{"text":"abcdefgh"}]}]}"#);
    assert_eq!(json(&a)["totalTokens"], 2);
    let headers = vec![("x-goog-api-key".to_owned(), "key-a".to_owned())];
    let list =
        |q: &str| {
            json(&f.handle(
                &ApiRequest { method: "GET", path: "/v1beta/models", query: q, headers: &headers, body: b"" },
                NOW,
            ))
        };
    let first = list("pageSize=1");
    assert_eq!(first["models"][0]["name"], "models/gemini-2.5-flash");
    assert_eq!(first["nextPageToken"], "1");
    let second = list("pageSize=1&pageToken=1");
    assert_eq!(second["models"][0]["name"], "models/gemini-2.5-pro");
    assert!(second.get("nextPageToken").is_none());
}

#[test]
fn stated_counts_are_capped_and_query_values_decoded() {
    let f = fake(10);
    let a = post(&f, GEN, "key=key%2Da", &[("x-keysim-output-tokens", "18446744073709551615")], PLAIN);
    assert_eq!(a.status, 200, "the key is percent-decoded");
    assert_eq!(json(&a)["usageMetadata"]["candidatesTokenCount"], MAX_TOKENS);
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a"), ("x-keysim-input-tokens", "123")], ASK);
    assert_eq!(json(&a)["usageMetadata"]["promptTokenCount"], 123, "a replayed request's true count");
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a"), ("x-keysim-fault", "overloaded")], ASK);
    assert_eq!(a.status, 503);
    // A prompt over the model's input limit is refused, as Gemini refuses it.
    let a = post(&f, GEN, "", &[("x-goog-api-key", "key-a"), ("x-keysim-input-tokens", "2600000")], ASK);
    assert_eq!(a.status, 400);
    let m = json(&a)["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(m, "The input token count (2600000) exceeds the maximum number of tokens allowed (1048576).");
    let a = post(&f, GEN, "", &[("authorization", "bearer key-a")], ASK);
    assert_eq!(a.status, 403, "Bearer tokens are for the OpenAI surface");
}

#[test]
fn count_tokens_is_refused_only_for_a_full_minute() {
    let f = fake(1_000);
    // Spend the day (250 requests) in one minute; counting tokens still works.
    for _ in 0..250 {
        assert_eq!(post(&f, GEN, "", &[("x-goog-api-key", "key-a")], ASK).status, 200);
    }
    assert_eq!(post(&f, GEN, "", &[("x-goog-api-key", "key-a")], ASK).status, 429);
    let path = "/v1beta/models/gemini-2.5-flash:countTokens";
    assert_eq!(post(&f, path, "", &[("x-goog-api-key", "key-a")], PLAIN).status, 200);
    let a = post(&f, path, "", &[("x-goog-api-key", "key-a")], ASK);
    assert_eq!(a.status, 400, "countTokens takes generation settings only inside generateContentRequest");
}

/// Status and error status of `a`.
fn status(a: &Answer) -> (u16, String) {
    (a.status, json(a)["error"]["status"].as_str().unwrap_or("").to_owned())
}

#[test]
fn storms_fail_their_share_in_their_spell_only() {
    use crate::script::{Storm, StormKind};
    let storm = |kind, at_ms| Storm { at_ms, for_ms: 10_000, rate: 1.0, kind, timeout_ms: 7_000 };
    let script = Script {
        storms: vec![
            storm(StormKind::Capacity, 1_000),
            storm(StormKind::Overloaded, 20_000),
            storm(StormKind::Internal, 40_000),
            storm(StormKind::Timeout, 60_000),
        ],
        ..Script::default()
    };
    let f = scripted(1_000, script);
    let key = [("x-goog-api-key", "key-a")];
    let at = |ms: u64| post_at(&f, NOW + ms, GEN, "", &key, ASK);
    assert_eq!(at(0).status, 200, "the first request starts the script's clock");
    let a = at(1_500);
    assert_eq!(status(&a), (429, "RESOURCE_EXHAUSTED".into()));
    assert!(json(&a)["error"].get("details").is_none(), "a capacity 429 has no details");
    assert_eq!(at(12_000).status, 200, "the storm is over");
    assert_eq!(status(&at(25_000)), (503, "UNAVAILABLE".into()));
    assert_eq!(status(&at(45_000)), (500, "INTERNAL".into()));
    let a = at(65_000);
    assert_eq!((status(&a), a.delay_ms), ((504, "DEADLINE_EXCEEDED".into()), 7_000));
    // About half of the requests inside a half-rate storm.
    let half = Script { storms: vec![Storm { rate: 0.5, ..storm(StormKind::Capacity, 0) }], ..Script::default() };
    let f = scripted(100_000, half);
    let refused = (0..400).filter(|i| post_at(&f, NOW + i, GEN, "", &key, ASK).status == 429).count();
    assert!((160..240).contains(&refused), "{refused} of 400");
}

#[test]
fn keys_and_limits_change_when_the_script_says() {
    use crate::script::{ProviderEvent, ProviderEventAt};
    let at = |at_ms, event| ProviderEventAt { at_ms, event };
    let script = Script {
        events: vec![
            at(1_000, ProviderEvent::Suspend("key-a".into())),
            at(2_000, ProviderEvent::Invalidate("key-a".into())),
            at(3_000, ProviderEvent::Revive("key-a".into())),
            at(
                4_000,
                ProviderEvent::Limits {
                    project: 0,
                    model: 0,
                    quota: ModelQuota { rpm: 1, tpm: 250_000, rpd: 250, tpd: None },
                },
            ),
        ],
        ..Script::default()
    };
    let f = scripted(100, script);
    let key = [("x-goog-api-key", "key-a")];
    let at = |ms: u64| post_at(&f, NOW + ms, GEN, "", &key, ASK);
    assert_eq!(at(0).status, 200);
    assert_eq!(status(&at(1_000)), (403, "PERMISSION_DENIED".into()));
    let a = at(2_500);
    assert_eq!(json(&a)["error"]["details"][0]["reason"], "API_KEY_INVALID");
    assert_eq!(at(3_000).status, 200, "revived");
    // RPM cut from 100 to 1: two requests in this minute already.
    let a = at(4_000);
    assert_eq!(status(&a), (429, "RESOURCE_EXHAUSTED".into()));
    let v = &json(&a)["error"]["details"][0]["violations"][0];
    assert_eq!(v["quotaValue"], "1", "the new limit is named");
}

#[test]
fn quota_bodies_come_in_the_shape_asked() {
    use crate::body::QuotaBody;
    for (shape, detail) in [
        (QuotaBody::QuotaFailure, "type.googleapis.com/google.rpc.QuotaFailure"),
        (QuotaBody::HelpOnly, "type.googleapis.com/google.rpc.Help"),
        (QuotaBody::ErrorInfo, "type.googleapis.com/google.rpc.ErrorInfo"),
    ] {
        let f = scripted(1, Script { quota_body: shape, ..Script::default() });
        let key = [("x-goog-api-key", "key-a")];
        assert_eq!(post(&f, GEN, "", &key, ASK).status, 200);
        let a = post(&f, GEN, "", &key, ASK);
        assert_eq!(status(&a), (429, "RESOURCE_EXHAUSTED".into()));
        assert_eq!(json(&a)["error"]["details"][0]["@type"], detail);
    }
}

#[test]
fn cached_tokens_are_reported_and_counted_as_set() {
    use crate::script::CachedTokens;
    // 400-character prompt: 100 tokens, 60 cached; TPM 150 fits two uncounted-cache prompts.
    let prompt = format!(r#"{{"contents":[{{"parts":[{{"text":"{}"}}]}}]}}"#, "x".repeat(400));
    for (counted, second) in [(false, 200), (true, 429)] {
        let f = scripted(100, Script { cached: CachedTokens { share: 0.6, counted }, ..Script::default() });
        f.lock().judge.set_limits(0, 0, ModelQuota { rpm: 100, tpm: 150, rpd: 250, tpd: None });
        let key = [("x-goog-api-key", "key-a")];
        let a = post(&f, GEN, "", &key, &prompt);
        let u = &json(&a)["usageMetadata"];
        assert_eq!((u["promptTokenCount"].as_u64(), u["cachedContentTokenCount"].as_u64()), (Some(100), Some(60)));
        assert_eq!(post(&f, GEN, "", &key, &prompt).status, second, "cached tokens counted: {counted}");
    }
    let f = scripted(100, Script { cached: CachedTokens { share: 0.5, counted: false }, ..Script::default() });
    let chat = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"abcdefghijklmnop"}]}"#;
    let a = post(&f, "/v1beta/openai/chat/completions", "", &[("authorization", "Bearer key-a")], chat);
    assert_eq!(json(&a)["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
}

#[test]
fn the_openai_surface_names_one_model() {
    let f = fake(10);
    let get = |path: &str| {
        let headers = vec![("authorization".to_owned(), "Bearer key-a".to_owned())];
        f.handle(&ApiRequest { method: "GET", path, query: "", headers: &headers, body: b"" }, NOW)
    };
    let a = get("/v1beta/openai/models/gemini-2.5-flash");
    assert_eq!((a.status, json(&a)["id"].as_str()), (200, Some("models/gemini-2.5-flash")));
    assert_eq!(get("/v1beta/openai/models/models%2Fgemini-2.5-pro").status, 200);
    let a = get("/v1beta/openai/models/gpt-9");
    assert_eq!((a.status, json(&a)["error"]["type"].as_str()), (404, Some("not_found_error")));
}

#[test]
fn models_that_think_report_their_thoughts_within_the_budget() {
    let f = fake(100);
    let key = [("x-goog-api-key", "key-a")];
    let pro = "/v1beta/models/gemini-2.5-pro:generateContent";
    let thoughts =
        |path: &str, body: &str| json(&post(&f, path, "", &key, body))["usageMetadata"]["thoughtsTokenCount"].as_u64();
    assert_eq!(thoughts(pro, PLAIN), Some(40), "the model's thinking");
    assert_eq!(thoughts(GEN, PLAIN), None, "a model that does not think reports none");
    let budget = |b: i64| {
        format!(
            r#"{{"contents":[{{"parts":[{{"text":"a"}}]}}],"generationConfig":{{"thinkingConfig":{{"thinkingBudget":{b}}}}}}}"#
        )
    };
    assert_eq!(thoughts(pro, &budget(10)), Some(10));
    assert_eq!(thoughts(pro, &budget(0)), None, "budget 0 turns thinking off");
    assert_eq!(thoughts(pro, &budget(-1)), Some(40), "-1: dynamic");
    // Several candidates, a JSON answer from the schema, a stop sequence.
    let two = r#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"candidateCount":2,"stopSequences":["tok tok"]}}"#;
    let v = json(&post(&f, GEN, "", &key, two));
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(v["candidates"][1]["index"], 1);
    assert!(!v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("tok tok"));
    let schema = r#"{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"responseMimeType":"application/json",
        "responseSchema":{"type":"OBJECT","properties":{"n":{"type":"INTEGER"}}}}}"#;
    let text = json(&post(&f, GEN, "", &key, schema))["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(serde_json::from_str::<Value>(&text).unwrap()["n"].is_i64(), "{text}");
}

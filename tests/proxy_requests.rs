//! What the proxy makes of a request, over real HTTP in front of the fake: how much it counts
//! (a batch's every text, an image's tokens, an OpenAI stream's usage) and what it refuses
//! or answers on its own (bodies that are not objects, bad configs, request ids, the HTTP
//! limits).

use crate::common::{keysim, root};
use crate::mock::start_with;
use crate::proxy::{
    client, config_with, exchange, fake_usage, metric, metric_sum, post, runtime, scrape, scrapes_until, start_proxy,
    usage_matches, CONFIG, FAKE, TOKEN,
};

/// The proxy's minute requests of `model`, summed over projects.
fn minute_requests(scrape: &str, model: &str) -> f64 {
    metric_sum(scrape, "keysim_usage", &[("model", model), ("dimension", "rpm")])
}

/// A `batchEmbedContents` of 50 texts is 50 requests to Gemini: the proxy counts 50 against
/// RPM, as the fake does, in memory and on Redis.
#[test]
fn a_batch_of_fifty_texts_counts_fifty_requests() {
    let texts: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"model":"models/gemini-embedding-001","content":{{"parts":[{{"text":"text {i}"}}]}}}}"#))
        .collect();
    let body = format!(r#"{{"requests":[{}]}}"#, texts.join(","));
    let redis = crate::replicas::address("KEYSIM_REDIS_URL");
    for store in [None, redis.as_deref()] {
        let fake = start_with("sustained", FAKE, &[]);
        let prefix = crate::replicas::prefix("batch");
        let config = config_with(|t| t.replace("[proxy]\n", &format!("[proxy]\nstore_prefix = \"{prefix}\"\n")));
        let extra: Vec<&str> = store.map(|u| vec!["--store", u]).unwrap_or_default();
        let proxy = start_proxy(&config, &fake.base, &extra);
        let c = client();
        runtime().block_on(async {
            let path = "/v1beta/models/gemini-embedding-001:batchEmbedContents";
            let (status, text) = exchange(post(&c, &proxy.base, path, Some(TOKEN), &body)).await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(minute_requests(&scrape(&c, &proxy.base).await, "gemini-embedding-001"), 50.0, "{store:?}");
            usage_matches(&c, &proxy.base, &fake.base).await;
        });
    }
}

/// Eight image prompts at once against projects of TPM 1,000: each image is 258 tokens to
/// Gemini, so the proxy admits three a project and holds the rest; the fake refuses none.
#[test]
fn concurrent_image_prompts_never_breach_a_small_tpm() {
    // A 1×1 PNG.
    const PNG: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let fake = start_with("sustained", FAKE, &["--set", "models.0.tpm=1000"]);
    let config = config_with(|t| {
        t.replacen("tpm = 250_000", "tpm = 1_000", 1).replace("max_wait = \"10s\"", "max_wait = \"1s\"")
    });
    let proxy = start_proxy(&config, &fake.base, &[]);
    let c = client();
    runtime().block_on(async {
        let body = format!(
            r#"{{"contents":[{{"parts":[{{"text":"what is in this picture?"}},{{"inlineData":{{"mimeType":"image/png","data":"{PNG}"}}}}]}}]}}"#
        );
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        let sends = (0..8).map(|_| exchange(post(&c, &proxy.base, path, Some(TOKEN), &body)));
        let answers = futures_join(sends.collect()).await;
        let ok = answers.iter().filter(|(s, _)| *s == 200).count();
        let held: Vec<&String> = answers.iter().filter(|(s, _)| *s == 429).map(|(_, t)| t).collect();
        assert_eq!(ok + held.len(), 8, "{answers:?}");
        assert!(held.iter().all(|t| t.contains("x-keysim-denied")), "every 429 is the proxy's own: {held:?}");
        assert_eq!(ok, 6, "three images a project fit under TPM 1,000: {answers:?}");
        let u = fake_usage(&c, &fake.base).await;
        assert_eq!(u["quota_refusals"], 0, "{u}");
        assert_eq!(metric_sum(&scrape(&c, &proxy.base).await, "keysim_breaches_total", &[]), 0.0);
    });
}

/// Runs every future at once; their outputs in order.
async fn futures_join<T: Send + 'static>(fs: Vec<impl std::future::Future<Output = T> + Send + 'static>) -> Vec<T> {
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A body that is JSON but not an object cannot be counted: refused, like other bad bodies,
/// with the rule it breaks; nothing reaches the fake.
#[test]
fn a_quota_request_whose_body_is_not_an_object_is_refused() {
    let fake = start_with("sustained", FAKE, &[]);
    let proxy = start_proxy(&root().join(CONFIG), &fake.base, &[]);
    let c = client();
    runtime().block_on(async {
        for (body, found) in
            [("[]", "a JSON array"), ("\"x\"", "a JSON string"), ("null", "JSON null"), ("{x", "not JSON")]
        {
            for path in ["/v1beta/models/gemini-2.5-flash:generateContent", "/v1beta/openai/chat/completions"] {
                let (status, text) = exchange(post(&c, &proxy.base, path, Some(TOKEN), body)).await;
                assert_eq!(status, 400, "{path} {body}: {text}");
                assert!(text.contains("must have a JSON object as its body") && text.contains(found), "{text}");
            }
        }
        let u = fake_usage(&c, &fake.base).await;
        assert!(u["projects"].as_array().unwrap().iter().all(|p| p["models"]
            .as_object()
            .unwrap()
            .values()
            .all(|m| m["minute_requests"] == 0)));
    });
}

/// An engine configuration error in a proxy config (a zero limit) is bad input found while
/// reading the file: exit 2, at its line and column.
#[test]
fn a_zero_limit_in_a_proxy_config_is_refused_at_its_place() {
    let path = root().join("tests/bad-proxy/zero-limit.toml");
    let o = keysim().args(["proxy", "--config"]).arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("zero-limit.toml:9:7") && err.contains("`tpm` in [[models]] #1 is 0"), "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    let d = keysim::proxy::file::parse(&text, "tests/bad-proxy/zero-limit.toml", None).unwrap_err();
    insta::assert_snapshot!("proxy-zero-limit", d.to_string());
}

/// The reference gateways are the simulator's: a proxy config that asks for one is refused
/// at its place, and the scenario of the same pool runs it.
#[test]
fn a_reference_gateway_is_refused_by_the_proxy() {
    let path = root().join("tests/bad-proxy/reference-gateway.toml");
    let o = keysim().args(["proxy", "--config"]).arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reference-gateway.toml:17:1") && err.contains("unknown field `admission` in [engine]"),
        "{err}"
    );
}

/// An OpenAI stream whose client did not ask for usage: the proxy asks upstream
/// (`stream_options.include_usage`), settles from the provider's usage, and keeps the usage
/// chunk from the client; a client that asked gets it.
#[test]
fn an_openai_stream_settles_from_usage_the_client_did_not_ask_for() {
    let fake = start_with("sustained", FAKE, &[]);
    let proxy = start_proxy(&root().join(CONFIG), &fake.base, &[]);
    let c = client();
    runtime().block_on(async {
        let path = "/v1beta/openai/chat/completions";
        let plain = r#"{"model":"gemini-2.5-flash","stream":true,"messages":[{"role":"user","content":"stream to me"}]}"#;
        let (status, text) = exchange(post(&c, &proxy.base, path, Some(TOKEN), plain)).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("[DONE]") && text.contains("chat.completion.chunk"), "{text}");
        assert!(!text.contains("\"prompt_tokens\""), "no usage chunk for a client that did not ask: {text}");
        let asked = r#"{"model":"gemini-2.5-flash","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"and to me"}]}"#;
        let (status, text) = exchange(post(&c, &proxy.base, path, Some(TOKEN), asked)).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"prompt_tokens\""), "a client that asked gets the usage chunk: {text}");
        assert!(
            scrapes_until(&c, &proxy.base, 100, |m| metric(m, "keysim_streams_settled_total", &[("result", "usage")])
                == Some(2.0))
            .await,
            "both streams settled from the provider's usage"
        );
        usage_matches(&c, &proxy.base, &fake.base).await;
    });
}

/// Every answer carries a request id: the client's own `x-request-id`, or one the proxy made;
/// bodies past 20 MB are refused in Gemini's shape; header and body timeouts are settings.
#[test]
fn request_ids_go_in_and_out_and_the_http_limits_hold() {
    let fake = start_with("sustained", FAKE, &[]);
    let config = config_with(|t| t.replace("[proxy]\n", "[proxy]\nbody_timeout = \"300ms\"\nmax_connections = 64\n"));
    let proxy = start_proxy(&config, &fake.base, &[]);
    let c = client();
    runtime().block_on(async {
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        let body = r#"{"contents":[{"parts":[{"text":"an id"}]}]}"#;
        let (status, text) =
            exchange(post(&c, &proxy.base, path, Some(TOKEN), body).header("x-request-id", "trace-me-42")).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("x-request-id: trace-me-42"), "{text}");
        let (_, text) = exchange(post(&c, &proxy.base, path, Some(TOKEN), body)).await;
        assert!(text.lines().any(|l| l.starts_with("x-request-id: ") && l.len() > 16), "{text}");
    });
    // A body said to be over 20 MB: 413 in Gemini's shape, without reading it.
    let (status, text) = short_body(&proxy.base, 22_000_000);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"INVALID_ARGUMENT\"") && text.contains("larger than 20 MB"), "{text}");
    // A body that stops arriving: 408 after `body_timeout`.
    let (status, text) = short_body(&proxy.base, 100);
    assert_eq!(status, 408, "{text}");
}

/// A quota request over a raw connection that announces `length` bytes of body and sends
/// only its first few: the proxy's answer.
fn short_body(base: &str, length: u64) -> (u16, String) {
    let head = format!(
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: p\r\nx-goog-api-key: {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{{\"contents\""
    );
    crate::mock::raw(base, &head).expect("an answer")
}

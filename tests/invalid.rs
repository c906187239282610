//! The fake refuses what Gemini refuses: a table of invalid requests, each sent over real
//! HTTP to both hosts, each answered with Gemini's status and error status, none with 200.

use serde_json::Value;

use crate::mock::{raw, start_with};

const KEY: &str = "fake-gemini-key";
const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const COUNT: &str = "/v1beta/models/gemini-2.5-flash:countTokens";
const CHAT: &str = "/v1beta/openai/chat/completions";
const EMBED: &str = "/v1beta/models/gemini-embedding-001:embedContent";
const BATCH: &str = "/v1beta/models/gemini-embedding-001:batchEmbedContents";
const EMBEDDINGS: &str = "/v1beta/openai/embeddings";

/// `{"contents": [...]}` with one user text part, and `extra` fields beside it.
fn with(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"hi"}}]}}]{sep}{extra}}}"#)
}

fn config(cfg: &str) -> String {
    with(&format!(r#""generationConfig":{{{cfg}}}"#))
}

fn chat(fields: &str) -> String {
    format!(r#"{{"model":"gemini-2.5-flash",{fields}}}"#)
}

/// (what, path, body, status, error status)
fn cases() -> Vec<(&'static str, &'static str, String, u16, &'static str)> {
    let bad = |what, path, body: String| (what, path, body, 400, "INVALID_ARGUMENT");
    let huge = format!(r#"{{"contents":[{{"parts":[{{"text":"{}"}}]}}]}}"#, "a".repeat(10 * 1024 * 1024));
    vec![
        bad("empty object", GEN, "{}".into()),
        bad("contents a number", GEN, r#"{"contents":42}"#.into()),
        bad("an array", GEN, "[1,2,3]".into()),
        bad("not JSON", GEN, "not json".into()),
        bad("truncated JSON", GEN, r#"{"contents":[{"parts":"#.into()),
        bad("a string", GEN, r#""hello""#.into()),
        bad("role system in contents", GEN, r#"{"contents":[{"role":"system","parts":[{"text":"x"}]}]}"#.into()),
        bad("role wizard", GEN, r#"{"contents":[{"role":"wizard","parts":[{"text":"x"}]}]}"#.into()),
        bad("no contents", GEN, r#"{"contents":[]}"#.into()),
        bad("no parts", GEN, r#"{"contents":[{"role":"user","parts":[]}]}"#.into()),
        bad("an empty part", GEN, r#"{"contents":[{"parts":[{}]}]}"#.into()),
        bad("text a number", GEN, r#"{"contents":[{"parts":[{"text":5}]}]}"#.into()),
        bad(
            "two kinds of data in a part",
            GEN,
            r#"{"contents":[{"parts":[{"text":"a","inlineData":{"mimeType":"image/png","data":"AAAA"}}]}]}"#.into(),
        ),
        bad(
            "inline data not base64",
            GEN,
            r#"{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"!!!"}}]}]}"#.into(),
        ),
        bad(
            "inline data without a MIME type",
            GEN,
            r#"{"contents":[{"parts":[{"inlineData":{"data":"AAAA"}}]}]}"#.into(),
        ),
        bad("parts a string", GEN, r#"{"contents":[{"parts":"hello"}]}"#.into()),
        bad("an unknown field", GEN, with(r#""foo":1"#)),
        bad("a misspelt setting", GEN, config(r#""temprature":1"#)),
        bad("maxOutputTokens -5", GEN, config(r#""maxOutputTokens":-5"#)),
        bad("maxOutputTokens a word", GEN, config(r#""maxOutputTokens":"abc""#)),
        bad("temperature 99", GEN, config(r#""temperature":99"#)),
        bad("temperature a word", GEN, config(r#""temperature":"hot""#)),
        bad("topP 1.5", GEN, config(r#""topP":1.5"#)),
        bad("topK 0", GEN, config(r#""topK":0"#)),
        bad("candidateCount 0", GEN, config(r#""candidateCount":0"#)),
        bad("candidateCount 9", GEN, config(r#""candidateCount":9"#)),
        bad("six stop sequences", GEN, config(r#""stopSequences":["a","b","c","d","e","f"]"#)),
        bad("responseMimeType text/html", GEN, config(r#""responseMimeType":"text/html""#)),
        bad("a schema without JSON", GEN, config(r#""responseSchema":{"type":"OBJECT"}"#)),
        bad("responseModalities SMELL", GEN, config(r#""responseModalities":["SMELL"]"#)),
        bad("thinkingBudget 100000", GEN, config(r#""thinkingConfig":{"thinkingBudget":100000}"#)),
        bad("generationConfig a string", GEN, with(r#""generationConfig":"abc""#)),
        bad(
            "an unknown safety category",
            GEN,
            with(r#""safetySettings":[{"category":"HARM_CATEGORY_FOO","threshold":"BLOCK_NONE"}]"#),
        ),
        bad(
            "an unknown threshold",
            GEN,
            with(r#""safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_SOME"}]"#),
        ),
        bad(
            "a category set twice",
            GEN,
            with(
                r#""safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"},
                {"category":"HARM_CATEGORY_HARASSMENT","threshold":"OFF"}]"#,
            ),
        ),
        bad(
            "a function name starting with a digit",
            GEN,
            with(r#""tools":[{"functionDeclarations":[{"name":"1bad"}]}]"#),
        ),
        bad("mode ANY without functions", GEN, with(r#""toolConfig":{"functionCallingConfig":{"mode":"ANY"}}"#)),
        bad("mode SOMETIMES", GEN, with(r#""toolConfig":{"functionCallingConfig":{"mode":"SOMETIMES"}}"#)),
        bad("a system instruction without parts", GEN, with(r#""systemInstruction":{"parts":[]}"#)),
        bad("a 10 MB prompt (2.6 M tokens)", GEN, huge),
        bad("streaming: empty object", STREAM, "{}".into()),
        bad("streaming: temperature 99", STREAM, config(r#""temperature":99"#)),
        bad("countTokens: empty object", COUNT, "{}".into()),
        bad("countTokens: contents a number", COUNT, r#"{"contents":42}"#.into()),
        bad(
            "countTokens: contents and generateContentRequest",
            COUNT,
            format!(r#"{{"contents":[{{"parts":[{{"text":"a"}}]}}],"generateContentRequest":{}}}"#, with("")),
        ),
        bad("countTokens: top-level generationConfig", COUNT, config(r#""temperature":1"#)),
        bad("OpenAI: no messages", CHAT, chat(r#""messages":[]"#)),
        bad("OpenAI: messages missing", CHAT, r#"{"model":"gemini-2.5-flash"}"#.into()),
        bad("OpenAI: model missing", CHAT, r#"{"messages":[{"role":"user","content":"hi"}]}"#.into()),
        bad("OpenAI: role wizard", CHAT, chat(r#""messages":[{"role":"wizard","content":"hi"}]"#)),
        bad("OpenAI: content a number", CHAT, chat(r#""messages":[{"role":"user","content":42}]"#)),
        bad("OpenAI: temperature 5", CHAT, chat(r#""messages":[{"role":"user","content":"hi"}],"temperature":5"#)),
        bad("OpenAI: n 0", CHAT, chat(r#""messages":[{"role":"user","content":"hi"}],"n":0"#)),
        bad("OpenAI: max_tokens -1", CHAT, chat(r#""messages":[{"role":"user","content":"hi"}],"max_tokens":-1"#)),
        bad("OpenAI: an array", CHAT, "[1]".into()),
        bad("OpenAI: not JSON", CHAT, "{".into()),
        bad("embedContent: no content", EMBED, "{}".into()),
        bad(
            "embedContent: 5000 dimensions",
            EMBED,
            r#"{"content":{"parts":[{"text":"a"}]},"outputDimensionality":5000}"#.into(),
        ),
        bad(
            "embedContent: an unknown task",
            EMBED,
            r#"{"content":{"parts":[{"text":"a"}]},"taskType":"DREAMING"}"#.into(),
        ),
        bad("batchEmbedContents: no requests", BATCH, r#"{"requests":[]}"#.into()),
        bad(
            "embedContent: a text over 2,048 tokens",
            EMBED,
            format!(r#"{{"content":{{"parts":[{{"text":"{}"}}]}}}}"#, "word ".repeat(2_000)),
        ),
        bad("OpenAI embeddings: empty input", EMBEDDINGS, r#"{"model":"gemini-embedding-001","input":""}"#.into()),
        bad("OpenAI embeddings: no model", EMBEDDINGS, r#"{"input":"a"}"#.into()),
        (
            "embedContent on a generating model",
            "/v1beta/models/gemini-2.5-flash:embedContent",
            r#"{"content":{"parts":[{"text":"a"}]}}"#.into(),
            404,
            "NOT_FOUND",
        ),
        (
            "generateContent on an embedding model",
            "/v1beta/models/gemini-embedding-001:generateContent",
            with(""),
            404,
            "NOT_FOUND",
        ),
        ("an unknown model", "/v1beta/models/gemini-9:generateContent", with(""), 404, "NOT_FOUND"),
        // Both hosts agree on the body limit (20 MB).
        (
            "a 21 MB body",
            GEN,
            format!(r#"{{"contents":[{{"parts":[{{"text":"{}"}}]}}]}}"#, "b".repeat(21 << 20)),
            413,
            "INVALID_ARGUMENT",
        ),
    ]
}

#[test]
fn forty_and_more_invalid_requests_get_gemini_s_errors_on_both_hosts() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for host in ["sustained", "wiremock"] {
        // RPM high enough that no case meets a quota first.
        let m = start_with(host, "tests/sdk/sdk-pool.toml", &["--set", "models.0.rpm=10000"]);
        for (what, path, body, status, error) in &cases {
            let auth = if path.starts_with("/v1beta/openai/") {
                format!("authorization: Bearer {KEY}")
            } else {
                format!("x-goog-api-key: {KEY}")
            };
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: fake\r\n{auth}\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let (got, text) = raw(&m.base, &request).unwrap_or_else(|| panic!("{host}, {what}: no answer"));
            assert_ne!(got, 200, "{host}, {what}: accepted");
            assert_eq!(got, *status, "{host}, {what}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{host}, {what}: {e}: {text}"));
            let e = &v["error"];
            assert_eq!(e["status"], *error, "{host}, {what}: {text}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{host}, {what}: a message");
            if path.starts_with("/v1beta/openai/") {
                assert!(e.get("type").is_some() && e.get("param").is_some(), "{host}, {what}: OpenAI's shape");
            }
        }
    }
}

/// A key fed through every argument and scenario field: no error message shows 26 characters
/// of it, and each is a clear error (exit code 2).
#[test]
fn no_error_message_shows_a_key() {
    use crate::common::{keysim, temp_dir};
    // Built at run time, so that no literal in the repository looks like a real key.
    let key = format!("AIza{}", "Sy9-Qz_4Lm".repeat(3) + "Kp2Vw");
    let secret = &key[4..30];
    let dir = temp_dir("redaction");
    let base = std::fs::read_to_string(crate::common::root().join("scenarios/quickstart.toml")).unwrap();
    let scenarios = [
        ("duplicate key", base.replacen("keys = [", &format!("keys = [\"{key}\", \"{key}\", "), 1)),
        ("unknown key in an event", format!("{base}\n[[events]]\nat = \"1m\"\ndisable = \"{key}\"\n")),
        ("suspend of an unknown key", format!("{base}\n[[events]]\nat = \"1m\"\nsuspend = \"{key}\"\n")),
        (
            "added to no project",
            format!("{base}\n[[events]]\nat = \"1m\"\nadd = {{ key = \"{key}\", project = \"nope\" }}\n"),
        ),
        ("a key as the seed", base.replacen("seed = ", &format!("seed = \"{key}\"\n# "), 1)),
        (
            "a key as a strategy",
            format!("{base}\n").replacen("[engine]", &format!("[engine]\nstrategy = \"{key}\""), 1),
        ),
        ("a key as a tokenizer", base.replacen("[provider]", &format!("[provider]\ntokenizer = \"{key}\""), 1)),
        (
            "a key as a storm's kind",
            base.replacen(
                "[provider]",
                &format!("[provider]\nstorms = [{{ at = \"1m\", duration = \"1m\", rate = 0.5, kind = \"{key}\" }}]"),
                1,
            ),
        ),
        ("a key in a bad webhook", format!("{base}\n[warnings]\nwebhook = \"ftp://{key}\"\n")),
        (
            "a key as a model with RPM 0",
            base.replacen(
                "[[models]]",
                &format!("[[models]]\nname = \"{key}\"\nrpm = 0\ntpm = 1\nrpd = 1\n\n[[models]]"),
                1,
            ),
        ),
    ];
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    for (what, text) in &scenarios {
        let path = dir.join(format!("{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        runs.push((what.to_string(), vec!["validate".into(), path.display().to_string()]));
    }
    let q = "scenarios/quickstart.toml".to_string();
    let args: Vec<(&str, Vec<String>)> = vec![
        ("a key as the scenario", vec!["run".into(), key.clone()]),
        ("a key as a --set", vec!["validate".into(), q.clone(), "--set".into(), key.clone()]),
        (
            "a key as a --set value",
            vec!["validate".into(), q.clone(), "--set".into(), format!("engine.strategy=\"{key}\"")],
        ),
        ("a key as --target", vec!["load".into(), q.clone(), "--target".into(), key.clone()]),
        ("a key in --target's URL", vec!["load".into(), q.clone(), "--target".into(), format!("ftp://h/{key}")]),
        (
            "a key as --store",
            vec![
                "load".into(),
                q.clone(),
                "--target".into(),
                "http://127.0.0.1:9".into(),
                "--store".into(),
                key.clone(),
            ],
        ),
        (
            "a key as --time-scale",
            vec![
                "load".into(),
                q.clone(),
                "--target".into(),
                "http://127.0.0.1:9".into(),
                "--time-scale".into(),
                key.clone(),
            ],
        ),
        ("a key as mock's scenario", vec!["mock".into(), "--scenario".into(), key.clone()]),
        ("a key as mock's --bind", vec!["mock".into(), "--bind".into(), key.clone(), "--port".into(), "0".into()]),
        ("a key as a gate baseline", vec!["gate".into(), q.clone(), "--baseline".into(), key.clone()]),
        ("a key to compare", vec!["compare".into(), key.clone()]),
        ("a key to plan", vec!["plan".into(), key.clone()]),
    ];
    runs.extend(args.into_iter().map(|(w, a)| (w.to_string(), a)));
    for (what, args) in runs {
        let o = keysim().args(&args).output().expect("keysim runs");
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!o.status.success(), "{what}: accepted\n{err}");
        assert_eq!(o.status.code(), Some(2), "{what}: exit code\n{err}");
        assert!(!err.contains(secret) && !out.contains(secret), "{what}: the key is shown\n{err}{out}");
        assert!(err.contains("error"), "{what}: a clear error\n{err}");
    }
}

/// 500 connections that send half a request and wait are closed after the header timeout,
/// while a normal client is served meanwhile; a body shorter than its `Content-Length` gets
/// 408 after the body timeout, and one said to be over the limit 413 at once.
#[test]
fn half_open_connections_are_closed_and_bodies_time_out() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let m = start_with("sustained", "tests/sdk/sdk-pool.toml", &["--header-timeout", "1", "--body-timeout", "1"]);
    let addr = m.base.trim_start_matches("http://").to_owned();
    let mut idle: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connects");
            s.write_all(b"POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: fake\r\n").unwrap();
            s
        })
        .collect();
    // A normal client meanwhile: every answer comes, quickly.
    let list = format!("GET /v1beta/models?key={KEY} HTTP/1.1\r\nHost: fake\r\nconnection: close\r\n\r\n");
    let mut took: Vec<Duration> = (0..100)
        .map(|_| {
            let t = Instant::now();
            let (status, _) = raw(&m.base, &list).expect("an answer");
            assert_eq!(status, 200);
            t.elapsed()
        })
        .collect();
    took.sort();
    println!("normal client beside 500 half-open connections: p50 {:?}, p99 {:?}", took[50], took[98]);
    // Each half-open connection is closed by the host (perhaps after a 408), not left open.
    let started = Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        assert!(read.is_ok(), "closed by the host, not left waiting: {read:?}");
    }
    println!("500 half-open connections closed {:?} after the normal client finished", started.elapsed());
    // A body shorter than it says: 408 after the body timeout.
    let short = format!(
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: fake\r\nx-goog-api-key: {KEY}\r\n\
         content-length: 100\r\n\r\n{{\"contents\":"
    );
    let (status, text) = raw(&m.base, &short).expect("an answer");
    assert_eq!(status, 408, "{text}");
    // A body said to be over 20 MB: 413 without reading it.
    let huge = format!(
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: fake\r\nx-goog-api-key: {KEY}\r\n\
         content-length: 30000000\r\n\r\n{{"
    );
    let (status, text) = raw(&m.base, &huge).expect("an answer");
    assert_eq!(status, 413, "{text}");
}

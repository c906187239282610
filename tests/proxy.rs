//! `keysim proxy` in front of `keysim mock`, over real HTTP: both surfaces, usage against the
//! fake's own count, tokens, disconnects, reloads during a load run, two replicas on one
//! Redis, the Grafana dashboard's metrics, graceful shutdown, and no key anywhere.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{keysim, root, temp_dir};
use crate::mock::start_with;

pub(crate) const FAKE: &str = "tests/proxy/fake.toml";
pub(crate) const CONFIG: &str = "tests/proxy/proxy.toml";
pub(crate) const TOKEN: &str = "test-client-token-0001";
pub(crate) const ADMIN: &str = "test-admin-token-0001";
/// The keys of tests/proxy/fake.toml, by the variables the proxy reads them from.
const KEYS: [(&str, &str); 4] = [
    ("P1_A", "kspx1aQx7mV2tR9wY4bN6cD8fG0hJ3pL5sU7"),
    ("P1_B", "kspx1bHn3kW8eT5rZ1aM9vC4xQ6jP2gS7yL0"),
    ("P2_A", "kspx2aBd6fG1hK8mN3pQ5rS7tU9vW2xY4zA0"),
    ("P3_A", "kspx3aTz0yX9wV8uS7rQ6pN5mL4kJ3hG2fD1"),
];

/// A running `keysim proxy`, stopped when dropped; what it logs is kept.
pub(crate) struct Proxy {
    child: Child,
    pub(crate) base: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    }
}

/// `keysim proxy --config config` in front of `upstream`, with the keys in its environment.
pub(crate) fn start_proxy(config: &Path, upstream: &str, extra: &[&str]) -> Proxy {
    let mut child = keysim()
        .args(["proxy", "--config"])
        .arg(config)
        .args(["--upstream", upstream, "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(KEYS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keysim proxy starts");
    let log = Arc::new(Mutex::new(String::new()));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    log.lock().unwrap().push_str(&first);
    for mut stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let base = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the proxy says where it listens: {first}")
    });
    Proxy { base: base.to_owned(), child, log }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Everything a client saw of one exchange: status, headers and body, as text; status 0 and
/// the error when there was no answer.
pub(crate) async fn exchange(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (0, format!("no answer: {e:?}")),
    };
    let status = resp.status().as_u16();
    let headers: String = resp.headers().iter().map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or(""))).collect();
    let body = resp.text().await.unwrap_or_default();
    (status, format!("{headers}\n{body}"))
}

pub(crate) fn post(
    c: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::RequestBuilder {
    let r = c.post(format!("{base}{path}")).header("content-type", "application/json").body(body.to_owned());
    match token {
        Some(t) => r.header("x-goog-api-key", t),
        None => r,
    }
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub(crate) fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every sample `name` with `labels`.
pub(crate) fn metric_sum(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn scrape(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap()
}

/// Scrapes `base` every 20 ms, at most `tries` times, until `done` holds for a scrape.
pub(crate) async fn scrapes_until(c: &reqwest::Client, base: &str, tries: usize, done: impl Fn(&str) -> bool) -> bool {
    for _ in 0..tries {
        if done(&scrape(c, base).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub(crate) async fn fake_usage(c: &reqwest::Client, fake: &str) -> Value {
    c.get(format!("{fake}/keysim/usage")).send().await.unwrap().json().await.unwrap()
}

/// The proxy's minute usage of every project and model equals the fake's: requests always,
/// tokens for generation models (Gemini's `embedContent` answers state no usage, so the proxy
/// settles them at their estimate).
pub(crate) async fn usage_matches(c: &reqwest::Client, proxy: &str, fake: &str) {
    let (mut scraped, mut counted) = (String::new(), Value::Null);
    for _ in 0..50 {
        // Streams settle when they end, a moment after the client has read them.
        scraped = scrape(c, proxy).await;
        counted = fake_usage(c, fake).await;
        let agree = counted["projects"].as_array().unwrap().iter().all(|p| {
            p["models"].as_object().unwrap().iter().all(|(model, u)| {
                let ours = |d: &str| {
                    metric(
                        &scraped,
                        "keysim_usage",
                        &[("project", p["id"].as_str().unwrap()), ("model", model), ("dimension", d)],
                    )
                    .unwrap_or(0.0) as u64
                };
                let tokens = model.contains("embedding") || ours("tpm") == u["minute_tokens"].as_u64().unwrap();
                ours("rpm") == u["minute_requests"].as_u64().unwrap() && tokens
            })
        });
        if agree {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours: Vec<&str> = scraped.lines().filter(|l| l.starts_with("keysim_usage{")).collect();
    panic!("the proxy's usage differs from the fake's count:\nproxy:\n{}\nfake: {counted}", ours.join("\n"));
}

fn no_key_in(what: &str, text: &str) {
    for (_, key) in KEYS {
        // The whole key, or any long part of it that a redacted form would not show.
        assert!(!text.contains(&key[4..20]) && !text.contains(&key[12..]), "a key appears in {what}:\n{text}");
    }
}

#[test]
fn the_proxy_serves_both_surfaces_and_counts_what_the_fake_counts() {
    let fake = start_with("sustained", FAKE, &[]);
    let proxy = start_proxy(&root().join(CONFIG), &fake.base, &[]);
    let (c, base) = (client(), proxy.base.clone());
    let mut seen = String::new();
    runtime().block_on(async {
        let gen = r#"{"contents":[{"parts":[{"text":"Hello there, proxy"}]}],"generationConfig":{"maxOutputTokens":30}}"#;
        let chat = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":12}"#;
        let chat_stream = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let calls: Vec<(&str, &str)> = vec![
            ("/v1beta/models/gemini-2.5-flash:generateContent", gen),
            ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", gen),
            ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", gen),
            ("/v1beta/models/gemini-2.5-flash:countTokens", r#"{"contents":[{"parts":[{"text":"abcdefgh"}]}]}"#),
            ("/v1beta/models/gemini-embedding-001:embedContent", r#"{"content":{"parts":[{"text":"embed me"}]}}"#),
            ("/v1beta/openai/chat/completions", chat),
            ("/v1beta/openai/chat/completions", chat_stream),
            ("/v1beta/openai/embeddings", r#"{"model":"gemini-embedding-001","input":"abcdefgh"}"#),
        ];
        for (path, body) in calls {
            let (status, text) = exchange(post(&c, &base, path, Some(TOKEN), body)).await;
            assert_eq!(status, 200, "{path}: {text}");
            seen += &text;
        }
        let sse = exchange(post(&c, &base, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Some(TOKEN), gen)).await.1;
        assert!(sse.matches("data: ").count() >= 2 && sse.contains("text/event-stream"), "{sse}");
        for path in ["/v1beta/models", "/v1beta/openai/models"] {
            let (status, text) = exchange(c.get(format!("{base}{path}")).bearer_auth(TOKEN)).await;
            assert_eq!(status, 200, "{path}: {text}");
            assert!(text.contains("gemini-2.5-flash"), "{text}");
            seen += &text;
        }
        usage_matches(&c, &base, &fake.base).await;

        // What it does not serve, or cannot read, goes nowhere.
        for (path, body, status) in
            [("/v1beta/models/gemini-2.5-flash:generateContent", "not json", 400), ("/v1beta/files", "{}", 404)]
        {
            let (got, text) = exchange(post(&c, &base, path, Some(TOKEN), body)).await;
            assert_eq!(got, status, "{path}: {text}");
        }
        // Raw, as an HTTP client would never normalise them.
        for path in ["/v1beta/models/../files", "/v1beta/models/%2e%2e/cachedContents", "/v1beta/openai/models/../../files"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\nx-goog-api-key: {TOKEN}\r\nconnection: close\r\n\r\n");
            let (got, text) = crate::mock::raw(&base, &request).expect("an answer");
            assert_eq!(got, 400, "{path}: {text}");
        }

        // Who may use it.
        let p = "/v1beta/models/gemini-2.5-flash:generateContent";
        for token in [None, Some("wrong-token-wrong-token"), Some(KEYS[0].1)] {
            let (status, text) = exchange(post(&c, &base, p, token, gen)).await;
            assert_eq!(status, 401, "{token:?}: {text}");
            seen += &text;
        }
        let (status, _) = exchange(c.get(format!("{base}/v1beta/openai/models")).bearer_auth("nope-nope-nope-nope")).await;
        assert_eq!(status, 401, "a wrong bearer token");
        for admin in ["/admin/pool", "/admin/keys", "/admin/capacity"] {
            assert_eq!(exchange(c.get(format!("{base}{admin}"))).await.0, 401, "{admin} without the admin token");
            assert_eq!(exchange(c.get(format!("{base}{admin}")).bearer_auth(TOKEN)).await.0, 401, "{admin}: a client token is not the admin's");
            let (status, text) = exchange(c.get(format!("{base}{admin}")).bearer_auth(ADMIN)).await;
            assert_eq!(status, 200, "{admin}: {text}");
            seen += &text;
        }
        assert_eq!(exchange(c.post(format!("{base}/admin/reload"))).await.0, 401);
        let (status, text) = exchange(c.post(format!("{base}/admin/reload")).bearer_auth(ADMIN)).await;
        assert!(status == 200 && text.contains("\"reloaded\": true") && text.contains("\"keys_added\": []"), "{text}");
        let keys = exchange(c.get(format!("{base}/admin/keys")).bearer_auth(ADMIN)).await.1;
        assert!(keys.contains("\"p1-a\"") && keys.contains("\"serving\""), "{keys}");
        let health = exchange(c.get(format!("{base}/readyz"))).await;
        assert_eq!(health.0, 200, "{}", health.1);

        // Every metric the dashboard queries is exported.
        let scraped = scrape(&c, &base).await;
        dashboard_metrics_are_exported(&scraped);
        assert_eq!(metric_sum(&scraped, "keysim_breaches_total", &[]), 0.0, "{scraped}");
        assert!(metric_sum(&scraped, "keysim_proxy_requests_total", &[("outcome", "unauthenticated")]) >= 4.0);
        seen += &scraped;
    });
    no_key_in("the answers, the admin API or the metrics", &seen);
    no_key_in("the proxy's log", &proxy.log());
}

/// Every metric queried by deploy/grafana-dashboard.json is declared by the scrape, and the
/// dashboard is a Grafana dashboard (panels with queries against a Prometheus data source).
fn dashboard_metrics_are_exported(scrape: &str) {
    let text = std::fs::read_to_string(root().join("deploy/grafana-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        d["title"].is_string() && d["uid"].is_string() && d["schemaVersion"].as_u64().unwrap() >= 36,
        "dashboard header"
    );
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a panel for each part of the proxy");
    let mut names = std::collections::BTreeSet::new();
    for p in panels {
        assert!(p["type"].is_string() && p["gridPos"]["w"].is_u64() && p["title"].is_string(), "{p}");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a PromQL query");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("keysim_") {
                    names.insert(word.to_owned());
                }
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    let declared = |family: &str, kind: &str| scrape.contains(&format!("# TYPE {family} {kind}\n"));
    for name in &names {
        let ok = declared(name, "gauge")
            || name.strip_suffix("_total").is_some_and(|f| declared(f, "counter"))
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| declared(f, "histogram")));
        assert!(ok, "the dashboard queries {name}, which /metrics does not export");
    }
}

#[test]
fn sdks_and_litellm_work_through_the_proxy() {
    if !crate::mock::sdks() {
        return;
    }
    let fake = start_with("sustained", FAKE, &[]);
    let proxy = start_proxy(&root().join(CONFIG), &fake.base, &[]);
    crate::mock::python_check(
        "check_proxy.py",
        &[&proxy.base, TOKEN],
        "all proxy checks passed",
        "SDKs through the proxy",
    );
    runtime().block_on(usage_matches(&client(), &proxy.base, &fake.base));
    no_key_in("the proxy's log", &proxy.log());
}

/// A copy of the test config with `edit` applied, in a folder of its own.
pub(crate) fn config_with(edit: impl Fn(String) -> String) -> PathBuf {
    let path = temp_dir("proxy-config").join("proxy.toml");
    std::fs::write(&path, edit(std::fs::read_to_string(root().join(CONFIG)).unwrap())).unwrap();
    path
}

#[test]
fn a_client_gone_mid_stream_or_mid_queue_leaks_no_quota() {
    let fake = start_with("sustained", FAKE, &[]);
    // Two requests a minute per project, so that the fifth waits (for up to 90 s).
    let config =
        config_with(|t| t.replacen("rpm = 30", "rpm = 2", 1).replace("max_wait = \"10s\"", "max_wait = \"90s\""));
    let proxy = start_proxy(&config, &fake.base, &[]);
    let (c, base) = (client(), proxy.base.clone());
    runtime().block_on(async {
        let gen = r#"{"contents":[{"parts":[{"text":"a long story, please"}]}]}"#;
        let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
        // The fake spreads 400 tokens over 3 s: the client reads one piece and hangs up.
        let resp = post(&c, &base, path, Some(TOKEN), gen)
            .header("x-keysim-latency-ms", "3000")
            .header("x-keysim-output-tokens", "400")
            .send()
            .await
            .unwrap();
        let mut resp = resp;
        let first = resp.chunk().await.unwrap().expect("a first piece");
        assert!(String::from_utf8_lossy(&first).contains("usageMetadata"));
        drop(resp);
        for _ in 0..3 {
            let (status, text) =
                exchange(post(&c, &base, "/v1beta/models/gemini-2.5-flash:generateContent", Some(TOKEN), gen)).await;
            assert_eq!(status, 200, "{text}");
        }
        // The pool is full for the minute: this one waits in the queue, then its client leaves.
        let waiting =
            tokio::spawn(post(&c, &base, "/v1beta/models/gemini-2.5-flash:generateContent", Some(TOKEN), gen).send());
        let depth = |s: &str| metric(s, "keysim_queue_depth", &[("model", "gemini-2.5-flash")]).unwrap_or(0.0);
        let queued = scrapes_until(&c, &base, 50, |s| depth(s) == 1.0).await;
        assert!(queued, "the fifth request waits in the queue");
        waiting.abort();
        let left = scrapes_until(&c, &base, 100, |s| depth(s) == 0.0).await;
        assert!(left, "a client gone from the queue leaves it");
        usage_matches(&c, &base, &fake.base).await;
        let scraped = scrape(&c, &base).await;
        assert_eq!(
            metric(&scraped, "keysim_streams_settled_total", &[("result", "usage")]),
            Some(1.0),
            "the broken stream settled from the usage it had stated"
        );
        let u = fake_usage(&c, &fake.base).await;
        let sent: u64 = u["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["models"]["gemini-2.5-flash"]["minute_requests"].as_u64().unwrap())
            .sum();
        assert_eq!(sent, 4, "the request whose client left the queue was never sent: {u}");
    });
}

#[test]
fn refuses_to_listen_beyond_loopback_without_tokens() {
    let config = config_with(|t| {
        t.lines()
            .filter(|l| !l.starts_with("client_tokens") && !l.starts_with("admin_token"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let out =
        keysim().args(["proxy", "--config"]).arg(&config).args(["--listen", "0.0.0.0:0"]).envs(KEYS).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0 without client tokens and an admin token"), "{err}");
    // Keys missing from the environment: named, never shown.
    let out = keysim().args(["proxy", "--config", CONFIG]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("P1_A, P1_B, P2_A"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad [proxy] table: file, line and column.
    let config = config_with(|t| t.replace("retries = 2", "retries = \"two\""));
    let out = keysim().args(["proxy", "--config"]).arg(&config).envs(KEYS).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy.toml:") && err.contains("`retries` in [proxy] must be an integer"), "{err}");
}

#[test]
fn sigterm_lets_the_streams_in_flight_finish() {
    let fake = start_with("sustained", FAKE, &[]);
    // A second of grace after the signal: not ready, still serving.
    let config = config_with(|t| t.replace("drain = \"10s\"", "drain = \"10s\"\nshutdown_delay = \"1s\""));
    let mut proxy = start_proxy(&config, &fake.base, &[]);
    let (c, base) = (client(), proxy.base.clone());
    runtime().block_on(async {
        let gen = r#"{"contents":[{"parts":[{"text":"a story"}]}]}"#;
        let mut resp =
            post(&c, &base, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", Some(TOKEN), gen)
                .header("x-keysim-latency-ms", "1500")
                .header("x-keysim-output-tokens", "200")
                .send()
                .await
                .unwrap();
        let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
        proxy.signal("-TERM");
        let mut unready = false;
        for _ in 0..50 {
            if exchange(c.get(format!("{base}/readyz"))).await.0 == 503 {
                unready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(unready, "/readyz fails once told to stop");
        let (status, text) =
            exchange(post(&c, &base, "/v1beta/models/gemini-2.5-flash:generateContent", Some(TOKEN), gen)).await;
        assert_eq!(status, 200, "still serving during shutdown_delay: {text}");
        while let Some(piece) = resp.chunk().await.expect("the stream is not cut") {
            body.extend_from_slice(&piece);
        }
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\"candidatesTokenCount\":200"), "the whole stream arrived: {text}");
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the proxy exits once drained");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn sighup_with_a_changed_pool_during_a_load_run_fails_no_request() {
    let fake = start_with("sustained", FAKE, &["--time-scale", "10"]);
    let config = config_with(|t| t);
    let proxy = start_proxy(&config, &fake.base, &["--time-scale", "10"]);
    let dir = temp_dir("proxy-load");
    // Two minutes of traffic at 40 a minute, sent through the proxy at 10x (12 s).
    let load = keysim()
        .args(["load", FAKE, "--target", &proxy.base, "--no-engine", "--token-env", "KEYSIM_TEST_TOKEN"])
        .args(["--time-scale", "10", "--json", "--no-plots", "--out"])
        .arg(&dir)
        .env("KEYSIM_TEST_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // A key removed, a project added.
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text
        .replace("keys = [\"p1-a\", \"p1-b\"]", "keys = [\"p1-a\"]")
        .replace("[engine]", "[[projects]]\nid = \"proj-3\"\nkeys = [\"p3-a\"]\n\n[engine]");
    assert_ne!(text, changed);
    std::fs::write(&config, changed).unwrap();
    proxy.signal("-HUP");
    let c = client();
    runtime().block_on(async {
        let reloaded = scrapes_until(&c, &proxy.base, 100, |s| {
            metric(s, "keysim_config_reloads_total", &[("result", "ok")]) == Some(1.0)
        })
        .await;
        assert!(reloaded, "SIGHUP reloads the config: {}", proxy.log());
        let pool = exchange(c.get(format!("{}/admin/pool", proxy.base)).bearer_auth(ADMIN)).await.1;
        assert!(pool.contains("proj-3") && !pool.contains("p1-b"), "{pool}");
    });
    let out = load.wait_with_output().unwrap();
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let n = |k: &str| s["requests"][k].as_u64().unwrap();
    assert_eq!(n("total"), 80, "{s}");
    assert_eq!(n("total"), n("succeeded") + n("denied") + n("failed") + n("breaches"), "every request accounted for");
    assert_eq!((n("failed"), n("breaches")), (0, 0), "no request failed for the reload: {s}");
    runtime().block_on(async {
        let scraped = scrape(&c, &proxy.base).await;
        let proj3 = metric(
            &scraped,
            "keysim_usage",
            &[("project", "proj-3"), ("model", "gemini-2.5-flash"), ("dimension", "rpd")],
        )
        .unwrap_or(0.0);
        assert!(proj3 > 0.0, "the new project serves: {scraped}");
        let u = fake_usage(&c, &fake.base).await;
        assert_eq!(u["quota_refusals"], 0, "{u}");
    });
    assert!(proxy.log().contains("config reloaded"), "{}", proxy.log());
    no_key_in("the proxy's log", &proxy.log());
}

/// Two replicas at 10x, 64 clients offering twice the pool's RPM (2 projects x 30) for 50 s,
/// so that no window slides while they send (in a scaled run, a window's edge is a few ms of
/// real time, which a busy machine's scheduling can blur): what each client got, how many
/// quota 429s the fake gave, and how many the replicas saw.
fn offer_twice_the_pool(store: Option<&str>) -> (Vec<(u16, String)>, u64, f64) {
    const SCALE: &str = "10";
    let fake = start_with("sustained", FAKE, &["--time-scale", SCALE]);
    let prefix = crate::replicas::prefix("proxy");
    let config = config_with(|t| t.replace("[proxy]\n", &format!("[proxy]\nstore_prefix = \"{prefix}\"\n")));
    let origin = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis().to_string();
    let mut extra = vec!["--time-scale", SCALE, "--time-origin", &origin];
    if let Some(url) = store {
        extra.extend(["--store", url]);
    }
    let replicas = [start_proxy(&config, &fake.base, &extra), start_proxy(&config, &fake.base, &extra)];
    let bases: Vec<String> = replicas.iter().map(|p| p.base.clone()).collect();
    let c = client();
    runtime().block_on(async {
        let start = tokio::time::Instant::now();
        let mut clients = Vec::new();
        for client_no in 0..64usize {
            let (c, bases) = (c.clone(), bases.clone());
            clients.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                // Request i goes at i x 50 ms (0.5 s of the pool's time), to replica i mod 2.
                for i in (client_no..100).step_by(64) {
                    tokio::time::sleep_until(start + Duration::from_millis(50 * i as u64)).await;
                    let body = r#"{"contents":[{"parts":[{"text":"twice the pool"}]}]}"#;
                    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
                    let (status, text) = exchange(post(&c, &bases[i % 2], path, Some(TOKEN), body)).await;
                    answers.push((status, text));
                }
                answers
            }));
        }
        let mut answers = Vec::new();
        for h in clients {
            answers.extend(h.await.unwrap());
        }
        if answers.iter().any(|(s, _)| *s == 0) {
            for (p, b) in replicas.iter().zip(&bases) {
                let m = scrape(&c, b).await;
                let lines: Vec<&str> = m
                    .lines()
                    .filter(|l| {
                        l.starts_with("keysim_inflight")
                            || l.starts_with("keysim_queue_depth")
                            || l.starts_with("keysim_proxy_requests_total")
                            || l.contains("failures_total") && !l.ends_with(" 0")
                    })
                    .collect();
                eprintln!("replica {b}:\n{}\nlog:\n{}", lines.join("\n"), p.log());
            }
            let lost: Vec<&String> = answers.iter().filter(|(s, _)| *s == 0).map(|(_, t)| t).collect();
            panic!("requests without an answer: {lost:?}");
        }
        let refused = fake_usage(&c, &fake.base).await["quota_refusals"].as_u64().unwrap();
        let mut breaches = 0.0;
        for b in &bases {
            breaches += metric_sum(&scrape(&c, b).await, "keysim_breaches_total", &[]);
        }
        (answers, refused, breaches)
    })
}

#[test]
fn two_replicas_on_one_redis_never_breach_at_twice_the_pool_s_rpm() {
    let Some(url) = crate::replicas::address("KEYSIM_REDIS_URL") else { return };
    let (answers, refused, breaches) = offer_twice_the_pool(Some(&url));
    assert_eq!(answers.len(), 100, "every request answered");
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let denied: Vec<&String> = answers.iter().filter(|(s, _)| *s == 429).map(|(_, t)| t).collect();
    assert_eq!(ok + denied.len(), 100, "each answered 200 or 429: {answers:?}");
    for t in &denied {
        assert!(t.contains("x-keysim-denied") && t.contains("\"retryDelay\"") && t.contains("retry-after"), "{t}");
    }
    eprintln!(
        "two replicas on Redis: {ok} succeeded, {} denied with retryDelay, {refused} refused by the fake",
        denied.len()
    );
    assert_eq!((refused, breaches), (0, 0.0), "no breach at the fake ({ok} succeeded)");
    assert_eq!((ok, denied.len()), (60, 40), "the pool's 60 a minute, shared");
    // The reference: each replica counting alone admits the pool twice over, and the fake
    // refuses what the projects cannot take.
    let (answers, refused, breaches) = offer_twice_the_pool(None);
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "two replicas, each in memory: {ok} succeeded, {refused} refused by the fake, {breaches} quota 429s upstream"
    );
    assert!(
        refused > 0 && breaches > 0.0,
        "unshared replicas over-admit: {ok} succeeded, {refused} refused by the fake"
    );
}

#[test]
fn warnings_run_live_to_the_log_the_webhook_and_the_metrics() {
    // An Alertmanager-style receiver: every POST body it gets.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hook.local_addr().unwrap());
    let posts = Arc::new(Mutex::new(Vec::<String>::new()));
    let got = posts.clone();
    std::thread::spawn(move || {
        for stream in hook.incoming().flatten() {
            let mut stream = stream;
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = Vec::new();
            let mut piece = [0u8; 8192];
            // Headers, then as much body as Content-Length says.
            while let Ok(n) = stream.read(&mut piece) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&piece[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if body.len() >= len.unwrap_or(0) {
                        break;
                    }
                }
            }
            got.lock().unwrap().push(String::from_utf8_lossy(&buf).into_owned());
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let fake = start_with("sustained", FAKE, &["--time-scale", "20"]);
    // Two requests a minute per project; warn at half, evaluate every second, no wait.
    let config = config_with(|t| {
        t.replacen("rpm = 30", "rpm = 2", 1).replace(
            "[warnings]\nlog = true\n",
            &format!("[warnings]\nlog = true\nwarn_at = 0.5\nforecast = false\nevaluate_every = \"1s\"\ngroup_wait = \"0s\"\nwebhook = \"{url}\"\n"),
        )
    });
    let proxy = start_proxy(&config, &fake.base, &["--time-scale", "20"]);
    let (c, base) = (client(), proxy.base.clone());
    runtime().block_on(async {
        let gen = r#"{"contents":[{"parts":[{"text":"fill the pool"}]}]}"#;
        for _ in 0..4 {
            let (status, text) =
                exchange(post(&c, &base, "/v1beta/models/gemini-2.5-flash:generateContent", Some(TOKEN), gen)).await;
            assert_eq!(status, 200, "{text}");
        }
        let mut firing = 0.0;
        for _ in 0..100 {
            firing = metric_sum(&scrape(&c, &base).await, "keysim_warnings_firing", &[]);
            if firing > 0.0 && !posts.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert!(firing > 0.0, "a warning fires: {}", proxy.log());
        // Once it has three minutes of history (9 s here), the pool that ran dry in its busiest
        // minute is at risk of doing so again: PoolAtRisk reaches the metrics and the webhook.
        let mut at_risk = 0.0;
        for _ in 0..300 {
            at_risk = metric_sum(&scrape(&c, &base).await, "keysim_warnings_firing", &[("alertname", "PoolAtRisk")]);
            if at_risk > 0.0 && posts.lock().unwrap().iter().any(|p| p.contains("PoolAtRisk")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(at_risk > 0.0, "PoolAtRisk fires live: {}", proxy.log());
    });
    let posts = posts.lock().unwrap().join("\n");
    assert!(
        posts.contains("\"status\":\"firing\"") && posts.contains("NearLimit"),
        "the webhook got the alert: {posts}"
    );
    assert!(posts.contains("\"alertname\":\"PoolAtRisk\"") && posts.contains("\"horizon\":\"3600s\""), "{posts}");
    assert!(proxy.log().contains("PoolAtRisk"), "the log line: {}", proxy.log());
    assert!(proxy.log().contains("keysim::warnings"), "{}", proxy.log());
    no_key_in("the webhook's payloads", &posts);
}

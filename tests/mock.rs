//! `keysim mock` over real HTTP: both hosts, raw requests, dropped connections, and the
//! official Python SDKs (google-genai, openai) against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::{keysim, root};

/// A running `keysim mock`, stopped when dropped.
pub(crate) struct Mock {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(host: &str, extra: &[&str]) -> Mock {
    start_with(host, "tests/sdk/sdk-pool.toml", extra)
}

/// `keysim mock` serving `scenario` on a free port.
pub(crate) fn start_with(host: &str, scenario: &str, extra: &[&str]) -> Mock {
    let mut child = keysim()
        .args(["mock", "--port", "0", "--host", host, "--scenario", scenario])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("keysim mock starts");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading what else it says, so that it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let base =
        first.split_whitespace().find(|w| w.starts_with("http://")).expect("it says where it listens").to_owned();
    Mock { child, base }
}

/// One raw HTTP/1.1 exchange; `None` if the connection closed without an answer.
pub(crate) fn raw(base: &str, request: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A host may answer (413) and close before it has read all of a large request: read
    // while writing, so that the answer is in before the close.
    let mut reader = s.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        bytes
    });
    let _ = s.write_all(request.as_bytes());
    let out = String::from_utf8_lossy(&read.join().unwrap()).into_owned();
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

fn generate(key: &str) -> String {
    let body = r#"{"contents":[{"parts":[{"text":"abcdefgh"}]}]}"#;
    format!(
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: fake\r\nx-goog-api-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn both_hosts_answer_over_real_http_and_enforce_rpm_per_project() {
    for host in ["sustained", "wiremock"] {
        let m = start(host, &[]);
        let list = "GET /v1beta/models?key=fake-gemini-key HTTP/1.1\r\nHost: fake\r\nconnection: close\r\n\r\n";
        let (status, body) = raw(&m.base, list).expect("an answer");
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("models/gemini-2.5-flash"), "{host}: {body}");
        let statuses: Vec<u16> = (0..3).map(|_| raw(&m.base, &generate("fake-gemini-key")).unwrap().0).collect();
        assert_eq!(statuses, [200, 200, 429], "{host}: RPM 2 per project");
        assert_eq!(
            raw(&m.base, &generate("fake-openai-key")).unwrap().0,
            200,
            "{host}: another project, another quota"
        );
        let (status, body) = raw(&m.base, &generate("not-a-key")).unwrap();
        assert_eq!(status, 400, "{host}");
        assert!(body.contains("API_KEY_INVALID"), "{host}: {body}");
    }
}

#[test]
fn the_sustained_host_drops_connections_when_told_to() {
    let m = start("sustained", &["--set", "provider.faults={ drop_rate = 1.0 }"]);
    assert_eq!(raw(&m.base, &generate("fake-gemini-key")), None, "closed without an answer");
    let w = start("wiremock", &["--set", "provider.faults={ drop_rate = 1.0 }"]);
    assert_eq!(raw(&w.base, &generate("fake-gemini-key")).unwrap().0, 503, "wiremock cannot drop: 503 instead");
}

/// Runs `tests/sdk/<script>` with `args`: it must succeed and say `passed`.
pub(crate) fn python_check(script: &str, args: &[&str], passed: &str, what: &str) {
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/sdk").join(script))
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(passed), "{what}: {text}");
}

/// Whether the Python SDKs are importable; in CI they must be.
pub(crate) fn sdks() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import google.genai, openai, litellm"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must install tests/sdk/requirements.txt");
        eprintln!("skipped: the Python SDKs (google-genai, openai, litellm) are not installed (pip install -r tests/sdk/requirements.txt)");
    }
    ok
}

/// The same two minutes of traffic, simulated and sent for real (at 4x) to the fake, tell
/// the same story. They cannot agree exactly. In real time a queued request is retried a
/// little after its slot frees (`load::EDGE_GUARD`, 25 ms, i.e. 100 ms of scenario time at
/// 4x), against jitter between two requests' trips to the fake; over two minutes of chained
/// retries that costs a few slots. Settlement order also shifts which queued request gets
/// the next slot. Hence a tolerance of four requests (or 10 %) on succeeded and denied, and
/// at most two breaches, for jitter beyond the guard on a busy machine.
#[test]
fn a_load_run_against_the_fake_agrees_with_the_simulation() {
    let sim = crate::common::run(&crate::common::scenario("load-check", &[])).0;
    let m = start_with("sustained", "scenarios/load-check.toml", &["--time-scale", "4"]);
    let dir = crate::common::temp_dir("load");
    let out = keysim()
        .args(["load", "scenarios/load-check.toml", "--target", &m.base, "--time-scale", "4", "--json"])
        .args(["--baseline", "--out"])
        .arg(&dir)
        .output()
        .expect("keysim load runs");
    let load: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(load["mode"], "load");
    let r = &load["requests"];
    let n = |k: &str| r[k].as_u64().unwrap();
    // The scenario expects no breach: a jitter breach fails it, and the exit code says so.
    assert_eq!(out.status.code(), Some(if n("breaches") == 0 { 0 } else { 1 }));
    assert_eq!(n("total"), sim.requests.total, "the same schedule");
    assert_eq!(n("total"), n("succeeded") + n("breaches") + n("denied") + n("failed"));
    let near = |a: u64, b: u64| a.abs_diff(b) <= 4.max(b / 10);
    assert!(
        near(n("succeeded"), sim.requests.succeeded),
        "succeeded: load {} sim {}",
        n("succeeded"),
        sim.requests.succeeded
    );
    assert!(near(n("denied"), sim.requests.denied), "denied: load {} sim {}", n("denied"), sim.requests.denied);
    assert!(n("breaches") <= 2, "breaches: {}", n("breaches"));
    assert_eq!(n("failed"), 0);
    let l = &load["load"];
    assert_eq!(l["started"], sim.requests.total);
    assert_eq!(l["transport_errors"], 0);
    assert!(load["overhead_ns"]["p50"].as_u64().unwrap() > 0, "the engine's decision time is measured");
    // Its report: latency plots, end to end with and without the engine.
    let overhead = std::fs::read_to_string(dir.join("plots/overhead.svg")).expect("overhead plot");
    assert!(overhead.contains("End-to-end latency") && overhead.contains("without the engine"));
    assert!(dir.join("plots/queue-wait.png").exists() && dir.join("plots/outcomes.svg").exists());
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("Real-time load run") && html.contains("end to end, without the engine"));
}

#[test]
fn the_official_sdks_work_against_the_fake() {
    if !sdks() {
        return;
    }
    for host in ["sustained", "wiremock"] {
        let m = start(host, &[]);
        python_check("check_sdks.py", &[&m.base, "fake-gemini-key", "fake-openai-key"], "all SDK checks passed", host);
    }
}

/// The fake follows the scenario's script over real HTTP: a capacity storm and keys deleted,
/// suspended and restored, in a load run at 60x. The engine disables no key for the storm,
/// disables each rejected key alone and revives it, and counts failures by cause.
#[test]
fn the_fake_misbehaves_on_schedule_and_the_engine_copes_over_http() {
    // Restored at 80 s: the keys' first probes, a minute after their first rejection, pass.
    let runs: [(&str, &[&str]); 2] = [
        (
            "capacity-storm",
            &[r#"scenario.duration="3m""#, r#"provider.storms=[{ at = "1m", duration = "1m", rate = 0.9 }]"#],
        ),
        (
            "key-revoked",
            &[
                r#"scenario.duration="3m""#,
                r#"events=[{ at = "30s", invalidate = "proj-1-key-a" }, { at = "30s", suspend = "proj-2-key-b" },
                 { at = "80s", revive = "proj-1-key-a" }, { at = "80s", revive = "proj-2-key-b" }]"#,
            ],
        ),
    ];
    for (name, sets) in runs {
        let path = format!("scenarios/{name}.toml");
        let mut args = vec!["--time-scale", "60"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let m = start_with("sustained", &path, &args);
        let out = keysim()
            .args(["load", &path, "--target", &m.base, "--json"])
            .args(&args)
            .output()
            .expect("keysim load runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: summary JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        let r = &v["requests"];
        let n = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(n("breaches"), 0, "{name}: {r}");
        assert_eq!(n("total"), n("succeeded") + n("denied") + n("failed"), "{name}: every request accounted for");
        let failed = r["failed_by_reason"].as_object().unwrap();
        let h = &v["health"];
        if name == "capacity-storm" {
            assert!(failed.get("capacity-429").is_some_and(|c| c.as_u64() > Some(0)), "{name}: {r}");
            // Only the storm fails requests (a client timeout on a busy machine aside).
            let others = failed.keys().filter(|k| !["capacity-429", "timeout", "transport"].contains(&k.as_str()));
            assert_eq!(others.count(), 0, "{name}: {r}");
            assert_eq!(h["keys_disabled"], 0, "{name}: no key is blamed for a storm");
            assert!(h["model_backoffs"].as_u64() > Some(0));
        } else {
            assert!(failed.contains_key("api-key-invalid") && failed.contains_key("permission-denied"), "{r}");
            assert_eq!(h["keys_revived"], 2, "{name}: both keys serve again: {h}");
            assert_eq!(h["keys_disabled"], 2, "{name}: each disabled once, by its first rejection: {h}");
        }
    }
}

/// Slow answers happen in load runs too: the latency a replayed request states is its
/// median draw, and `slow_rate` applies on top of it.
#[test]
fn slow_answers_show_in_a_load_run_s_p99() {
    let p99 = |slow: f64| {
        let faults = format!("provider.faults={{ slow_rate = {slow}, slow_factor = 20 }}");
        let args = ["--set", "provider.storms=[]", "--set", r#"scenario.duration="2m""#, "--set", &faults];
        let m =
            start_with("sustained", "scenarios/capacity-storm.toml", &[&args[..], &["--time-scale", "30"]].concat());
        let out = keysim()
            .args(["load", "scenarios/capacity-storm.toml", "--target", &m.base, "--time-scale", "30", "--json"])
            .args(args)
            .output()
            .expect("keysim load runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("summary JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
        v["latency_ms"]["p99"].as_u64().expect("a p99")
    };
    let (plain, slow) = (p99(0.0), p99(0.3));
    // A p99 of 4 s, and slow answers twenty times longer than their draw.
    assert!(plain <= 8_000, "without slow answers: p99 {plain} ms");
    assert!(slow >= 4 * plain, "with 30 % slow answers: p99 {slow} ms against {plain} ms");
}

/// LiteLLM's Gemini provider (pointed at the fake with `api_base`) completes, streams and
/// raises `RateLimitError` when the minute is used up.
#[test]
fn litellm_works_against_the_fake() {
    if !sdks() {
        return;
    }
    let m = start("sustained", &[]);
    python_check("check_litellm.py", &[&m.base, "fake-gemini-key"], "all LiteLLM checks passed", "litellm");
}

/// Each failure the provider gives raises the SDKs' usual exception, on both hosts and with
/// quota 429s in each shape Gemini has used.
#[test]
fn the_official_sdks_raise_their_usual_errors_when_the_provider_misbehaves() {
    if !sdks() {
        return;
    }
    let runs = [("sustained", "quota-failure"), ("sustained", "help-only"), ("wiremock", "error-info")];
    for (host, shape) in runs {
        let set = format!("provider.quota_body={shape}");
        let m = start_with(host, "tests/sdk/sdk-misbehaviour.toml", &["--set", &set]);
        let what = format!("{host}, {shape}");
        python_check("check_misbehaviour.py", &[&m.base, shape], "all misbehaviour checks passed", &what);
    }
}

#[test]
fn the_sustained_host_streams_events_over_the_answer_s_latency() {
    let m = start("sustained", &[]);
    let body = r#"{"contents":[{"parts":[{"text":"stream"}]}]}"#;
    let request = format!(
        "POST /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1\r\nHost: fake\r\n\
         x-goog-api-key: fake-gemini-key\r\nx-keysim-latency-ms: 900\r\nx-keysim-output-tokens: 30\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(m.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent = std::time::Instant::now();
    s.write_all(request.as_bytes()).unwrap();
    let (mut seen, mut first, mut buf) = (String::new(), None, [0u8; 4096]);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if first.is_none() && seen.contains("data: ") {
            first = Some(sent.elapsed());
        }
    }
    let (first, all) = (first.expect("an event"), sent.elapsed());
    assert_eq!(seen.matches("data: ").count(), 3, "{seen}");
    assert!(seen.contains("text/event-stream"));
    // Pieces go out a third of the latency apart: the first long before the last.
    assert!(all >= Duration::from_millis(850), "the last one after all of the latency: {all:?}");
    assert!(all - first >= Duration::from_millis(450), "first {first:?}, all {all:?}");
}

/// The embedding example (`examples/embed.rs`) against `keysim mock`: every request is
/// admitted by the engine, answered 200, and settled from its `usageMetadata`.
#[test]
fn the_embedding_example_runs_against_the_fake() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_keysim")).with_file_name("examples").join("embed");
    assert!(exe.exists(), "cargo test builds the examples: {} is missing", exe.display());
    let mock = start_with("sustained", "scenarios/quickstart.toml", &[]);
    let out = std::process::Command::new(&exe).args([mock.base.as_str(), "12"]).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let answered = stdout.lines().filter(|l| l.contains("→ 200 Success")).count();
    assert_eq!(answered, 12, "{stdout}");
    // Twelve requests of two projects' 20 a minute: eight left.
    assert!(stdout.contains("8 of 20 requests left this minute"), "{stdout}");
}

/// The fake serves a pool: a file with `[[models]]` and `[[projects]]` but no `[[traffic]]`
/// (which only the lab's runs use) is enough for `keysim mock`.
#[test]
fn the_fake_serves_a_pool_without_traffic() {
    let dir = crate::common::temp_dir("pool-only");
    let pool = dir.join("pool.toml");
    std::fs::write(
        &pool,
        "[scenario]\nname = \"pool-only\"\nduration = \"1m\"\n\n[[models]]\nname = \"gemini-2.5-flash\"\nrpm = 2\n\
         tpm = 250000\nrpd = 250\n\n[[projects]]\nid = \"proj-a\"\nkeys = [\"fake-gemini-key\"]\n",
    )
    .unwrap();
    let m = start_with("sustained", pool.to_str().unwrap(), &[]);
    let statuses: Vec<u16> = (0..3).map(|_| raw(&m.base, &generate("fake-gemini-key")).unwrap().0).collect();
    assert_eq!(statuses, [200, 200, 429], "its pool's RPM 2 holds");
    // The lab's commands still want traffic to run.
    let o = crate::common::keysim().args(["validate"]).arg(&pool).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing `[[traffic]]`"));
}

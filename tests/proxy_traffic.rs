//! The proxy's traffic log (`[proxy] traffic_log`), over real HTTP in front of the fake: a
//! line per request with what the lab replays, no secret in any of them, and a log that
//! cannot keep up never holds a request back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::temp_dir;
use crate::mock::start_with;
use crate::proxy::{client, config_with, exchange, metric, post, runtime, scrape, start_proxy, FAKE, TOKEN};

const OTHER_TOKEN: &str = "test-client-token-0002";
const PROMPT: &str = "PROMPT-TEXT-THAT-MUST-NOT-BE-LOGGED";

/// The lines of the log at `path` once it holds `n` (it is flushed twice a second).
fn lines_when(path: &Path, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        if lines.len() >= n || Instant::now() > until {
            assert!(!text.contains(PROMPT), "no prompt text in the log");
            for secret in ["kspx1a", "kspx1b", "kspx2a", "kspx3a", TOKEN, OTHER_TOKEN] {
                assert!(!text.contains(secret), "no key or client token in the log: {secret}");
            }
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Served, streamed, on both surfaces, denied: one line each, with what the lab replays.
#[test]
fn the_traffic_log_has_a_line_per_request_and_no_secret() {
    let fake = start_with("sustained", FAKE, &[]);
    // Two requests a minute per project, refused at once past them: four served, two denied.
    let config = config_with(|t| {
        t.replacen("rpm = 30", "rpm = 2", 1)
            .replace("on_exhausted = \"queue\"", "on_exhausted = \"reject\"")
            .replace("[proxy]\n", "[proxy]\ntraffic_log = \"traffic.jsonl\"\n")
    });
    let log = config.parent().unwrap().join("traffic.jsonl");
    let proxy = start_proxy(&config, &fake.base, &[]);
    let c = client();
    let gemini =
        format!(r#"{{"contents":[{{"parts":[{{"text":"{PROMPT}"}}]}}],"generationConfig":{{"maxOutputTokens":64}}}}"#);
    let openai = format!(r#"{{"model":"gemini-2.5-flash","messages":[{{"role":"user","content":"{PROMPT}"}}]}}"#);
    let generate = "/v1beta/models/gemini-2.5-flash:generateContent";
    runtime().block_on(async {
        let sends = [
            (generate, TOKEN, &gemini),
            ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", OTHER_TOKEN, &gemini),
            ("/v1beta/openai/chat/completions", TOKEN, &openai),
            (generate, TOKEN, &gemini),
            (generate, TOKEN, &gemini),
            (generate, OTHER_TOKEN, &gemini),
        ];
        let mut statuses = Vec::new();
        for (path, token, body) in sends {
            statuses.push(exchange(post(&c, &proxy.base, path, Some(token), body)).await.0);
        }
        assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
        assert_eq!(metric(&scrape(&c, &proxy.base).await, "keysim_traffic_log_dropped_total", &[]), Some(0.0));
    });
    let lines = lines_when(&log, 6);
    assert_eq!(lines.len(), 6, "{lines:?}");
    let served: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "served").collect();
    let denied: Vec<&Value> = lines.iter().filter(|l| l["outcome"] == "denied").collect();
    assert_eq!((served.len(), denied.len()), (4, 2), "{lines:?}");
    for l in &lines {
        assert_eq!(l["v"], 1);
        assert_eq!(l["model"], "gemini-2.5-flash");
        assert!(l["ts"].as_u64().unwrap() > 1_700_000_000_000, "{l}");
        assert!(l["total_ms"].as_f64().unwrap() >= l["wait_ms"].as_f64().unwrap(), "{l}");
    }
    for l in &served {
        assert!(l["input"].as_u64().unwrap() > 0 && l["output"].as_u64().is_some(), "{l}");
        assert!(l["estimate"].as_u64().unwrap() > 0, "{l}");
        assert!(["proj-1", "proj-2"].contains(&l["project"].as_str().unwrap()), "{l}");
        assert!(l["upstream_ms"].as_f64().unwrap() > 0.0, "{l}");
    }
    for l in &denied {
        assert!(l["reason"].as_str().unwrap().contains("rpm"), "{l}");
        assert!(l.get("project").is_none() && l.get("input").is_none(), "{l}");
    }
    assert_eq!(lines.iter().filter(|l| l["stream"] == true).count(), 1);
    assert_eq!(lines.iter().filter(|l| l["surface"] == "openai").count(), 1);
    assert_eq!(lines.iter().filter(|l| l["client"] == "token-2").count(), 2);
    assert_eq!(lines.iter().filter(|l| l["client"] == "token-1").count(), 4);
    assert_eq!(lines[0]["max_output"], 64);
}

/// A log whose reader has stopped (a pipe nobody reads): lines are dropped and counted, and
/// no request waits for them.
#[test]
fn a_stalled_traffic_log_drops_lines_and_delays_no_request() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = temp_dir("traffic-fifo");
    let fifo = dir.join("stalled.jsonl");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    // A reader that never reads: the pipe fills (64 KB) and the writer blocks on it.
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(0o4000).open(&fifo).expect("O_NONBLOCK reader");
    let fake = start_with(
        "sustained",
        FAKE,
        &["--set", "models.0.rpm=100000", "--set", "provider.latency.median=5ms", "--set", "provider.latency.p99=10ms"],
    );
    let config = config_with(|t| {
        t.replacen("rpm = 30", "rpm = 100_000", 1)
            .replace("[proxy]\n", &format!("[proxy]\ntraffic_log = {{ path = \"{}\", queue = 16 }}\n", fifo.display()))
    });
    let proxy = start_proxy(&config, &fake.base, &[]);
    let c = client();
    runtime().block_on(async {
        let body = format!(r#"{{"contents":[{{"parts":[{{"text":"{PROMPT}"}}]}}]}}"#);
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        let mut slowest = Duration::ZERO;
        for _ in 0..50 {
            let sends: Vec<_> = (0..16)
                .map(|_| {
                    let (c, base, body) = (c.clone(), proxy.base.clone(), body.clone());
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let (status, text) = exchange(post(&c, &base, path, Some(TOKEN), &body)).await;
                        (status, text, started.elapsed())
                    })
                })
                .collect();
            for s in sends {
                let (status, text, took) = s.await.unwrap();
                assert_eq!(status, 200, "{text}");
                slowest = slowest.max(took);
            }
        }
        let dropped = metric(&scrape(&c, &proxy.base).await, "keysim_traffic_log_dropped_total", &[]).unwrap();
        // 800 lines of about 350 bytes: more than the pipe and the queue hold together.
        assert!(dropped > 0.0, "the stalled log dropped lines: {dropped}");
        assert!(slowest < Duration::from_secs(5), "no request waited for the log: {slowest:?}");
    });
}

/// `keysim load --traffic-log` writes the same log of the requests through its engine: a line
/// each, outcomes as its summary counts them, times in the scenario's calendar.
#[test]
fn keysim_load_writes_the_same_traffic_log() {
    let m = start_with("sustained", "tests/replicas/burst.toml", &[]);
    let dir = temp_dir("load-traffic");
    let log = dir.join("traffic.jsonl");
    let out = crate::common::keysim()
        .args(["load", "tests/replicas/burst.toml", "--target", &m.base, "--json", "--no-plots", "--out"])
        .arg(&dir)
        .arg("--traffic-log")
        .arg(&log)
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("summary JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let lines: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, s["requests"]["total"].as_u64().unwrap());
    for (outcome, counted) in
        [("served", "succeeded"), ("denied", "denied"), ("breach", "breaches"), ("failed", "failed")]
    {
        let logged = lines.iter().filter(|l| l["outcome"] == outcome).count() as u64;
        assert_eq!(logged, s["requests"][counted].as_u64().unwrap(), "{outcome}");
    }
    assert!(lines.iter().all(|l| l["v"] == 1 && l["ts"].as_u64().unwrap() > 1_700_000_000_000), "{lines:?}");
    assert!(lines.iter().filter(|l| l["outcome"] == "served").all(|l| l["input"].as_u64().unwrap() > 0));
}

/// `GET /admin/scenario`: the running pool and engine settings as a pool file that reads
/// back as the same pool, with no key value in it.
#[test]
fn the_admin_scenario_reads_back_as_the_running_pool() {
    let fake = start_with("sustained", FAKE, &[]);
    let config = config_with(|t| t.replace("strategy = \"least-used\"", "strategy = \"round-robin\"\nreserve = 0.1"));
    let proxy = start_proxy(&config, &fake.base, &[]);
    let c = client();
    let text = runtime().block_on(async {
        let url = format!("{}/admin/scenario", proxy.base);
        assert_eq!(c.get(&url).send().await.unwrap().status(), 401, "behind the admin token");
        let r = c.get(&url).bearer_auth(crate::proxy::ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    });
    for secret in ["kspx1a", "kspx1b", "kspx2a", "kspx3a", TOKEN, crate::proxy::ADMIN] {
        assert!(!text.contains(secret), "no key or token: {secret}\n{text}");
    }
    let (exported, _) =
        keysim::proxy::file::parse(&text, "admin/scenario", None).unwrap_or_else(|d| panic!("{d}\n{text}"));
    let source = std::fs::read_to_string(&config).unwrap();
    let (running, _) = keysim::proxy::file::parse(&source, "proxy.toml", None).unwrap();
    assert_eq!(exported.models, running.models);
    assert_eq!(exported.projects, running.projects);
    assert_eq!(exported.engine.config.strategy, running.engine.config.strategy);
    assert_eq!(exported.engine.config.reserve, running.engine.config.reserve);
    assert_eq!(exported.engine.max_wait_ms, running.engine.max_wait_ms);
    assert_eq!(exported.engine.on_exhausted, running.engine.on_exhausted);
    // With traffic beside it, the lab runs it.
    let file = temp_dir("admin-scenario").join("pool.toml");
    let traffic = "\n[[traffic]]\nname = \"chat\"\nmodel = \"gemini-2.5-flash\"\n\
                   arrival = { kind = \"constant\", rate = \"40/min\" }\n\
                   prompt_tokens = { median = 200, p99 = 800 }\noutput_tokens = { median = 60, p99 = 200 }\n";
    std::fs::write(&file, format!("{text}{traffic}")).unwrap();
    let out = crate::common::keysim().arg("validate").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The loop test's fake and load scenario.
const LOOP: &str = "tests/proxy/loop.toml";
/// How much faster than real time the loop runs (ten minutes of the pool's time in a minute).
const LOOP_SCALE: &str = "10";

/// A proxy config for the loop: the first `projects` of the loop's fake, its engine, a log.
fn loop_config(projects: usize) -> std::path::PathBuf {
    let dir = temp_dir("loop-config");
    let mut text = String::from(
        "[scenario]\nname = \"loop-proxy\"\n\n[[models]]\nname = \"gemini-2.5-flash\"\nrpm = 10\ntpm = 250_000\nrpd = 10_000\n\n",
    );
    for i in 1..=projects {
        text.push_str(&format!("[[projects]]\nid = \"loop-{i}\"\nkeys = [\"loop-{i}-key\"]\n\n"));
    }
    text.push_str(&format!(
        "[engine]\non_exhausted = \"queue\"\nmax_wait = \"20s\"\n\n[proxy]\nkeys = \"ids\"\nclient_tokens = [\"{TOKEN}\"]\n\
         admin_token = \"{}\"\ntraffic_log = \"traffic.jsonl\"\n",
        crate::proxy::ADMIN
    ));
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `keysim load` of the loop's traffic through a proxy of `projects` projects in front of
/// its fake: the load's summary, the proxy's traffic log and its `/admin/scenario`.
fn loop_through_proxy(projects: usize) -> (Value, Vec<Value>, String, std::path::PathBuf) {
    let fake = start_with("sustained", LOOP, &["--time-scale", LOOP_SCALE]);
    let config = loop_config(projects);
    let proxy = start_proxy(&config, &fake.base, &["--time-scale", LOOP_SCALE]);
    let dir = config.parent().unwrap().to_path_buf();
    let out = crate::common::keysim()
        .args(["load", LOOP, "--target", &proxy.base, "--no-engine", "--token-env", "KEYSIM_TEST_TOKEN"])
        .args(["--time-scale", LOOP_SCALE, "--json", "--no-plots", "--out"])
        .arg(dir.join("load"))
        .env("KEYSIM_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("load summary ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let scenario = runtime().block_on(async {
        let url = format!("{}/admin/scenario", proxy.base);
        client().get(url).bearer_auth(crate::proxy::ADMIN).send().await.unwrap().text().await.unwrap()
    });
    let total = summary["requests"]["total"].as_u64().unwrap() as usize;
    let log = config.parent().unwrap().join("traffic.jsonl");
    let lines = lines_when(&log, total);
    (summary, lines, scenario, dir)
}

/// Percentile `q` of `v` (nearest rank).
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The loop closes: the proxy's traffic at twice its pool's capacity, replayed in the lab
/// with the pool the proxy reports, tells the same story; the plan made from the same log
/// gives a pool that serves the same load with no denial and no breach.
#[test]
fn a_logged_day_replays_in_the_lab_and_its_plan_holds() {
    // A stall of the proxy would read as ten times as long a wait.
    let _machine = crate::common::machine();
    let (summary, lines, scenario, dir) = loop_through_proxy(2);
    let count = |o: &str| lines.iter().filter(|l| l["outcome"] == o).count() as f64;
    let (served, denied, breaches) = (count("served"), count("denied"), count("breach"));
    assert_eq!(lines.len() as u64, summary["requests"]["total"].as_u64().unwrap());
    assert!(lines.len() >= 350 && denied > 100.0, "twice the capacity: {summary}");
    let pool = dir.join("pool.toml");
    std::fs::write(&pool, &scenario).unwrap();
    let log = dir.join("traffic.jsonl");
    let replay = dir.join("replay");
    let out = crate::common::keysim()
        .arg("run")
        .arg(&pool)
        .arg("--traffic")
        .arg(&log)
        .args(["--json", "--no-plots", "--requests-csv", "--out"])
        .arg(&replay)
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("replay summary ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let r = |k: &str| s["requests"][k].as_f64().unwrap();
    let close = |what: &str, logged: f64, replayed: f64, within: f64| {
        let tolerance = (within * logged.max(replayed)).ceil();
        eprintln!("{what}: logged {logged}, replayed {replayed} (tolerance {tolerance})");
        assert!((logged - replayed).abs() <= tolerance, "{what}: logged {logged}, replayed {replayed}\n{s}");
    };
    assert_eq!(r("total"), lines.len() as f64);
    close("served", served, r("succeeded"), 0.02);
    close("denied", denied, r("denied"), 0.02);
    close("breaches", breaches, r("breaches"), 0.02);
    let mut logged: Vec<f64> = lines.iter().map(|l| l["wait_ms"].as_f64().unwrap()).collect();
    let mut csv = ::csv::Reader::from_path(replay.join("requests.csv")).unwrap();
    let col = csv.headers().unwrap().iter().position(|h| h == "queue_wait_ms").unwrap();
    let mut replayed: Vec<f64> = csv.records().map(|r| r.unwrap()[col].parse().unwrap()).collect();
    for q in [0.5, 0.99] {
        close(&format!("wait p{}", q * 100.0), percentile(&mut logged, q), percentile(&mut replayed, q), 0.10);
    }
    // The plan from the same log, and the same load through the pool it recommends.
    let out = crate::common::keysim()
        .arg("plan")
        .arg(&pool)
        .arg("--traffic")
        .arg(&log)
        .args(["--goal", "denied == 0, wait_p99 <= 10s", "--json", "--out"])
        .arg(dir.join("plan"))
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let rec = &plan["recommendations"][0];
    let projects = rec["projects"].as_u64().unwrap_or_else(|| panic!("a pool meets the goal: {plan}"));
    eprintln!("plan: {}", rec["text"]);
    assert!((3..=8).contains(&projects), "{plan}");
    assert!(rec["text"].as_str().unwrap().contains("busiest minute"), "{plan}");
    let (summary, lines, _, _) = loop_through_proxy(projects as usize);
    let n = |k: &str| summary["requests"][k].as_u64().unwrap();
    eprintln!("through {projects} projects: {}", summary["requests"]);
    assert_eq!((n("denied"), n("breaches"), n("failed")), (0, 0, 0), "{summary}");
    assert_eq!(lines.iter().filter(|l| l["outcome"] == "served").count() as u64, n("total"));
}

//! Traffic logs in the lab: each format's sample read and replayed, a bad line named by file
//! and line, the window, client filter and growth, and gate, compare and tune-warnings on a
//! log (`tests/logs/`).

use std::path::Path;

use serde_json::Value;

use crate::common::{keysim, temp_dir};

const POOL: &str = "tests/logs/pool.toml";

/// `keysim run` of `scenario` on `log` with `extra` arguments: the summary and the class of
/// every request (from requests.csv).
fn replay(scenario: &str, log: &str, extra: &[&str]) -> (Value, Vec<String>) {
    let dir = temp_dir("logs-run");
    let out = keysim()
        .args(["run", scenario, "--traffic", log])
        .args(extra)
        .args(["--json", "--no-plots", "--requests-csv", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{log}: summary ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let mut csv = ::csv::Reader::from_path(dir.join("requests.csv")).unwrap();
    let col = csv.headers().unwrap().iter().position(|h| h == "class").unwrap();
    let classes = csv.records().map(|r| r.unwrap()[col].to_owned()).collect();
    (s, classes)
}

fn total(s: &Value) -> u64 {
    s["requests"]["total"].as_u64().unwrap()
}

fn count(classes: &[String], class: &str) -> usize {
    classes.iter().filter(|c| *c == class).count()
}

#[test]
fn each_importer_reads_its_sample_and_runs() {
    // LiteLLM's payloads: the key's alias, else its team's; the model group; a 429 and a 500.
    let (s, classes) = replay(POOL, "tests/logs/litellm-payloads.jsonl", &[]);
    assert_eq!(total(&s), 12, "{s}");
    assert_eq!(count(&classes, "chat-app/gemini-2.5-pro"), 2);
    assert_eq!(count(&classes, "chat-app/gemini-2.5-flash"), 4);
    assert_eq!(count(&classes, "search/gemini-2.5-pro"), 2);
    assert_eq!(count(&classes, "search/gemini-2.5-flash"), 4);
    assert_eq!(s["requests"]["failed"], 1, "the provider's 500 replays as a failure: {s}");
    // Real payloads from LiteLLM 1.110.2's callback (tests/logs/pool.toml says how).
    let (s, classes) = replay(POOL, "tests/logs/litellm-callback.jsonl", &[]);
    assert_eq!(total(&s), 12, "{s}");
    assert_eq!(count(&classes, "notebook/gemini-2.5-flash"), 4);
    assert_eq!(count(&classes, "anonymous/gemini-2.5-flash") + count(&classes, "anonymous/gemini-2.5-pro"), 8);
    // Spend logs, one array with ISO times: the user, else the key's hash.
    let (s, classes) = replay(POOL, "tests/logs/litellm-spend.json", &["--format", "litellm"]);
    assert_eq!(total(&s), 8);
    assert_eq!(count(&classes, "notebook-ada/gemini-2.5-flash"), 4);
    assert_eq!(count(&classes, "key-88dc28d0/gemini-2.5-flash"), 4);
    // OTLP exports: the resource's service, or the span's user; the tool spans left out.
    let (s, classes) = replay(POOL, "tests/logs/otel-otlp.jsonl", &[]);
    assert_eq!(total(&s), 12);
    assert_eq!(count(&classes, "chat-api/gemini-2.5-flash"), 9);
    assert_eq!(count(&classes, "alice/gemini-2.5-flash"), 3);
    // Spans one per line, the older attribute names.
    let (s, classes) = replay(POOL, "tests/logs/otel-spans.jsonl", &[]);
    assert_eq!(total(&s), 5);
    assert_eq!(count(&classes, "batch-job/gemini-2.5-pro"), 5);
    assert_eq!(s["tokens"]["input_actual"].as_u64(), Some(900 + 901 + 902 + 903 + 904), "{s}");
    // Any CSV, through a mapping.
    let columns = "time=when,input=in_tok,output=out_tok,model=llm,client=app,status=http_status,latency_ms=ms";
    let (s, classes) = replay(POOL, "tests/logs/gateway.csv", &["--columns", columns]);
    assert_eq!(total(&s), 10);
    assert_eq!((count(&classes, "billing/gemini-2.5-flash"), count(&classes, "support/gemini-2.5-flash")), (5, 5));
    assert_eq!(s["requests"]["failed"], 1, "the 503 replays as a failure: {s}");
    // The Azure trace: its own columns, no model column.
    let (s, _) = replay(
        "scenarios/azure-trace.toml",
        "scenarios/traces/azure-llm-code-2023.csv",
        &["--model", "gemini-2.5-flash"],
    );
    assert_eq!(total(&s), 8_819);
    assert_eq!(s["start"], "2023-11-16T18:17:03.980Z", "the run keeps the trace's calendar: {s}");
}

/// A bad line in a log: exit 2, the file and the line named.
fn refused(log: &Path, extra: &[&str], line: &str) {
    let out = keysim().args(["run", POOL, "--traffic"]).arg(log).args(extra).args(["--no-plots"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let name = log.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name) && err.contains(line), "names {name} and {line}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_malformed_line_names_its_file_and_line() {
    let dir = temp_dir("logs-bad");
    let lines = |path: &str, keep: usize, bad: &str| {
        let text = std::fs::read_to_string(crate::common::root().join(path)).unwrap();
        let mut out: Vec<&str> = text.lines().take(keep).collect();
        out.push(bad);
        let p = dir.join(Path::new(path).file_name().unwrap());
        std::fs::write(&p, out.join("\n") + "\n").unwrap();
        p
    };
    refused(&lines("tests/logs/litellm-payloads.jsonl", 2, "{\"startTime\": 1765036800, \"model\""), &[], "line 3");
    refused(&lines("tests/logs/otel-otlp.jsonl", 1, "{\"resourceSpans\": 7}"), &[], "line 2");
    let keysim_log = dir.join("traffic.jsonl");
    let good = r#"{"v":1,"ts":1765036800000,"client":"token-1","surface":"gemini","model":"gemini-2.5-flash","outcome":"served","wait_ms":0.1,"total_ms":300.0,"retries":0,"breaches":0,"input":10,"output":5}"#;
    std::fs::write(&keysim_log, format!("{good}\n{good}\n\n{}\n", good.replace("\"v\":1", "\"v\":9"))).unwrap();
    refused(&keysim_log, &[], "line 4");
    std::fs::write(&keysim_log, format!("{good}\n{}\n", good.replace("served", "lost"))).unwrap();
    refused(&keysim_log, &[], "line 2");
    std::fs::write(&keysim_log, format!("{}\n", good.replace("gemini-2.5-flash", "gpt-4o"))).unwrap();
    refused(&keysim_log, &[], "model 'gpt-4o' is not in [[models]]");
    let csv = lines("tests/logs/gateway.csv", 4, "2025-12-06T17:00:00Z,billing,gemini-2.5-flash,many,1,200,5");
    refused(&csv, &["--columns", "time=when,input=in_tok,model=llm"], "line 5");
    refused(&dir.join("missing.jsonl"), &[], "missing.jsonl");
}

#[test]
fn a_window_a_client_and_growth_select_from_the_log() {
    let log = "tests/logs/litellm-payloads.jsonl";
    // 08:00:00 to 08:01:22 Pacific, a request every 7.5 s.
    let (s, _) = replay(POOL, log, &["--from", "2025-12-06 08:00:30", "--to", "2025-12-06T16:01:00Z"]);
    assert_eq!(total(&s), 4, "08:00:30, :37.5, :45 and :52.5: {s}");
    assert_eq!(s["start"], "2025-12-06T16:00:30.000Z");
    assert_eq!(s["duration_s"].as_f64(), Some(30.0));
    let (s, classes) = replay(POOL, log, &["--client", "search"]);
    assert_eq!(total(&s), 6);
    assert!(classes.iter().all(|c| c.starts_with("search/")), "{classes:?}");
    let (s, _) = replay(POOL, log, &["--scale", "2"]);
    assert_eq!(total(&s), 24);
    let (s, _) = replay(POOL, log, &["--scale", "3.5"]);
    assert!((39..=45).contains(&total(&s)), "3 copies and half of another: {s}");
    let out = keysim().args(["run", POOL, "--traffic", log, "--client", "nobody", "--no-plots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no client 'nobody'"));
}

/// Last week's traffic, as the proxy logs it: bursts of chat at the top of each minute, for
/// an hour, from two clients.
fn last_week(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("last-week.jsonl");
    let mut text = String::new();
    for minute in 0..60u64 {
        for i in 0..14u64 {
            let ts = 1_765_036_800_000 + minute * 60_000 + i * 700;
            let client = if i % 3 == 0 { "token-2" } else { "token-1" };
            text.push_str(&format!(
                "{{\"v\":1,\"ts\":{ts},\"client\":\"{client}\",\"surface\":\"gemini\",\"model\":\"gemini-2.5-flash\",\
                 \"stream\":false,\"batch\":1,\"estimate\":900,\"input\":{},\"output\":120,\"project\":\"proj-1\",\
                 \"outcome\":\"served\",\"wait_ms\":0.2,\"upstream_ms\":800.0,\"total_ms\":801.0,\"retries\":0,\"breaches\":0}}\n",
                800 + 10 * i
            ));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn gate_compare_and_tune_judge_a_change_on_a_log() {
    let dir = temp_dir("logs-gate");
    let log = last_week(&dir);
    let log = log.to_str().unwrap();
    // The pool as it is (three projects of RPM 10; 14 a minute) keeps [expect] breaches = 0.
    let gate = |extra: &[&str]| {
        keysim().args(["gate", POOL, "--traffic", log, "--quiet"]).args(extra).output().unwrap().status.code()
    };
    assert_eq!(gate(&[]), Some(0));
    // A change that races past the limits fails the gate on the same traffic.
    assert_eq!(gate(&["--set", "engine.admission=check-then-act"]), Some(1));
    let out = keysim()
        .args(["compare", POOL, "--traffic", log, "--variant", "as-is", "--variant", "rr=engine.strategy=round-robin"])
        .args(["--variant", "one=projects.0.count=1"])
        .args(["--json", "--out"])
        .arg(dir.join("compare"))
        .output()
        .unwrap();
    let c: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("compare ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let rows = c.as_array().unwrap_or_else(|| panic!("{c}"));
    let names: Vec<&str> = rows.iter().map(|r| r["variant"].as_str().unwrap()).collect();
    assert_eq!(names, ["as-is", "rr", "one"], "{c}");
    assert!(rows.iter().all(|r| r["total"] == 840 && r["breaches"] == 0), "{c}");
    let denied = |i: usize| rows[i]["denied"].as_u64().unwrap();
    assert!(denied(2) > denied(0), "one project of the three denies more on the same traffic: {c}");
    let out = keysim()
        .args(["tune-warnings", POOL, "--traffic", log, "--sweep", "horizon=15m,30m", "--json", "--out"])
        .arg(dir.join("tune"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t.to_string().contains("horizon"), "{t}");
}

/// A log as people hand it over: an OTLP export pretty-printed (`jq .`), an array of spans,
/// times with offsets, a byte-order mark before the first line.
#[test]
fn pretty_printed_documents_and_a_byte_order_mark_are_read() {
    let dir = temp_dir("logs-pretty");
    let text = std::fs::read_to_string(crate::common::root().join("tests/logs/otel-otlp.jsonl")).unwrap();
    let export: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let pretty = dir.join("export.json");
    std::fs::write(&pretty, serde_json::to_string_pretty(&export).unwrap()).unwrap();
    assert_eq!(total(&replay(POOL, pretty.to_str().unwrap(), &[]).0), 4, "four model calls, the tool left out");
    let spans = dir.join("spans.json");
    let flat: Vec<Value> = std::fs::read_to_string(crate::common::root().join("tests/logs/otel-spans.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::write(&spans, serde_json::to_string_pretty(&flat).unwrap()).unwrap();
    assert_eq!(total(&replay(POOL, spans.to_str().unwrap(), &["--format", "otel"]).0), 5);
    // The Azure 2024 traces' times: a space, microseconds and an offset.
    let azure = dir.join("azure-2024.csv");
    std::fs::write(
        &azure,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,2048,28\n\
         2024-05-10 02:00:00.512000+02:00,1024,12\n2024-05-10 00:00:01.000000+00:00,512,4\n",
    )
    .unwrap();
    let (s, _) = replay(POOL, azure.to_str().unwrap(), &["--model", "gemini-2.5-flash"]);
    assert_eq!(total(&s), 3);
    assert_eq!(s["start"], "2024-05-10T00:00:00.010Z", "{s}");
    assert_eq!(s["duration_s"].as_f64(), Some(1.99), "the last at 00:00:01, and a second: {s}");
    let bom = dir.join("bom.jsonl");
    let line = r#"{"v":1,"ts":1765036800000,"client":"token-1","surface":"gemini","model":"gemini-2.5-flash","outcome":"served","wait_ms":0.1,"total_ms":300.0,"retries":0,"breaches":0,"input":10,"output":5}"#;
    std::fs::write(&bom, format!("\u{feff}{line}\n{line}\n")).unwrap();
    assert_eq!(total(&replay(POOL, bom.to_str().unwrap(), &[]).0), 2);
}

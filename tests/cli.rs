//! The command line: the main job and its contract.

use crate::common::{keysim, temp_dir};

#[test]
fn run_writes_the_contract() {
    let dir = temp_dir("cli");
    let out = keysim().args(["run", "scenarios/quickstart.toml", "--json", "--out"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints the summary");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(printed, written);
    let s = &written;
    assert_eq!(s["scenario"], "quickstart");
    assert_eq!(s["mode"], "sim");
    assert_eq!(s["seed"], 42);
    assert_eq!(s["duration_s"], 1800.0);
    let r = &s["requests"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("requests.{k}"));
    assert_eq!(n("total"), n("succeeded") + n("breaches") + n("denied") + n("failed"));
    for k in ["input_actual", "input_estimated", "output_actual"] {
        assert!(s["tokens"][k].as_u64().is_some_and(|v| v > 0), "tokens.{k}");
    }
    assert!(s["utilization"].as_f64().is_some_and(|u| u > 0.0));
    for k in ["p50", "p99", "p999", "max"] {
        assert!(s["overhead_ns"][k].as_u64().is_some(), "overhead_ns.{k}");
    }
    for k in ["notifications", "true_positive", "false_positive", "missed"] {
        assert!(s["warnings"][k].as_u64().is_some(), "warnings.{k}");
    }
    let keys = s["per_key"].as_array().unwrap();
    assert_eq!(keys.len(), 8);
    for k in keys {
        for f in ["key", "project", "model", "succeeded", "breaches", "denied"] {
            assert!(!k[f].is_null(), "per_key[].{f}");
        }
    }
    let ex = s["expectations"].as_array().unwrap();
    assert!(ex
        .iter()
        .all(|e| e["ok"] == true && e["name"].is_string() && e["limit"].is_string() && e["actual"].is_number()));
    let timeline = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert_eq!(timeline.lines().count(), 1 + 30 * 4, "30 one-minute rows for each of 4 projects");
}

#[test]
fn run_prints_a_readable_table() {
    let dir = temp_dir("table");
    let out = keysim().args(["run", "scenarios/race.toml", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["breaches (429 after admission)", "engine overhead p50", "proj-a", "ok   breaches == 0"] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn validate_accepts_every_example() {
    for e in std::fs::read_dir(crate::common::root().join("scenarios")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = keysim().arg("validate").arg(&p).output().unwrap();
            assert!(out.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(keysim().args(["run"]).output().unwrap().status.code(), Some(2));
    assert_eq!(keysim().args(["frobnicate"]).output().unwrap().status.code(), Some(2));
    assert_eq!(keysim().args(["--help"]).output().unwrap().status.code(), Some(0));
}

#[test]
fn progress_is_drawn_on_terminals_only() {
    // stderr is a pipe here: no progress bar, no escape codes, nothing at all.
    let out = crate::common::keysim()
        .args(["run", "scenarios/midnight.toml", "--out"])
        .arg(crate::common::temp_dir("progress"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("report:"));
}

/// `--set` reaches entries of arrays by name or index, and a repeated path takes its last
/// value; a failed `[expect]` exits 1 with the report written.
#[test]
fn set_reaches_array_entries_and_failed_expectations_exit_1() {
    let total = |sets: &[&str]| {
        let dir = crate::common::temp_dir("set");
        let mut c = keysim();
        c.args(["run", "scenarios/quickstart.toml", "--json", "--no-plots", "--set", "scenario.duration=2m"]);
        for s in sets {
            c.args(["--set", s]);
        }
        let out = c.arg("--out").arg(&dir).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the summary");
        assert!(dir.join("summary.json").exists(), "the report is written whatever the exit code");
        (v["requests"]["total"].as_u64().unwrap(), out.status.code())
    };
    let (base, _) = total(&[]);
    let (by_name, code) = total(&["traffic.chat.arrival.rate=5/s"]);
    assert!(by_name > 5 * base, "{base} → {by_name}");
    assert_eq!(code, Some(1), "five times the pool's rate fails the scenario's success-rate expectation");
    assert_eq!(total(&["traffic.0.arrival.rate=5/s"]).0, by_name, "by index as by name");
    assert_eq!(total(&["traffic.chat.arrival.rate=5/s", "traffic.chat.arrival.rate=30/min"]).0, base, "the last wins");
    let out = keysim()
        .args(["validate", "scenarios/quickstart.toml", "--set", "traffic.nope.arrival.rate=5/s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no element named or numbered 'nope'"));
}

//! Same scenario and seed ⇒ byte-identical outputs (all but the real-clock overhead).

use crate::common::{keysim, temp_dir};

fn run_into(scenario: &str, seed: Option<&str>) -> std::path::PathBuf {
    let dir = temp_dir("det");
    let mut cmd = keysim();
    cmd.args(["run", scenario, "--quiet", "--requests-csv", "--out"]).arg(&dir);
    if let Some(s) = seed {
        cmd.args(["--seed", s]);
    }
    let status = cmd.status().expect("keysim runs");
    assert!(status.success());
    dir
}

fn summary_without_overhead(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(v["overhead_ns"]["p50"].as_u64().is_some_and(|p| p > 0), "overhead is measured");
    v.as_object_mut().expect("object").remove("overhead_ns");
    v
}

#[test]
fn same_seed_gives_identical_outputs() {
    for scenario in [
        "scenarios/quickstart.toml",
        "scenarios/azure-trace.toml",
        "scenarios/reserve.toml",
        "scenarios/tpm-arabic.toml",
        "scenarios/warn-spiky.toml",
    ] {
        let a = run_into(scenario, None);
        let b = run_into(scenario, None);
        assert_eq!(summary_without_overhead(&a), summary_without_overhead(&b), "{scenario}");
        for f in ["timeline.csv", "requests.csv"] {
            let x = std::fs::read(a.join(f)).expect("csv");
            let y = std::fs::read(b.join(f)).expect("csv");
            assert!(!x.is_empty());
            assert!(x == y, "{scenario}: {f} differs between identical runs");
        }
    }
    // Warnings: the naive reference sends many notifications on warn-spiky, in one order.
    let naive = |dir: &std::path::Path| {
        let status = keysim()
            .args(["run", "scenarios/warn-spiky.toml", "--quiet", "--set", "warnings.mode=naive", "--out"])
            .arg(dir)
            .status()
            .expect("keysim runs");
        assert_eq!(status.code(), Some(1), "naive warnings fail the scenario's `notifications == 0`");
        std::fs::read(dir.join("notifications.jsonl")).expect("notifications.jsonl")
    };
    let (x, y) = (naive(&temp_dir("det")), naive(&temp_dir("det")));
    assert!(x.len() > 1000, "many notifications");
    assert!(x == y, "notifications.jsonl differs between identical runs");
}

#[test]
fn another_seed_gives_another_run() {
    let a = run_into("scenarios/quickstart.toml", Some("1"));
    let b = run_into("scenarios/quickstart.toml", Some("2"));
    assert_ne!(std::fs::read(a.join("requests.csv")).unwrap(), std::fs::read(b.join("requests.csv")).unwrap());
    assert_eq!(summary_without_overhead(&a)["seed"], 1);
}

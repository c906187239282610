//! `keysim plan`: the recommendation matches arithmetic a person can do, the grid is
//! deterministic whatever the parallelism, and bad sweeps are bad input.

use crate::common::{keysim, temp_dir};

/// Per project, `scenarios/capacity.toml` serves 10 RPM = 1/6 requests/s (RPM binds).
const PER_PROJECT_RPS: f64 = 10.0 / 60.0;
/// Rates away from multiples of the per-project capacity, where a pool is just full.
const RATES: [f64; 7] = [0.45, 0.9, 1.3, 1.7, 2.1, 2.4, 2.9];

fn plan(jobs: &str) -> (serde_json::Value, String) {
    let _machine = crate::common::machine();
    let dir = temp_dir("plan");
    let rates: Vec<String> = RATES.iter().map(f64::to_string).collect();
    let out = keysim()
        .args(["plan", "scenarios/capacity.toml", "--sweep", "projects=1..20", "--sweep"])
        .arg(format!("rate={}", rates.join(",")))
        .args(["--jobs", jobs, "--quiet", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let csv = std::fs::read_to_string(dir.join("plan.csv")).unwrap();
    for f in ["report.html", "plots/plan-heatmap.svg", "plots/plan-heatmap.png"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    (json, csv)
}

#[test]
fn constant_traffic_needs_the_ceiling_of_rate_over_per_project_capacity() {
    let (json, csv) = plan("2");
    let recs = json["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), RATES.len());
    for (r, rate) in recs.iter().zip(RATES) {
        let expected = (rate / PER_PROJECT_RPS).ceil() as u64;
        assert_eq!(r["projects"].as_u64(), Some(expected), "at {rate}/s: {}", r["text"]);
        assert_eq!(r["arithmetic"]["binding"], "RPM");
        assert_eq!(r["arithmetic"]["projects"].as_u64(), Some(expected));
        // One project fewer falls short: the recommendation is the smallest.
        let text = r["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("at {rate} requests/s peak with this profile: {expected} free-tier projects")),
            "{text}"
        );
        let headroom = r["headroom"].as_f64().unwrap();
        assert!((headroom - (1.0 - rate / (expected as f64 * PER_PROJECT_RPS))).abs() < 1e-9);
    }
    // The grid: 20 pool sizes × 7 rates, and below the recommendation nothing meets it.
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 20 * RATES.len());
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        let (n, rate, meets): (u64, f64, bool) = (f[0].parse().unwrap(), f[1].parse().unwrap(), f[9] == "true");
        assert_eq!(meets, n >= (rate / PER_PROJECT_RPS).ceil() as u64, "{row}");
    }
    // Same grid on one thread: the same figures.
    let (_, again) = plan("1");
    assert_eq!(csv, again, "deterministic per point whatever the parallelism");
}

#[test]
fn plan_refuses_bad_sweeps_with_exit_2() {
    for sweep in [
        vec!["--sweep", "rate=1,2"],
        vec!["--sweep", "projects=0..3"],
        vec!["--sweep", "projects=1..3", "--sweep", "projects=4"],
    ] {
        let out = keysim().args(["plan", "scenarios/capacity.toml", "--quiet"]).args(&sweep).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sweep:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
}

#[test]
fn any_setting_can_be_swept_beside_the_pool() {
    let dir = temp_dir("plan-set");
    let out = keysim()
        .args(["plan", "scenarios/capacity.toml", "--sweep", "projects=4..6", "--sweep", "rate=0.9"])
        .args(["--sweep", "engine.strategy=round-robin,p2c", "--quiet", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(dir.join("plan.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("projects,rate,engine.strategy,"));
    assert_eq!(lines.count(), 3 * 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let recs = json["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "one per strategy");
    for r in recs {
        assert_eq!(r["projects"], 6, "{}", r["text"]);
        assert!(r["text"].as_str().unwrap().contains("engine.strategy = "));
    }
    // A setting that does not exist is bad input, named.
    let bad = keysim()
        .args(["plan", "scenarios/capacity.toml", "--sweep", "projects=1..2", "--sweep", "engine.nonsense=1,2", "-q"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nonsense"));
}

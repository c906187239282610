//! The provider's misbehaviour, simulated: capacity storms, rejected keys, cut limits and
//! flaky 5xx. The engine disables no key for what is not a key's fault, disables a rejected
//! key alone, learns a cut limit from the 429, and reports failures by cause.

use keysim::engine::health::HealthEvent;
use keysim::engine::Timestamp;
use keysim::report::summary::{RunMode, Summary};
use keysim::sim::{simulate, Outputs};

const MINUTE: u64 = 60_000;

fn run(name: &str) -> (Summary, Vec<HealthEvent>, Timestamp) {
    let sc = crate::common::scenario(name, &[]);
    let r = simulate(&sc, Outputs::default()).expect("runs");
    let summary = Summary::new(&sc, RunMode::Sim, &r.aggregate, &r.engine);
    (summary, r.engine.health().events, sc.start)
}

#[test]
fn a_capacity_storm_disables_no_key_and_service_returns_within_a_back_off() {
    let (s, events, start) = run("capacity-storm");
    assert_eq!((s.requests.breaches, s.health.keys_disabled), (0, 0));
    let failed: Vec<_> = s.requests.failed_by_reason.keys().collect();
    assert_eq!(failed, vec!["capacity-429"], "every failure is the storm's");
    assert!(s.health.model_backoffs > 0);
    // The storm ends at 12 minutes.
    let storm_end = start.plus(12 * MINUTE);
    // The back-off in effect when the storm ended: full service returns at its end, when its
    // probe is answered (a request's latency later, 4 s at p99).
    let (began, until) = events
        .iter()
        .rev()
        .find_map(|e| match e {
            HealthEvent::ModelBackoff { at, until, .. } if at.0 <= storm_end.0 => Some((*at, *until)),
            _ => None,
        })
        .expect("a back-off during the storm");
    // Full service: the first recovery after that back-off began.
    let recovered = events
        .iter()
        .find_map(|e| match e {
            HealthEvent::ModelRecovered { at, .. } if at.0 >= began.0 => Some(*at),
            _ => None,
        })
        .expect("the model recovers");
    println!(
        "served again {} ms after the storm; the back-off then in effect: {} ms, ending {} ms after the storm",
        recovered.0.saturating_sub(storm_end.0),
        until.0 - began.0,
        until.0.saturating_sub(storm_end.0)
    );
    assert!(recovered.0 <= until.0 + 4_000, "served again {} ms after the storm", recovered.0 - storm_end.0);
    assert_eq!(s.requests.denied, 0, "queued through the back-offs, nothing lost");
}

#[test]
fn a_rejected_key_is_disabled_alone_and_revived_by_its_probe() {
    let (s, events, start) = run("key-revoked");
    assert_eq!(s.requests.breaches, 0);
    assert_eq!(s.health.keys_revived, 2, "both keys serve again");
    for key in ["proj-1-key-a", "proj-2-key-b"] {
        let disabled: Vec<Timestamp> = events
            .iter()
            .filter_map(|e| match e {
                HealthEvent::KeyDisabled { at, key: k, .. } if k == key => Some(*at),
                _ => None,
            })
            .collect();
        let probes = events.iter().filter(|e| matches!(e, HealthEvent::KeyProbed { key: k, .. } if k == key)).count();
        // One failure outside probes: the first rejection; every later one was a probe.
        assert_eq!(disabled.len(), probes, "{key}: {} disabled, {probes} probed", disabled.len());
        let revived = events
            .iter()
            .find_map(|e| match e {
                HealthEvent::KeyRevived { at, key: k } if k == key => Some(*at),
                _ => None,
            })
            .expect("revived");
        // Restored at 20 minutes: revived by the first probe after that, within one cool-down.
        let last_wait = events.iter().rev().find_map(|e| match e {
            HealthEvent::KeyDisabled { key: k, probe_at, at } if k == key && at.0 < revived.0 => Some(*probe_at),
            _ => None,
        });
        assert!(revived.0 >= start.plus(20 * MINUTE).0);
        assert!(revived.0 <= last_wait.expect("a wait before").0 + MINUTE, "{key}: revived at its probe");
    }
    // The projects' other keys never stopped.
    for key in ["proj-1-key-b", "proj-2-key-a"] {
        let row = s.per_key.iter().find(|k| k.key == key);
        assert!(row.is_some_and(|r| r.succeeded > 0 && r.failed == 0), "{key} kept serving");
    }
    assert_eq!(s.requests.failed_by_reason.values().sum::<u64>(), s.requests.failed);
}

#[test]
fn a_cut_limit_is_learned_from_the_first_429() {
    let (s, events, _) = run("limit-cut");
    assert!(s.requests.breaches <= 1, "at most one breach per project and dimension: {}", s.requests.breaches);
    assert_eq!(s.health.limits_learned, 1);
    assert!(events.iter().any(|e| e.to_string() == "gemini-2.5-flash RPD 250 → 20 for proj-3"), "{events:?}");
}

#[test]
fn flaky_5xx_disable_no_key_and_are_reported_by_cause() {
    let (s, _, _) = run("flaky-5xx");
    assert_eq!((s.requests.breaches, s.health.keys_disabled), (0, 0));
    let f = &s.requests.failed_by_reason;
    for cause in ["overloaded", "internal", "timeout"] {
        assert!(f.get(cause).copied().unwrap_or(0) > 0, "{cause}: {f:?}");
    }
    assert_eq!(f.values().sum::<u64>(), s.requests.failed);
}

/// The three quota-429 shapes: the legacy `ErrorInfo` names the limit too; a body with only a
/// `Help` link names none, so nothing is learned, but nothing is disabled either.
#[test]
fn every_quota_429_shape_is_read() {
    let learned = |shape: &str| {
        let sc = crate::common::scenario("limit-cut", &[&format!("provider.quota_body={shape}")]);
        let r = simulate(&sc, Outputs::default()).expect("runs");
        let h = r.engine.health();
        (h.limits_learned, h.keys_disabled, r.aggregate.counts.breaches)
    };
    assert_eq!(learned("error-info").0, 1);
    let (learned_help, disabled, breaches) = learned("help-only");
    assert_eq!((learned_help, disabled), (0, 0));
    assert!(breaches > 1, "without the limit the engine can only back off, and breaches again: {breaches}");
}

/// The reference gateways on the same traffic reproduce their known failures: the one that
/// blacklists keys after failures empties the pool in a capacity storm; the ones without
/// accounting breach on a cut limit.
#[test]
fn the_reference_gateways_fail_as_they_do_in_the_wild() {
    let run_as = |name: &str, admission: &str| {
        let sc = crate::common::scenario(name, &[&format!("engine.admission={admission}")]);
        let r = simulate(&sc, Outputs::default()).expect("runs");
        let summary = Summary::new(&sc, RunMode::Sim, &r.aggregate, &r.engine);
        let keys = summary.capacity[0].keys;
        (summary.requests.breaches, keys, sc.projects.iter().map(|p| p.keys.len()).sum::<usize>())
    };
    let (_, left, all) = run_as("capacity-storm", "rotate-blacklist");
    assert!(left * 5 <= all, "rotate-blacklist loses at least 80 % of the pool: {left} of {all} left");
    let (breaches, left, all) = run_as("capacity-storm", "atomic");
    assert_eq!((breaches, left), (0, all), "keysim keeps every key and breaches nothing");
    for admission in ["none", "cooldown-retrydelay"] {
        let (breaches, ..) = run_as("limit-cut", admission);
        assert!(breaches > 10, "{admission}: {breaches} breaches on a cut limit");
    }
    assert!(run_as("limit-cut", "atomic").0 <= 1);
    assert!(run_as("key-revoked", "none").0 > 0);
}

/// Notifications of a run, as (sent at, minutes after the start; firing; alertname; summaries).
struct Collect(Vec<(u64, bool, String, Vec<String>)>, Timestamp);

impl keysim::notify::Sink for Collect {
    fn send(&mut self, n: &keysim::engine::warn::Notification, at: Timestamp) -> std::io::Result<()> {
        let name = n.group_labels.get("alertname").cloned().unwrap_or_default();
        let summaries = n.alerts.iter().filter_map(|a| a.annotations.get("summary").cloned()).collect();
        self.0.push((at.since(self.1) / MINUTE, n.firing, name, summaries));
        Ok(())
    }
}

fn alerts(name: &str) -> Vec<(u64, bool, String, Vec<String>)> {
    let sc = crate::common::scenario(name, &[]);
    let mut sink = Collect(Vec::new(), sc.start);
    simulate(&sc, Outputs { notifications: Some(&mut sink), ..Outputs::default() }).expect("runs");
    sink.0
}

/// What goes wrong is alerted on through the warnings pipeline: a key the provider rejects,
/// a pool that lost a share of its keys, a provider short of capacity, a limit cut; each
/// resolves when it is over.
#[test]
fn health_alerts_go_through_the_warnings_pipeline() {
    let sent = |list: &[(u64, bool, String, Vec<String>)], alert: &str, firing: bool| -> Vec<u64> {
        list.iter().filter(|(_, f, a, _)| a == alert && *f == firing).map(|(m, ..)| *m).collect()
    };
    // Keys rejected at 5 and 8 minutes, restored at 20.
    let k = alerts("key-revoked");
    let fired = sent(&k, "KeyDisabled", true);
    assert!(fired.first().is_some_and(|m| (5..7).contains(m)), "{k:?}");
    assert!(sent(&k, "KeyDisabled", false).first().is_some_and(|m| *m >= 20), "resolved once revived: {k:?}");
    let lost = sent(&k, "PoolLostKeys", true);
    assert!(lost.first().is_some_and(|m| (8..10).contains(m)), "2 of 6 keys is a share worth an alert: {k:?}");
    assert!(k.iter().any(|(_, _, a, s)| a == "KeyDisabled" && s.iter().any(|s| s.contains("proj-2-key-b"))));
    // A capacity storm from 10 to 12 minutes; flaky answers at 7 % all along do not page.
    let c = alerts("capacity-storm");
    assert_eq!(sent(&c, "ProviderCapacity", true), vec![10], "{c:?}");
    assert!(sent(&c, "ProviderCapacity", false).first().is_some_and(|m| (12..17).contains(m)), "{c:?}");
    assert!(!c.iter().any(|(_, _, a, _)| a == "KeyDisabled"), "no key is blamed for a storm");
    // A cut limit, said as the engine learned it.
    let l = alerts("limit-cut");
    let changed: Vec<_> = l.iter().filter(|(_, f, a, _)| a == "LimitChanged" && *f).collect();
    assert_eq!(changed.len(), 1, "{l:?}");
    assert_eq!(changed[0].3, vec!["limit changed: gemini-2.5-flash RPD 250 → 20 for proj-3".to_owned()]);
}

/// A pool alert that keeps firing while bursts drain the pool again and again: each dry spell
/// that began under it was warned (the operator knew), not missed; an alert that resolved
/// (notified or not) covers nothing any more.
#[test]
fn exhaustion_under_a_firing_alert_counts_as_warned() {
    let score = |sets: &[&str]| {
        let sc = crate::common::scenario("warn-steady", sets);
        let r = simulate(&sc, Outputs::default()).expect("runs");
        Summary::new(&sc, RunMode::Sim, &r.aggregate, &r.engine).warnings
    };
    // The level alert alone (PoolAtRisk off, Alertmanager's group wait), as a pool would be
    // watched without a forecast.
    let w = score(&["warnings.risk=false", "warnings.group_wait=30s"]);
    assert!(w.exhaustions >= 5, "{w:?}");
    assert_eq!((w.warned, w.missed), (w.exhaustions, 0), "{w:?}");
    assert!(w.warned_while_firing >= w.exhaustions - 2, "all but the first spells began under the alert: {w:?}");
    assert_eq!((w.recall, w.precision), (Some(1.0), Some(1.0)));
    // The same traffic, but the alert clears at once (clear_below = warn_at) and says nothing
    // when it does: spells that begin after it cleared are missed, not warned.
    let w = score(&[
        "warnings.risk=false",
        "warnings.group_wait=30s",
        "warnings.clear_below=0.8",
        "warnings.send_resolved=false",
    ]);
    assert!(w.missed > 0 && w.warned_while_firing < w.exhaustions, "{w:?}");
}

/// The capacity plot shows what the provider did (ruled) and what the engine did about it
/// (marked), and its keys line drops while keys are disabled.
#[test]
fn the_capacity_plot_shows_key_health() {
    let out = crate::common::temp_dir("health-plot");
    let o = crate::common::keysim()
        .args(["run", "scenarios/key-revoked.toml", "--quiet", "--out"])
        .arg(&out)
        .output()
        .expect("keysim runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(out.join("plots/capacity.svg")).expect("the capacity plot");
    for text in ["key disabled (provider rejected it)", "key revived (probe passed)", "provider suspends proj-2-key-b"]
    {
        assert!(svg.contains(text), "{text}");
    }
    let sc = crate::common::scenario("key-revoked", &[]);
    let r = simulate(&sc, Outputs { trace: true, ..Outputs::default() }).expect("runs");
    let t = r.trace.expect("a trace");
    let keys: Vec<u32> = (0..t.points()).map(|i| t.room(i, 0).keys).collect();
    assert_eq!((keys.iter().min(), keys.last()), (Some(&4), Some(&6)), "two keys out, then back: {keys:?}");
}

/// `keysim compare` shows the lost pool and the failures by cause beside keysim's engine.
#[test]
fn the_comparison_shows_the_lost_pool_and_failures_by_cause() {
    let out = crate::common::temp_dir("health-compare");
    let o = crate::common::keysim()
        .args(["compare", "scenarios/capacity-storm.toml", "--out"])
        .arg(&out)
        .output()
        .expect("keysim compare runs");
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("usable keys at the end") && table.contains("failed by cause"), "{table}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).expect("compare.json")).unwrap();
    let row = |v: &str| rows.as_array().unwrap().iter().find(|r| r["variant"] == v).expect("a row").clone();
    let (keysim, blacklist) = (row("keysim"), row("rotate-blacklist"));
    assert_eq!((keysim["keys_usable_at_end"].as_u64(), keysim["keys_in_pool"].as_u64()), (Some(8), Some(8)));
    assert_eq!((keysim["breaches"].as_u64(), keysim["keys_disabled"].as_u64()), (Some(0), Some(0)));
    assert!(blacklist["keys_usable_at_end"].as_u64().unwrap() * 5 <= 8, "{blacklist}");
    assert!(keysim["failed_by_cause"].as_str().unwrap().starts_with("capacity-429 "), "{keysim}");
}

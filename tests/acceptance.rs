//! The stories the example scenarios tell, checked under every judge semantics.

use keysim::report::summary::Summary;
use mock_server::Enforcement;

use crate::common::{run, scenario};

fn summary(name: &str, overrides: &[&str]) -> Summary {
    run(&scenario(name, overrides)).0
}

fn with_judge(e: Enforcement, extra: &[&str]) -> Vec<String> {
    let mut v = vec![format!("provider.enforcement={}", e.name())];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn summary_under(name: &str, e: Enforcement, extra: &[&str]) -> Summary {
    let o = with_judge(e, extra);
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    summary(name, &o)
}

#[test]
fn quickstart_has_no_breaches_and_keeps_the_contract() {
    let s = summary("quickstart", &[]);
    let r = &s.requests;
    assert_eq!(r.breaches, 0);
    assert!(r.total > 500, "quickstart should carry real traffic, had {}", r.total);
    assert_eq!(r.total, r.succeeded + r.breaches + r.denied + r.failed);
    assert!(s.passed(), "{:?}", s.expectations);
}

#[test]
fn check_then_act_races_past_rpm_and_atomic_does_not() {
    for e in Enforcement::ALL {
        let atomic = summary_under("race", e, &[]);
        let cta = summary_under("race", e, &["engine.admission=check-then-act"]);
        assert_eq!(atomic.requests.breaches, 0, "atomic under {e:?}");
        assert!(cta.requests.breaches > 0, "check-then-act under {e:?} should breach");
        assert_eq!(atomic.requests.total, cta.requests.total, "same traffic");
    }
}

#[test]
fn per_key_quota_belief_breaches_and_per_project_does_not() {
    for e in Enforcement::ALL {
        let project = summary_under("shared-project", e, &[]);
        let key = summary_under("shared-project", e, &["engine.quota_scope=key"]);
        assert_eq!(project.requests.breaches, 0, "project scope under {e:?}");
        assert!(key.requests.breaches > 0, "key scope under {e:?} should breach");
    }
}

#[test]
fn every_strategy_holds_under_every_semantics() {
    for e in Enforcement::ALL {
        for strategy in <keysim::engine::StrategyKind as keysim::engine::Setting>::ALL {
            let set = format!("engine.strategy={}", keysim::engine::Setting::name(*strategy));
            let s = summary_under("quickstart", e, &[&set]);
            assert_eq!(s.requests.breaches, 0, "{strategy:?} under {e:?}");
            assert!(s.utilization > 0.95, "{strategy:?} under {e:?}: utilisation {}", s.utilization);
        }
    }
}

#[test]
fn the_reserve_keeps_high_priority_alive_after_the_pool_is_exhausted() {
    let with = summary("reserve", &[]);
    let without = summary("reserve", &["engine.reserve=0"]);
    assert_eq!(with.requests.breaches, 0);
    assert!(with.requests.high_priority.total >= 30);
    assert!(with.requests.high_priority.success_rate() >= 0.99, "{:?}", with.requests.high_priority);
    assert!(without.requests.high_priority.success_rate() < 0.5, "{:?}", without.requests.high_priority);
    // Normal traffic really exhausted the pool: most of it was denied for RPD.
    assert!(with.requests.denied_by_reason.get("exhausted:rpd").copied().unwrap_or(0) > with.requests.total / 2);
}

#[test]
fn the_daily_quota_resets_at_pacific_midnight() {
    let (s, timeline) = run(&scenario("midnight", &[]));
    assert_eq!(s.requests.breaches, 0);
    assert_eq!(s.requests.succeeded, 80, "40 before midnight, 40 after");
    // rpd_used (column 11) reaches the limit before 08:00 UTC and restarts after it.
    let rows: Vec<Vec<String>> = timeline.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
    let before: Vec<u64> =
        rows.iter().filter(|r| r[1].as_str() < "2026-11-26T08:00").map(|r| r[11].parse().unwrap()).collect();
    let after: Vec<u64> =
        rows.iter().filter(|r| r[1].as_str() > "2026-11-26T08:00").map(|r| r[11].parse().unwrap()).collect();
    assert_eq!(before.last(), Some(&40));
    assert!(after.first().is_some_and(|&u| u < 40), "{after:?}");
    assert_eq!(after.last(), Some(&40));
}

#[test]
fn the_azure_trace_replays_without_breaches() {
    let s = summary("azure-trace", &[]);
    assert_eq!(s.requests.total, 8_819);
    assert_eq!(s.requests.breaches, 0);
    assert!(s.success_rate >= 0.99, "{}", s.success_rate);
}

#[test]
fn estimates_decide_whether_tpm_holds() {
    let calibrated = summary("tpm-arabic", &[]);
    let chars4 = summary("tpm-arabic", &["engine.estimator=chars4"]);
    assert_eq!(calibrated.requests.breaches, 0);
    assert!(chars4.requests.breaches > 0, "chars4 under-counts Arabic and overruns TPM");
    let a = &calibrated.estimation.by_language["arabic"];
    assert!(a.mae_pct < 10.0 && a.under_estimate_rate <= 0.05, "{a:?}");
    let c = &chars4.estimation.by_language["arabic"];
    assert!(c.bias_pct < -15.0, "{c:?}");
}

#[test]
fn the_gemini_tokenizer_estimator_is_exact() {
    if crate::estimators::gemini().is_none() {
        return;
    }
    let path = crate::common::root().join(".tokenizers/gemini/tokenizer.json");
    let set = format!("engine.tokenizer={}", path.display());
    let s = summary("tpm-arabic", &["engine.estimator=tokenizer", &set]);
    assert_eq!(s.requests.breaches, 0);
    assert_eq!(s.estimation.by_language["arabic"].mae_pct, 0.0);
}

#[test]
fn reconciliation_returns_over_reserved_tokens() {
    let with = summary("tpm-arabic", &[]);
    let without = summary("tpm-arabic", &["engine.reconcile=false"]);
    assert_eq!(without.requests.breaches, 0);
    assert!(
        with.requests.succeeded > without.requests.succeeded && with.utilization > without.utilization + 0.01,
        "with {} / {}, without {} / {}",
        with.requests.succeeded,
        with.utilization,
        without.requests.succeeded,
        without.utilization
    );
}

#[test]
fn a_learned_output_reservation_serves_more_than_reserving_the_maximum() {
    let learned = summary("output-reserve", &[]);
    let fixed = summary("output-reserve", &["engine.output_policy=fixed"]);
    assert_eq!(learned.requests.breaches, 0);
    assert_eq!(fixed.requests.breaches, 0, "reserving the maximum never under-counts");
    assert!(
        learned.utilization > fixed.utilization + 0.03,
        "learned {} against fixed {}",
        learned.utilization,
        fixed.utilization
    );
    // Without its safety share, under-reserved answers overrun the provider's count.
    let bare = summary("output-reserve", &["engine.safety=0"]);
    assert!(bare.requests.breaches > 0);
}

#[test]
fn calibrated_estimates_every_language_within_ten_percent_after_warm_up() {
    let s = summary("estimators", &[]);
    let langs = ["arabic", "chinese", "code", "english"];
    for lang in langs {
        let a = &s.estimation.by_language[lang];
        assert!(a.warm_up_requests > 0 && a.requests > 500, "{lang}: {a:?}");
        assert!(a.mae_pct < 10.0 && a.under_estimate_rate <= 0.05, "calibrated on {lang}: {a:?}");
    }
    // The shadows ran on the same requests, and the rule of thumb misses badly off English.
    let chars4 = &s.estimation.shadows["chars4"];
    assert_eq!(chars4["chinese"].requests + chars4["chinese"].warm_up_requests, {
        let a = &s.estimation.by_language["chinese"];
        a.requests + a.warm_up_requests
    });
    assert_eq!(chars4["chinese"].warm_up_requests, 0, "chars4 does not learn");
    assert!(chars4["chinese"].mae_pct > 40.0 && chars4["arabic"].under_estimate_rate > 0.9);
    assert!(s.estimation.shadows["tiktoken"]["code"].mae_pct > s.estimation.by_language["code"].mae_pct);
}

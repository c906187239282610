use super::*;

const T0: u64 = 1_764_140_400_000; // 2025-11-26T07:00:00Z, 23:00 Pacific

fn judge(enforcement: Enforcement, rpm: u64, tpm: u64, rpd: u64) -> Judge {
    Judge::new(JudgeConfig {
        enforcement,
        models: vec!["gemini-2.5-flash".into()],
        projects: vec![ProjectQuota {
            id: "p".into(),
            tier: Tier::Free,
            limits: vec![ModelQuota { rpm, tpm, rpd, tpd: None }],
        }],
        latency: LatencyModel { median_ms: 800.0, p99_ms: 6000.0 },
        faults: FaultModel::default(),
    })
}

fn rpm_only(v: &Verdict) -> Option<u64> {
    match v {
        Verdict::Accepted => None,
        Verdict::Exhausted { violations, retry_after_ms } => {
            assert_eq!(violations[0].dimension, Dimension::Rpm);
            Some(*retry_after_ms)
        }
    }
}

#[test]
fn sliding_window_frees_a_slot_sixty_seconds_after_it_was_used() {
    let mut j = judge(Enforcement::Sliding, 2, 1_000_000, 1000);
    assert_eq!(j.submit(0, 0, 10, T0), Verdict::Accepted);
    assert_eq!(j.submit(0, 0, 10, T0 + 10_000), Verdict::Accepted);
    assert_eq!(rpm_only(&j.submit(0, 0, 10, T0 + 20_000)), Some(40_000));
    assert_eq!(rpm_only(&j.submit(0, 0, 10, T0 + 59_999)), Some(1));
    assert_eq!(j.submit(0, 0, 10, T0 + 60_000), Verdict::Accepted);
}

#[test]
fn fixed_minute_restarts_at_the_minute() {
    let start = T0 + 50_000; // 10 s before a whole minute
    let mut j = judge(Enforcement::FixedMinute, 2, 1_000_000, 1000);
    assert_eq!(j.submit(0, 0, 10, start), Verdict::Accepted);
    assert_eq!(j.submit(0, 0, 10, start), Verdict::Accepted);
    assert_eq!(rpm_only(&j.submit(0, 0, 10, start + 1)), Some(9_999));
    assert_eq!(j.submit(0, 0, 10, start + 10_000), Verdict::Accepted);
}

#[test]
fn token_bucket_refills_continuously() {
    let mut j = judge(Enforcement::TokenBucket, 2, 1_000_000, 1000);
    assert_eq!(j.submit(0, 0, 10, T0), Verdict::Accepted);
    assert_eq!(j.submit(0, 0, 10, T0), Verdict::Accepted);
    assert_eq!(rpm_only(&j.submit(0, 0, 10, T0)), Some(30_000));
    assert_eq!(j.submit(0, 0, 10, T0 + 30_000), Verdict::Accepted);
}

#[test]
fn tokens_count_input_only_and_name_tpm() {
    let mut j = judge(Enforcement::Sliding, 100, 1000, 1000);
    assert_eq!(j.submit(0, 0, 600, T0), Verdict::Accepted);
    assert_eq!(j.submit(0, 0, 300, T0 + 5_000), Verdict::Accepted);
    match j.submit(0, 0, 200, T0 + 6_000) {
        Verdict::Exhausted { violations, retry_after_ms } => {
            assert_eq!(violations, vec![Violation { dimension: Dimension::Tpm, limit: 1000 }]);
            assert_eq!(retry_after_ms, 54_000);
        }
        v => panic!("expected TPM exhaustion, got {v:?}"),
    }
}

#[test]
fn daily_quota_resets_at_pacific_midnight() {
    let mut j = judge(Enforcement::Sliding, 100, 1_000_000, 2);
    assert_eq!(j.submit(0, 0, 1, T0), Verdict::Accepted);
    assert_eq!(j.submit(0, 0, 1, T0 + 1), Verdict::Accepted);
    match j.submit(0, 0, 1, T0 + 1_800_000) {
        Verdict::Exhausted { violations, retry_after_ms } => {
            assert_eq!(violations[0].dimension, Dimension::Rpd);
            assert_eq!(retry_after_ms, 1_800_000);
        }
        v => panic!("expected RPD exhaustion, got {v:?}"),
    }
    assert_eq!(j.submit(0, 0, 1, T0 + 3_600_000), Verdict::Accepted);
    assert_eq!(j.usage(0, 0, T0 + 3_600_000).day_requests, 1);
}

#[test]
fn refused_requests_are_not_counted() {
    let mut j = judge(Enforcement::Sliding, 1, 1_000_000, 1000);
    assert_eq!(j.submit(0, 0, 1, T0), Verdict::Accepted);
    for i in 1..10 {
        assert!(rpm_only(&j.submit(0, 0, 1, T0 + i)).is_some());
    }
    assert_eq!(j.usage(0, 0, T0 + 10).minute_requests, 1);
}

#[test]
fn a_zero_limit_refuses_everything() {
    let mut j = judge(Enforcement::Sliding, 0, 1_000_000, 1000);
    assert!(rpm_only(&j.submit(0, 0, 1, T0)).is_some());
}

#[test]
fn keys_map_to_projects_and_can_be_deleted() {
    let mut j = judge(Enforcement::Sliding, 1, 1, 1);
    j.issue_key("k", 0);
    assert_eq!(j.key_state("k"), KeyState::Valid(0));
    j.delete_key("k");
    assert_eq!(j.key_state("k"), KeyState::Invalid);
    assert_eq!(j.key_state("other"), KeyState::Invalid);
}

#[test]
fn token_bucket_is_exact_at_large_limits() {
    let mut j = judge(Enforcement::TokenBucket, 1000, 10_000_000, 100_000);
    assert_eq!(j.submit(0, 0, 10_000_000, T0), Verdict::Accepted);
    match j.submit(0, 0, 1_000_000, T0 + 1) {
        Verdict::Exhausted { retry_after_ms, .. } => assert_eq!(retry_after_ms, 5_999),
        v => panic!("expected TPM exhaustion, got {v:?}"),
    }
    assert!(matches!(j.submit(0, 0, 1_000_000, T0 + 5_999), Verdict::Exhausted { .. }));
    assert_eq!(j.submit(0, 0, 1_000_000, T0 + 6_000), Verdict::Accepted);
    assert_eq!(j.usage(0, 0, T0 + 6_000).minute_tokens, 10_000_000);
}

#[test]
fn keys_can_be_suspended_deleted_and_revived() {
    let mut j = judge(Enforcement::Sliding, 10, 100_000, 1_000);
    j.issue_key("k", 0);
    j.suspend_key("k");
    assert_eq!(j.key_state("k"), KeyState::Suspended);
    assert!(j.revive_key("k"));
    assert_eq!(j.key_state("k"), KeyState::Valid(0));
    j.delete_key("k");
    assert!(j.revive_key("k"));
    assert_eq!(j.key_state("k"), KeyState::Valid(0));
    assert!(!j.revive_key("never-issued"));
}

#[test]
fn a_limit_cut_applies_from_then_on() {
    let mut j = judge(Enforcement::Sliding, 10, 100_000, 1_000);
    for t in 0..2 {
        assert_eq!(j.submit(0, 0, 10, t), Verdict::Accepted);
    }
    let mut cut = j.limits(0, 0).clone();
    cut.rpm = 2;
    j.set_limits(0, 0, cut);
    match j.submit(0, 0, 10, 5) {
        Verdict::Exhausted { violations, .. } => assert_eq!(violations[0].limit, 2, "the 429 names the new limit"),
        v => panic!("expected the cut to bind, got {v:?}"),
    }
}

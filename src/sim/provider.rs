//! What the provider does on its own in a simulated run: capacity storms, and the events the
//! engine learns of only from its answers (keys suspended, deleted, revived; limits changed).

use mock_server::{Judge, ModelQuota};

use crate::scenario::{ProviderEvent, Scenario};

/// Whether the provider is short of capacity for request `id` at `now`: inside a storm, for
/// the storm's share of requests (drawn from the request's id, the same every run).
pub(super) fn in_storm(sc: &Scenario, id: u64, now: u64) -> bool {
    let t = now - sc.start.0;
    sc.provider.storms.iter().any(|s| {
        if t < s.at_ms || t >= s.at_ms.saturating_add(s.for_ms) {
            return false;
        }
        // SplitMix64 of the request's id: a uniform draw that uses no random stream.
        let mut z = (id ^ sc.seed.rotate_left(17)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64) < s.rate
    })
}

/// The provider does `event`: its judge changes; the engine is not told.
pub(super) fn apply(judge: &mut Judge, event: &ProviderEvent) {
    match event {
        ProviderEvent::Suspend(key) => judge.suspend_key(key),
        ProviderEvent::Invalidate(key) => judge.delete_key(key),
        ProviderEvent::Revive(key) => {
            judge.revive_key(key);
        }
        ProviderEvent::Limits { project, model, limits } => {
            let q = ModelQuota { rpm: limits.rpm, tpm: limits.tpm, rpd: limits.rpd, tpd: limits.tpd };
            judge.set_limits(*project, *model, q);
        }
    }
}

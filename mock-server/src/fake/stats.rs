//! `GET /keysim/usage`: what the fake has counted, per project and model, and the quota 429s
//! it has answered — the provider's side of the ledger, for tests and for whoever checks a
//! gateway's accounting against it. No key is needed; keys appear nowhere in it.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::{Answer, Fake};

impl Fake {
    /// The fake's counts at `now`.
    pub(super) fn usage_report(&self, now: u64) -> Answer {
        let mut state = self.lock();
        let projects: Vec<(usize, String)> =
            state.judge.config().projects.iter().enumerate().map(|(i, p)| (i, p.id.clone())).collect();
        let mut out = Vec::new();
        for (p, id) in projects {
            let mut models = Map::new();
            for (m, name) in self.models.iter().enumerate() {
                let u = state.judge.usage(p, m, now);
                models.insert(
                    name.clone(),
                    json!({
                        "minute_requests": u.minute_requests,
                        "minute_tokens": u.minute_tokens,
                        "day_requests": u.day_requests,
                        "day_tokens": u.day_tokens,
                    }),
                );
            }
            out.push(json!({"id": id, "models": Value::Object(models)}));
        }
        let refusals = self.quota_refusals.load(Ordering::Relaxed);
        Answer::json(200, json!({"projects": out, "quota_refusals": refusals}), 0)
    }
}

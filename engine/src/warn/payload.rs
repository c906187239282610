//! The Alertmanager webhook payload (version "4") of a notification, so that anything that
//! reads Alertmanager webhooks can read keysim's warnings.

use std::hash::Hasher;

use rustc_hash::FxHasher;
use serde_json::{json, Map, Value};

use super::pipeline::{Labels, Notification};

fn labels_json(l: &Labels) -> Value {
    Value::Object(l.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<Map<_, _>>())
}

/// Alertmanager's group key form: `{}:{k="v",...}`.
fn group_key(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(","))
}

/// A stable fingerprint of an alert's labels (16 hex digits).
pub fn fingerprint(l: &Labels) -> String {
    let mut h = FxHasher::default();
    for (k, v) in l {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    format!("{:016x}", h.finish())
}

/// Labels every alert of `n` shares.
fn common(maps: impl Iterator<Item = Labels>) -> Labels {
    let mut out: Option<Labels> = None;
    for m in maps {
        out = Some(match out {
            None => m,
            Some(c) => c.into_iter().filter(|(k, v)| m.get(k) == Some(v)).collect(),
        });
    }
    out.unwrap_or_default()
}

/// The webhook body for `n`, sent by receiver `receiver`.
pub fn alertmanager_v4(n: &Notification, receiver: &str) -> Value {
    let status = |firing: bool| if firing { "firing" } else { "resolved" };
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": status(a.ends_at.is_none()),
                "labels": labels_json(&a.labels),
                "annotations": labels_json(&a.annotations),
                "startsAt": a.starts_at.to_rfc3339(),
                "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |t| t.to_rfc3339()),
                "generatorURL": "",
                "fingerprint": fingerprint(&a.labels),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key(&n.group_labels),
        "truncatedAlerts": 0,
        "status": status(n.firing),
        "receiver": receiver,
        "groupLabels": labels_json(&n.group_labels),
        "commonLabels": labels_json(&common(n.alerts.iter().map(|a| a.labels.clone()))),
        "commonAnnotations": labels_json(&common(n.alerts.iter().map(|a| a.annotations.clone()))),
        "externalURL": "",
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warn::pipeline::AlertOut;
    use crate::Timestamp;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_payload_has_every_alertmanager_field() {
        let a = AlertOut {
            labels: labels(&[("alertname", "QuotaNearLimit"), ("model", "gemini-2.5-flash"), ("project", "proj-a")]),
            annotations: labels(&[("summary", "proj-a at 83% of RPD; exhausts in 41m, resets in 3h")]),
            starts_at: Timestamp(1_764_100_800_000),
            ends_at: None,
        };
        let mut b = a.clone();
        b.labels.insert("project".into(), "proj-b".into());
        b.ends_at = Some(Timestamp(1_764_104_400_000));
        let n =
            Notification { group_labels: labels(&[("model", "gemini-2.5-flash")]), firing: true, alerts: vec![a, b] };
        let v = alertmanager_v4(&n, "keysim");
        assert_eq!(v["version"], "4");
        assert_eq!(v["groupKey"], r#"{}:{model="gemini-2.5-flash"}"#);
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "keysim");
        assert_eq!(v["groupLabels"]["model"], "gemini-2.5-flash");
        assert_eq!(v["commonLabels"], json!({"alertname": "QuotaNearLimit", "model": "gemini-2.5-flash"}));
        assert_eq!(v["commonAnnotations"]["summary"], "proj-a at 83% of RPD; exhausts in 41m, resets in 3h");
        assert_eq!(v["externalURL"], "");
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts[0]["status"], "firing");
        assert_eq!(alerts[0]["startsAt"], "2025-11-25T20:00:00.000Z");
        assert_eq!(alerts[0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(alerts[1]["status"], "resolved");
        assert_eq!(alerts[1]["endsAt"], "2025-11-25T21:00:00.000Z");
        assert_eq!(alerts[0]["generatorURL"], "");
        assert_eq!(alerts[0]["fingerprint"].as_str().unwrap().len(), 16);
        assert_ne!(alerts[0]["fingerprint"], alerts[1]["fingerprint"]);
    }
}

//! The notification pipeline, with Alertmanager's semantics: alerts are grouped by labels,
//! a new group waits `group_wait` to collect more, changes to a notified group go out at most
//! every `group_interval`, an unchanged firing group is repeated every `repeat_interval`
//! (rounded up to a multiple of `group_interval`), firing source alerts inhibit matching
//! targets, and a group whose alerts all cleared sends one resolved notice and is forgotten.
//!
//! Pure: alerts go in with the time, notifications come out of [`Pipeline::flush`] as values.
//! Memory is bounded by the alerts currently known; resolved ones leave with their notice.

use std::collections::BTreeMap;

use crate::Timestamp;

/// Labels of an alert, in a stable order.
pub type Labels = BTreeMap<String, String>;

/// How alerts are grouped and paced.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Labels that make a group (alerts equal on them go out together).
    pub group_by: Vec<String>,
    /// Wait before a new group's first notification.
    pub group_wait_ms: u64,
    /// Wait between notifications of a group whose alerts changed.
    pub group_interval_ms: u64,
    /// Wait before repeating an unchanged firing group.
    pub repeat_interval_ms: u64,
    /// Whether to send a notice when a group's alerts all cleared.
    pub send_resolved: bool,
}

impl Default for Route {
    fn default() -> Self {
        Self {
            group_by: vec!["alertname".into(), "model".into()],
            group_wait_ms: 30_000,
            group_interval_ms: 300_000,
            repeat_interval_ms: 4 * 3_600_000,
            send_resolved: true,
        }
    }
}

/// A firing `source` alert mutes `target` alerts that agree with it on every `equal` label.
#[derive(Clone, Debug, PartialEq)]
pub struct Inhibit {
    /// Labels a source alert has (all of them).
    pub source: Labels,
    /// Labels a target alert has (all of them).
    pub target: Labels,
    /// Labels source and target must share.
    pub equal: Vec<String>,
}

/// An alert as notified.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertOut {
    /// Its labels.
    pub labels: Labels,
    /// Its annotations (`summary`).
    pub annotations: Labels,
    /// When it started firing.
    pub starts_at: Timestamp,
    /// When it resolved, if it did.
    pub ends_at: Option<Timestamp>,
}

/// One notification of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The group's identity (its `group_by` labels).
    pub group_labels: Labels,
    /// `true` while any alert of the group fires.
    pub firing: bool,
    /// The alerts, in label order.
    pub alerts: Vec<AlertOut>,
}

#[derive(Clone, Debug)]
struct Group {
    labels: Labels,
    alerts: BTreeMap<Labels, AlertOut>,
    created: Timestamp,
    last_sent: Option<Timestamp>,
    /// The set of (labels, resolved) last notified, to tell a change from a repeat.
    last_state: Vec<(Labels, bool)>,
    /// A firing alert asked to be told again (sent once `group_interval` has passed).
    remind: bool,
}

/// The pipeline.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    route: Route,
    inhibits: Vec<Inhibit>,
    groups: BTreeMap<Labels, Group>,
}

fn matches(labels: &Labels, want: &Labels) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Pipeline {
    /// A pipeline routing by `route`, muting by `inhibits`.
    pub fn new(route: Route, inhibits: Vec<Inhibit>) -> Self {
        Self { route, inhibits, groups: BTreeMap::new() }
    }

    fn group_of(&self, labels: &Labels) -> Labels {
        self.route.group_by.iter().filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone()))).collect()
    }

    /// An alert fires (again) at `now`.
    pub fn fire(&mut self, labels: Labels, annotations: Labels, now: Timestamp) {
        let key = self.group_of(&labels);
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            labels: key,
            alerts: BTreeMap::new(),
            created: now,
            last_sent: None,
            last_state: Vec::new(),
            remind: false,
        });
        let alert = group.alerts.entry(labels.clone()).or_insert(AlertOut {
            labels,
            annotations: annotations.clone(),
            starts_at: now,
            ends_at: None,
        });
        if alert.ends_at.is_some() {
            *alert = AlertOut { labels: alert.labels.clone(), annotations, starts_at: now, ends_at: None };
        } else {
            alert.annotations = annotations;
        }
    }

    /// A firing alert says again what it foretells, with new `annotations`: its group is
    /// notified again once `group_interval` has passed since its last notification, as a
    /// repeat would be. An alert not firing fires.
    pub fn remind(&mut self, labels: Labels, annotations: Labels, now: Timestamp) {
        let firing = self.is_firing(&labels);
        let key = self.group_of(&labels);
        self.fire(labels, annotations, now);
        if firing {
            if let Some(g) = self.groups.get_mut(&key) {
                g.remind = true;
            }
        }
    }

    /// Whether the alert with `labels` is firing now (notified or not, muted or not).
    pub fn is_firing(&self, labels: &Labels) -> bool {
        self.groups.get(&self.group_of(labels)).and_then(|g| g.alerts.get(labels)).is_some_and(|a| a.ends_at.is_none())
    }

    /// An alert resolved at `now`.
    pub fn resolve(&mut self, labels: &Labels, now: Timestamp) {
        let key = self.group_of(labels);
        if let Some(a) = self.groups.get_mut(&key).and_then(|g| g.alerts.get_mut(labels)) {
            a.ends_at.get_or_insert(now);
        }
    }

    fn inhibited(&self, a: &AlertOut) -> bool {
        self.inhibits.iter().any(|rule| {
            matches(&a.labels, &rule.target)
                && self.groups.values().flat_map(|g| g.alerts.values()).any(|s| {
                    s.ends_at.is_none()
                        && s.labels != a.labels
                        && matches(&s.labels, &rule.source)
                        && rule.equal.iter().all(|k| s.labels.get(k) == a.labels.get(k))
                })
        })
    }

    /// Notifications due at `now`, in group order.
    pub fn flush(&mut self, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        let keys: Vec<Labels> = self.groups.keys().cloned().collect();
        for key in keys {
            let send_resolved = self.route.send_resolved;
            if !send_resolved {
                // Resolved alerts will never be told: forget them at once.
                let g = self.groups.get_mut(&key).expect("key from the map");
                g.alerts.retain(|_, a| a.ends_at.is_none());
                if g.alerts.is_empty() {
                    self.groups.remove(&key);
                    continue;
                }
            }
            let group = &self.groups[&key];
            let visible: Vec<AlertOut> = group.alerts.values().filter(|a| !self.inhibited(a)).cloned().collect();
            let state: Vec<(Labels, bool)> = visible.iter().map(|a| (a.labels.clone(), a.ends_at.is_some())).collect();
            let firing = visible.iter().any(|a| a.ends_at.is_none());
            // Without resolved notices, only new firing alerts are news (as Alertmanager).
            let changed = if send_resolved {
                state != group.last_state
            } else {
                state.iter().any(|s| !group.last_state.contains(s))
            };
            let due = match group.last_sent {
                // A new group: wait to collect; an alert that resolved meanwhile sends nothing.
                None => now.since(group.created) >= self.route.group_wait_ms && firing,
                Some(last) if changed || (group.remind && firing) => now.since(last) >= self.route.group_interval_ms,
                Some(last) => firing && now.since(last) >= self.repeat_ms(),
            };
            let notify = due && (firing || self.route.send_resolved);
            let done = !firing && (group.last_sent.is_none() || due);
            let group = self.groups.get_mut(&key).expect("key from the map");
            if notify && !visible.is_empty() {
                out.push(Notification { group_labels: group.labels.clone(), firing, alerts: visible });
                group.last_sent = Some(now);
                group.last_state = state;
                group.remind = false;
            }
            if done && group.alerts.values().all(|a| a.ends_at.is_some()) {
                self.groups.remove(&key);
            } else if notify {
                // Resolved alerts have been told; keep only the firing ones.
                group.alerts.retain(|_, a| a.ends_at.is_none());
                group.last_state.retain(|(_, resolved)| !resolved);
            }
        }
        out
    }

    fn repeat_ms(&self) -> u64 {
        let g = self.route.group_interval_ms.max(1);
        self.route.repeat_interval_ms.div_ceil(g) * g
    }

    /// Alerts currently known (firing or awaiting their resolved notice).
    pub fn len(&self) -> usize {
        self.groups.values().map(|g| g.alerts.len()).sum()
    }

    /// Whether no alert is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_764_140_400_000);

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn near(project: &str) -> Labels {
        labels(&[("alertname", "QuotaNearLimit"), ("model", "m"), ("project", project), ("dimension", "rpd")])
    }

    #[test]
    fn a_storm_of_ten_goes_out_as_one_notification() {
        let mut p = Pipeline::new(Route::default(), vec![]);
        let mut sent = Vec::new();
        for s in 0..120u64 {
            let now = T0.plus(s * 1_000);
            if s % 5 == 0 && s < 50 {
                p.fire(near(&format!("p{s}")), Labels::new(), now);
            }
            sent.extend(p.flush(now));
        }
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 7, "those that fired within group_wait");
        // The other three join at the next group interval, in one more notification.
        let later = p.flush(T0.plus(30_000 + 300_000));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].alerts.len(), 10);
    }

    #[test]
    fn without_resolved_notices_a_shrinking_group_is_no_news() {
        let route = Route { send_resolved: false, ..Route::default() };
        let mut p = Pipeline::new(route, vec![]);
        p.fire(near("a"), Labels::new(), T0);
        p.fire(near("b"), Labels::new(), T0);
        assert_eq!(p.flush(T0.plus(30_000)).len(), 1);
        p.resolve(&near("a"), T0.plus(60_000));
        assert!(p.flush(T0.plus(400_000)).is_empty(), "b still fires, a resolved: nothing new");
        assert!(!p.is_firing(&near("a")) && p.is_firing(&near("b")), "what fires is known without a notice");
        p.fire(near("c"), Labels::new(), T0.plus(400_000));
        let sent = p.flush(T0.plus(700_000));
        assert_eq!(sent.len(), 1);
        assert!(sent[0].alerts.iter().all(|a| a.ends_at.is_none()), "no resolved alert in the payload");
        assert_eq!(sent[0].alerts.len(), 2);
        p.resolve(&near("b"), T0.plus(800_000));
        p.resolve(&near("c"), T0.plus(800_000));
        assert!(p.flush(T0.plus(1_200_000)).is_empty());
        assert!(p.is_empty(), "the group is forgotten");
    }

    #[test]
    fn an_alert_that_resolves_within_group_wait_sends_nothing() {
        let mut p = Pipeline::new(Route::default(), vec![]);
        p.fire(near("a"), Labels::new(), T0);
        p.resolve(&near("a"), T0.plus(10_000));
        assert!(p.flush(T0.plus(30_000)).is_empty());
        assert!(p.is_empty());
    }

    #[test]
    fn repeats_are_throttled_and_resolution_is_told_once() {
        let route = Route { repeat_interval_ms: 3_600_000, ..Route::default() };
        let mut p = Pipeline::new(route, vec![]);
        p.fire(near("a"), Labels::new(), T0);
        let mut sent = 0;
        for m in 0..120u64 {
            sent += p.flush(T0.plus(m * 60_000)).len();
        }
        assert_eq!(sent, 2, "first notice, then one repeat after an hour");
        p.resolve(&near("a"), T0.plus(120 * 60_000));
        let resolved = p.flush(T0.plus(121 * 60_000));
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        assert_eq!(resolved[0].alerts[0].ends_at, Some(T0.plus(120 * 60_000)));
        assert!(p.is_empty(), "forgotten after the resolved notice");
    }

    #[test]
    fn a_pool_wide_alert_mutes_per_project_ones() {
        let inhibit = Inhibit {
            source: labels(&[("alertname", "PoolExhausted")]),
            target: labels(&[("alertname", "QuotaNearLimit")]),
            equal: vec!["model".into()],
        };
        let mut p = Pipeline::new(Route { group_by: vec!["model".into()], ..Route::default() }, vec![inhibit]);
        p.fire(near("a"), Labels::new(), T0);
        p.fire(near("b"), Labels::new(), T0);
        p.fire(labels(&[("alertname", "PoolExhausted"), ("model", "m")]), Labels::new(), T0);
        let sent = p.flush(T0.plus(30_000));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 1);
        assert_eq!(sent[0].alerts[0].labels["alertname"], "PoolExhausted");
    }
}

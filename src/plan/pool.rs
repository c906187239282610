//! Shaping a scenario for one point of the grid: its traffic scaled to a rate, its pool
//! built from a number of projects.

use crate::engine::PoolEvent;
use crate::scenario::{Arrival, Scenario};

/// The peak request rate of a class (requests/s).
pub(crate) fn peak_rate(a: &Arrival) -> f64 {
    match a {
        Arrival::Constant { rate } | Arrival::Poisson { rate } | Arrival::OnOff { rate, .. } => *rate,
        Arrival::Batch { size, every_ms } => *size as f64 * 1000.0 / (*every_ms).max(1) as f64,
        Arrival::Ramp { from, to, .. } => from.max(*to),
        Arrival::Diurnal { max, .. } => *max,
        Arrival::Trace(t) => t.rows.len() as f64 * 1000.0 / t.period_ms.max(1) as f64,
    }
}

pub(crate) fn scale_arrival(a: &mut Arrival, f: f64) {
    match a {
        Arrival::Constant { rate } | Arrival::Poisson { rate } | Arrival::OnOff { rate, .. } => *rate *= f,
        Arrival::Batch { every_ms, .. } => *every_ms = ((*every_ms as f64 / f).round() as u64).max(1),
        Arrival::Ramp { from, to, .. } => {
            *from *= f;
            *to *= f;
        }
        Arrival::Diurnal { min, max, .. } => {
            *min *= f;
            *max *= f;
        }
        Arrival::Trace(t) => {
            for r in &mut t.rows {
                r.at = (r.at as f64 / f).round() as u64;
            }
            t.period_ms = ((t.period_ms as f64 / f).round() as u64).max(1);
        }
    }
}

/// The traffic's total peak rate: the sum of its classes' peaks.
pub(crate) fn total_rate(sc: &Scenario) -> f64 {
    sc.traffic.iter().map(|c| peak_rate(&c.arrival)).sum()
}

/// Scales the traffic to a total peak of `rate` requests/s.
pub(crate) fn set_rate(sc: &mut Scenario, rate: f64) -> Result<(), String> {
    let now = total_rate(sc);
    if now <= 0.0 {
        return Err(format!("{}: the traffic has no rate to scale", sc.name));
    }
    for c in &mut sc.traffic {
        scale_arrival(&mut c.arrival, rate / now);
    }
    Ok(())
}

/// Builds the pool from `n` projects, the scenario's own as templates in turn: copy `c` of a
/// project gets ids suffixed `-xc`, and a copy of every pool event that names it or its keys.
/// Events naming projects a smaller pool lacks are dropped.
pub(crate) fn set_projects(sc: &mut Scenario, n: u64) {
    let base = sc.projects.clone();
    let copies = (n as usize).div_ceil(base.len());
    let rename = |id: &str, copy: usize| if copy == 0 { id.to_owned() } else { format!("{id}-x{copy}") };
    sc.projects = (0..n as usize)
        .map(|i| {
            let mut p = base[i % base.len()].clone();
            let copy = i / base.len();
            p.id = rename(&p.id, copy);
            p.keys = p.keys.iter().map(|k| rename(k, copy)).collect();
            p
        })
        .collect();
    // Which template project each key (present or added later) belongs to.
    let mut owner: std::collections::HashMap<String, String> =
        base.iter().flat_map(|p| p.keys.iter().map(|k| (k.clone(), p.id.clone()))).collect();
    for e in &sc.events {
        if let PoolEvent::Add(k) = &e.event {
            owner.entry(k.id.clone()).or_insert_with(|| k.project.clone());
        }
    }
    let mut events = Vec::with_capacity(sc.events.len() * copies);
    for e in &sc.events {
        let project = match &e.event {
            PoolEvent::Add(k) => Some(&k.project),
            PoolEvent::Remove(k) | PoolEvent::Enable(k) | PoolEvent::Disable(k) | PoolEvent::Revoke(k) => owner.get(k),
            // Scenarios change keys only; project-level events are not copied.
            _ => None,
        };
        let Some(project) = project else { continue };
        for copy in 0..copies {
            if !sc.projects.iter().any(|p| p.id == rename(project, copy)) {
                continue;
            }
            let event = match &e.event {
                PoolEvent::Add(k) => {
                    PoolEvent::Add(crate::engine::KeySpec { id: rename(&k.id, copy), project: rename(project, copy) })
                }
                PoolEvent::Remove(k) => PoolEvent::Remove(rename(k, copy)),
                PoolEvent::Enable(k) => PoolEvent::Enable(rename(k, copy)),
                PoolEvent::Disable(k) => PoolEvent::Disable(rename(k, copy)),
                PoolEvent::Revoke(k) => PoolEvent::Revoke(rename(k, copy)),
                other => other.clone(),
            };
            events.push(crate::scenario::TimedEvent { at_ms: e.at_ms, event });
        }
    }
    sc.events = events;
}

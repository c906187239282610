//! `[replicas]`: several engine replicas in one simulated run, and how they share quota.

use super::model::{ReplicaMode, ReplicasDef, StoreSpell};
use crate::engine::pool_file::{Ctx, Table};

/// Parses `[replicas]`; `None` (with errors reported) if it does not hold together.
pub(super) fn parse(ctx: &mut Ctx, t: &Table<'_, '_>, duration: u64) -> Option<ReplicasDef> {
    t.allow(ctx, &["count", "mode", "latency", "jitter", "interval", "deadline", "outages", "slowdowns"]);
    let mut def = ReplicasDef::default();
    let mut ok = true;
    if let Some((count, span)) = t.uint(ctx, "count") {
        if !(1..=64).contains(&count) {
            ctx.error(span, "`count` must be from 1 to 64");
            ok = false;
        }
        def.count = count as u32;
    }
    if t.has("mode") {
        match t.setting::<ReplicaMode>(ctx, "mode") {
            Some(m) => def.mode = m,
            None => ok = false,
        }
    }
    for (key, slot) in
        [("latency", &mut def.latency_ms), ("jitter", &mut def.jitter_ms), ("interval", &mut def.interval_ms)]
    {
        if let Some((ms, _)) = t.duration(ctx, key) {
            *slot = ms;
        }
    }
    if let Some((ms, span)) = t.duration(ctx, "deadline") {
        if ms == 0 {
            ctx.error(span, "`deadline` must be longer than zero");
            ok = false;
        }
        def.deadline_ms = ms;
    }
    if def.interval_ms == 0 {
        let span = t.raw("interval").map_or(t.span.clone(), |v| v.span());
        ctx.error(span, "`interval` must be longer than zero");
        ok = false;
    }
    if def.jitter_ms > def.latency_ms {
        let span = t.raw("jitter").map_or(t.span.clone(), |v| v.span());
        ctx.error(span, "`jitter` cannot exceed `latency` (a round trip never takes less than zero)");
        ok = false;
    }
    for (key, slow) in [("outages", false), ("slowdowns", true)] {
        for s in t.tables(ctx, key) {
            let fields: &[&str] = if slow { &["at", "duration", "latency"] } else { &["at", "duration"] };
            s.allow(ctx, fields);
            let at = s.required(s.duration(ctx, "at"), ctx, "at");
            let length = s.required(s.duration(ctx, "duration"), ctx, "duration");
            let latency =
                if slow { s.required(s.duration(ctx, "latency"), ctx, "latency") } else { Some((0, s.span.clone())) };
            let (Some((at_ms, at_span)), Some((for_ms, _)), Some((latency_ms, _))) = (at, length, latency) else {
                ok = false;
                continue;
            };
            if at_ms > duration {
                ctx.error(at_span, format!("{} at {at_ms} ms comes after the scenario ends", s.name));
                ok = false;
            }
            let spell = StoreSpell { at_ms, for_ms, latency_ms };
            if slow {
                def.slowdowns.push(spell);
            } else {
                def.outages.push(spell);
            }
        }
    }
    def.outages.sort_by_key(|s| s.at_ms);
    def.slowdowns.sort_by_key(|s| s.at_ms);
    ok.then_some(def)
}

//! A `[[traffic]]` table that replays a log: its fields, and the classes it becomes.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use toml::de::DeValue;

use super::{grow, read, Columns, Format, Outcome, Record};
use crate::engine::pool_file::fields::{self, Ctx, Table};
use crate::engine::Priority;
use crate::scenario::model::*;

/// The fields of a `[[traffic]]` table with a `log`.
const LOG_KEYS: &[&str] =
    &["name", "log", "format", "columns", "model", "model_map", "from", "to", "clients", "scale", "priority"];

/// Largest `scale`.
const MAX_SCALE: f64 = 100.0;

/// The classes of one log table, and the window they cover (ms since the epoch, `[from, to)`);
/// each class's `start_ms` and `end_ms` count from the window's start.
pub(in crate::scenario) struct LogTraffic {
    pub window: (u64, u64),
    pub classes: Vec<TrafficClass>,
}

/// Reads the `[[traffic]]` table `t` (the `n`-th) that names a `log`.
pub(in crate::scenario) fn log_classes(
    ctx: &mut Ctx,
    t: &Table<'_, '_>,
    models: &[ModelDef],
    base: Option<&Path>,
    seed: u64,
) -> Option<LogTraffic> {
    t.allow(ctx, LOG_KEYS);
    let before = ctx.diags.len();
    let (file, span) = t.string(ctx, "log")?;
    let format = format(ctx, t)?;
    let from = calendar(ctx, t, "from");
    let to = calendar(ctx, t, "to");
    let scale = match t.float(ctx, "scale") {
        Some((s, sspan)) if !(s > 0.0 && s <= MAX_SCALE) => {
            ctx.error(sspan, format!("`scale` must be more than 0 and at most {MAX_SCALE}"));
            None
        }
        Some((s, _)) => Some(s),
        None => Some(1.0),
    };
    let priority = if t.has("priority") { t.setting::<Priority>(ctx, "priority") } else { Some(Priority::Normal) };
    let default_model = t.string(ctx, "model");
    let path = base.map_or_else(|| Path::new(&file).to_path_buf(), |b| b.join(&file));
    let log = match read(&path, &format) {
        Ok(log) => log,
        Err(e) => {
            ctx.error(span.clone(), format!("traffic log '{}': {e}", path.display()));
            return None;
        }
    };
    // Which scenario model each logged one is (None: left out).
    let mut map: BTreeMap<String, (String, fields::Span)> = BTreeMap::new();
    if let Some(m) = t.table(ctx, "model_map") {
        for k in m.keys() {
            if let Some(v) = m.string(ctx, &k) {
                map.insert(k, v);
            }
        }
    }
    let index = |name: &str| models.iter().position(|d| d.name == name);
    let mut unknown: Vec<(String, u32)> = Vec::new();
    let model_of: Vec<Option<usize>> = log
        .models
        .iter()
        .enumerate()
        .map(|(i, logged)| {
            let target = match (map.get(logged.as_str()), logged.is_empty(), &default_model) {
                (Some((to, _)), ..) if to.is_empty() => return None,
                (Some((to, s)), ..) => Some((to.clone(), Some(s.clone()))),
                (None, true, Some((m, s))) => Some((m.clone(), Some(s.clone()))),
                (None, true, None) => None,
                (None, false, _) => Some((logged.clone(), None)),
            };
            let first = log.records.iter().find(|r| r.model as usize == i).map_or(0, |r| r.line);
            match target {
                Some((name, place)) => match index(&name) {
                    Some(m) => Some(m),
                    None => {
                        match place {
                            Some(s) => ctx.error(s, format!("unknown model '{name}': not in [[models]]")),
                            None => unknown.push((name, first)),
                        }
                        None
                    }
                },
                None => {
                    unknown.push((String::new(), first));
                    None
                }
            }
        })
        .collect();
    for (name, line) in &unknown {
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let (what, help) = if name.is_empty() {
            (
                format!("traffic log '{file}' line {line}: the request names no model"),
                "give the table the model of such lines: `model = \"…\"`".to_owned(),
            )
        } else {
            (
                format!("traffic log '{file}' line {line}: model '{name}' is not in [[models]]"),
                format!(
                    "add it, or map it: `model_map = {{ \"{name}\" = \"{}\" }}` (\"\" leaves it out); models: {}",
                    names.first().copied().unwrap_or(""),
                    fields::quoted(&names)
                ),
            )
        };
        ctx.error_help(span.clone(), what, help);
    }
    let wanted: Option<Vec<u32>> = t.strings(ctx, "clients").map(|names| {
        names
            .into_iter()
            .filter_map(|(n, s)| {
                let i = log.clients.iter().position(|c| *c == n);
                if i.is_none() {
                    let known: Vec<&str> = log.clients.iter().map(String::as_str).take(20).collect();
                    ctx.error_help(
                        s,
                        format!("no client '{n}' in traffic log '{file}'"),
                        format!("its clients: {}", fields::quoted(&known)),
                    );
                }
                i.map(|i| i as u32)
            })
            .collect()
    });
    if ctx.diags.len() > before {
        return None;
    }
    let (scale, priority) = (scale?, priority?);
    let chosen: Vec<&Record> = log
        .records
        .iter()
        .filter(|r| model_of[r.model as usize].is_some())
        .filter(|r| wanted.as_ref().is_none_or(|w| w.contains(&r.client)))
        .filter(|r| from.as_ref().is_none_or(|f| r.ts >= f.0) && to.as_ref().is_none_or(|t| r.ts < t.0))
        .collect();
    let (Some(first), Some(last)) = (chosen.first(), chosen.last()) else {
        ctx.error(span, format!("traffic log '{file}' holds no request in the window and clients asked for"));
        return None;
    };
    let start = from.map_or(first.ts, |f| f.0);
    // Without `to`, the run ends a second after the last arrival.
    let end = to.map_or(last.ts + 1_000, |t| t.0);
    if end <= start {
        let s = t.raw("to").map_or(span, |v| v.span());
        ctx.error(s, "`to` must come after `from`");
        return None;
    }
    if end - start > fields::MAX_DURATION_MS {
        ctx.error(span, format!("traffic log '{file}': the window spans more than the 400 days a run may last"));
        return None;
    }
    let mut rng = Pcg64Mcg::seed_from_u64(crate::sim::stream_seed(seed, 900));
    let grown = grow(&chosen, start, end, scale, rng.random());
    let name = t.string(ctx, "name").map(|(n, _)| format!("{n}:"));
    Some(LogTraffic {
        window: (start, end),
        classes: split(&log, &grown, &model_of, models, start, end, &mut rng)
            .into_iter()
            .map(|((client, model), rows)| TrafficClass {
                name: format!(
                    "{}{}/{}",
                    name.as_deref().unwrap_or(""),
                    log.clients[client as usize],
                    models[model].name
                ),
                arrival: Arrival::Trace(Trace { file: file.clone(), rows, repeat: false, period_ms: end - start }),
                prompt_tokens: Tokens::Fixed(1),
                corpus: None,
                output_tokens: Tokens::Fixed(1),
                chars_per_token: 4.0,
                model,
                priority,
                max_output_tokens: None,
                start_ms: 0,
                end_ms: end - start,
            })
            .collect(),
    })
}

/// The rows of each (client, model), in order of client and model names.
///
/// A request the gateway denied has no true token counts: its input is the gateway's
/// estimate, or else the median of its class's known inputs; its output is drawn from its
/// class's known outputs. A batch of N is N requests of a share of its tokens each.
fn split(
    log: &super::Log,
    grown: &[(u64, &Record)],
    model_of: &[Option<usize>],
    models: &[ModelDef],
    start: u64,
    end: u64,
    rng: &mut Pcg64Mcg,
) -> Vec<((u32, usize), Vec<Recorded>)> {
    let mut known: BTreeMap<(u32, usize), (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for (_, r) in grown {
        let k = (r.client, model_of[r.model as usize].unwrap_or(0));
        let e = known.entry(k).or_default();
        e.0.extend(r.input.map(|i| i / u64::from(r.batch)));
        e.1.extend(r.output.map(|o| o / u64::from(r.batch)));
    }
    for (inputs, _) in known.values_mut() {
        inputs.sort_unstable();
    }
    let mut out: BTreeMap<(u32, usize), Vec<Recorded>> = BTreeMap::new();
    for &(at, r) in grown {
        let k = (r.client, model_of[r.model as usize].unwrap_or(0));
        let (inputs, outputs) = &known[&k];
        let n = u64::from(r.batch);
        let input = match r.input.or(r.estimate) {
            Some(i) => i / n,
            None => inputs.get(inputs.len() / 2).copied().unwrap_or(0),
        };
        let output = match r.output {
            Some(o) => o / n,
            None if outputs.is_empty() => 0,
            None => outputs[rng.random_range(0..outputs.len())],
        };
        let answer = Some(Answered {
            latency_ms: r.latency_ms,
            fault: match r.outcome {
                Outcome::Failed(f) => Some(f),
                _ => None,
            },
        });
        let rows = out.entry(k).or_default();
        for _ in 0..n {
            rows.push(Recorded { at: at.min(end - 1) - start, input: input.max(1), output, answer });
        }
    }
    // Client names, then models, in order.
    let mut sorted: Vec<((u32, usize), Vec<Recorded>)> = out.into_iter().collect();
    sorted.sort_by(|a, b| {
        (&log.clients[a.0 .0 as usize], &models[a.0 .1].name)
            .cmp(&(&log.clients[b.0 .0 as usize], &models[b.0 .1].name))
    });
    sorted
}

/// `format` (and `columns`, which imply `csv`) of the table.
fn format(ctx: &mut Ctx, t: &Table<'_, '_>) -> Option<Format> {
    let named = match t.string(ctx, "format") {
        Some((f, span)) if !Format::NAMES.contains(&f.as_str()) => {
            ctx.error_help(
                span,
                format!("unknown log format '{f}'"),
                format!("expected one of {}", fields::quoted(&Format::NAMES)),
            );
            return None;
        }
        Some((f, _)) => Some(f),
        None => None,
    };
    let columns = match t.table(ctx, "columns") {
        Some(c) => {
            c.allow(ctx, &["time", "input", "output", "model", "client", "status", "latency_ms"]);
            let get = |ctx: &mut Ctx, k: &str| c.string(ctx, k).map(|(s, _)| s);
            // A mapping names what the CSV has; only `time` is needed.
            Some(Columns {
                time: c.required(get(ctx, "time"), ctx, "time")?,
                input: get(ctx, "input"),
                output: get(ctx, "output"),
                model: get(ctx, "model"),
                client: get(ctx, "client"),
                status: get(ctx, "status"),
                latency_ms: get(ctx, "latency_ms"),
            })
        }
        None => None,
    };
    Some(match (named.as_deref(), columns) {
        (None | Some("csv"), Some(c)) => Format::Csv(c),
        (Some("csv"), None) => Format::Csv(Columns::default()),
        (Some(other), Some(_)) => {
            let s = t.raw("columns").map(|v| v.span()).unwrap_or(t.span.clone());
            ctx.error(s, format!("`columns` maps a CSV; this log's format is '{other}'"));
            return None;
        }
        (None | Some("auto"), None) => Format::Auto,
        (Some("keysim"), None) => Format::Keysim,
        (Some("litellm"), None) => Format::LiteLlm,
        (Some(_), None) => Format::Otel,
    })
}

/// A calendar instant (`from`, `to`): a date-time with an offset, or without one in Pacific
/// time (the calendar Gemini's days keep).
fn calendar(ctx: &mut Ctx, t: &Table<'_, '_>, key: &str) -> Option<crate::engine::Timestamp> {
    let v = t.raw(key)?;
    let text = match v.get_ref() {
        DeValue::Datetime(d) => d.to_string(),
        DeValue::String(s) => s.to_string(),
        _ => String::new(),
    };
    match pacific(&text) {
        Some(ts) => Some(ts),
        None => {
            ctx.error(
                v.span(),
                format!("`{key}` must be a date-time such as 2026-12-01T08:00:00-08:00, or 2026-12-01 08:00 in Pacific time; found '{text}'"),
            );
            None
        }
    }
}

/// `text` as an instant: RFC 3339, or a local date-time (seconds optional) in Pacific time.
pub fn pacific(text: &str) -> Option<crate::engine::Timestamp> {
    use chrono::TimeZone;
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return u64::try_from(t.timestamp_millis()).ok().map(crate::engine::Timestamp);
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    let t = chrono_tz::America::Los_Angeles.from_local_datetime(&naive).earliest()?;
    u64::try_from(t.timestamp_millis()).ok().map(crate::engine::Timestamp)
}

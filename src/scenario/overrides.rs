//! `--set PATH=VALUE`: settings laid over a scenario file.
//!
//! Overrides are appended to the source as TOML lines, so that a problem in one shows at its
//! own line like any other, then merged into the file's tree. A repeated path takes its last
//! value. Paths reach into arrays of tables by an element's `name` (or `id`) or by its index:
//! `traffic.chat.arrival.rate=5/s`, `projects.0.tier=paid`.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The scenario's text with its overrides appended as TOML lines (the last of a repeated path),
/// and where each override stands in it, in order.
pub(super) fn source(text: &str, overrides: &[String]) -> (String, Vec<Range<usize>>) {
    let mut source = text.to_owned();
    let mut places = Vec::new();
    if overrides.is_empty() {
        return (source, places);
    }
    source.push_str("\n# --set\n");
    let split: Vec<(&str, &str)> =
        overrides.iter().map(|o| o.split_once('=').unwrap_or((o, ""))).map(|(p, v)| (p.trim(), v.trim())).collect();
    for (i, (path, value)) in split.iter().enumerate() {
        if split[i + 1..].iter().any(|(later, _)| later == path) {
            continue;
        }
        let literal = if DeValue::parse(value).is_ok() { (*value).to_owned() } else { format!("{value:?}") };
        let start = source.len();
        source.push_str(&format!("{path} = {literal}\n"));
        places.push(start..source.len());
    }
    (source, places)
}

fn shift_value(v: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = v.span();
    let inner = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        DeValue::Array(items) => DeValue::Array(items.into_iter().map(|i| shift_value(i, by)).collect()),
        other => other,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}

/// The override table with its spans moved to where its lines stand in the source.
pub(super) fn shift_table(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in t {
        let span = k.span();
        out.insert(Spanned::new(span.start + by..span.end + by, k.into_inner()), shift_value(v, by));
    }
    out
}

/// Lays `from` over `into`; returns what could not be placed, with where it stands.
pub(super) fn merge<'i>(into: &mut DeTable<'i>, from: DeTable<'i>) -> Vec<(Range<usize>, String)> {
    let mut errors = Vec::new();
    merge_table(into, from, &mut errors);
    errors
}

fn merge_table<'i>(into: &mut DeTable<'i>, from: DeTable<'i>, errors: &mut Vec<(Range<usize>, String)>) {
    for (k, v) in from {
        let existing = into.iter_mut().find(|(ek, _)| ek.get_ref() == k.get_ref()).map(|(_, ev)| ev);
        match (existing, v.into_inner()) {
            (Some(ev), DeValue::Table(t)) if matches!(ev.get_ref(), DeValue::Table(_)) => {
                if let DeValue::Table(et) = ev.get_mut() {
                    merge_table(et, t, errors);
                }
            }
            (Some(ev), DeValue::Table(t)) if matches!(ev.get_ref(), DeValue::Array(_)) => {
                if let DeValue::Array(items) = ev.get_mut() {
                    merge_into_array(k.get_ref(), items, t, errors);
                }
            }
            (Some(ev), other) => *ev = Spanned::new(k.span(), other),
            (None, other) => {
                let span = k.span();
                into.insert(k, Spanned::new(span, other));
            }
        }
    }
}

/// `traffic.chat.x = …` or `traffic.0.x = …`: each key of `from` names an element of the
/// array `name` by its `name` or `id`, or by its index.
fn merge_into_array<'i>(
    name: &str,
    items: &mut [Spanned<DeValue<'i>>],
    from: DeTable<'i>,
    errors: &mut Vec<(Range<usize>, String)>,
) {
    for (k, v) in from {
        let label = k.get_ref().to_string();
        let by_name = items.iter().position(|item| match item.get_ref() {
            DeValue::Table(t) => t.iter().any(|(ik, iv)| {
                matches!(ik.get_ref().as_ref(), "name" | "id")
                    && matches!(iv.get_ref(), DeValue::String(s) if s.as_ref() == label)
            }),
            _ => false,
        });
        let index = by_name.or_else(|| label.parse::<usize>().ok().filter(|i| *i < items.len()));
        let (Some(i), DeValue::Table(t)) = (index, v.into_inner()) else {
            errors.push((
                k.span(),
                format!(
                    "`{name}` has no element named or numbered '{label}' ({} in all: name one by its `name` or `id`, or number it from 0, as in `{name}.0.field=value`)",
                    items.len()
                ),
            ));
            continue;
        };
        match items[i].get_mut() {
            DeValue::Table(et) => merge_table(et, t, errors),
            _ => errors.push((k.span(), format!("`{name}.{label}` is not a table"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_path_takes_its_last_value() {
        let (s, places) = source("", &["engine.reserve=0.1".into(), "engine.reserve=0.2".into()]);
        assert_eq!(places.len(), 1);
        assert!(s.contains("engine.reserve = 0.2") && !s.contains("0.1"), "{s}");
    }
}

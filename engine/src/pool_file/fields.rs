//! The raw layer: typed reads from a spanned TOML tree that record every problem (unknown
//! fields, wrong types, missing fields, bad units) with its place, and never stop at the first.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diagnostic;
use super::units;

/// A byte range of the source.
pub type Span = Range<usize>;

/// The largest count a scenario may give (limits, tokens, sizes): far above any real quota,
/// low enough that sums never overflow.
pub const MAX_COUNT: u64 = 1_000_000_000_000;
/// The longest duration a scenario may give: 400 days.
pub const MAX_DURATION_MS: u64 = 400 * 86_400_000;
/// The highest rate a traffic class may have, per second.
pub const MAX_RATE: f64 = 100_000.0;

/// Collects diagnostics.
#[derive(Default)]
pub struct Ctx {
    /// The problems found so far.
    pub diags: Vec<Diagnostic>,
}

impl Ctx {
    /// Records a problem at `span`.
    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic { message: message.into(), span: Some(span), help: None });
    }

    /// Records a problem at `span` with a hint on how to fix it.
    pub fn error_help(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic { message: message.into(), span: Some(span), help: Some(help.into()) });
    }
}

/// A table being read, with the name it has in messages (`[engine]`, `[[traffic]] #2`).
pub struct Table<'a, 'i> {
    /// The table's entries.
    pub t: &'a DeTable<'i>,
    /// Where it is.
    pub span: Span,
    /// Its name in messages.
    pub name: String,
    /// Whether this is the document itself (its tables are named `[key]`).
    pub root: bool,
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An integer value, at any radix.
pub fn int_of(v: &DeValue<'_>) -> Option<i128> {
    match v {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

/// A number value (integers too).
pub fn float_of(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Float(f) => f.as_str().parse().ok(),
        DeValue::Integer(_) => int_of(v).map(|i| i as f64),
        _ => None,
    }
}

impl<'a, 'i> Table<'a, 'i> {
    /// The document's root table, named `name` in messages.
    pub fn new(t: &'a Spanned<DeTable<'i>>, name: impl Into<String>) -> Self {
        Self { t: t.get_ref(), span: t.span(), name: name.into(), root: true }
    }

    /// Reports every key not in `allowed`, suggesting the closest allowed one.
    pub fn allow(&self, ctx: &mut Ctx, allowed: &[&str]) {
        for (k, _) in self.t.iter() {
            let key = k.get_ref().as_ref();
            if allowed.contains(&key) {
                continue;
            }
            let close = allowed.iter().map(|a| (edit_distance(key, a), *a)).min().filter(|(d, _)| *d <= 2);
            let msg = format!("unknown field `{key}` in {}", self.name);
            match close {
                Some((_, a)) => ctx.error_help(k.span(), msg, format!("did you mean `{a}`?")),
                None => ctx.error_help(k.span(), msg, format!("expected one of {}", quoted(allowed))),
            }
        }
    }

    /// The value of `key`, untyped.
    pub fn raw(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.t.iter().find(|(k, _)| k.get_ref().as_ref() == key).map(|(_, v)| v)
    }

    /// The table's keys, in file order.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<(usize, String)> =
            self.t.iter().map(|(k, _)| (k.span().start, k.get_ref().as_ref().to_owned())).collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether `key` is set.
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// Reports a missing required field and passes `v` through.
    pub fn required<T>(&self, v: Option<T>, ctx: &mut Ctx, key: &str) -> Option<T> {
        if v.is_none() && !self.has(key) {
            ctx.error(self.span.clone(), format!("missing field `{key}` in {}", self.name));
        }
        v
    }

    fn typed<T>(
        &self,
        ctx: &mut Ctx,
        key: &str,
        want: &str,
        f: impl Fn(&DeValue<'i>) -> Option<T>,
    ) -> Option<(T, Span)> {
        let v = self.raw(key)?;
        match f(v.get_ref()) {
            Some(x) => Some((x, v.span())),
            None => {
                ctx.error(v.span(), format!("`{key}` in {} must be {want}, found {}", self.name, kind(v.get_ref())));
                None
            }
        }
    }

    /// A string.
    pub fn string(&self, ctx: &mut Ctx, key: &str) -> Option<(String, Span)> {
        self.typed(ctx, key, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// A boolean.
    pub fn boolean(&self, ctx: &mut Ctx, key: &str) -> Option<bool> {
        self.typed(ctx, key, "a boolean", DeValue::as_bool).map(|(b, _)| b)
    }

    /// A count: an integer from 0 to 10^12.
    pub fn uint(&self, ctx: &mut Ctx, key: &str) -> Option<(u64, Span)> {
        let (i, span) = self.typed(ctx, key, "an integer", int_of)?;
        match u64::try_from(i) {
            Ok(u) if u <= MAX_COUNT => Some((u, span)),
            Ok(_) => {
                ctx.error(span, format!("`{key}` in {} is too large (at most {MAX_COUNT})", self.name));
                None
            }
            Err(_) => {
                ctx.error(span, format!("`{key}` in {} must be zero or more, found {i}", self.name));
                None
            }
        }
    }

    /// A finite number of magnitude at most 10^12.
    pub fn float(&self, ctx: &mut Ctx, key: &str) -> Option<(f64, Span)> {
        let (x, span) = self.typed(ctx, key, "a number", float_of)?;
        if x.is_finite() && x.abs() <= MAX_COUNT as f64 {
            Some((x, span))
        } else {
            ctx.error(span, format!("`{key}` in {} must be a finite number of at most {MAX_COUNT}", self.name));
            None
        }
    }

    /// A number in `[lo, hi]`.
    pub fn fraction(&self, ctx: &mut Ctx, key: &str, lo: f64, hi: f64) -> Option<f64> {
        let (x, span) = self.float(ctx, key)?;
        if x.is_finite() && (lo..=hi).contains(&x) {
            Some(x)
        } else {
            ctx.error(span, format!("`{key}` in {} must be between {lo} and {hi}, found {x}", self.name));
            None
        }
    }

    /// A duration string (`"30s"`, `"1h30m"`), in milliseconds.
    pub fn duration(&self, ctx: &mut Ctx, key: &str) -> Option<(u64, Span)> {
        let (s, span) = self.typed(ctx, key, "a duration string such as \"30s\"", |v| v.as_str().map(str::to_owned))?;
        match units::parse_duration(&s) {
            Ok(ms) if ms > MAX_DURATION_MS => {
                ctx.error(span, format!("`{key}` in {} is longer than the 400 days a run may last", self.name));
                None
            }
            Ok(ms) => Some((ms, span)),
            Err(e) => {
                ctx.error(span, format!("`{key}` in {}: {e}", self.name));
                None
            }
        }
    }

    /// A rate: `"2/s"`, `"30/min"`, or a plain number per second.
    pub fn rate(&self, ctx: &mut Ctx, key: &str) -> Option<(f64, Span)> {
        let v = self.raw(key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => units::parse_rate(s),
            other => float_of(other)
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("expected a rate such as \"2/s\", found {}", kind(other))),
        };
        match parsed {
            Ok(r) if r > MAX_RATE => {
                ctx.error(v.span(), format!("`{key}` in {} is above {MAX_RATE} requests per second", self.name));
                None
            }
            Ok(r) => Some((r, v.span())),
            Err(e) => {
                ctx.error(v.span(), format!("`{key}` in {}: {e}", self.name));
                None
            }
        }
    }

    /// One of `options` by name.
    pub fn choice<T: Copy>(&self, ctx: &mut Ctx, key: &str, options: &[(&str, T)]) -> Option<T> {
        let (s, span) = self.string(ctx, key)?;
        match options.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Some(*t),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                ctx.error_help(
                    span,
                    format!("unknown {key} '{s}' in {}", self.name),
                    format!("expected one of {}", quoted(&names)),
                );
                None
            }
        }
    }

    /// A setting that owns its names ([`Setting`](crate::Setting)).
    pub fn setting<T: crate::Setting>(&self, ctx: &mut Ctx, key: &str) -> Option<T> {
        let options: Vec<(&str, T)> = T::ALL.iter().map(|v| (v.name(), *v)).collect();
        self.choice(ctx, key, &options)
    }

    /// A table (`[key]`, or `key = { … }`).
    pub fn table(&self, ctx: &mut Ctx, key: &str) -> Option<Table<'a, 'i>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Table(t) => {
                let name = if self.root { format!("[{key}]") } else { format!("`{key}`") };
                Some(Table { t, span: v.span(), name, root: false })
            }
            other => {
                ctx.error(v.span(), format!("`{key}` in {} must be a table, found {}", self.name, kind(other)));
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), each named `[[key]] #n` in messages.
    pub fn tables(&self, ctx: &mut Ctx, key: &str) -> Vec<Table<'a, 'i>> {
        let Some(v) = self.raw(key) else { return Vec::new() };
        let DeValue::Array(items) = v.get_ref() else {
            ctx.error(v.span(), format!("`{key}` must be an array of tables ([[{key}]]), found {}", kind(v.get_ref())));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => {
                    out.push(Table { t, span: item.span(), name: format!("[[{key}]] #{}", n + 1), root: false })
                }
                other => ctx.error(item.span(), format!("entries of `{key}` must be tables, found {}", kind(other))),
            }
        }
        out
    }

    /// An array of strings, each with its place.
    pub fn strings(&self, ctx: &mut Ctx, key: &str) -> Option<Vec<(String, Span)>> {
        let v = self.raw(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            ctx.error(
                v.span(),
                format!("`{key}` in {} must be an array of strings, found {}", self.name, kind(v.get_ref())),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) => out.push((s.to_owned(), item.span())),
                None => ctx.error(
                    item.span(),
                    format!("`{key}` in {} must hold strings, found {}", self.name, kind(item.get_ref())),
                ),
            }
        }
        Some(out)
    }
}

/// `names` as a list of `code` words, for messages.
pub fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

//! The formats a log may come in, each read into [`Record`]s.

use std::borrow::Cow;
use std::io::BufRead;

use serde::Deserialize;

use super::{Builder, LineError, Outcome, Record};
use mock_server::Fault;

/// The newest schema of the proxy's traffic log this keysim reads (the one it writes).
use keysim_proxy::traffic::SCHEMA;

/// A log's format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Told by the first line: the proxy's log, a LiteLLM payload, OpenTelemetry spans or a
    /// CSV with a header.
    #[default]
    Auto,
    /// The proxy's traffic log (`keysim load --traffic-log` writes it too).
    Keysim,
    /// LiteLLM's standard logging payload, or its spend logs, as JSON lines (or one array).
    LiteLlm,
    /// OpenTelemetry GenAI spans as JSON: OTLP exports (the collector's file exporter), one
    /// per line, or spans one per line.
    Otel,
    /// Any CSV, through a column mapping.
    Csv(Columns),
}

/// Which CSV columns hold what. Only `time` is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// Arrival: seconds (or ms) since the epoch, or a date-time (UTC unless it has an offset).
    pub time: String,
    /// Input tokens.
    pub input: Option<String>,
    /// Output tokens.
    pub output: Option<String>,
    /// The model.
    pub model: Option<String>,
    /// The client.
    pub client: Option<String>,
    /// Success or not (`success`, `ok`, `200`, `true` … or anything else).
    pub status: Option<String>,
    /// Time upstream, ms.
    pub latency_ms: Option<String>,
}

impl Default for Columns {
    /// The Azure LLM inference trace's columns.
    fn default() -> Self {
        Self {
            time: "TIMESTAMP".into(),
            input: Some("ContextTokens".into()),
            output: Some("GeneratedTokens".into()),
            model: None,
            client: None,
            status: None,
            latency_ms: None,
        }
    }
}

impl Format {
    /// Its name in files and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Keysim => "keysim",
            Self::LiteLlm => "litellm",
            Self::Otel => "otel",
            Self::Csv(_) => "csv",
        }
    }

    /// The names [`Format::name`] gives.
    pub const NAMES: [&str; 5] = ["auto", "keysim", "litellm", "otel", "csv"];

    /// The format of a log that begins with `bytes` (its first line, or for a document spread
    /// over lines, all of `bytes`).
    pub fn detect(bytes: &[u8]) -> Self {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let first = bytes.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).find(|l| !l.is_empty()).unwrap_or(b"");
        let whole = serde_json::from_slice::<serde::de::IgnoredAny>(first).is_ok();
        let seen = if whole { first } else { bytes };
        let has = |s: &str| seen.windows(s.len()).any(|w| w == s.as_bytes());
        match first.first() {
            Some(b'{' | b'[') if has("\"resourceSpans\"") || has("\"gen_ai.") => Self::Otel,
            Some(b'{') if has("\"v\"") && has("\"outcome\"") => Self::Keysim,
            Some(b'{' | b'[') => Self::LiteLlm,
            _ => Self::Csv(Columns::default()),
        }
    }
}

/// Reads `input` in `format` (not `Auto`) into `b`.
pub(super) fn read(input: &mut dyn BufRead, format: &Format, b: &mut Builder) -> Result<(), LineError> {
    match format {
        Format::Auto | Format::Keysim => json_lines(input, b, keysim),
        Format::LiteLlm => super::litellm::read(input, b),
        Format::Otel => super::otel::read(input, b),
        Format::Csv(c) => csv(input, c, b),
    }
}

/// An I/O error while reading line `n`.
fn io_error(n: usize, e: &std::io::Error) -> LineError {
    LineError { line: n, column: None, message: format!("cannot read: {e}") }
}

/// Each non-blank line of `input` through `one`, with its number, one line in memory at a time.
pub(super) fn json_lines(
    input: &mut dyn BufRead,
    b: &mut Builder,
    mut one: impl FnMut(&[u8], u32, &mut Builder) -> Result<(), LineError>,
) -> Result<(), LineError> {
    let mut buf = Vec::with_capacity(4096);
    for n in 1.. {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(io_error(n, &e)),
        }
        let line = buf.trim_ascii();
        let line = if n == 1 { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line };
        if !line.is_empty() {
            one(line, n as u32, b)?;
        }
    }
    Ok(())
}

/// A JSON document of a log: a line of JSON lines, or an entry of one document read whole.
pub(super) enum Doc<'a> {
    /// A line's text.
    Line(&'a [u8]),
    /// An entry of a document read whole.
    Entry(serde_json::Value),
}

/// Reads `input` as JSON lines, or, when its first line is not a whole JSON value (a document
/// spread over lines: pretty-printed, an array) or is `{"data": [...]}`, as one document read
/// whole: its entries (an array's items, `data`'s, or itself), each as of line 1, in order.
/// `one` takes each document with its line.
pub(super) fn json_documents(
    input: &mut dyn BufRead,
    b: &mut Builder,
    mut one: impl FnMut(Doc<'_>, u32, &mut Builder) -> Result<(), LineError>,
) -> Result<(), LineError> {
    use serde_json::Value;
    let mut head = Vec::new();
    let mut n = 0;
    loop {
        head.clear();
        n += 1;
        if input.read_until(b'\n', &mut head).map_err(|e| io_error(n as usize, &e))? == 0 {
            return Ok(());
        }
        if !head.trim_ascii().is_empty() {
            break;
        }
    }
    let first = head.trim_ascii();
    let first = first.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(first);
    if serde_json::from_slice::<Value>(first).is_ok_and(|v| !v.get("data").is_some_and(Value::is_array)) {
        one(Doc::Line(first), n, b)?;
        // Lines count on from the first.
        return json_lines(input, b, |text, m, b| one(Doc::Line(text), m + n, b));
    }
    let mut bytes = head;
    input.read_to_end(&mut bytes).map_err(|e| io_error(n as usize, &e))?;
    let entries = match serde_json::from_slice::<Value>(&bytes).map_err(|e| whole_error(&e))? {
        Value::Array(items) => items,
        Value::Object(mut o) if o.get("data").is_some_and(Value::is_array) => match o.remove("data") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        v => vec![v],
    };
    entries.into_iter().try_for_each(|v| one(Doc::Entry(v), 1, b))
}

/// A JSON error in a document read whole: its own line and column.
fn whole_error(e: &serde_json::Error) -> LineError {
    LineError { line: e.line(), column: Some(e.column()), message: json_error(1, e).message }
}

/// A JSON error at line `n`.
pub(super) fn json_error(n: u32, e: &serde_json::Error) -> LineError {
    let message = e.to_string();
    // serde's message ends in " at line 1 column C": the column is ours to report.
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    LineError { line: n as usize, column: Some(e.column()), message }
}

/// A line of the proxy's traffic log, as far as the lab reads it (later fields of v1 ignored).
#[derive(Deserialize)]
struct Line<'a> {
    v: u32,
    ts: u64,
    #[serde(borrow)]
    client: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    batch: Option<u64>,
    #[serde(default)]
    estimate: Option<u64>,
    #[serde(default)]
    input: Option<u64>,
    #[serde(default)]
    output: Option<u64>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default)]
    upstream_ms: Option<f64>,
}

/// The fault a failure's cause stands for in the lab's provider.
pub(super) fn fault(cause: &str) -> Fault {
    if cause.contains("capacity") || cause.contains("503") || cause.contains("overload") {
        Fault::Overloaded
    } else {
        Fault::Internal
    }
}

fn keysim(text: &[u8], n: u32, b: &mut Builder) -> Result<(), LineError> {
    let l: Line<'_> = serde_json::from_slice(text).map_err(|e| json_error(n, &e))?;
    let bad = |message: String| LineError { line: n as usize, column: None, message };
    if l.v == 0 || l.v > SCHEMA {
        return Err(bad(format!("schema v{} (this keysim reads v1 to v{SCHEMA}: a newer keysim wrote it?)", l.v)));
    }
    let outcome = match &*l.outcome {
        "served" => Outcome::Served,
        "denied" => Outcome::Denied,
        "breach" => Outcome::Breach,
        "failed" => Outcome::Failed(fault(l.reason.as_deref().unwrap_or(""))),
        other => return Err(bad(format!("unknown outcome '{other}' (served, denied, breach or failed)"))),
    };
    let batch = l.batch.unwrap_or(1);
    if batch == 0 || batch > 1_000 {
        return Err(bad(format!("`batch` of {batch}: a request counts as 1 to 1000")));
    }
    let (client, model) = (b.client(&l.client), b.model(&l.model));
    let latency_ms = match outcome {
        Outcome::Served => l.upstream_ms.filter(|x| x.is_finite() && *x >= 0.0).map(|x| x.round() as u64),
        _ => None,
    };
    b.push(Record {
        ts: l.ts,
        client,
        model,
        input: l.input,
        output: l.output,
        estimate: l.estimate,
        latency_ms,
        outcome,
        batch: batch as u32,
        stream: l.stream,
        line: n,
    });
    Ok(())
}

/// Milliseconds since the epoch of a time as logs write it: seconds (or ms, or ns) since the
/// epoch as a number, or a date-time ([`parse_seconds`]).
pub(crate) fn parse_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(x) = s.parse::<f64>() {
        if !(x.is_finite() && x >= 0.0) {
            return None;
        }
        // Seconds until the year 5138; then ms, then µs, then ns.
        let ms = match x {
            x if x < 1e11 => x * 1e3,
            x if x < 1e14 => x,
            x if x < 1e17 => x / 1e3,
            x => x / 1e6,
        };
        return Some(ms.round() as u64);
    }
    let secs = parse_seconds(s)?;
    (secs >= 0.0).then(|| (secs * 1e3).round() as u64)
}

/// Seconds since the epoch of a number of seconds, or of a date-time `YYYY-MM-DD HH:MM:SS`
/// (or with `T`), any fraction of a second, and an optional zone: `Z`, `±hh:mm` or `±hhmm`
/// (UTC without one) — RFC 3339 and the forms traces use (`2024-05-10 00:00:00.009930+00:00`).
pub(crate) fn parse_seconds(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(x) = s.parse::<f64>() {
        return x.is_finite().then_some(x);
    }
    let (body, offset_s) = match s.strip_suffix(['Z', 'z']) {
        Some(body) => (body, 0),
        None => zone(s),
    };
    let (main, frac) = body.split_once('.').unwrap_or((body, "0"));
    let t = chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some((t.and_utc().timestamp() - offset_s) as f64 + frac)
}

/// A date-time's zone offset (`±hh:mm`, `±hhmm` after the time), in seconds east of UTC, and
/// the text before it; no zone: the text and 0.
fn zone(s: &str) -> (&str, i64) {
    // The zone can only follow the time (`YYYY-MM-DD HH:MM:SS` is 19 characters).
    let Some(at) = s.get(19..).and_then(|tail| tail.rfind(['+', '-'])).map(|i| i + 19) else { return (s, 0) };
    let digits: String = s[at + 1..].chars().filter(|c| *c != ':').collect();
    match (digits.len(), digits.parse::<i64>()) {
        (4, Ok(hhmm)) => {
            let secs = (hhmm / 100) * 3600 + (hhmm % 100) * 60;
            (&s[..at], if s.as_bytes()[at] == b'-' { -secs } else { secs })
        }
        _ => (s, 0),
    }
}

fn csv(input: &mut dyn BufRead, c: &Columns, b: &mut Builder) -> Result<(), LineError> {
    let mut reader = ::csv::ReaderBuilder::new().trim(::csv::Trim::All).from_reader(input);
    let at = |line: usize, message: String| LineError { line, column: None, message };
    let headers = reader.headers().map_err(|e| at(1, e.to_string()))?.clone();
    let index = |name: &Option<String>| -> Result<Option<usize>, LineError> {
        let Some(name) = name else { return Ok(None) };
        headers.iter().position(|h| h == name).map(Some).ok_or_else(|| {
            at(
                1,
                format!(
                    "no column '{name}' (columns: {}); map them with `columns = {{ time = \"…\", input = \"…\" }}` \
                     or --columns time=…,input=…",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let time = index(&Some(c.time.clone()))?.unwrap_or(0);
    let [input, output, model, client, status, latency] =
        [&c.input, &c.output, &c.model, &c.client, &c.status, &c.latency_ms].map(index);
    let (input, output, model, client, status, latency) = (input?, output?, model?, client?, status?, latency?);
    let mut rec = ::csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(at(line, e.to_string())),
        }
        let line = rec.position().map_or(line, |p| p.line() as usize);
        let field = |i: usize| rec.get(i).unwrap_or("");
        let count = |i: Option<usize>, name: &Option<String>| -> Result<Option<u64>, LineError> {
            match i.map(field) {
                None | Some("") => Ok(None),
                Some(v) => {
                    v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).map(|x| Some(x as u64)).ok_or_else(
                        || at(line, format!("'{v}' in column '{}' is not a count", name.as_deref().unwrap_or(""))),
                    )
                }
            }
        };
        let ts = parse_ms(field(time))
            .ok_or_else(|| at(line, format!("'{}' in column '{}' is not a time", field(time), c.time)))?;
        let ok = status.map(field).is_none_or(|s| {
            matches!(s.to_ascii_lowercase().as_str(), "" | "success" | "succeeded" | "ok" | "200" | "true" | "served")
        });
        let (client, model) = (b.client(client.map_or("anonymous", field)), b.model(model.map_or("", field)));
        let r = Record {
            ts,
            client,
            model,
            input: count(input, &c.input)?,
            output: count(output, &c.output)?,
            estimate: None,
            latency_ms: if ok { count(latency, &c.latency_ms)? } else { None },
            outcome: if ok { Outcome::Served } else { Outcome::Failed(Fault::Internal) },
            batch: 1,
            stream: false,
            line: line as u32,
        };
        b.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form() {
        let want = 1_765_000_000_000;
        for s in ["1765000000", "1765000000.0", "1765000000000", "1765000000000000", "2025-12-06T05:46:40Z"] {
            assert_eq!(parse_ms(s), Some(want), "{s}");
        }
        assert_eq!(parse_ms("2025-12-06 05:46:40.25"), Some(want + 250));
        assert_eq!(parse_ms("2025-12-05T21:46:40-08:00"), Some(want));
        assert_eq!(parse_ms("2025-12-05 21:46:40.000-0800"), Some(want));
        // The Azure 2024 traces' form: a space, microseconds, an offset.
        assert_eq!(parse_ms("2025-12-06 05:46:40.009930+00:00"), Some(want + 10));
        assert_eq!(parse_ms("2025-12-06T07:46:40.5+02:00"), Some(want + 500));
        assert_eq!(parse_seconds("2023-11-16 18:17:03.9799600"), Some(1_700_158_623.979_96));
        for bad in ["yesterday", "2025-12-06", "2025-12-06 05:46:40.x", "2025-12-06 05:46:40+0x:00"] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_are_told_by_their_first_line() {
        assert_eq!(Format::detect(b"\n{\"v\":1,\"ts\":1,\"outcome\":\"served\"}\n"), Format::Keysim);
        assert_eq!(Format::detect(b"{\"resourceSpans\":[]}"), Format::Otel);
        assert_eq!(Format::detect(b"{\"id\":\"x\",\"startTime\":1.5,\"model\":\"m\"}"), Format::LiteLlm);
        assert!(matches!(Format::detect(b"TIMESTAMP,ContextTokens\n"), Format::Csv(_)));
        // A document spread over lines is told by all of it; a byte-order mark is skipped.
        assert_eq!(Format::detect(b"{\n  \"resourceSpans\": []\n}\n"), Format::Otel);
        assert_eq!(Format::detect(b"\xEF\xBB\xBF{\"v\":1,\"outcome\":\"served\"}\n"), Format::Keysim);
    }
}

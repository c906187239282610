//! Human units in scenario files: durations (`"250ms"`, `"1h30m"`), rates (`"2/s"`,
//! `"30/min"`) and comparisons (`">= 0.99"`).

/// Parses a duration such as `"250ms"`, `"30s"`, `"2h"`, `"1h30m"` or `"7d"` into
/// milliseconds. Fractions are allowed (`"1.5s"`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number in duration '{s}'"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| format!("bad number in duration '{s}'"))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let ms = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "" => return Err(format!("duration '{s}' needs a unit (ms, s, m, h, d)")),
            u => return Err(format!("unknown unit '{u}' in duration '{s}' (use ms, s, m, h, d)")),
        };
        total += value * ms;
        rest = &rest[unit_len..];
    }
    Ok(total.round() as u64)
}

/// Parses a rate such as `"2/s"`, `"30/min"`, `"100/h"` or `"1000/d"` into requests per
/// second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = s.split_once('/').ok_or_else(|| format!("rate '{s}' must look like \"2/s\" or \"30/min\""))?;
    let n: f64 = n.trim().parse().map_err(|_| format!("bad number in rate '{s}'"))?;
    let secs = match per.trim() {
        "s" => 1.0,
        "min" | "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        u => return Err(format!("unknown unit '{u}' in rate '{s}' (use s, min, h, d)")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("rate '{s}' must be a non-negative number per unit"));
    }
    Ok(n / secs)
}

/// A comparison operator of an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Cmp {
    /// Whether `actual` satisfies `actual <op> limit`.
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Cmp::Eq => (actual - limit).abs() <= 1e-12 * limit.abs().max(1.0),
            Cmp::Le => actual <= limit,
            Cmp::Lt => actual < limit,
            Cmp::Ge => actual >= limit,
            Cmp::Gt => actual > limit,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
        }
    }
}

/// Parses `">= 0.99"`, `"< 30s"` (durations allowed, in milliseconds) or `"0"`.
pub fn parse_comparison(s: &str) -> Result<(Cmp, f64), String> {
    let s = s.trim();
    let (cmp, rest) =
        [("==", Cmp::Eq), ("<=", Cmp::Le), (">=", Cmp::Ge), ("<", Cmp::Lt), (">", Cmp::Gt), ("=", Cmp::Eq)]
            .iter()
            .find_map(|(p, c)| s.strip_prefix(p).map(|r| (*c, r)))
            .unwrap_or((Cmp::Eq, s));
    let rest = rest.trim();
    if let Ok(v) = rest.parse::<f64>() {
        return Ok((cmp, v));
    }
    if let Some(pct) = rest.strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()) {
        return Ok((cmp, pct / 100.0));
    }
    parse_duration(rest)
        .map(|ms| (cmp, ms as f64))
        .map_err(|_| format!("expected a comparison such as \">= 0.99\" or \"<= 30s\", found '{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
        assert_eq!(parse_duration("30d"), Ok(2_592_000_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2/s"), Ok(2.0));
        assert_eq!(parse_rate("30/min"), Ok(0.5));
        assert!(parse_rate("2").is_err());
        assert!(parse_rate("-1/s").is_err());
    }

    #[test]
    fn comparisons() {
        assert_eq!(parse_comparison(">= 0.99"), Ok((Cmp::Ge, 0.99)));
        assert_eq!(parse_comparison("0"), Ok((Cmp::Eq, 0.0)));
        assert_eq!(parse_comparison("<= 30s"), Ok((Cmp::Le, 30_000.0)));
        assert_eq!(parse_comparison("> 95%"), Ok((Cmp::Gt, 0.95)));
        assert!(parse_comparison("about 3").is_err());
    }
}

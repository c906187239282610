//! Time as the engine sees it: milliseconds since the Unix epoch, always handed in by the
//! caller, and the Pacific calendar of daily quotas.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

/// Milliseconds in one minute, the span of RPM and TPM windows.
pub const MINUTE_MS: u64 = 60_000;

/// An instant: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// This instant plus `ms` milliseconds (saturating).
    pub const fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (zero if `earlier` is later).
    pub const fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// RFC 3339 form in UTC, for reports.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0 as i64)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| format!("{}ms", self.0))
    }
}

/// The next midnight in America/Los_Angeles strictly after `t`: when daily quotas reset.
pub fn next_pacific_midnight(t: Timestamp) -> Timestamp {
    let Some(utc) = DateTime::<Utc>::from_timestamp_millis(t.0 as i64) else {
        return Timestamp(u64::MAX);
    };
    let date = utc.with_timezone(&Los_Angeles).date_naive();
    let next = date
        .checked_add_days(Days::new(1))
        .map(|d| d.and_time(NaiveTime::MIN))
        .and_then(|m| Los_Angeles.from_local_datetime(&m).earliest());
    match next {
        Some(m) => Timestamp(m.with_timezone(&Utc).timestamp_millis() as u64),
        None => Timestamp(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp(DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64)
    }

    #[test]
    fn resets_follow_pacific_time_and_dst() {
        assert_eq!(next_pacific_midnight(at("2026-11-25T23:59:59-08:00")), at("2026-11-26T00:00:00-08:00"));
        assert_eq!(next_pacific_midnight(at("2026-03-08T01:00:00-08:00")), at("2026-03-09T00:00:00-07:00"));
        let fall = at("2026-11-01T00:00:00-07:00");
        assert_eq!(next_pacific_midnight(fall).since(fall), 25 * 3_600_000);
        let spring = at("2026-03-08T00:00:00-08:00");
        assert_eq!(next_pacific_midnight(spring).since(spring), 23 * 3_600_000);
    }
}

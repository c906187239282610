//! The calendar of Gemini's daily quotas: days start at midnight America/Los_Angeles
//! (DST-aware), whatever the caller's zone.

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

/// Milliseconds since the Unix epoch of the first Pacific midnight strictly after `ms`.
pub fn next_midnight_ms(ms: u64) -> u64 {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms as i64).expect("timestamp within chrono's range");
    let local_date = utc.with_timezone(&Los_Angeles).date_naive();
    let tomorrow = local_date.checked_add_days(Days::new(1)).expect("date within range");
    let midnight = tomorrow.and_time(NaiveTime::MIN);
    // Midnight exists on every DST transition day in Los Angeles (changes happen at 02:00).
    let start = Los_Angeles.from_local_datetime(&midnight).earliest().expect("midnight exists in America/Los_Angeles");
    start.with_timezone(&Utc).timestamp_millis() as u64
}

/// The Pacific calendar day of `ms`, as days since 1970-01-01 in that zone.
pub fn day_index(ms: u64) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms as i64).expect("timestamp within chrono's range");
    let date = utc.with_timezone(&Los_Angeles).date_naive();
    date.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    #[test]
    fn midnight_in_winter_is_08_utc() {
        assert_eq!(next_midnight_ms(ms("2026-11-25T23:00:00-08:00")), ms("2026-11-26T08:00:00Z"));
    }

    #[test]
    fn midnight_in_summer_is_07_utc() {
        assert_eq!(next_midnight_ms(ms("2026-07-04T12:00:00-07:00")), ms("2026-07-05T07:00:00Z"));
    }

    #[test]
    fn the_day_dst_ends_has_25_hours() {
        // 2026-11-01: clocks fall back at 02:00 PDT.
        let start = ms("2026-11-01T00:00:00-07:00");
        let end = next_midnight_ms(start);
        assert_eq!(end - start, 25 * 3_600_000);
    }

    #[test]
    fn exactly_midnight_moves_to_the_next_day() {
        let m = ms("2026-11-26T00:00:00-08:00");
        assert_eq!(next_midnight_ms(m), m + 24 * 3_600_000);
        assert_eq!(day_index(m), day_index(m - 1) + 1);
    }
}

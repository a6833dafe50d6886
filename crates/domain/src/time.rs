//! Times as the guard writes them: RFC 3339 in UTC, to the second or the
//! millisecond (ASFF's timestamps, the reports'). Plain std, at the bottom
//! of the crate: records, grants and findings all write times.

/// Seconds since the epoch as ASFF's timestamps (RFC 3339, UTC).
pub fn iso8601(secs: u64) -> String {
    iso8601_ms(secs.saturating_mul(1000))
}

/// `2026-12-01T01:34:37.123Z`: milliseconds since the epoch, as ASFF and
/// the reports write times.
pub fn iso8601_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

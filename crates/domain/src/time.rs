//! Times as the guard writes them: RFC 3339 in UTC, to the second or the
//! millisecond (ASFF's timestamps, the reports'). Plain std, at the bottom
//! of the crate: records, grants and findings all write times.

/// Seconds since the epoch as ASFF's timestamps (RFC 3339, UTC).
pub fn iso8601(secs: u64) -> String {
    iso8601_ms(secs.saturating_mul(1000))
}

/// Seconds since the epoch of an RFC 3339 time in UTC as CloudTrail writes
/// it (`2020-07-10T23:06:42Z`, fractions of a second ignored); `None` for
/// anything else.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if d.next().is_some()
        || t.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloudtrail_time_reads_back_as_written() {
        for secs in [0, 1_594_422_402, 1_800_000_000, 1_796_281_444] {
            assert_eq!(
                parse_iso8601(&iso8601(secs).replace(".000", "")),
                Some(secs)
            );
            assert_eq!(parse_iso8601(&iso8601(secs)), Some(secs));
        }
        assert_eq!(parse_iso8601("2020-07-10T23:06:42Z"), Some(1_594_422_402));
        for bad in [
            "2020-07-10 23:06:42Z",
            "2020-13-10T23:06:42Z",
            "2020-07-10T23:06:42",
            "x",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}

//! Validators and cleaning for values that come from outside (events,
//! environment, EC2's answers): ids, regions, ARNs, free text. Shared by
//! `config` and `event`, so neither depends on the other for them.

/// Untrusted text made safe to log and to show: control characters become
/// spaces, and anything past `max` characters is cut with a marker.
pub fn clean(s: &str, max: usize) -> String {
    // Almost all event text is short and clean: copy it as it is.
    if s.len() <= max && !s.chars().any(|c| breaks_line(c) || is_format(c)) {
        return s.to_string();
    }
    let mut out: String = s
        .chars()
        .filter(|&c| !is_format(c))
        .take(max)
        .map(|c| if breaks_line(c) { ' ' } else { c })
        .collect();
    if s.chars().filter(|&c| !is_format(c)).nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Control characters and the line and paragraph separators: each becomes a
/// space, so a value cannot start a new line of a log or a message.
fn breaks_line(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Unicode's format characters (general category Cf): bidirectional
/// overrides and isolates, zero-width spaces and joiners, soft hyphens, tag
/// characters. They draw nothing, and can make `i-0abc` display as another id
/// or reorder what a person reads: they are removed. The ranges are Unicode
/// 15's Cf list, which the standard library does not expose.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

/// `i-` and 8 or 17 lowercase hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Region names as AWS writes them: `us-east-1`, `us-gov-west-1`, `eu-central-2`.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The ARN partition of a region: `aws-cn` for China, `aws-us-gov` for
/// GovCloud, `aws` elsewhere.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `ami-` and 8 or 17 hex digits.
pub fn is_image_id(value: &str) -> bool {
    value.strip_prefix("ami-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The region of an SNS topic ARN, or `None` when `arn` is not one.
/// Notifications are published in the topic's region, whatever the event's.
pub fn sns_topic_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "sns", region, account, name]
            if partition.starts_with("aws")
                && is_region(region)
                && is_account_id(account)
                && !name.is_empty()
                && name.len() <= 256 =>
        {
            Some(region)
        }
        _ => None,
    }
}

/// Seconds since the epoch of a UTC time written `2026-11-29T06:00:00Z` (or
/// a date, `2026-11-29`, meaning its midnight).
pub fn utc_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some()
        || !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let (hh, mm, ss) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut t = t.split(':');
            let v: (u64, u64, u64) = (
                t.next()?.parse().ok()?,
                t.next()?.parse().ok()?,
                t.next()?.split('.').next()?.parse().ok()?,
            );
            if t.next().is_some() || v.0 > 23 || v.1 > 59 || v.2 > 60 {
                return None;
            }
            v
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `lt-` and 17 lowercase hex digits.
pub fn is_launch_template_id(s: &str) -> bool {
    s.strip_prefix("lt-").is_some_and(|hex| {
        hex.len() == 17
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_cannot_hide_reorder_or_break_a_line() {
        // A right-to-left override makes "i-0abc\u{202E}cba" read backwards;
        // zero-width characters make two ids look alike.
        assert_eq!(clean("role/\u{202E}nimda\u{202C}", 64), "role/nimda");
        assert_eq!(clean("a\u{200B}b\u{2060}c\u{FEFF}d\u{E0041}", 64), "abcd");
        assert_eq!(clean("a\u{2066}b\u{2069}\u{00AD}c", 64), "abc");
        // Separators become spaces, as newlines do.
        assert_eq!(
            clean("one\u{2028}two\u{2029}three\nfour", 64),
            "one two three four"
        );
        // Printable text beyond ASCII stays, and the cut counts what stays.
        assert_eq!(clean("café 東京", 64), "café 東京");
        assert_eq!(clean("\u{200B}\u{200B}abc", 2), "ab…");
        assert_eq!(clean("\u{200B}\u{200B}ab", 2), "ab");
    }

    #[test]
    fn utc_times_are_read_to_the_second() {
        assert_eq!(utc_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(utc_seconds("2026-11-29T06:00:00Z"), Some(1_795_932_000));
        assert_eq!(utc_seconds("2026-11-29"), Some(1_795_910_400));
        assert_eq!(utc_seconds("2024-02-29T23:59:59.5Z"), Some(1_709_251_199));
        for bad in [
            "2026-13-01",
            "2026-11-29T06:00:00",
            "yesterday",
            "2026-11-29T25:00:00Z",
        ] {
            assert_eq!(utc_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn validators() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-12345678"));
        assert!(!is_instance_id("i-0123456789ABCDEF0"));
        assert!(!is_instance_id("i-123"));
        assert!(
            is_region("us-east-1") && is_region("us-gov-west-1") && is_region("ap-southeast-4")
        );
        assert!(!is_region("us-east") && !is_region("US-EAST-1") && !is_region("x"));
        assert!(is_account_id("111122223333") && !is_account_id("11112222333a"));
    }

    #[test]
    fn topic_region_is_read_from_the_arn() {
        assert_eq!(
            sns_topic_region("arn:aws:sns:ap-south-1:123456789012:t"),
            Some("ap-south-1")
        );
        assert_eq!(
            sns_topic_region("arn:aws-us-gov:sns:us-gov-west-1:123456789012:t"),
            Some("us-gov-west-1")
        );
        assert_eq!(sns_topic_region("arn:aws:sns:ap-south-1:12345:t"), None);
        assert_eq!(sns_topic_region("arn:aws:sns:../x:123456789012:t"), None);
    }
}

//! Points in time given on the command line: RFC 3339 or Unix epoch seconds / milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Epoch numbers at or above this are milliseconds (as seconds it would be the year 5138).
const MILLIS_FROM: f64 = 100_000_000_000.0;

/// Parses a point in time: RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`;
/// a space may replace the `T`), or a Unix epoch time in seconds (`1714564800`, `1714564800.25`)
/// or milliseconds (`1714564800250`: any number of 100 000 000 000 or more).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use kinesis_examples::timestamp::parse_timestamp;
///
/// let at = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
/// assert_eq!(parse_timestamp("2024-05-01T12:00:00Z"), Ok(at));
/// assert_eq!(parse_timestamp("2024-05-01T14:00:00+02:00"), Ok(at));
/// assert_eq!(parse_timestamp("1714564800"), Ok(at));
/// assert_eq!(parse_timestamp("1714564800000"), Ok(at));
/// assert!(parse_timestamp("yesterday").unwrap_err().contains("\"yesterday\""));
/// ```
pub fn parse_timestamp(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    let invalid = |why: &str| {
        format!(
            "invalid timestamp {text:?}: {why} (examples: 2024-05-01T12:00:00Z, \
             2024-05-01T14:00:00.5+02:00, 1714564800, 1714564800000)"
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let value: f64 = text.parse().map_err(|_| invalid("not a number"))?;
        let seconds = if value >= MILLIS_FROM {
            value / 1000.0
        } else {
            value
        };
        let offset = Duration::try_from_secs_f64(seconds).map_err(|_| invalid("out of range"))?;
        return UNIX_EPOCH
            .checked_add(offset)
            .ok_or_else(|| invalid("out of range"));
    }
    let seconds = rfc3339_seconds(text).map_err(&invalid)?;
    let (whole, nanos) = (seconds.0, seconds.1);
    let at = if whole >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(whole as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(whole.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    at.ok_or_else(|| invalid("out of range"))
}

/// RFC 3339 to (seconds since the epoch, nanoseconds).
fn rfc3339_seconds(text: &str) -> Result<(i64, u32), &'static str> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let part = text
            .get(range)
            .ok_or("not RFC 3339 nor a number of epoch seconds")?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not RFC 3339 nor a number of epoch seconds");
        }
        part.parse().map_err(|_| "not RFC 3339")
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err("not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)) nor epoch seconds");
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("empty fraction of a second");
        }
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().map_err(|_| "bad fraction")? * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err("no time zone (Z or ±HH:MM)"),
            };
            let zone = &rest[1..];
            if zone.len() != 5 || zone.as_bytes()[2] != b':' {
                return Err("bad time zone offset (expected ±HH:MM)");
            }
            let (h, m) = (&zone[..2], &zone[3..]);
            if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
                return Err("bad time zone offset (expected ±HH:MM)");
            }
            let (h, m): (i64, i64) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
            if h > 23 || m > 59 {
                return Err("bad time zone offset");
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return Err("no such date");
    }
    // RFC 3339 allows a leap second (60); it is read as the next second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + hour * 3600 + minute * 60 + second;
    Ok((local - offset_seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A point in time as RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:00:00.250Z`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use kinesis_examples::timestamp::{format_rfc3339, parse_timestamp};
///
/// let at = UNIX_EPOCH + Duration::from_millis(1_714_564_800_250);
/// assert_eq!(format_rfc3339(at), "2024-05-01T12:00:00.250Z");
/// assert_eq!(parse_timestamp(&format_rfc3339(at)), Ok(at));
/// ```
pub fn format_rfc3339(at: SystemTime) -> String {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (days, rest) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn rfc3339_forms_and_epoch_numbers() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(UNIX_EPOCH));
        assert_eq!(
            parse_timestamp("2024-02-29 23:59:59.5z"),
            Ok(at(1_709_251_199_500))
        );
        assert_eq!(
            parse_timestamp("2024-03-01T01:29:59.500+01:30"),
            Ok(at(1_709_251_199_500))
        );
        assert_eq!(
            parse_timestamp("2024-02-29T18:59:59.5-05:00"),
            Ok(at(1_709_251_199_500))
        );
        assert_eq!(
            parse_timestamp("2000-01-01T00:00:00.123456789Z"),
            Ok(UNIX_EPOCH + Duration::new(946_684_800, 123_456_789))
        );
        assert_eq!(parse_timestamp("1709251199.5"), Ok(at(1_709_251_199_500)));
        assert_eq!(parse_timestamp("1709251199500"), Ok(at(1_709_251_199_500)));
        assert_eq!(parse_timestamp(" 0 "), Ok(UNIX_EPOCH));
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        for bad in [
            "",
            "soon",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00.Z",
            "1.2.3",
            "-5",
        ] {
            let error = parse_timestamp(bad).unwrap_err();
            assert!(
                error.starts_with(&format!("invalid timestamp {:?}", bad.trim())),
                "{error}"
            );
        }
    }

    #[test]
    fn formatting_round_trips() {
        for millis in [0, 951_782_400_000, 1_709_251_199_500, 4_102_444_800_001] {
            assert_eq!(parse_timestamp(&format_rfc3339(at(millis))), Ok(at(millis)));
        }
    }
}

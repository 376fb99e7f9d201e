//! Timestamp parsing: RFC 3339 / ISO 8601 text and epoch numbers, to UTC microseconds.
//!
//! The common shape (`2026-01-02T03:04:05.123Z`) is parsed by hand because it is on
//! the ingest hot path; anything else falls back to chrono.

/// Microseconds per second.
pub const MICROS: i64 = 1_000_000;
/// Microseconds per day.
pub const DAY_MICROS: i64 = 86_400 * MICROS;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of a day number.
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`
/// (no offset means UTC) to microseconds since the epoch.
pub fn parse_text(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return fallback(s);
    }
    let y = digits(&b[0..4])? as i64;
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    let day = days_from_civil(y, mo, d);
    if b.len() == 10 {
        return Some(day * DAY_MICROS);
    }
    if b.len() < 19
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return fallback(s);
    }
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut micros = 0i64;
    let mut i = 19;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 3600 + om * 60) as i64;
            if *sign == b'-' { -o } else { o }
        }
        _ => return fallback(s),
    };
    let secs = day * 86_400 + (h * 3600 + mi * 60 + sec.min(59)) as i64 - offset_secs;
    Some(secs * MICROS + micros)
}

fn fallback(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc2822(s) {
        return Some(t.timestamp_micros());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    None
}

/// Interprets an epoch number: magnitudes pick the unit (seconds below 1e11,
/// milliseconds below 1e14, microseconds below 1e17, else nanoseconds), the way
/// event pipelines commonly disambiguate.
///
/// Seconds are read right from 1970 to the year 5138. Milliseconds, micro- and
/// nanoseconds are read right from 1973-03-03T09:46:40Z on (where their values
/// reach the next unit's threshold); an earlier instant in one of those units
/// looks like the next larger unit and lands 1,000 times further from 1970.
/// Validation then rejects nearly all of them as in the future: only values
/// within the first 20 days of 1970 (below about 1.8e9 ms, 1.8e12 µs or
/// 1.8e15 ns) land on a past date and pass unnoticed. Data from before 1973
/// should therefore give its timestamps as text (RFC 3339) or epoch seconds.
pub fn parse_epoch(text: &str) -> Option<i64> {
    if let Ok(i) = text.parse::<i64>() {
        let a = i.unsigned_abs();
        return Some(if a < 100_000_000_000 {
            i.checked_mul(MICROS)?
        } else if a < 100_000_000_000_000 {
            i * 1000
        } else if a < 100_000_000_000_000_000 {
            i
        } else {
            i / 1000
        });
    }
    let f: f64 = text.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let a = f.abs();
    let micros = if a < 1e11 {
        f * 1e6
    } else if a < 1e14 {
        f * 1e3
    } else if a < 1e17 {
        f
    } else {
        f / 1e3
    };
    (micros.abs() < 9.0e18).then(|| micros.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for day in [-1000, 0, 1, 10_957, 20_454, 20_819, 100_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(20_454), "2026-01-01");
    }

    #[test]
    fn parses_common_shapes() {
        let base = 20_454 * DAY_MICROS; // 2026-01-01
        assert_eq!(parse_text("2026-01-01"), Some(base));
        assert_eq!(parse_text("2026-01-01T00:00:01Z"), Some(base + MICROS));
        assert_eq!(parse_text("2026-01-01 00:00:01"), Some(base + MICROS));
        assert_eq!(parse_text("2026-01-01T00:00:00.5Z"), Some(base + 500_000));
        assert_eq!(
            parse_text("2026-01-01T00:00:00.1234567Z"),
            Some(base + 123_456)
        );
        assert_eq!(parse_text("2026-01-01T09:00:00+09:00"), Some(base));
        assert_eq!(parse_text("2025-12-31T19:00:00-0500"), Some(base));
        assert_eq!(parse_text("Thu, 01 Jan 2026 00:00:00 +0000"), Some(base));
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+99:00",
        ] {
            assert_eq!(parse_text(s), None, "{s}");
        }
    }

    #[test]
    fn epoch_units_by_magnitude() {
        assert_eq!(parse_epoch("1767225600"), Some(1_767_225_600 * MICROS));
        assert_eq!(parse_epoch("1767225600000"), Some(1_767_225_600 * MICROS));
        assert_eq!(
            parse_epoch("1767225600000000"),
            Some(1_767_225_600 * MICROS)
        );
        assert_eq!(
            parse_epoch("1767225600.5"),
            Some(1_767_225_600 * MICROS + 500_000)
        );
        assert_eq!(parse_epoch("abc"), None);
    }

    #[test]
    fn epoch_units_before_2000() {
        // 1997-03-04T05:06:07Z in every unit.
        let t = 857_451_967 * MICROS;
        for text in [
            "857451967",
            "857451967000",
            "857451967000000",
            "857451967000000000",
        ] {
            assert_eq!(parse_epoch(text), Some(t), "{text}");
        }
        // Seconds are right from 1970 on.
        assert_eq!(parse_epoch("0"), Some(0));
        assert_eq!(parse_epoch("86400"), Some(DAY_MICROS));
        // The smallest millisecond value read as milliseconds: 1973-03-03T09:46:40Z.
        assert_eq!(parse_epoch("100000000000"), Some(100_000_000 * MICROS),);
        assert_eq!(date_string(100_000_000 / 86_400), "1973-03-03");
        // Just below, milliseconds look like seconds (the documented ambiguity):
        // 1973-03-03 in ms lands in 5138, which validation rejects as future.
        assert_eq!(parse_epoch("99999999999"), Some(99_999_999_999 * MICROS));
        // And a millisecond value from the first days of 1970 lands in the past.
        assert_eq!(parse_epoch("1000000000"), Some(1_000_000_000 * MICROS));
    }
}

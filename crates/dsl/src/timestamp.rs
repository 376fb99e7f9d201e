//! UTC date literals (`first_seen >= "2024-01-31"`) to microseconds and back.
//!
//! Hand-written (Howard Hinnant's civil-date algorithms) because the crate may
//! depend only on the DataFusion expression crates, and the language only needs
//! ISO dates in UTC.

/// Microseconds in a day.
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DD`, optionally followed by `THH:MM[:SS]` (or a space instead
/// of `T`) and an optional `Z`, as UTC microseconds since the epoch.
pub(crate) fn parse_utc(text: &str) -> Option<i64> {
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let y = num(parts.next()?, 4)?;
    let m = num(parts.next()?, 2)?;
    let d = num(parts.next()?, 2)?;
    if parts.next().is_some() || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut seconds = 0;
    if let Some(time) = time {
        let mut parts = time.split(':');
        let h = num(parts.next()?, 2)?;
        let min = num(parts.next()?, 2)?;
        let s = parts.next().map_or(Some(0), |s| num(s, 2))?;
        if parts.next().is_some() || h > 23 || min > 59 || s > 59 {
            return None;
        }
        seconds = h * 3600 + min * 60 + s;
    }
    Some(days_from_civil(y, m, d) * MICROS_PER_DAY + seconds * 1_000_000)
}

/// Formats UTC microseconds as `YYYY-MM-DDTHH:MM:SSZ` (with `.ffffff` when the
/// value is not a whole second).
pub(crate) fn format_utc(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1_000_000;
    let frac = rest % 1_000_000;
    let (h, min, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{frac:06}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_utc("1970-01-01"), Some(0));
        assert_eq!(
            parse_utc("2024-02-29T12:30:00Z"),
            Some(1_709_209_800_000_000)
        );
        assert_eq!(format_utc(1_709_209_800_000_000), "2024-02-29T12:30:00Z");
        assert_eq!(parse_utc("2023-02-29"), None);
        assert_eq!(parse_utc("2024-1-01"), None);
        assert_eq!(
            format_utc(parse_utc("1969-12-31 23:59:59").unwrap()),
            "1969-12-31T23:59:59Z"
        );
    }
}

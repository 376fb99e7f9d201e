//! Calendar periods (day, ISO week, month) in a time zone, and the fast mapping
//! of UTC microsecond timestamps to period numbers used by every per-user pass.

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;

use crate::{EngineError, Result};

/// Microseconds per day.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// A calendar period.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A calendar day.
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
}

impl std::str::FromStr for Period {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "day" | "daily" | "d" => Ok(Self::Day),
            "week" | "weekly" | "w" => Ok(Self::Week),
            "month" | "monthly" | "m" => Ok(Self::Month),
            _ => Err(EngineError::BadRequest(format!(
                "unknown period `{s}`; expected day, week or month"
            ))),
        }
    }
}

/// Local days `first_day..=last_day` in a zone, with their UTC starts, and the
/// periods they fall in. Serialised as what built it (period, zone, time
/// range), rebuilt on decoding.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "CalendarSpec", try_from = "CalendarSpec")]
pub struct Calendar {
    /// The UTC range it was built for.
    range: (i64, i64),
    /// The zone.
    pub tz: Tz,
    /// The period kind.
    pub period: Period,
    /// First local day covered.
    pub first_day: NaiveDate,
    /// UTC microseconds of the start of each local day, plus one past the last.
    day_starts: Vec<i64>,
    /// Period number of each local day.
    day_period: Vec<u32>,
    /// Local start date of each period, plus the start of the one after the last.
    period_starts: Vec<NaiveDate>,
    /// Every local day is exactly 24 hours (UTC): a division finds the day.
    uniform_days: bool,
}

fn local_midnight_utc(tz: Tz, d: NaiveDate) -> i64 {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A zone may skip midnight (DST at 00:00): take the earliest valid instant.
    let mut t = naive;
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp_micros();
        }
        t += chrono::Duration::minutes(30);
    }
    tz.from_utc_datetime(&naive).timestamp_micros()
}

/// The period that contains a local date: its start date.
pub fn period_start(period: Period, d: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => d,
        Period::Week => d - chrono::Duration::days(d.weekday().num_days_from_monday() as i64),
        Period::Month => d.with_day(1).expect("day 1 exists"),
    }
}

fn next_period(period: Period, d: NaiveDate) -> NaiveDate {
    match period {
        Period::Day => d + chrono::Duration::days(1),
        Period::Week => d + chrono::Duration::days(7),
        Period::Month => {
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).expect("valid month")
        }
    }
}

/// What a [`Calendar`] is built from: its serialised form.
#[derive(serde::Serialize, serde::Deserialize)]
struct CalendarSpec {
    period: Period,
    tz: String,
    min_ts: i64,
    max_ts: i64,
}

impl From<Calendar> for CalendarSpec {
    fn from(c: Calendar) -> Self {
        Self {
            period: c.period,
            tz: c.tz.name().to_string(),
            min_ts: c.range.0,
            max_ts: c.range.1,
        }
    }
}

impl TryFrom<CalendarSpec> for Calendar {
    type Error = EngineError;
    fn try_from(s: CalendarSpec) -> Result<Self> {
        Calendar::new(s.period, parse_tz(&s.tz)?, s.min_ts, s.max_ts)
    }
}

impl Calendar {
    /// Covers every period touching `[min_ts, max_ts]` (UTC microseconds).
    pub fn new(period: Period, tz: Tz, min_ts: i64, max_ts: i64) -> Result<Self> {
        if max_ts < min_ts {
            return Err(EngineError::BadRequest("empty time range".into()));
        }
        let local = |t: i64| {
            tz.timestamp_micros(t)
                .single()
                .map(|d| d.date_naive())
                .ok_or_else(|| EngineError::BadRequest(format!("timestamp {t} out of range")))
        };
        let first_period = period_start(period, local(min_ts)?);
        let last_date = local(max_ts)?;
        let mut period_starts = vec![first_period];
        while *period_starts.last().expect("non-empty") <= last_date {
            let next = next_period(period, *period_starts.last().expect("non-empty"));
            period_starts.push(next);
        }
        let end = *period_starts.last().expect("non-empty");
        let n_days = (end - first_period).num_days() as usize;
        if n_days > 200_000 {
            return Err(EngineError::BadRequest("time range too long".into()));
        }
        let mut day_starts = Vec::with_capacity(n_days + 1);
        let mut day_period = Vec::with_capacity(n_days);
        let mut p = 0u32;
        for i in 0..=n_days {
            let d = first_period + chrono::Duration::days(i as i64);
            day_starts.push(local_midnight_utc(tz, d));
            if i < n_days {
                if d >= period_starts[p as usize + 1] {
                    p += 1;
                }
                day_period.push(p);
            }
        }
        Ok(Self {
            range: (min_ts, max_ts),
            tz,
            period,
            first_day: first_period,
            uniform_days: day_starts.windows(2).all(|w| w[1] - w[0] == DAY_MICROS),
            day_starts,
            day_period,
            period_starts,
        })
    }

    /// Number of periods covered.
    pub fn periods(&self) -> usize {
        self.period_starts.len() - 1
    }

    /// Local start date of period `p`.
    pub fn start_date(&self, p: usize) -> NaiveDate {
        self.period_starts[p]
    }

    /// UTC microseconds at which period `p` starts.
    pub fn day_start_of_period(&self, p: usize) -> i64 {
        let i = (self.period_starts[p] - self.first_day).num_days() as usize;
        self.day_starts[i]
    }

    /// UTC microseconds at which period `p` ends (the next one starts).
    pub fn end_utc(&self, p: usize) -> i64 {
        let end = self.period_starts[p + 1];
        let i = (end - self.first_day).num_days() as usize;
        self.day_starts[i]
    }

    /// Period number of a timestamp inside the covered range, else `None`.
    #[inline]
    pub fn period_of(&self, ts: i64) -> Option<u32> {
        let d = self.local_day(ts)?;
        Some(self.day_period[d])
    }

    /// Index of the local day of a timestamp inside the covered range.
    #[inline]
    pub fn local_day(&self, ts: i64) -> Option<usize> {
        let first = self.day_starts[0];
        if ts < first {
            return None;
        }
        if self.uniform_days {
            let d = ((ts - first) / DAY_MICROS) as usize;
            return (d < self.day_period.len()).then_some(d);
        }
        let mut d = ((ts - first) / DAY_MICROS) as usize;
        let n = self.day_period.len();
        if d > n {
            d = n;
        }
        // Zones with DST have 23- and 25-hour days: step to the right one.
        while d > 0 && ts < self.day_starts[d] {
            d -= 1;
        }
        while d < n && ts >= self.day_starts[d + 1] {
            d += 1;
        }
        (d < n).then_some(d)
    }

    /// UTC microseconds of the start of local day `d` (counted from `first_day`).
    pub fn day_start(&self, d: usize) -> i64 {
        self.day_starts[d]
    }

    /// End of the local day that contains `ts` (UTC microseconds).
    pub fn end_of_day(&self, ts: i64) -> i64 {
        match self.local_day(ts) {
            Some(d) => self.day_starts[d + 1],
            None => ts,
        }
    }
}

/// Parses a zone name (`UTC`, `Asia/Tokyo`, `America/New_York`).
pub fn parse_tz(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        EngineError::BadRequest(format!(
            "unknown time zone `{name}`; use an IANA name such as UTC or Europe/Berlin"
        ))
    })
}

/// The end of an as-of or calibration argument: a date (through the end of
/// that day in `tz`) or an RFC 3339 instant; the exclusive end, UTC µs.
pub fn end_of(text: &str, tz: Tz) -> Result<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let next = d.succ_opt().expect("a representable date");
        return tz
            .from_local_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|t| t.timestamp_micros())
            .ok_or_else(|| EngineError::BadRequest(format!("{text} has no end in {tz}")));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|_| {
            EngineError::BadRequest(format!(
                "`{text}` is not a date (YYYY-MM-DD) or an RFC 3339 instant"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn iso_weeks_start_monday() {
        // 2026-03-01 is a Sunday.
        let c = Calendar::new(
            Period::Week,
            Tz::UTC,
            ts("2026-03-01T12:00:00Z"),
            ts("2026-03-09T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(c.start_date(0).to_string(), "2026-02-23");
        assert_eq!(c.periods(), 3);
        assert_eq!(c.period_of(ts("2026-03-01T23:59:59.999999Z")), Some(0));
        assert_eq!(c.period_of(ts("2026-03-02T00:00:00Z")), Some(1));
        assert_eq!(c.period_of(ts("2026-03-09T00:00:00Z")), Some(2));
    }

    #[test]
    fn months_and_zones() {
        let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
        let c = Calendar::new(
            Period::Month,
            tokyo,
            ts("2026-01-31T14:59:59Z"),
            ts("2026-03-01T00:00:00Z"),
        )
        .unwrap();
        // 2026-01-31T14:59:59Z is still January in Tokyo; one second later it is February.
        assert_eq!(c.start_date(0).to_string(), "2026-01-01");
        assert_eq!(c.period_of(ts("2026-01-31T14:59:59Z")), Some(0));
        assert_eq!(c.period_of(ts("2026-01-31T15:00:00Z")), Some(1));
        assert_eq!(c.end_utc(0), ts("2026-01-31T15:00:00Z"));
    }

    #[test]
    fn dst_days_map_correctly() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // DST starts 2026-03-08 in New York: that local day has 23 hours.
        let c = Calendar::new(
            Period::Day,
            ny,
            ts("2026-03-07T12:00:00Z"),
            ts("2026-03-10T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(c.period_of(ts("2026-03-08T04:59:59Z")), Some(0)); // 23:59:59 EST on the 7th
        assert_eq!(c.period_of(ts("2026-03-08T05:00:00Z")), Some(1)); // 00:00 EST on the 8th
        assert_eq!(c.period_of(ts("2026-03-09T03:59:59Z")), Some(1)); // 23:59:59 EDT on the 8th
        assert_eq!(c.period_of(ts("2026-03-09T04:00:00Z")), Some(2));
    }
}

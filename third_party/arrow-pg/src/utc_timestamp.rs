//! Tenure's change to arrow-pg 0.16 (the rest of this crate is upstream's,
//! unchanged): UTC microsecond timestamps in Postgres' ISO text form written
//! by hand. Upstream parses the column's time zone, builds a chrono date-time
//! and runs chrono's `format` for every value, which made a query returning
//! many timestamps over the wire 1.3x the same query in `tenure sql`. The
//! bytes are those chrono writes with pgwire's ISO format
//! (`%Y-%m-%d %H:%M:%S%.6f%:::z`); other date styles, years outside
//! 1..=9999 and the binary format go through chrono as before.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, FixedOffset};
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};

/// Microseconds since the Unix epoch, in UTC.
#[derive(Debug, Clone, Copy)]
pub struct UtcMicros(pub i64);

/// Is an Arrow time-zone name UTC itself (not a zone that is at +00:00
/// only part of the year)?
pub fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "Z" | "+00:00" | "+00" | "Etc/UTC")
}

impl UtcMicros {
    /// As chrono has it (`None`: out of chrono's range).
    pub fn chrono(self) -> Option<DateTime<FixedOffset>> {
        DateTime::from_timestamp_micros(self.0).map(|d| d.fixed_offset())
    }
}

fn out_of_range() -> Box<dyn Error + Sync + Send> {
    "timestamp out of range".into()
}

impl ToSql for UtcMicros {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.chrono().ok_or_else(out_of_range)?.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <DateTime<FixedOffset> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl ToSqlText for UtcMicros {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::TIMESTAMPTZ && iso(&format_options.date_style) && write_iso(self.0, out) {
            return Ok(IsNull::No);
        }
        self.chrono()
            .ok_or_else(out_of_range)?
            .to_sql_text(ty, out, format_options)
    }
}

/// Does pgwire's `DateStyle::new` read this as the ISO style (its default
/// for anything it does not know)?
fn iso(date_style: &str) -> bool {
    let style = date_style
        .split_once(", ")
        .map_or(date_style, |(s, _)| s)
        .trim();
    !["sql", "german", "postgres"]
        .iter()
        .any(|s| style.eq_ignore_ascii_case(s))
}

/// Writes `YYYY-MM-DD HH:MM:SS.ffffff+00`; `false` (nothing written) for a
/// year outside 1..=9999.
fn write_iso(micros: i64, out: &mut BytesMut) -> bool {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days to the civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(1..=9999).contains(&year) {
        return false;
    }
    let mut b = *b"0000-00-00 00:00:00.000000+00";
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, frac, 6);
    out.put_slice(&b);
    true
}

//! Timestamps over the Postgres wire are written by Tenure's change to
//! arrow-pg (third_party/arrow-pg/src/utc_timestamp.rs) without chrono's
//! `format`: the bytes must be exactly chrono's with pgwire's ISO format,
//! over the whole range, and chrono's own in the other date styles.

use arrow_pg::utc_timestamp::UtcMicros;
use bytes::BytesMut;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::types::ToSqlText;
use datafusion_postgres::pgwire::types::format::FormatOptions;

fn text(v: &impl ToSqlText, opts: &FormatOptions) -> BytesMut {
    let mut out = BytesMut::new();
    v.to_sql_text(&Type::TIMESTAMPTZ, &mut out, opts).unwrap();
    out
}

#[test]
fn utc_timestamps_are_written_as_chrono_writes_them() {
    let iso = FormatOptions::default();
    let min = -62_135_596_800_000_000i64; // 0001-01-01 00:00:00
    let max = 253_402_300_799_999_999i64; // 9999-12-31 23:59:59.999999
    let mut values = vec![
        0,
        -1,
        1,
        min,
        max,
        951_782_400_000_000,    // 2000-02-29
        1_709_164_800_000_000,  // 2024-02-29
        -2_208_988_800_000_000, // 1900-01-01
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        values.push(min + (seed % (max - min) as u64) as i64);
    }
    for m in values {
        let reference = UtcMicros(m).chrono().unwrap();
        assert_eq!(text(&UtcMicros(m), &iso), text(&reference, &iso), "{m}");
    }
    // Years past the fast range and other date styles: chrono's text.
    for (m, style) in [
        (min - 1, "ISO, YMD"),
        (max + 1, "ISO, YMD"),
        (0, "SQL, DMY"),
        (1_709_164_800_123_456, "Postgres, MDY"),
        (1_709_164_800_123_456, "German"),
    ] {
        let mut opts = FormatOptions::default();
        opts.date_style = style.into();
        let reference = UtcMicros(m).chrono().unwrap();
        assert_eq!(
            text(&UtcMicros(m), &opts),
            text(&reference, &opts),
            "{m} {style}"
        );
    }
}

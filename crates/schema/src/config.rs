//! Project configuration (`tenure.toml`): declared properties and ingest limits.

use std::path::Path;

use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::DeclaredProperty;

/// The type of a declared property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// true / false.
    Bool,
    /// A timestamp (microseconds, UTC).
    Timestamp,
    /// An exact decimal with two places, like `revenue`.
    Decimal,
}

impl PropertyType {
    /// The Arrow type of the column this property becomes.
    pub fn data_type(self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Int => DataType::Int64,
            Self::Float => DataType::Float64,
            Self::Bool => DataType::Boolean,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Decimal => DataType::Decimal128(18, crate::REVENUE_SCALE),
        }
    }
}

/// Limits and sizes used when writing events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Longest accepted input line, in bytes; longer lines are rejected.
    pub max_line_bytes: usize,
    /// Most rows in one Parquet row group.
    pub row_group_rows: usize,
    /// Most (uncompressed, in-memory) bytes in one Parquet row group.
    pub row_group_bytes: usize,
    /// Most rows in one Parquet file.
    pub file_rows: usize,
    /// Rows buffered across all partitions before the largest is flushed to a file.
    pub buffer_rows: usize,
    /// zstd level for written files.
    pub zstd_level: i32,
    /// Most `event_id`s (as 16-byte hashes) one run keeps in memory to drop
    /// repeats; past it they are spilled to temporary files (under `TMPDIR`)
    /// and only a filter of 2 bytes an id stays in memory.
    pub seen_ids_in_memory: usize,
    /// Most physical lines one CSV record may span (line breaks inside quoted
    /// fields). A quote left open longer than this, or past `max_line_bytes`,
    /// rejects the line it opened on, and the lines after it are read again as
    /// records: one stray quote costs one row, not the rest of the file.
    pub max_record_lines: usize,
    /// Earliest accepted event time (`1997-01-01` or an RFC 3339 date-time);
    /// unset means 1970-01-01, the earliest Tenure stores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_from: Option<Moment>,
    /// Latest accepted event time; unset means one day past the time of the
    /// run (or of the request, in the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_until: Option<Moment>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: 1 << 20,
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 << 20,
            file_rows: 4 << 20,
            buffer_rows: 2 << 20,
            zstd_level: 1,
            seen_ids_in_memory: 3 << 20,
            max_record_lines: 100,
            accept_from: None,
            accept_until: None,
        }
    }
}

/// A point in time named in the config: a date (`1997-01-01`, midnight UTC) or
/// a date-time (`1998-06-30T23:59:59Z`; RFC 3339, no offset meaning UTC),
/// written as a string or as a bare TOML date or date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(i64);

impl Moment {
    /// 1970-01-01T00:00:00Z: the earliest moment Tenure stores.
    pub const EPOCH: Moment = Moment(0);

    /// Microseconds since 1970-01-01T00:00:00Z.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// From microseconds since the epoch.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Parses `YYYY-MM-DD` or an RFC 3339 date-time (an offset is optional and
    /// defaults to UTC; a space may stand for the `T`).
    pub fn parse(text: &str) -> Result<Self, String> {
        use chrono::{NaiveDate, NaiveDateTime};
        let s = text.trim();
        let micros = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            d.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_micros())
        } else if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            Some(t.timestamp_micros())
        } else {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc().timestamp_micros())
        };
        micros.map(Self).ok_or_else(|| {
            format!(
                "{text:?} is not a date (1997-01-01) or an RFC 3339 date-time (1997-01-01T00:00:00Z)"
            )
        })
    }
}

impl std::fmt::Display for Moment {
    /// `YYYY-MM-DD` at midnight UTC, else RFC 3339 in UTC.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(t) = chrono::DateTime::from_timestamp_micros(self.0) else {
            return write!(f, "{} µs since 1970", self.0);
        };
        if self.0.rem_euclid(86_400_000_000) == 0 {
            write!(f, "{}", t.format("%Y-%m-%d"))
        } else {
            f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
    }
}

impl Serialize for Moment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Moment;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a date (1997-01-01) or an RFC 3339 date-time")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Moment, E> {
                Moment::parse(v).map_err(E::custom)
            }
            // TOML's own dates and date-times arrive as a one-entry map.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Moment, A::Error> {
                let t = toml::value::Datetime::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Moment::parse(&t.to_string()).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The project configuration, read from a TOML file.
///
/// ```toml
/// [properties]
/// country = "string"
/// quantity = "int"
///
/// [ingest]
/// max_line_bytes = 1048576
/// accept_from = 1997-01-01
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Properties that get typed columns, in declaration order.
    pub properties: Vec<DeclaredProperty>,
    /// Ingest limits.
    pub ingest: IngestConfig,
}

/// A configuration file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or types.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    properties: toml::Table,
    #[serde(default)]
    ingest: IngestConfig,
}

/// Names that are columns already and cannot be declared again.
const RESERVED: &[&str] = &[
    "event_id",
    "user_id",
    "user_key",
    "event",
    "ts",
    "revenue",
    "variant",
    "properties",
    "ingested_at",
    "date",
];

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses config text; the error is a human-readable message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut properties = Vec::new();
        for (name, value) in raw.properties {
            if RESERVED.contains(&name.as_str()) {
                return Err(format!(
                    "property `{name}` is a built-in column and cannot be declared"
                ));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!(
                    "property name `{name}` must be letters, digits and `_`, not starting with a digit"
                ));
            }
            let ty = value
                .as_str()
                .and_then(|s| PropertyType::deserialize(toml::Value::String(s.into())).ok())
                .ok_or_else(|| {
                    format!(
                        "property `{name}` has type {value}; expected one of \"string\", \"int\", \"float\", \"bool\", \"timestamp\", \"decimal\""
                    )
                })?;
            properties.push(DeclaredProperty { name, ty });
        }
        check_ingest(&raw.ingest)?;
        Ok(Self {
            properties,
            ingest: raw.ingest,
        })
    }
}

/// Limits that parse but make no sense.
fn check_ingest(c: &IngestConfig) -> Result<(), String> {
    if c.max_record_lines == 0 {
        return Err("[ingest] max_record_lines must be at least 1".into());
    }
    for (name, m) in [
        ("accept_from", c.accept_from),
        ("accept_until", c.accept_until),
    ] {
        if let Some(m) = m
            && m < Moment::EPOCH
        {
            return Err(format!(
                "[ingest] {name} = {m} is before 1970-01-01, the earliest time Tenure stores"
            ));
        }
    }
    if let (Some(from), Some(until)) = (c.accept_from, c.accept_until)
        && until < from
    {
        return Err(format!(
            "[ingest] accept_until = {until} is before accept_from = {from}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_properties_and_limits() {
        let c = Config::parse(
            "[properties]\ncountry = \"string\"\nquantity = \"int\"\n[ingest]\nfile_rows = 10\n",
        )
        .unwrap();
        assert_eq!(c.properties.len(), 2);
        assert_eq!(c.properties[1].ty, PropertyType::Int);
        assert_eq!(c.ingest.file_rows, 10);
    }

    #[test]
    fn rejects_unknown_types_and_reserved_names() {
        let e = Config::parse("[properties]\ncountry = \"text\"\n").unwrap_err();
        assert!(e.contains("expected one of"), "{e}");
        let e = Config::parse("[properties]\nrevenue = \"decimal\"\n").unwrap_err();
        assert!(e.contains("built-in"), "{e}");
        let e = Config::parse("[ingest]\nfile_row = 1\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn accepted_time_range_parses_dates_and_date_times() {
        let c = Config::default();
        assert_eq!((c.ingest.accept_from, c.ingest.accept_until), (None, None));
        let day = 86_400_000_000;
        let c = Config::parse(
            "[ingest]\naccept_from = 1997-01-01\naccept_until = \"1998-06-30T23:59:59Z\"\n",
        )
        .unwrap();
        let from = c.ingest.accept_from.unwrap();
        let until = c.ingest.accept_until.unwrap();
        assert_eq!(from.micros(), 9862 * day);
        assert_eq!(until.micros(), 10408 * day - 1_000_000);
        assert_eq!(from.to_string(), "1997-01-01");
        assert_eq!(until.to_string(), "1998-06-30T23:59:59Z");
        // Every spelling of the same moment.
        for v in [
            "\"1997-01-01\"",
            "\"1997-01-01T00:00:00Z\"",
            "\"1997-01-01T09:00:00+09:00\"",
            "\"1997-01-01 00:00:00\"",
            "1997-01-01T00:00:00Z",
            "1997-01-01T00:00:00",
            "1996-12-31T19:00:00-05:00",
        ] {
            let c = Config::parse(&format!("[ingest]\naccept_from = {v}\n")).unwrap();
            assert_eq!(c.ingest.accept_from, Some(from), "{v}");
        }
    }

    #[test]
    fn bad_time_range_values_are_config_errors() {
        for (v, want) in [
            ("accept_from = \"yesterday\"", "not a date"),
            ("accept_from = \"1997-02-30\"", "not a date"),
            ("accept_from = 1997", "a date"),
            ("accept_from = 12:00:00", "not a date"),
            ("accept_until = \"\"", "not a date"),
            ("accept_from = 1969-12-31", "before 1970-01-01"),
            (
                "accept_from = 1999-01-01\naccept_until = 1998-01-01",
                "accept_until = 1998-01-01 is before accept_from = 1999-01-01",
            ),
            ("max_record_lines = 0", "at least 1"),
        ] {
            let e = Config::parse(&format!("[ingest]\n{v}\n")).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let e = Config::parse("[ingest]\naccept_from = \"soon\"\n").unwrap_err();
        assert!(e.contains("accept_from"), "{e}");
    }
}

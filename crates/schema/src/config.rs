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
        }
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
        Ok(Self {
            properties,
            ingest: raw.ingest,
        })
    }
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
}

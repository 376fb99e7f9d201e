//! The Arrow schema of a stored event.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column names of the stored events table.
pub mod columns {
    /// Unique id of the event (the source's, or a generated UUIDv7).
    pub const EVENT_ID: &str = "event_id";
    /// The user's id as sent (Segment `userId`, else `anonymousId`).
    pub const USER_ID: &str = "user_id";
    /// Dense integer id of `user_id` within the store (0, 1, 2, ...), assigned at
    /// ingest from the store's users dictionary, so per-user passes index arrays
    /// instead of hashing strings.
    pub const USER_KEY: &str = "user_key";
    /// Event name.
    pub const EVENT: &str = "event";
    /// Event time, microseconds since the epoch, UTC.
    pub const TS: &str = "ts";
    /// Revenue as an exact decimal with two places.
    pub const REVENUE: &str = "revenue";
    /// A/B test variant, if the event carries one.
    pub const VARIANT: &str = "variant";
    /// All undeclared properties, as one JSON object.
    pub const PROPERTIES: &str = "properties";
    /// When the event was ingested.
    pub const INGESTED_AT: &str = "ingested_at";
}

/// Decimal places of the `revenue` column: money is exact to the cent.
pub const REVENUE_SCALE: i8 = 2;
/// Decimal precision of the `revenue` column.
pub const REVENUE_PRECISION: u8 = 18;

/// A property the project declared with a type; it gets a typed column of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeclaredProperty {
    /// Property name, also the column name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: crate::PropertyType,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of stored events: the fixed columns, then the declared properties in
/// declaration order, then `properties` and `ingested_at`.
pub fn event_schema(declared: &[DeclaredProperty]) -> SchemaRef {
    let mut fields = vec![
        Field::new(columns::EVENT_ID, DataType::Utf8, false),
        Field::new(columns::USER_ID, DataType::Utf8, false),
        Field::new(columns::USER_KEY, DataType::UInt32, false),
        Field::new(columns::EVENT, DataType::Utf8, false),
        Field::new(columns::TS, ts_type(), false),
        Field::new(
            columns::REVENUE,
            DataType::Decimal128(REVENUE_PRECISION, REVENUE_SCALE),
            true,
        ),
        Field::new(columns::VARIANT, DataType::Utf8, true),
    ];
    for p in declared {
        fields.push(Field::new(&p.name, p.ty.data_type(), true));
    }
    fields.push(Field::new(columns::PROPERTIES, DataType::Utf8, true));
    fields.push(Field::new(columns::INGESTED_AT, ts_type(), false));
    Arc::new(Schema::new(fields))
}

/// Columns stored dictionary-encoded *and typed* as Arrow dictionaries
/// (`Dictionary(Int32, Utf8)`): few distinct values, read on every pass. The
/// Arrow schema embedded in each file makes readers hand back dictionary arrays
/// (keys into a handful of names) instead of decoding every row's string, which
/// is most of what a filter like `event = 'purchase'` costs. DuckDB, Spark and
/// Polars see ordinary string columns.
pub const DICTIONARY_COLUMNS: &[&str] = &[columns::EVENT, columns::VARIANT];

/// The type a dictionary column is stored and read as.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The schema of the stored files and of the table readers see: the event
/// schema with [`DICTIONARY_COLUMNS`] typed as dictionaries.
pub fn stored_schema(declared: &[DeclaredProperty]) -> SchemaRef {
    let base = event_schema(declared);
    let fields: Vec<Field> = base
        .fields()
        .iter()
        .map(|f| {
            if DICTIONARY_COLUMNS.contains(&f.name().as_str()) {
                Field::new(f.name(), dictionary_type(), f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PropertyType;

    #[test]
    fn declared_properties_sit_between_fixed_columns_and_properties() {
        let schema = event_schema(&[DeclaredProperty {
            name: "country".into(),
            ty: PropertyType::String,
        }]);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "event_id",
                "user_id",
                "user_key",
                "event",
                "ts",
                "revenue",
                "variant",
                "country",
                "properties",
                "ingested_at"
            ]
        );
    }
}

//! Parquet input: columns are matched by name as in NDJSON; typed timestamps are
//! taken as they are, numbers keep their exact decimal text.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Location, RawEvent, Scalar, Sink};
use crate::validate::PropertyNames;

enum Column {
    Text(StringArray),
    Num(StringArray),
    Bool(BooleanArray),
    Micros(TimestampMicrosecondArray),
}

impl Column {
    fn from_array(a: &ArrayRef) -> Result<Self, String> {
        let cast = |to: &DataType| {
            arrow_cast::cast(a, to)
                .map_err(|e| format!("cannot read column of type {}: {e}", a.data_type()))
        };
        Ok(match a.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(_, _) => Column::Text(downcast(cast(&DataType::Utf8)?)),
            DataType::Boolean => Column::Bool(
                a.as_any()
                    .downcast_ref::<BooleanArray>()
                    .cloned()
                    .ok_or("bad boolean column")?,
            ),
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
                let t = cast(&DataType::Timestamp(TimeUnit::Microsecond, None))?;
                Column::Micros(
                    t.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .cloned()
                        .ok_or("bad timestamp column")?,
                )
            }
            t if t.is_numeric() => Column::Num(downcast(cast(&DataType::Utf8)?)),
            other => return Err(format!("unsupported column type {other}")),
        })
    }

    fn get(&self, i: usize) -> Scalar<'_> {
        match self {
            _ if self.is_null(i) => Scalar::Null,
            Column::Text(a) => Scalar::Str(Cow::Borrowed(a.value(i))),
            Column::Num(a) => Scalar::Num(Cow::Borrowed(a.value(i))),
            Column::Bool(a) => Scalar::Bool(a.value(i)),
            Column::Micros(a) => Scalar::Micros(a.value(i)),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Column::Text(a) | Column::Num(a) => a.is_null(i),
            Column::Bool(a) => a.is_null(i),
            Column::Micros(a) => a.is_null(i),
        }
    }
}

fn downcast(a: ArrayRef) -> StringArray {
    a.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .expect("cast to Utf8 gives a StringArray")
}

/// Reads a Parquet file (fully buffered: Parquet needs its footer first).
pub fn read_parquet<R: Read>(
    mut reader: R,
    input: &str,
    names: &PropertyNames,
    sink: &mut dyn Sink,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    on_bytes(data.len() as u64);
    let builder = match ParquetRecordBatchReaderBuilder::try_new(Bytes::from(data)) {
        Ok(b) => b.with_batch_size(8192),
        Err(e) => {
            sink.reject(
                Location { input, line: 0 },
                &format!("not a readable Parquet file: {e}"),
                &[],
            );
            return Ok(());
        }
    };
    let reader = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            sink.reject(
                Location { input, line: 0 },
                &format!("not a readable Parquet file: {e}"),
                &[],
            );
            return Ok(());
        }
    };
    let mut row = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                sink.reject(
                    Location {
                        input,
                        line: row + 1,
                    },
                    &format!("unreadable row group: {e}"),
                    &[],
                );
                return Ok(());
            }
        };
        let schema = batch.schema();
        let mut cols = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            match Column::from_array(&Arc::clone(array)) {
                Ok(c) => cols.push((field.name().clone(), c)),
                Err(reason) => {
                    sink.reject(
                        Location {
                            input,
                            line: row + 1,
                        },
                        &format!("column `{}`: {reason}", field.name()),
                        &[],
                    );
                    return Ok(());
                }
            }
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let mut ev = RawEvent::with_declared(names.len());
            let mut rejected = false;
            for (name, col) in &cols {
                let v = col.get(i);
                if v.is_null() {
                    continue;
                }
                match name.as_str() {
                    "event_id" | "messageId" | "message_id" => ev.event_id = Some(v),
                    "user_id" | "userId" => ev.user_id = Some(v),
                    "anonymousId" | "anonymous_id" => ev.anonymous_id = Some(v),
                    "previousId" | "previous_id" => ev.previous_id = Some(v),
                    "event" => ev.event = Some(v),
                    "type" => ev.kind = Some(v),
                    "ts" | "timestamp" => ev.ts = Some(v),
                    "user_key" | "ingested_at" | "date" => {}
                    "properties" => {
                        if let Scalar::Str(Cow::Borrowed(text)) = v
                            && let Err(reason) = add_json_properties(&mut ev, names, text)
                        {
                            sink.reject(Location { input, line: row }, &reason, &[]);
                            rejected = true;
                            break;
                        }
                    }
                    _ => ev.set_property(names, Cow::Borrowed(name.as_str()), v),
                }
            }
            if rejected {
                continue;
            }
            sink.accept(&ev, Location { input, line: row }, &[]);
        }
    }
    Ok(())
}

/// A `properties` JSON column (as Tenure itself writes) is unpacked again.
fn add_json_properties<'a>(
    ev: &mut RawEvent<'a>,
    names: &PropertyNames,
    text: &'a str,
) -> Result<(), String> {
    let map: std::collections::BTreeMap<&'a str, &'a serde_json::value::RawValue> =
        serde_json::from_str(text)
            .map_err(|e| format!("`properties` is not a JSON object: {e}"))?;
    for (k, v) in map {
        ev.set_property(names, Cow::Borrowed(k), Scalar::from_json(v.get())?);
    }
    Ok(())
}

//! An analysis's answer as the charts read it: its typed Arrow columns, by
//! name, row by row.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{self as t, DataType};

use crate::output::Rows;

/// The rows of one analysis with their declared types.
pub(super) struct Frame<'a> {
    /// The same rows as JSON cells (the plain numbers table beside a chart).
    pub json: &'a Rows,
    batch: RecordBatch,
    by_name: HashMap<String, usize>,
}

/// One row of a [`Frame`].
#[derive(Clone, Copy)]
pub(super) struct Row<'f, 'a> {
    frame: &'f Frame<'a>,
    i: usize,
}

impl<'a> Frame<'a> {
    /// The typed answer behind `rows`; rows made from JSON values only (no
    /// analysis makes them today) get the types their values imply.
    pub fn of(rows: &'a Rows) -> anyhow::Result<Self> {
        let batch = match &rows.typed {
            Some(table) => table.concat()?,
            None => inferred(rows)?,
        };
        let by_name = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(j, f)| (f.name().clone(), j))
            .collect();
        Ok(Self {
            json: rows,
            batch,
            by_name,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_, 'a>> + Clone {
        (0..self.len()).map(move |i| Row { frame: self, i })
    }

    /// The distinct values of a column as text, in first-seen order.
    pub fn distinct(&self, name: &str, filter: impl Fn(&Row<'_, 'a>) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        for r in self.rows().filter(|r| filter(r)) {
            let v = r.text(name);
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        seen
    }

    fn column(&self, name: &str) -> Option<&ArrayRef> {
        self.by_name.get(name).map(|&j| self.batch.column(j))
    }
}

impl Row<'_, '_> {
    /// The cell as text: strings as they are, numbers as JSON writes them,
    /// null (or no such column) as the empty string.
    pub fn text(&self, name: &str) -> String {
        let Some(c) = self.frame.column(name) else {
            return String::new();
        };
        if c.is_null(self.i) {
            return String::new();
        }
        let i = self.i;
        match c.data_type() {
            DataType::Utf8 => c.as_string::<i32>().value(i).to_string(),
            DataType::LargeUtf8 => c.as_string::<i64>().value(i).to_string(),
            DataType::Utf8View => c.as_string_view().value(i).to_string(),
            DataType::Boolean => c.as_boolean().value(i).to_string(),
            DataType::Float32 | DataType::Float64 => self
                .num(name)
                .and_then(serde_json::Number::from_f64)
                .map(|n| n.to_string())
                .unwrap_or_default(),
            _ => datafusion::arrow::util::display::array_value_to_string(c, i).unwrap_or_default(),
        }
    }

    /// The cell as a number: integers, floats and decimals by value, text
    /// parsed; `None` when null, not a number, or no such column.
    pub fn num(&self, name: &str) -> Option<f64> {
        let c = self.frame.column(name)?;
        let i = self.i;
        if c.is_null(i) {
            return None;
        }
        macro_rules! prim {
            ($ty:ty) => {
                Some(c.as_primitive::<$ty>().value(i) as f64)
            };
        }
        match c.data_type() {
            DataType::Int8 => prim!(t::Int8Type),
            DataType::Int16 => prim!(t::Int16Type),
            DataType::Int32 => prim!(t::Int32Type),
            DataType::Int64 => prim!(t::Int64Type),
            DataType::UInt8 => prim!(t::UInt8Type),
            DataType::UInt16 => prim!(t::UInt16Type),
            DataType::UInt32 => prim!(t::UInt32Type),
            DataType::UInt64 => prim!(t::UInt64Type),
            DataType::Float32 => Some(f64::from(c.as_primitive::<t::Float32Type>().value(i))),
            DataType::Float64 => Some(c.as_primitive::<t::Float64Type>().value(i)),
            DataType::Decimal128(_, scale) => {
                let v = c.as_primitive::<t::Decimal128Type>().value(i);
                Some(v as f64 / 10f64.powi(i32::from(*scale)))
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                self.text(name).parse().ok()
            }
            _ => None,
        }
    }

    /// Is the cell the boolean `true`?
    pub fn flag(&self, name: &str) -> bool {
        self.frame
            .column(name)
            .and_then(|c| c.as_boolean_opt())
            .is_some_and(|b| b.is_valid(self.i) && b.value(self.i))
    }
}

/// A batch of JSON rows with the types their values imply.
fn inferred(rows: &Rows) -> anyhow::Result<RecordBatch> {
    use datafusion::arrow::json::ReaderBuilder;
    use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
    use serde_json::Value;
    let values: Vec<Value> = rows
        .rows
        .iter()
        .map(|r| {
            Value::Object(
                rows.columns
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect(),
            )
        })
        .collect();
    let schema = std::sync::Arc::new(infer_json_schema_from_iterator(values.iter().map(Ok))?);
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(&values)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

//! Per-user totals as a fold: a count of the rows meeting a condition, or
//! the sum of a numeric column, dense by user key (each key range's totals,
//! ranges appended in key order). Used by A/B metrics and segment features.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use datafusion::logical_expr::Expr;

use crate::table::Events;
use crate::{EngineError, Result};

/// Per user key, the number of rows (in range, before `until`) where
/// `condition` holds.
pub(crate) async fn counts(
    events: &Events,
    name: &'static str,
    condition: Expr,
    until: Option<i64>,
) -> Result<Vec<i128>> {
    let fold = PerUser {
        name: name.into(),
        input: super::FoldInput {
            flags: vec![condition],
            any_flag: true,
            until,
            ..Default::default()
        },
        value: Value::Count,
    };
    match super::partial(events, fold).await? {
        Sums::Exact(v) => Ok(v),
        Sums::Float(_) => Err(EngineError::Internal("a count came out as floats".into())),
    }
}

/// Per user key, the time (UTC µs) of the first row (in range, before
/// `until`) where `condition` holds; [`crate::userstats::NEVER`] for none.
pub(crate) async fn first_times(
    events: &Events,
    condition: Expr,
    until: Option<i64>,
) -> Result<Vec<i64>> {
    let fold = PerUser {
        name: "first_time".into(),
        input: super::FoldInput {
            flags: vec![condition],
            any_flag: true,
            until,
            ..Default::default()
        },
        value: Value::First,
    };
    match super::partial(events, fold).await? {
        Sums::Exact(v) => Ok(v
            .into_iter()
            .map(|t| i64::try_from(t).unwrap_or(crate::userstats::NEVER))
            .collect()),
        Sums::Float(_) => Err(EngineError::Internal(
            "first times came out as floats".into(),
        )),
    }
}

/// What [`PerUser`] adds up per user.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Value {
    /// Rows (those with the flag).
    Count,
    /// The earliest `ts` of the rows (those with the flag); `i128::MAX` for
    /// none.
    First,
    /// The column (cast to this type: `Decimal128(38, s)`, `Int64` or `Float64`).
    Exact(#[serde(with = "data_type")] DataType),
    Float,
}

/// Per-user totals, dense by user key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Sums {
    Exact(#[serde(with = "super::compact")] Vec<i128>),
    Float(Vec<f64>),
}

/// A per-user count or sum as a fold (dense per key range, ranges appended).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct PerUser {
    pub(crate) name: String,
    pub(crate) input: super::FoldInput,
    pub(crate) value: Value,
}

impl super::UserFold for PerUser {
    type State = (u32, Sums);
    type Partial = Sums;

    fn name(&self) -> &str {
        &self.name
    }

    fn input(&self) -> super::FoldInput {
        self.input.clone()
    }

    fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        use datafusion::arrow::datatypes::{Field, Schema};
        let value = match self.value {
            Value::Float => DataType::Float64,
            _ => DataType::Decimal128(38, 0),
        };
        Arc::new(Schema::new(vec![
            Field::new("user_key", DataType::UInt32, false),
            Field::new("value", value, false),
        ]))
    }

    fn start(&self, keys: std::ops::Range<u32>) -> Self::State {
        let n = (keys.end - keys.start) as usize;
        let sums = match self.value {
            Value::Float => Sums::Float(vec![0.0; n]),
            Value::First => Sums::Exact(vec![i128::MAX; n]),
            _ => Sums::Exact(vec![0; n]),
        };
        (keys.start, sums)
    }

    fn update(
        &self,
        (lo, sums): &mut Self::State,
        rows: &super::Rows<'_>,
    ) -> datafusion::error::Result<()> {
        let keys = rows.keys();
        let overflow = || {
            datafusion::error::DataFusionError::Execution(format!(
                "sum of `{}` too large",
                self.input.columns.join(", ")
            ))
        };
        match (&self.value, sums) {
            (Value::Count, Sums::Exact(c)) => {
                for &k in keys {
                    c[(k - *lo) as usize] += 1;
                }
            }
            (Value::First, Sums::Exact(c)) => {
                for (&k, &t) in keys.iter().zip(rows.ts()) {
                    let first = &mut c[(k - *lo) as usize];
                    *first = (*first).min(i128::from(t));
                }
            }
            (Value::Exact(t), Sums::Exact(s)) => {
                let v = datafusion::arrow::compute::cast(rows.column(0), t)?;
                for (i, &k) in keys.iter().enumerate() {
                    if !v.is_valid(i) {
                        continue;
                    }
                    let x = match t {
                        DataType::Int64 => i128::from(v.as_primitive::<Int64Type>().value(i)),
                        _ => v.as_primitive::<Decimal128Type>().value(i),
                    };
                    let u = (k - *lo) as usize;
                    s[u] = s[u].checked_add(x).ok_or_else(overflow)?;
                }
            }
            (Value::Float, Sums::Float(s)) => {
                let v = datafusion::arrow::compute::cast(rows.column(0), &DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                for (i, &k) in keys.iter().enumerate() {
                    if v.is_valid(i) {
                        s[(k - *lo) as usize] += v.value(i);
                    }
                }
            }
            _ => {
                return Err(datafusion::error::DataFusionError::Internal(
                    "per-user totals of the wrong kind".into(),
                ));
            }
        }
        Ok(())
    }

    fn finish(&self, (_, sums): Self::State) -> datafusion::error::Result<Sums> {
        Ok(sums)
    }

    fn merge(&self, into: &mut Sums, other: Sums) -> datafusion::error::Result<()> {
        match (into, other) {
            (Sums::Exact(a), Sums::Exact(b)) => super::append_exact(a, b),
            (Sums::Float(a), Sums::Float(b)) => super::append_exact(a, b),
            _ => {
                return Err(datafusion::error::DataFusionError::Internal(
                    "per-user totals of two kinds".into(),
                ));
            }
        }
        Ok(())
    }

    fn emit(&self, sums: Sums) -> datafusion::error::Result<datafusion::arrow::array::RecordBatch> {
        use datafusion::arrow::array::{Decimal128Array, Float64Array, UInt32Array};
        let (n, value): (usize, ArrayRef) = match sums {
            Sums::Exact(v) => (
                v.len(),
                Arc::new(Decimal128Array::from(v).with_precision_and_scale(38, 0)?),
            ),
            Sums::Float(v) => (v.len(), Arc::new(Float64Array::from(v))),
        };
        Ok(datafusion::arrow::array::RecordBatch::try_new(
            self.schema(),
            vec![Arc::new(UInt32Array::from_iter_values(0..n as u32)), value],
        )?)
    }
}

/// Serde of a [`DataType`] as its text (`Decimal128(38, 2)`).
mod data_type {
    use datafusion::arrow::datatypes::DataType;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(t: &DataType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DataType, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

//! Column builders for one partition's buffered events.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use tenure_schema::{DeclaredProperty, PropertyType};

use crate::validate::{Typed, ValidEvent};

enum DeclaredBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Micros(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder),
}

/// Builders for every stored column.
pub struct EventColumns {
    schema: SchemaRef,
    event_id: StringBuilder,
    user_id: StringBuilder,
    user_key: UInt32Builder,
    event: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    revenue: Decimal128Builder,
    variant: StringBuilder,
    declared: Vec<DeclaredBuilder>,
    properties: StringBuilder,
    ingested_at: i64,
    rows: usize,
}

impl EventColumns {
    /// Empty builders for `schema` (made by `event_schema(declared)`).
    pub fn new(schema: SchemaRef, declared: &[DeclaredProperty], ingested_at: i64) -> Self {
        let declared = declared
            .iter()
            .map(|p| match p.ty {
                PropertyType::String => DeclaredBuilder::Str(StringBuilder::new()),
                PropertyType::Int => DeclaredBuilder::Int(Int64Builder::new()),
                PropertyType::Float => DeclaredBuilder::Float(Float64Builder::new()),
                PropertyType::Bool => DeclaredBuilder::Bool(BooleanBuilder::new()),
                PropertyType::Timestamp => {
                    DeclaredBuilder::Micros(TimestampMicrosecondBuilder::new())
                }
                PropertyType::Decimal => DeclaredBuilder::Decimal(Decimal128Builder::new()),
            })
            .collect();
        Self {
            schema,
            event_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            user_key: UInt32Builder::new(),
            event: StringBuilder::new(),
            ts: TimestampMicrosecondBuilder::new(),
            revenue: Decimal128Builder::new(),
            variant: StringBuilder::new(),
            declared,
            properties: StringBuilder::new(),
            ingested_at,
            rows: 0,
        }
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one validated event with its user key and event id.
    pub fn push(&mut self, ev: &ValidEvent<'_>, event_id: &str, user_key: u32) {
        self.event_id.append_value(event_id);
        self.user_id.append_value(&ev.user_id);
        self.user_key.append_value(user_key);
        self.event.append_value(&ev.event);
        self.ts.append_value(ev.ts);
        self.revenue.append_option(ev.revenue);
        self.variant.append_option(ev.variant.as_deref());
        for (b, v) in self.declared.iter_mut().zip(&ev.declared) {
            match (b, v) {
                (DeclaredBuilder::Str(b), Typed::Str(s)) => b.append_value(s),
                (DeclaredBuilder::Int(b), Typed::Int(i)) => b.append_value(*i),
                (DeclaredBuilder::Float(b), Typed::Float(f)) => b.append_value(*f),
                (DeclaredBuilder::Bool(b), Typed::Bool(x)) => b.append_value(*x),
                (DeclaredBuilder::Micros(b), Typed::Micros(m)) => b.append_value(*m),
                (DeclaredBuilder::Decimal(b), Typed::Decimal(d)) => b.append_value(*d),
                (b, _) => b.append_null(),
            }
        }
        if ev.properties.is_empty() {
            self.properties.append_null();
        } else {
            self.properties.append_value(&ev.properties);
        }
        self.rows += 1;
    }

    /// Finishes the buffered rows into a batch and resets the builders.
    pub fn finish(&mut self) -> RecordBatch {
        let ts_tz: Arc<str> = "UTC".into();
        let rows = self.rows;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.user_key.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.ts.finish().with_timezone(ts_tz.clone())),
            Arc::new(
                self.revenue
                    .finish()
                    .with_precision_and_scale(18, tenure_schema::REVENUE_SCALE)
                    .expect("valid decimal type"),
            ),
            Arc::new(self.variant.finish()),
        ];
        for b in &mut self.declared {
            cols.push(match b {
                DeclaredBuilder::Str(b) => Arc::new(b.finish()),
                DeclaredBuilder::Int(b) => Arc::new(b.finish()),
                DeclaredBuilder::Float(b) => Arc::new(b.finish()),
                DeclaredBuilder::Bool(b) => Arc::new(b.finish()),
                DeclaredBuilder::Micros(b) => Arc::new(b.finish().with_timezone(ts_tz.clone())),
                DeclaredBuilder::Decimal(b) => Arc::new(
                    b.finish()
                        .with_precision_and_scale(18, tenure_schema::REVENUE_SCALE)
                        .expect("valid decimal type"),
                ),
            });
        }
        cols.push(Arc::new(self.properties.finish()));
        cols.push(Arc::new(
            arrow_array::TimestampMicrosecondArray::from_value(self.ingested_at, rows)
                .with_timezone(ts_tz),
        ));
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("columns match the event schema")
    }
}

impl DeclaredBuilder {
    fn append_null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Micros(b) => b.append_null(),
            Self::Decimal(b) => b.append_null(),
        }
    }
}

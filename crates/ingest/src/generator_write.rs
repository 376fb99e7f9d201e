//! Writing generated events: as NDJSON, CSV or Parquet files, or straight into a
//! store through the normal ingest path.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use tenure_schema::{Config, DeclaredProperty, PropertyType};

use crate::decode::{Location, RawEvent, Scalar};
use crate::generator::{GenEvent, GenSpec, generate};
use crate::session::{Ingest, IngestOptions, Summary};
use crate::{IngestError, Store};

/// Writes NDJSON, one flat event per line.
pub fn write_ndjson(spec: &GenSpec, w: impl Write) -> std::io::Result<u64> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, w);
    let mut n = 0;
    let mut err = None;
    generate(spec, |e| {
        if err.is_some() {
            return;
        }
        let r = (|| {
            write!(
                w,
                "{{\"event_id\":\"{}\",\"user_id\":\"{}\",\"event\":\"{}\",\"ts\":\"{}\"",
                e.event_id(spec.seed),
                e.user_id(),
                e.name(),
                e.ts_text()
            )?;
            if let Some(r) = e.revenue_text() {
                write!(w, ",\"revenue\":{r}")?;
            }
            write!(
                w,
                ",\"variant\":\"{}\",\"country\":\"{}\"",
                e.variant, e.country
            )?;
            if let Some(i) = e.item_id {
                write!(w, ",\"item_id\":{i}")?;
            }
            w.write_all(b"}\n")
        })();
        match r {
            Ok(()) => n += 1,
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    w.flush()?;
    Ok(n)
}

/// Writes CSV with a header row.
pub fn write_csv(spec: &GenSpec, w: impl Write) -> std::io::Result<u64> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, w);
    writeln!(
        w,
        "event_id,user_id,event,ts,revenue,variant,country,item_id"
    )?;
    let mut n = 0;
    let mut err = None;
    generate(spec, |e| {
        if err.is_some() {
            return;
        }
        let r = writeln!(
            w,
            "{},{},{},{},{},{},{},{}",
            e.event_id(spec.seed),
            e.user_id(),
            e.name(),
            e.ts_text(),
            e.revenue_text().unwrap_or_default(),
            e.variant,
            e.country,
            e.item_id.map(|i| i.to_string()).unwrap_or_default()
        );
        match r {
            Ok(()) => n += 1,
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    w.flush()?;
    Ok(n)
}

struct ParquetChunk {
    event_id: StringBuilder,
    user_id: StringBuilder,
    event: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    revenue: Decimal128Builder,
    variant: StringBuilder,
    country: StringBuilder,
    item_id: UInt32Builder,
    rows: usize,
}

impl ParquetChunk {
    fn new() -> Self {
        Self {
            event_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            event: StringBuilder::new(),
            ts: TimestampMicrosecondBuilder::new(),
            revenue: Decimal128Builder::new(),
            variant: StringBuilder::new(),
            country: StringBuilder::new(),
            item_id: UInt32Builder::new(),
            rows: 0,
        }
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("user_id", DataType::Utf8, false),
            Field::new("event", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("revenue", DataType::Decimal128(18, 2), true),
            Field::new("variant", DataType::Utf8, false),
            Field::new("country", DataType::Utf8, false),
            Field::new("item_id", DataType::UInt32, true),
        ]))
    }

    fn push(&mut self, e: &GenEvent, seed: u64) {
        self.event_id.append_value(e.event_id(seed));
        self.user_id.append_value(e.user_id());
        self.event.append_value(e.name());
        self.ts.append_value(e.ts);
        self.revenue.append_option(e.revenue_cents.map(i128::from));
        self.variant.append_value(e.variant);
        self.country.append_value(e.country);
        self.item_id.append_option(e.item_id);
        self.rows += 1;
    }

    fn finish(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(
                self.revenue
                    .finish()
                    .with_precision_and_scale(18, 2)
                    .expect("decimal"),
            ),
            Arc::new(self.variant.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.item_id.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(Self::schema(), cols).expect("generated columns match")
    }
}

/// Writes one Parquet file.
pub fn write_parquet(spec: &GenSpec, w: impl Write + Send) -> Result<u64, IngestError> {
    let mut writer = ArrowWriter::try_new(w, ParquetChunk::schema(), None)?;
    let mut chunk = ParquetChunk::new();
    let mut n = 0u64;
    let mut err = None;
    generate(spec, |e| {
        chunk.push(e, spec.seed);
        n += 1;
        if chunk.rows == 65_536 && err.is_none() {
            err = writer.write(&chunk.finish()).err();
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    writer.write(&chunk.finish())?;
    writer.close()?;
    Ok(n)
}

/// The properties declared for generated data when the store has none yet.
pub fn gen_config() -> Config {
    Config {
        properties: vec![
            DeclaredProperty {
                name: "country".into(),
                ty: PropertyType::String,
            },
            DeclaredProperty {
                name: "item_id".into(),
                ty: PropertyType::Int,
            },
        ],
        ..Default::default()
    }
}

/// Generates straight into a store, through the same validation, users
/// dictionary, staging and commit as `tenure ingest`. Generating the same spec
/// twice commits nothing the second time.
pub fn ingest_generated(
    spec: &GenSpec,
    store: Store,
    mut opts: IngestOptions,
    progress: Option<crate::session::Progress>,
) -> Result<Summary, IngestError> {
    if opts.config.properties.is_empty() {
        opts.config.properties = gen_config().properties;
    }
    let mut ingest = Ingest::begin(store, opts)?;
    let name = spec.source_name();
    let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(name.as_bytes()));
    if ingest.has_source(&hash) {
        ingest.add_synthetic_source(hash, name, 0);
        return ingest.commit();
    }
    if let Some(p) = progress {
        ingest.set_progress(p);
    }
    let names = crate::validate::PropertyNames::from_declared(ingest.declared());
    let (country_idx, item_idx) = (names.index("country"), names.index("item_id"));
    let mut rows = 0u64;
    generate(spec, |e| {
        let event_id = e.event_id(spec.seed);
        let user_id = e.user_id();
        let revenue = e.revenue_text();
        let item = e.item_id.map(|i| i.to_string());
        let mut ev = RawEvent::with_declared(names.len());
        ev.event_id = Some(Scalar::Str(Cow::Borrowed(&event_id)));
        ev.user_id = Some(Scalar::Str(Cow::Borrowed(&user_id)));
        ev.event = Some(Scalar::Str(Cow::Borrowed(e.name())));
        ev.ts = Some(Scalar::Micros(e.ts));
        ev.revenue = revenue.as_deref().map(|r| Scalar::Num(Cow::Borrowed(r)));
        ev.variant = Some(Scalar::Str(Cow::Borrowed(e.variant)));
        let country = Scalar::Str(Cow::Borrowed(e.country));
        match country_idx {
            Some(i) => ev.declared[i] = Some(country),
            None => ev.extra.push((Cow::Borrowed("country"), country)),
        }
        if let Some(item) = item.as_deref() {
            let v = Scalar::Num(Cow::Borrowed(item));
            match item_idx {
                Some(i) => ev.declared[i] = Some(v),
                None => ev.extra.push((Cow::Borrowed("item_id"), v)),
            }
        }
        rows += 1;
        ingest.push(
            &ev,
            Location {
                input: "gen",
                line: rows,
            },
        );
        if rows.is_multiple_of(65_536) {
            ingest.tick_events(65_536);
        }
    });
    ingest.add_synthetic_source(hash, name, rows);
    ingest.commit()
}

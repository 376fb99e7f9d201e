//! Rendering analysis results: tidy rows as JSON (one object per row), CSV with
//! a header, or a human table; and writing them to any store URL (`--out`), as
//! JSON, CSV or Parquet by the file extension.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use serde_json::Value;

use crate::exit::BadInput;

/// Output formats of every analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human-readable table (the default on a terminal).
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
}

/// Tidy rows: named columns in a fixed order, one JSON value per cell.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Column names, in output order.
    pub columns: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    fn objects(&self) -> Vec<serde_json::Map<String, Value>> {
        self.rows
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect()
            })
            .collect()
    }
}

/// Rows from serialisable structs; `columns` fixes the order (and must name
/// every field that should appear).
pub fn to_rows<T: serde::Serialize>(columns: &[&str], rows: &[T]) -> anyhow::Result<Rows> {
    let rows = rows
        .iter()
        .map(|r| match serde_json::to_value(r)? {
            Value::Object(m) => Ok(columns
                .iter()
                .map(|c| m.get(*c).cloned().unwrap_or(Value::Null))
                .collect()),
            other => anyhow::bail!("row is not an object: {other}"),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}

/// JSON text: an array of objects with keys in column order.
pub fn json(rows: &Rows) -> String {
    let mut out = String::from("[");
    for (i, r) in rows.rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n  {" } else { ",\n  {" });
        for (j, (c, v)) in rows.columns.iter().zip(r).enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(c).unwrap_or_default());
            out.push_str(": ");
            out.push_str(&serde_json::to_string(v).unwrap_or_default());
        }
        out.push('}');
    }
    out.push_str(if rows.rows.is_empty() { "]\n" } else { "\n]\n" });
    out
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CSV text of rows, with a header.
pub fn csv(rows: &Rows) -> String {
    let mut out = String::new();
    let quote = |s: String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    out.push_str(
        &rows
            .columns
            .iter()
            .cloned()
            .map(quote)
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push('\n');
    for r in &rows.rows {
        out.push_str(
            &r.iter()
                .map(|v| quote(cell(v)))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// A plain aligned table of rows.
pub fn table(rows: &Rows) -> String {
    use std::fmt::Write as _;
    if rows.rows.is_empty() {
        return "(no rows)\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| match v {
                    Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(0.0)),
                    other => cell(other),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = rows
        .columns
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (h, w) in rows.columns.iter().zip(&widths) {
        let _ = write!(out, "{h:<w$}  ");
    }
    out.push('\n');
    for r in &cells {
        for (c, w) in r.iter().zip(&widths) {
            let _ = write!(out, "{c:>w$}  ");
        }
        out.push('\n');
    }
    out
}

/// Prints rows to stdout in `format`, with `human` used for the table view.
pub fn print(
    rows: &Rows,
    format: OutputFormat,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => json(rows),
        OutputFormat::Csv => csv(rows),
        OutputFormat::Table => human(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Writes rows to `url` (a local path or store URL ending in .json, .csv or
/// .parquet), atomically (a single put).
pub fn write_out(rows: &Rows, url: &str) -> anyhow::Result<()> {
    let lower = url.to_ascii_lowercase();
    let bytes = if lower.ends_with(".json") {
        json(rows).into_bytes()
    } else if lower.ends_with(".csv") {
        csv(rows).into_bytes()
    } else if lower.ends_with(".parquet") {
        parquet_bytes(rows)?
    } else {
        return Err(BadInput(format!(
            "--out {url}: name the file .json, .csv or .parquet"
        ))
        .into());
    };
    let (dir, name) = match url.rfind('/') {
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (".", url),
    };
    let store = tenure_store::Store::open(dir)?;
    let path = store.path(name);
    tenure_ingest::io::block_on(async {
        use object_store::ObjectStoreExt;
        store.inner.put(&path, bytes.into()).await
    })
    .with_context(|| format!("cannot write {url}"))?;
    eprintln!("wrote {} rows to {url}", rows.len());
    Ok(())
}

fn parquet_bytes(rows: &Rows) -> anyhow::Result<Vec<u8>> {
    use datafusion::arrow::json::ReaderBuilder;
    use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
    let values: Vec<Value> = rows.objects().into_iter().map(Value::Object).collect();
    let schema = Arc::new(infer_json_schema_from_iterator(values.iter().map(Ok))?);
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(&values)?;
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| datafusion::arrow::record_batch::RecordBatch::new_empty(schema.clone()));
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

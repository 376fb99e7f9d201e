//! Rendering analysis results: tidy rows as JSON (one object per row), CSV with
//! a header, or a human table; and writing them to any store URL (`--out`), as
//! JSON, CSV or Parquet by the file extension.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

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
    /// A self-contained HTML page: the chart and the numbers as a table.
    Html,
}

/// Formats of written results (`--out`, job outputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Apache Parquet, one row group.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

impl FileFormat {
    /// The file extension (without the dot).
    pub fn ext(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }

    /// The format a file name's extension names, if any.
    pub fn of_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        [FileFormat::Json, FileFormat::Csv, FileFormat::Parquet]
            .into_iter()
            .find(|f| lower.ends_with(&format!(".{}", f.ext())))
    }
}

/// Tidy rows: named columns in a fixed order, one JSON value per cell.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Column names, in output order.
    pub columns: Vec<String>,
    /// Cells, row by row.
    pub rows: Vec<Vec<Value>>,
    /// The columns' declared types (the analysis's Arrow schema), which
    /// Parquet outputs are written with; inferred from the values if absent.
    pub schema: Option<SchemaRef>,
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
        schema: None,
    })
}

/// Rows of serialisable records with the columns and types of `schema`
/// (an analysis's declared output schema).
pub fn typed_rows<T: serde::Serialize>(schema: SchemaRef, rows: &[T]) -> anyhow::Result<Rows> {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut out = to_rows(&columns, rows)?;
    out.schema = Some(schema);
    Ok(out)
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

/// CSV text of rows, with a header: the one CSV writer of every command
/// (RFC 4180: a field holding a comma, a double quote, a line feed or a
/// carriage return is quoted, its quotes doubled; lines end with `\n`;
/// null is an empty field).
pub fn csv(rows: &Rows) -> String {
    let mut out = String::new();
    let quote = |s: String| {
        if s.contains([',', '"', '\n', '\r']) {
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

/// CSV text of record batches ([`csv`] of their rows); decimals keep their
/// scale (`30.00`, as stored), not a float's shortest form.
pub fn csv_of_batches(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> anyhow::Result<String> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let exact: Vec<_> = batches
        .iter()
        .map(|b| {
            let schema = b.schema();
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Decimal128(..) | DataType::Decimal256(..) => {
                        Field::new(f.name(), DataType::Utf8, f.is_nullable())
                    }
                    _ => f.as_ref().clone(),
                })
                .collect();
            let columns = b
                .columns()
                .iter()
                .zip(&fields)
                .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(datafusion::arrow::record_batch::RecordBatch::try_new(
                std::sync::Arc::new(Schema::new(fields)),
                columns,
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(csv(&rows_from_batches(&exact)?))
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
                .map(|r| display_width(&r[i]))
                .chain([display_width(h)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (h, &w) in rows.columns.iter().zip(&widths) {
        let pad = w - display_width(h);
        let _ = write!(out, "{h}{:pad$}  ", "");
    }
    out.push('\n');
    for r in &cells {
        for (c, &w) in r.iter().zip(&widths) {
            let pad = w - display_width(c);
            let _ = write!(out, "{:pad$}{c}  ", "");
        }
        out.push('\n');
    }
    out
}

/// Columns a text takes in a terminal (a CJK character takes two, a
/// combining accent none), so that tables of non-ASCII names align.
pub fn display_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
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
        OutputFormat::Html => {
            return Err(
                BadInput("--format html is for analyses; use table, csv or json".into()).into(),
            );
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints the rows of one analysis: as `print` does, or with `--format html`
/// as a one-section report.
pub fn print_analysis(
    kind: crate::report::Kind,
    rows: &Rows,
    extra: Option<Rows>,
    format: OutputFormat,
    human: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if format != OutputFormat::Html {
        return print(rows, format, human);
    }
    let mut section = crate::report::Section::new(kind.as_str(), kind, Ok(rows.clone()));
    section.extra = extra;
    let page = crate::report::page(&format!("tenure {}", kind.as_str()), &[], &[section]);
    let mut out = std::io::stdout().lock();
    out.write_all(page.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Rows of Arrow batches (columns by the schema, cells as JSON values).
pub fn rows_from_batches(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> anyhow::Result<Rows> {
    let Some(first) = batches.first() else {
        return Ok(Rows::default());
    };
    let columns: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut buf = Vec::new();
    let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    let objects: Vec<serde_json::Map<String, Value>> = if buf.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buf)?
    };
    let rows = objects
        .into_iter()
        .map(|o| {
            columns
                .iter()
                .map(|c| o.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    Ok(Rows {
        columns,
        rows,
        schema: Some(first.schema()),
    })
}

/// The bytes of rows in a file format.
pub fn encode(rows: &Rows, format: FileFormat) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        FileFormat::Json => json(rows).into_bytes(),
        FileFormat::Csv => csv(rows).into_bytes(),
        FileFormat::Parquet => parquet_bytes(rows)?,
    })
}

/// Writes `bytes` to `url` (a local path or store URL) in one put: readers
/// see the old object or the new one, never a part, and writing the same
/// name again replaces it.
pub fn put(url: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let (dir, name) = split_out(url);
    let store = tenure_store::Store::open(dir)?;
    let path = store.path(name);
    tenure_ingest::io::block_on(async {
        use object_store::ObjectStoreExt;
        store.inner.put(&path, bytes.into()).await
    })
    .with_context(|| format!("cannot write {url}"))?;
    Ok(())
}

/// The directory (a local path or store URL) and the file name of an output
/// URL. A file at the root of the file system (`/x.csv`, `file:///x.csv`) is
/// in the directory `/`.
fn split_out(url: &str) -> (&str, &str) {
    match url.rfind('/') {
        Some(0) => ("/", &url[1..]),
        Some(i) if &url[..i] == "file://" => ("file:///", &url[i + 1..]),
        Some(i) => (&url[..i], &url[i + 1..]),
        None => (".", url),
    }
}

/// Writes rows to `url` (a local path or store URL ending in .json, .csv or
/// .parquet), atomically (a single put).
pub fn write_out(rows: &Rows, url: &str) -> anyhow::Result<()> {
    let format = FileFormat::of_name(url).ok_or_else(|| {
        BadInput(format!(
            "--out {url}: name the file .json, .csv or .parquet"
        ))
    })?;
    put(url, encode(rows, format)?)?;
    eprintln!("wrote {} rows to {url}", rows.len());
    Ok(())
}

fn parquet_bytes(rows: &Rows) -> anyhow::Result<Vec<u8>> {
    use datafusion::arrow::json::ReaderBuilder;
    use datafusion::arrow::json::reader::infer_json_schema_from_iterator;
    let values: Vec<Value> = rows.objects().into_iter().map(Value::Object).collect();
    let schema = match &rows.schema {
        Some(s) => s.clone(),
        None => Arc::new(infer_json_schema_from_iterator(values.iter().map(Ok))?),
    };
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

#[cfg(test)]
mod tests {
    use super::split_out;

    #[test]
    fn csv_quotes_carriage_returns_commas_quotes_and_line_feeds() {
        use serde_json::json;
        let rows = super::Rows {
            columns: vec!["a,b".into(), "v".into()],
            rows: vec![
                vec![json!("x\ry"), json!("p\"q")],
                vec![json!("l\nm"), serde_json::Value::Null],
                vec![json!("plain"), json!(2.5)],
            ],
            ..Default::default()
        };
        assert_eq!(
            super::csv(&rows),
            "\"a,b\",v\n\"x\ry\",\"p\"\"q\"\n\"l\nm\",\nplain,2.5\n"
        );
    }

    #[test]
    fn tables_align_by_display_width() {
        use serde_json::json;
        let rows = super::Rows {
            columns: vec!["event".into(), "users".into()],
            rows: vec![
                vec![json!("購入"), json!(12)],
                vec![json!("café"), json!(3)],
                vec![json!("view_item"), json!(1000)],
            ],
            schema: None,
        };
        let text = super::table(&rows);
        let widths: Vec<usize> = text.lines().map(super::display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
        // The numbers' last digits line up.
        let ends: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| super::display_width(l.trim_end()))
            .collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
    }

    #[test]
    fn output_urls_split_into_directory_and_name() {
        assert_eq!(split_out("/x.csv"), ("/", "x.csv"));
        assert_eq!(split_out("file:///x.csv"), ("file:///", "x.csv"));
        assert_eq!(split_out("/tmp/a/x.csv"), ("/tmp/a", "x.csv"));
        assert_eq!(split_out("x.csv"), (".", "x.csv"));
        assert_eq!(split_out("out/x.csv"), ("out", "x.csv"));
        assert_eq!(split_out("s3://bucket/p/x.csv"), ("s3://bucket/p", "x.csv"));
    }
}

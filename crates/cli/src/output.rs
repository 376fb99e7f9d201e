//! Rendering analysis results: tidy rows as JSON (one object per row), CSV with
//! a header, or a human table; and writing them to any store URL (`--out`), as
//! JSON, CSV or Parquet by the file extension.

use std::io::Write;
use std::sync::Arc;

use tenure_engine::analysis::Table;

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
    /// The analysis's typed answer these rows were made from (its declared
    /// schema and batches): Parquet outputs are written from it, and charts
    /// read its columns. Absent for rows made from JSON values (their
    /// Parquet types are inferred).
    pub typed: Option<Table>,
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
/// Rows that carry their typed table are written from it, so decimals keep
/// their scale (`30.00`) in every CSV, printed or written to a file.
pub fn csv(rows: &Rows) -> String {
    if let Some(t) = &rows.typed
        && let Ok(body) = csv_of_batches(&t.batches, false)
    {
        return csv_header(&t.schema) + &body;
    }
    let mut out = csv_line(rows.columns.iter().cloned());
    out.push_str(&csv_body(rows));
    out
}

/// A CSV field, quoted when it must be (see [`csv`]).
fn csv_quote(s: String) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One CSV line of fields.
fn csv_line(fields: impl Iterator<Item = String>) -> String {
    let mut line = fields.map(csv_quote).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// The CSV lines of rows, without the header.
fn csv_body(rows: &Rows) -> String {
    rows.rows
        .iter()
        .map(|r| csv_line(r.iter().map(cell)))
        .collect()
}

/// The CSV header line of a schema (see [`csv`]).
pub fn csv_header(schema: &datafusion::arrow::datatypes::Schema) -> String {
    csv_line(schema.fields().iter().map(|f| f.name().clone()))
}

/// CSV text of record batches ([`csv`] of their rows); decimals keep their
/// scale (`30.00`, as stored), not a float's shortest form.
pub fn csv_of_batches(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
    header: bool,
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
    let rows = rows_from_batches(&exact)?;
    let body = csv_body(&rows);
    Ok(if header {
        csv_line(rows.columns.iter().cloned()) + &body
    } else {
        body
    })
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
    match batches.first() {
        Some(first) => rows_of(&Table::new(first.schema(), batches.to_vec())),
        None => Ok(Rows::default()),
    }
}

/// Rows of an analysis's typed answer: columns by its schema, cells as JSON
/// values, and the table itself kept beside them.
pub fn rows_of(table: &Table) -> anyhow::Result<Rows> {
    let columns: Vec<String> = table
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = Vec::with_capacity(table.num_rows());
    for b in &table.batches {
        let cells: Vec<Vec<Value>> = b
            .columns()
            .iter()
            .enumerate()
            .map(|(j, c)| json_cells(b, j, c))
            .collect::<anyhow::Result<_>>()?;
        // Column by column into rows, moving each cell once.
        let mut columns: Vec<_> = cells.into_iter().map(Vec::into_iter).collect();
        for _ in 0..b.num_rows() {
            rows.push(columns.iter_mut().filter_map(Iterator::next).collect());
        }
    }
    Ok(Rows {
        columns,
        rows,
        typed: Some(table.clone()),
    })
}

/// The cells of column `j` of `batch` as JSON values. Numbers, text and
/// booleans are converted directly (a float keeps its exact value; a trip
/// through JSON text parsed by serde_json could move it by one ulp); other
/// types as Arrow's JSON writer writes them.
fn json_cells(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    j: usize,
    c: &datafusion::arrow::array::ArrayRef,
) -> anyhow::Result<Vec<Value>> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{self as t, DataType};
    fn each<A: Array + ?Sized>(a: &A, f: impl Fn(usize) -> Value) -> Vec<Value> {
        (0..a.len())
            .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
            .collect()
    }
    macro_rules! ints {
        ($ty:ty) => {{
            let a = c.as_primitive::<$ty>();
            each(a, |i| Value::from(a.value(i)))
        }};
    }
    Ok(match c.data_type() {
        DataType::Null => vec![Value::Null; c.len()],
        DataType::Boolean => {
            let a = c.as_boolean();
            each(a, |i| Value::Bool(a.value(i)))
        }
        DataType::Utf8 => {
            let a = c.as_string::<i32>();
            each(a, |i| Value::from(a.value(i)))
        }
        DataType::LargeUtf8 => {
            let a = c.as_string::<i64>();
            each(a, |i| Value::from(a.value(i)))
        }
        DataType::Utf8View => {
            let a = c.as_string_view();
            each(a, |i| Value::from(a.value(i)))
        }
        DataType::Int8 => ints!(t::Int8Type),
        DataType::Int16 => ints!(t::Int16Type),
        DataType::Int32 => ints!(t::Int32Type),
        DataType::Int64 => ints!(t::Int64Type),
        DataType::UInt8 => ints!(t::UInt8Type),
        DataType::UInt16 => ints!(t::UInt16Type),
        DataType::UInt32 => ints!(t::UInt32Type),
        DataType::UInt64 => ints!(t::UInt64Type),
        DataType::Float32 => {
            let a = c.as_primitive::<t::Float32Type>();
            each(a, |i| {
                serde_json::Number::from_f64(f64::from(a.value(i)))
                    .map_or(Value::Null, Value::Number)
            })
        }
        DataType::Float64 => {
            let a = c.as_primitive::<t::Float64Type>();
            each(a, |i| {
                serde_json::Number::from_f64(a.value(i)).map_or(Value::Null, Value::Number)
            })
        }
        // Times as the JSON writer writes them (its formatter, its options),
        // without writing and parsing JSON: a listing's timestamps cost more
        // than its scan that way.
        t if t.is_temporal() => {
            let options =
                datafusion::arrow::util::display::FormatOptions::new().with_display_error(true);
            let f = datafusion::arrow::util::display::ArrayFormatter::try_new(c, &options)?;
            each(c.as_ref(), |i| Value::String(f.value(i).to_string()))
        }
        _ => {
            let field = batch.schema().field(j).clone();
            let one = datafusion::arrow::record_batch::RecordBatch::try_new(
                Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                    field.clone(),
                ])),
                vec![c.clone()],
            )?;
            let mut buf = Vec::new();
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
            w.write(&one)?;
            w.finish()?;
            let objects: Vec<serde_json::Map<String, Value>> = if buf.is_empty() {
                Vec::new()
            } else {
                serde_json::from_slice(&buf)?
            };
            let mut out: Vec<Value> = objects
                .into_iter()
                .map(|o| o.get(field.name()).cloned().unwrap_or(Value::Null))
                .collect();
            out.resize(c.len(), Value::Null);
            out
        }
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
    let mut out = Vec::new();
    // An analysis's answer is written as it is typed.
    if let Some(t) = &rows.typed {
        let mut sink = FileSink::new(FileFormat::Parquet, &t.schema)?;
        for b in &t.batches {
            sink.write(b)?;
        }
        return sink.finish();
    }
    let values: Vec<Value> = rows.objects().into_iter().map(Value::Object).collect();
    let schema = Arc::new(infer_json_schema_from_iterator(values.iter().map(Ok))?);
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(&values)?;
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| datafusion::arrow::record_batch::RecordBatch::new_empty(schema.clone()));
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

/// A file being encoded batch by batch (see [`print_stream`]).
enum FileSink {
    Csv(Vec<u8>),
    Json(datafusion::arrow::json::ArrayWriter<Vec<u8>>),
    Parquet(parquet::arrow::ArrowWriter<Vec<u8>>),
}

impl FileSink {
    fn new(
        format: FileFormat,
        schema: &datafusion::arrow::datatypes::SchemaRef,
    ) -> anyhow::Result<Self> {
        Ok(match format {
            FileFormat::Csv => Self::Csv(csv_header(schema).into_bytes()),
            FileFormat::Json => Self::Json(datafusion::arrow::json::ArrayWriter::new(Vec::new())),
            FileFormat::Parquet => Self::Parquet(parquet::arrow::ArrowWriter::try_new(
                Vec::new(),
                schema.clone(),
                None,
            )?),
        })
    }

    fn write(
        &mut self,
        batch: &datafusion::arrow::record_batch::RecordBatch,
    ) -> anyhow::Result<()> {
        match self {
            Self::Csv(out) => {
                out.extend(csv_of_batches(std::slice::from_ref(batch), false)?.into_bytes())
            }
            Self::Json(w) => w.write(batch)?,
            Self::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Csv(out) => out,
            Self::Json(mut w) => {
                w.finish()?;
                let mut out = w.into_inner();
                out.push(b'\n');
                out
            }
            Self::Parquet(w) => w.into_inner()?,
        })
    }
}

/// Prints record batches as they come (CSV and JSON a batch at a time, so a
/// long result is never held whole; the aligned table and the HTML page,
/// titled `title`, need every row first). An empty result still prints its
/// header (CSV), `[]` (JSON) or its columns (table).
///
/// With `file`, the rows are also encoded as a file of that format, the same
/// rows in the same types as printed: returns its bytes and row count (the
/// caller writes them, outside the runtime).
pub async fn print_stream(
    mut batches: datafusion::execution::SendableRecordBatchStream,
    format: OutputFormat,
    title: &str,
    file: Option<FileFormat>,
) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    use datafusion::arrow::record_batch::RecordBatch;
    use futures::StreamExt;
    type Out = std::io::BufWriter<std::io::Stdout>;
    enum Printer {
        Csv(Out),
        Json(datafusion::arrow::json::ArrayWriter<Out>),
        /// The table and the page: every row first.
        Whole(Vec<RecordBatch>),
    }
    let schema = batches.schema();
    let mut sink = file.map(|f| FileSink::new(f, &schema)).transpose()?;
    let mut rows = 0;
    let stdout = || std::io::BufWriter::new(std::io::stdout());
    let mut printer = match format {
        OutputFormat::Csv => {
            let mut out = stdout();
            out.write_all(csv_header(&schema).as_bytes())?;
            Printer::Csv(out)
        }
        OutputFormat::Json => Printer::Json(datafusion::arrow::json::ArrayWriter::new(stdout())),
        OutputFormat::Table | OutputFormat::Html => Printer::Whole(Vec::new()),
    };
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        // CSV text is made once per batch, for the screen and the file alike.
        let text = if matches!(printer, Printer::Csv(_)) || matches!(sink, Some(FileSink::Csv(_))) {
            Some(csv_of_batches(std::slice::from_ref(&batch), false)?)
        } else {
            None
        };
        match &mut sink {
            Some(FileSink::Csv(out)) => {
                out.extend_from_slice(text.as_deref().unwrap_or_default().as_bytes())
            }
            Some(sink) => sink.write(&batch)?,
            None => {}
        }
        match &mut printer {
            Printer::Csv(out) => out.write_all(text.as_deref().unwrap_or_default().as_bytes())?,
            Printer::Json(w) => w.write(&batch)?,
            Printer::Whole(all) => all.push(batch),
        }
    }
    match printer {
        Printer::Csv(mut out) => out.flush()?,
        Printer::Json(mut w) => {
            w.finish()?;
            let mut out = w.into_inner();
            out.write_all(b"\n")?;
            out.flush()?;
        }
        Printer::Whole(mut all) => {
            if all.is_empty() {
                all.push(RecordBatch::new_empty(schema));
            }
            let mut text = if format == OutputFormat::Table {
                datafusion::arrow::util::pretty::pretty_format_batches(&all)?.to_string()
            } else {
                crate::report::table_page(title, &rows_from_batches(&all)?)
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let mut out = stdout();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    sink.map(|s| Ok((s.finish()?, rows))).transpose()
}

#[cfg(test)]
mod tests {
    use super::split_out;

    /// Times become the strings Arrow's JSON writer writes for them (the
    /// cells were once read back from its output).
    #[test]
    fn time_cells_are_the_json_writers_strings() {
        use datafusion::arrow::array::{
            ArrayRef, Date32Array, DurationMicrosecondArray, TimestampMicrosecondArray,
            TimestampMillisecondArray,
        };
        use datafusion::arrow::record_batch::RecordBatch;
        use std::sync::Arc;
        let micros = [
            Some(0),
            Some(1_772_323_200_000_000),
            Some(1_772_323_200_123_456),
            Some(-1),
            None,
        ];
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "utc",
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC")),
            ),
            (
                "paris",
                Arc::new(
                    TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("Europe/Paris"),
                ),
            ),
            (
                "naive",
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec())),
            ),
            (
                "millis",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1),
                    None,
                    Some(-86_400_001),
                ])),
            ),
            (
                "date",
                Arc::new(Date32Array::from(vec![Some(0), Some(20_513), None])),
            ),
            (
                "duration",
                Arc::new(DurationMicrosecondArray::from(vec![Some(90_000_000), None])),
            ),
        ];
        for (name, c) in columns {
            let batch = RecordBatch::try_from_iter([(name, c.clone())]).unwrap();
            let mut buf = Vec::new();
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
            w.write(&batch).unwrap();
            w.finish().unwrap();
            let objects: Vec<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&buf).unwrap();
            let want: Vec<serde_json::Value> = objects
                .iter()
                .map(|o| o.get(name).cloned().unwrap_or(serde_json::Value::Null))
                .collect();
            assert_eq!(super::json_cells(&batch, 0, &c).unwrap(), want, "{name}");
        }
    }

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
            typed: None,
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

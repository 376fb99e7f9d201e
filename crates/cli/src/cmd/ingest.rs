//! `tenure ingest`: files, globs or stdin into a store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tenure_ingest::{Format, Ingest, IngestOptions, Store, Summary};
use tenure_schema::Config;

use crate::exit::BadInput;
use crate::progress::bytes_bar;

/// Ingest events into a store as date-partitioned Parquet.
///
/// Accepts flat events (`user_id`, `event`, `ts`, ...) and Segment-style messages
/// (`userId`/`anonymousId`, `messageId`, `event`, `timestamp`, `properties`).
/// An `identify` with a `userId` and another `anonymousId` merges the
/// anonymous visitor into the user, an `alias` its `previousId` into its
/// `userId`: every analysis then counts them as one person, retroactively
/// (rules in the README, "Identity"; `tenure compact` folds merges into the
/// files). Declared properties (from --config) get typed columns; the rest are kept as
/// JSON in `properties`. Rejected records go to `dead_letter/` under the store
/// with their input, line, reason and whole text, ready to fix and re-ingest.
/// Re-ingesting the same input adds nothing. Inputs may be objects in a bucket
/// (`s3://`, `gs://`, `az://`, with `*` and `[...]` globs over the keys; `/`
/// is matched only literally); each is downloaded to a temporary file, then
/// ingested and recorded under its URL. Gzip and zstd inputs
/// (`events.ndjson.gz`, `export.csv.zst`, or compressed data on stdin) are
/// decompressed, recognised by name or by their first bytes; a damaged or
/// truncated one fails the run and commits nothing.
///
/// Events from 1970-01-01 to one day past now are accepted; the config's
/// `[ingest] accept_from` / `accept_until` narrow that. In CSV, a quoted field
/// may span at most `max_record_lines` (100) lines: a quote left open rejects
/// only its own line.
///
/// Examples:
///
///   tenure ingest events.ndjson --to ./store
///
///   tenure ingest 'exports/*.csv' --to s3://bucket/tenure --max-bad 100
///
///   cat events.ndjson | tenure ingest - --to ./store
///
///   tenure ingest 'exports/2026-*.ndjson.gz' --to ./store
///
///   tenure ingest 's3://bucket/exports/2026-*.ndjson.gz' --to ./store
#[derive(Args)]
pub struct IngestArgs {
    /// Input files, globs (quoted), or `-` for standard input.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Store URL: a local directory, file://, memory://, s3://, gs:// or az://.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Input format; guessed from the file extension when not given (stdin: ndjson).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Project config (TOML) declaring typed properties and ingest limits.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fail with exit code 2, committing nothing, when more records are rejected.
    #[arg(long, value_name = "N")]
    pub max_bad: Option<u64>,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the run's counters to this file in Prometheus text format (for
    /// node_exporter's textfile collector), replacing it whole; a failed run
    /// leaves it as it was, so `tenure_ingest_last_success_timestamp_seconds`
    /// ages.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
}

/// Input formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::Csv => Format::Csv,
            FormatArg::Parquet => Format::Parquet,
        }
    }
}

enum Input {
    Stdin,
    File(PathBuf),
    /// An object in a bucket: its URL (shown and recorded), store and key.
    Object {
        url: String,
        store: Store,
        rel: String,
        size: u64,
        mtime: i64,
    },
}

/// The objects an object-store input names: the URL up to the last `/`
/// before the first `*` or `[` is the folder listed, the rest a glob over
/// the keys below it (`/` matched only literally); without a glob, one
/// object. S3 options may follow as `?key=value`, as for stores.
fn expand_url(i: &str) -> anyhow::Result<Vec<Input>> {
    let (base, query) = match i.split_once('?') {
        Some((b, q)) if q.contains('=') => (b, Some(q)),
        _ => (i, None),
    };
    let cut = base.find(['*', '[', '?']).unwrap_or(base.len());
    let bucket_at = base.find("://").map_or(0, |p| p + 3);
    let slash = match base[..cut].rfind('/') {
        Some(s) if s > bucket_at => s,
        _ => {
            return Err(BadInput(format!(
                "{i}: name objects in a bucket, such as s3://bucket/exports/*.ndjson.gz"
            ))
            .into());
        }
    };
    let (dir, pattern) = (&base[..slash], &base[slash + 1..]);
    if pattern.is_empty() {
        return Err(BadInput(format!(
            "{i} names a folder; add a glob such as {i}*.ndjson.gz"
        ))
        .into());
    }
    let glob = glob::Pattern::new(pattern).map_err(|e| BadInput(format!("bad glob {i}: {e}")))?;
    let store_url = match query {
        Some(q) => format!("{dir}?{q}"),
        None => dir.to_string(),
    };
    let store = Store::open_existing(&store_url)?;
    // List only below the glob's literal folders.
    let literal = &pattern[..cut - slash - 1];
    let under = literal.rfind('/').map_or("", |p| &literal[..p]);
    let io = tenure_ingest::io::Io::new(store.clone());
    let listed = io
        .list(under)
        .with_context(|| format!("cannot list {dir}/{under}"))?;
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut matched: Vec<_> = listed
        .into_iter()
        .filter(|(rel, _)| glob.matches_with(rel, opts))
        .collect();
    matched.sort_by(|a, b| a.0.cmp(&b.0));
    let objects: Vec<Input> = matched
        .into_iter()
        .map(|(rel, meta)| Input::Object {
            url: format!("{dir}/{rel}"),
            store: store.clone(),
            size: meta.size,
            mtime: meta.last_modified.timestamp(),
            rel,
        })
        .collect();
    if objects.is_empty() {
        return Err(BadInput(match cut < base.len() {
            true => format!("no objects match {base}"),
            false => format!("no such object: {base}"),
        })
        .into());
    }
    Ok(objects)
}

/// Copies an object to `to`, streaming.
fn download(store: &Store, rel: &str, to: &std::path::Path) -> anyhow::Result<()> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use std::io::Write;
    let mut file = std::fs::File::create(to)?;
    let path = store.path(rel);
    tenure_ingest::io::block_on(async {
        let mut stream = store.inner.get(&path).await?.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
        anyhow::Ok(())
    })
}

fn expand(inputs: &[String]) -> anyhow::Result<Vec<Input>> {
    let mut out = Vec::new();
    for i in inputs {
        if i.contains("://") && !i.starts_with("file://") {
            out.extend(expand_url(i)?);
        } else if i == "-" {
            if inputs.len() > 1 {
                return Err(BadInput("`-` (stdin) must be the only input".into()).into());
            }
            out.push(Input::Stdin);
        } else if i.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(i)
                .map_err(|e| BadInput(format!("bad glob {i}: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(BadInput(format!("no files match {i}")).into());
            }
            matched.sort();
            out.extend(matched.into_iter().map(Input::File));
        } else {
            let p = PathBuf::from(i);
            if !p.exists() {
                return Err(BadInput(format!("no such file: {i}")).into());
            }
            out.push(Input::File(p));
        }
    }
    Ok(out)
}

/// Runs the command.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let inputs = expand(&args.inputs)?;
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let store = Store::open(&args.to)?;
    let opts = IngestOptions {
        config,
        max_bad: args.max_bad,
        format: args.format.map(Into::into),
    };
    let total: Option<u64> = inputs
        .iter()
        .map(|i| match i {
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            Input::Object { size, .. } => Some(*size),
            Input::Stdin => None,
        })
        .sum();
    let bar = bytes_bar(total, "ingest");
    let mut ingest = Ingest::begin(store, opts).context("cannot start the ingest")?;
    let b = bar.clone();
    ingest.set_progress(Box::new(move |n| b.inc(n)));
    for input in &inputs {
        match input {
            Input::Stdin => ingest.add_reader(std::io::stdin().lock(), "-")?,
            Input::File(p) => ingest.add_file(p)?,
            Input::Object {
                url,
                store,
                rel,
                mtime,
                ..
            } => {
                // Named as the object (its compression and format show in
                // the name), in a folder removed when done.
                let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
                let copy = tmp.path().join(rel.rsplit('/').next().unwrap_or("object"));
                download(store, rel, &copy).with_context(|| format!("cannot download {url}"))?;
                ingest.add_file_as(&copy, Some((url.as_str(), Some(*mtime))))?;
            }
        }
    }
    let summary = ingest.commit();
    bar.finish_and_clear();
    let summary = summary?;
    print_summary(&summary, args.json)?;
    if let Some(p) = &args.metrics {
        crate::metrics::write(p, &crate::metrics::ingest(&summary, &args.to))?;
    }
    Ok(())
}

/// Prints the human summary on stderr (and JSON on stdout when asked).
pub fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    let c = &s.counters;
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    eprintln!(
        "read {}  written {}  rejected {}  duplicates {}  inputs {}  skipped {}  files {}  bytes {}  elapsed {:.2}s  events/s {:.0}",
        c.read,
        c.written,
        c.rejected,
        c.duplicates,
        c.inputs,
        c.skipped_inputs,
        c.files,
        c.bytes,
        s.elapsed_secs,
        s.events_per_sec()
    );
    if let Some(d) = &s.dead_letter {
        eprintln!("rejected records: {d}");
    }
    match s.version {
        Some(v) => eprintln!("committed manifest version {v}"),
        None => eprintln!("nothing to commit"),
    }
    if json {
        println!("{}", serde_json::to_string(s)?);
    }
    Ok(())
}

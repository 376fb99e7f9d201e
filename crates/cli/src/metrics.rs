//! Ingest and job metrics in the Prometheus text format the server's
//! `/metrics` uses, written as a file (`--metrics <file>`) for
//! node_exporter's textfile collector or any scraper that reads files. The
//! file is replaced whole (written beside it, then renamed), so a scrape never
//! sees half of it.

use std::fmt::Write as _;
use std::path::Path;

/// Metrics text being built.
#[derive(Default)]
pub struct Text {
    out: String,
    declared: Vec<String>,
}

/// `"` `\` and newlines escaped, as label values need.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Text {
    /// One sample of `name` (a `counter` or a `gauge`) with its labels; HELP
    /// and TYPE are written before the first sample of a name.
    pub fn sample(&mut self, kind: &str, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        if !self.declared.iter().any(|d| d == name) {
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.declared.push(name.to_string());
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
            .collect();
        let labels = match labels.is_empty() {
            true => String::new(),
            false => format!("{{{}}}", labels.join(",")),
        };
        let _ = writeln!(self.out, "{name}{labels} {v}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The metrics of an ingest run.
pub fn ingest(s: &tenure_ingest::Summary, store: &str) -> String {
    let mut t = Text::default();
    let l = [("store", store)];
    let c = &s.counters;
    for (name, help, v) in [
        (
            "tenure_ingest_records_read",
            "Records read (accepted, rejected and duplicates).",
            c.read,
        ),
        (
            "tenure_ingest_events_written",
            "Events written to the store.",
            c.written,
        ),
        (
            "tenure_ingest_records_rejected",
            "Records rejected (see dead_letter/).",
            c.rejected,
        ),
        (
            "tenure_ingest_duplicates",
            "Records dropped as already seen (same event_id).",
            c.duplicates,
        ),
        ("tenure_ingest_inputs", "Inputs read.", c.inputs),
        (
            "tenure_ingest_inputs_skipped",
            "Inputs skipped as ingested before.",
            c.skipped_inputs,
        ),
        ("tenure_ingest_input_bytes", "Input bytes read.", c.bytes),
        (
            "tenure_ingest_files_written",
            "Parquet files written.",
            c.files,
        ),
    ] {
        t.sample("gauge", name, &format!("{help} Last run."), &l, v as f64);
    }
    t.sample(
        "gauge",
        "tenure_ingest_duration_seconds",
        "Wall time of the last run.",
        &l,
        s.elapsed_secs,
    );
    t.sample(
        "gauge",
        "tenure_ingest_events_per_second",
        "Events written per second in the last run.",
        &l,
        s.events_per_sec(),
    );
    if let Some(v) = s.version {
        t.sample(
            "gauge",
            "tenure_ingest_manifest_version",
            "Manifest version the last run committed.",
            &l,
            v as f64,
        );
    }
    t.sample(
        "gauge",
        "tenure_ingest_last_success_timestamp_seconds",
        "When the last run finished (Unix seconds).",
        &l,
        now(),
    );
    t.finish()
}

/// One analysis of a job run: name, kind, seconds, rows (None when it failed).
pub struct Analysis<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Wall time.
    pub seconds: f64,
    /// Rows, or None when it failed.
    pub rows: Option<usize>,
}

/// The metrics of a job run.
pub fn job(job: &str, analyses: &[Analysis<'_>], seconds: f64) -> String {
    let mut t = Text::default();
    let failed = analyses.iter().filter(|a| a.rows.is_none()).count();
    for a in analyses {
        let l = [("job", job), ("analysis", a.name), ("kind", a.kind)];
        t.sample(
            "gauge",
            "tenure_job_analysis_success",
            "1 when the analysis succeeded in the last run, else 0.",
            &l,
            f64::from(u8::from(a.rows.is_some())),
        );
        t.sample(
            "gauge",
            "tenure_job_analysis_duration_seconds",
            "Wall time of the analysis in the last run.",
            &l,
            a.seconds,
        );
        if let Some(r) = a.rows {
            t.sample(
                "gauge",
                "tenure_job_analysis_rows",
                "Rows the analysis wrote in the last run.",
                &l,
                r as f64,
            );
        }
    }
    let l = [("job", job)];
    t.sample(
        "gauge",
        "tenure_job_analyses",
        "Analyses in the job.",
        &l,
        analyses.len() as f64,
    );
    t.sample(
        "gauge",
        "tenure_job_analyses_failed",
        "Analyses that failed in the last run.",
        &l,
        failed as f64,
    );
    t.sample(
        "gauge",
        "tenure_job_duration_seconds",
        "Wall time of the last run.",
        &l,
        seconds,
    );
    t.sample(
        "gauge",
        "tenure_job_last_run_timestamp_seconds",
        "When the last run finished (Unix seconds).",
        &l,
        now(),
    );
    t.finish()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64().floor())
}

/// Replaces `path` with `text` (written beside it, then renamed).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--metrics {}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("cannot write metrics to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_declare_each_name_once_and_escape_labels() {
        let mut t = Text::default();
        t.sample("gauge", "x_rows", "Rows.", &[("job", "a\"b\\c\nd")], 3.0);
        t.sample("gauge", "x_rows", "Rows.", &[("job", "e")], 4.5);
        t.sample("counter", "x_total", "All.", &[], 7.0);
        assert_eq!(
            t.finish(),
            "# HELP x_rows Rows.\n# TYPE x_rows gauge\nx_rows{job=\"a\\\"b\\\\c\\nd\"} 3\nx_rows{job=\"e\"} 4.5\n# HELP x_total All.\n# TYPE x_total counter\nx_total 7\n"
        );
    }
}

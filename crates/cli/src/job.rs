//! Batch job files (`tenure run job.toml`): parsing and validation into a
//! [`Job`], with every mistake reported at its file, line and column with a
//! hint, before any data is read.
//!
//! A job names its data, a time range, its outputs and a list of analyses:
//!
//! ```toml
//! name = "weekly_growth"
//! data = "./tenure-data"
//! out = "./tenure-out"
//! formats = ["parquet", "csv"]
//! range = "last 12 weeks"
//!
//! [[analysis]]
//! kind = "retention"
//! period = "week"
//! ```
//!
//! Each analysis is one [`Spec`] variant holding the options struct of its
//! subcommand (`tenure retention` and a `kind = "retention"` analysis accept
//! the same options, with the same defaults, and run the same function).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::cmd::abtest::AbtestOptions;
use crate::cmd::clv::ClvOptions;
use crate::cmd::common::Scope;
use crate::cmd::funnel::FunnelOptions;
use crate::cmd::kpi::KpiOptions;
use crate::cmd::lifecycle::{self, LifecycleOptions};
use crate::cmd::ltv::LtvOptions;
use crate::cmd::retention::RetentionOptions;
use crate::cmd::segment::{self, RfmOptions, SegmentOptions};
use crate::cmd::stickiness::StickinessOptions;
use crate::output::{self, FileFormat, Rows};
use crate::report::Kind;

/// The analyses a job can run, by `kind`.
pub const KINDS: &[&str] = &[
    "retention",
    "ltv",
    "lifecycle",
    "kpi",
    "funnel",
    "abtest",
    "rfm",
    "segment",
    "stickiness",
    "clv",
    "paths",
];

/// One analysis of a job: the options of the subcommand of the same name.
#[derive(Debug, Clone)]
pub enum Spec {
    /// `tenure retention`.
    Retention(RetentionOptions),
    /// `tenure ltv`.
    Ltv(LtvOptions),
    /// `tenure lifecycle`.
    Lifecycle(LifecycleOptions),
    /// `tenure kpi`.
    Kpi(KpiOptions),
    /// `tenure funnel`.
    Funnel(FunnelOptions),
    /// `tenure abtest` (from events).
    Abtest(AbtestOptions),
    /// `tenure rfm`.
    Rfm(RfmOptions),
    /// `tenure segment` (the count).
    Segment(SegmentOptions),
    /// `tenure stickiness`.
    Stickiness(StickinessOptions),
    /// `tenure clv`.
    Clv(ClvOptions),
    /// `tenure paths`.
    Paths(crate::cmd::paths::PathsOptions),
}

/// What an analysis produced: its rows, and extra rows a chart uses.
pub struct Computed {
    /// The rows written to the outputs.
    pub rows: Rows,
    /// Extra rows for the report (the RFM score grid).
    pub extra: Option<Rows>,
}

impl Spec {
    fn parse(kind: &str, table: Spanned<DeTable<'_>>) -> Result<Self, toml::de::Error> {
        let de = toml::de::Deserializer::from(table);
        Ok(match kind {
            "retention" => Spec::Retention(Deserialize::deserialize(de)?),
            "ltv" => Spec::Ltv(Deserialize::deserialize(de)?),
            "lifecycle" => Spec::Lifecycle(Deserialize::deserialize(de)?),
            "kpi" => Spec::Kpi(Deserialize::deserialize(de)?),
            "funnel" => Spec::Funnel(Deserialize::deserialize(de)?),
            "abtest" => Spec::Abtest(Deserialize::deserialize(de)?),
            "rfm" => Spec::Rfm(Deserialize::deserialize(de)?),
            "segment" => Spec::Segment(Deserialize::deserialize(de)?),
            "stickiness" => Spec::Stickiness(Deserialize::deserialize(de)?),
            "clv" => Spec::Clv(Deserialize::deserialize(de)?),
            "paths" => Spec::Paths(Deserialize::deserialize(de)?),
            other => unreachable!("kind `{other}` is checked against KINDS first"),
        })
    }

    /// The `kind` name.
    pub fn kind(&self) -> &'static str {
        self.report_kind().as_str()
    }

    /// The report section it is drawn as.
    pub fn report_kind(&self) -> Kind {
        match self {
            Spec::Retention(_) => Kind::Retention,
            Spec::Ltv(_) => Kind::Ltv,
            Spec::Lifecycle(o) => lifecycle::kind(o),
            Spec::Kpi(_) => Kind::Kpi,
            Spec::Funnel(o) if o.histogram => Kind::FunnelHistogram,
            Spec::Funnel(_) => Kind::Funnel,
            Spec::Abtest(_) => Kind::Abtest,
            Spec::Rfm(_) => Kind::Rfm,
            Spec::Segment(_) => Kind::Segment,
            Spec::Stickiness(_) => Kind::Stickiness,
            Spec::Clv(_) => Kind::Clv,
            Spec::Paths(_) => Kind::Paths,
        }
    }

    /// The options as `key=value` pairs (those set or defaulted), for plans
    /// and report headings.
    pub fn detail(&self) -> String {
        let value = match self {
            Spec::Retention(o) => serde_json::to_value(o),
            Spec::Ltv(o) => serde_json::to_value(o),
            Spec::Lifecycle(o) => serde_json::to_value(o),
            Spec::Kpi(o) => serde_json::to_value(o),
            Spec::Funnel(o) => serde_json::to_value(o),
            Spec::Abtest(o) => serde_json::to_value(o),
            Spec::Rfm(o) => serde_json::to_value(o),
            Spec::Segment(o) => serde_json::to_value(o),
            Spec::Stickiness(o) => serde_json::to_value(o),
            Spec::Clv(o) => serde_json::to_value(o),
            Spec::Paths(o) => serde_json::to_value(o),
        };
        let Ok(serde_json::Value::Object(map)) = value else {
            return String::new();
        };
        map.iter()
            .filter(|(_, v)| !v.is_null() && v != &&serde_json::json!([]))
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Checks the options without data; on error, names the key at fault.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        fn at<E: Into<anyhow::Error>>(key: &'static str) -> impl Fn(E) -> (&'static str, String) {
            move |e| (key, format!("{:#}", e.into()))
        }
        match self {
            Spec::Retention(o) => {
                o.validate_period().map_err(at("period"))?;
                o.validate_mode().map_err(at("mode"))
            }
            Spec::Ltv(o) => o.validate().map_err(at("period")),
            Spec::Lifecycle(o) => {
                o.validate_period().map_err(at("period"))?;
                o.validate_thresholds()
                    .map_err(|(k, e)| (k, format!("{e:#}")))
            }
            Spec::Kpi(o) => o.validate().map_err(at("period")),
            Spec::Funnel(o) => {
                o.validate_steps().map_err(at("steps"))?;
                o.validate_window().map_err(at("window"))?;
                o.validate_mode().map_err(at("mode"))
            }
            Spec::Abtest(o) => o.validate().map_err(|(k, e)| (k, format!("{e:#}"))),
            Spec::Rfm(o) => {
                o.validate().map_err(|(k, e)| (k, format!("{e:#}")))?;
                o.check().map_err(at("segments"))
            }
            // The expression is checked with its own spans (see `parse`).
            Spec::Segment(_) => Ok(()),
            Spec::Stickiness(o) => o.validate().map_err(at("period")),
            Spec::Clv(o) => o.validate().map_err(at("horizon")),
            Spec::Paths(o) => o.spec().map(|_| ()).map_err(|e| {
                let m = e.to_string();
                let key = ["depth", "top", "session"]
                    .into_iter()
                    .find(|k| m.contains(&format!("--{k}")))
                    .unwrap_or("after");
                (key, m)
            }),
        }
    }

    /// Makes segment file paths relative to the job file's directory.
    fn resolve_paths(&mut self, base: &std::path::Path) {
        let files = match self {
            Spec::Abtest(o) => &mut o.segments,
            Spec::Funnel(o) => &mut o.segments,
            Spec::Rfm(o) => &mut o.segments,
            Spec::Segment(o) => &mut o.segments,
            Spec::Retention(o) => &mut o.segment_files,
            _ => return,
        };
        for f in files.iter_mut() {
            if std::path::Path::new(f).is_relative() {
                *f = base.join(&*f).display().to_string();
            }
        }
    }

    /// Runs the analysis: the same request its subcommand computes.
    pub async fn compute(&self, scope: &Scope) -> anyhow::Result<Computed> {
        let answer = match self {
            Spec::Retention(o) => o.compute(scope).await?,
            Spec::Ltv(o) => o.compute(scope).await?,
            Spec::Lifecycle(o) => o.compute(scope).await?,
            Spec::Kpi(o) => o.compute(scope).await?,
            Spec::Funnel(o) => o.compute(scope).await?,
            Spec::Abtest(o) => o.compute(scope).await?,
            Spec::Segment(o) => o.compute(scope).await?,
            Spec::Stickiness(o) => o.compute(scope).await?,
            Spec::Clv(o) => o.compute(scope).await?,
            Spec::Paths(o) => o.compute(scope).await?,
            // RFM reads each customer's whole history up to the as-of
            // whatever the job's range (queries/rfm_refresh.toml); its
            // window is the `lookback` key.
            Spec::Rfm(o) => {
                let whole = Scope {
                    from: None,
                    ..scope.clone()
                };
                o.compute(&whole).await?
            }
        };
        Ok(Computed {
            rows: output::rows_of(&answer.table)?,
            extra: answer.extra.as_ref().map(output::rows_of).transpose()?,
        })
    }
}

/// A named analysis of a job.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Its name: the output folder and the report heading (default: the kind).
    pub name: String,
    /// What to run.
    pub spec: Spec,
}

/// The time range of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum RangeSpec {
    /// All data up to as-of.
    All,
    /// The last `n` whole units ending with the as-of day.
    Last {
        /// How many.
        n: u32,
        /// days, weeks or months.
        unit: Unit,
    },
    /// Absolute dates or instants (`from` inclusive, `to` inclusive of its day).
    Between {
        /// Start, if any.
        from: Option<String>,
        /// End, if any.
        to: Option<String>,
    },
}

/// A calendar unit of a relative range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Days.
    Day,
    /// Weeks of 7 days.
    Week,
    /// Calendar months.
    Month,
}

/// When "as of" is.
#[derive(Debug, Clone, PartialEq)]
pub enum AsOf {
    /// The time the job runs.
    Now,
    /// The end of the day of the newest event.
    Latest,
    /// A date (inclusive) or an RFC 3339 instant.
    At(String),
}

impl AsOf {
    /// Parses `now`, `latest` or a date/instant (checked later against the zone).
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "now" => AsOf::Now,
            "latest" => AsOf::Latest,
            other => AsOf::At(other.to_string()),
        }
    }
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name (the first folder under `out`).
    pub name: String,
    /// Store URL of the events.
    pub data: Option<String>,
    /// Where outputs go (a local directory or store URL).
    pub out: Option<String>,
    /// Output formats, each analysis written once per format.
    pub formats: Vec<FileFormat>,
    /// The time range.
    pub range: RangeSpec,
    /// The as-of of the job file (`--as-of` overrides it).
    pub as_of: AsOf,
    /// Time zone.
    pub tz: chrono_tz::Tz,
    /// Worker threads (0: the default).
    pub threads: usize,
    /// A Ballista cluster to run on (`df://host:port`; `--cluster` and
    /// `TENURE_CLUSTER` override it).
    pub cluster: Option<String>,
    /// The analyses, in file order.
    pub analyses: Vec<Analysis>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: Spanned<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    out: Option<String>,
    #[serde(default)]
    formats: Option<Spanned<Vec<FileFormat>>>,
    #[serde(default)]
    range: Option<Spanned<String>>,
    #[serde(default)]
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<String>>,
    #[serde(default)]
    as_of: Option<Spanned<String>>,
    #[serde(default)]
    tz: Option<Spanned<String>>,
    #[serde(default)]
    threads: usize,
    #[serde(default)]
    cluster: Option<String>,
}

/// A mistake in a job file, at a place in it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    /// Byte range in the file.
    pub span: Range<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// All mistakes of a job file, rendered against it.
#[derive(Debug)]
pub struct JobErrors {
    /// The file name as given.
    pub file: String,
    /// The rendered errors.
    pub text: String,
    /// How many.
    pub count: usize,
}

impl std::fmt::Display for JobErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text.trim_end())
    }
}

impl std::error::Error for JobErrors {}

fn err(span: Range<usize>, message: impl Into<String>, hint: Option<String>) -> JobError {
    JobError {
        span,
        message: message.into(),
        hint,
    }
}

/// Parses and validates a job file. `path` names it in errors and anchors
/// relative segment files.
pub fn parse(path: &str, text: &str) -> Result<Job, JobErrors> {
    let mut errors = Vec::new();
    let job = parse_inner(path, text, &mut errors);
    match job {
        Some(job) if errors.is_empty() => Ok(job),
        _ => Err(render(path, text, &errors)),
    }
}

fn from_toml(e: toml::de::Error, fallback: Range<usize>) -> JobError {
    let message = e.message().trim().to_string();
    let hint = unknown_field_hint(&message);
    err(e.span().unwrap_or(fallback), message, hint)
}

/// "did you mean ...?" for serde's "unknown field `x`, expected one of ..." messages.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match near(field, expected.iter().copied()) {
        Some(n) => Some(format!("did you mean `{n}`?")),
        None => Some("remove the key, or see `tenure run --help` for the keys of a job".into()),
    }
}

/// The closest name within a small edit distance.
fn near<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    names
        .map(|n| (strsim::levenshtein(&w, &n.to_ascii_lowercase()), n))
        .filter(|(d, n)| *d <= (n.len() / 3).max(1) + usize::from(n.len() > 6))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn parse_inner(path: &str, text: &str, errors: &mut Vec<JobError>) -> Option<Job> {
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            errors.push(from_toml(e, 0..0));
            return None;
        }
    };
    let doc_span = doc.span();
    let mut root = doc.into_inner();
    let analyses_value = root.remove("analysis");
    let header: Option<Header> = match Header::deserialize(toml::de::Deserializer::from(
        Spanned::new(doc_span.clone(), root),
    )) {
        Ok(h) => Some(h),
        Err(e) => {
            errors.push(from_toml(e, doc_span.clone()));
            None
        }
    };

    let base = std::path::Path::new(path)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut analyses = Vec::new();
    match analyses_value {
        None => errors.push(err(
            0..0,
            "the job has no analyses",
            Some(format!(
                "add one or more [[analysis]] tables with a `kind` ({})",
                KINDS.join(", ")
            )),
        )),
        Some(v) => {
            let span = v.span();
            match v.into_inner() {
                DeValue::Array(items) => {
                    for item in items {
                        if let Some(a) = parse_analysis(text, item, &base, errors) {
                            analyses.push(a);
                        }
                    }
                }
                _ => errors.push(err(
                    span,
                    "`analysis` must be an array of tables",
                    Some("write each analysis as an [[analysis]] table".into()),
                )),
            }
        }
    }
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for (a, span) in &analyses {
        if seen.insert(a.name.clone(), ()).is_some() {
            errors.push(err(
                span.clone(),
                format!("two analyses are named `{}`", a.name),
                Some("give each analysis its own `name`: it names its output folder".into()),
            ));
        }
    }

    let header = header?;
    let name = header.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(err(
            header.name.span(),
            format!("job name `{name}` cannot name a folder"),
            Some("use letters, digits, `_` and `-`".into()),
        ));
    }
    let tz = match &header.tz {
        None => chrono_tz::UTC,
        Some(t) => match tenure_engine::calendar::parse_tz(t.get_ref()) {
            Ok(tz) => tz,
            Err(e) => {
                errors.push(err(
                    t.span(),
                    e.to_string(),
                    Some("an IANA name such as `UTC` or `Asia/Tokyo`".into()),
                ));
                chrono_tz::UTC
            }
        },
    };
    let range = job_range(&header, tz, errors);
    let as_of = match &header.as_of {
        None => AsOf::Now,
        Some(s) => {
            let a = AsOf::parse(s.get_ref());
            if let AsOf::At(t) = &a
                && crate::cmd::common::parse_when(t, tz, true).is_err()
            {
                errors.push(err(
                    s.span(),
                    format!("`{t}` is not an as-of"),
                    Some("`now` (the default), `latest` (the end of the data), a date YYYY-MM-DD or an RFC 3339 instant".into()),
                ));
            }
            a
        }
    };
    let formats = match header.formats {
        None => vec![FileFormat::Parquet],
        Some(f) if f.get_ref().is_empty() => {
            errors.push(err(
                f.span(),
                "no output formats",
                Some("list one or more of \"parquet\", \"csv\", \"json\"".into()),
            ));
            vec![]
        }
        Some(f) => {
            let mut v = f.into_inner();
            v.dedup();
            v
        }
    };
    Some(Job {
        name,
        data: header.data,
        out: header.out,
        formats,
        range,
        as_of,
        tz,
        threads: header.threads,
        cluster: header.cluster,
        analyses: analyses.into_iter().map(|(a, _)| a).collect(),
    })
}

fn job_range(header: &Header, tz: chrono_tz::Tz, errors: &mut Vec<JobError>) -> RangeSpec {
    if let Some(r) = &header.range {
        if let Some(f) = header.from.as_ref().or(header.to.as_ref()) {
            errors.push(err(
                f.span(),
                "`range` and `from`/`to` both give the time range",
                Some("keep one: `range = \"last 12 weeks\"`, or `from`/`to` dates".into()),
            ));
        }
        return match parse_range(r.get_ref()) {
            Some(range) => range,
            None => {
                errors.push(err(
                    r.span(),
                    format!("`{}` is not a time range", r.get_ref()),
                    Some("write `last <N> days|weeks|months` (e.g. \"last 12 weeks\") or \"all\"; or give `from`/`to` dates".into()),
                ));
                RangeSpec::All
            }
        };
    }
    let mut check = |v: &Option<Spanned<String>>, end: bool| {
        if let Some(s) = v
            && crate::cmd::common::parse_when(s.get_ref(), tz, end).is_err()
        {
            errors.push(err(
                s.span(),
                format!("`{}` is not a date or instant", s.get_ref()),
                Some("a date YYYY-MM-DD (in `tz`) or an RFC 3339 instant".into()),
            ));
        }
    };
    check(&header.from, false);
    check(&header.to, true);
    if header.from.is_none() && header.to.is_none() {
        return RangeSpec::All;
    }
    RangeSpec::Between {
        from: header.from.as_ref().map(|s| s.get_ref().clone()),
        to: header.to.as_ref().map(|s| s.get_ref().clone()),
    }
}

/// Parses `all` or `last <N> <unit>` (days, weeks, months; singular too).
pub fn parse_range(s: &str) -> Option<RangeSpec> {
    let words: Vec<&str> = s.split_whitespace().collect();
    match words.as_slice() {
        ["all"] => Some(RangeSpec::All),
        ["last", n, unit] => {
            let n: u32 = n.parse().ok().filter(|&n| n > 0)?;
            let unit = match unit.to_ascii_lowercase().trim_end_matches('s') {
                "day" => Unit::Day,
                "week" => Unit::Week,
                "month" => Unit::Month,
                _ => return None,
            };
            Some(RangeSpec::Last { n, unit })
        }
        _ => None,
    }
}

fn parse_analysis(
    text: &str,
    item: Spanned<DeValue<'_>>,
    base: &std::path::Path,
    errors: &mut Vec<JobError>,
) -> Option<(Analysis, Range<usize>)> {
    let span = item.span();
    let DeValue::Table(mut table) = item.into_inner() else {
        errors.push(err(
            span,
            "an analysis must be a table",
            Some("write it as an [[analysis]] table".into()),
        ));
        return None;
    };
    let take_str = |table: &mut DeTable<'_>, key: &str, errors: &mut Vec<JobError>| {
        let v = table.remove(key)?;
        let vspan = v.span();
        match v.into_inner() {
            DeValue::String(s) => Some(Spanned::new(vspan, s.to_string())),
            _ => {
                errors.push(err(vspan, format!("`{key}` must be a string"), None));
                None
            }
        }
    };
    // Spans of the option values, to point validation errors at them.
    let keys: BTreeMap<String, Range<usize>> = table
        .iter()
        .map(|(k, v)| (k.get_ref().to_string(), v.span()))
        .collect();
    let Some(kind) = take_str(&mut table, "kind", errors) else {
        errors.push(err(
            span,
            "the analysis has no `kind`",
            Some(format!("add `kind = ...`, one of {}", KINDS.join(", "))),
        ));
        return None;
    };
    let name = take_str(&mut table, "name", errors);
    if !KINDS.contains(&kind.get_ref().as_str()) {
        let hint = match near(kind.get_ref(), KINDS.iter().copied()) {
            Some(n) => format!("did you mean `{n}`? (kinds: {})", KINDS.join(", ")),
            None => format!("one of {}", KINDS.join(", ")),
        };
        errors.push(err(
            kind.span(),
            format!("unknown analysis kind `{}`", kind.get_ref()),
            Some(hint),
        ));
        return None;
    }
    let mut spec = match Spec::parse(kind.get_ref(), Spanned::new(span.clone(), table)) {
        Ok(s) => s,
        Err(e) => {
            errors.push(from_toml(e, span));
            return None;
        }
    };
    let name = match name {
        Some(n) => {
            let ok = !n.get_ref().is_empty()
                && n.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                errors.push(err(
                    n.span(),
                    format!("analysis name `{}` cannot name a folder", n.get_ref()),
                    Some("use letters, digits, `_` and `-`".into()),
                ));
            }
            n.into_inner()
        }
        None => kind.get_ref().clone(),
    };
    if let Spec::Segment(o) = &spec
        && let Err(e) = segment::check(&o.expr, &resolved(&o.segments, base))
    {
        let expr_span = keys.get("expr").cloned().unwrap_or(span.clone());
        errors.push(match e {
            segment::CheckError::Expr(d) => dsl_job_error(&d, text, &o.expr, expr_span),
            segment::CheckError::Other(e) => err(
                keys.get("segments").cloned().unwrap_or(expr_span),
                format!("{e:#}"),
                None,
            ),
        });
    }
    spec.resolve_paths(base);
    if let Err((key, message)) = spec.validate() {
        errors.push(err(
            keys.get(key).cloned().unwrap_or(span.clone()),
            message,
            None,
        ));
    }
    Some((Analysis { name, spec }, span))
}

fn resolved(files: &[String], base: &std::path::Path) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            if std::path::Path::new(f).is_relative() {
                base.join(f).display().to_string()
            } else {
                f.clone()
            }
        })
        .collect()
}

/// A segment-language error at its place inside the TOML string that holds
/// the expression (exact when the string is written as-is between single
/// quotes, else at the string's start).
fn dsl_job_error(
    e: &tenure_dsl::DslError,
    text: &str,
    expr: &str,
    value: Range<usize>,
) -> JobError {
    let inner = e.span();
    // The value span covers the quotes; the expression starts after the first.
    let start = value.start + 1;
    let verbatim = text.get(start..start + expr.len()) == Some(expr);
    let span = if verbatim {
        start + inner.start.min(expr.len())..start + inner.end.min(expr.len())
    } else {
        value
    };
    let mut message = format!("bad segment expression: {e}");
    if let Some(x) = e.expected() {
        let _ = write!(message, " (expected {x})");
    }
    err(span, message, e.help())
}

/// Line and column (1-based, in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn render(path: &str, text: &str, errors: &[JobError]) -> JobErrors {
    let mut out = String::new();
    let mut errors: Vec<&JobError> = errors.iter().collect();
    errors.sort_by_key(|e| e.span.start);
    for e in &errors {
        // A span in the middle of a literal of a different text would be a
        // bug; clamp to the text so rendering never panics.
        let start = floor(text, e.span.start.min(text.len()));
        let end = floor(text, e.span.end.clamp(start, text.len()));
        let (line, col) = line_col(text, start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let src = text[line_start..line_end].trim_end_matches('\r');
        let width = text[start..end.min(line_end).max(start)]
            .chars()
            .count()
            .max(1);
        let gutter = " ".repeat(line.to_string().len());
        let _ = writeln!(out, "{path}:{line}:{col}: {}", e.message);
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{line} | {src}");
        let _ = writeln!(
            out,
            "{gutter} | {}{}",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        if let Some(h) = &e.hint {
            let _ = writeln!(out, "{gutter} = hint: {h}");
        }
    }
    JobErrors {
        file: path.to_string(),
        text: out,
        count: errors.len(),
    }
}

fn floor(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The job's range and as-of resolved to instants: `(from, to, as_of)` in UTC
/// µs, `to` and `as_of` exclusive. `latest` is the end of the day of `max_ts`
/// (the newest event), which the caller reads only when needed.
pub fn resolve_times(
    range: &RangeSpec,
    as_of: &AsOf,
    tz: chrono_tz::Tz,
    now: i64,
    max_ts: Option<i64>,
) -> anyhow::Result<(Option<i64>, Option<i64>, i64)> {
    use crate::cmd::common::parse_when;
    let day_end =
        |t: i64| -> anyhow::Result<i64> { parse_when(&local_date(t, tz).to_string(), tz, true) };
    let as_of = match as_of {
        AsOf::Now => now,
        AsOf::At(s) => parse_when(s, tz, true)?,
        AsOf::Latest => match max_ts {
            Some(t) => day_end(t)?,
            None => anyhow::bail!("the store has no events, so `as_of = \"latest\"` has no date"),
        },
    };
    let last_day = local_date(as_of - 1, tz);
    let (from, to) = match range {
        RangeSpec::All => (None, None),
        RangeSpec::Between { from, to } => (
            from.as_deref()
                .map(|s| parse_when(s, tz, false))
                .transpose()?,
            to.as_deref().map(|s| parse_when(s, tz, true)).transpose()?,
        ),
        RangeSpec::Last { n, unit } => {
            let first = match unit {
                Unit::Day => last_day - chrono::Days::new(u64::from(*n) - 1),
                Unit::Week => last_day - chrono::Days::new(7 * u64::from(*n) - 1),
                Unit::Month => (last_day + chrono::Days::new(1)) - chrono::Months::new(*n),
            };
            (Some(parse_when(&first.to_string(), tz, false)?), None)
        }
    };
    // "As of T" sees nothing after T.
    let to = Some(to.map_or(as_of, |t| t.min(as_of)));
    Ok((from, to, as_of))
}

/// The calendar date of an instant in a zone.
pub fn local_date(t: i64, tz: chrono_tz::Tz) -> chrono::NaiveDate {
    use chrono::TimeZone;
    tz.timestamp_micros(t)
        .single()
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("all"), Some(RangeSpec::All));
        assert_eq!(
            parse_range("last 12 weeks"),
            Some(RangeSpec::Last {
                n: 12,
                unit: Unit::Week
            })
        );
        assert_eq!(
            parse_range("last 1 month"),
            Some(RangeSpec::Last {
                n: 1,
                unit: Unit::Month
            })
        );
        assert_eq!(parse_range("last 0 days"), None);
        assert_eq!(parse_range("last twelve weeks"), None);
        assert_eq!(parse_range("12w"), None);
    }

    #[test]
    fn last_weeks_are_whole_days_ending_with_the_as_of_day() {
        let tz = chrono_tz::UTC;
        let (from, to, as_of) = resolve_times(
            &RangeSpec::Last {
                n: 2,
                unit: Unit::Week,
            },
            &AsOf::At("2026-03-31".into()),
            tz,
            0,
            None,
        )
        .unwrap();
        let day = |s: &str, end| crate::cmd::common::parse_when(s, tz, end).unwrap();
        assert_eq!(as_of, day("2026-03-31", true));
        assert_eq!(to, Some(as_of));
        assert_eq!(from, Some(day("2026-03-18", false)));
        let (from, _, _) = resolve_times(
            &RangeSpec::Last {
                n: 3,
                unit: Unit::Month,
            },
            &AsOf::At("2026-03-31".into()),
            tz,
            0,
            None,
        )
        .unwrap();
        assert_eq!(from, Some(day("2026-01-01", false)));
        let (_, _, latest) = resolve_times(
            &RangeSpec::All,
            &AsOf::Latest,
            tz,
            0,
            Some(day("2026-02-03", false) + 5),
        )
        .unwrap();
        assert_eq!(latest, day("2026-02-03", true));
    }
}

//! The HTML report (`tenure run --report`, `--format html`): one self-contained
//! page, no scripts and no network assets, with a chart per analysis drawn as
//! inline SVG and the numbers as a table beside it. Built from the same tidy
//! rows the analyses write, so the report never shows a number the outputs do
//! not hold. Every text that comes from data (event names, property values,
//! segment names, error messages) goes through [`esc`].

mod charts;
mod frame;
mod svg;

use std::fmt::Write as _;

use serde_json::Value;

use crate::output::Rows;

/// Which chart a section gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Cohort retention: the heatmap triangle.
    Retention,
    /// Cumulative LTV: one curve per cohort.
    Ltv,
    /// Lifecycle counts per period: stacked bars.
    Lifecycle,
    /// Users per lifecycle stage: bars.
    LifecycleStages,
    /// KPIs: a metric by period table.
    Kpi,
    /// Funnel: conversion bars per step, one funnel per group (variant).
    Funnel,
    /// Funnel time-to-convert histogram: bars per bucket.
    FunnelHistogram,
    /// A/B readout: lift with its confidence interval per treatment arm.
    Abtest,
    /// RFM: the R x F score grid and the segment sizes.
    Rfm,
    /// A segment count.
    Segment,
    /// Stickiness: users by active days, per period.
    Stickiness,
    /// Predictive CLV: the fitted models, and the holdout check's actual
    /// purchases per calibration frequency when there is one.
    Clv,
    /// Paths from an event: a Sankey diagram of the path tree.
    Paths,
}

impl Kind {
    /// The analysis name (as in job files and subcommands).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Retention => "retention",
            Kind::Ltv => "ltv",
            Kind::Lifecycle | Kind::LifecycleStages => "lifecycle",
            Kind::Kpi => "kpi",
            Kind::Funnel | Kind::FunnelHistogram => "funnel",
            Kind::Abtest => "abtest",
            Kind::Rfm => "rfm",
            Kind::Segment => "segment",
            Kind::Stickiness => "stickiness",
            Kind::Clv => "clv",
            Kind::Paths => "paths",
        }
    }
}

/// One analysis in the report.
#[derive(Debug, Clone)]
pub struct Section {
    /// The analysis name (the job's, or the subcommand's).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// A line saying what was asked (options), shown under the title.
    pub detail: String,
    /// Its rows, or why it failed.
    pub result: Result<Rows, String>,
    /// Extra rows some charts use (the RFM score grid).
    pub extra: Option<Rows>,
}

impl Section {
    /// A section without detail or extra rows.
    pub fn new(name: &str, kind: Kind, result: Result<Rows, String>) -> Self {
        Self {
            name: name.into(),
            kind,
            detail: String::new(),
            result,
            extra: None,
        }
    }
}

/// Escapes text for HTML element content and attribute values (also inside SVG).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 2px}
.meta{color:#555;margin:0 0 16px}.meta span{margin-right:18px}
section{border-top:1px solid #d0d7de;padding:14px 0 18px}
.detail{color:#555;font-size:12px;margin:0 0 10px;font-family:ui-monospace,monospace}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.chart{flex:none}.chart svg{display:block}
table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f3f5f7}td.l,th.l{text-align:left}
.nums{flex:1 1 320px;min-width:0;max-height:620px;overflow:auto}
.error{background:#fff0f0;border:1px solid #e5a0a0;color:#8b1a1a;padding:8px 10px;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
.summary td.ok{color:#116329}.summary td.failed{color:#a40e26}
@media print{
 body{margin:0;font-size:10pt}
 section{break-inside:avoid;page-break-inside:avoid}
 .pair{display:block}.chart svg{max-width:100%;height:auto}.nums{max-height:none;overflow:visible;margin-top:8px}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
";

/// The whole page: a title, meta lines (key, value), a summary of the
/// sections, then each section.
pub fn page(title: &str, meta: &[(String, String)], sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    if !meta.is_empty() {
        out.push_str("<p class=\"meta\">");
        for (k, v) in meta {
            let _ = write!(out, "<span><b>{}</b> {}</span>", esc(k), esc(v));
        }
        out.push_str("</p>\n");
    }
    if sections.len() > 1 {
        out.push_str("<table class=\"summary\"><tr><th class=\"l\">analysis</th><th class=\"l\">kind</th><th>rows</th><th class=\"l\">status</th></tr>");
        for s in sections {
            let (rows, status) = match &s.result {
                Ok(r) => (
                    r.len().to_string(),
                    "<td class=\"l ok\">ok</td>".to_string(),
                ),
                Err(_) => (
                    String::new(),
                    "<td class=\"l failed\">failed</td>".to_string(),
                ),
            };
            let _ = write!(
                out,
                "<tr><td class=\"l\"><a href=\"#{}\">{}</a></td><td class=\"l\">{}</td><td>{rows}</td>{status}</tr>",
                esc(&anchor(&s.name)),
                esc(&s.name),
                s.kind.as_str()
            );
        }
        out.push_str("</table>\n");
    }
    for s in sections {
        section(&mut out, s);
    }
    out.push_str("</body></html>\n");
    out
}

/// A page holding one table (SQL results, segment users).
pub fn table_page(title: &str, rows: &Rows) -> String {
    let mut out = page(title, &[], &[]);
    let at = out.rfind("</body>").unwrap_or(out.len());
    out.insert_str(at, &table(rows));
    out
}

fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn section(out: &mut String, s: &Section) {
    let _ = write!(
        out,
        "<section id=\"{}\"><h2>{}</h2>",
        esc(&anchor(&s.name)),
        esc(&s.name)
    );
    let _ = write!(
        out,
        "<p class=\"detail\">{}{}{}</p>",
        s.kind.as_str(),
        if s.detail.is_empty() { "" } else { ": " },
        esc(&s.detail)
    );
    match &s.result {
        Err(e) => {
            let _ = write!(out, "<div class=\"error\">failed: {}</div>", esc(e));
        }
        Ok(json) => {
            let typed = frame::Frame::of(json);
            let extra = s.extra.as_ref().map(frame::Frame::of).transpose();
            let (rows, extra) = match (typed, extra) {
                (Ok(rows), Ok(extra)) => (rows, extra),
                (Err(e), _) | (_, Err(e)) => {
                    let _ = write!(
                        out,
                        "<div class=\"error\">failed: {}</div>",
                        esc(&format!("{e:#}"))
                    );
                    out.push_str("</section>\n");
                    return;
                }
            };
            let rows = &rows;
            let (chart, numbers) = match s.kind {
                Kind::Retention => charts::retention(rows),
                Kind::Ltv => charts::ltv(rows),
                Kind::Lifecycle => charts::lifecycle(rows),
                Kind::LifecycleStages => charts::bars_section(rows, "stage", "users", Some("axis")),
                Kind::Kpi => (String::new(), charts::kpi(rows)),
                Kind::Funnel => charts::funnel(rows),
                Kind::FunnelHistogram => charts::histogram(rows),
                Kind::Rfm => charts::rfm(rows, extra.as_ref()),
                Kind::Abtest => charts::abtest(rows),
                Kind::Segment => charts::segment(rows),
                Kind::Stickiness => charts::bars_section(rows, "days", "users", Some("period")),
                Kind::Clv => charts::clv(rows, extra.as_ref()),
                Kind::Paths => charts::paths(rows),
            };
            out.push_str("<div class=\"pair\">");
            if !chart.is_empty() {
                let _ = write!(out, "<div class=\"chart\">{chart}</div>");
            }
            let _ = write!(out, "<div class=\"nums\">{numbers}</div></div>");
        }
    }
    out.push_str("</section>\n");
}

// ---- reading tidy rows ----

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fmt_num(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            format!("{x:.4}")
        }
        other => text(other),
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A plain table of all rows (the numbers beside a chart).
pub fn table(rows: &Rows) -> String {
    let mut out = String::from("<table><tr>");
    for c in &rows.columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>");
    for r in &rows.rows {
        out.push_str("<tr>");
        for v in r {
            let cls = if matches!(v, Value::String(_)) {
                " class=\"l\""
            } else {
                ""
            };
            let _ = write!(out, "<td{cls}>{}</td>", esc(&fmt_num(v)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// A table with a header row and a first (label) column.
fn grid_table(head: &[String], body: &[Vec<String>]) -> String {
    let mut out = String::from("<table><tr>");
    for (i, h) in head.iter().enumerate() {
        let cls = if i == 0 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{cls}>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in body {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let cls = if i == 0 { " class=\"l\"" } else { "" };
            let _ = write!(out, "<td{cls}>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_from_data() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn data_text_never_reaches_the_page_raw() {
        let rows = Rows {
            typed: None,
            columns: vec!["segment".into(), "users".into(), "share".into()],
            rows: vec![vec![
                "<img src=x onerror=alert(1)>".into(),
                3.into(),
                0.5.into(),
            ]],
        };
        let html = page(
            "t",
            &[],
            &[
                Section::new("<b>seg</b>", Kind::Segment, Ok(rows)),
                Section::new("x", Kind::Kpi, Err("<oops>".into())),
            ],
        );
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>seg"));
        assert!(!html.contains("<oops>"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}

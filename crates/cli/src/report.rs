//! The HTML report (`tenure run --report`, `--format html`): one self-contained
//! page, no scripts and no network assets, with a chart per analysis drawn as
//! inline SVG and the numbers as a table beside it. Built from the same tidy
//! rows the analyses write, so the report never shows a number the outputs do
//! not hold. Every text that comes from data (event names, property values,
//! segment names, error messages) goes through [`esc`].

use std::collections::BTreeMap;
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
    /// RFM: the R x F score grid and the segment sizes.
    Rfm,
    /// A segment count.
    Segment,
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
            Kind::Rfm => "rfm",
            Kind::Segment => "segment",
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
        Ok(rows) => {
            let (chart, numbers) = match s.kind {
                Kind::Retention => retention(rows),
                Kind::Ltv => ltv(rows),
                Kind::Lifecycle => lifecycle(rows),
                Kind::LifecycleStages => bars_section(rows, "stage", "users", Some("axis")),
                Kind::Kpi => (String::new(), kpi(rows)),
                Kind::Funnel => funnel(rows),
                Kind::FunnelHistogram => histogram(rows),
                Kind::Rfm => rfm(rows, s.extra.as_ref()),
                Kind::Segment => segment(rows),
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

fn col(rows: &Rows, name: &str) -> Option<usize> {
    rows.columns.iter().position(|c| c == name)
}

fn get<'a>(rows: &Rows, r: &'a [Value], name: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    col(rows, name).and_then(|i| r.get(i)).unwrap_or(&NULL)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
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

/// The distinct values of a column, in first-seen order.
fn distinct(rows: &Rows, name: &str, filter: impl Fn(&[Value]) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    for r in rows.rows.iter().filter(|r| filter(r)) {
        let v = text(get(rows, r, name));
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
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

// ---- SVG helpers ----

/// A blue for a share in 0..=1 (light to dark), and the text colour on it.
fn blue(x: f64) -> (String, &'static str) {
    let x = x.clamp(0.0, 1.0).sqrt();
    let lerp = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    let c = format!(
        "#{:02x}{:02x}{:02x}",
        lerp(239.0, 8.0),
        lerp(246.0, 48.0),
        lerp(255.0, 107.0)
    );
    (c, if x > 0.55 { "#fff" } else { "#1b1f24" })
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn svg_open(out: &mut String, w: f64, h: f64, label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-label=\"{}\" \
         font-family=\"system-ui,sans-serif\" font-size=\"11\">",
        esc(label)
    );
}

fn svg_text(out: &mut String, x: f64, y: f64, anchor: &str, fill: &str, s: &str) {
    let _ = write!(
        out,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" fill=\"{fill}\">{}</text>",
        esc(s)
    );
}

/// Round axis maximum and tick step for values up to `max`.
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let mag = 10f64.powf(max.log10().floor());
    let step = [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|s| s * mag)
        .find(|s| max / s <= 5.0)
        .unwrap_or(mag * 10.0);
    ((max / step).ceil() * step, step)
}

fn short(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x.abs() >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

// ---- retention: heatmap triangle ----

fn retention(rows: &Rows) -> (String, String) {
    let groups = distinct(rows, "group", |_| true);
    let mut chart = String::new();
    let mut numbers = String::new();
    for g in &groups {
        let in_group = |r: &[Value]| text(get(rows, r, "group")) == *g;
        let labels = distinct(rows, "period_label", |r| in_group(r));
        let cohorts = distinct(rows, "cohort", |r| {
            in_group(r) && text(get(rows, r, "kind")) == "cohort"
        });
        // (cohort or "average") -> period label -> (rate, users, complete)
        let mut cells: BTreeMap<(String, String), (Option<f64>, bool)> = BTreeMap::new();
        let mut sizes: BTreeMap<String, String> = BTreeMap::new();
        for r in rows.rows.iter().filter(|r| in_group(r)) {
            let key = if text(get(rows, r, "kind")) == "average" {
                "average".to_string()
            } else {
                text(get(rows, r, "cohort"))
            };
            sizes.insert(key.clone(), text(get(rows, r, "cohort_size")));
            cells.insert(
                (key, text(get(rows, r, "period_label"))),
                (
                    num(get(rows, r, "rate")),
                    get(rows, r, "complete") == &Value::Bool(true),
                ),
            );
        }
        let mut lines: Vec<String> = cohorts.clone();
        lines.push("average".into());
        let (cw, ch, left, top) = (46.0, 22.0, 150.0, 36.0);
        let w = left + cw * labels.len() as f64 + 10.0;
        let h = top + ch * lines.len() as f64 + 10.0;
        let title = if g.is_empty() {
            "retention by cohort".to_string()
        } else {
            format!("retention, {g}")
        };
        svg_open(&mut chart, w, h, &title);
        if !g.is_empty() {
            svg_text(&mut chart, 4.0, 12.0, "start", "#1b1f24", g);
        }
        svg_text(
            &mut chart,
            left - 6.0,
            top - 8.0,
            "end",
            "#555",
            "cohort (users)",
        );
        for (j, l) in labels.iter().enumerate() {
            svg_text(
                &mut chart,
                left + cw * (j as f64 + 0.5),
                top - 8.0,
                "middle",
                "#555",
                l,
            );
        }
        let mut body = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let y = top + ch * i as f64;
            let size = sizes.get(line).cloned().unwrap_or_default();
            let label = if line == "average" {
                "average".to_string()
            } else {
                format!("{line} ({size})")
            };
            svg_text(&mut chart, left - 6.0, y + 15.0, "end", "#1b1f24", &label);
            let mut row = vec![
                line.clone(),
                if line == "average" {
                    String::new()
                } else {
                    size
                },
            ];
            for (j, l) in labels.iter().enumerate() {
                let x = left + cw * j as f64;
                match cells.get(&(line.clone(), l.clone())) {
                    Some((Some(rate), true)) => {
                        let (fill, ink) = blue(*rate);
                        let _ = write!(
                            chart,
                            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>{}</title></rect>",
                            cw - 1.0,
                            ch - 1.0,
                            esc(&format!("{line}, {l}: {}", pct(*rate)))
                        );
                        svg_text(
                            &mut chart,
                            x + cw / 2.0,
                            y + 15.0,
                            "middle",
                            ink,
                            &pct(*rate),
                        );
                        row.push(pct(*rate));
                    }
                    Some((_, true)) => row.push("-".into()),
                    // Not elapsed yet (or past the end of the data).
                    _ => row.push("…".into()),
                }
            }
            body.push(row);
        }
        chart.push_str("</svg>");
        let mut head = vec![
            if g.is_empty() {
                "cohort".to_string()
            } else {
                g.clone()
            },
            "users".to_string(),
        ];
        head.extend(labels.iter().cloned());
        numbers.push_str(&grid_table(&head, &body));
    }
    numbers.push_str("<p class=\"detail\">… = period not complete yet</p>");
    (chart, numbers)
}

// ---- line chart (LTV curves) ----

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    bold: bool,
}

fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (560.0, 320.0, 56.0, 130.0, 16.0, 40.0);
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (ymax, ystep) = nice(max_y);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sx = |x: f64| left + pw * x / max_x;
    let sy = |y: f64| top + ph * (1.0 - y / ymax);
    let mut out = String::new();
    svg_open(&mut out, w, h, title);
    let mut t = 0.0;
    while t <= ymax + 1e-9 {
        let y = sy(t);
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e8eb\"/>",
            left + pw
        );
        svg_text(&mut out, left - 4.0, y + 4.0, "end", "#555", &short(t));
        t += ystep;
    }
    let xstep = (max_x / 12.0).ceil().max(1.0);
    let mut x = 0.0;
    while x <= max_x + 1e-9 {
        svg_text(
            &mut out,
            sx(x),
            top + ph + 14.0,
            "middle",
            "#555",
            &short(x),
        );
        x += xstep;
    }
    let _ = write!(
        out,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\"/>",
        left + pw,
        top + ph,
        top + ph
    );
    svg_text(
        &mut out,
        left + pw / 2.0,
        h - 6.0,
        "middle",
        "#555",
        x_label,
    );
    let _ = write!(
        out,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    let mut legend_y = top + 8.0;
    let mut color_i = 0;
    for s in series {
        let (color, width) = if s.bold {
            ("#1b1f24", 3.0)
        } else {
            color_i += 1;
            (PALETTE[(color_i - 1) % PALETTE.len()], 1.5)
        };
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"><title>{}</title></polyline>",
            pts.join(" "),
            esc(&s.name)
        );
        if legend_y < h - bottom {
            let lx = left + pw + 10.0;
            let _ = write!(
                out,
                "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"{width}\"/>",
                lx + 16.0,
                legend_y - 4.0,
                legend_y - 4.0
            );
            svg_text(&mut out, lx + 20.0, legend_y, "start", "#1b1f24", &s.name);
            legend_y += 14.0;
        }
    }
    out.push_str("</svg>");
    out
}

fn ltv(rows: &Rows) -> (String, String) {
    let periods = distinct(rows, "period", |_| true);
    let mut keys: Vec<String> =
        distinct(rows, "cohort", |r| text(get(rows, r, "kind")) == "cohort");
    keys.push("average".into());
    let key_of = |r: &[Value]| {
        if text(get(rows, r, "kind")) == "average" {
            "average".to_string()
        } else {
            text(get(rows, r, "cohort"))
        }
    };
    let mut series = Vec::new();
    let mut body = Vec::new();
    for k in &keys {
        let mut points = Vec::new();
        let mut line = vec![k.clone(), String::new()];
        for p in &periods {
            let cell = rows
                .rows
                .iter()
                .find(|r| key_of(r) == *k && text(get(rows, r, "period")) == *p);
            let v = cell.and_then(|r| num(get(rows, r, "ltv")));
            if let Some(r) = cell
                && k != "average"
            {
                line[1] = text(get(rows, r, "cohort_size"));
            }
            match (v, p.parse::<f64>()) {
                (Some(v), Ok(x)) => {
                    points.push((x, v));
                    line.push(format!("{v:.2}"));
                }
                _ => line.push("…".into()),
            }
        }
        series.push(Series {
            name: k.clone(),
            points,
            bold: k == "average",
        });
        body.push(line);
    }
    let chart = line_chart("cumulative LTV per cohort user", "period", "LTV", &series);
    let mut head = vec!["cohort".to_string(), "users".to_string()];
    head.extend(periods.iter().cloned());
    (chart, grid_table(&head, &body))
}

// ---- lifecycle: stacked bars ----

fn lifecycle(rows: &Rows) -> (String, String) {
    const STATUS: [(&str, &str); 4] = [
        ("new", "#2ca02c"),
        ("returning", "#1f77b4"),
        ("resurrecting", "#ff7f0e"),
        ("dormant", "#d62728"),
    ];
    let periods = distinct(rows, "period", |_| true);
    let value = |p: &str, s: &str| {
        rows.rows
            .iter()
            .find(|r| text(get(rows, r, "period")) == p && text(get(rows, r, "status")) == s)
            .and_then(|r| num(get(rows, r, "users")))
            .unwrap_or(0.0)
    };
    let up_max = periods
        .iter()
        .map(|p| value(p, "new") + value(p, "returning") + value(p, "resurrecting"))
        .fold(0.0f64, f64::max);
    let down_max = periods
        .iter()
        .map(|p| value(p, "dormant"))
        .fold(0.0f64, f64::max);
    let (ymax, step) = nice(up_max.max(down_max));
    let (left, top, ph, bw) = (56.0, 16.0, 260.0, 22.0);
    let w = left + bw * periods.len() as f64 + 130.0;
    let h = top + ph + 56.0;
    let zero = top + ph * ymax / (2.0 * ymax);
    let scale = ph / (2.0 * ymax);
    let mut out = String::new();
    svg_open(&mut out, w, h, "lifecycle per period");
    let mut t = -ymax;
    while t <= ymax + 1e-9 {
        let y = zero - t * scale;
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
            left + bw * periods.len() as f64,
            if t == 0.0 { "#555" } else { "#e5e8eb" }
        );
        svg_text(
            &mut out,
            left - 4.0,
            y + 4.0,
            "end",
            "#555",
            &short(t.abs()),
        );
        t += step;
    }
    for (i, p) in periods.iter().enumerate() {
        let x = left + bw * i as f64 + 2.0;
        let mut y = zero;
        for (s, color) in &STATUS[..3] {
            let v = value(p, s) * scale;
            y -= v;
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{v:.1}\" fill=\"{color}\"><title>{}</title></rect>",
                bw - 4.0,
                esc(&format!("{p} {s}: {}", value(p, s)))
            );
        }
        let v = value(p, "dormant") * scale;
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{zero:.1}\" width=\"{:.1}\" height=\"{v:.1}\" fill=\"{}\"><title>{}</title></rect>",
            bw - 4.0,
            STATUS[3].1,
            esc(&format!("{p} dormant: {}", value(p, "dormant")))
        );
        if i % 2 == 0 || periods.len() <= 14 {
            let lx = x + bw / 2.0 - 2.0;
            let ly = top + ph + 10.0;
            let _ = write!(
                out,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" transform=\"rotate(60 {lx:.1} {ly:.1})\" fill=\"#555\" font-size=\"9\">{}</text>",
                esc(p)
            );
        }
    }
    let lx = left + bw * periods.len() as f64 + 12.0;
    for (i, (s, color)) in STATUS.iter().enumerate() {
        let y = top + 14.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{y:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/>"
        );
        svg_text(&mut out, lx + 14.0, y + 9.0, "start", "#1b1f24", s);
    }
    out.push_str("</svg>");
    let mut head = vec!["period".to_string()];
    head.extend(STATUS.iter().map(|(s, _)| s.to_string()));
    let body = periods
        .iter()
        .map(|p| {
            let mut line = vec![p.clone()];
            line.extend(STATUS.iter().map(|(s, _)| short(value(p, s))));
            line
        })
        .collect::<Vec<_>>();
    (out, grid_table(&head, &body))
}

// ---- horizontal bars (stages, segments) ----

fn bars(items: &[(String, f64)], title: &str) -> String {
    let max = items.iter().map(|i| i.1).fold(0.0f64, f64::max).max(1.0);
    let (left, bar_w, bh) = (170.0, 300.0, 20.0);
    let h = 8.0 + bh * items.len() as f64;
    let mut out = String::new();
    svg_open(&mut out, left + bar_w + 70.0, h, title);
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 4.0 + bh * i as f64;
        svg_text(
            &mut out,
            left - 6.0,
            y + 14.0,
            "end",
            "#1b1f24",
            &clip(label, 26),
        );
        let w = bar_w * v / max;
        let _ = write!(
            out,
            "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"><title>{}</title></rect>",
            bh - 4.0,
            esc(&format!("{label}: {}", short(*v)))
        );
        svg_text(
            &mut out,
            left + w + 4.0,
            y + 14.0,
            "start",
            "#1b1f24",
            &short(*v),
        );
    }
    out.push_str("</svg>");
    out
}

/// At most `n` characters, with an ellipsis when cut (the full text stays in
/// the table and the bar's tooltip).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// A segment count: the matched users as a share of all users.
fn segment(rows: &Rows) -> (String, String) {
    let mut out = String::new();
    let (w, left, bar_w) = (520.0, 10.0, 400.0);
    svg_open(
        &mut out,
        w,
        16.0 + 34.0 * rows.len() as f64,
        "segment share of users",
    );
    for (i, r) in rows.rows.iter().enumerate() {
        let y = 6.0 + 34.0 * i as f64;
        let users = num(get(rows, r, "users")).unwrap_or(0.0);
        let total = num(get(rows, r, "total_users")).unwrap_or(0.0);
        let share = if total > 0.0 { users / total } else { 0.0 };
        let expr = text(get(rows, r, "segment"));
        svg_text(
            &mut out,
            left,
            y + 10.0,
            "start",
            "#1b1f24",
            &clip(&expr, 70),
        );
        let _ = write!(
            out,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"{bar_w}\" height=\"14\" fill=\"#e5e8eb\"/>\
             <rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#1f77b4\"><title>{}</title></rect>",
            y + 14.0,
            y + 14.0,
            bar_w * share,
            esc(&format!("{expr}: {} of {}", short(users), short(total)))
        );
        svg_text(
            &mut out,
            left + bar_w + 6.0,
            y + 25.0,
            "start",
            "#1b1f24",
            &format!("{} ({})", short(users), pct(share)),
        );
    }
    out.push_str("</svg>");
    (out, table(rows))
}

fn bars_section(rows: &Rows, label: &str, value: &str, group: Option<&str>) -> (String, String) {
    let items: Vec<(String, f64)> = rows
        .rows
        .iter()
        .map(|r| {
            let l = match group {
                Some(g) => format!("{}: {}", text(get(rows, r, g)), text(get(rows, r, label))),
                None => text(get(rows, r, label)),
            };
            (l, num(get(rows, r, value)).unwrap_or(0.0))
        })
        .collect();
    (bars(&items, label), table(rows))
}

// ---- funnel: drop-off bars per group ----

fn funnel(rows: &Rows) -> (String, String) {
    let groups = distinct(rows, "group", |_| true);
    let steps: usize = rows
        .rows
        .iter()
        .filter(|r| {
            groups
                .first()
                .is_some_and(|g| text(get(rows, r, "group")) == *g)
        })
        .count();
    let (left, bar_w, bh, gh) = (190.0, 330.0, 22.0, 26.0);
    let h = 8.0 + groups.len() as f64 * (gh + bh * steps as f64 + 10.0);
    let mut out = String::new();
    svg_open(
        &mut out,
        left + bar_w + 240.0,
        h,
        "funnel conversion per step",
    );
    let mut y = 6.0;
    for (gi, g) in groups.iter().enumerate() {
        let color = PALETTE[gi % PALETTE.len()];
        svg_text(&mut out, 4.0, y + 16.0, "start", "#1b1f24", g);
        y += gh;
        let in_group: Vec<&Vec<Value>> = rows
            .rows
            .iter()
            .filter(|r| text(get(rows, r, "group")) == *g)
            .collect();
        let first = in_group
            .first()
            .and_then(|r| num(get(rows, r, "users")))
            .unwrap_or(0.0);
        for r in in_group {
            let users = num(get(rows, r, "users")).unwrap_or(0.0);
            let share = if first > 0.0 { users / first } else { 0.0 };
            let label = format!(
                "{}. {}",
                text(get(rows, r, "step")),
                text(get(rows, r, "event"))
            );
            svg_text(
                &mut out,
                left - 6.0,
                y + 15.0,
                "end",
                "#1b1f24",
                &clip(&label, 28),
            );
            // The whole bar is step 1; the filled part reached this step, the
            // pale rest dropped off on the way.
            let _ = write!(
                out,
                "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{bar_w}\" height=\"{:.1}\" fill=\"#eceff2\"/>\
                 <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}</title></rect>",
                bh - 4.0,
                bar_w * share,
                bh - 4.0,
                esc(&format!(
                    "{g}, {label}: {} users, {} of step 1",
                    short(users),
                    pct(share)
                ))
            );
            let prev = num(get(rows, r, "conversion_from_previous"))
                .map(|p| format!(", {} of previous", pct(p)))
                .unwrap_or_default();
            svg_text(
                &mut out,
                left + bar_w + 6.0,
                y + 15.0,
                "start",
                "#1b1f24",
                &format!("{} ({}){prev}", short(users), pct(share)),
            );
            y += bh;
        }
        y += 10.0;
    }
    out.push_str("</svg>");
    let head: Vec<String> = [
        "group",
        "step",
        "users",
        "drop-off",
        "of previous",
        "of step 1",
        "median time",
        "p90 time",
    ]
    .map(String::from)
    .to_vec();
    let body: Vec<Vec<String>> = rows
        .rows
        .iter()
        .map(|r| {
            let p = |c: &str| num(get(rows, r, c)).map(pct).unwrap_or_default();
            let t = |c: &str| num(get(rows, r, c)).map(duration).unwrap_or_default();
            vec![
                text(get(rows, r, "group")),
                format!(
                    "{}. {}",
                    text(get(rows, r, "step")),
                    text(get(rows, r, "event"))
                ),
                text(get(rows, r, "users")),
                text(get(rows, r, "drop_off")),
                p("conversion_from_previous"),
                p("conversion_from_first"),
                t("median_seconds_to_convert"),
                t("p90_seconds_to_convert"),
            ]
        })
        .collect();
    (out, grid_table(&head, &body))
}

/// Seconds as the largest two units (`2d04h`, `5m12s`).
fn duration(secs: f64) -> String {
    let s = secs.round() as i64;
    match s {
        ..60 => format!("{s}s"),
        60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600),
    }
}

fn histogram(rows: &Rows) -> (String, String) {
    let items: Vec<(String, f64)> = rows
        .rows
        .iter()
        .map(|r| {
            let group = text(get(rows, r, "group"));
            let step = text(get(rows, r, "step"));
            let bucket = text(get(rows, r, "bucket"));
            (
                if group == "all" {
                    format!("step {step}: {bucket}")
                } else {
                    format!("{group}, step {step}: {bucket}")
                },
                num(get(rows, r, "users")).unwrap_or(0.0),
            )
        })
        .collect();
    (bars(&items, "time to convert"), table(rows))
}

// ---- KPI: metric x period ----

fn kpi(rows: &Rows) -> String {
    let periods = distinct(rows, "period", |_| true);
    let metrics = distinct(rows, "metric", |_| true);
    let mut head = vec!["metric".to_string()];
    head.extend(periods.iter().cloned());
    let body = metrics
        .iter()
        .map(|m| {
            let mut line = vec![m.clone()];
            for p in &periods {
                let cell = rows.rows.iter().find(|r| {
                    text(get(rows, r, "metric")) == *m && text(get(rows, r, "period")) == *p
                });
                line.push(match cell {
                    None => String::new(),
                    Some(r) => match num(get(rows, r, "value")) {
                        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
                        Some(v) => format!("{v:.3}"),
                        None => "-".into(),
                    },
                });
            }
            line
        })
        .collect::<Vec<_>>();
    grid_table(&head, &body)
}

// ---- RFM: score grid and segment sizes ----

fn rfm(rows: &Rows, grid: Option<&Rows>) -> (String, String) {
    let mut chart = String::new();
    let mut numbers = String::new();
    if let Some(g) = grid {
        let count = |r: i64, f: i64| {
            g.rows
                .iter()
                .find(|row| {
                    num(get(g, row, "r_score")) == Some(r as f64)
                        && num(get(g, row, "f_score")) == Some(f as f64)
                })
                .and_then(|row| num(get(g, row, "users")))
                .unwrap_or(0.0)
        };
        let max = (1..=5)
            .flat_map(|r| (1..=5).map(move |f| (r, f)))
            .map(|(r, f)| count(r, f))
            .fold(1.0f64, f64::max);
        let (left, top, c) = (40.0, 20.0, 56.0);
        svg_open(
            &mut chart,
            left + 5.0 * c + 10.0,
            top + 5.0 * c + 34.0,
            "RFM grid",
        );
        svg_text(
            &mut chart,
            left + 2.5 * c,
            12.0,
            "middle",
            "#555",
            "f_score →",
        );
        for f in 1..=5 {
            svg_text(
                &mut chart,
                left + c * (f as f64 - 0.5),
                top + 5.0 * c + 14.0,
                "middle",
                "#555",
                &f.to_string(),
            );
        }
        let mut body = Vec::new();
        for (i, r) in (1..=5).rev().enumerate() {
            let y = top + c * i as f64;
            svg_text(
                &mut chart,
                left - 8.0,
                y + c / 2.0 + 4.0,
                "end",
                "#555",
                &format!("R{r}"),
            );
            let mut line = vec![format!("r_score {r}")];
            for f in 1..=5 {
                let n = count(r, f);
                let (fill, ink) = blue(n / max);
                let x = left + c * (f - 1) as f64;
                let _ = write!(
                    chart,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"><title>R{r} F{f}: {}</title></rect>",
                    c - 2.0,
                    c - 2.0,
                    short(n)
                );
                svg_text(
                    &mut chart,
                    x + c / 2.0,
                    y + c / 2.0 + 4.0,
                    "middle",
                    ink,
                    &short(n),
                );
                line.push(short(n));
            }
            body.push(line);
        }
        svg_text(
            &mut chart,
            left + 2.5 * c,
            top + 5.0 * c + 30.0,
            "middle",
            "#555",
            "users per R x F score",
        );
        chart.push_str("</svg>");
        let mut head = vec!["".to_string()];
        head.extend((1..=5).map(|f| format!("f_score {f}")));
        numbers.push_str(&grid_table(&head, &body));
    }
    // The last row, "(customers)", is the total the shares are of.
    let items: Vec<(String, f64)> = rows
        .rows
        .iter()
        .map(|r| {
            (
                text(get(rows, r, "segment")),
                num(get(rows, r, "users")).unwrap_or(0.0),
            )
        })
        .filter(|(name, _)| name != "(customers)")
        .collect();
    chart.push_str(&bars(&items, "segment sizes"));
    numbers.push_str(&table(rows));
    (chart, numbers)
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

    #[test]
    fn nice_axes() {
        assert_eq!(nice(0.0), (1.0, 0.25));
        assert_eq!(nice(7.3), (8.0, 2.0));
        assert_eq!(nice(96.0), (100.0, 20.0));
    }
}

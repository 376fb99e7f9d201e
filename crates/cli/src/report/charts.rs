//! One chart per analysis kind, each from the analysis's tidy rows, returned
//! with the numbers table shown beside it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::frame::{Frame, Row};
use super::svg::{PALETTE, Series, bars, blue, clip, line_chart, nice, short, svg_open, svg_text};
use super::{esc, grid_table, pct, table};

// ---- retention: heatmap triangle ----

pub(super) fn retention(rows: &Frame<'_>) -> (String, String) {
    let groups = rows.distinct("group", |_| true);
    let mut chart = String::new();
    let mut numbers = String::new();
    for g in &groups {
        let in_group = |r: &Row<'_, '_>| r.text("group") == *g;
        let labels = rows.distinct("period_label", |r| in_group(r));
        let cohorts = rows.distinct("cohort", |r| in_group(r) && r.text("kind") == "cohort");
        // (cohort or "average") -> period label -> (rate, users, complete)
        let mut cells: BTreeMap<(String, String), (Option<f64>, bool)> = BTreeMap::new();
        let mut sizes: BTreeMap<String, String> = BTreeMap::new();
        for r in rows.rows().filter(|r| in_group(r)) {
            let key = if r.text("kind") == "average" {
                "average".to_string()
            } else {
                r.text("cohort")
            };
            sizes.insert(key.clone(), r.text("cohort_size"));
            cells.insert(
                (key, r.text("period_label")),
                (r.num("rate"), r.flag("complete")),
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

pub(super) fn ltv(rows: &Frame<'_>) -> (String, String) {
    let periods = rows.distinct("period", |_| true);
    let mut keys: Vec<String> = rows.distinct("cohort", |r| r.text("kind") == "cohort");
    keys.push("average".into());
    let key_of = |r: &Row<'_, '_>| {
        if r.text("kind") == "average" {
            "average".to_string()
        } else {
            r.text("cohort")
        }
    };
    let mut series = Vec::new();
    let mut body = Vec::new();
    for k in &keys {
        let mut points = Vec::new();
        let mut line = vec![k.clone(), String::new()];
        for p in &periods {
            let cell = rows
                .rows()
                .find(|r| key_of(r) == *k && r.text("period") == *p);
            let v = cell.and_then(|r| r.num("ltv"));
            if let Some(r) = cell
                && k != "average"
            {
                line[1] = r.text("cohort_size");
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

pub(super) fn lifecycle(rows: &Frame<'_>) -> (String, String) {
    const STATUS: [(&str, &str); 4] = [
        ("new", "#2ca02c"),
        ("returning", "#1f77b4"),
        ("resurrecting", "#ff7f0e"),
        ("dormant", "#d62728"),
    ];
    let periods = rows.distinct("period", |_| true);
    let value = |p: &str, s: &str| {
        rows.rows()
            .find(|r| r.text("period") == p && r.text("status") == s)
            .and_then(|r| r.num("users"))
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

/// A segment count: the matched users as a share of all users.
pub(super) fn segment(rows: &Frame<'_>) -> (String, String) {
    let mut out = String::new();
    let (w, left, bar_w) = (520.0, 10.0, 400.0);
    svg_open(
        &mut out,
        w,
        16.0 + 34.0 * rows.len() as f64,
        "segment share of users",
    );
    for (i, r) in rows.rows().enumerate() {
        let y = 6.0 + 34.0 * i as f64;
        let users = r.num("users").unwrap_or(0.0);
        let total = r.num("total_users").unwrap_or(0.0);
        let share = if total > 0.0 { users / total } else { 0.0 };
        let expr = r.text("segment");
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
    (out, table(rows.json))
}

pub(super) fn bars_section(
    rows: &Frame<'_>,
    label: &str,
    value: &str,
    group: Option<&str>,
) -> (String, String) {
    let items: Vec<(String, f64)> = rows
        .rows()
        .map(|r| {
            let l = match group {
                Some(g) => format!("{}: {}", r.text(g), r.text(label)),
                None => r.text(label),
            };
            (l, r.num(value).unwrap_or(0.0))
        })
        .collect();
    (bars(&items, label), table(rows.json))
}

// ---- funnel: drop-off bars per group ----

pub(super) fn funnel(rows: &Frame<'_>) -> (String, String) {
    let groups = rows.distinct("group", |_| true);
    let steps: usize = rows
        .rows()
        .filter(|r| groups.first().is_some_and(|g| r.text("group") == *g))
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
        let in_group: Vec<Row<'_, '_>> = rows.rows().filter(|r| r.text("group") == *g).collect();
        let first = in_group.first().and_then(|r| r.num("users")).unwrap_or(0.0);
        for r in in_group {
            let users = r.num("users").unwrap_or(0.0);
            let share = if first > 0.0 { users / first } else { 0.0 };
            let label = format!("{}. {}", r.text("step"), r.text("event"));
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
            let prev = r
                .num("conversion_from_previous")
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
        .rows()
        .map(|r| {
            let p = |c: &str| r.num(c).map(pct).unwrap_or_default();
            let t = |c: &str| r.num(c).map(duration).unwrap_or_default();
            vec![
                r.text("group"),
                format!("{}. {}", r.text("step"), r.text("event")),
                r.text("users"),
                r.text("drop_off"),
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

pub(super) fn histogram(rows: &Frame<'_>) -> (String, String) {
    let items: Vec<(String, f64)> = rows
        .rows()
        .map(|r| {
            let group = r.text("group");
            let step = r.text("step");
            let bucket = r.text("bucket");
            (
                if group == "all" {
                    format!("step {step}: {bucket}")
                } else {
                    format!("{group}, step {step}: {bucket}")
                },
                r.num("users").unwrap_or(0.0),
            )
        })
        .collect();
    (bars(&items, "time to convert"), table(rows.json))
}

// ---- KPI: metric x period ----

pub(super) fn kpi(rows: &Frame<'_>) -> String {
    let periods = rows.distinct("period", |_| true);
    let metrics = rows.distinct("metric", |_| true);
    let mut head = vec!["metric".to_string()];
    head.extend(periods.iter().cloned());
    let body = metrics
        .iter()
        .map(|m| {
            let mut line = vec![m.clone()];
            for p in &periods {
                let cell = rows
                    .rows()
                    .find(|r| r.text("metric") == *m && r.text("period") == *p);
                line.push(match cell {
                    None => String::new(),
                    Some(r) => match r.num("value") {
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

// ---- CLV: the models, and the holdout check ----

pub(super) fn clv(rows: &Frame<'_>, summary: Option<&Frame<'_>>) -> (String, String) {
    let Some(s) = summary else {
        return (String::new(), table(rows.json));
    };
    let view = |name: &str, value: &str, label: &dyn Fn(&str) -> String| -> Vec<(String, f64)> {
        s.rows()
            .filter(|r| r.text("view") == name)
            .map(|r| (label(&r.text("bucket")), r.num(value).unwrap_or(0.0)))
            .collect()
    };
    let mut charts = String::new();
    let alive = view("p_alive", "customers", &|b| format!("p_alive {b}"));
    if !alive.is_empty() {
        charts.push_str(&bars(&alive, "customers by p_alive"));
    }
    let deciles = view("clv", "value", &|b| format!("decile {b}"));
    if !deciles.is_empty() {
        charts.push_str(&bars(&deciles, "mean CLV by decile"));
    }
    let holdout: Vec<(String, f64)> = s
        .rows()
        .filter(|r| r.text("view") == "holdout")
        .flat_map(|r| {
            let x = r.text("bucket");
            [
                (format!("x={x} actual"), r.num("value").unwrap_or(0.0)),
                (
                    format!("x={x} predicted"),
                    r.num("predicted").unwrap_or(0.0),
                ),
            ]
        })
        .collect();
    if !holdout.is_empty() {
        charts.push_str(&bars(&holdout, "purchases per customer after calibration"));
    }
    (charts, format!("{}{}", table(rows.json), table(s.json)))
}

// ---- RFM: score grid and segment sizes ----

pub(super) fn rfm(rows: &Frame<'_>, grid: Option<&Frame<'_>>) -> (String, String) {
    let mut chart = String::new();
    let mut numbers = String::new();
    if let Some(g) = grid {
        let count = |r: i64, f: i64| {
            g.rows()
                .find(|row| {
                    row.num("r_score") == Some(r as f64) && row.num("f_score") == Some(f as f64)
                })
                .and_then(|row| row.num("users"))
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
        .rows()
        .map(|r| (r.text("segment"), r.num("users").unwrap_or(0.0)))
        .filter(|(name, _)| name != "(customers)")
        .collect();
    chart.push_str(&bars(&items, "segment sizes"));
    numbers.push_str(&table(rows.json));
    (chart, numbers)
}

// ---- A/B readout: lift and confidence interval per arm ----

pub(super) fn abtest(rows: &Frame<'_>) -> (String, String) {
    let metrics = rows.distinct("metric", |_| true);
    let relative = rows.rows().any(|r| r.text("difference") == "relative");
    let fmt = |x: f64| {
        if relative {
            format!("{:+.1}%", x * 100.0)
        } else {
            format!("{x:+.4}")
        }
    };
    let bound = rows
        .rows()
        .flat_map(|r| ["ci_lower", "ci_upper", "lift"].map(|c| r.num(c)))
        .flatten()
        .map(f64::abs)
        .fold(0.0f64, f64::max);
    let (max, step) = nice(bound);
    let (left, plot_w, right, rh) = (220.0, 360.0, 200.0, 24.0);
    let lines: usize = metrics.len() + rows.len();
    let h = 40.0 + rh * lines as f64;
    let sx = |x: f64| left + plot_w * (x + max) / (2.0 * max);
    let mut out = String::new();
    svg_open(
        &mut out,
        left + plot_w + right,
        h,
        "A/B lift with confidence intervals",
    );
    let mut t = -max;
    while t <= max + 1e-9 {
        let x = sx(t);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"18\" y2=\"{:.1}\" stroke=\"{}\"/>",
            h - 16.0,
            if t.abs() < 1e-12 { "#555" } else { "#e5e8eb" }
        );
        let tick = if t.abs() < 1e-12 {
            "0".to_string()
        } else if relative && step >= 0.01 {
            format!("{:+.0}%", t * 100.0)
        } else {
            fmt(t)
        };
        svg_text(&mut out, x, h - 4.0, "middle", "#555", &tick);
        t += step;
    }
    svg_text(
        &mut out,
        left + plot_w / 2.0,
        12.0,
        "middle",
        "#555",
        if relative {
            "relative lift vs control (CI)"
        } else {
            "difference vs control (CI)"
        },
    );
    let mut y = 22.0;
    for m in &metrics {
        svg_text(&mut out, 4.0, y + 15.0, "start", "#1b1f24", &clip(m, 34));
        y += rh;
        for r in rows.rows().filter(|r| r.text("metric") == *m) {
            let arm = r.text("arm");
            let control = r.flag("is_control");
            let label = if control {
                format!("{arm} (control)")
            } else {
                arm.clone()
            };
            svg_text(
                &mut out,
                left - 8.0,
                y + 15.0,
                "end",
                "#1b1f24",
                &clip(&label, 28),
            );
            let lift = r.num("lift");
            let (lo, hi) = (r.num("ci_lower"), r.num("ci_upper"));
            let significant = r.flag("significant");
            let color = match (significant, lift) {
                (true, Some(l)) if l > 0.0 => "#2ca02c",
                (true, Some(_)) => "#d62728",
                _ => "#1f77b4",
            };
            if let (Some(lo), Some(hi)) = (lo, hi) {
                let _ = write!(
                    out,
                    "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"3\"><title>{}</title></line>",
                    sx(lo.max(-max)),
                    sx(hi.min(max)),
                    y + 11.0,
                    y + 11.0,
                    esc(&format!("{arm}: CI {} to {}", fmt(lo), fmt(hi)))
                );
            }
            if let Some(l) = lift {
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{color}\"/>",
                    sx(l.clamp(-max, max)),
                    y + 11.0
                );
            }
            let note = match (lift, lo, hi) {
                (Some(l), Some(lo), Some(hi)) => format!("{} [{}, {}]", fmt(l), fmt(lo), fmt(hi)),
                (Some(l), _, _) => fmt(l),
                _ if control => "baseline".to_string(),
                _ => r.text("no_result"),
            };
            svg_text(
                &mut out,
                left + plot_w + 8.0,
                y + 15.0,
                "start",
                "#1b1f24",
                &note,
            );
            y += rh;
        }
    }
    out.push_str("</svg>");
    let head: Vec<String> = [
        "metric",
        "arm",
        "users",
        "value",
        "lift",
        "CI",
        "p-value",
        "chance to win",
        "verdict",
        "SRM",
    ]
    .map(String::from)
    .to_vec();
    let body: Vec<Vec<String>> = rows
        .rows()
        .map(|r| {
            let f = |c: &str| r.num(c);
            vec![
                r.text("metric"),
                r.text("arm"),
                r.text("users"),
                f("value").map(|v| format!("{v:.4}")).unwrap_or_default(),
                f("lift").map(fmt).unwrap_or_default(),
                match (f("ci_lower"), f("ci_upper")) {
                    (Some(a), Some(b)) => format!("[{}, {}]", fmt(a), fmt(b)),
                    _ => String::new(),
                },
                f("p_value").map(|p| format!("{p:.4}")).unwrap_or_default(),
                f("chance_to_win").map(pct).unwrap_or_default(),
                r.text("verdict"),
                r.text("srm_status"),
            ]
        })
        .collect();
    (out, grid_table(&head, &body))
}

// ---- paths: a Sankey diagram of the path tree ----

/// One Sankey per group: a column per depth, a node per kept path (its
/// height the users on it), a band from each path to its parent.
pub(super) fn paths(rows: &Frame<'_>) -> (String, String) {
    let groups = rows.distinct("group", |_| true);
    let depth = rows
        .rows()
        .filter_map(|r| r.num("depth"))
        .fold(0.0f64, f64::max) as usize;
    let (col_w, node_w, h, gap, top) = (170.0, 12.0, 300.0, 6.0, 24.0);
    let w = 20.0 + col_w * (depth as f64 + 1.0) + 80.0;
    let total_h = groups.len() as f64 * (h + top + 20.0);
    let mut out = String::new();
    svg_open(&mut out, w, total_h, "paths from the anchor event");
    for (gi, g) in groups.iter().enumerate() {
        let y0 = gi as f64 * (h + top + 20.0) + top;
        if !g.is_empty() {
            svg_text(&mut out, 4.0, y0 - 8.0, "start", "#1b1f24", g);
        }
        let mine: Vec<Row<'_, '_>> = rows.rows().filter(|r| r.text("group") == *g).collect();
        let anchored = mine
            .iter()
            .find(|r| r.num("depth") == Some(0.0))
            .and_then(|r| r.num("users"))
            .unwrap_or(0.0);
        if anchored <= 0.0 {
            continue;
        }
        let after = mine.first().is_none_or(|r| r.text("direction") != "before");
        let parent = |p: &str| tenure_engine::paths::parent(p, after);
        let scale = (h - gap * 8.0) / anchored;
        // Node positions: (x, y, height), per path.
        let mut at: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
        // The next free offset on each node's right side, for its bands.
        let mut out_offset: BTreeMap<String, f64> = BTreeMap::new();
        for d in 0..=depth {
            let x = 10.0 + col_w * d as f64;
            let mut level: Vec<&Row<'_, '_>> = mine
                .iter()
                .filter(|r| r.num("depth") == Some(d as f64))
                .collect();
            // Children in their parents' order, then by users.
            level.sort_by(|a, b| {
                let pa = at.get(&parent(&a.text("path"))).map_or(0.0, |n| n.1);
                let pb = at.get(&parent(&b.text("path"))).map_or(0.0, |n| n.1);
                pa.total_cmp(&pb).then(
                    b.num("users")
                        .unwrap_or(0.0)
                        .total_cmp(&a.num("users").unwrap_or(0.0)),
                )
            });
            let mut y = y0;
            for r in level {
                let path = r.text("path");
                let users = r.num("users").unwrap_or(0.0);
                let nh = (users * scale).max(1.0);
                let color = PALETTE[d % PALETTE.len()];
                let name = if d == 0 {
                    "anchor".to_string()
                } else if after {
                    path.rsplit(" > ").next().unwrap_or("").to_string()
                } else {
                    path.split(" > ").next().unwrap_or("").to_string()
                };
                let tip = esc(&format!(
                    "{}: {} users ({}), {} end here",
                    if path.is_empty() { "anchor" } else { &path },
                    short(users),
                    pct(users / anchored),
                    short(r.num("drop_off").unwrap_or(0.0))
                ));
                if d > 0
                    && let Some(&(px, py, _)) = at.get(&parent(&path))
                {
                    let off = out_offset.entry(parent(&path)).or_insert(0.0);
                    let (sx, sy) = (px + node_w, py + *off);
                    *off += nh;
                    let mid = (sx + x) / 2.0;
                    let _ = write!(
                        out,
                        "<path d=\"M{sx:.1},{sy:.1} C{mid:.1},{sy:.1} {mid:.1},{y:.1} {x:.1},{y:.1} \
                         L{x:.1},{:.1} C{mid:.1},{:.1} {mid:.1},{:.1} {sx:.1},{:.1} Z\" \
                         fill=\"{color}\" fill-opacity=\"0.25\"><title>{tip}</title></path>",
                        y + nh,
                        y + nh,
                        sy + nh,
                        sy + nh
                    );
                }
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{node_w}\" height=\"{nh:.1}\" \
                     fill=\"{color}\"><title>{tip}</title></rect>"
                );
                if nh >= 9.0 {
                    svg_text(
                        &mut out,
                        x + node_w + 3.0,
                        y + nh.min(14.0) - 3.0,
                        "start",
                        "#1b1f24",
                        &clip(&format!("{name} {}", short(users)), 22),
                    );
                }
                at.insert(path, (x, y, nh));
                y += nh + gap;
            }
        }
    }
    out.push_str("</svg>");
    (out, table(rows.json))
}

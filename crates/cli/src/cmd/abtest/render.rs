//! The readout as tidy rows (JSON, CSV, Parquet) and as a table for people.

use tenure_engine::abtest::Exposures;
use tenure_stats::{ArmReadout, Difference, MetricKind, MetricReadout, MetricSummary, Sided};

use tenure_engine::abtest::readout::raw_numbers;

fn arm_of<'a>(summary: &'a MetricSummary, arm: &str) -> Option<&'a tenure_stats::ArmSummary> {
    summary.arms.iter().find(|a| a.arm == arm)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The table view: who is in the test, then per metric an aligned block of
/// arms, the verdicts and the sample-ratio line.
pub fn table(
    readouts: &[MetricReadout],
    summaries: &[MetricSummary],
    exposures: Option<&Exposures>,
    dimensions: &[Option<String>],
) -> String {
    let mut out = String::new();
    if let Some(e) = exposures {
        let arms: Vec<String> = e
            .arms
            .iter()
            .zip(&e.users)
            .map(|(a, &n)| format!("{a} {}", plural(n, "user", "users")))
            .collect();
        out.push_str(&format!("Arms from `{}`: {}", e.column, arms.join(", ")));
        if e.multiple > 0 {
            out.push_str(&format!(
                "; {} more than one arm (excluded)",
                plural(e.multiple, "user saw", "users saw")
            ));
        }
        if !e.shared_only.is_empty() {
            let names: Vec<String> = e.shared_only.iter().map(|a| format!("`{a}`")).collect();
            out.push_str(&format!(
                "; {} {} only on those users (left out)",
                if names.len() == 1 { "arm" } else { "arms" },
                names.join(", ")
            ));
        }
        if e.outside > 0 {
            out.push_str(&format!(
                "; {} outside the population (left out)",
                plural(e.outside, "user", "users")
            ));
        }
        if e.unassigned > 0 {
            out.push_str(&format!(
                "; {} no `{}` (not in the test)",
                plural(e.unassigned, "user has", "users have"),
                e.column
            ));
        }
        out.push_str("\n\n");
    }
    for (i, (m, summary)) in readouts.iter().zip(summaries).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if let Some(Some(d)) = dimensions.get(i) {
            out.push_str(&format!("[{d}] "));
        }
        out.push_str(&metric_block(m, summary));
    }
    out
}

fn metric_block(m: &MetricReadout, summary: &MetricSummary) -> String {
    let value_head = match m.kind {
        MetricKind::Proportion => "conversion",
        MetricKind::Mean => "mean",
        MetricKind::Ratio => "ratio",
    };
    let effect_head = match m.difference {
        Difference::Relative => "lift",
        Difference::Absolute => "difference",
    };
    let level = format!("{} %", trim(100.0 * (1.0 - m.alpha)));
    let ci_head = if m.sequential.is_some() {
        format!("{level} sequential CI")
    } else {
        format!("{level} CI")
    };
    let adjusted = m.arms.iter().any(|r| r.p_value_adjusted.is_some());
    let bayesian = m.arms.iter().any(|r| r.chance_to_win.is_some());
    let mut header = vec![
        "arm".to_string(),
        "users".to_string(),
        value_head.to_string(),
        effect_head.to_string(),
        ci_head,
        "p-value".to_string(),
    ];
    if adjusted {
        header.push(format!("adjusted ({})", m.correction.as_str()));
    }
    if bayesian {
        header.extend(["chance to win", "risk (control)", "risk (treatment)"].map(String::from));
    }
    let mut grid = vec![header];
    for r in &m.arms {
        let raw = arm_of(summary, &r.arm).map(|a| raw_numbers(&a.data));
        let value = match (m.kind, r.value) {
            (_, None) => "-".to_string(),
            (MetricKind::Proportion, Some(v)) => {
                let conv = raw.and_then(|(c, _, _)| c).unwrap_or(0);
                format!("{:.2} % ({conv})", 100.0 * v)
            }
            (MetricKind::Mean | MetricKind::Ratio, Some(v)) => format!("{v:.4}"),
        };
        let arm = if r.is_control {
            format!("{} (control)", r.arm)
        } else {
            r.arm.clone()
        };
        let effect = |x: f64| effect_text(x, m.difference, m.kind);
        let mut line = vec![
            arm,
            r.users.to_string(),
            value,
            r.lift.map(effect).unwrap_or_default(),
            interval_text(r, &effect),
            r.p_value.map(p_text).unwrap_or_default(),
        ];
        if adjusted {
            line.push(r.p_value_adjusted.map(p_text).unwrap_or_default());
        }
        if bayesian {
            line.push(
                r.chance_to_win
                    .map(|c| format!("{:.1} %", 100.0 * c))
                    .unwrap_or_default(),
            );
            // Risks are expected losses, magnitudes in the effect's unit.
            let risk = |x: f64| effect(x).trim_start_matches(['+', '-']).to_string();
            line.push(r.risk_control.map(risk).unwrap_or_default());
            line.push(r.risk_treatment.map(risk).unwrap_or_default());
        }
        if r.no_result.is_some() {
            line[3] = "no result".to_string();
        }
        grid.push(line);
    }
    let test = match (m.sequential, m.sided) {
        (Some(n), Sided::Two) => format!("sequential two-sided test, N* {n}"),
        (Some(n), s) => format!("sequential one-sided test ({}), N* {n}", s.as_str()),
        (None, Sided::Two) => "two-sided Welch t-test".to_string(),
        (None, s) => format!("one-sided Welch t-test ({})", s.as_str()),
    };
    let kind = match m.kind {
        MetricKind::Proportion => "conversion",
        MetricKind::Mean => "mean per user",
        MetricKind::Ratio => "ratio",
    };
    let mut out = format!(
        "{}  ({kind}; {} {effect_head}, {test}, alpha {})\n",
        m.metric,
        m.difference.as_str(),
        trim(m.alpha)
    );
    out.push_str(&align(&grid));
    for r in &m.arms {
        out.push_str(&format!("  {}\n", r.verdict));
    }
    out.push_str(&format!("  {}\n", m.srm_verdict));
    out
}

/// Aligns a grid: the first column left, the others right, two spaces apart.
fn align(grid: &[Vec<String>]) -> String {
    let columns = grid.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            grid.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in grid {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            if c == 0 {
                line.push_str(&format!("{cell:<w$}"));
            } else {
                line.push_str(&format!("  {cell:>w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn trim(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Lifts as signed percentages, differences of rates in percentage points,
/// differences of means as signed numbers.
fn effect_text(x: f64, difference: Difference, kind: MetricKind) -> String {
    match (difference, kind) {
        (Difference::Relative, _) => format!("{:+.2} %", 100.0 * x),
        (Difference::Absolute, MetricKind::Proportion) => format!("{:+.2} pp", 100.0 * x),
        (Difference::Absolute, MetricKind::Mean | MetricKind::Ratio) => format!("{x:+.4}"),
    }
}

fn interval_text(r: &ArmReadout, effect: &dyn Fn(f64) -> String) -> String {
    if r.lift.is_none() {
        return String::new();
    }
    let lower = r.ci_lower.map_or_else(|| "-inf".to_string(), effect);
    let upper = r.ci_upper.map_or_else(|| "+inf".to_string(), effect);
    format!("[{lower}, {upper}]")
}

fn p_text(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".to_string()
    } else {
        format!("{p:.4}")
    }
}

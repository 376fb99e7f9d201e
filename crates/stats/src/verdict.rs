//! The plain-words sentences of a readout, and the number formats they use.
//!
//! A verdict must be readable by someone who does not know what a p-value is, yet
//! never overstate: it gives the direction, the size with its interval, and whether
//! that is significant, in one line, e.g.
//! "Treatment B is better: +6.7 % (95 % CI -47.8 % to +61.1 %), not significant
//! (p = 0.81)".

use crate::readout::ArmReadout;
use crate::{Difference, MetricKind, NoResult, ReadoutConfig, SRM_MIN_USERS, SrmCheck, SrmStatus};

/// The baseline row's sentence.
pub(crate) fn control_verdict(
    arm: &str,
    users: u64,
    value: Option<f64>,
    kind: MetricKind,
) -> String {
    let users = plural(users, "user");
    match (value, kind) {
        (None, _) => format!("Control {arm} (baseline): no users"),
        (Some(v), MetricKind::Proportion) => {
            format!(
                "Control {arm} (baseline): {} conversion, {users}",
                percent(v)
            )
        }
        (Some(v), MetricKind::Mean) => format!(
            "Control {arm} (baseline): mean {}, {users}",
            significant_digits(v, false)
        ),
        (Some(v), MetricKind::Ratio) => format!(
            "Control {arm} (baseline): ratio {}, {users}",
            significant_digits(v, false)
        ),
    }
}

/// A treatment row without a result says why.
pub(crate) fn no_result_verdict(arm: &str, reason: NoResult) -> String {
    format!("{}: no result, {reason}", treatment_label(arm))
}

fn treatment_label(arm: &str) -> String {
    let lower = arm.to_lowercase();
    if lower.starts_with("treatment") || lower.starts_with("variant") {
        let mut chars = arm.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    } else {
        format!("Treatment {arm}")
    }
}

/// What a treatment's sentence needs to know about its metric.
#[derive(Clone, Copy)]
pub(crate) struct VerdictContext {
    pub difference: Difference,
    pub kind: MetricKind,
    pub sequential: bool,
    pub mismatch: bool,
}

pub(crate) fn treatment_verdict(
    row: &ArmReadout,
    context: VerdictContext,
    config: &ReadoutConfig,
) -> String {
    let lift = row.lift.unwrap_or(0.0);
    let fmt = |x: f64| format_effect(x, context.difference, context.kind);
    let direction = if fmt(lift) == fmt(0.0) {
        "shows no difference"
    } else if lift > 0.0 {
        "is better"
    } else {
        "is worse"
    };
    let level = format!("{} %", trim_number(config.alpha.confidence_percent(), 1));
    let kind = if context.sequential {
        "sequential CI"
    } else {
        "CI"
    };
    let interval = match (row.ci_lower, row.ci_upper) {
        (Some(l), Some(u)) => format!("{level} {kind} {} to {}", fmt(l), fmt(u)),
        (Some(l), None) => format!("{level} {kind} lower bound {}", fmt(l)),
        (None, Some(u)) => format!("{level} {kind} upper bound {}", fmt(u)),
        (None, None) => format!("{level} {kind} unbounded"),
    };
    let p = row.p_value.unwrap_or(1.0);
    let p_text = match row.p_value_adjusted {
        Some(adj) => format!("{}, adjusted {}", p_is(p), format_p(adj)),
        None => p_is(p),
    };
    let significance = if row.significant == Some(true) {
        "significant"
    } else {
        "not significant"
    };
    let mut text = format!(
        "{} {direction}: {} ({interval}), {significance} ({p_text})",
        treatment_label(&row.arm),
        fmt(lift)
    );
    if let Some(ctw) = row.chance_to_win {
        text.push_str(&format!(", chance to win {}", percent(ctw)));
    }
    if context.mismatch {
        text.push_str("; sample ratio mismatch, do not trust this result");
    }
    text
}

pub(crate) fn srm_verdict(srm: &SrmCheck) -> String {
    let split = srm
        .expected_shares
        .iter()
        .map(|s| trim_number(s * 100.0, 1))
        .collect::<Vec<_>>()
        .join(":");
    let users = srm
        .users
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" vs ");
    match srm.status {
        SrmStatus::Ok => format!(
            "Traffic split consistent with {split} ({users} users, SRM {})",
            p_is(srm.p_value)
        ),
        SrmStatus::Mismatch => format!(
            "Sample ratio mismatch: {users} users is not a {split} split (p = {:.1e} < 0.001); \
             check assignment and tracking before trusting any result",
            srm.p_value
        ),
        SrmStatus::NotEnoughTraffic => format!(
            "Not enough traffic to check the split: an arm has fewer than {} users ({users})",
            SRM_MIN_USERS
        ),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A fraction as a percentage with one decimal: 0.5 → "50.0 %".
fn percent(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// A number with up to `decimals` decimals and no trailing zeros: 50 → "50".
fn trim_number(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Three significant digits, optionally with an explicit sign.
fn significant_digits(x: f64, signed: bool) -> String {
    let decimals = if x == 0.0 {
        1
    } else {
        (2 - x.abs().log10().floor() as i64).clamp(0, 12) as usize
    };
    let s = if signed {
        format!("{x:+.decimals$}")
    } else {
        format!("{x:.decimals$}")
    };
    strip_negative_zero(s)
}

/// `-0.0` reads as a decrease; a rounded zero is shown unsigned.
fn strip_negative_zero(s: String) -> String {
    let digits_are_zero = s.chars().filter(|c| c.is_ascii_digit()).all(|c| c == '0');
    if digits_are_zero {
        s.trim_start_matches(['+', '-']).to_string()
    } else {
        s
    }
}

/// The effect in the unit users expect: percent for a lift, percentage points for
/// a difference of conversion rates, three significant digits for a difference of
/// means.
fn format_effect(x: f64, difference: Difference, kind: MetricKind) -> String {
    match (difference, kind) {
        (Difference::Relative, _) => {
            format!("{} %", strip_negative_zero(format!("{:+.1}", x * 100.0)))
        }
        (Difference::Absolute, MetricKind::Proportion) => {
            format!("{} pp", strip_negative_zero(format!("{:+.1}", x * 100.0)))
        }
        (Difference::Absolute, MetricKind::Mean | MetricKind::Ratio) => significant_digits(x, true),
    }
}

/// "p = 0.81", or "p < 0.001" below the floor (never "p = < 0.001").
fn p_is(p: f64) -> String {
    let text = format_p(p);
    if text.starts_with('<') {
        format!("p {text}")
    } else {
        format!("p = {text}")
    }
}

/// p-values as people quote them: two decimals, three below 0.01, and a floor.
fn format_p(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.2}")
    } else if p >= 0.001 {
        format!("{p:.3}")
    } else {
        "< 0.001".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(format_p(0.80707), "0.81");
        assert_eq!(format_p(0.0042), "0.004");
        assert_eq!(format_p(0.00002), "< 0.001");
        assert_eq!(p_is(0.00002), "p < 0.001");
        assert_eq!(p_is(0.0042), "p = 0.004");
        assert_eq!(significant_digits(0.04538, true), "+0.0454");
        assert_eq!(significant_digits(1234.6, true), "+1235");
        assert_eq!(significant_digits(-0.00001, true), "-0.0000100");
        assert_eq!(
            format_effect(-0.0001, Difference::Relative, MetricKind::Mean),
            "0.0 %"
        );
        assert_eq!(
            format_effect(0.033, Difference::Absolute, MetricKind::Proportion),
            "+3.3 pp"
        );
        assert_eq!(trim_number(33.333, 1), "33.3");
        assert_eq!(trim_number(50.0, 1), "50");
    }
}

//! The estimated effect of a treatment and its variance, shared by the
//! frequentist, sequential and Bayesian readouts, plus the typed reasons why an
//! effect cannot be estimated at all.
//!
//! Following GrowthBook's gbstats, the relative lift Δ = (μ_B - μ_A) / μ_A gets its
//! variance from the delta method:
//!
//! ```text
//! Var(Δ) ≈ σ²_B / (μ_A² n_B) + σ²_A μ_B² / (μ_A⁴ n_A)
//! ```
//!
//! and the absolute difference μ_B - μ_A the unpooled σ²_A / n_A + σ²_B / n_B. The
//! arms are never pooled: real experiments often change the variance, not only the
//! mean.

use std::fmt;

use crate::{ArmData, Difference};

/// Which side of the comparison an arm is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The baseline arm.
    Control,
    /// The arm being compared against the baseline.
    Treatment,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Control => "control",
            Role::Treatment => "treatment",
        })
    }
}

/// Why a comparison has no answer. Returned instead of NaN or infinity so that a
/// readout can say in words what is missing, and so nothing downstream ever has to
/// guard against non-finite numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoResult {
    /// An arm has no users at all.
    EmptyArm {
        /// Which arm.
        role: Role,
    },
    /// An arm has a single user, too few to estimate a variance with n - 1.
    TooFewUsers {
        /// Which arm.
        role: Role,
    },
    /// Nobody (or everybody) in an arm converted, so its binomial variance is zero
    /// and the t statistic would divide by zero.
    AllOrNothing {
        /// Which arm.
        role: Role,
        /// `true` for 100 % conversion, `false` for 0 %.
        all_converted: bool,
    },
    /// Every user in a mean arm has the same value.
    ZeroVariance {
        /// Which arm.
        role: Role,
    },
    /// The control's mean is zero, so a relative lift is a division by zero.
    ZeroControlMean,
    /// The inputs are so extreme that a floating-point step overflowed; reported
    /// rather than passing infinity on.
    Overflow,
}

impl NoResult {
    /// A stable snake_case identifier for JSON and CSV, next to the sentence that
    /// `Display` gives.
    pub fn code(&self) -> &'static str {
        match self {
            NoResult::EmptyArm { .. } => "empty_arm",
            NoResult::TooFewUsers { .. } => "too_few_users",
            NoResult::AllOrNothing { .. } => "all_or_nothing",
            NoResult::ZeroVariance { .. } => "zero_variance",
            NoResult::ZeroControlMean => "zero_control_mean",
            NoResult::Overflow => "overflow",
        }
    }
}

impl fmt::Display for NoResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoResult::EmptyArm { role } => write!(f, "the {role} arm has no users"),
            NoResult::TooFewUsers { role } => write!(
                f,
                "the {role} arm has only 1 user; a variance needs at least 2"
            ),
            NoResult::AllOrNothing {
                role,
                all_converted,
            } => write!(
                f,
                "the {role} arm converted {} of its users, so its variance is zero",
                if all_converted { "100 %" } else { "0 %" }
            ),
            NoResult::ZeroVariance { role } => write!(
                f,
                "every user in the {role} arm has the same value, so its variance is zero"
            ),
            NoResult::ZeroControlMean => f.write_str(
                "the control mean is zero, so a relative lift is undefined; \
                 try the absolute difference",
            ),
            NoResult::Overflow => f.write_str("the numbers are too extreme to compute with"),
        }
    }
}

/// A confidence (or credible) interval; a `None` bound is unbounded, as for the open
/// side of a one-sided test, which keeps infinities out of JSON and CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound, or `None` for -∞.
    pub lower: Option<f64>,
    /// Upper bound, or `None` for +∞.
    pub upper: Option<f64>,
}

impl Interval {
    /// Whether `x` lies inside the interval (bounds included).
    pub fn contains(&self, x: f64) -> bool {
        self.lower.is_none_or(|l| l <= x) && self.upper.is_none_or(|u| x <= u)
    }
}

/// The answer of a frequentist (fixed or sequential) test of treatment against
/// control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate: relative lift as a fraction (0.067 = +6.7 %) or absolute
    /// difference in the metric's unit, per the [`Difference`] asked for.
    pub effect: f64,
    /// Standard error of `effect` (delta method for the lift).
    pub std_error: f64,
    /// The confidence interval (a confidence sequence for sequential tests).
    pub ci: Interval,
    /// The p-value for the chosen alternative, in [0, 1].
    pub p_value: f64,
    /// Welch–Satterthwaite degrees of freedom; `None` for sequential tests, which
    /// use a normal approximation.
    pub dof: Option<f64>,
}

/// Point estimate and sampling variance of the effect, plus what the degrees of
/// freedom need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moments {
    pub effect: f64,
    pub variance: f64,
    /// Welch–Satterthwaite degrees of freedom from the per-user variances.
    pub dof: f64,
    /// n_A + n_B, which the sequential formulas scale by.
    pub total_n: f64,
}

fn arm_variance(arm: &ArmData, role: Role) -> Result<f64, NoResult> {
    match arm.users() {
        0 => return Err(NoResult::EmptyArm { role }),
        1 => return Err(NoResult::TooFewUsers { role }),
        _ => {}
    }
    let var = arm.variance().ok_or(NoResult::Overflow)?;
    if var > 0.0 {
        return Ok(var);
    }
    Err(match *arm {
        ArmData::Proportion { users, conversions } => NoResult::AllOrNothing {
            role,
            all_converted: conversions == users,
        },
        ArmData::Mean { .. } => NoResult::ZeroVariance { role },
    })
}

/// Computes the effect and its variance, or why there is none. The checks come in
/// the order a user would fix them: missing users, then constant arms, then a zero
/// baseline.
pub(crate) fn moments(
    control: &ArmData,
    treatment: &ArmData,
    difference: Difference,
) -> Result<Moments, NoResult> {
    let var_a = arm_variance(control, Role::Control)?;
    let var_b = arm_variance(treatment, Role::Treatment)?;
    let (n_a, n_b) = (control.n(), treatment.n());
    let mean_a = control.value().ok_or(NoResult::Overflow)?;
    let mean_b = treatment.value().ok_or(NoResult::Overflow)?;

    let (effect, variance) = match difference {
        Difference::Absolute => (mean_b - mean_a, var_b / n_b + var_a / n_a),
        Difference::Relative => {
            if mean_a == 0.0 {
                return Err(NoResult::ZeroControlMean);
            }
            let effect = (mean_b - mean_a) / mean_a;
            let variance =
                var_b / (mean_a.powi(2) * n_b) + var_a * mean_b.powi(2) / (mean_a.powi(4) * n_a);
            (effect, variance)
        }
    };

    // Welch–Satterthwaite on the per-arm variances of the means, as gbstats does
    // for both kinds of difference.
    let (va, vb) = (var_a / n_a, var_b / n_b);
    let dof = (va + vb).powi(2) / (vb.powi(2) / (n_b - 1.0) + va.powi(2) / (n_a - 1.0));

    let finite = effect.is_finite() && variance.is_finite() && dof.is_finite();
    if !finite || variance <= 0.0 || dof <= 0.0 {
        return Err(NoResult::Overflow);
    }
    Ok(Moments {
        effect,
        variance,
        dof,
        total_n: n_a + n_b,
    })
}

/// Final guard: every number leaving the crate is finite.
pub(crate) fn finite_or_overflow<T>(value: T, numbers: &[f64]) -> Result<T, NoResult> {
    if numbers.iter().all(|x| x.is_finite()) {
        Ok(value)
    } else {
        Err(NoResult::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(users: u64, conversions: u64) -> ArmData {
        ArmData::Proportion { users, conversions }
    }

    #[test]
    fn degenerate_arms_are_named() {
        let ok = prop(100, 10);
        assert_eq!(
            moments(&prop(0, 0), &ok, Difference::Relative).unwrap_err(),
            NoResult::EmptyArm {
                role: Role::Control
            }
        );
        assert_eq!(
            moments(&ok, &prop(1, 1), Difference::Relative).unwrap_err(),
            NoResult::TooFewUsers {
                role: Role::Treatment
            }
        );
        assert_eq!(
            moments(&ok, &prop(50, 50), Difference::Relative).unwrap_err(),
            NoResult::AllOrNothing {
                role: Role::Treatment,
                all_converted: true
            }
        );
        assert_eq!(
            moments(&prop(50, 0), &ok, Difference::Absolute).unwrap_err(),
            NoResult::AllOrNothing {
                role: Role::Control,
                all_converted: false
            }
        );
        let zero_mean = ArmData::Mean {
            n: 4,
            sum: 0.0,
            sum_squares: 8.0,
        };
        let other = ArmData::Mean {
            n: 4,
            sum: 4.0,
            sum_squares: 10.0,
        };
        assert_eq!(
            moments(&zero_mean, &other, Difference::Relative).unwrap_err(),
            NoResult::ZeroControlMean
        );
        assert!(moments(&zero_mean, &other, Difference::Absolute).is_ok());
    }

    #[test]
    fn reasons_read_as_sentences() {
        let text = NoResult::AllOrNothing {
            role: Role::Control,
            all_converted: false,
        }
        .to_string();
        assert_eq!(
            text,
            "the control arm converted 0 % of its users, so its variance is zero"
        );
    }

    #[test]
    fn interval_contains_respects_open_sides() {
        let open_top = Interval {
            lower: Some(-1.0),
            upper: None,
        };
        assert!(open_top.contains(1e300));
        assert!(!open_top.contains(-2.0));
    }
}

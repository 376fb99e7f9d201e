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
        ArmData::Adjusted { ref post, .. } => return arm_variance(post, role),
        ArmData::Mean { .. } | ArmData::Ratio { .. } => NoResult::ZeroVariance { role },
    })
}

/// A CUPED arm's moments: n, the post mean, and the variances and
/// covariance of the post and pre values (gbstats' `RegressionAdjustedStatistic`:
/// a proportion's variance is p(1 - p) and its covariance `Σxy/n - ΣxΣy/n²`, a
/// mean's are the n - 1 sample ones).
struct Cuped {
    n: f64,
    post_sum: f64,
    post_sum_squares: f64,
    pre_sum: f64,
    pre_sum_squares: f64,
    products: f64,
    proportion: bool,
}

impl Cuped {
    fn of(arm: &ArmData) -> Option<Self> {
        let ArmData::Adjusted {
            post,
            pre_sum,
            pre_sum_squares,
            post_pre_sum_products,
        } = arm
        else {
            return None;
        };
        let (n, post_sum, post_sum_squares, proportion) = match **post {
            ArmData::Proportion { users, conversions } => {
                (users as f64, conversions as f64, conversions as f64, true)
            }
            ArmData::Mean {
                n,
                sum,
                sum_squares,
            } => (n as f64, sum, sum_squares, false),
            _ => return None,
        };
        Some(Self {
            n,
            post_sum,
            post_sum_squares,
            pre_sum: *pre_sum,
            pre_sum_squares: *pre_sum_squares,
            products: *post_pre_sum_products,
            proportion,
        })
    }

    /// The pooled statistics of two arms.
    fn joint(&self, o: &Self) -> Self {
        Self {
            n: self.n + o.n,
            post_sum: self.post_sum + o.post_sum,
            post_sum_squares: self.post_sum_squares + o.post_sum_squares,
            pre_sum: self.pre_sum + o.pre_sum,
            pre_sum_squares: self.pre_sum_squares + o.pre_sum_squares,
            products: self.products + o.products,
            proportion: self.proportion,
        }
    }

    fn var(&self, sum: f64, sum_squares: f64) -> f64 {
        if self.n <= 1.0 {
            return 0.0;
        }
        if self.proportion {
            let p = sum / self.n;
            p * (1.0 - p)
        } else {
            (sum_squares - sum * sum / self.n) / (self.n - 1.0)
        }
    }

    fn post_var(&self) -> f64 {
        self.var(self.post_sum, self.post_sum_squares)
    }

    fn pre_var(&self) -> f64 {
        self.var(self.pre_sum, self.pre_sum_squares)
    }

    fn cov(&self) -> f64 {
        if self.n <= 1.0 {
            return 0.0;
        }
        if self.proportion {
            self.products / self.n - self.post_sum * self.pre_sum / (self.n * self.n)
        } else {
            (self.products - self.post_sum * self.pre_sum / self.n) / (self.n - 1.0)
        }
    }

    fn post_mean(&self) -> f64 {
        self.post_sum / self.n
    }

    fn pre_mean(&self) -> f64 {
        self.pre_sum / self.n
    }

    /// The adjusted mean and per-user variance at `theta`.
    fn adjusted(&self, theta: f64) -> (f64, f64) {
        (
            self.post_mean() - theta * self.pre_mean(),
            self.post_var() + theta * theta * self.pre_var() - 2.0 * theta * self.cov(),
        )
    }
}

/// The effect of a CUPED pair, or `None` when the pooled θ is 0 (no variance
/// before or after exposure), where gbstats reads the unadjusted metric.
fn cuped_moments(
    a: &Cuped,
    b: &Cuped,
    difference: Difference,
) -> Option<Result<(f64, f64, f64, f64), NoResult>> {
    let joint = a.joint(b);
    let (jpre, jpost) = (joint.pre_var(), joint.post_var());
    if jpre == 0.0 || jpost == 0.0 {
        return None;
    }
    let theta = joint.cov() / jpre;
    if theta == 0.0 {
        return None;
    }
    let (mean_a, var_a) = a.adjusted(theta);
    let (mean_b, var_b) = b.adjusted(theta);
    if var_a <= 0.0 {
        return Some(Err(NoResult::ZeroVariance {
            role: Role::Control,
        }));
    }
    if var_b <= 0.0 {
        return Some(Err(NoResult::ZeroVariance {
            role: Role::Treatment,
        }));
    }
    let (effect, variance) = match difference {
        Difference::Absolute => (mean_b - mean_a, var_b / b.n + var_a / a.n),
        Difference::Relative => {
            let base = a.post_mean();
            if base == 0.0 || mean_a == 0.0 {
                return Some(Err(NoResult::ZeroControlMean));
            }
            // gbstats' `frequentist_variance_relative_cuped`.
            let v_trt = var_b / (b.n * base * base);
            let c = -b.post_mean();
            let num = a.post_var() * c * c / (base * base)
                + 2.0 * theta * a.cov() * c / base
                + theta * theta * a.pre_var();
            let v_ctrl = num / (a.n * base * base);
            ((mean_b - mean_a) / base.abs(), v_trt + v_ctrl)
        }
    };
    Some(Ok((effect, variance, var_a, var_b)))
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

    if let (Some(a), Some(b)) = (Cuped::of(control), Cuped::of(treatment))
        && let Some(adjusted) = cuped_moments(&a, &b, difference)
    {
        let (effect, variance, var_a, var_b) = adjusted?;
        return finish(effect, variance, var_a, var_b, n_a, n_b);
    }

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

    finish(effect, variance, var_a, var_b, n_a, n_b)
}

/// The moments with the Welch–Satterthwaite degrees of freedom on the per-arm
/// variances of the means (adjusted ones for CUPED), as gbstats does for both
/// kinds of difference.
fn finish(
    effect: f64,
    variance: f64,
    var_a: f64,
    var_b: f64,
    n_a: f64,
    n_b: f64,
) -> Result<Moments, NoResult> {
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

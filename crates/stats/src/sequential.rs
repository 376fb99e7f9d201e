//! Sequential testing with asymptotic confidence sequences (Waudby-Smith et al.,
//! "Time-uniform central limit theory and asymptotic confidence sequences",
//! arXiv:2103.06476v7), as GrowthBook implements them.
//!
//! A fixed-horizon CI is valid once, at the planned sample size; looked at every
//! day it will, sooner or later, exclude zero by chance. A confidence sequence stays
//! valid at every look, at the price of being wider. Its width is tuned by N*, the
//! total sample size where it should be tightest:
//!
//! ```text
//! ρ    = sqrt((-2 ln α + ln(-2 ln α + 1)) / N*)          (α → 2α one-sided)
//! s²   = Var(Δ) · N,   N = n_A + n_B
//! half = sqrt(s²) · sqrt(2 (Nρ² + 1) ln(sqrt(Nρ² + 1) / α) / (Nρ)²)
//! p    = min(1, sqrt(Nρ² + 1) · exp(-ρ² (Δ² N / Var(Δ)) / (2 (Nρ² + 1))))
//! ```
//!
//! One-sided sequences use `ln(1 + sqrt(Nρ² + 1) / (2α))` in place of the log term.
//! GrowthBook finds the one-sided p-value by bisecting α until the bound touches
//! zero, searching only α in [0.00001, 0.4999]; the bound is monotone in α, so this
//! module solves that equation in closed form and clamps to the same range, which
//! agrees with GrowthBook's answer to within its 1e-6 bisection tolerance.

use crate::effect::{Estimate, Interval, NoResult, finite_or_overflow, moments};
use crate::{Alpha, ArmData, Difference, Sided, TuningParameter};

/// GrowthBook's bisection range for one-sided sequential p-values.
const ONE_SIDED_P_RANGE: (f64, f64) = (1e-5, 0.4999);

/// ρ, the mixing parameter that makes the sequence tightest at N*.
fn rho(alpha: f64, n_star: f64) -> f64 {
    let l = -2.0 * alpha.ln();
    ((l + (l + 1.0).ln()) / n_star).sqrt()
}

/// Runs the sequential test of `treatment` against `control`. The estimate is the
/// same as the fixed test's; the interval is a confidence sequence and the p-value
/// an always-valid p-value, so both may be checked after every new day of data.
///
/// `dof` in the answer is `None`: the sequence rests on a normal approximation.
pub fn sequential_test(
    control: &ArmData,
    treatment: &ArmData,
    difference: Difference,
    sided: Sided,
    alpha: Alpha,
    n_star: TuningParameter,
) -> Result<Estimate, NoResult> {
    let m = moments(control, treatment, difference)?;
    let a = alpha.get();
    let n = m.total_n;
    let se = m.variance.sqrt();
    let s2 = m.variance * n;
    let (ci, p_value) = match sided {
        Sided::Two => {
            let r = rho(a, n_star.get());
            let nr2p1 = n * r * r + 1.0;
            let half = s2.sqrt() * (2.0 * nr2p1 * (nr2p1.sqrt() / a).ln() / (n * r).powi(2)).sqrt();
            // Eq. 155, in logs so a huge e-value cannot overflow.
            let st2 = m.effect.powi(2) * n / m.variance;
            let log_p = 0.5 * nr2p1.ln() - r * r * st2 / (2.0 * nr2p1);
            let ci = Interval {
                lower: Some(m.effect - half),
                upper: Some(m.effect + half),
            };
            (ci, log_p.min(0.0).exp())
        }
        Sided::Greater | Sided::Less => {
            let r = rho(2.0 * a, n_star.get());
            let nr2p1 = n * r * r + 1.0;
            let scale = s2 * 2.0 * nr2p1 / (n * r).powi(2);
            let half = (scale * (1.0 + nr2p1.sqrt() / (2.0 * a)).ln()).sqrt();
            // Effect pointing the tested way, in "greater" orientation.
            let toward = if sided == Sided::Greater {
                m.effect
            } else {
                -m.effect
            };
            let p = if toward <= 0.0 {
                // The bound never crosses zero for any α: GrowthBook reports the top
                // of its search range.
                ONE_SIDED_P_RANGE.1
            } else {
                // Solve half(α') = |Δ| for α'.
                let l = toward * toward / scale;
                nr2p1.sqrt() / (2.0 * l.exp_m1())
            };
            let p = p.clamp(ONE_SIDED_P_RANGE.0, ONE_SIDED_P_RANGE.1);
            let ci = if sided == Sided::Greater {
                Interval {
                    lower: Some(m.effect - half),
                    upper: None,
                }
            } else {
                Interval {
                    lower: None,
                    upper: Some(m.effect + half),
                }
            };
            (ci, p)
        }
    };
    let estimate = Estimate {
        effect: m.effect,
        std_error: se,
        ci,
        p_value: p_value.clamp(0.0, 1.0),
        dof: None,
    };
    let numbers = [
        ci.lower.unwrap_or(0.0),
        ci.upper.unwrap_or(0.0),
        estimate.p_value,
    ];
    finite_or_overflow(estimate, &numbers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::normal_quantile;
    use crate::t_test;

    /// Half-width of a two-sided fixed-horizon normal interval.
    fn normal_half_width(se: f64, alpha: f64) -> f64 {
        normal_quantile(1.0 - alpha / 2.0) * se
    }

    fn prop(users: u64, conversions: u64) -> ArmData {
        ArmData::Proportion { users, conversions }
    }

    fn seq(a: &ArmData, b: &ArmData, sided: Sided, n_star: f64) -> Estimate {
        sequential_test(
            a,
            b,
            Difference::Relative,
            sided,
            Alpha::DEFAULT,
            TuningParameter::new(n_star).unwrap(),
        )
        .unwrap()
    }

    /// The price of peeking: the sequence is wider than the fixed-horizon CI, and
    /// its p-value is larger, on the same data.
    #[test]
    fn sequence_is_wider_than_fixed_ci() {
        let a = prop(2000, 200);
        let b = prop(2000, 240);
        let fixed = t_test(&a, &b, Difference::Relative, Sided::Two, Alpha::DEFAULT).unwrap();
        let s = seq(&a, &b, Sided::Two, 4000.0);
        let fixed_width = fixed.ci.upper.unwrap() - fixed.ci.lower.unwrap();
        let seq_width = s.ci.upper.unwrap() - s.ci.lower.unwrap();
        assert!(seq_width > fixed_width);
        assert!(s.p_value > fixed.p_value);
        assert_eq!(s.effect, fixed.effect);
    }

    /// As the sample grows at a fixed true rate, the sequence narrows towards the
    /// effect: its half-width shrinks like sqrt(ln N / N), slower than the fixed
    /// CI's 1/sqrt(N), so the ratio to a normal CI grows only logarithmically.
    #[test]
    fn sequence_converges_as_n_grows() {
        let mut last = f64::INFINITY;
        for k in [1u64, 10, 100, 1000] {
            let a = prop(1000 * k, 100 * k);
            let b = prop(1000 * k, 110 * k);
            let s = seq(&a, &b, Sided::Two, 5000.0);
            let half = (s.ci.upper.unwrap() - s.ci.lower.unwrap()) / 2.0;
            assert!(half < last, "half-width must shrink: {half} >= {last}");
            let ratio = half / normal_half_width(s.std_error, 0.05);
            assert!(ratio > 1.0 && ratio < 3.0, "ratio {ratio} at k {k}");
            last = half;
        }
        assert!(last < 0.02, "{last}");
    }

    /// GrowthBook's tuning check: an N* far below the sample gives a wider sequence
    /// than one far above it, and an N* equal to the sample gives the narrowest.
    #[test]
    fn tuning_near_sample_size_is_tightest() {
        let a = ArmData::Mean {
            n: 3000,
            sum: 1396.87,
            sum_squares: 52377.9767,
        };
        let b = ArmData::Mean {
            n: 3461,
            sum: 2422.7,
            sum_squares: 134698.29,
        };
        let width = |n_star: f64| {
            let s = seq(&a, &b, Sided::Two, n_star);
            s.ci.upper.unwrap() - s.ci.lower.unwrap()
        };
        assert!(width(10.0) > width(10000.0));
        assert!(width(10000.0) > width(6461.0));
    }

    /// The closed-form one-sided p-value is the α at which the bound touches zero.
    #[test]
    fn one_sided_p_puts_the_bound_on_zero() {
        let a = prop(5000, 500);
        let b = prop(5000, 560);
        let p = seq(&a, &b, Sided::Greater, 5000.0).p_value;
        assert!(p > ONE_SIDED_P_RANGE.0 && p < ONE_SIDED_P_RANGE.1, "{p}");
        // Recompute the bound at α' = p with ρ fixed at the configured α.
        let m = moments(&a, &b, Difference::Relative).unwrap();
        let n = m.total_n;
        let r = rho(0.10, 5000.0);
        let nr2p1 = n * r * r + 1.0;
        let half = (m.variance * n * 2.0 * nr2p1 / (n * r).powi(2)
            * (1.0 + nr2p1.sqrt() / (2.0 * p)).ln())
        .sqrt();
        assert!((m.effect - half).abs() < 1e-12);
        // The other direction: effect points the wrong way, GrowthBook's cap.
        let less = seq(&a, &b, Sided::Less, 5000.0);
        assert_eq!(less.p_value, ONE_SIDED_P_RANGE.1);
        assert!(less.ci.lower.is_none());
    }
}

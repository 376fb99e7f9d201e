//! The default test: Welch's unpooled t-test on the relative lift (delta method) or
//! the absolute difference, as in GrowthBook's `TwoSidedTTest`,
//! `OneSidedTreatmentGreaterTTest` and `OneSidedTreatmentLesserTTest`.
//!
//! With Δ the effect, s its standard error and ν the Welch–Satterthwaite degrees of
//! freedom, t = Δ / s and
//!
//! ```text
//! two-sided: p = 2 (1 - F_ν(|t|)),  CI = Δ ± F_ν⁻¹(1 - α/2) s
//! greater:   p = 1 - F_ν(t),        CI = [Δ - F_ν⁻¹(1 - α) s, +∞)
//! less:      p = F_ν(t),            CI = (-∞, Δ + F_ν⁻¹(1 - α) s]
//! ```
//!
//! Survival functions are evaluated directly rather than as 1 - CDF so that very
//! small p-values keep their digits; to the precision GrowthBook prints, the two
//! agree.

use crate::dist::{t_cdf, t_quantile, t_sf};
use crate::effect::{Estimate, Interval, NoResult, finite_or_overflow, moments};
use crate::{Alpha, ArmData, Difference, Sided};

/// Runs the fixed-horizon Welch t-test of `treatment` against `control`.
///
/// Returns a typed [`NoResult`] for arms where the test is undefined (no users, one
/// user, zero variance, zero control mean with a relative difference).
///
/// ```
/// use tenure_stats::{Alpha, ArmData, Difference, Sided, t_test};
/// let a = ArmData::Proportion { users: 28, conversions: 14 };
/// let b = ArmData::Proportion { users: 30, conversions: 16 };
/// let r = t_test(&a, &b, Difference::Relative, Sided::Two, Alpha::DEFAULT).unwrap();
/// assert!((r.effect - 0.066_67).abs() < 1e-5);
/// assert!((r.p_value - 0.807_07).abs() < 1e-5);
/// ```
pub fn t_test(
    control: &ArmData,
    treatment: &ArmData,
    difference: Difference,
    sided: Sided,
    alpha: Alpha,
) -> Result<Estimate, NoResult> {
    let m = moments(control, treatment, difference)?;
    let se = m.variance.sqrt();
    let t = m.effect / se;
    let a = alpha.get();
    let (p_value, ci) = match sided {
        Sided::Two => {
            let half = t_quantile(1.0 - a / 2.0, m.dof) * se;
            let ci = Interval {
                lower: Some(m.effect - half),
                upper: Some(m.effect + half),
            };
            (2.0 * t_sf(t.abs(), m.dof), ci)
        }
        Sided::Greater => {
            let half = t_quantile(1.0 - a, m.dof) * se;
            let ci = Interval {
                lower: Some(m.effect - half),
                upper: None,
            };
            (t_sf(t, m.dof), ci)
        }
        Sided::Less => {
            let half = t_quantile(1.0 - a, m.dof) * se;
            let ci = Interval {
                lower: None,
                upper: Some(m.effect + half),
            };
            (t_cdf(t, m.dof), ci)
        }
    };
    let p_value = p_value.clamp(0.0, 1.0);
    let estimate = Estimate {
        effect: m.effect,
        std_error: se,
        ci,
        p_value,
        dof: Some(m.dof),
    };
    let bounds = [
        ci.lower.unwrap_or(0.0),
        ci.upper.unwrap_or(0.0),
        p_value,
        se,
    ];
    finite_or_overflow(estimate, &bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(n: u64, sum: f64, sum_squares: f64) -> ArmData {
        ArmData::Mean {
            n,
            sum,
            sum_squares,
        }
    }

    fn run(a: &ArmData, b: &ArmData, d: Difference, s: Sided) -> Estimate {
        t_test(a, b, d, s, Alpha::DEFAULT).unwrap()
    }

    /// One-sided p is half the two-sided p when the effect points the tested way,
    /// and one minus that half when it points the other way: both follow from the
    /// symmetry of the t distribution.
    #[test]
    fn one_sided_p_is_half_two_sided() {
        let a = mean(3407, 1396.87, 52377.9767);
        let b = mean(3461, 2422.7, 134698.29);
        for d in [Difference::Relative, Difference::Absolute] {
            let two = run(&a, &b, d, Sided::Two).p_value;
            let greater = run(&a, &b, d, Sided::Greater).p_value;
            let less = run(&a, &b, d, Sided::Less).p_value;
            assert!((greater - two / 2.0).abs() < 1e-12);
            assert!((less - (1.0 - two / 2.0)).abs() < 1e-12);
        }
    }

    /// The one-sided bound uses the 1 - α quantile, which is the lower end of a
    /// two-sided interval at 2α.
    #[test]
    fn one_sided_bound_equals_two_sided_at_double_alpha() {
        let a = ArmData::Proportion {
            users: 1000,
            conversions: 100,
        };
        let b = ArmData::Proportion {
            users: 1000,
            conversions: 120,
        };
        let one = run(&a, &b, Difference::Relative, Sided::Greater);
        let two = t_test(
            &a,
            &b,
            Difference::Relative,
            Sided::Two,
            Alpha::new(0.10).unwrap(),
        )
        .unwrap();
        assert!((one.ci.lower.unwrap() - two.ci.lower.unwrap()).abs() < 1e-12);
        assert_eq!(one.ci.upper, None);
        let less = run(&a, &b, Difference::Relative, Sided::Less);
        assert!((less.ci.upper.unwrap() - two.ci.upper.unwrap()).abs() < 1e-12);
        assert_eq!(less.ci.lower, None);
    }

    /// Swapping the arms flips the sign of the absolute difference and its CI and
    /// leaves the p-value and degrees of freedom unchanged.
    #[test]
    fn swapping_arms_mirrors_the_absolute_difference() {
        let a = mean(3407, 1396.87, 52377.9767);
        let b = mean(3461, 2422.7, 134698.29);
        let ab = run(&a, &b, Difference::Absolute, Sided::Two);
        let ba = run(&b, &a, Difference::Absolute, Sided::Two);
        assert!((ab.effect + ba.effect).abs() < 1e-12);
        assert!((ab.ci.lower.unwrap() + ba.ci.upper.unwrap()).abs() < 1e-12);
        assert!((ab.p_value - ba.p_value).abs() < 1e-12);
        assert!((ab.dof.unwrap() - ba.dof.unwrap()).abs() < 1e-9);
    }

    /// Hand computation for two identical-variance arms: control 100 of 1000,
    /// treatment 150 of 1000. Absolute difference 0.05, variance
    /// 0.09/1000 + 0.1275/1000 = 0.0002175, s = 0.014748, t = 3.3903; with
    /// ν ≈ 1943 the t tail is within 1e-4 of the normal tail 2(1 - Φ(3.3903)) =
    /// 0.000698.
    #[test]
    fn hand_computed_absolute_proportions() {
        let a = ArmData::Proportion {
            users: 1000,
            conversions: 100,
        };
        let b = ArmData::Proportion {
            users: 1000,
            conversions: 150,
        };
        let r = run(&a, &b, Difference::Absolute, Sided::Two);
        assert!((r.effect - 0.05).abs() < 1e-12);
        assert!((r.std_error - 0.000_217_5_f64.sqrt()).abs() < 1e-12);
        assert!((r.p_value - 0.000_698).abs() < 1e-4);
        let dof = r.dof.unwrap();
        // (0.00009 + 0.0001275)² / (0.00009²/999 + 0.0001275²/999)
        let expected =
            0.000_217_5_f64.powi(2) / ((0.000_09f64.powi(2) + 0.000_127_5f64.powi(2)) / 999.0);
        assert!((dof - expected).abs() < 1e-6);
    }

    #[test]
    fn no_effect_gives_p_one() {
        let a = ArmData::Proportion {
            users: 500,
            conversions: 50,
        };
        let r = run(&a, &a, Difference::Relative, Sided::Two);
        assert_eq!(r.effect, 0.0);
        assert!((r.p_value - 1.0).abs() < 1e-12);
    }
}

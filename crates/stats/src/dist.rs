//! The few probability distributions the tests need, behind total functions.
//!
//! `statrs` constructors return `Result` because they reject bad parameters. Every
//! caller in this crate has already ruled those out (positive standard deviations,
//! positive degrees of freedom), so the checks live here once, and a parameter that
//! slips through anyway yields NaN, which the callers turn into a typed
//! [`NoResult`](crate::NoResult) instead of panicking.

use statrs::distribution::{ChiSquared, Continuous, ContinuousCDF, Normal, StudentsT};

/// Standard normal distribution function Φ(x).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal density φ(x).
pub(crate) fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal quantile Φ⁻¹(p) for 0 < p < 1.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    match Normal::new(0.0, 1.0) {
        Ok(n) if p > 0.0 && p < 1.0 => n.inverse_cdf(p),
        _ => f64::NAN,
    }
}

fn students_t(dof: f64) -> Option<StudentsT> {
    if dof.is_finite() && dof > 0.0 {
        StudentsT::new(0.0, 1.0, dof).ok()
    } else {
        None
    }
}

/// Above this many degrees of freedom statrs' incomplete-beta routines lose
/// accuracy as ν grows (CDF errors of 1e-10 at ν = 10⁶, 3e-9 at 10⁷, 5e-5 at
/// 10¹²), while the first-order expansion below errs by O(ν⁻²), about 5e-12 here.
/// Measured crossover; Welch degrees of freedom pass it in any large experiment.
const LARGE_DOF: f64 = 1e5;

/// Student t distribution function with `dof` degrees of freedom.
///
/// For very large ν it uses F_ν(t) ≈ Φ(t) - φ(t)(t³ + t)/(4ν) (Abramowitz & Stegun
/// 26.7.5's companion expansion); the next term is O(1/ν²).
pub(crate) fn t_cdf(x: f64, dof: f64) -> f64 {
    if dof >= LARGE_DOF && dof.is_finite() {
        return normal_cdf(x) - normal_pdf(x) * (x.powi(3) + x) / (4.0 * dof);
    }
    students_t(dof).map_or(f64::NAN, |t| t.cdf(x))
}

/// Student t survival function 1 - F(x), computed directly so tiny p-values keep
/// their digits instead of cancelling to zero.
pub(crate) fn t_sf(x: f64, dof: f64) -> f64 {
    if dof >= LARGE_DOF && dof.is_finite() {
        return t_cdf(-x, dof);
    }
    students_t(dof).map_or(f64::NAN, |t| t.sf(x))
}

fn t_pdf(x: f64, dof: f64) -> f64 {
    students_t(dof).map_or(f64::NAN, |t| t.pdf(x))
}

/// Cornish–Fisher expansion of the t quantile around the normal one (Abramowitz &
/// Stegun 26.7.5); error O(ν⁻⁵), so exact in double precision for large ν.
fn t_quantile_expansion(p: f64, dof: f64) -> f64 {
    let z = normal_quantile(p);
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    z + (g1 + (g2 + (g3 + g4 / dof) / dof) / dof) / dof
}

/// Student t quantile for 0 < p < 1.
///
/// statrs inverts the regularised incomplete beta function, which loses accuracy
/// as ν grows (at ν = 10⁶ its 0.975 quantile is off by 1e-4, enough to move the
/// fourth decimal of a CI in a large experiment; at 10⁷ it is wrong outright). So:
/// statrs' answer as a start for small ν, the Cornish–Fisher expansion for large
/// ν, then Newton steps on the CDF, which stays accurate.
pub(crate) fn t_quantile(p: f64, dof: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && dof > 0.0 && dof.is_finite()) {
        return f64::NAN;
    }
    if dof >= LARGE_DOF {
        return t_quantile_expansion(p, dof);
    }
    let mut q = if dof >= 1e4 {
        t_quantile_expansion(p, dof)
    } else {
        students_t(dof).map_or(f64::NAN, |t| t.inverse_cdf(p))
    };
    if !q.is_finite() {
        q = normal_quantile(p);
    }
    for _ in 0..20 {
        let density = t_pdf(q, dof);
        if !(density > 0.0 && density.is_finite()) {
            break;
        }
        // Work in the nearer tail so the residual keeps its digits.
        let residual = if p > 0.5 {
            (1.0 - p) - t_sf(q, dof)
        } else {
            t_cdf(q, dof) - p
        };
        let step = residual / density;
        q -= step;
        if step.abs() <= 1e-15 * (1.0 + q.abs()) {
            break;
        }
    }
    q
}

/// Chi-square survival function, the p-value of a goodness-of-fit statistic.
pub(crate) fn chi_square_sf(x: f64, dof: f64) -> f64 {
    match ChiSquared::new(dof) {
        Ok(c) if x.is_finite() && x >= 0.0 => c.sf(x),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_matches_textbook_values() {
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-11);
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-9);
        assert!((normal_pdf(0.0) - 0.398_942_280_401_432_7).abs() < 1e-15);
        // Far tail keeps its digits (erfc, not 1 - erf).
        assert!((normal_cdf(-10.0) / 7.619_853_024_160_527e-24 - 1.0).abs() < 1e-10);
    }

    #[test]
    fn t_quantile_inverts_cdf() {
        for dof in [1.0, 2.5, 10.0, 55.7, 6000.0, 60000.0, 1e6, 1e9, 1e15] {
            for p in [1e-9, 0.001, 0.025, 0.5, 0.9, 0.975, 0.999] {
                let q = t_quantile(p, dof);
                assert!((t_cdf(q, dof) - p).abs() < 1e-10, "dof {dof} p {p}");
            }
        }
        // Both branches agree where they meet.
        let below = t_cdf(1.96, LARGE_DOF * (1.0 - 1e-12));
        let above = t_cdf(1.96, LARGE_DOF);
        assert!((below - above).abs() < 1e-10);
        assert!((t_quantile(0.975, 2e4) - t_quantile_expansion(0.975, 2e4)).abs() < 1e-10);
        // With huge ν the t quantile is the normal one (to about 1/ν).
        assert!((t_quantile(0.975, 1e9) - normal_quantile(0.975)).abs() < 1e-8);
        // Known table value: t(0.975, 10) = 2.228139.
        assert!((t_quantile(0.975, 10.0) - 2.228_138_851_986_273_5).abs() < 1e-9);
    }

    #[test]
    fn bad_parameters_give_nan_not_panics() {
        assert!(t_cdf(1.0, 0.0).is_nan());
        assert!(t_quantile(1.0, 5.0).is_nan());
        assert!(chi_square_sf(-1.0, 1.0).is_nan());
    }
}

//! Bayesian readout: a normal posterior on the effect, the chance that the
//! treatment beats control, and the risk (expected loss) of shipping either arm,
//! as GrowthBook's `EffectBayesianABTest` computes them.
//!
//! The likelihood of the effect is N(Δ̂, Var(Δ̂)) with the same delta-method
//! variance as the frequentist test. GrowthBook's default prior is improper and
//! flat, so the posterior is that likelihood itself; an optional proper Gaussian
//! prior N(m₀, v₀) on the same scale combines by precision:
//!
//! ```text
//! precision = 1 / Var(Δ̂) + 1 / v₀
//! mean      = (Δ̂ / Var(Δ̂) + m₀ / v₀) / precision
//! ```
//!
//! With posterior X ~ N(μ, σ²), the chance to win is P(X > 0) = Φ(μ/σ), and the
//! risks are the expected losses E[max(X, 0)] (choosing control when treatment was
//! better) and E[max(-X, 0)] (choosing treatment when control was better), in the
//! closed form μ Φ(μ/σ) + σ φ(μ/σ) and its mirror, which equal GrowthBook's
//! truncated-normal expression.

use crate::dist::{normal_cdf, normal_pdf, normal_quantile};
use crate::effect::{Interval, NoResult, finite_or_overflow, moments};
use crate::{Alpha, ArmData, Difference};

/// A proper Gaussian prior on the effect, on the scale of the chosen
/// [`Difference`] (a fraction for the relative lift).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaussianPrior {
    /// Prior mean of the effect.
    pub mean: f64,
    /// Prior variance of the effect; must be positive.
    pub variance: f64,
}

/// The posterior summary of one treatment against control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BayesianEstimate {
    /// Posterior mean of the effect.
    pub mean: f64,
    /// Posterior standard deviation of the effect.
    pub std_dev: f64,
    /// Equal-tailed 1 - α credible interval.
    pub credible_interval: Interval,
    /// Posterior probability that the treatment is better than control.
    pub chance_to_win: f64,
    /// Expected loss if control is kept: how much better, on average, the
    /// treatment would have been in the worlds where it is better.
    pub risk_control: f64,
    /// Expected loss if the treatment ships: how much worse, on average, it is in
    /// the worlds where control is better.
    pub risk_treatment: f64,
}

/// Computes the normal posterior of the effect and what follows from it.
///
/// `prior = None` is GrowthBook's default uninformative prior. A prior whose
/// variance is not positive and finite is ignored rather than trusted, since it
/// would claim infinite certainty.
pub fn bayesian(
    control: &ArmData,
    treatment: &ArmData,
    difference: Difference,
    alpha: Alpha,
    prior: Option<GaussianPrior>,
) -> Result<BayesianEstimate, NoResult> {
    let m = moments(control, treatment, difference)?;
    let data_precision = 1.0 / m.variance;
    let (mean, precision) = match prior {
        Some(p) if p.variance.is_finite() && p.variance > 0.0 && p.mean.is_finite() => {
            let precision = data_precision + 1.0 / p.variance;
            let mean = (m.effect * data_precision + p.mean / p.variance) / precision;
            (mean, precision)
        }
        _ => (m.effect, data_precision),
    };
    let sd = (1.0 / precision).sqrt();
    let z = mean / sd;
    let a = alpha.get();
    let q = normal_quantile(1.0 - a / 2.0);
    let credible_interval = Interval {
        lower: Some(mean - q * sd),
        upper: Some(mean + q * sd),
    };
    let chance_to_win = normal_cdf(z);
    let tail = sd * normal_pdf(z);
    let risk_control = (mean * normal_cdf(z) + tail).max(0.0);
    let risk_treatment = (-mean * normal_cdf(-z) + tail).max(0.0);
    let estimate = BayesianEstimate {
        mean,
        std_dev: sd,
        credible_interval,
        chance_to_win,
        risk_control,
        risk_treatment,
    };
    finite_or_overflow(
        estimate,
        &[
            mean,
            sd,
            mean - q * sd,
            mean + q * sd,
            chance_to_win,
            risk_control,
            risk_treatment,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(users: u64, conversions: u64) -> ArmData {
        ArmData::Proportion { users, conversions }
    }

    /// Equal arms: the posterior is centred on zero, so the chance to win is
    /// exactly one half and both risks are σ φ(0) = σ / sqrt(2π).
    #[test]
    fn equal_arms_are_a_coin_flip() {
        let a = prop(1000, 100);
        let r = bayesian(&a, &a, Difference::Absolute, Alpha::DEFAULT, None).unwrap();
        assert_eq!(r.mean, 0.0);
        assert!((r.chance_to_win - 0.5).abs() < 1e-15);
        let expected = r.std_dev / (2.0 * std::f64::consts::PI).sqrt();
        assert!((r.risk_control - expected).abs() < 1e-15);
        assert!((r.risk_treatment - expected).abs() < 1e-15);
    }

    /// Swapping arms turns chance to win p into 1 - p and swaps the risks.
    #[test]
    fn swapping_arms_mirrors_the_posterior() {
        let a = prop(1000, 100);
        let b = prop(1000, 120);
        let ab = bayesian(&a, &b, Difference::Absolute, Alpha::DEFAULT, None).unwrap();
        let ba = bayesian(&b, &a, Difference::Absolute, Alpha::DEFAULT, None).unwrap();
        assert!((ab.chance_to_win + ba.chance_to_win - 1.0).abs() < 1e-12);
        assert!((ab.risk_control - ba.risk_treatment).abs() < 1e-12);
        assert!((ab.risk_treatment - ba.risk_control).abs() < 1e-12);
    }

    /// The difference of the risks is the posterior mean:
    /// E[max(X,0)] - E[max(-X,0)] = E[X].
    #[test]
    fn risks_differ_by_the_mean() {
        let a = prop(400, 40);
        let b = prop(410, 52);
        let r = bayesian(&a, &b, Difference::Relative, Alpha::DEFAULT, None).unwrap();
        assert!((r.risk_control - r.risk_treatment - r.mean).abs() < 1e-12);
    }

    /// A proper prior shrinks towards its mean and narrows the posterior; a very
    /// wide one changes almost nothing.
    #[test]
    fn proper_prior_shrinks() {
        let a = prop(400, 40);
        let b = prop(410, 52);
        let flat = bayesian(&a, &b, Difference::Relative, Alpha::DEFAULT, None).unwrap();
        let tight = GaussianPrior {
            mean: 0.0,
            variance: 0.01,
        };
        let shrunk = bayesian(&a, &b, Difference::Relative, Alpha::DEFAULT, Some(tight)).unwrap();
        assert!(shrunk.mean.abs() < flat.mean.abs());
        assert!(shrunk.std_dev < flat.std_dev);
        let wide = GaussianPrior {
            mean: 0.0,
            variance: 1e12,
        };
        let same = bayesian(&a, &b, Difference::Relative, Alpha::DEFAULT, Some(wide)).unwrap();
        assert!((same.mean - flat.mean).abs() < 1e-9);
    }
}

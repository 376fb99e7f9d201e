//! Validated settings shared by every test: significance level, the kind of
//! difference, the alternative hypothesis and the sequential tuning parameter.
//!
//! Settings are checked once, when built, so the test functions themselves cannot
//! fail on configuration and only ever answer with an estimate or a typed
//! [`NoResult`](crate::NoResult).

use crate::StatsError;

/// Significance level α of the tests (the CI covers 1 - α).
///
/// Limited to 0 < α < 0.5: at α ≥ 0.5 a "confidence" interval covers less than half
/// the time, and GrowthBook's one-sided sequential test is undefined there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alpha(f64);

impl Alpha {
    /// The conventional 0.05, the default in DESIGN.md and in GrowthBook.
    pub const DEFAULT: Alpha = Alpha(0.05);

    /// Checks that `alpha` lies strictly between 0 and 0.5.
    pub fn new(alpha: f64) -> Result<Alpha, StatsError> {
        if alpha.is_finite() && alpha > 0.0 && alpha < 0.5 {
            Ok(Alpha(alpha))
        } else {
            Err(StatsError::InvalidSetting {
                setting: "alpha",
                value: alpha.to_string(),
                expected: "a significance level strictly between 0 and 0.5, such as 0.05"
                    .to_string(),
            })
        }
    }

    /// The level as a number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The confidence level in percent, for labels such as "95 % CI".
    pub fn confidence_percent(self) -> f64 {
        (1.0 - self.0) * 100.0
    }
}

impl Default for Alpha {
    fn default() -> Self {
        Alpha::DEFAULT
    }
}

/// Which difference between treatment and control is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Difference {
    /// (treatment - control) / control, the lift; the default because it compares
    /// across metrics of different scales.
    #[default]
    Relative,
    /// treatment - control, in the metric's own unit.
    Absolute,
}

/// The alternative hypothesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sided {
    /// Treatment differs from control in either direction.
    #[default]
    Two,
    /// Treatment is greater than control; the CI has no upper bound.
    Greater,
    /// Treatment is less than control; the CI has no lower bound.
    Less,
}

/// N*, the total sample size (both arms) at which a sequential confidence sequence
/// is tightest. Must be positive; picking it near the expected final sample size
/// gives the narrowest intervals at the end of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuningParameter(f64);

impl TuningParameter {
    /// GrowthBook's default N*.
    pub const DEFAULT: TuningParameter = TuningParameter(5000.0);

    /// Checks that N* is a positive, finite number.
    pub fn new(n_star: f64) -> Result<TuningParameter, StatsError> {
        if n_star.is_finite() && n_star > 0.0 {
            Ok(TuningParameter(n_star))
        } else {
            Err(StatsError::InvalidSetting {
                setting: "sequential tuning parameter N*",
                value: n_star.to_string(),
                expected: "a positive number of users, such as 5000".to_string(),
            })
        }
    }

    /// N* as a number.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for TuningParameter {
    fn default() -> Self {
        TuningParameter::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_range_is_enforced() {
        assert!(Alpha::new(0.05).is_ok());
        for bad in [0.0, 0.5, 1.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(Alpha::new(bad).is_err(), "{bad}");
        }
        assert!((Alpha::DEFAULT.confidence_percent() - 95.0).abs() < 1e-12);
    }

    #[test]
    fn tuning_parameter_must_be_positive() {
        assert!(TuningParameter::new(1000.0).is_ok());
        assert!(TuningParameter::new(0.0).is_err());
        assert!(TuningParameter::new(f64::NAN).is_err());
    }
}

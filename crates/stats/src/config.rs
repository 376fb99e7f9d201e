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

/// A setting word the CLI or a job file gave that is not one of the accepted ones.
fn unknown_word(setting: &'static str, value: &str, accepted: &[&str]) -> StatsError {
    StatsError::InvalidSetting {
        setting,
        value: value.to_string(),
        expected: format!("one of {}", accepted.join(", ")),
    }
}

impl Difference {
    /// The stable name used in flags and JSON: `relative` or `absolute`.
    pub fn as_str(self) -> &'static str {
        match self {
            Difference::Relative => "relative",
            Difference::Absolute => "absolute",
        }
    }
}

impl std::str::FromStr for Difference {
    type Err = StatsError;

    fn from_str(s: &str) -> Result<Self, StatsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "relative" => Ok(Difference::Relative),
            "absolute" => Ok(Difference::Absolute),
            _ => Err(unknown_word("difference", s, &["relative", "absolute"])),
        }
    }
}

impl Sided {
    /// The stable name used in flags and JSON: `two`, `greater` or `less`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sided::Two => "two",
            Sided::Greater => "greater",
            Sided::Less => "less",
        }
    }
}

impl std::str::FromStr for Sided {
    type Err = StatsError;

    fn from_str(s: &str) -> Result<Self, StatsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "two" | "two-sided" => Ok(Sided::Two),
            "greater" => Ok(Sided::Greater),
            "less" => Ok(Sided::Less),
            _ => Err(unknown_word("sided", s, &["two", "greater", "less"])),
        }
    }
}

/// Parses an expected split such as `50:50`, `1:1:2` or `0.3:0.7` into weights (any
/// positive scale; [`check_srm`](crate::check_srm) normalises them).
pub fn parse_split(text: &str) -> Result<Vec<f64>, StatsError> {
    let bad = || StatsError::InvalidSetting {
        setting: "split",
        value: text.to_string(),
        expected: "positive weights separated by `:`, such as 50:50".to_string(),
    };
    let weights = text
        .split(':')
        .map(|part| part.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<Vec<f64>, _>>()?;
    if weights.len() < 2 || weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        return Err(bad());
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for d in [Difference::Relative, Difference::Absolute] {
            assert_eq!(d.as_str().parse::<Difference>().unwrap(), d);
        }
        for s in [Sided::Two, Sided::Greater, Sided::Less] {
            assert_eq!(s.as_str().parse::<Sided>().unwrap(), s);
        }
        let e = "both".parse::<Sided>().unwrap_err().to_string();
        assert_eq!(e, "invalid sided both: one of two, greater, less");
    }

    #[test]
    fn splits() {
        assert_eq!(parse_split("50:50").unwrap(), vec![50.0, 50.0]);
        assert_eq!(parse_split(" 1 : 2 : 1 ").unwrap(), vec![1.0, 2.0, 1.0]);
        for bad in ["50", "50:", "a:b", "50:0", "-1:2", "inf:1"] {
            assert!(parse_split(bad).is_err(), "{bad}");
        }
    }

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

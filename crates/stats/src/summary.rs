//! Per-arm sufficient statistics: what an A/B test needs to know about each arm.
//!
//! Both metric shapes reduce to (n, mean, variance). Proportions use the binomial
//! variance p(1 - p) (no n - 1 correction, as GrowthBook does); means use the sample
//! variance with n - 1 computed from the sum and sum of squares, so summaries can be
//! merged by adding fields and never need the raw per-user values.

use crate::StatsError;

/// The statistics of one arm for one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum ArmData {
    /// A conversion metric: how many users, and how many of them converted.
    Proportion {
        /// Users exposed to the arm.
        users: u64,
        /// Users who converted (at most `users`).
        conversions: u64,
    },
    /// A mean metric over users (for example revenue per user).
    Mean {
        /// Users exposed to the arm.
        n: u64,
        /// Sum of the per-user values.
        sum: f64,
        /// Sum of the squared per-user values.
        sum_squares: f64,
    },
}

/// Which shape a metric has; every arm of one metric must have the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Conversions out of users.
    Proportion,
    /// Sum and sum of squares over users.
    Mean,
}

/// One named arm with its statistics, as read from `--from-summary` or computed
/// by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSummary {
    /// The variant's name, as it appears in the data (`A`, `control`, ...).
    pub arm: String,
    /// The arm's statistics.
    pub data: ArmData,
}

impl MetricKind {
    /// The stable name used in JSON: `proportion` or `mean`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Proportion => "proportion",
            MetricKind::Mean => "mean",
        }
    }
}

impl ArmData {
    /// The metric shape.
    pub fn kind(&self) -> MetricKind {
        match self {
            ArmData::Proportion { .. } => MetricKind::Proportion,
            ArmData::Mean { .. } => MetricKind::Mean,
        }
    }

    /// Number of users in the arm.
    pub fn users(&self) -> u64 {
        match *self {
            ArmData::Proportion { users, .. } => users,
            ArmData::Mean { n, .. } => n,
        }
    }

    /// Users as a float, for the formulas.
    pub(crate) fn n(&self) -> f64 {
        self.users() as f64
    }

    /// The conversion rate or the mean; `None` for an arm without users, where it is
    /// undefined rather than zero.
    pub fn value(&self) -> Option<f64> {
        let n = self.users();
        if n == 0 {
            return None;
        }
        let v = match *self {
            ArmData::Proportion { conversions, .. } => conversions as f64 / n as f64,
            ArmData::Mean { sum, .. } => sum / n as f64,
        };
        v.is_finite().then_some(v)
    }

    /// The per-user variance: p(1 - p) for proportions, the n - 1 sample variance for
    /// means. `None` when it is undefined (no users; a mean arm with one user).
    ///
    /// Rounding in `sum_squares - sum²/n` can leave a tiny negative number for data
    /// where every value is equal; that is clamped to zero, which the tests then
    /// report as zero variance instead of taking a square root of it.
    pub fn variance(&self) -> Option<f64> {
        let n = self.users();
        let v = match *self {
            ArmData::Proportion { .. } => {
                let p = self.value()?;
                p * (1.0 - p)
            }
            ArmData::Mean {
                sum, sum_squares, ..
            } => {
                if n < 2 {
                    return None;
                }
                let nf = n as f64;
                (sum_squares - sum * sum / nf) / (nf - 1.0)
            }
        };
        v.is_finite().then_some(v.max(0.0))
    }

    /// Checks that the numbers could come from real data: conversions no more than
    /// users, finite sums, and a sum of squares at least sum²/n (Cauchy–Schwarz),
    /// allowing for rounding in summaries copied from reports.
    pub fn validate(&self, arm: &str) -> Result<(), StatsError> {
        let problem = match *self {
            ArmData::Proportion { users, conversions } if conversions > users => Some(format!(
                "{conversions} conversions out of {users} users; conversions cannot exceed users"
            )),
            ArmData::Proportion { .. } => None,
            ArmData::Mean {
                n,
                sum,
                sum_squares,
            } => {
                if !sum.is_finite() || !sum_squares.is_finite() {
                    Some("sum and sum of squares must be finite numbers".to_string())
                } else if sum_squares < 0.0 {
                    Some(format!(
                        "sum of squares {sum_squares} is negative; it is a sum of squares"
                    ))
                } else if n == 0 && (sum != 0.0 || sum_squares != 0.0) {
                    Some("no users, yet a non-zero sum".to_string())
                } else if n > 0 && sum * sum / n as f64 > sum_squares * (1.0 + 1e-9) + 1e-12 {
                    Some(format!(
                        "sum of squares {sum_squares} is smaller than sum²/users = {}; \
                         the numbers cannot come from real data",
                        sum * sum / n as f64
                    ))
                } else {
                    None
                }
            }
        };
        match problem {
            Some(problem) => Err(StatsError::InvalidArm {
                arm: arm.to_string(),
                problem,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportion_variance_is_binomial() {
        let a = ArmData::Proportion {
            users: 28,
            conversions: 14,
        };
        assert_eq!(a.value(), Some(0.5));
        assert_eq!(a.variance(), Some(0.25));
    }

    #[test]
    fn mean_variance_uses_n_minus_one() {
        // Values 1, 2, 3: mean 2, sample variance 1.
        let a = ArmData::Mean {
            n: 3,
            sum: 6.0,
            sum_squares: 14.0,
        };
        assert_eq!(a.value(), Some(2.0));
        assert!((a.variance().unwrap() - 1.0).abs() < 1e-12);
        let one = ArmData::Mean {
            n: 1,
            sum: 5.0,
            sum_squares: 25.0,
        };
        assert_eq!(one.variance(), None);
    }

    #[test]
    fn empty_arm_has_no_value() {
        let a = ArmData::Proportion {
            users: 0,
            conversions: 0,
        };
        assert_eq!(a.value(), None);
        assert_eq!(a.variance(), None);
    }

    #[test]
    fn validation_rejects_impossible_numbers() {
        let too_many = ArmData::Proportion {
            users: 3,
            conversions: 4,
        };
        assert!(too_many.validate("A").is_err());
        let cauchy = ArmData::Mean {
            n: 2,
            sum: 10.0,
            sum_squares: 1.0,
        };
        let err = cauchy.validate("B").unwrap_err().to_string();
        assert!(err.starts_with("arm `B`"), "{err}");
        let constant = ArmData::Mean {
            n: 3,
            sum: 0.3,
            sum_squares: 0.03,
        };
        assert!(constant.validate("C").is_ok());
        assert_eq!(constant.variance(), Some(0.0));
    }
}

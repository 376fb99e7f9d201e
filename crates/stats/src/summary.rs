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
    /// A ratio of two per-user sums (average order value = revenue / orders),
    /// read with the delta method, as GrowthBook's ratio metrics.
    Ratio {
        /// Users exposed to the arm.
        n: u64,
        /// Sum of the per-user numerators.
        num_sum: f64,
        /// Sum of their squares.
        num_sum_squares: f64,
        /// Sum of the per-user denominators.
        den_sum: f64,
        /// Sum of their squares.
        den_sum_squares: f64,
        /// Sum over users of numerator x denominator.
        num_den_sum_products: f64,
    },
    /// A proportion or mean adjusted by the same metric before exposure
    /// (CUPED: regression adjustment with GrowthBook's pooled θ).
    Adjusted {
        /// The metric after exposure: a `Proportion` or a `Mean`.
        post: Box<ArmData>,
        /// Sum of the per-user values before exposure (conversions before
        /// exposure, for a proportion).
        pre_sum: f64,
        /// Sum of their squares (equal to `pre_sum` for a proportion).
        pre_sum_squares: f64,
        /// Sum over users of the value after x the value before.
        post_pre_sum_products: f64,
    },
}

/// Which shape a metric has; every arm of one metric must have the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Conversions out of users.
    Proportion,
    /// Sum and sum of squares over users.
    Mean,
    /// A ratio of two sums over users.
    Ratio,
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
            MetricKind::Ratio => "ratio",
        }
    }
}

impl ArmData {
    /// The metric shape.
    pub fn kind(&self) -> MetricKind {
        match self {
            ArmData::Proportion { .. } => MetricKind::Proportion,
            ArmData::Mean { .. } => MetricKind::Mean,
            ArmData::Ratio { .. } => MetricKind::Ratio,
            ArmData::Adjusted { post, .. } => post.kind(),
        }
    }

    /// The statistics without an adjustment: the metric after exposure of a
    /// CUPED arm, the arm itself otherwise.
    pub fn base(&self) -> &ArmData {
        match self {
            ArmData::Adjusted { post, .. } => post.base(),
            other => other,
        }
    }

    /// Number of users in the arm.
    pub fn users(&self) -> u64 {
        match self {
            ArmData::Proportion { users, .. } => *users,
            ArmData::Mean { n, .. } | ArmData::Ratio { n, .. } => *n,
            ArmData::Adjusted { post, .. } => post.users(),
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
        let v = match self {
            ArmData::Proportion { conversions, .. } => *conversions as f64 / n as f64,
            ArmData::Mean { sum, .. } => sum / n as f64,
            ArmData::Ratio {
                num_sum, den_sum, ..
            } => {
                if *den_sum == 0.0 {
                    return None;
                }
                num_sum / den_sum
            }
            ArmData::Adjusted { post, .. } => return post.value(),
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
            ArmData::Ratio {
                num_sum,
                num_sum_squares,
                den_sum,
                den_sum_squares,
                num_den_sum_products,
                ..
            } => {
                if n < 2 {
                    return None;
                }
                // The per-user variance of the ratio by the delta method
                // (gbstats' `variance_of_ratios` of the per-user moments).
                let nf = n as f64;
                let (mean_m, mean_d) = (num_sum / nf, den_sum / nf);
                if mean_d == 0.0 {
                    return None;
                }
                let var_m = (num_sum_squares - num_sum * num_sum / nf) / (nf - 1.0);
                let var_d = (den_sum_squares - den_sum * den_sum / nf) / (nf - 1.0);
                let cov = (num_den_sum_products - num_sum * den_sum / nf) / (nf - 1.0);
                var_m / mean_d.powi(2) + var_d * mean_m.powi(2) / mean_d.powi(4)
                    - 2.0 * cov * mean_m / mean_d.powi(3)
            }
            ArmData::Adjusted { ref post, .. } => return post.variance(),
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
            ArmData::Ratio {
                num_sum,
                num_sum_squares,
                den_sum,
                den_sum_squares,
                num_den_sum_products,
                ..
            } => {
                let all = [
                    num_sum,
                    num_sum_squares,
                    den_sum,
                    den_sum_squares,
                    num_den_sum_products,
                ];
                if all.iter().any(|v| !v.is_finite()) {
                    Some("ratio sums must be finite numbers".to_string())
                } else if num_sum_squares < 0.0 || den_sum_squares < 0.0 {
                    Some("a sum of squares is negative".to_string())
                } else {
                    None
                }
            }
            ArmData::Adjusted {
                ref post,
                pre_sum,
                pre_sum_squares,
                post_pre_sum_products,
            } => {
                post.validate(arm)?;
                let n = post.users() as f64;
                if !(pre_sum.is_finite()
                    && pre_sum_squares.is_finite()
                    && post_pre_sum_products.is_finite())
                {
                    Some("pre-exposure sums must be finite numbers".to_string())
                } else if pre_sum_squares < 0.0 {
                    Some(format!(
                        "pre-exposure sum of squares {pre_sum_squares} is negative"
                    ))
                } else if n > 0.0 && pre_sum * pre_sum / n > pre_sum_squares * (1.0 + 1e-9) + 1e-12
                {
                    Some(format!(
                        "pre-exposure sum of squares {pre_sum_squares} is smaller than sum²/users = {}",
                        pre_sum * pre_sum / n
                    ))
                } else if matches!(**post, ArmData::Proportion { users, .. } if pre_sum > users as f64)
                {
                    Some(format!(
                        "{pre_sum} conversions before exposure out of {n} users"
                    ))
                } else {
                    None
                }
            }
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

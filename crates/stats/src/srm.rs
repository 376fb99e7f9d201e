//! Sample-ratio mismatch: are users split between arms as configured?
//!
//! A broken assignment (a redirect that loses users in one arm, a bot filter that
//! hits one variant) biases every metric, and no test on the metric can detect it.
//! The check is Pearson's chi-square goodness of fit of the observed users per arm
//! against the configured weights, with k - 1 degrees of freedom, flagged at
//! p < 0.001 (GrowthBook's threshold: strict, because a flag means "do not trust
//! this experiment"). With fewer than 8 users in an arm the chi-square
//! approximation is poor, so the check says so instead of guessing.

use crate::StatsError;
use crate::dist::chi_square_sf;

/// p-value below which a mismatch is flagged.
pub const SRM_THRESHOLD: f64 = 0.001;

/// Fewest users per arm for which the chi-square approximation is trusted.
pub const SRM_MIN_USERS: u64 = 8;

/// The verdict of the sample-ratio check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrmStatus {
    /// The observed split is consistent with the configured one.
    Ok,
    /// The split is off (p < [`SRM_THRESHOLD`]); results should not be trusted.
    Mismatch,
    /// Some arm has fewer than [`SRM_MIN_USERS`] users, too few to judge.
    NotEnoughTraffic,
}

impl SrmStatus {
    /// The stable name used in JSON: `ok`, `mismatch` or `not_enough_traffic`.
    pub fn as_str(self) -> &'static str {
        match self {
            SrmStatus::Ok => "ok",
            SrmStatus::Mismatch => "mismatch",
            SrmStatus::NotEnoughTraffic => "not_enough_traffic",
        }
    }
}

/// The full sample-ratio check, for display and for JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SrmCheck {
    /// The verdict.
    pub status: SrmStatus,
    /// The chi-square statistic (0 when there are no users at all).
    pub chi_square: f64,
    /// Its p-value with k - 1 degrees of freedom (1 when there are no users).
    pub p_value: f64,
    /// Users per arm, in the given order.
    pub users: Vec<u64>,
    /// The configured split, normalised to sum to 1.
    pub expected_shares: Vec<f64>,
    /// The observed split (all zero when there are no users).
    pub observed_shares: Vec<f64>,
}

/// Checks `users` (one count per arm) against `weights` (the configured split in
/// the same order, any positive scale: `[50, 50]`, `[1, 1]` and `[0.5, 0.5]` agree).
///
/// ```
/// use tenure_stats::{check_srm, SrmStatus};
/// let srm = check_srm(&[1000, 1200], &[50.0, 50.0]).unwrap();
/// assert_eq!(srm.status, SrmStatus::Mismatch);
/// assert!((srm.p_value - 0.000_020_079).abs() < 5e-10);
/// ```
pub fn check_srm(users: &[u64], weights: &[f64]) -> Result<SrmCheck, StatsError> {
    let split_text = || {
        weights
            .iter()
            .map(f64::to_string)
            .collect::<Vec<_>>()
            .join(":")
    };
    if users.len() < 2 || weights.len() != users.len() {
        return Err(StatsError::InvalidSetting {
            setting: "split",
            value: split_text(),
            expected: format!("one weight per arm ({} arms, at least 2)", users.len()),
        });
    }
    if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        return Err(StatsError::InvalidSetting {
            setting: "split",
            value: split_text(),
            expected: "positive weights, such as 50:50".to_string(),
        });
    }
    let weight_total: f64 = weights.iter().sum();
    let expected_shares: Vec<f64> = weights.iter().map(|w| w / weight_total).collect();
    let total: u64 = users.iter().sum();
    let total_f = total as f64;
    let observed_shares: Vec<f64> = users
        .iter()
        .map(|&u| if total == 0 { 0.0 } else { u as f64 / total_f })
        .collect();

    let chi_square: f64 = if total == 0 {
        0.0
    } else {
        users
            .iter()
            .zip(&expected_shares)
            .map(|(&o, &share)| {
                let e = share * total_f;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    };
    let p_value = if total == 0 {
        1.0
    } else {
        let p = chi_square_sf(chi_square, (users.len() - 1) as f64);
        if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    let status = if users.iter().any(|&u| u < SRM_MIN_USERS) {
        SrmStatus::NotEnoughTraffic
    } else if p_value < SRM_THRESHOLD {
        SrmStatus::Mismatch
    } else {
        SrmStatus::Ok
    };
    Ok(SrmCheck {
        status,
        chi_square,
        p_value,
        users: users.to_vec(),
        expected_shares,
        observed_shares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 510 vs 490 at 50:50: χ² = 2 · 10² / 500 = 0.4, and with one degree of
    /// freedom p = 2 (1 - Φ(sqrt 0.4)) = 0.527089.
    #[test]
    fn hand_computed_balanced_split() {
        let srm = check_srm(&[510, 490], &[1.0, 1.0]).unwrap();
        assert!((srm.chi_square - 0.4).abs() < 1e-12);
        assert!((srm.p_value - 0.527_089).abs() < 1e-6);
        assert_eq!(srm.status, SrmStatus::Ok);
    }

    /// An uneven configured split is respected: 2000 vs 1000 at 2:1 is perfect.
    #[test]
    fn uneven_split() {
        let srm = check_srm(&[2000, 1000], &[2.0, 1.0]).unwrap();
        assert_eq!(srm.chi_square, 0.0);
        assert_eq!(srm.p_value, 1.0);
        assert_eq!(srm.expected_shares, vec![2.0 / 3.0, 1.0 / 3.0]);
    }

    /// Three arms use two degrees of freedom: χ² with 2 dof has p = exp(-x/2).
    #[test]
    fn three_arms_use_two_degrees_of_freedom() {
        let srm = check_srm(&[1100, 1000, 900], &[1.0, 1.0, 1.0]).unwrap();
        // (100² + 0 + 100²) / 1000 = 20
        assert!((srm.chi_square - 20.0).abs() < 1e-12);
        assert!((srm.p_value - (-10.0f64).exp()).abs() < 1e-12);
        assert_eq!(srm.status, SrmStatus::Mismatch);
    }

    #[test]
    fn small_arms_are_not_judged() {
        let srm = check_srm(&[7, 30], &[1.0, 1.0]).unwrap();
        assert_eq!(srm.status, SrmStatus::NotEnoughTraffic);
        let empty = check_srm(&[0, 0], &[1.0, 1.0]).unwrap();
        assert_eq!(empty.status, SrmStatus::NotEnoughTraffic);
        assert_eq!(empty.p_value, 1.0);
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert!(check_srm(&[10, 10], &[1.0]).is_err());
        assert!(check_srm(&[10, 10], &[1.0, 0.0]).is_err());
        assert!(check_srm(&[10, 10], &[1.0, f64::NAN]).is_err());
        assert!(check_srm(&[10], &[1.0]).is_err());
    }
}

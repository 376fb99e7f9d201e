//! Multiple-testing corrections across several metrics (and arms).
//!
//! Reading ten metrics at α = 0.05 finds a "significant" one by chance 40 % of the
//! time. Holm–Bonferroni controls the chance of any false positive (family-wise
//! error); Benjamini–Hochberg controls the expected share of false positives among
//! the discoveries (false discovery rate) and so keeps more power. Both are given as
//! adjusted p-values, compared against the unchanged α, as GrowthBook shows them.

use crate::StatsError;

/// Which correction to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Correction {
    /// Report raw p-values.
    #[default]
    None,
    /// Holm's step-down Bonferroni: family-wise error rate.
    HolmBonferroni,
    /// Benjamini–Hochberg step-up: false discovery rate.
    BenjaminiHochberg,
}

impl Correction {
    /// The stable name used in flags and JSON: `none`, `holm` or `bh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Correction::None => "none",
            Correction::HolmBonferroni => "holm",
            Correction::BenjaminiHochberg => "bh",
        }
    }
}

impl std::str::FromStr for Correction {
    type Err = StatsError;

    fn from_str(s: &str) -> Result<Self, StatsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Correction::None),
            "holm" | "holm-bonferroni" => Ok(Correction::HolmBonferroni),
            "bh" | "benjamini-hochberg" => Ok(Correction::BenjaminiHochberg),
            _ => Err(StatsError::InvalidSetting {
                setting: "correction",
                value: s.to_string(),
                expected: "one of none, holm, bh".to_string(),
            }),
        }
    }
}

/// Adjusts `p_values` (in the caller's order; the result is in the same order).
/// Every p-value must lie in [0, 1].
///
/// ```
/// use tenure_stats::{adjust_p_values, Correction};
/// let adj = adjust_p_values(&[0.01, 0.04, 0.03], Correction::HolmBonferroni).unwrap();
/// assert_eq!(adj, vec![0.03, 0.06, 0.06]);
/// ```
pub fn adjust_p_values(p_values: &[f64], correction: Correction) -> Result<Vec<f64>, StatsError> {
    if let Some(bad) = p_values
        .iter()
        .find(|p| !(p.is_finite() && (0.0..=1.0).contains(*p)))
    {
        return Err(StatsError::InvalidSetting {
            setting: "p-value",
            value: bad.to_string(),
            expected: "a probability between 0 and 1".to_string(),
        });
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    match correction {
        Correction::None => adjusted.copy_from_slice(p_values),
        Correction::HolmBonferroni => {
            // Step down from the smallest p: multiply the k-th smallest (0-based) by
            // m - k and keep the sequence non-decreasing.
            let mut running = 0.0f64;
            for (k, &i) in order.iter().enumerate() {
                running = running.max(((m - k) as f64 * p_values[i]).min(1.0));
                adjusted[i] = running;
            }
        }
        Correction::BenjaminiHochberg => {
            // Step up from the largest p: the k-th smallest (1-based) times m / k,
            // then the running minimum towards the small end.
            let mut running = 1.0f64;
            for (k, &i) in order.iter().enumerate().rev() {
                running = running.min(p_values[i] * m as f64 / (k + 1) as f64);
                adjusted[i] = running;
            }
        }
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    /// Worked by hand. Sorted: 0.01, 0.02, 0.03, 0.04, 0.20 (m = 5).
    /// Holm: 5·0.01 = 0.05, 4·0.02 = 0.08, 3·0.03 = 0.09, 2·0.04 = 0.08 → 0.09
    /// (monotone), 1·0.20 = 0.20.
    /// BH: 0.20·5/5 = 0.20, 0.04·5/4 = 0.05, 0.03·5/3 = 0.05, 0.02·5/2 = 0.05,
    /// 0.01·5/1 = 0.05.
    #[test]
    fn hand_worked_list() {
        let p = [0.03, 0.20, 0.01, 0.04, 0.02];
        close(
            &adjust_p_values(&p, Correction::HolmBonferroni).unwrap(),
            &[0.09, 0.20, 0.05, 0.09, 0.08],
        );
        close(
            &adjust_p_values(&p, Correction::BenjaminiHochberg).unwrap(),
            &[0.05, 0.20, 0.05, 0.05, 0.05],
        );
        close(&adjust_p_values(&p, Correction::None).unwrap(), &p);
    }

    /// BH step-up with a non-monotone tail: sorted 0.001, 0.008, 0.039, 0.041,
    /// 0.042, 0.06 (m = 6) gives 0.006, 0.024, 0.0504, 0.0504, 0.0504, 0.06.
    #[test]
    fn benjamini_hochberg_takes_running_minimum() {
        let p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06];
        close(
            &adjust_p_values(&p, Correction::BenjaminiHochberg).unwrap(),
            &[0.006, 0.024, 0.0504, 0.0504, 0.0504, 0.06],
        );
    }

    #[test]
    fn adjusted_values_are_capped_and_never_smaller() {
        let p = [0.5, 0.9, 0.7];
        for c in [Correction::HolmBonferroni, Correction::BenjaminiHochberg] {
            let adj = adjust_p_values(&p, c).unwrap();
            for (a, raw) in adj.iter().zip(p) {
                assert!(*a <= 1.0 && *a >= raw);
            }
        }
        assert_eq!(
            adjust_p_values(&[0.5, 0.9, 0.7], Correction::HolmBonferroni).unwrap(),
            vec![1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn names_round_trip() {
        for c in [
            Correction::None,
            Correction::HolmBonferroni,
            Correction::BenjaminiHochberg,
        ] {
            assert_eq!(c.as_str().parse::<Correction>().unwrap(), c);
        }
        assert!("bonferroni".parse::<Correction>().is_err());
    }

    #[test]
    fn empty_and_invalid_inputs() {
        assert!(
            adjust_p_values(&[], Correction::HolmBonferroni)
                .unwrap()
                .is_empty()
        );
        assert!(adjust_p_values(&[1.5], Correction::None).is_err());
        assert!(adjust_p_values(&[f64::NAN], Correction::None).is_err());
    }
}

//! Property tests: over plausible inputs (including degenerate arms), nothing the
//! crate returns is NaN or infinite, p-values are probabilities, and intervals
//! contain their estimate.

use proptest::prelude::*;
use tenure_stats::{
    Alpha, ArmData, ArmSummary, Correction, Difference, MetricSummary, ReadoutConfig, Sided,
    TuningParameter, adjust_p_values, bayesian, check_srm, readout, sequential_test, t_test,
};

fn proportion() -> impl Strategy<Value = ArmData> {
    (0u64..2_000_000).prop_flat_map(|users| {
        (Just(users), 0..=users)
            .prop_map(|(users, conversions)| ArmData::Proportion { users, conversions })
    })
}

/// Means built from a plausible per-user mean and spread so the sum of squares is
/// consistent; spread 0 gives constant arms.
fn mean_arm() -> impl Strategy<Value = ArmData> {
    (0u64..1_000_000, -1e4f64..1e4, 0f64..1e4).prop_map(|(n, mu, sd)| {
        let nf = n as f64;
        let sum = mu * nf;
        let var = if n > 1 { sd * sd } else { 0.0 };
        let sum_squares = if n == 0 {
            0.0
        } else {
            var * (nf - 1.0).max(0.0) + sum * sum / nf
        };
        ArmData::Mean {
            n,
            sum,
            sum_squares,
        }
    })
}

fn pair() -> impl Strategy<Value = (ArmData, ArmData)> {
    prop_oneof![(proportion(), proportion()), (mean_arm(), mean_arm())]
}

fn difference() -> impl Strategy<Value = Difference> {
    prop_oneof![Just(Difference::Relative), Just(Difference::Absolute)]
}

fn sided() -> impl Strategy<Value = Sided> {
    prop_oneof![Just(Sided::Two), Just(Sided::Greater), Just(Sided::Less)]
}

fn finite(x: Option<f64>) -> bool {
    x.is_none_or(f64::is_finite)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tests_never_return_non_finite(
        (a, b) in pair(),
        d in difference(),
        s in sided(),
        alpha in 0.001f64..0.2,
        n_star in 10f64..1e6,
    ) {
        let alpha = Alpha::new(alpha).unwrap();
        let n_star = TuningParameter::new(n_star).unwrap();
        for r in [t_test(&a, &b, d, s, alpha), sequential_test(&a, &b, d, s, alpha, n_star)]
            .into_iter()
            .flatten()
        {
            prop_assert!(r.effect.is_finite() && r.std_error.is_finite());
            prop_assert!((0.0..=1.0).contains(&r.p_value));
            prop_assert!(finite(r.ci.lower) && finite(r.ci.upper));
            prop_assert!(r.ci.contains(r.effect), "{r:?}");
        }
        if let Ok(p) = bayesian(&a, &b, d, alpha, None) {
            for x in [p.mean, p.std_dev, p.chance_to_win, p.risk_control, p.risk_treatment] {
                prop_assert!(x.is_finite());
            }
            prop_assert!((0.0..=1.0).contains(&p.chance_to_win));
            prop_assert!(p.risk_control >= 0.0 && p.risk_treatment >= 0.0);
        }
    }

    #[test]
    fn readout_rows_are_finite((a, b) in pair(), bayes in any::<bool>()) {
        let arms = vec![
            ArmSummary { arm: "A".into(), data: a },
            ArmSummary { arm: "B".into(), data: b },
        ];
        let config = ReadoutConfig {
            bayesian: bayes,
            correction: Correction::BenjaminiHochberg,
            ..ReadoutConfig::default()
        };
        let out = readout(&[MetricSummary { name: "m".into(), arms }], &config).unwrap();
        prop_assert!(out[0].srm.p_value.is_finite() && out[0].srm.chi_square.is_finite());
        for row in &out[0].arms {
            for x in [row.value, row.lift, row.std_error, row.ci_lower, row.ci_upper,
                      row.p_value, row.p_value_adjusted, row.chance_to_win,
                      row.risk_control, row.risk_treatment] {
                prop_assert!(finite(x));
            }
            prop_assert!(!row.verdict.contains("NaN") && !row.verdict.contains("inf"));
            prop_assert_eq!(row.lift.is_none() && !row.is_control, row.no_result.is_some());
        }
    }

    #[test]
    fn srm_is_finite(users in proptest::collection::vec(0u64..10_000_000, 2..6)) {
        let weights = vec![1.0; users.len()];
        let srm = check_srm(&users, &weights).unwrap();
        prop_assert!(srm.p_value.is_finite() && (0.0..=1.0).contains(&srm.p_value));
    }

    #[test]
    fn corrections_stay_in_range_and_keep_order(p in proptest::collection::vec(0f64..=1.0, 0..20)) {
        for c in [Correction::HolmBonferroni, Correction::BenjaminiHochberg] {
            let adj = adjust_p_values(&p, c).unwrap();
            for (i, a) in adj.iter().enumerate() {
                prop_assert!(*a >= p[i] - 1e-15 && *a <= 1.0);
                for (j, b) in adj.iter().enumerate() {
                    if p[i] < p[j] {
                        prop_assert!(a <= b);
                    }
                }
            }
        }
    }
}

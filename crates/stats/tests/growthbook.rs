//! Published figures from GrowthBook's stats engine (gbstats) test suite, which the
//! DESIGN names as the check on this crate. gbstats rounds to five decimals before
//! comparing, so each value here is rounded the same way and must equal the
//! printed figure (|round(x) - expected| < 5e-6).

use tenure_stats::{
    Alpha, ArmData, Difference, Sided, SrmStatus, TuningParameter, bayesian, check_srm,
    sequential_test, t_test,
};

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

#[track_caller]
fn assert_5(actual: f64, expected: f64) {
    assert!(
        (round5(actual) - expected).abs() < 5e-6,
        "got {actual} (rounded {}), expected {expected}",
        round5(actual)
    );
}

fn prop(users: u64, conversions: u64) -> ArmData {
    ArmData::Proportion { users, conversions }
}

fn mean(n: u64, sum: f64, sum_squares: f64) -> ArmData {
    ArmData::Mean {
        n,
        sum,
        sum_squares,
    }
}

fn means_control() -> ArmData {
    mean(3407, 1396.87, 52377.9767)
}

fn means_treatment() -> ArmData {
    mean(3461, 2422.7, 134698.29)
}

/// `test_two_sided_ttest_binom`.
#[test]
fn relative_two_sided_proportions() {
    let r = t_test(
        &prop(28, 14),
        &prop(30, 16),
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_5(r.effect, 0.06667);
    assert_5(r.ci.lower.unwrap(), -0.47767);
    assert_5(r.ci.upper.unwrap(), 0.61101);
    assert_5(r.p_value, 0.80707);
    assert_5(r.std_error, 0.2717);
}

/// `test_two_sided_ttest`.
#[test]
fn relative_two_sided_means() {
    let r = t_test(
        &means_control(),
        &means_treatment(),
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_5(r.effect, 0.70732);
    assert_5(r.ci.lower.unwrap(), -0.03526);
    assert_5(r.ci.upper.unwrap(), 1.44989);
    assert_5(r.p_value, 0.06191);
    assert_5(r.std_error, 0.37879);
}

/// `test_two_sided_ttest_absolute`.
#[test]
fn absolute_two_sided_means() {
    let r = t_test(
        &means_control(),
        &means_treatment(),
        Difference::Absolute,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_5(r.effect, 0.29);
    assert_5(r.ci.lower.unwrap(), 0.04538);
    assert_5(r.ci.upper.unwrap(), 0.53462);
    assert_5(r.p_value, 0.02016);
    assert_5(r.std_error, 0.12478);
}

/// From the issue: 1000 vs 1200 at 50/50 gives p = 0.000020079, flagged.
#[test]
fn srm_published_figure() {
    let srm = check_srm(&[1000, 1200], &[50.0, 50.0]).unwrap();
    assert!(
        (srm.p_value - 0.000_020_079).abs() < 5e-10,
        "{}",
        srm.p_value
    );
    assert_eq!(srm.status, SrmStatus::Mismatch);
}

/// `test_two_sided_ttest_missing_variance`: a two-user arm whose sum of squares is
/// below sum²/n has no usable variance; gbstats returns its default output, here a
/// typed no-result. (The summary would also fail `validate`, as it cannot come from
/// real data.)
#[test]
fn missing_variance_is_no_result() {
    let r = t_test(
        &mean(2, 1396.87, 52377.9767),
        &means_treatment(),
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    );
    assert!(r.is_err());
}

/// `TestSequentialTTest.test_sequential_test_runs` (N* = 1000).
#[test]
fn sequential_means() {
    let r = sequential_test(
        &mean(3000, 1396.87, 52377.9767),
        &means_treatment(),
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
        TuningParameter::new(1000.0).unwrap(),
    )
    .unwrap();
    assert_5(r.effect, 0.50336);
    assert_5(r.std_error, 0.33341);
    assert_5(r.ci.lower.unwrap(), -0.55844);
    assert_5(r.ci.upper.unwrap(), 1.56516);
    assert_5(r.p_value, 1.0);
}

/// `TestSequentialTTest.test_sequential_test_runs_prop` (default N* = 5000).
#[test]
fn sequential_proportions() {
    let r = sequential_test(
        &prop(3000, 1396),
        &prop(3461, 2422),
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
        TuningParameter::DEFAULT,
    )
    .unwrap();
    assert_5(r.effect, 0.50386);
    assert_5(r.std_error, 0.03386);
    assert_5(r.ci.lower.unwrap(), 0.40098);
    assert_5(r.ci.upper.unwrap(), 0.60675);
    assert_5(r.p_value, 0.0);
}

/// Effect-Bayesian tests (flat prior), `TestBinom.test_bayesian_binomial_ab_test`.
#[test]
fn bayesian_proportions() {
    let r = bayesian(
        &prop(100, 49),
        &prop(100, 51),
        Difference::Relative,
        Alpha::DEFAULT,
        None,
    )
    .unwrap();
    assert_5(r.mean, 0.04082);
    assert_5(r.std_dev, 0.14725);
    assert_5(r.credible_interval.lower.unwrap(), -0.24779);
    assert_5(r.credible_interval.upper.unwrap(), 0.32943);
    assert_5(r.chance_to_win, 0.60918);
    assert_5(r.risk_control, 0.0814);
    assert_5(r.risk_treatment, 0.04058);
}

/// Effect-Bayesian tests (flat prior), `TestNorm.test_bayesian_gaussian_ab_test`.
#[test]
fn bayesian_means() {
    let r = bayesian(
        &mean(10, 100.0, 1002.25),
        &mean(10, 105.0, 1111.5),
        Difference::Relative,
        Alpha::DEFAULT,
        None,
    )
    .unwrap();
    assert_5(r.mean, 0.05);
    assert_5(r.std_dev, 0.03572);
    assert_5(r.credible_interval.lower.unwrap(), -0.02);
    assert_5(r.credible_interval.upper.unwrap(), 0.12);
    assert_5(r.chance_to_win, 0.91923);
    assert_5(r.risk_control, 0.05131);
    assert_5(r.risk_treatment, 0.00131);
}

/// `test_missing_data`: empty arms give no result (gbstats: chance to win 0.5,
/// expected 0 as its "default output").
#[test]
fn bayesian_missing_data() {
    assert!(
        bayesian(
            &prop(0, 0),
            &prop(0, 0),
            Difference::Relative,
            Alpha::DEFAULT,
            None
        )
        .is_err()
    );
}

/// An informative (proper) prior on the relative lift,
/// `TestNorm.test_bayesian_gaussian_ab_test_informative`: N(0.1, 0.1).
#[test]
fn bayesian_means_informative_prior() {
    let r = bayesian(
        &mean(10, 100.0, 1002.25),
        &mean(10, 105.0, 1111.5),
        Difference::Relative,
        Alpha::DEFAULT,
        Some(tenure_stats::GaussianPrior {
            mean: 0.1,
            variance: 0.1,
        }),
    )
    .unwrap();
    assert_5(r.mean, 0.05063);
    assert_5(r.std_dev, 0.03549);
    assert_5(r.credible_interval.lower.unwrap(), -0.01893);
    assert_5(r.credible_interval.upper.unwrap(), 0.12019);
    assert_5(r.chance_to_win, 0.92315);
    assert_5(r.risk_control, 0.05186);
    assert_5(r.risk_treatment, 0.00123);
}

#[track_caller]
fn assert_9(actual: f64, expected: f64) {
    let rounded = (actual * 1e9).round() / 1e9;
    assert!(
        (rounded - expected).abs() < 5e-10,
        "got {actual} (rounded {rounded}), expected {expected}"
    );
}

fn cuped(post: ArmData, pre_sum: f64, pre_sum_squares: f64, products: f64) -> ArmData {
    ArmData::Adjusted {
        post: Box::new(post),
        pre_sum,
        pre_sum_squares,
        post_pre_sum_products: products,
    }
}

/// CUPED on a mean, `TestAnalyzeMetricDfRegressionAdjustment.test_analyze_metric_df_ra`
/// (frequentist, relative; gbstats rounds these to 9 decimals): the lift is
/// on the adjusted means over the unadjusted control mean.
#[test]
fn cuped_mean_frequentist() {
    let control = cuped(mean(3001, 300.0, 600.0), 210.0, 415.0, -20.0);
    let treatment = cuped(mean(3000, 222.0, 555.0), 120.0, 405.0, -10.0);
    assert_9(control.value().unwrap(), 0.099966678);
    assert_9(treatment.value().unwrap(), 0.074);
    let r = t_test(
        &control,
        &treatment,
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_9(r.effect, -0.281707154);
    assert_9(r.p_value, 0.003732549);
}

/// CUPED on a proportion, `test_analyze_metric_df_ra_proportion`.
#[test]
fn cuped_proportion_frequentist() {
    let control = cuped(prop(3001, 300), 210.0, 210.0, -20.0);
    let treatment = cuped(prop(3000, 222), 120.0, 120.0, -10.0);
    let r = t_test(
        &control,
        &treatment,
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_9(r.effect, -0.31620216);
    assert_9(r.p_value, 0.000000353);
}

/// CUPED with the sequential test, `TestSequentialTTest.test_sequential_test_runs_ra`
/// (default N* = 5000).
#[test]
fn cuped_mean_sequential() {
    let control = cuped(mean(3000, 1396.87, 52377.9767), 16.87, 527.9767, 1.0);
    let treatment = cuped(mean(3461, 2422.7, 134698.29), 22.7, 1348.29, 1.0);
    let r = sequential_test(
        &control,
        &treatment,
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
        TuningParameter::new(5000.0).unwrap(),
    )
    .unwrap();
    assert_5(r.effect, 0.50338);
    assert_5(r.std_error, 0.33341);
    assert_5(r.ci.lower.unwrap(), -0.50969);
    assert_5(r.ci.upper.unwrap(), 1.51646);
    assert_5(r.p_value, 1.0);
}

fn ratio(n: u64, m: f64, mss: f64, d: f64, dss: f64, products: f64) -> ArmData {
    ArmData::Ratio {
        n,
        num_sum: m,
        num_sum_squares: mss,
        den_sum: d,
        den_sum_squares: dss,
        num_den_sum_products: products,
    }
}

/// A ratio metric with the delta method, `test_get_metric_dfs_frequentist_ratio`
/// and `test_get_metric_dfs_bayesian_ratio` (9 decimals).
#[test]
fn ratio_frequentist_and_bayesian() {
    let control = ratio(100, 270.0, 848.79, 510.0, 810.0, -900.0);
    let treatment = ratio(120, 300.0, 869.0, 500.0, 800.0, -905.0);
    assert_9(control.value().unwrap(), 0.529411765);
    assert_9(treatment.value().unwrap(), 0.6);
    let r = t_test(
        &control,
        &treatment,
        Difference::Relative,
        Sided::Two,
        Alpha::DEFAULT,
    )
    .unwrap();
    assert_9(r.effect, 0.133333333);
    assert_9(r.p_value, 0.610663339);
    let b = bayesian(
        &control,
        &treatment,
        Difference::Relative,
        Alpha::DEFAULT,
        None,
    )
    .unwrap();
    assert_9(b.mean, 0.133333333);
    assert_9(b.chance_to_win, 0.694926359);
    assert_9(b.risk_treatment, 0.050934045);
}

/// The Bayesian readout of a CUPED pair uses the same adjusted moments: with
/// the flat prior its posterior is N(lift, std_error²) of the t-test, for the
/// relative lift and the absolute difference (gbstats builds both from one
/// `EffectMoments`).
#[test]
fn cuped_bayesian_uses_the_adjusted_moments() {
    let control = cuped(mean(3001, 300.0, 600.0), 210.0, 415.0, -20.0);
    let treatment = cuped(mean(3000, 222.0, 555.0), 120.0, 405.0, -10.0);
    for difference in [Difference::Relative, Difference::Absolute] {
        let t = t_test(&control, &treatment, difference, Sided::Two, Alpha::DEFAULT).unwrap();
        let b = bayesian(&control, &treatment, difference, Alpha::DEFAULT, None).unwrap();
        assert!((b.mean - t.effect).abs() < 1e-12, "{difference:?}");
        assert!((b.std_dev - t.std_error).abs() < 1e-12, "{difference:?}");
        // And the adjustment matters: the unadjusted lift differs.
        let plain = t_test(
            &mean(3001, 300.0, 600.0),
            &mean(3000, 222.0, 555.0),
            difference,
            Sided::Two,
            Alpha::DEFAULT,
        )
        .unwrap();
        assert!((plain.effect - t.effect).abs() > 1e-4, "{difference:?}");
    }
}

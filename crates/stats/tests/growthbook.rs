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

//! The readout: per metric and arm, the numbers an experiment owner reads and a
//! sentence that says what they mean.
//!
//! This is the entry point the CLI calls. It validates the whole request first
//! (arms, control, split), then runs the chosen test per treatment arm, the
//! sample-ratio check per metric, the Bayesian summary if asked, and the
//! multiple-testing correction across every (metric, treatment) p-value at once, as
//! GrowthBook does. The output structs are plain data with public fields so the CLI
//! can render them as a table, CSV or JSON without reaching back in here.

use crate::effect::{Estimate, Interval, NoResult};
use crate::verdict::{
    VerdictContext, control_verdict, no_result_verdict, srm_verdict, treatment_verdict,
};
use crate::{
    Alpha, ArmData, ArmSummary, BayesianEstimate, Correction, Difference, MetricKind, Sided,
    SrmCheck, SrmStatus, StatsError, TuningParameter, adjust_p_values, bayesian, check_srm,
    sequential_test, t_test,
};

/// One metric's per-arm statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    /// The metric's name as the user wrote it (`funnel:view>buy within 7d`).
    pub name: String,
    /// The arms, in the order the split refers to.
    pub arms: Vec<ArmSummary>,
}

/// How to read the experiment. `Default` gives DESIGN.md's defaults: relative lift,
/// two-sided Welch test at α = 0.05, first arm as control, equal split, no
/// sequential, Bayesian or multiple-testing options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadoutConfig {
    /// Significance level.
    pub alpha: Alpha,
    /// Relative lift or absolute difference.
    pub difference: Difference,
    /// Alternative hypothesis.
    pub sided: Sided,
    /// Use confidence sequences tuned at this N* instead of the fixed-horizon test.
    pub sequential: Option<TuningParameter>,
    /// Add chance to win and risk from the normal posterior.
    pub bayesian: bool,
    /// A proper Gaussian prior on the effect for the posterior (on the scale
    /// of `difference`: the relative lift by default); `None`: GrowthBook's
    /// flat prior.
    pub prior: Option<crate::GaussianPrior>,
    /// Correction across all metrics and treatment arms.
    pub correction: Correction,
    /// Name of the control arm; the first arm of each metric when `None`.
    pub control: Option<String>,
    /// Expected split, one weight per arm in the metrics' arm order; equal when
    /// `None`.
    pub split: Option<Vec<f64>>,
}

/// The readout of one arm of one metric: a tidy row.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmReadout {
    /// Metric name.
    pub metric: String,
    /// Arm name.
    pub arm: String,
    /// Whether this arm is the baseline (its comparison fields are all `None`).
    pub is_control: bool,
    /// Users in the arm.
    pub users: u64,
    /// Conversion rate (a fraction) or mean; `None` without users.
    pub value: Option<f64>,
    /// The effect against control: relative lift as a fraction (0.067 = +6.7 %) or
    /// absolute difference, per [`MetricReadout::difference`].
    pub lift: Option<f64>,
    /// Standard error of `lift`.
    pub std_error: Option<f64>,
    /// Lower CI bound; `None` when unbounded (one-sided "less") or no result.
    pub ci_lower: Option<f64>,
    /// Upper CI bound; `None` when unbounded (one-sided "greater") or no result.
    pub ci_upper: Option<f64>,
    /// Raw p-value of the chosen test.
    pub p_value: Option<f64>,
    /// p-value after the multiple-testing correction; `None` without one.
    pub p_value_adjusted: Option<f64>,
    /// Whether the (adjusted, if any) p-value is below α.
    pub significant: Option<bool>,
    /// Posterior probability that this arm beats control (with `bayesian`).
    pub chance_to_win: Option<f64>,
    /// Expected loss of keeping control (with `bayesian`).
    pub risk_control: Option<f64>,
    /// Expected loss of shipping this arm (with `bayesian`).
    pub risk_treatment: Option<f64>,
    /// Why there is no comparison, for a treatment arm that has none.
    pub no_result: Option<NoResult>,
    /// One plain sentence summarising the row.
    pub verdict: String,
}

/// The readout of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReadout {
    /// Metric name.
    pub metric: String,
    /// Conversion or mean metric.
    pub kind: MetricKind,
    /// Name of the control arm.
    pub control: String,
    /// Which difference `lift` holds.
    pub difference: Difference,
    /// Alternative hypothesis used.
    pub sided: Sided,
    /// Significance level used.
    pub alpha: f64,
    /// N* when the readout is sequential.
    pub sequential: Option<f64>,
    /// Correction applied to p-values.
    pub correction: Correction,
    /// The sample-ratio check over this metric's arms.
    pub srm: SrmCheck,
    /// The sample-ratio check in words.
    pub srm_verdict: String,
    /// Every arm, control first then the others in input order.
    pub arms: Vec<ArmReadout>,
}

/// Reads out every metric. Fails only on bad input (fewer than two arms, an unknown
/// control, mixed metric shapes, a split that does not match the arms); arms
/// without a statistical answer get a [`NoResult`] in their row instead.
///
/// ```
/// use tenure_stats::{ArmData, ArmSummary, MetricSummary, ReadoutConfig, readout};
/// let arms = vec![
///     ArmSummary { arm: "A".into(), data: ArmData::Proportion { users: 28, conversions: 14 } },
///     ArmSummary { arm: "B".into(), data: ArmData::Proportion { users: 30, conversions: 16 } },
/// ];
/// let out = readout(&[MetricSummary { name: "signup".into(), arms }], &ReadoutConfig::default())
///     .unwrap();
/// assert_eq!(
///     out[0].arms[1].verdict,
///     "Treatment B is better: +6.7 % (95 % CI -47.8 % to +61.1 %), not significant (p = 0.81)"
/// );
/// ```
pub fn readout(
    metrics: &[MetricSummary],
    config: &ReadoutConfig,
) -> Result<Vec<MetricReadout>, StatsError> {
    let mut out = Vec::with_capacity(metrics.len());
    for metric in metrics {
        out.push(read_metric(metric, config)?);
    }
    apply_correction(&mut out, config)?;
    for m in &mut out {
        let context = VerdictContext {
            difference: m.difference,
            kind: m.kind,
            sequential: m.sequential.is_some(),
            mismatch: m.srm.status == SrmStatus::Mismatch,
        };
        for row in &mut m.arms {
            if !row.is_control && row.no_result.is_none() {
                row.verdict = treatment_verdict(row, context, config);
            }
        }
    }
    Ok(out)
}

impl ArmReadout {
    /// The confidence interval as one value, `None` for the control row and for
    /// arms without a result.
    pub fn ci(&self) -> Option<Interval> {
        self.lift.map(|_| Interval {
            lower: self.ci_lower,
            upper: self.ci_upper,
        })
    }
}

fn invalid(metric: &str, problem: String) -> StatsError {
    StatsError::InvalidMetric {
        metric: metric.to_string(),
        problem,
    }
}

fn read_metric(
    metric: &MetricSummary,
    config: &ReadoutConfig,
) -> Result<MetricReadout, StatsError> {
    let name = metric.name.as_str();
    let arms = &metric.arms;
    if arms.len() < 2 {
        return Err(invalid(
            name,
            format!("an A/B test needs at least two arms, found {}", arms.len()),
        ));
    }
    let kind = arms[0].data.kind();
    for (i, a) in arms.iter().enumerate() {
        a.data.validate(&a.arm)?;
        if a.data.kind() != kind {
            return Err(invalid(
                name,
                format!(
                    "arm `{}` is a {} metric but arm `{}` is a {} metric",
                    a.arm,
                    kind_word(a.data.kind()),
                    arms[0].arm,
                    kind_word(kind)
                ),
            ));
        }
        if arms[..i].iter().any(|b| b.arm == a.arm) {
            return Err(invalid(name, format!("arm `{}` appears twice", a.arm)));
        }
    }
    let control_index = match &config.control {
        None => 0,
        Some(c) => arms.iter().position(|a| &a.arm == c).ok_or_else(|| {
            let known: Vec<&str> = arms.iter().map(|a| a.arm.as_str()).collect();
            StatsError::InvalidSetting {
                setting: "control",
                value: c.clone(),
                expected: format!("one of the arms: {}", known.join(", ")),
            }
        })?,
    };
    let weights = match &config.split {
        Some(w) => w.clone(),
        None => vec![1.0; arms.len()],
    };
    let users: Vec<u64> = arms.iter().map(|a| a.data.users()).collect();
    let srm = check_srm(&users, &weights)?;
    let srm_verdict = srm_verdict(&srm);

    let control = &arms[control_index];
    let mut rows = vec![control_row(name, control, kind)];
    for (i, arm) in arms.iter().enumerate() {
        if i == control_index {
            continue;
        }
        rows.push(treatment_row(name, &control.data, arm, config));
    }
    Ok(MetricReadout {
        metric: metric.name.clone(),
        kind,
        control: control.arm.clone(),
        difference: config.difference,
        sided: config.sided,
        alpha: config.alpha.get(),
        sequential: config.sequential.map(TuningParameter::get),
        correction: config.correction,
        srm,
        srm_verdict,
        arms: rows,
    })
}

fn kind_word(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Proportion => "conversion",
        MetricKind::Mean => "mean",
        MetricKind::Ratio => "ratio",
    }
}

fn empty_row(metric: &str, arm: &ArmSummary, is_control: bool) -> ArmReadout {
    ArmReadout {
        metric: metric.to_string(),
        arm: arm.arm.clone(),
        is_control,
        users: arm.data.users(),
        value: arm.data.value(),
        lift: None,
        std_error: None,
        ci_lower: None,
        ci_upper: None,
        p_value: None,
        p_value_adjusted: None,
        significant: None,
        chance_to_win: None,
        risk_control: None,
        risk_treatment: None,
        no_result: None,
        verdict: String::new(),
    }
}

fn control_row(metric: &str, arm: &ArmSummary, kind: MetricKind) -> ArmReadout {
    let mut row = empty_row(metric, arm, true);
    row.verdict = control_verdict(&arm.arm, row.users, row.value, kind);
    row
}

fn treatment_row(
    metric: &str,
    control: &ArmData,
    arm: &ArmSummary,
    config: &ReadoutConfig,
) -> ArmReadout {
    let mut row = empty_row(metric, arm, false);
    let estimate: Result<Estimate, NoResult> = match config.sequential {
        Some(n_star) => sequential_test(
            control,
            &arm.data,
            config.difference,
            config.sided,
            config.alpha,
            n_star,
        ),
        None => t_test(
            control,
            &arm.data,
            config.difference,
            config.sided,
            config.alpha,
        ),
    };
    match estimate {
        Err(reason) => {
            row.no_result = Some(reason);
            row.verdict = no_result_verdict(&arm.arm, reason);
        }
        Ok(e) => {
            row.lift = Some(e.effect);
            row.std_error = Some(e.std_error);
            row.ci_lower = e.ci.lower;
            row.ci_upper = e.ci.upper;
            row.p_value = Some(e.p_value);
            row.significant = Some(e.p_value < config.alpha.get());
            if config.bayesian {
                let posterior: Result<BayesianEstimate, NoResult> = bayesian(
                    control,
                    &arm.data,
                    config.difference,
                    config.alpha,
                    config.prior,
                );
                // Same checks as the frequentist moments, so this cannot fail here;
                // if it ever did, the row simply lacks the Bayesian fields.
                if let Ok(b) = posterior {
                    row.chance_to_win = Some(b.chance_to_win);
                    row.risk_control = Some(b.risk_control);
                    row.risk_treatment = Some(b.risk_treatment);
                }
            }
        }
    }
    row
}

/// Adjusts every treatment p-value across all metrics together.
fn apply_correction(out: &mut [MetricReadout], config: &ReadoutConfig) -> Result<(), StatsError> {
    if config.correction == Correction::None {
        return Ok(());
    }
    let raw: Vec<f64> = out
        .iter()
        .flat_map(|m| m.arms.iter().filter_map(|r| r.p_value))
        .collect();
    let adjusted = adjust_p_values(&raw, config.correction)?;
    let mut next = adjusted.into_iter();
    for m in out.iter_mut() {
        for row in m.arms.iter_mut().filter(|r| r.p_value.is_some()) {
            if let Some(p) = next.next() {
                row.p_value_adjusted = Some(p);
                row.significant = Some(p < config.alpha.get());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(arm: &str, users: u64, conversions: u64) -> ArmSummary {
        ArmSummary {
            arm: arm.to_string(),
            data: ArmData::Proportion { users, conversions },
        }
    }

    fn mean(arm: &str, n: u64, sum: f64, sum_squares: f64) -> ArmSummary {
        ArmSummary {
            arm: arm.to_string(),
            data: ArmData::Mean {
                n,
                sum,
                sum_squares,
            },
        }
    }

    fn one(name: &str, arms: Vec<ArmSummary>) -> Vec<MetricSummary> {
        vec![MetricSummary {
            name: name.to_string(),
            arms,
        }]
    }

    #[test]
    fn proportions_readout_reads_like_the_issue() {
        let out = readout(
            &one("signup", vec![prop("A", 28, 14), prop("B", 30, 16)]),
            &ReadoutConfig::default(),
        )
        .unwrap();
        let m = &out[0];
        assert_eq!(m.control, "A");
        assert_eq!(m.srm.status, SrmStatus::Ok);
        assert_eq!(
            m.arms[0].verdict,
            "Control A (baseline): 50.0 % conversion, 28 users"
        );
        assert_eq!(
            m.arms[1].verdict,
            "Treatment B is better: +6.7 % (95 % CI -47.8 % to +61.1 %), not significant (p = 0.81)"
        );
        assert_eq!(m.arms[1].significant, Some(false));
        assert!(
            m.srm_verdict
                .starts_with("Traffic split consistent with 50:50"),
            "{}",
            m.srm_verdict
        );
    }

    #[test]
    fn absolute_means_with_bayesian_and_named_control() {
        let config = ReadoutConfig {
            difference: Difference::Absolute,
            bayesian: true,
            prior: None,
            control: Some("A".to_string()),
            ..ReadoutConfig::default()
        };
        let out = readout(
            &one(
                "revenue",
                vec![
                    mean("B", 3461, 2422.7, 134698.29),
                    mean("A", 3407, 1396.87, 52377.9767),
                ],
            ),
            &config,
        )
        .unwrap();
        let m = &out[0];
        assert_eq!(m.arms[0].arm, "A");
        assert!(m.arms[0].is_control);
        let b = &m.arms[1];
        assert_eq!(
            b.verdict,
            "Treatment B is better: +0.290 (95 % CI +0.0454 to +0.535), significant (p = 0.02), \
             chance to win 99.0 %"
        );
        assert!(b.risk_control.unwrap() > b.risk_treatment.unwrap());
        assert_eq!(
            m.arms[0].verdict,
            "Control A (baseline): mean 0.410, 3407 users"
        );
    }

    #[test]
    fn degenerate_arm_is_a_row_not_an_error() {
        let out = readout(
            &one(
                "buy",
                vec![prop("control", 50, 0), prop("variant_b", 60, 3)],
            ),
            &ReadoutConfig::default(),
        )
        .unwrap();
        let row = &out[0].arms[1];
        assert_eq!(row.lift, None);
        assert_eq!(
            row.no_result,
            Some(NoResult::AllOrNothing {
                role: crate::Role::Control,
                all_converted: false
            })
        );
        assert_eq!(
            row.verdict,
            "Variant_b: no result, the control arm converted 0 % of its users, so its variance is zero"
        );
    }

    #[test]
    fn srm_mismatch_warns_on_every_row() {
        let out = readout(
            &one("buy", vec![prop("A", 1000, 100), prop("B", 1200, 130)]),
            &ReadoutConfig::default(),
        )
        .unwrap();
        assert_eq!(out[0].srm.status, SrmStatus::Mismatch);
        assert!(
            out[0].srm_verdict.starts_with(
                "Sample ratio mismatch: 1000 vs 1200 users is not a 50:50 split (p = 2.0e-5"
            ),
            "{}",
            out[0].srm_verdict
        );
        assert!(out[0].arms[1].verdict.ends_with("do not trust this result"));
    }

    #[test]
    fn correction_spans_metrics() {
        let config = ReadoutConfig {
            correction: Correction::HolmBonferroni,
            ..ReadoutConfig::default()
        };
        let metrics = vec![
            MetricSummary {
                name: "m1".into(),
                arms: vec![prop("A", 5000, 500), prop("B", 5000, 570)],
            },
            MetricSummary {
                name: "m2".into(),
                arms: vec![prop("A", 5000, 500), prop("B", 5000, 505)],
            },
        ];
        let out = readout(&metrics, &config).unwrap();
        let p1 = out[0].arms[1].p_value.unwrap();
        let p2 = out[1].arms[1].p_value.unwrap();
        let expected = adjust_p_values(&[p1, p2], Correction::HolmBonferroni).unwrap();
        assert_eq!(out[0].arms[1].p_value_adjusted, Some(expected[0]));
        assert_eq!(out[1].arms[1].p_value_adjusted, Some(expected[1]));
        assert!(out[0].arms[1].verdict.contains("adjusted"));
    }

    #[test]
    fn one_sided_and_sequential_wording() {
        let config = ReadoutConfig {
            sided: Sided::Greater,
            sequential: Some(TuningParameter::DEFAULT),
            ..ReadoutConfig::default()
        };
        let out = readout(
            &one("buy", vec![prop("A", 5000, 500), prop("B", 5000, 600)]),
            &config,
        )
        .unwrap();
        let v = &out[0].arms[1].verdict;
        assert!(v.contains("95 % sequential CI lower bound +"), "{v}");
        assert_eq!(out[0].arms[1].ci_upper, None);
    }

    #[test]
    fn bad_requests_are_errors() {
        let two = vec![prop("A", 10, 1), prop("B", 10, 2)];
        let unknown = ReadoutConfig {
            control: Some("Z".into()),
            ..ReadoutConfig::default()
        };
        let e = readout(&one("m", two.clone()), &unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("one of the arms: A, B"), "{e}");
        let split = ReadoutConfig {
            split: Some(vec![1.0, 1.0, 1.0]),
            ..ReadoutConfig::default()
        };
        assert!(readout(&one("m", two.clone()), &split).is_err());
        assert!(readout(&one("m", vec![prop("A", 10, 1)]), &ReadoutConfig::default()).is_err());
        let mixed = vec![prop("A", 10, 1), mean("B", 10, 1.0, 1.0)];
        assert!(readout(&one("m", mixed), &ReadoutConfig::default()).is_err());
        let dup = vec![prop("A", 10, 1), prop("A", 10, 2)];
        assert!(readout(&one("m", dup), &ReadoutConfig::default()).is_err());
    }
}

//! The `--metric` specs of `tenure abtest`, parsed and checked before any data
//! is read: `count:<event>`, `sum:<column>`, `segment:<expression>` and
//! `funnel:<a>b>c> within <duration>`, and `ratio:<count or sum>/<count or
//! sum>` (e.g. `ratio:sum:revenue/count:purchase`, average order value).

use crate::EngineError;

/// What a metric measures per user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetricSpec {
    /// Number of `event` events per user (a mean metric).
    Count {
        /// Event name.
        event: String,
    },
    /// Sum of a numeric column per user (a mean metric).
    Sum {
        /// Column name.
        column: String,
    },
    /// Share of users matching a segment expression (a conversion metric).
    Segment {
        /// The expression, in the segment language.
        expr: String,
    },
    /// Share of users completing every step within the window (a conversion
    /// metric).
    Funnel {
        /// Steps in order, each as in `tenure funnel --steps` (`event`,
        /// `event where (<SQL condition>)`, a group `{a, b}`, `within` /
        /// `after` limits, `?`); the text's last ` within D` is the window.
        steps: Vec<String>,
        /// Conversion window in microseconds.
        window_micros: i64,
    },
    /// Sum over an arm's users of a per-user numerator over the sum of a
    /// per-user denominator (a ratio metric, read with the delta method).
    Ratio {
        /// The numerator: a `Count` or a `Sum`.
        num: Box<MetricSpec>,
        /// The denominator: a `Count` or a `Sum`.
        den: Box<MetricSpec>,
    },
}

/// A parsed `--metric`, with the text it came from (its name in the readout).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    /// The spec as the user wrote it.
    pub text: String,
    /// What it measures.
    pub spec: MetricSpec,
}

const KINDS: [&str; 5] = ["count", "sum", "segment", "funnel", "ratio"];

const FORMS: &str = "count:<event>, sum:<column>, segment:<expression>, \
                     funnel:<step>><step>... within <duration> or \
                     ratio:<count:event or sum:column>/<count:event or sum:column>";

fn bad(text: &str, problem: impl std::fmt::Display) -> EngineError {
    EngineError::BadRequest(format!("--metric `{text}`: {problem}"))
}

/// Parses one `--metric` value.
pub fn parse_metric(text: &str) -> crate::Result<Metric> {
    let Some((kind, rest)) = text.split_once(':') else {
        return Err(bad(
            text,
            format!("a metric is kind:argument, one of {FORMS}"),
        ));
    };
    let kind_lower = kind.trim().to_ascii_lowercase();
    let rest = rest.trim();
    let need = |what: &str| {
        if rest.is_empty() {
            Err(bad(
                text,
                format!("`{kind_lower}:` needs {what} after the colon"),
            ))
        } else {
            Ok(rest.to_string())
        }
    };
    let spec = match kind_lower.as_str() {
        "count" => MetricSpec::Count {
            event: need("an event name")?,
        },
        "sum" => MetricSpec::Sum {
            column: need("a column name, such as revenue")?,
        },
        "segment" => MetricSpec::Segment {
            expr: need("a segment expression, such as `did purchase`")?,
        },
        "funnel" => parse_funnel(text, rest)?,
        "ratio" => {
            let Some((num, den)) = rest.split_once('/') else {
                return Err(bad(
                    text,
                    "a ratio is `ratio:<numerator>/<denominator>`, e.g. \
                     `ratio:sum:revenue/count:purchase`",
                ));
            };
            let part = |side: &str, which: &str| -> crate::Result<MetricSpec> {
                let m = parse_metric(side.trim())
                    .map_err(|e| bad(text, format!("the {which}: {e}")))?;
                match m.spec {
                    MetricSpec::Count { .. } | MetricSpec::Sum { .. } => Ok(m.spec),
                    _ => Err(bad(
                        text,
                        format!("the {which} must be count:<event> or sum:<column>"),
                    )),
                }
            };
            MetricSpec::Ratio {
                num: Box::new(part(num, "numerator")?),
                den: Box::new(part(den, "denominator")?),
            }
        }
        _ => {
            let hint = KINDS
                .iter()
                .map(|k| (strsim::levenshtein(&kind_lower, k), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, k)| format!("; did you mean `{k}:`?"))
                .unwrap_or_default();
            return Err(bad(
                text,
                format!("unknown metric kind `{kind}`{hint} (expected {FORMS})"),
            ));
        }
    };
    Ok(Metric {
        text: text.to_string(),
        spec,
    })
}

fn parse_funnel(text: &str, rest: &str) -> crate::Result<MetricSpec> {
    let lower = rest.to_ascii_lowercase();
    let Some(at) = lower.rfind(" within ") else {
        return Err(bad(
            text,
            "a funnel needs a conversion window, e.g. `funnel:view_item>purchase within 7d`",
        ));
    };
    let window = rest[at + " within ".len()..].trim().to_string();
    let window_micros = crate::funnel::syntax::parse_window(&window).map_err(|e| {
        bad(
            text,
            format!("{e} (a whole number of seconds, minutes, hours, days or weeks)"),
        )
    })?;
    // `>` may appear inside a parenthesised step condition.
    let steps = crate::funnel::syntax::split_outside(&rest[..at], '>');
    if let Some(i) = steps.iter().position(String::is_empty) {
        return Err(bad(
            text,
            format!(
                "step {} is empty; steps are event names separated by `>`",
                i + 1
            ),
        ));
    }
    if steps.len() < 2 {
        return Err(bad(
            text,
            "a funnel needs at least two steps separated by `>` (for a single event, use \
             `segment:did <event>`)",
        ));
    }
    if steps.len() > crate::funnel::MAX_STEPS {
        return Err(bad(
            text,
            format!(
                "{} steps: a funnel has at most {}",
                steps.len(),
                crate::funnel::MAX_STEPS
            ),
        ));
    }
    Ok(MetricSpec::Funnel {
        steps,
        window_micros,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse() {
        assert_eq!(
            parse_metric("count:purchase").unwrap().spec,
            MetricSpec::Count {
                event: "purchase".into()
            }
        );
        assert_eq!(
            parse_metric("sum: revenue").unwrap().spec,
            MetricSpec::Sum {
                column: "revenue".into()
            }
        );
        assert_eq!(
            parse_metric("segment:F >= 2 and did view").unwrap().spec,
            MetricSpec::Segment {
                expr: "F >= 2 and did view".into()
            }
        );
        assert_eq!(
            parse_metric("funnel:view_item > add_to_cart>purchase within 7d")
                .unwrap()
                .spec,
            MetricSpec::Funnel {
                steps: vec!["view_item".into(), "add_to_cart".into(), "purchase".into()],
                window_micros: 7 * 86_400_000_000,
            }
        );
        let MetricSpec::Funnel { steps, .. } =
            parse_metric("funnel:view > purchase where (revenue > 100) within 90m")
                .unwrap()
                .spec
        else {
            panic!("not a funnel")
        };
        assert_eq!(steps, ["view", "purchase where (revenue > 100)"]);
    }

    #[test]
    fn ratios_parse() {
        assert_eq!(
            parse_metric("ratio:sum:revenue/count:purchase")
                .unwrap()
                .spec,
            MetricSpec::Ratio {
                num: Box::new(MetricSpec::Sum {
                    column: "revenue".into()
                }),
                den: Box::new(MetricSpec::Count {
                    event: "purchase".into()
                }),
            }
        );
        let e = parse_metric("ratio:sum:revenue").unwrap_err().to_string();
        assert!(e.contains("ratio:<numerator>/<denominator>"), "{e}");
        let e = parse_metric("ratio:segment:F>1/count:view")
            .unwrap_err()
            .to_string();
        assert!(e.contains("numerator must be count"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse_metric("cout:purchase").unwrap_err().to_string();
        assert!(
            e.contains("unknown metric kind `cout`; did you mean `count:`?"),
            "{e}"
        );
        let e = parse_metric("revenue").unwrap_err().to_string();
        assert!(e.contains("kind:argument"), "{e}");
        assert!(
            parse_metric("sum:")
                .unwrap_err()
                .to_string()
                .contains("needs a column")
        );
        let e = parse_metric("funnel:a>b").unwrap_err().to_string();
        assert!(e.contains("conversion window"), "{e}");
        let e = parse_metric("funnel:a>>b within 7d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("step 2 is empty"), "{e}");
        let e = parse_metric("funnel:a within 7d").unwrap_err().to_string();
        assert!(e.contains("at least two steps"), "{e}");
        let e = parse_metric("funnel:a>b within 7 days")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit `days`"), "{e}");
        assert!(parse_metric("funnel:a>b within 0d").is_err());
    }
}

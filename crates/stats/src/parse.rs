//! Reading per-arm statistics from `--from-summary` files, so a readout can be
//! reproduced from the numbers printed in someone else's report.
//!
//! Two forms are accepted, each for proportions or means, with CUPED's
//! pre-exposure columns, or for ratio metrics:
//!
//! ```text
//! arm,users,conversions          arm,users,sum,sum_squares
//! A,28,14                        A,3407,1396.87,52377.9767
//! B,30,16                        B,3461,2422.7,134698.29
//!
//! [{"arm": "A", "users": 28, "conversions": 14},
//!  {"arm": "B", "users": 30, "conversions": 16}]
//! ```
//!
//! ```text
//! arm,users,sum,sum_squares,pre_sum,pre_sum_squares,post_pre_sum_products   (mean, CUPED)
//! arm,users,conversions,pre_conversions,post_pre_sum_products                (proportion, CUPED)
//! arm,users,num_sum,num_sum_squares,den_sum,den_sum_squares,num_den_sum_products  (ratio)
//! ```
//!
//! Columns may come in any order; arm names may be quoted (`"A, old"`). Both parsers
//! are hand-written (a few hundred lines instead of two dependencies) so that every
//! error can name the exact line and column and suggest the intended column name.

use crate::json::{Json, JsonReader, JsonValue, Members};
use crate::{ArmData, ArmSummary, ParseError, StatsError};

/// The metric shapes a summary can describe, by their sets of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Proportion,
    Mean,
    ProportionCuped,
    MeanCuped,
    Ratio,
}

const SHAPES: [(Shape, &[&str]); 5] = [
    (Shape::Proportion, &["arm", "users", "conversions"]),
    (Shape::Mean, &["arm", "users", "sum", "sum_squares"]),
    (
        Shape::ProportionCuped,
        &[
            "arm",
            "users",
            "conversions",
            "pre_conversions",
            "post_pre_sum_products",
        ],
    ),
    (
        Shape::MeanCuped,
        &[
            "arm",
            "users",
            "sum",
            "sum_squares",
            "pre_sum",
            "pre_sum_squares",
            "post_pre_sum_products",
        ],
    ),
    (
        Shape::Ratio,
        &[
            "arm",
            "users",
            "num_sum",
            "num_sum_squares",
            "den_sum",
            "den_sum_squares",
            "num_den_sum_products",
        ],
    ),
];

const ALL_FIELDS: [&str; 14] = [
    "arm",
    "users",
    "conversions",
    "sum",
    "sum_squares",
    "pre_conversions",
    "pre_sum",
    "pre_sum_squares",
    "post_pre_sum_products",
    "num_sum",
    "num_sum_squares",
    "den_sum",
    "den_sum_squares",
    "num_den_sum_products",
];

/// The headers accepted, for messages.
const EXPECTED: &str = "`arm,users,conversions` or `arm,users,sum,sum_squares` \
     (optionally with CUPED's `pre_conversions,post_pre_sum_products` or \
     `pre_sum,pre_sum_squares,post_pre_sum_products`), or a ratio's \
     `arm,users,num_sum,num_sum_squares,den_sum,den_sum_squares,num_den_sum_products`";

/// Reads a summary in either form, telling them apart by the first non-blank
/// character (`[` starts JSON).
pub fn parse_summary(text: &str) -> Result<Vec<ArmSummary>, StatsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('[') {
        parse_summary_json(text)
    } else {
        parse_summary_csv(text)
    }
}

/// Closest known field name within two edits, for "did you mean" hints.
fn suggest(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    ALL_FIELDS
        .iter()
        .map(|f| (distance(name, f), *f))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| f)
}

fn unknown_field(line: usize, column: usize, name: &str) -> ParseError {
    let hint = match suggest(name) {
        Some(s) => format!(", did you mean `{s}`?"),
        None => String::new(),
    };
    ParseError::new(
        line,
        column,
        format!("unknown column `{name}`{hint} (expected {EXPECTED})"),
    )
}

/// Which metric shape a set of field names describes.
fn kind_of(fields: &[&str]) -> Option<Shape> {
    let mut sorted: Vec<&str> = fields.to_vec();
    sorted.sort_unstable();
    SHAPES.iter().find_map(|(shape, names)| {
        let mut want = names.to_vec();
        want.sort_unstable();
        (sorted == want).then_some(*shape)
    })
}

/// Field values of one arm as read, with positions for error messages.
struct RawArm {
    line: usize,
    arm: (usize, String),
    /// Every other field by name: (column, text).
    values: std::collections::BTreeMap<&'static str, (usize, String)>,
}

fn parse_count(line: usize, (col, text): (usize, &str), field: &str) -> Result<u64, ParseError> {
    text.parse::<u64>().map_err(|_| {
        ParseError::new(
            line,
            col,
            format!("`{field}` must be a whole number of users, found `{text}`"),
        )
    })
}

fn parse_number(line: usize, (col, text): (usize, &str), field: &str) -> Result<f64, ParseError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParseError::new(
            line,
            col,
            format!("`{field}` must be a finite number, found `{text}`"),
        )),
    }
}

fn field((col, text): &(usize, String)) -> (usize, &str) {
    (*col, text.as_str())
}

/// Turns raw fields into checked arms; shared by both forms.
fn build_arms(raw: Vec<RawArm>, shape: Shape) -> Result<Vec<ArmSummary>, StatsError> {
    let mut arms: Vec<ArmSummary> = Vec::with_capacity(raw.len());
    for r in raw {
        let (arm_col, arm) = r.arm;
        if arm.trim().is_empty() {
            return Err(ParseError::new(r.line, arm_col, "the arm name is empty").into());
        }
        if arms.iter().any(|a| a.arm == arm) {
            return Err(ParseError::new(
                r.line,
                arm_col,
                format!("arm `{arm}` appears twice; give each arm one row"),
            )
            .into());
        }
        let slot = |f: &str| {
            r.values
                .get(f)
                .map(field)
                .ok_or_else(|| ParseError::new(r.line, 1, format!("missing `{f}`")))
        };
        let count = |f: &str| parse_count(r.line, slot(f)?, f);
        let number = |f: &str| parse_number(r.line, slot(f)?, f);
        let users = count("users")?;
        let last = |f: &str| slot(f).map(|(c, _)| c);
        let (data, check_col) = match shape {
            Shape::Proportion | Shape::ProportionCuped => {
                let conversions = count("conversions")?;
                let post = ArmData::Proportion { users, conversions };
                if shape == Shape::Proportion {
                    (post, last("conversions")?)
                } else {
                    let pre = count("pre_conversions")? as f64;
                    (
                        ArmData::Adjusted {
                            post: Box::new(post),
                            pre_sum: pre,
                            pre_sum_squares: pre,
                            post_pre_sum_products: number("post_pre_sum_products")?,
                        },
                        last("pre_conversions")?,
                    )
                }
            }
            Shape::Mean | Shape::MeanCuped => {
                let post = ArmData::Mean {
                    n: users,
                    sum: number("sum")?,
                    sum_squares: number("sum_squares")?,
                };
                if shape == Shape::Mean {
                    (post, last("sum_squares")?)
                } else {
                    (
                        ArmData::Adjusted {
                            post: Box::new(post),
                            pre_sum: number("pre_sum")?,
                            pre_sum_squares: number("pre_sum_squares")?,
                            post_pre_sum_products: number("post_pre_sum_products")?,
                        },
                        last("pre_sum_squares")?,
                    )
                }
            }
            Shape::Ratio => (
                ArmData::Ratio {
                    n: users,
                    num_sum: number("num_sum")?,
                    num_sum_squares: number("num_sum_squares")?,
                    den_sum: number("den_sum")?,
                    den_sum_squares: number("den_sum_squares")?,
                    num_den_sum_products: number("num_den_sum_products")?,
                },
                last("num_den_sum_products")?,
            ),
        };
        if let Err(StatsError::InvalidArm { arm, problem }) = data.validate(&arm) {
            return Err(
                ParseError::new(r.line, check_col, format!("arm `{arm}`: {problem}")).into(),
            );
        }
        arms.push(ArmSummary { arm, data });
    }
    Ok(arms)
}

/// Splits one CSV line into (1-based column, field) pairs, honouring double quotes
/// with `""` as an escaped quote. Unquoted fields are trimmed.
fn csv_fields(line_no: usize, line: &str) -> Result<Vec<(usize, String)>, ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        // Skip leading blanks so the column points at the value itself.
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        let start = i + 1;
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(ParseError::new(line_no, start, "unterminated quoted field"));
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        value.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
                i += 1;
            }
            if i < chars.len() && chars[i] != ',' {
                return Err(ParseError::new(
                    line_no,
                    i + 1,
                    "unexpected text after a quoted field; expected `,`",
                ));
            }
        } else {
            while i < chars.len() && chars[i] != ',' {
                value.push(chars[i]);
                i += 1;
            }
            value = value.trim_end().to_string();
        }
        fields.push((start, value));
        if i < chars.len() && chars[i] == ',' {
            i += 1;
        } else {
            return Ok(fields);
        }
    }
}

/// Reads the CSV form. The header names the columns (any order); every other
/// non-blank line is one arm.
pub fn parse_summary_csv(text: &str) -> Result<Vec<ArmSummary>, StatsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(
            ParseError::new(1, 1, format!("empty summary; expected a header {EXPECTED}")).into(),
        );
    };
    let header_fields = csv_fields(header_line, header)?;
    let mut names: Vec<&'static str> = Vec::new();
    for (col, name) in &header_fields {
        let lower = name.to_ascii_lowercase();
        let Some(known) = ALL_FIELDS.iter().find(|f| **f == lower) else {
            return Err(unknown_field(header_line, *col, name).into());
        };
        if names.contains(known) {
            return Err(ParseError::new(
                header_line,
                *col,
                format!("column `{known}` appears twice"),
            )
            .into());
        }
        names.push(known);
    }
    let Some(shape) = kind_of(&names) else {
        return Err(ParseError::new(
            header_line,
            1,
            format!(
                "header `{}` mixes or lacks columns; expected {EXPECTED}",
                names.join(",")
            ),
        )
        .into());
    };

    let mut raw = Vec::new();
    for (line_no, line) in lines {
        let fields = csv_fields(line_no, line)?;
        if fields.len() != names.len() {
            let col = fields
                .get(names.len())
                .map_or(line.chars().count() + 1, |(c, _)| *c);
            return Err(ParseError::new(
                line_no,
                col,
                format!(
                    "expected {} fields like the header, found {}",
                    names.len(),
                    fields.len()
                ),
            )
            .into());
        }
        let mut r = RawArm {
            line: line_no,
            arm: (1, String::new()),
            values: Default::default(),
        };
        for (name, (col, value)) in names.iter().zip(&fields) {
            if *name == "arm" {
                r.arm = (*col, value.clone());
            } else {
                r.values.insert(name, (*col, value.clone()));
            }
        }
        raw.push(r);
    }
    if raw.is_empty() {
        return Err(ParseError::new(header_line + 1, 1, "no arms after the header").into());
    }
    build_arms(raw, shape)
}

/// Reads the JSON form: an array of objects with the same keys as the CSV header.
/// Keys may come in any order; every object must describe the same metric shape.
pub fn parse_summary_json(text: &str) -> Result<Vec<ArmSummary>, StatsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Json = JsonReader::new(text).document()?;
    let JsonValue::Array(items) = doc.value else {
        return Err(ParseError::new(
            doc.line,
            doc.column,
            format!("expected an array of arms, found {}", doc.value.describe()),
        )
        .into());
    };
    if items.is_empty() {
        return Err(ParseError::new(doc.line, doc.column, "the array has no arms").into());
    }
    let mut owned: Vec<(usize, usize, Members)> = Vec::new();
    for item in items {
        let JsonValue::Object(members) = item.value else {
            return Err(ParseError::new(
                item.line,
                item.column,
                format!(
                    "expected an object for an arm, found {}",
                    item.value.describe()
                ),
            )
            .into());
        };
        owned.push((item.line, item.column, members));
    }
    let mut shape: Option<Shape> = None;
    let mut raw = Vec::new();
    for (line, column, members) in &owned {
        let mut names: Vec<&'static str> = Vec::new();
        let mut r = RawArm {
            line: *line,
            arm: (*column, String::new()),
            values: Default::default(),
        };
        for (key, v) in members {
            let Some(known) = ALL_FIELDS.iter().find(|f| **f == key.as_str()) else {
                return Err(unknown_field(v.line, v.column, key).into());
            };
            if names.contains(known) {
                return Err(ParseError::new(
                    v.line,
                    v.column,
                    format!("key `{key}` appears twice"),
                )
                .into());
            }
            names.push(known);
            match (&v.value, *known) {
                (JsonValue::String(s), "arm") => r.arm = (v.column, s.clone()),
                (JsonValue::Number(n), field) if field != "arm" => {
                    r.values.insert(field, (v.column, n.clone()));
                }
                (other, field) => {
                    let want = if field == "arm" {
                        "a string"
                    } else {
                        "a number"
                    };
                    return Err(ParseError::new(
                        v.line,
                        v.column,
                        format!("`{field}` must be {want}, found {}", other.describe()),
                    )
                    .into());
                }
            }
            // Report number problems on the value's own line.
            r.line = v.line;
        }
        let Some(kind) = kind_of(&names) else {
            return Err(ParseError::new(
                *line,
                *column,
                format!("an arm has keys {names:?}; expected {EXPECTED}"),
            )
            .into());
        };
        if let Some(first) = shape
            && first != kind
        {
            return Err(ParseError::new(
                *line,
                *column,
                "this arm's keys describe a different metric shape than the first arm's",
            )
            .into());
        }
        shape = Some(kind);
        raw.push(r);
    }
    build_arms(raw, shape.unwrap_or(Shape::Proportion))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        match parse_summary(text).unwrap_err() {
            StatsError::Parse(e) => e,
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn csv_proportions() {
        let arms = parse_summary("arm,users,conversions\nA,28,14\nB,30,16\n").unwrap();
        assert_eq!(arms.len(), 2);
        assert_eq!(arms[1].arm, "B");
        assert_eq!(
            arms[1].data,
            ArmData::Proportion {
                users: 30,
                conversions: 16
            }
        );
    }

    #[test]
    fn csv_means_any_column_order_crlf_and_quotes() {
        let text = "\u{feff}users, arm, sum_squares, sum\r\n3407,\"A, old\",52377.9767,1396.87\r\n\r\n3461,B,134698.29,2422.7\r\n";
        let arms = parse_summary(text).unwrap();
        assert_eq!(arms[0].arm, "A, old");
        assert_eq!(
            arms[0].data,
            ArmData::Mean {
                n: 3407,
                sum: 1396.87,
                sum_squares: 52377.9767
            }
        );
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = err("arm,users,conversions\nA,28,14\nB,thirty,16\n");
        assert_eq!((e.line, e.column), (3, 3));
        assert!(e.message.contains("`users` must be a whole number"), "{e}");

        let e = err("arm,users,conversion\nA,1,1\n");
        assert_eq!((e.line, e.column), (1, 11));
        assert!(e.message.contains("did you mean `conversions`?"), "{e}");

        let e = err("arm,users,conversions\nA,10,11\n");
        assert_eq!((e.line, e.column), (2, 6));
        assert!(e.message.contains("cannot exceed users"), "{e}");

        let e = err("arm,users,conversions\nA,10,1,7\n");
        assert_eq!((e.line, e.column), (2, 8));

        let e = err("arm,users,sum\nA,10,1\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("mixes or lacks"), "{e}");

        let e = err("arm,users,conversions\nA,10,1\nA,10,2\n");
        assert!(e.message.contains("appears twice"), "{e}");

        let e = err("arm,users,conversions\n\"A,10,1\n");
        assert_eq!((e.line, e.column), (2, 1));

        let e = err("arm,users,conversions\n");
        assert!(e.message.contains("no arms"), "{e}");
        assert_eq!(err("").line, 1);
    }

    #[test]
    fn json_both_shapes() {
        let arms = parse_summary(
            r#"[{"arm": "A", "users": 28, "conversions": 14},
                {"conversions": 16, "users": 30, "arm": "B\u00e9"}]"#,
        )
        .unwrap();
        assert_eq!(arms[1].arm, "Bé");
        let arms = parse_summary_json(
            r#"[{"arm":"A","users":3407,"sum":1396.87,"sum_squares":52377.9767},
                {"arm":"B","users":3461,"sum":2422.7,"sum_squares":1.3469829e5}]"#,
        )
        .unwrap();
        assert_eq!(
            arms[1].data,
            ArmData::Mean {
                n: 3461,
                sum: 2422.7,
                sum_squares: 134698.29
            }
        );
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let e = err("[\n  {\"arm\": \"A\", \"users\": 28.5, \"conversions\": 14}\n]");
        assert_eq!((e.line, e.column), (2, 25));
        assert!(e.message.contains("whole number"), "{e}");

        let e = err("[{\"arm\": \"A\", \"user\": 28, \"conversions\": 14}]");
        assert!(e.message.contains("did you mean `users`?"), "{e}");

        let e = err(
            "[{\"arm\": \"A\", \"users\": 28, \"conversions\": 14},\n {\"arm\": \"B\", \"users\": 3, \"sum\": 1, \"sum_squares\": 1}]",
        );
        assert_eq!(e.line, 2);
        assert!(e.message.contains("different metric shape"), "{e}");

        let e = err("[{\"arm\": A}]");
        assert_eq!((e.line, e.column), (1, 10));

        let e = err("[{\"arm\": \"A\", \"users\": 2, \"conversions\": 1} x]");
        assert!(e.message.contains("expected `,` or `]`"), "{e}");

        let e = err("[{\"arm\": \"A\", \"users\": \"2\", \"conversions\": 1}]");
        assert!(
            e.message.contains("must be a number, found a string"),
            "{e}"
        );

        let e = err("[01]");
        assert!(e.message.contains("not a valid number"), "{e}");

        let e = err(&format!("{}{}", "[".repeat(100), "]".repeat(100)));
        assert!(e.message.contains("nested too deeply"), "{e}");

        assert!(err("[]").message.contains("no arms"));
        assert!(
            err("[{\"arm\": \"A\", \"users\": 2, \"conversions\": 1}] extra")
                .message
                .contains("after the array")
        );
    }
}

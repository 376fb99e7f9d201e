//! Text to [`ast::Expr`]: the pest grammar, a Pratt parser for `not` > `and` >
//! `or`, and the translation of pest's failures into [`DslError`]s that say what
//! was expected and, for common slips, what to write instead.

use pest::Parser as _;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest_derive::Parser;

use crate::ast::{
    CmpOp, Duration, Expr, ExprKind, Number, SegmentDef, Span, Spanned, Term, TermKind,
};
use crate::error::DslError;
use crate::suggest;

#[derive(Parser)]
#[grammar = "grammar.pest"]
struct DslParser;

/// Deepest nesting of parentheses and `not`s accepted. Every level is a few
/// stack frames in the parser and in each later stage; real segments stay far
/// below this, and hostile input gets an error instead of a stack overflow.
pub const MAX_NESTING: usize = 64;

/// Words a misspelling may be aiming at, for "did you mean" on syntax errors.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "between", "within", "did", "times", "segment",
];

/// Parses one segment expression, such as `R < 30d and F >= 3`.
pub fn parse(src: &str) -> Result<Expr, DslError> {
    check_nesting(src)?;
    let pairs = DslParser::parse(Rule::expression, src).map_err(|e| syntax_error(src, &e))?;
    let expression = first(pairs, src)?;
    let expr = first(expression.into_inner(), src)?;
    build_expr(expr)
}

/// Parses a segment file: zero or more `segment name = expr` definitions, with
/// `#` comments anywhere.
pub fn parse_segment_file(src: &str) -> Result<Vec<SegmentDef>, DslError> {
    check_nesting(src)?;
    let pairs = DslParser::parse(Rule::segment_file, src).map_err(|e| syntax_error(src, &e))?;
    let file = first(pairs, src)?;
    let mut defs = Vec::new();
    for def in file.into_inner() {
        if def.as_rule() != Rule::segment_def {
            continue;
        }
        let span = span_of(&def);
        let mut inner = content(def);
        let name = inner.next().ok_or_else(|| missing(span))?;
        let expr = inner.next().ok_or_else(|| missing(span))?;
        defs.push(SegmentDef {
            name: Spanned {
                node: name.as_str().to_owned(),
                span: span_of(&name),
            },
            expr: build_expr(expr)?,
            span,
        });
    }
    Ok(defs)
}

/// Keyword pairs carry no information beyond their position in the tree.
fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::between_kw
            | Rule::in_kw
            | Rule::within_kw
            | Rule::did_kw
            | Rule::where_kw
            | Rule::times_kw
            | Rule::segment_kw
            | Rule::and_op
            | Rule::open_paren
            | Rule::close_paren
    )
}

/// The children of `pair` that are not keywords.
fn content<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    Span::new(pair.as_span().start(), pair.as_span().end())
}

/// The grammar fixes the shape of the pair tree, so a missing child is our bug;
/// it still becomes an error rather than a panic, as no input may panic.
fn missing(span: Span) -> DslError {
    DslError::Syntax {
        span,
        expected: "a well-formed expression".into(),
        found: "an internal parser inconsistency (please report it)".into(),
        hint: None,
    }
}

fn next<'i>(pairs: &mut Pairs<'i, Rule>, span: Span) -> Result<Pair<'i, Rule>, DslError> {
    pairs.next().ok_or_else(|| missing(span))
}

fn first<'i>(mut pairs: Pairs<'i, Rule>, src: &str) -> Result<Pair<'i, Rule>, DslError> {
    next(&mut pairs, Span::new(0, src.len()))
}

fn pratt() -> PrattParser<Rule> {
    PrattParser::new()
        .op(Op::infix(Rule::or_op, Assoc::Left) | Op::infix(Rule::compat_or_op, Assoc::Left))
        .op(Op::infix(Rule::and_op, Assoc::Left) | Op::infix(Rule::compat_and_op, Assoc::Left))
        .op(Op::prefix(Rule::not_op) | Op::prefix(Rule::compat_not_op))
}

fn near_miss(pair: &Pair<'_, Rule>, hint: &str) -> DslError {
    DslError::NearMissOperator {
        span: span_of(pair),
        found: pair.as_str().to_owned(),
        hint: hint.to_owned(),
    }
}

fn build_expr(pair: Pair<'_, Rule>) -> Result<Expr, DslError> {
    pratt()
        .map_primary(build_primary)
        .map_prefix(|op, rhs| {
            let rhs = rhs?;
            match op.as_rule() {
                Rule::not_op => Ok(Expr {
                    span: span_of(&op).to(rhs.span),
                    kind: ExprKind::Not(Box::new(rhs)),
                }),
                _ => Err(near_miss(&op, "use `not` to negate a condition")),
            }
        })
        .map_infix(|lhs, op, rhs| {
            let (lhs, rhs) = (lhs?, rhs?);
            let is_and = match op.as_rule() {
                Rule::and_op => true,
                Rule::or_op => false,
                Rule::compat_and_op => return Err(near_miss(&op, "use `and`")),
                _ => return Err(near_miss(&op, "use `or`")),
            };
            let span = lhs.span.to(rhs.span);
            // Flatten chains so `a and b and c ...` is one node, not a deep tree.
            let mut items = match lhs.kind {
                ExprKind::And(items) if is_and => items,
                ExprKind::Or(items) if !is_and => items,
                kind => vec![Expr {
                    kind,
                    span: lhs.span,
                }],
            };
            items.push(rhs);
            let kind = if is_and {
                ExprKind::And(items)
            } else {
                ExprKind::Or(items)
            };
            Ok(Expr { kind, span })
        })
        .parse(pair.into_inner())
}

fn build_primary(pair: Pair<'_, Rule>) -> Result<Expr, DslError> {
    let span = span_of(&pair);
    match pair.as_rule() {
        Rule::group => {
            // The group's span includes its parentheses.
            let inner = content(pair).next().ok_or_else(|| missing(span))?;
            Ok(Expr {
                span,
                ..build_expr(inner)?
            })
        }
        Rule::did => build_did(pair),
        Rule::segment_ref => {
            let name = next(&mut pair.into_inner(), span)?;
            Ok(Expr {
                kind: ExprKind::SegmentRef(Spanned {
                    node: name.as_str().to_owned(),
                    span: span_of(&name),
                }),
                span,
            })
        }
        Rule::condition => build_condition(pair),
        _ => Err(missing(span)),
    }
}

fn build_condition(pair: Pair<'_, Rule>) -> Result<Expr, DslError> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let term = build_term(next(&mut inner, span)?)?;
    let Some(tail) = inner.next() else {
        return Ok(Expr {
            kind: ExprKind::Bare(term),
            span,
        });
    };
    let tail_span = span_of(&tail);
    let rule = tail.as_rule();
    let mut parts = content(tail).peekable();
    let negated = parts.next_if(|p| p.as_rule() == Rule::not_op).is_some();
    let kind = match rule {
        Rule::within_tail => ExprKind::Within {
            term,
            window: build_term(parts.next().ok_or_else(|| missing(tail_span))?)?,
        },
        Rule::between_tail => {
            let low = build_term(parts.next().ok_or_else(|| missing(tail_span))?)?;
            let high = build_term(parts.next().ok_or_else(|| missing(tail_span))?)?;
            ExprKind::Between {
                term,
                negated,
                low,
                high,
            }
        }
        Rule::in_tail => ExprKind::InList {
            term,
            negated,
            items: parts.map(build_term).collect::<Result<_, _>>()?,
        },
        Rule::compare_tail => {
            let op = build_cmp_op(&parts.next().ok_or_else(|| missing(tail_span))?)?;
            let right = build_term(parts.next().ok_or_else(|| missing(tail_span))?)?;
            ExprKind::Compare {
                left: term,
                op,
                right,
            }
        }
        _ => return Err(missing(tail_span)),
    };
    Ok(Expr { kind, span })
}

fn build_did(pair: Pair<'_, Rule>) -> Result<Expr, DslError> {
    let span = span_of(&pair);
    let mut event = None;
    let mut filter = None;
    let mut count = None;
    let mut within = None;
    for part in content(pair) {
        let part_span = span_of(&part);
        match part.as_rule() {
            Rule::event_name => {
                let name = next(&mut part.into_inner(), part_span)?;
                let node = match name.as_rule() {
                    Rule::string => unescape(&name)?,
                    _ => name.as_str().to_owned(),
                };
                event = Some(Spanned {
                    node,
                    span: part_span,
                });
            }
            Rule::did_count => {
                let mut inner = content(part);
                let op = build_cmp_op(&inner.next().ok_or_else(|| missing(part_span))?)?;
                let n = build_term(inner.next().ok_or_else(|| missing(part_span))?)?;
                count = Some((op, n));
            }
            Rule::did_within => {
                let term = content(part).next().ok_or_else(|| missing(part_span))?;
                within = Some(build_term(term)?);
            }
            Rule::did_where => {
                let inner = content(part).next().ok_or_else(|| missing(part_span))?;
                filter = Some(Box::new(build_primary(inner)?));
            }
            _ => return Err(missing(part_span)),
        }
    }
    Ok(Expr {
        kind: ExprKind::Did {
            event: event.ok_or_else(|| missing(span))?,
            filter,
            count,
            within,
        },
        span,
    })
}

fn build_cmp_op(pair: &Pair<'_, Rule>) -> Result<Spanned<CmpOp>, DslError> {
    let node = match pair.as_rule() {
        Rule::eq_op => CmpOp::Eq,
        Rule::ne_op => CmpOp::Ne,
        Rule::lt_op => CmpOp::Lt,
        Rule::le_op => CmpOp::Le,
        Rule::gt_op => CmpOp::Gt,
        Rule::ge_op => CmpOp::Ge,
        Rule::compat_eq_op => return Err(near_miss(pair, "use `=` for equality")),
        Rule::compat_ge_op => return Err(near_miss(pair, "use `>=` for \"at least\"")),
        Rule::compat_le_op => return Err(near_miss(pair, "use `<=` for \"at most\"")),
        _ => return Err(missing(span_of(pair))),
    };
    Ok(Spanned {
        node,
        span: span_of(pair),
    })
}

fn build_term(pair: Pair<'_, Rule>) -> Result<Term, DslError> {
    let span = span_of(&pair);
    let kind = match pair.as_rule() {
        Rule::ident => TermKind::Ident(pair.as_str().to_owned()),
        Rule::string => TermKind::String(unescape(&pair)?),
        Rule::number => TermKind::Number(parse_number(pair.as_str(), span)?),
        Rule::duration => TermKind::Duration(parse_duration(pair.as_str(), span)?),
        Rule::prop_ref => {
            let name = next(&mut pair.into_inner(), span)?;
            TermKind::Prop(match name.as_rule() {
                Rule::string => unescape(&name)?,
                _ => name.as_str().to_owned(),
            })
        }
        Rule::mean_call => {
            let mut inner = content(pair).filter(|p| p.as_rule() != Rule::mean_fn);
            let metric = inner.next().ok_or_else(|| missing(span))?;
            TermKind::Mean(Spanned {
                node: metric.as_str().to_owned(),
                span: span_of(&metric),
            })
        }
        Rule::total_call | Rule::sum_call => {
            let mut aggregate = crate::features::Aggregate::Sum;
            let (mut property, mut within) = (None, None);
            for part in content(pair) {
                match part.as_rule() {
                    Rule::sum_fn => aggregate = crate::features::Aggregate::Sum,
                    Rule::mean_fn => aggregate = crate::features::Aggregate::Avg,
                    Rule::total_arg | Rule::explicit_arg => {
                        let arg_span = span_of(&part);
                        let name = next(&mut part.into_inner(), arg_span)?;
                        let node = match name.as_rule() {
                            Rule::string => unescape(&name)?,
                            Rule::prop_ref => {
                                let inner = next(&mut name.into_inner(), arg_span)?;
                                match inner.as_rule() {
                                    Rule::string => unescape(&inner)?,
                                    _ => inner.as_str().to_owned(),
                                }
                            }
                            _ => name.as_str().to_owned(),
                        };
                        property = Some(Spanned {
                            node,
                            span: arg_span,
                        });
                    }
                    _ => within = Some(Box::new(build_term(part)?)),
                }
            }
            TermKind::Total {
                aggregate,
                property: property.ok_or_else(|| missing(span))?,
                within,
            }
        }
        Rule::expected_call => {
            let horizon = content(pair)
                .find(|p| p.as_rule() == Rule::duration)
                .ok_or_else(|| missing(span))?;
            TermKind::ExpectedPurchases(parse_duration(horizon.as_str(), span_of(&horizon))?)
        }
        _ => return Err(missing(span)),
    };
    Ok(Term { kind, span })
}

/// The text of a `string` pair, escapes processed: `\"`, `\\`, `\n`, `\t`.
fn unescape(pair: &Pair<'_, Rule>) -> Result<String, DslError> {
    let raw = pair.as_str();
    let body = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            other => {
                let start = pair.as_span().start() + 1 + i;
                let len = 1 + other.map_or(0, |(_, c)| c.len_utf8());
                return Err(DslError::BadLiteral {
                    span: Span::new(start, start + len),
                    message: "unknown escape in string".into(),
                    expected: r#"one of `\"`, `\\`, `\n`, `\t`"#.into(),
                    hint: None,
                });
            }
        }
    }
    Ok(out)
}

fn parse_number(text: &str, span: Span) -> Result<Number, DslError> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = format!("{int}{frac}");
    let too_large = || DslError::BadLiteral {
        span,
        message: format!("number `{text}` is too large"),
        expected: "a number with at most 30 digits".into(),
        hint: None,
    };
    if digits.trim_start_matches('-').len() > 30 {
        return Err(too_large());
    }
    let mantissa: i128 = digits.parse().map_err(|_| too_large())?;
    Ok(Number {
        mantissa,
        scale: u32::try_from(frac.len()).map_err(|_| too_large())?,
    })
}

fn parse_duration(text: &str, span: Span) -> Result<Duration, DslError> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (amount, unit) = text.split_at(split);
    let unit_span = Span::new(span.start + split, span.end);
    let hours_per_unit = match unit.to_ascii_lowercase().as_str() {
        "h" => 1,
        "d" => 24,
        "w" => 24 * 7,
        other => {
            let hint = match other {
                "hour" | "hours" | "hr" | "hrs" => format!("write `{amount}h`"),
                "day" | "days" => format!("write `{amount}d`"),
                "week" | "weeks" | "wk" | "wks" => format!("write `{amount}w`"),
                "m" | "mo" | "mon" | "month" | "months" => {
                    "months vary in length; use days (`30d`) or weeks (`4w`)".to_owned()
                }
                "y" | "yr" | "year" | "years" => "use days, e.g. `365d`".to_owned(),
                "s" | "sec" | "secs" | "min" | "mins" | "minute" | "minutes" => {
                    "the smallest unit is the hour (`1h`)".to_owned()
                }
                _ => "a duration is a whole number followed by `h`, `d` or `w`".to_owned(),
            };
            return Err(DslError::BadLiteral {
                span: unit_span,
                message: format!("unknown duration unit `{unit}`"),
                expected: "`h` (hours), `d` (days) or `w` (weeks)".into(),
                hint: Some(hint),
            });
        }
    };
    let hours = amount
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(hours_per_unit))
        .and_then(Duration::from_hours);
    hours.ok_or_else(|| DslError::BadLiteral {
        span,
        message: format!("duration `{text}` is too long"),
        expected: format!("at most {} hours (1000 years)", Duration::MAX_HOURS),
        hint: None,
    })
}

/// Rejects input nested deeper than [`MAX_NESTING`] before any recursive stage
/// sees it. Counts open parentheses plus runs of `not`/`!` (each `not` is a
/// level of recursion in the Pratt parser), skipping strings and comments.
fn check_nesting(src: &str) -> Result<(), DslError> {
    let bytes = src.as_bytes();
    let mut stack: Vec<usize> = Vec::new();
    let (mut base, mut run) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                run = 0;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' => {
                stack.push(base);
                base += run + 1;
                run = 0;
            }
            b')' => {
                base = stack.pop().unwrap_or(0);
                run = 0;
            }
            b'!' if bytes.get(i + 1) != Some(&b'=') => run += 1,
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if src[start..i].eq_ignore_ascii_case("not") {
                    run += 1;
                } else {
                    run = 0;
                }
                i -= 1;
            }
            c if c.is_ascii_whitespace() => {}
            _ => run = 0,
        }
        i += 1;
        if base + run > MAX_NESTING {
            return Err(DslError::Limit {
                span: Span::new(start, i.min(src.len())),
                message: format!("expression nested too deeply (more than {MAX_NESTING} levels)"),
                hint: None,
            });
        }
    }
    Ok(())
}

/// Turns pest's "expected one of these rules" into a [`DslError::Syntax`] with
/// plain-language expectations and a hint for the usual slips.
fn syntax_error(src: &str, error: &pest::error::Error<Rule>) -> DslError {
    let pos = match error.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    }
    .min(src.len());
    let positives = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { message } => {
            return DslError::Limit {
                span: Span::new(pos, pos),
                message: format!("input too complex to parse ({message})"),
                hint: None,
            };
        }
    };
    let (found, found_len) = token_at(src, pos);
    DslError::Syntax {
        span: Span::new(pos, pos + found_len),
        expected: describe_expected(&positives),
        found: found.clone(),
        hint: syntax_hint(src, pos, &found),
    }
}

/// A short description of the token at `pos` and its length in bytes.
fn token_at(src: &str, pos: usize) -> (String, usize) {
    let rest = &src[pos..];
    let Some(c) = rest.chars().next() else {
        return ("end of input".into(), 0);
    };
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let len = if is_word(c) {
        rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())
    } else if c == '"' {
        return ("a string".into(), 1);
    } else {
        rest.char_indices()
            .take_while(|(_, c)| c.is_ascii_punctuation() && *c != '"' && *c != '(' && *c != ')')
            .take(3)
            .last()
            .map_or(c.len_utf8(), |(i, c)| i + c.len_utf8())
    };
    (format!("`{}`", &rest[..len]), len)
}

fn describe_expected(positives: &[Rule]) -> String {
    let mut items: Vec<&str> = Vec::new();
    let starts_condition = positives.iter().any(|r| {
        matches!(
            r,
            Rule::did | Rule::did_kw | Rule::segment_ref | Rule::condition | Rule::expr
        )
    });
    for rule in positives {
        let text = match rule {
            Rule::EOI => "end of input",
            Rule::and_op => "`and`",
            Rule::or_op => "`or`",
            Rule::not_op if starts_condition => "a condition",
            Rule::not_op => "`not`",
            Rule::did | Rule::did_kw | Rule::segment_ref | Rule::condition | Rule::expr => {
                "a condition"
            }
            Rule::open_paren if starts_condition => "a condition",
            Rule::open_paren => "`(`",
            Rule::close_paren => "`)`",
            Rule::eq_op
            | Rule::ne_op
            | Rule::lt_op
            | Rule::le_op
            | Rule::gt_op
            | Rule::ge_op
            | Rule::compare_tail => "a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`)",
            Rule::in_tail => "`in`",
            Rule::between_tail => "`between`",
            Rule::within_tail | Rule::did_within => "`within`",
            Rule::did_where | Rule::where_kw => "`where`",
            Rule::did_count => "a count such as `>= 2`",
            Rule::mean_call
            | Rule::mean_fn
            | Rule::sum_fn
            | Rule::total_call
            | Rule::sum_call
            | Rule::expected_call
            | Rule::expected_fn
            | Rule::prop_ref
            | Rule::duration
            | Rule::number
            | Rule::string
            | Rule::ident
                if starts_condition =>
            {
                "a condition"
            }
            Rule::mean_call
            | Rule::mean_fn
            | Rule::sum_fn
            | Rule::total_call
            | Rule::sum_call
            | Rule::expected_call
            | Rule::expected_fn
            | Rule::prop_ref
            | Rule::duration
            | Rule::number
            | Rule::string
            | Rule::ident => "a value (number, duration such as `30d`, \"string\" or name)",
            Rule::name | Rule::event_name => "a name",
            Rule::segment_def => "`segment`",
            Rule::string_inner => "the closing `\"`",
            _ => continue,
        };
        if !items.contains(&text) {
            items.push(text);
        }
    }
    match items.as_slice() {
        [] => "something else".into(),
        [one] => (*one).into(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn syntax_hint(src: &str, pos: usize, found: &str) -> Option<String> {
    let rest = &src[pos..];
    if rest.starts_with('\'') {
        return Some("strings use double quotes: \"CN\"".into());
    }
    if rest.starts_with('[') || rest.starts_with('{') {
        return Some("lists use parentheses: `country in (\"CN\", \"JP\")`".into());
    }
    let word = found.trim_matches('`');
    if !word.chars().next().is_some_and(char::is_alphabetic) {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    let before = src[..pos].trim_end();
    let after_number =
        before.ends_with(|c: char| c.is_ascii_digit()) && src[..pos].len() > before.len();
    if after_number
        && matches!(
            lower.as_str(),
            "h" | "d" | "w" | "hour" | "hours" | "day" | "days" | "week" | "weeks"
        )
    {
        return Some("write durations without a space, e.g. `30d`".into());
    }
    if matches!(lower.as_str(), "is" | "equals" | "eq") {
        return Some("use `=` (or `!=`) to compare".into());
    }
    if matches!(lower.as_str(), "like" | "contains") {
        return Some("text matching is not supported; use `=` or `in (...)`".into());
    }
    let mut near = suggest::similar(&lower, KEYWORDS.iter().copied());
    if near.is_empty() {
        // `dd purchase`: the misspelt keyword parsed as a name, and the error
        // is only noticed at the next word.
        let previous = before
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !KEYWORDS.contains(&previous.as_str()) {
            near = suggest::similar(&previous, KEYWORDS.iter().copied());
        }
    }
    (!near.is_empty()).then(|| {
        let quoted: Vec<String> = near.iter().map(|k| format!("`{k}`")).collect();
        format!("did you mean {}?", quoted.join(" or "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_not_and_or() {
        let e = parse("not R < 1 or F > 2 and M > 3").unwrap();
        assert!(matches!(e.kind, ExprKind::Or(ref items) if items.len() == 2));
    }

    #[test]
    fn nesting_limit_is_an_error_not_a_crash() {
        let deep = format!("{}R < 1{}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(parse(&deep), Err(DslError::Limit { .. })));
        let nots = format!("{}R < 1", "not ".repeat(10_000));
        assert!(matches!(parse(&nots), Err(DslError::Limit { .. })));
        let ok = format!("{}R < 1{}", "(".repeat(60), ")".repeat(60));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn long_chains_stay_flat() {
        let chain = vec!["F > 1"; 2000].join(" and ");
        let e = parse(&chain).unwrap();
        assert!(matches!(e.kind, ExprKind::And(ref items) if items.len() == 2000));
    }
}

//! Errors from every stage (parse, resolve, compile, segment files) and their
//! rendering: the offending line, a caret under the span, what was expected and
//! a hint. One enum for all stages because callers (the CLI) treat them alike:
//! show them to the user and exit with "bad input".

use std::fmt::Write as _;
use std::sync::Arc;

use crate::ast::Span;

/// What kind of name failed to resolve, for the message ("unknown metric ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A metric, stage or property name in an expression.
    Metric,
    /// An event name after `did`.
    Event,
    /// A named segment after `@`.
    Segment,
    /// A lifecycle stage.
    Stage,
    /// A user property in `prop.name`.
    Property,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Metric => "metric",
            NameKind::Event => "event",
            NameKind::Segment => "segment",
            NameKind::Stage => "lifecycle stage",
            NameKind::Property => "property",
        })
    }
}

/// An error in a segment expression or segment file.
///
/// Every variant carries the [`Span`] it is about; [`DslError::render`] turns it
/// into the caret display users see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DslError {
    /// The text does not follow the grammar.
    #[error("syntax error: unexpected {found}")]
    Syntax {
        /// Where parsing stopped.
        span: Span,
        /// What the grammar would have accepted there.
        expected: String,
        /// What was there instead.
        found: String,
        /// A targeted hint ("did you mean `and`?"), if one applies.
        hint: Option<String>,
    },
    /// An operator from another language (`==`, `&&`, `||`, `!`, `=>`).
    #[error("`{found}` is not an operator in segment expressions")]
    NearMissOperator {
        /// The operator.
        span: Span,
        /// How it was spelled.
        found: String,
        /// The operator to use instead.
        hint: String,
    },
    /// A literal that cannot be represented (too large, bad unit, bad escape).
    #[error("{message}")]
    BadLiteral {
        /// The literal.
        span: Span,
        /// What is wrong with it.
        message: String,
        /// What would be accepted.
        expected: String,
        /// How to fix it, if known.
        hint: Option<String>,
    },
    /// A name that is not a metric, property, event, stage or segment.
    #[error("unknown {kind} `{name}`")]
    UnknownName {
        /// The name.
        span: Span,
        /// What it was looked up as.
        kind: NameKind,
        /// The name as written.
        name: String,
        /// What would be accepted.
        expected: String,
        /// Near matches by edit distance, best first.
        suggestions: Vec<String>,
        /// An extra hint, if any.
        hint: Option<String>,
    },
    /// Operands or operators that do not fit together, including wrong units
    /// (`F < 30d`).
    #[error("{message}")]
    Type {
        /// The offending operand or operator.
        span: Span,
        /// What is wrong.
        message: String,
        /// What would be accepted.
        expected: String,
        /// How to fix it, if known.
        hint: Option<String>,
    },
    /// Named segments that refer to each other in a loop.
    #[error("segment `{}` refers to itself: {}", cycle[0], cycle.join(" -> "))]
    SegmentCycle {
        /// The reference that closes the loop.
        span: Span,
        /// The loop, starting and ending with the same name.
        cycle: Vec<String>,
    },
    /// A segment name defined twice across the loaded files.
    #[error("segment `{name}` is defined twice (first in {first_file})")]
    DuplicateSegment {
        /// The second definition's name.
        span: Span,
        /// The name.
        name: String,
        /// The file holding the first definition.
        first_file: String,
    },
    /// Input beyond a safety limit (nesting depth, expanded size), rejected
    /// before it can exhaust the stack or memory.
    #[error("{message}")]
    Limit {
        /// Where the limit was crossed.
        span: Span,
        /// Which limit.
        message: String,
        /// How to stay within it, if known.
        hint: Option<String>,
    },
    /// The expression resolved but cannot be compiled (e.g. a window reaching
    /// before the representable time range).
    #[error("{message}")]
    Compile {
        /// The node that failed.
        span: Span,
        /// Why.
        message: String,
    },
    /// An error inside a segment file; rendered against that file's text.
    #[error("in {file}: {error}")]
    InFile {
        /// The file's name as given to the library.
        file: String,
        /// The file's text, kept so the error can render on its own.
        text: Arc<str>,
        /// The error, with spans into `text`.
        error: Box<DslError>,
    },
    /// A segment file could not be read.
    #[error("cannot read segment file {file}: {message}")]
    Io {
        /// The path.
        file: String,
        /// The operating system's message.
        message: String,
    },
}

impl DslError {
    /// The span the error is about (for [`DslError::InFile`], a span into its file).
    pub fn span(&self) -> Span {
        match self {
            DslError::Syntax { span, .. }
            | DslError::NearMissOperator { span, .. }
            | DslError::BadLiteral { span, .. }
            | DslError::UnknownName { span, .. }
            | DslError::Type { span, .. }
            | DslError::SegmentCycle { span, .. }
            | DslError::DuplicateSegment { span, .. }
            | DslError::Limit { span, .. }
            | DslError::Compile { span, .. } => *span,
            DslError::InFile { error, .. } => error.span(),
            DslError::Io { .. } => Span::default(),
        }
    }

    /// What would have been accepted at the span, if the error says.
    pub fn expected(&self) -> Option<&str> {
        match self {
            DslError::Syntax { expected, .. }
            | DslError::BadLiteral { expected, .. }
            | DslError::UnknownName { expected, .. }
            | DslError::Type { expected, .. } => Some(expected),
            DslError::NearMissOperator { .. } => {
                Some("`and`, `or`, `not` or a comparison (`=`, `!=`, `<`, `<=`, `>`, `>=`)")
            }
            DslError::SegmentCycle { .. } => {
                Some("a reference to a segment that does not lead back to this one")
            }
            DslError::DuplicateSegment { .. } => Some("a name not used by another segment"),
            DslError::Limit { .. } => Some("a simpler expression"),
            DslError::InFile { error, .. } => error.expected(),
            DslError::Compile { .. } | DslError::Io { .. } => None,
        }
    }

    /// The help line: suggestions ("did you mean ...?") and hints.
    pub fn help(&self) -> Option<String> {
        match self {
            DslError::UnknownName {
                suggestions, hint, ..
            } => {
                let mut parts = Vec::new();
                if !suggestions.is_empty() {
                    parts.push(did_you_mean(suggestions));
                }
                parts.extend(hint.clone());
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            DslError::Syntax { hint, .. }
            | DslError::BadLiteral { hint, .. }
            | DslError::Type { hint, .. }
            | DslError::Limit { hint, .. } => hint.clone(),
            DslError::NearMissOperator { hint, .. } => Some(hint.clone()),
            DslError::InFile { error, .. } => error.help(),
            _ => None,
        }
    }

    /// Wraps the error as coming from segment file `file` (unless it already
    /// names a file: a reference chain across files keeps the innermost one).
    pub fn in_file(self, file: &str, text: &Arc<str>) -> DslError {
        match self {
            DslError::InFile { .. } | DslError::Io { .. } => self,
            other => DslError::InFile {
                file: file.to_owned(),
                text: Arc::clone(text),
                error: Box::new(other),
            },
        }
    }

    /// Renders the error for a terminal, against the `source` it came from:
    ///
    /// ```text
    /// error: unknown metric `Freq`
    ///  --> 1:1
    ///   |
    /// 1 | Freq >= 3
    ///   | ^^^^
    ///   = expected: a metric (R, F, M, ...), a property or a condition
    ///   = help: did you mean `frequency`?
    /// ```
    ///
    /// `source` is ignored for errors from segment files, which carry their text.
    pub fn render(&self, source: &str) -> String {
        match self {
            DslError::InFile { file, text, error } => render_at(error, text, Some(file)),
            other => render_at(other, source, None),
        }
    }
}

/// "did you mean `a`?" / "did you mean `a` or `b`?"
fn did_you_mean(suggestions: &[String]) -> String {
    let quoted: Vec<String> = suggestions.iter().map(|s| format!("`{s}`")).collect();
    match quoted.as_slice() {
        [one] => format!("did you mean {one}?"),
        [rest @ .., last] => format!("did you mean {} or {last}?", rest.join(", ")),
        [] => String::new(),
    }
}

fn render_at(error: &DslError, source: &str, file: Option<&str>) -> String {
    let mut out = format!("error: {error}\n");
    if let DslError::Io { .. } = error {
        return out;
    }
    let span = error.span();
    let start = floor_char_boundary(source, span.start.min(source.len()));
    let end = floor_char_boundary(source, span.end.clamp(start, source.len()));

    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = source[line_start..line_end].trim_end_matches('\r');
    let line_no = source[..line_start].matches('\n').count() + 1;
    let column = source[line_start..start].chars().count() + 1;

    // Pad with the same whitespace as the source so tabs line up; carets cover
    // the span's characters on this line (at least one, for empty spans).
    let pad: String = source[line_start..start]
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let caret_chars = source[start..end.min(line_end).max(start)]
        .trim_end_matches('\r')
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line_no.to_string().len());

    let location = match file {
        Some(file) => format!("{file}:{line_no}:{column}"),
        None => format!("{line_no}:{column}"),
    };
    let _ = writeln!(out, "{gutter}--> {location}");
    let _ = writeln!(out, "{gutter} |");
    let _ = writeln!(out, "{line_no} | {line}");
    let _ = writeln!(out, "{gutter} | {pad}{}", "^".repeat(caret_chars));
    if let Some(expected) = error.expected() {
        let _ = writeln!(out, "{gutter} = expected: {expected}");
    }
    if let Some(help) = error.help() {
        let _ = writeln!(out, "{gutter} = help: {help}");
    }
    out
}

/// The largest char boundary not after `index` (spans from pest are always on
/// boundaries, but rendering must never panic on a span from elsewhere).
fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

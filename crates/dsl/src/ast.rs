//! The syntax tree the parser produces: what the user wrote, with a byte span on
//! every node, before any name is looked up. Resolution (resolve.rs) turns it into
//! a typed tree; keeping the two apart lets errors point at the exact text and
//! lets `--explain` show both stages.

use std::fmt;

/// A byte range `start..end` into the parsed source.
///
/// Byte offsets (not characters) because that is what pest reports and what
/// slicing the source needs; rendering converts to columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    /// First byte of the node.
    pub start: usize,
    /// One past the last byte of the node.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A value with the span it was written at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Span,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=` (also `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }

    /// Whether this is `=` or `!=`, the only operators some types support.
    pub fn is_equality(self) -> bool {
        matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

/// A length of time, kept in whole hours (the smallest unit the language has).
///
/// Ordered and hashable because it is part of a feature's identity
/// (`did purchase within 30d` and `within 4w` are different columns, while
/// `within 30d` and `within 720h` are the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration {
    hours: i64,
}

impl Duration {
    /// Microseconds in one hour.
    const MICROS_PER_HOUR: i64 = 3_600_000_000;
    /// The longest duration accepted: 1000 years, so every conversion to
    /// microseconds and every `as_of - duration` stays far from overflow.
    pub const MAX_HOURS: i64 = 1000 * 366 * 24;

    /// A duration of `hours` hours, if it is between 0 and [`Self::MAX_HOURS`].
    pub fn from_hours(hours: i64) -> Option<Duration> {
        (0..=Self::MAX_HOURS)
            .contains(&hours)
            .then_some(Duration { hours })
    }

    /// The duration in hours.
    pub fn hours(self) -> i64 {
        self.hours
    }

    /// The duration in microseconds (the unit of Tenure's timestamps).
    pub fn micros(self) -> i64 {
        self.hours * Self::MICROS_PER_HOUR
    }

    /// Whole days, if the duration is a whole number of days.
    pub fn whole_days(self) -> Option<i64> {
        (self.hours % 24 == 0).then_some(self.hours / 24)
    }
}

/// Canonical spelling: the largest unit that divides the duration exactly, so
/// equal durations always print (and name columns) the same way.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.hours;
        if h != 0 && h % (24 * 7) == 0 {
            write!(f, "{}w", h / (24 * 7))
        } else if h != 0 && h % 24 == 0 {
            write!(f, "{}d", h / 24)
        } else {
            write!(f, "{h}h")
        }
    }
}

/// A number literal as written: an exact decimal `mantissa * 10^-scale`.
///
/// Kept exact (not `f64`) because money compares to the cent and counts must be
/// whole; the resolver decides what the number means once it knows the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Number {
    /// All digits of the literal, with its sign.
    pub mantissa: i128,
    /// Number of digits after the decimal point.
    pub scale: u32,
}

impl Number {
    /// The value as a whole number, if it has no fractional part and fits `i64`.
    pub fn as_i64(self) -> Option<i64> {
        let divisor = 10i128.checked_pow(self.scale)?;
        if self.mantissa % divisor != 0 {
            return None;
        }
        i64::try_from(self.mantissa / divisor).ok()
    }

    /// The value in hundredths, if it has at most two decimals and fits.
    pub fn as_hundredths(self) -> Option<i128> {
        match self.scale {
            0 => self.mantissa.checked_mul(100),
            1 => self.mantissa.checked_mul(10),
            2 => Some(self.mantissa),
            _ => None,
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

/// An operand: something a condition talks about or compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// What was written.
    pub kind: TermKind,
    /// Where.
    pub span: Span,
}

/// The kinds of operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermKind {
    /// A bare name: a metric (`R`), a lifecycle stage (`silent`) or a property.
    Ident(String),
    /// An explicit property reference, `prop.country` or `prop."Plan type"`.
    Prop(String),
    /// A number.
    Number(Number),
    /// A duration such as `30d`.
    Duration(Duration),
    /// A double-quoted string, escapes already processed.
    String(String),
    /// `mean(R)` / `avg(R)`: the mean of a metric over all users.
    Mean(Spanned<String>),
    /// `expected_purchases(90d)`: BG/NBD's expected purchases in a horizon.
    ExpectedPurchases(Duration),
    /// `sum(revenue)`, `avg(revenue) within 30d`: a property summed or
    /// averaged over the user's events (in the window before the as-of).
    Total {
        /// Sum or average.
        aggregate: crate::features::Aggregate,
        /// The property (a numeric event column).
        property: Spanned<String>,
        /// The window, if any (checked to be a duration by the resolver).
        within: Option<Box<Term>>,
    },
}

/// A boolean expression node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// The text it covers.
    pub span: Span,
}

/// The kinds of boolean expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprKind {
    /// `a and b and ...`, flattened so long chains do not make deep trees.
    And(Vec<Expr>),
    /// `a or b or ...`, flattened likewise.
    Or(Vec<Expr>),
    /// `not a`.
    Not(Box<Expr>),
    /// `left op right`.
    Compare {
        /// Left operand.
        left: Term,
        /// The operator and where it was written.
        op: Spanned<CmpOp>,
        /// Right operand.
        right: Term,
    },
    /// `term [not] in (items...)`.
    InList {
        /// The tested operand.
        term: Term,
        /// `not in`.
        negated: bool,
        /// The list.
        items: Vec<Term>,
    },
    /// `term [not] between low and high` (inclusive).
    Between {
        /// The tested operand.
        term: Term,
        /// `not between`.
        negated: bool,
        /// Lower bound.
        low: Term,
        /// Upper bound.
        high: Term,
    },
    /// `term within duration`, e.g. `first_seen within 7d`.
    Within {
        /// The timestamp operand.
        term: Term,
        /// The window.
        window: Term,
    },
    /// `did event [where condition] [op N [times]] [within duration]`.
    Did {
        /// The event name.
        event: Spanned<String>,
        /// A condition on the event's properties (`where revenue > 100`).
        filter: Option<Box<Expr>>,
        /// The count condition; `None` means "at least once".
        count: Option<(Spanned<CmpOp>, Term)>,
        /// The window; `None` means all history up to `as_of`.
        within: Option<Term>,
    },
    /// `@name`: a named segment.
    SegmentRef(Spanned<String>),
    /// A term on its own; never valid, kept so the resolver can explain why.
    Bare(Term),
}

/// A `segment name = expr` definition from a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDef {
    /// The segment's name.
    pub name: Spanned<String>,
    /// Its definition.
    pub expr: Expr,
    /// The whole definition.
    pub span: Span,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TermKind::Ident(name) => f.write_str(name),
            TermKind::Prop(name) => write!(f, "prop.{name:?}"),
            TermKind::Number(n) => write!(f, "{n}"),
            TermKind::Duration(d) => write!(f, "{d}"),
            TermKind::String(s) => write!(f, "{s:?}"),
            TermKind::Mean(metric) => write!(f, "(mean {})", metric.node),
            TermKind::ExpectedPurchases(d) => write!(f, "(expected_purchases {d})"),
            TermKind::Total {
                aggregate,
                property,
                within,
            } => {
                write!(f, "({aggregate} {:?}", property.node)?;
                if let Some(w) = within {
                    write!(f, " (within {w})")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// An S-expression with each node's span, e.g. `(and@0..18 (<@0..7 R 30d) ...)`:
/// compact enough for golden files, precise enough to catch span regressions.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.span;
        match &self.kind {
            ExprKind::And(items) | ExprKind::Or(items) => {
                let head = if matches!(self.kind, ExprKind::And(_)) {
                    "and"
                } else {
                    "or"
                };
                write!(f, "({head}@{s}")?;
                for item in items {
                    write!(f, " {item}")?;
                }
                f.write_str(")")
            }
            ExprKind::Not(inner) => write!(f, "(not@{s} {inner})"),
            ExprKind::Compare { left, op, right } => {
                write!(f, "({}@{s} {left} {right})", op.node)
            }
            ExprKind::InList {
                term,
                negated,
                items,
            } => {
                let head = if *negated { "not-in" } else { "in" };
                write!(f, "({head}@{s} {term} (")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("))")
            }
            ExprKind::Between {
                term,
                negated,
                low,
                high,
            } => {
                let head = if *negated { "not-between" } else { "between" };
                write!(f, "({head}@{s} {term} {low} {high})")
            }
            ExprKind::Within { term, window } => write!(f, "(within@{s} {term} {window})"),
            ExprKind::Did {
                event,
                filter,
                count,
                within,
            } => {
                write!(f, "(did@{s} {:?}", event.node)?;
                if let Some(w) = filter {
                    write!(f, " (where {w})")?;
                }
                if let Some((op, n)) = count {
                    write!(f, " ({} {n})", op.node)?;
                }
                if let Some(w) = within {
                    write!(f, " (within {w})")?;
                }
                f.write_str(")")
            }
            ExprKind::SegmentRef(name) => write!(f, "@{}@{s}", name.node),
            ExprKind::Bare(term) => write!(f, "(bare@{s} {term})"),
        }
    }
}

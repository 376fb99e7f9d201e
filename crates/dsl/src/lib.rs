//! Tenure's segment language: `R < 30d and F >= 3`, `did purchase >= 2 times
//! within 30d`, `lifecycle = silent`, `@champions`.
//!
//! Analysts write segments as text; the engine needs a DataFusion [`Expr`]
//! over a per-user feature table. The pipeline is staged so every stage can
//! point at the text it rejects (see DESIGN.md, "Segment language"):
//!
//! 1. [`parse`]: pest grammar + Pratt parser to an [`ast::Expr`] with spans.
//! 2. [`Resolver`]: names, types and units checked, near names suggested,
//!    `@name` segments inlined from a [`SegmentLibrary`] -> [`ResolvedExpr`].
//! 3. [`features`]: the feature-table columns ([`Feature`]) the engine must
//!    compute, and nothing more.
//! 4. [`compile`]: a DataFusion `Expr` over those columns, relative time
//!    anchored at [`CompileContext::as_of`].
//!
//! [`eval`] is a naive reference evaluator over a [`FeatureRow`] for testing
//! the engine, and [`Segment`] runs stages 1-4 in one call. Errors are
//! [`DslError`]s; [`DslError::render`] prints the caret display.
//!
//! # Language
//!
//! ```text
//! expr      := expr or expr | expr and expr | not expr | ( expr ) | condition
//! condition := term op term | term [not] in (v, ...) | term [not] between v and v
//!            | first_seen within 7d | @name
//!            | did event [where filter] [op N [times]] [within 30d]
//! filter    := property op constant | property [not] in (c, ...)
//!            | property [not] between c and c | ( filter and/or/not ... )
//! op        := = | != | <> | < | <= | > | >=
//! term      := R F M recency frequency monetary first_seen last_seen lifecycle
//!            | r_score f_score m_score | mean(R) avg(F) ... | property | prop.name
//!            | sum(property) [within 30d] | avg(property) [within 30d]
//!            | prop."any name" | 30 | 19.99 | 30d 12h 2w | "text"
//! ```
//!
//! `did purchase where revenue > 100 >= 2 times within 30d` counts only the
//! events whose properties meet the filter: a name there is an event column
//! (`revenue`, `variant`, declared properties) or a key of the `properties`
//! JSON; a property an event lacks makes the filter unknown, so the event does
//! not count (also under `not`). One condition follows `where` as is; several
//! go in parentheses. `sum(revenue) within 30d >= 500` totals a numeric event
//! column over the user's events (of any name) in the window (0 over none);
//! `avg(...)` is their mean (NULL over none). An event name the store has
//! never seen but close to one it has (`purchse`) is an error naming it; a
//! name unlike every known one counts 0 (an event yet to happen).
//!
//! Keywords and built-in names are case-insensitive; property, event and
//! segment names are not. `#` starts a comment. A bare name that is not a
//! built-in is a user property (its latest value, as text). `R` compares with
//! days (`R < 30` means `R < 30d`), `M` with money (at most 2 decimals), `F`
//! and event counts with whole numbers, `first_seen`/`last_seen` with UTC dates
//! (`"2024-01-31"`) or `within`. `mean(R)` is the mean over all users (the
//! classic 8 RFM segments compare with it).
//!
//! [`Expr`]: datafusion_expr::Expr

#![deny(missing_docs)]

pub mod ast;
mod compile;
mod error;
mod eval;
mod features;
mod library;
mod parser;
mod resolve;
mod segment;
mod suggest;
mod timestamp;

pub use compile::{CompileContext, MeanSource, compile};
pub use error::{DslError, NameKind};
pub use eval::{FeatureRow, eval, evaluate};
pub use features::{
    Aggregate, EventFilter, Feature, LIFECYCLE_STAGES, LifecycleAxis, Literal, Metric,
    feature_schema, features,
};
pub use library::{
    MAX_EXPANDED_NODES, MAX_SEGMENT_DEPTH, NamedSegment, SegmentLibrary, SegmentLibraryBuilder,
};
pub use parser::{MAX_NESTING, parse, parse_segment_file};
pub use resolve::{Catalog, Operand, ResolvedExpr, Resolver, Value};
pub use segment::Segment;

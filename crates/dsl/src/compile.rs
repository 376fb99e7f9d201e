//! Resolved expression to DataFusion [`Expr`] over the feature table's columns
//! (features.rs). Built from `datafusion_expr` constructors, never from SQL
//! text, so no user input is ever interpreted as SQL.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion_common::ScalarValue;
use datafusion_expr::expr::WindowFunction;
use datafusion_expr::{AggregateUDF, Expr, Operator, binary_expr, ident, lit};

use crate::ast::{CmpOp, Span};
use crate::error::DslError;
use crate::features::Feature;
use crate::resolve::{Operand, ResolvedExpr, Value};

/// Where `mean(R)` and friends come from in the compiled expression.
#[derive(Debug, Clone, Default)]
pub enum MeanSource {
    /// Read the `mean_*` column of the feature table (the default): the engine
    /// adds it as `avg(col) over ()` when it builds the table. This keeps window
    /// functions out of the filter, where DataFusion does not allow them.
    #[default]
    Column,
    /// Inline `avg(col) over ()` using this aggregate (pass DataFusion's
    /// `avg_udaf()`; this crate cannot depend on the functions crate). The
    /// result then contains a window function: use it in a projection, not in
    /// a filter.
    Window(Arc<AggregateUDF>),
}

/// What compilation needs besides the expression.
#[derive(Debug, Clone)]
pub struct CompileContext {
    /// The time relative windows end at (`within 7d` means the 7 days up to
    /// this), as UTC microseconds since the epoch.
    pub as_of: i64,
    /// How means compile.
    pub means: MeanSource,
}

impl CompileContext {
    /// A context for `as_of` (UTC microseconds) reading means from columns.
    pub fn new(as_of: i64) -> Self {
        CompileContext {
            as_of,
            means: MeanSource::Column,
        }
    }
}

/// Compiles `expr` to a boolean DataFusion expression over the feature table.
///
/// NULL semantics are SQL's (a user without a purchase has NULL recency, so
/// `R < 30` is NULL for them and a filter drops them), except that lifecycle
/// comparisons are NULL-safe (see [`ResolvedExpr::Compare`]).
pub fn compile(expr: &ResolvedExpr, ctx: &CompileContext) -> Result<Expr, DslError> {
    Compiler {
        ctx,
        named: HashMap::new(),
    }
    .expr(expr)
}

/// Compiles one expression, each named segment's shared definition once: a
/// later reference to it is a copy of the first one's result. (A DataFusion
/// `Expr` owns its children, so the copies themselves cannot be shared; the
/// resolver bounds how many there are, see `MAX_EXPANDED_NODES`.)
struct Compiler<'c> {
    ctx: &'c CompileContext,
    /// Compiled definitions, by the address of the shared resolved one.
    named: HashMap<*const ResolvedExpr, Expr>,
}

impl Compiler<'_> {
    fn expr(&mut self, expr: &ResolvedExpr) -> Result<Expr, DslError> {
        let ctx = self.ctx;
        Ok(match expr {
            ResolvedExpr::And(items) => balanced(self.all(items)?, Operator::And, true),
            ResolvedExpr::Or(items) => balanced(self.all(items)?, Operator::Or, false),
            ResolvedExpr::Not(inner) => !self.expr(inner)?,
            ResolvedExpr::Compare {
                feature, op, rhs, ..
            } => {
                let left = column(feature);
                let right = match rhs {
                    Operand::Value(v) => literal(v),
                    Operand::Feature(f) => feature_expr(f, ctx),
                };
                if matches!(feature, Feature::Lifecycle(_)) {
                    null_safe_eq(left, right, *op == CmpOp::Eq)
                } else {
                    binary_expr(left, operator(*op), right)
                }
            }
            ResolvedExpr::InList {
                feature,
                values,
                negated,
                ..
            } => {
                if matches!(feature, Feature::Lifecycle(_)) {
                    let tests = values
                        .iter()
                        .map(|v| null_safe_eq(column(feature), literal(v), !negated))
                        .collect();
                    if *negated {
                        balanced(tests, Operator::And, true)
                    } else {
                        balanced(tests, Operator::Or, false)
                    }
                } else {
                    column(feature).in_list(values.iter().map(literal).collect(), *negated)
                }
            }
            ResolvedExpr::Between {
                feature,
                low,
                high,
                negated,
                ..
            } => {
                let col = column(feature);
                if *negated {
                    col.not_between(literal(low), literal(high))
                } else {
                    col.between(literal(low), literal(high))
                }
            }
            ResolvedExpr::Within {
                feature,
                window,
                span,
            } => {
                let start = window_start(ctx.as_of, window.micros(), *span)?;
                column(feature).between(timestamp(start), timestamp(ctx.as_of))
            }
            ResolvedExpr::Segment { body, .. } => {
                let key = Arc::as_ptr(body);
                match self.named.get(&key) {
                    Some(done) => done.clone(),
                    None => {
                        let done = self.expr(body)?;
                        self.named.insert(key, done.clone());
                        done
                    }
                }
            }
        })
    }

    fn all(&mut self, items: &[ResolvedExpr]) -> Result<Vec<Expr>, DslError> {
        items.iter().map(|e| self.expr(e)).collect()
    }
}

/// `as_of - window`, or an error if that is before the representable range.
pub(crate) fn window_start(as_of: i64, window: i64, span: Span) -> Result<i64, DslError> {
    as_of.checked_sub(window).ok_or_else(|| DslError::Compile {
        span,
        message: "the window reaches before the earliest representable time".into(),
    })
}

/// Joins `items` with `op` as a balanced tree, so a chain of n conditions is
/// log(n) deep for DataFusion's recursive passes; `empty` is the identity.
fn balanced(mut items: Vec<Expr>, op: Operator, empty: bool) -> Expr {
    match items.len() {
        0 => lit(empty),
        1 => items.remove(0),
        n => {
            let right = items.split_off(n / 2);
            binary_expr(balanced(items, op, empty), op, balanced(right, op, empty))
        }
    }
}

fn column(feature: &Feature) -> Expr {
    // `ident`, not `col`: column names such as `count:a.b` must not be split
    // into a table qualifier at the dot.
    ident(feature.column_name())
}

fn feature_expr(feature: &Feature, ctx: &CompileContext) -> Expr {
    match (feature, &ctx.means) {
        (Feature::Mean(metric), MeanSource::Window(avg)) => Expr::WindowFunction(Box::new(
            WindowFunction::new(Arc::clone(avg), vec![column(&metric.feature())]),
        )),
        _ => column(feature),
    }
}

fn null_safe_eq(left: Expr, right: Expr, equal: bool) -> Expr {
    let op = if equal {
        Operator::IsNotDistinctFrom
    } else {
        Operator::IsDistinctFrom
    };
    binary_expr(left, op, right)
}

fn operator(op: CmpOp) -> Operator {
    match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::Ne => Operator::NotEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::Le => Operator::LtEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::Ge => Operator::GtEq,
    }
}

fn timestamp(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

fn literal(value: &Value) -> Expr {
    match value {
        Value::Int(n) => lit(*n),
        // The resolver only admits amounts below 10^16, so precision 18 holds.
        Value::Money(cents) => lit(ScalarValue::Decimal128(Some(*cents), 18, 2)),
        Value::Time(micros) => timestamp(*micros),
        Value::Text(s) => lit(s.as_str()),
        Value::Number(n) => lit(n.mantissa as f64 / 10f64.powi(n.scale as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Catalog, Resolver};

    fn compiled(src: &str) -> String {
        let resolved = Resolver::new(&Catalog::default()).parse(src).unwrap();
        compile(&resolved, &CompileContext::new(0))
            .unwrap()
            .to_string()
    }

    #[test]
    fn compiles_rfm_conditions() {
        assert_eq!(
            compiled("R < 30d and F >= 3"),
            "recency < Int64(30) AND frequency >= Int64(3)"
        );
        assert_eq!(compiled("M >= 19.99"), "monetary >= Decimal128(19.99,18,2)");
    }

    #[test]
    fn means_compile_to_columns_or_window_aggregates() {
        let resolved = Resolver::new(&Catalog::default())
            .parse("R < mean(R)")
            .unwrap();
        let column = compile(&resolved, &CompileContext::new(0)).unwrap();
        assert_eq!(column.to_string(), "recency < mean_recency");
        let ctx = CompileContext {
            as_of: 0,
            means: MeanSource::Window(datafusion_expr::test::function_stub::avg_udaf()),
        };
        let window = compile(&resolved, &ctx).unwrap();
        let Expr::BinaryExpr(binary) = &window else {
            panic!("{window:?}")
        };
        let Expr::WindowFunction(w) = &*binary.right else {
            panic!("{window:?}")
        };
        assert_eq!(w.fun.name(), "avg");
        assert_eq!(w.params.args, vec![ident("recency")]);
        assert!(w.params.partition_by.is_empty() && w.params.order_by.is_empty());
    }

    #[test]
    fn long_chains_compile_to_shallow_trees() {
        let chain = vec!["F > 1"; 1024].join(" or ");
        let expr = compiled(&chain);
        assert_eq!(expr.matches(" OR ").count(), 1023);
    }
}

//! The whole pipeline in one call, for callers that just want a filter: parse,
//! resolve, list the features to compute, compile.

use std::collections::BTreeSet;

use crate::compile::{CompileContext, compile};
use crate::error::DslError;
use crate::features::{Feature, features};
use crate::resolve::{ResolvedExpr, Resolver};

/// A segment expression ready for the engine.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The text it came from (errors from later stages render against it).
    pub source: String,
    /// The resolved tree (`--explain` prints it).
    pub resolved: ResolvedExpr,
    /// The feature-table columns the expression reads; compute only these.
    pub features: BTreeSet<Feature>,
    /// The boolean filter over the feature table.
    pub expr: datafusion_expr::Expr,
}

impl Segment {
    /// Parses, resolves and compiles `source`.
    ///
    /// ```
    /// use tenure_dsl::{Catalog, CompileContext, Feature, Resolver, Segment};
    ///
    /// let catalog = Catalog::default();
    /// let segment = Segment::new("R < 30d and F >= 3", &Resolver::new(&catalog), &CompileContext::new(0))?;
    /// assert_eq!(segment.features.iter().collect::<Vec<_>>(), [&Feature::Recency, &Feature::Frequency]);
    /// assert_eq!(segment.expr.to_string(), "recency < Int64(30) AND frequency >= Int64(3)");
    /// # Ok::<(), tenure_dsl::DslError>(())
    /// ```
    pub fn new(
        source: &str,
        resolver: &Resolver<'_>,
        ctx: &CompileContext,
    ) -> Result<Self, DslError> {
        let resolved = resolver.parse(source)?;
        let expr = compile(&resolved, ctx)?;
        Ok(Segment {
            source: source.to_owned(),
            features: features(&resolved),
            resolved,
            expr,
        })
    }
}

//! Named segments from segment files (`segment champions = R <= 30 and ...`),
//! resolved once, in dependency order, so `@champions` in an expression is a
//! lookup. Unknown references and cycles are reported with the span of the
//! offending `@name` in its file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::ast::{SegmentDef, Spanned};
use crate::error::DslError;
use crate::parser;
use crate::resolve::{Catalog, ResolvedExpr, SegmentLookup, resolve_with, unknown_segment};

/// How many `@name` references may nest (a segment using a segment using ...).
/// Bounds the depth of the inlined tree, which later stages walk recursively.
pub const MAX_SEGMENT_DEPTH: usize = 16;

/// How many nodes (conditions and `and`/`or`/`not`) an expression with `@name`
/// references may stand for once each reference is replaced by its
/// definition. Resolving shares each definition, but compiling to a
/// DataFusion filter, planning and evaluating work on the expansion, and
/// references multiply: 16 segments each ORing 8 copies of the one before
/// stand for 8^15 conditions. Hand-written segments stay far below this.
pub const MAX_EXPANDED_NODES: u64 = 10_000;

/// One resolved named segment.
#[derive(Debug, Clone)]
pub struct NamedSegment {
    /// The name after `segment`.
    pub name: String,
    /// The file it was defined in, as given to the builder.
    pub file: String,
    /// The definition's source text (for `--explain` and reports).
    pub source: String,
    /// The resolved definition.
    pub expr: Arc<ResolvedExpr>,
}

/// Resolved named segments, in definition order (the order reports list them).
#[derive(Debug, Clone, Default)]
pub struct SegmentLibrary {
    segments: Vec<NamedSegment>,
    /// Each segment's expanded size (see [`MAX_EXPANDED_NODES`]).
    sizes: Vec<u64>,
    index: HashMap<String, usize>,
}

impl SegmentLibrary {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and resolves segment files given as `(file name, text)` pairs.
    pub fn from_sources<'s>(
        sources: impl IntoIterator<Item = (&'s str, &'s str)>,
        catalog: &Catalog,
    ) -> Result<Self, DslError> {
        let mut builder = SegmentLibraryBuilder::default();
        for (file, text) in sources {
            builder.add_source(file, text)?;
        }
        builder.build(catalog)
    }

    /// The resolved definition of `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ResolvedExpr>> {
        self.index.get(name).map(|&i| &self.segments[i].expr)
    }

    /// The resolved definition of `name` and its expanded size.
    pub(crate) fn get_sized(&self, name: &str) -> Option<(Arc<ResolvedExpr>, u64)> {
        self.index
            .get(name)
            .map(|&i| (Arc::clone(&self.segments[i].expr), self.sizes[i]))
    }

    /// Segment names in definition order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.name.as_str())
    }

    /// All segments in definition order.
    pub fn segments(&self) -> &[NamedSegment] {
        &self.segments
    }
}

struct Def {
    file: usize,
    name: Spanned<String>,
    source: String,
    def: SegmentDef,
}

/// Collects segment files, then resolves them together (files may refer to
/// segments defined in other files, in any order).
#[derive(Default)]
pub struct SegmentLibraryBuilder {
    files: Vec<(String, Arc<str>)>,
    defs: Vec<Def>,
    index: HashMap<String, usize>,
}

impl SegmentLibraryBuilder {
    /// Parses segment file text; `file` names it in error messages.
    pub fn add_source(&mut self, file: &str, text: &str) -> Result<&mut Self, DslError> {
        let shared: Arc<str> = Arc::from(text);
        let defs = parser::parse_segment_file(text).map_err(|e| e.in_file(file, &shared))?;
        let file_index = self.files.len();
        for def in defs {
            if let Some(&first) = self.index.get(&def.name.node) {
                let first_file = self.files[self.defs[first].file].0.clone();
                return Err(DslError::DuplicateSegment {
                    span: def.name.span,
                    name: def.name.node.clone(),
                    first_file,
                }
                .in_file(file, &shared));
            }
            self.index.insert(def.name.node.clone(), self.defs.len());
            self.defs.push(Def {
                file: file_index,
                name: def.name.clone(),
                source: text
                    .get(def.expr.span.start..def.expr.span.end)
                    .unwrap_or_default()
                    .to_owned(),
                def,
            });
        }
        self.files.push((file.to_owned(), shared));
        Ok(self)
    }

    /// Reads and parses a segment file from disk.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<&mut Self, DslError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DslError::Io {
            file: name.clone(),
            message: e.to_string(),
        })?;
        self.add_source(&name, &text)
    }

    /// Resolves every definition, reporting the first unknown reference,
    /// cycle or resolve error.
    pub fn build(&self, catalog: &Catalog) -> Result<SegmentLibrary, DslError> {
        let mut state = BuildState {
            builder: self,
            catalog,
            resolved: vec![None; self.defs.len()],
            in_progress: Vec::new(),
        };
        let mut segments = Vec::with_capacity(self.defs.len());
        let mut sizes = Vec::with_capacity(self.defs.len());
        for (i, def) in self.defs.iter().enumerate() {
            let resolved = state.resolve_def(i)?;
            segments.push(NamedSegment {
                name: def.name.node.clone(),
                file: self.files[def.file].0.clone(),
                source: def.source.clone(),
                expr: resolved.expr,
            });
            sizes.push(resolved.size);
        }
        Ok(SegmentLibrary {
            segments,
            sizes,
            index: self.index.clone(),
        })
    }
}

/// A definition resolved once, shared by every reference to it.
#[derive(Clone)]
struct Resolved {
    expr: Arc<ResolvedExpr>,
    /// Reference depth (1 = uses no `@name`).
    depth: usize,
    /// Nodes with every reference expanded.
    size: u64,
}

struct BuildState<'a> {
    builder: &'a SegmentLibraryBuilder,
    catalog: &'a Catalog,
    /// Resolved definitions.
    resolved: Vec<Option<Resolved>>,
    /// Definitions being resolved, outermost first (the current reference
    /// chain), each with the deepest reference seen in it so far.
    in_progress: Vec<(usize, usize)>,
}

impl BuildState<'_> {
    fn resolve_def(&mut self, i: usize) -> Result<Resolved, DslError> {
        if let Some(done) = &self.resolved[i] {
            return Ok(done.clone());
        }
        let builder = self.builder;
        let def = &builder.defs[i];
        let (file, text) = &builder.files[def.file];
        self.in_progress.push((i, 0));
        let result = resolve_with(&def.def.expr, self.catalog, self);
        let (_, deepest) = self.in_progress.pop().unwrap_or_default();
        let (expr, size) = result.map_err(|e| e.in_file(file, text))?;
        let expr = Arc::new(expr);
        let depth = deepest + 1;
        if depth > MAX_SEGMENT_DEPTH {
            return Err(DslError::Limit {
                span: def.name.span,
                message: format!(
                    "segment `{}` nests more than {MAX_SEGMENT_DEPTH} deep through `@` references",
                    def.name.node
                ),
                hint: None,
            }
            .in_file(file, text));
        }
        let done = Resolved { expr, depth, size };
        self.resolved[i] = Some(done.clone());
        Ok(done)
    }
}

impl SegmentLookup for BuildState<'_> {
    fn lookup(&mut self, name: &Spanned<String>) -> Result<(Arc<ResolvedExpr>, u64), DslError> {
        let builder = self.builder;
        let Some(&i) = builder.index.get(&name.node) else {
            let names: Vec<&str> = builder.defs.iter().map(|d| d.name.node.as_str()).collect();
            return Err(unknown_segment(name, &names));
        };
        if let Some(pos) = self.in_progress.iter().position(|&(d, _)| d == i) {
            let mut cycle: Vec<String> = self.in_progress[pos..]
                .iter()
                .map(|&(d, _)| builder.defs[d].name.node.clone())
                .collect();
            cycle.push(name.node.clone());
            return Err(DslError::SegmentCycle {
                span: name.span,
                cycle,
            });
        }
        if self.resolved[i].is_none() && self.in_progress.len() >= MAX_SEGMENT_DEPTH {
            // Stop before recursing further: the outermost segment is too deep.
            return Err(DslError::Limit {
                span: name.span,
                message: format!(
                    "segments nest more than {MAX_SEGMENT_DEPTH} deep through `@` references"
                ),
                hint: None,
            });
        }
        let done = self.resolve_def(i)?;
        if let Some((_, deepest)) = self.in_progress.last_mut() {
            *deepest = (*deepest).max(done.depth);
        }
        Ok((done.expr, done.size))
    }
}

//! `tenure paths`: the most frequent paths after (or before) an event.

use clap::Args;
pub use tenure_engine::request::PathsOptions;

use crate::cmd::common::AnalysisArgs;
use crate::output::{self, Rows};
use crate::report::Kind;

/// The most frequent paths from an event: per user, the next (--after) or
/// previous (--before) --depth events from their first occurrence of the
/// anchor event in range, ordered by time then event name, stopping at a
/// gap longer than --session if given; collapsed into a tree of paths.
///
/// Rows per group (with --by: the value at the anchor event): the anchor at
/// depth 0 (every anchored user), then each path of 1 to --depth events
/// kept (the --top with the most users per depth, under kept parents).
///
/// Columns (csv/json): group, depth, path (events joined by ` > `, the
/// anchor not repeated; paths before the anchor read in time order and end
/// next to it), users (whose path starts with it), share (of the anchored
/// users), drop_off (users whose path ends there before --depth), direction
/// (after or before).
///
/// Examples:
///
///   tenure paths --data ./store --after view_item --depth 3
///
///   tenure paths --data ./store --before purchase --session 30m --format csv
///
///   tenure paths --data ./store --after signup --by variant --format html > paths.html
///
///   In SQL: SELECT path, users FROM paths('view_item', 3) WHERE depth = 3
#[derive(Args)]
pub struct PathsArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: PathsOptions,
}

/// Runs the command.
pub fn run(args: PathsArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(None)?;
    let table = output::rows_of(&rt.block_on(args.opts.compute(&scope))?.table)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    let anchor = args
        .opts
        .after
        .clone()
        .or(args.opts.before.clone())
        .unwrap_or_default();
    output::print_analysis(Kind::Paths, &table, None, args.common.format, || {
        human(&table, &anchor, args.opts.after.is_some())
    })
}

/// An indented tree: each path under its parent, with users and share.
fn human(table: &Rows, anchor: &str, after: bool) -> String {
    use std::fmt::Write as _;
    let col = |name: &str| table.columns.iter().position(|c| c == name);
    let (Some(g), Some(d), Some(p), Some(u), Some(s), Some(x)) = (
        col("group"),
        col("depth"),
        col("path"),
        col("users"),
        col("share"),
        col("drop_off"),
    ) else {
        return output::table(table);
    };
    // Depth first: each path under its parent (rows come by depth).
    let parent = |path: &str| tenure_engine::paths::parent(path, after);
    let mut children: std::collections::HashMap<(String, String), Vec<usize>> = Default::default();
    let mut roots = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        let group = row[g].as_str().unwrap_or("").to_string();
        if row[d].as_u64() == Some(0) {
            roots.push(i);
        } else {
            let path = row[p].as_str().unwrap_or("");
            children.entry((group, parent(path))).or_default().push(i);
        }
    }
    let mut order = Vec::new();
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        let row = &table.rows[i];
        let key = (
            row[g].as_str().unwrap_or("").to_string(),
            row[p].as_str().unwrap_or("").to_string(),
        );
        if let Some(kids) = children.get(&key) {
            stack.extend(kids.iter().rev());
        }
    }
    let mut out = String::new();
    let mut group = None;
    for row in order.iter().map(|&i| &table.rows[i]) {
        let this = row[g].as_str().map(str::to_string);
        if this != group {
            if let Some(name) = &this {
                let _ = writeln!(out, "== {name}");
            }
            group = this;
        }
        let depth = row[d].as_u64().unwrap_or(0) as usize;
        let path = row[p].as_str().unwrap_or("");
        let last = if depth == 0 {
            if after {
                format!("{anchor} >")
            } else {
                format!("> {anchor}")
            }
        } else if after {
            path.rsplit(" > ").next().unwrap_or(path).to_string()
        } else {
            path.split(" > ").next().unwrap_or(path).to_string()
        };
        let _ = writeln!(
            out,
            "{:indent$}{last}  {} users ({:.1}%), {} end here",
            "",
            row[u].as_u64().unwrap_or(0),
            row[s].as_f64().unwrap_or(0.0) * 100.0,
            row[x].as_u64().unwrap_or(0),
            indent = 2 * depth
        );
    }
    out
}

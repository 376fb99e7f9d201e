//! `tenure funnel`: step-by-step conversion with ClickHouse `windowFunnel`
//! semantics.

use std::fmt::Write as _;

use clap::Args;
use tenure_engine::Events;
use tenure_engine::funnel::{self, FunnelSpec};
pub use tenure_engine::request::FunnelOptions;

use crate::cmd::common::{AnalysisArgs, Scope};
use crate::output::{self, Rows};
use crate::report::Kind;

/// Funnel: how many users went through the steps in order, each within
/// --window of their step-1 event.
///
/// Default mode is ClickHouse's windowFunnel: a chain may start at any step-1
/// event; each next step must happen no earlier than the previous one (equal
/// timestamps count) and at most --window after the chain's step-1 event (the
/// boundary is inclusive); a user's level is the deepest step any chain
/// reached. --mode adds, comma-separated: strict_order (any other event inside
/// a started chain stops it), strict_increase (steps need strictly later
/// timestamps), strict_deduplication (a repeated step stops the chain),
/// first_touch (only the user's first step-1 event starts a chain).
///
/// Steps are event names, each optionally with a condition, a SQL boolean
/// expression over the event's columns: `purchase where revenue > 100`.
/// --from/--to limit when users enter (their step-1 event); later steps count
/// up to the window past --to.
///
/// Columns (csv/json): group (the --by value; `all` without --by; `(none)` for
/// null), step (1-based), event, users, drop_off, conversion_from_previous,
/// conversion_from_first, median_seconds_to_convert, p90_seconds_to_convert
/// (from the previous step, over the users who reached the step; quantiles
/// interpolate linearly). With --histogram: group, step, event, bucket,
/// from_seconds, to_seconds, users.
///
/// Examples:
///
///   tenure funnel --data ./store --steps view_item,add_to_cart,checkout,purchase --window 7d
///
///   tenure funnel --data ./store --steps view_item,purchase --window 1d --by variant --format json
///
///   tenure funnel --data ./store --steps "view_item,purchase where revenue > 100" --window 3d --mode strict_order
///
///   tenure funnel --data ./store --steps view_item,add_to_cart,purchase --window 7d --exclude remove_from_cart:2-3 --hold item_id
///
///   tenure funnel --data ./store --steps view_item,purchase --window 7d --by-segment 'F >= 2'

#[derive(Args)]
pub struct FunnelArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: FunnelOptions,
}

/// Columns of the time-to-convert histogram rows.
pub const HISTOGRAM_COLUMNS: &[&str] = &[
    "group",
    "step",
    "event",
    "bucket",
    "from_seconds",
    "to_seconds",
    "users",
];

/// Computes the funnel over `scope` (its range limits when users enter).
pub async fn compute(
    scope: &Scope,
    opts: &FunnelOptions,
) -> anyhow::Result<(Vec<funnel::FunnelRow>, Vec<funnel::HistogramRow>)> {
    let (mut spec, events) = spec_and_events(scope, opts).await?;
    if let Some(expr) = &opts.by_segment {
        spec.user_groups = Some(segment_groups(scope, opts, expr, spec.entry_to).await?);
    }
    Ok(funnel::funnel(&events, &spec).await?)
}

/// The funnel as tidy rows: the steps, or with `histogram` the histogram.
pub async fn compute_rows(scope: &Scope, opts: &FunnelOptions) -> anyhow::Result<Rows> {
    let (rows, hist) = compute(scope, opts).await?;
    if opts.histogram {
        output::to_rows(HISTOGRAM_COLUMNS, &hist)
    } else {
        output::typed_rows(tenure_engine::funnel::schema(), &rows)
    }
}

/// The funnel spec from the options, and the store opened so that steps
/// after the range end still count.
pub async fn spec_and_events(
    scope: &Scope,
    opts: &FunnelOptions,
) -> anyhow::Result<(FunnelSpec, Events)> {
    let window_us = funnel::syntax::parse_window(&opts.window)?;
    let (from, to) = (scope.from, scope.to);
    // Steps may follow entry by up to the window (inclusive) past the range end.
    let events = scope
        .open_range(
            from,
            to.map(|t| t.saturating_add(window_us).saturating_add(1)),
        )
        .await?;
    let spec = opts.spec(&events, from, to)?;
    Ok((spec, events))
}

/// Runs the command.
pub fn run(args: FunnelArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(None)?;
    let (rows, hist) = rt.block_on(compute(&scope, &args.opts))?;
    if args.opts.histogram {
        let table = output::to_rows(HISTOGRAM_COLUMNS, &hist)?;
        if let Some(out) = &args.common.out {
            output::write_out(&table, out)?;
        }
        return output::print_analysis(
            Kind::FunnelHistogram,
            &table,
            None,
            args.common.format,
            || output::table(&table),
        );
    }
    let table = output::typed_rows(tenure_engine::funnel::schema(), &rows)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    output::print_analysis(Kind::Funnel, &table, None, args.common.format, || {
        render(&rows)
    })
}

/// Each user's group for `--by-segment`: 0 in the segment, 1 not.
async fn segment_groups(
    scope: &Scope,
    opts: &FunnelOptions,
    expr: &str,
    entry_to: Option<i64>,
) -> anyhow::Result<(Vec<u32>, Vec<String>)> {
    use crate::cmd::segment::{catalog_of, dsl_error, library};
    use tenure_engine::features::FeatureSpec;
    // The segment sees the whole history up to the end of the entry range.
    let events = scope.open_range(None, entry_to).await?;
    let (_, max_ts) = events.ts_range.ok_or_else(|| events.empty_error())?;
    let as_of = entry_to.map_or(max_ts, |t| t - 1);
    let catalog = catalog_of(Some(&events));
    let lib = library(&opts.segments, &catalog)?;
    let seg = tenure_dsl::Segment::new(
        expr,
        &tenure_dsl::Resolver::new(&catalog).with_library(&lib),
        &tenure_dsl::CompileContext::new(as_of),
    )
    .map_err(|e| dsl_error(e, expr))?;
    let spec = FeatureSpec {
        as_of,
        purchase: Default::default(),
        thresholds: Default::default(),
        buyers_only: false,
    };
    let matches = tenure_engine::abtest::segment_matches(&events, &seg, &spec).await?;
    Ok((
        matches.iter().map(|&m| u32::from(!m)).collect(),
        vec![format!("in: {expr}"), format!("not in: {expr}")],
    ))
}

/// Human form of a duration in seconds.
fn human(secs: f64) -> String {
    let s = secs.round() as i64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3_600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3_600, s % 3_600 / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3_600)
    }
}

/// The table view: per group, one line per step with a bar.
pub fn render(rows: &[funnel::FunnelRow]) -> String {
    const WIDTH: usize = 30;
    let mut s = String::new();
    let label_w = rows
        .iter()
        .map(|r| r.event.chars().count())
        .max()
        .unwrap_or(5)
        .min(40);
    let mut current: Option<&str> = None;
    for r in rows {
        if current != Some(r.group.as_str()) {
            if current.is_some() {
                s.push('\n');
            }
            let _ = writeln!(s, "{}", r.group);
            current = Some(&r.group);
        }
        let share = r.conversion_from_first.unwrap_or(0.0);
        let filled = (share * WIDTH as f64).round() as usize;
        let bar: String = "█".repeat(filled) + &"░".repeat(WIDTH - filled.min(WIDTH));
        let event: String = r.event.chars().take(label_w).collect();
        let _ = write!(
            s,
            "  {:>2} {:<label_w$} {bar} {:>9} {:>6.1}%",
            r.step,
            event,
            r.users,
            share * 100.0
        );
        if let Some(p) = r.conversion_from_previous {
            let _ = write!(s, "  {:>5.1}% of previous", p * 100.0);
        }
        if let Some(m) = r.median_seconds_to_convert {
            let _ = write!(s, ", median {}", human(m));
        }
        s.push('\n');
    }
    s
}

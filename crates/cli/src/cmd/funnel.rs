//! `tenure funnel`: step-by-step conversion with ClickHouse `windowFunnel`
//! semantics.

use std::fmt::Write as _;

use clap::Args;
use tenure_engine::funnel;
pub use tenure_engine::request::FunnelOptions;

use crate::cmd::common::AnalysisArgs;
use crate::output;
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
/// A step may add its own limits from the previous step of the chain:
/// `add_to_cart within 1h`, `checkout after 1m within 30m` (both bounds
/// inclusive; --window still bounds the chain from step 1). `wishlist?` is
/// optional: chains may skip it, its row counts users of a chain through it,
/// and the next step converts from the previous required step.
/// `{add_to_cart, add_to_wishlist}` is an any-order group: every member after
/// the previous step, in any order; reached when the last one happens.
/// Funnels with these are solved exactly per user (every valid chain counts);
/// strict_order and strict_deduplication do not combine with them.
/// --from/--to limit when users enter (their step-1 event); later steps count
/// up to the window past --to.
///
/// Columns (csv/json): group (the --by value; `all` without --by; `(none)` for
/// null), step (1-based), event, users, drop_off, conversion_from_previous,
/// conversion_from_first, median_seconds_to_convert, p90_seconds_to_convert
/// (from the previous step of each user's chain, over the users whose chain
/// took the step: after a skipped optional step, from the step before it;
/// quantiles interpolate linearly). With --histogram: group, step, event, bucket,
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
///
///   tenure funnel --data ./store --window 1d --steps "view_item, add_to_cart within 1h, checkout after 1m within 30m, purchase"
///
///   tenure funnel --data ./store --steps "view_item, add_to_wishlist?, {add_to_cart, checkout}, purchase within 10m"

#[derive(Args)]
pub struct FunnelArgs {
    #[command(flatten)]
    pub common: AnalysisArgs,
    #[command(flatten)]
    pub opts: FunnelOptions,
}

/// Runs the command.
pub fn run(args: FunnelArgs) -> anyhow::Result<()> {
    let rt = args.common.runtime()?;
    let scope = args.common.scope(None)?;
    let answer = rt.block_on(args.opts.compute(&scope))?;
    let table = output::rows_of(&answer.table)?;
    if let Some(out) = &args.common.out {
        output::write_out(&table, out)?;
    }
    if args.opts.histogram {
        return output::print_analysis(
            Kind::FunnelHistogram,
            &table,
            None,
            args.common.format,
            || output::table(&table),
        );
    }
    output::print_analysis(Kind::Funnel, &table, None, args.common.format, || {
        let rows: Vec<funnel::FunnelRow> = answer
            .table
            .batches
            .iter()
            .flat_map(funnel::rows_of_batch)
            .collect();
        render(&rows)
    })
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

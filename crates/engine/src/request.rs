//! Typed analysis requests: what each analysis computes, as one struct per
//! analysis that is at once the flags of its `tenure` subcommand (clap), the
//! keys of its `kind = "..."` table in a job file (serde), and what the
//! engine's analyses take. Checks that need no data live here too, so a
//! subcommand, a job file and a table function reject the same input with the
//! same message.

use crate::funnel::Modes;
use crate::funnel::syntax::parse_window;
use crate::lifecycle::Thresholds;
use crate::{EngineError, Result};

/// `Default` as the flags' defaults ([`clap_defaults`]).
macro_rules! clap_default {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                clap_defaults()
            }
        }
    )*};
}

clap_default!(
    RetentionOptions,
    LtvOptions,
    StickinessOptions,
    LifecycleOptions,
    KpiOptions,
    RfmOptions,
    ClvOptions
);

/// A request with every option at its default (as clap would parse no
/// flags): the defaults of a job file's keys are those of the flags.
pub fn clap_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every option of a job analysis has a default");
    T::from_arg_matches(&matches).expect("clap defaults parse into their own struct")
}

/// What to compute: the flags of `tenure retention`, and the keys of a
/// `kind = "retention"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionOptions {
    /// Cohort period: day, week (ISO, Monday start) or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Event that puts a user in a cohort (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub start_event: Option<String>,
    /// Extra condition on start events, a SQL boolean expression over event
    /// columns (e.g. "country = 'JP'").
    #[arg(long, value_name = "SQL")]
    pub start_where: Option<String>,
    /// Event that counts as a return (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub return_event: Option<String>,
    /// Extra condition on return events (e.g. "revenue > 100").
    #[arg(long, value_name = "SQL")]
    pub return_where: Option<String>,
    /// n-day (exactly period k), unbounded (k or later), or bracket.
    #[arg(long, default_value = "n-day")]
    pub mode: String,
    /// Period ranges for --mode bracket, e.g. 0,1-3,4-7.
    #[arg(long)]
    pub brackets: Option<String>,
    /// Split cohorts by a property's value at each user's first start event:
    /// a column (variant, event, a declared property) or any key of the
    /// events' properties; several give nested groups (country,variant).
    #[arg(long, value_name = "PROPERTY[,PROPERTY...]")]
    pub by: Option<String>,
    /// Read returns by day within weekly or monthly cohorts (`--period week
    /// --read day`): column k is the k-th day after each user's own first
    /// start day, so weekly cohorts show D1, D7, ... retention; a cell is
    /// complete once the cohort period's last day plus k days has ended.
    #[arg(long, value_name = "PERIOD")]
    pub read: Option<String>,
    /// `revenue`: also the revenue of each cell (the cohort's return events
    /// in the cell's period), per cohort user and per retained user
    /// (columns revenue, revenue_per_user, revenue_per_retained_user).
    #[arg(long, value_name = "users|revenue")]
    pub value: Option<String>,
    /// Only users matching this segment expression (see `tenure segment`)
    /// as of their cohort's start, over their events before it (never
    /// looking ahead: `F >= 1` keeps users who had bought before their
    /// cohort's period began).
    #[arg(long, value_name = "EXPR")]
    pub segment: Option<String>,
    /// Segment files defining @names for --segment (repeatable).
    #[arg(long = "segments", value_name = "FILE")]
    #[serde(rename = "segments")]
    pub segment_files: Vec<String>,
}

impl RetentionOptions {
    /// Checks the period without data.
    pub fn validate_period(&self) -> Result<()> {
        let _: crate::calendar::Period = self.period.parse()?;
        Ok(())
    }

    /// Checks the mode and brackets (and what reads them: --read, --value)
    /// without data.
    pub fn validate_mode(&self) -> Result<()> {
        let mode = crate::retention::Mode::parse(&self.mode, self.brackets.as_deref())?;
        if let Some(read) = &self.read {
            let read: crate::calendar::Period = read.parse()?;
            let period: crate::calendar::Period = self.period.parse()?;
            if read != period && read != crate::calendar::Period::Day {
                return Err(EngineError::BadRequest(format!(
                    "--read {}: returns are read by day within weekly or monthly cohorts (--read day)",
                    crate::retention::period_name(read)
                )));
            }
        }
        match self.value.as_deref() {
            None | Some("users") => {}
            Some("revenue") if mode == crate::retention::Mode::Unbounded => {
                return Err(EngineError::BadRequest(
                    "--value revenue sums a cell's own period(s): use --mode n-day or bracket"
                        .into(),
                ));
            }
            Some("revenue") => {}
            Some(other) => {
                return Err(EngineError::BadRequest(format!(
                    "--value {other}: expected users (the default) or revenue"
                )));
            }
        }
        Ok(())
    }
}

/// What to compute: the flags of `tenure ltv`, and the keys of a
/// `kind = "ltv"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtvOptions {
    /// Cohort period: day, week or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Event that puts a user in a cohort (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub start_event: Option<String>,
    /// Extra SQL condition on start events.
    #[arg(long, value_name = "SQL")]
    pub start_where: Option<String>,
    /// Split cohorts by properties at each user's first start event: columns
    /// or keys of the events' properties; several nest (country,variant).
    #[arg(long, value_name = "PROPERTY[,PROPERTY...]")]
    pub by: Option<String>,
}

impl LtvOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        let _: crate::calendar::Period = self.period.parse()?;
        Ok(())
    }
}

/// What to compute: the flags of `tenure stickiness`, and the keys of a
/// `kind = "stickiness"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StickinessOptions {
    /// Reporting period: week (ISO, Monday start) or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Only days with this event count (default: any event).
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// Extra SQL condition on the counted events (e.g. "country = 'JP'").
    #[arg(long = "where", value_name = "SQL")]
    pub where_: Option<String>,
}

impl StickinessOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        let p: crate::calendar::Period = self.period.parse()?;
        if p == crate::calendar::Period::Day {
            return Err(EngineError::BadRequest(
                "stickiness counts days per week or month: --period week or month".into(),
            ));
        }
        Ok(())
    }
}

/// What to fit and predict: the flags of `tenure clv`, and the keys of a
/// `kind = "clv"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClvOptions {
    /// End of the calibration period (a date, inclusive, or an RFC 3339
    /// instant): the models are fitted on purchases up to it, and the
    /// purchases after it (up to --as-of) are compared with the prediction.
    #[arg(long, value_name = "WHEN")]
    pub calibration_end: Option<String>,
    /// How far ahead to predict purchases and value, in weeks or days
    /// (`52w`, `90d`).
    #[arg(long, default_value = "52w")]
    pub horizon: String,
    /// Unit of time of the model (of recency, T and the discount rate):
    /// week (the papers' unit) or day.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Discount rate per period for the lifetime value (0.01: 1% per week).
    #[arg(long, default_value_t = 0.0)]
    pub discount: f64,
    /// Name of the purchase event.
    #[arg(long, default_value = PURCHASE)]
    pub purchase_event: String,
}

impl ClvOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        self.unit_days()?;
        self.horizon_days()?;
        if !(self.discount.is_finite() && self.discount >= 0.0) {
            return Err(EngineError::BadRequest(format!(
                "--discount {}: expected a rate of 0 or more (0.01 = 1% per period)",
                self.discount
            )));
        }
        Ok(())
    }

    /// Days per unit of time.
    pub fn unit_days(&self) -> Result<u32> {
        match self.period.as_str() {
            "week" => Ok(7),
            "day" => Ok(1),
            other => Err(EngineError::BadRequest(format!(
                "--period {other}: the model's unit of time is week or day"
            ))),
        }
    }

    /// The horizon in days.
    pub fn horizon_days(&self) -> Result<u32> {
        let h = self.horizon.trim();
        let bad = || {
            EngineError::BadRequest(format!(
                "--horizon {h}: expected weeks or days, like 52w or 90d"
            ))
        };
        let (n, per) = match h.char_indices().last() {
            Some((i, 'w')) => (&h[..i], 7),
            Some((i, 'd')) => (&h[..i], 1),
            _ => return Err(bad()),
        };
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        n.checked_mul(per).ok_or_else(bad)
    }

    /// The request over a store whose calendar is in `tz`, with the history
    /// ending at `as_of` (exclusive).
    pub fn spec(&self, tz: chrono_tz::Tz, as_of: Option<i64>) -> Result<crate::clv::ClvSpec> {
        self.validate()?;
        let unit_days = self.unit_days()?;
        Ok(crate::clv::ClvSpec {
            purchase_event: self.purchase_event.clone(),
            tz,
            unit_days,
            calibration_end: self
                .calibration_end
                .as_deref()
                .map(|t| crate::calendar::end_of(t, tz))
                .transpose()?,
            as_of,
            horizon: self.horizon_days()? as f64 / unit_days as f64,
            discount: self.discount,
        })
    }
}

/// What to compute: the flags of `tenure paths`.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathsOptions {
    /// Paths of the events after each user's first occurrence of this event.
    #[arg(
        long,
        value_name = "EVENT",
        conflicts_with = "before",
        required_unless_present = "before"
    )]
    pub after: Option<String>,
    /// Paths of the events before each user's first occurrence of this event.
    #[arg(long, value_name = "EVENT")]
    pub before: Option<String>,
    /// Events per path.
    #[arg(long, default_value_t = 5)]
    #[serde(default = "default_path_depth")]
    pub depth: usize,
    /// Paths kept per depth (those with the most users, under kept parents).
    #[arg(long, default_value_t = 20)]
    #[serde(default = "default_path_top")]
    pub top: usize,
    /// A path stops at a gap longer than this between two events (30m, 1h).
    #[arg(long, value_name = "DURATION")]
    pub session: Option<String>,
    /// Break down by properties at the anchor event (country, variant, ...).
    #[arg(long, value_name = "PROPERTY[,PROPERTY...]")]
    pub by: Option<String>,
}

fn default_path_depth() -> usize {
    5
}

fn default_path_top() -> usize {
    20
}

impl PathsOptions {
    /// The request, checked without data.
    pub fn spec(&self) -> Result<crate::paths::PathsSpec> {
        if self.depth == 0 || self.depth > crate::paths::MAX_DEPTH {
            return Err(EngineError::BadRequest(format!(
                "--depth {}: expected 1 to {} events",
                self.depth,
                crate::paths::MAX_DEPTH
            )));
        }
        if self.top == 0 {
            return Err(EngineError::BadRequest(
                "--top 0: keep at least one path per depth".into(),
            ));
        }
        let (anchor, after) = match (&self.after, &self.before) {
            (Some(a), None) => (a.clone(), true),
            (None, Some(b)) => (b.clone(), false),
            _ => {
                return Err(EngineError::BadRequest(
                    "give one of --after EVENT or --before EVENT".into(),
                ));
            }
        };
        Ok(crate::paths::PathsSpec {
            anchor,
            after,
            depth: self.depth,
            top: self.top,
            session_us: self
                .session
                .as_deref()
                .map(|s| {
                    parse_window(s).map_err(|e| {
                        EngineError::BadRequest(format!("--session: {}", e.to_string().trim()))
                    })
                })
                .transpose()?,
            by: self.by.clone(),
        })
    }
}

/// What to compute: the flags of `tenure lifecycle`, and the keys of a
/// `kind = "lifecycle"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleOptions {
    /// Period of the counts: day, week or month.
    #[arg(long, default_value = "week")]
    pub period: String,
    /// Count users per stage instead of per period.
    #[arg(long)]
    pub stages: bool,
    /// Tenure stage bounds in days (new, growing, mature).
    #[arg(long, default_value = "7,30,90")]
    pub tenure_days: String,
    /// Activity stage bounds in days since last purchase (active, cooling, silent).
    #[arg(long, default_value = "30,90,180")]
    pub activity_days: String,
    /// Name of the purchase event.
    #[arg(long, default_value = "purchase")]
    pub purchase_event: String,
}

impl LifecycleOptions {
    /// The stage thresholds.
    pub fn thresholds(&self) -> Result<Thresholds> {
        Ok(Thresholds {
            tenure: Thresholds::parse_axis(&self.tenure_days)?,
            activity: Thresholds::parse_axis(&self.activity_days)?,
        })
    }

    /// Checks the period without data.
    pub fn validate_period(&self) -> Result<()> {
        let _: crate::calendar::Period = self.period.parse()?;
        Ok(())
    }

    /// Checks the stage thresholds; on error, names the option at fault.
    pub fn validate_thresholds(&self) -> Result<(), (&'static str, EngineError)> {
        Thresholds::parse_axis(&self.tenure_days).map_err(|e| ("tenure_days", e))?;
        Thresholds::parse_axis(&self.activity_days).map_err(|e| ("activity_days", e))?;
        Ok(())
    }
}

/// What to compute: the flags of `tenure kpi`, and the keys of a
/// `kind = "kpi"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiOptions {
    /// Reporting period: week or month (or day).
    #[arg(long, default_value = "month")]
    pub period: String,
    /// Window of first-order conversion (first signup event to first
    /// purchase), in days.
    #[arg(long, default_value_t = 7)]
    pub conversion_days: i64,
    /// Name of the purchase event.
    #[arg(long, default_value = "purchase")]
    pub purchase_event: String,
    /// The event first-order conversion counts from: users who did it at
    /// least --conversion-days before the data's end are the denominator.
    #[arg(long, default_value = SIGNUP)]
    #[serde(default = "default_signup")]
    pub signup_event: String,
    /// Every KPI per group: the value of these properties at each user's
    /// first event in range (columns or keys of the events' properties;
    /// several nest: country,variant).
    #[arg(long, value_name = "PROPERTY[,PROPERTY...]")]
    pub by: Option<String>,
}

/// The default signup event of first-order conversion.
pub const SIGNUP: &str = "signup";

fn default_signup() -> String {
    SIGNUP.into()
}

impl KpiOptions {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        let _: crate::calendar::Period = self.period.parse()?;
        Ok(())
    }
}

/// What to compute: the flags of `tenure funnel`, and the keys of a
/// `kind = "funnel"` analysis in a job file (where `steps` may also be a list).
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelOptions {
    /// Steps, comma-separated, each `event`, `event where <SQL condition>` or
    /// an any-order group `{event, event, ...}`, then optionally `within D`
    /// and `after D` (most / least time since the previous step) and `?`
    /// (an optional step): "view_item, add_to_cart within 1h, checkout after
    /// 1m within 30m, purchase".
    #[arg(long, value_name = "STEPS")]
    #[serde(deserialize_with = "steps_text")]
    pub steps: String,
    /// Window from the step-1 event: a number and s, m, h, d or w (e.g. 7d).
    #[arg(long, default_value = WINDOW)]
    #[serde(default = "default_window")]
    pub window: String,
    /// Modes, comma-separated: default, strict_order, strict_increase,
    /// strict_deduplication, first_touch.
    #[arg(long, default_value = MODE)]
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Break down by a property's value at the step-1 event: a column
    /// (variant, a declared property) or any key of the events' properties;
    /// several give nested groups (country,variant).
    #[arg(long, value_name = "PROPERTY[,PROPERTY...]")]
    #[serde(default)]
    pub by: Option<String>,
    /// An event that must not happen between two steps: `event[:FROM-TO]`
    /// (steps 1-based; default between the first and the last step; a chain
    /// that skips an optional step inside FROM-TO is blocked too).
    /// Repeatable.
    #[arg(long, value_name = "EVENT[:FROM-TO]")]
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Every step of a chain must have the same value of this column
    /// (e.g. item_id).
    #[arg(long, value_name = "COLUMN")]
    #[serde(default)]
    pub hold: Option<String>,
    /// Break down by a segment instead: users in it vs not (segment language,
    /// see `tenure segment`), evaluated as of each user's entry (their first
    /// step-1 event in range) over their events before it, so the funnel's
    /// own purchases never put a user in `F >= 1`. Scores, means and
    /// predictions (`@champions`) rank the whole population at one instant:
    /// they are read as of --from, before every entry (--from is then needed).
    #[arg(long, value_name = "EXPR", conflicts_with = "by")]
    #[serde(default)]
    pub by_segment: Option<String>,
    /// Segment files defining @names for --by-segment (repeatable).
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub segments: Vec<String>,
    /// Print the time-to-convert histogram instead of the steps.
    #[arg(long)]
    #[serde(default)]
    pub histogram: bool,
}

const WINDOW: &str = "7d";
const MODE: &str = "default";

fn default_window() -> String {
    WINDOW.into()
}

fn default_mode() -> String {
    MODE.into()
}

/// `steps` in a job file: the flag's comma-separated text, or a list of steps.
fn steps_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Steps {
        Text(String),
        List(Vec<String>),
    }
    Ok(match serde::Deserialize::deserialize(d)? {
        Steps::Text(s) => s,
        Steps::List(v) => v.join(","),
    })
}

impl FunnelOptions {
    /// Checks the window without data.
    pub fn validate_window(&self) -> Result<()> {
        parse_window(&self.window).map(|_| ())
    }

    /// Checks the modes without data.
    pub fn validate_mode(&self) -> Result<()> {
        Modes::parse(&self.mode)?;
        Ok(())
    }

    /// Checks the step list's shape without data.
    pub fn validate_steps(&self) -> Result<()> {
        crate::funnel::syntax::check_steps(&self.steps).map(|_| ())
    }
}

/// What to count: the expression and options of `tenure segment`, and the keys
/// of a `kind = "segment"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentOptions {
    /// The segment expression.
    pub expr: String,
    /// Segment files defining @names (repeatable).
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub segments: Vec<String>,
    /// Name of the purchase event.
    #[arg(long, default_value = PURCHASE)]
    #[serde(default = "purchase")]
    pub purchase_event: String,
}

const PURCHASE: &str = "purchase";

fn purchase() -> String {
    PURCHASE.into()
}

/// What to compute: the flags of `tenure rfm`, and the keys of a
/// `kind = "rfm"` analysis in a job file.
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RfmOptions {
    /// Segment set files (default: queries/rfm_segments.seg, the English set).
    #[arg(long, value_name = "FILE")]
    pub segments: Vec<String>,
    /// Name of the purchase event.
    #[arg(long, default_value = PURCHASE)]
    pub purchase_event: String,
    /// Only purchases in this window before the as-of count (`365d`, `52w`):
    /// R, F and M, the scores and the customers are those of the window.
    /// `--from DATE` sets the window's start instead.
    #[arg(long, value_name = "DURATION")]
    pub lookback: Option<String>,
    /// Fixed R scores instead of quintiles: four ascending day counts
    /// `t1,t2,t3,t4`; R <= t1 scores 5, <= t2 4, <= t3 3, <= t4 2, else 1
    /// (e.g. 7,30,90,180).
    #[arg(long, value_name = "DAYS")]
    pub r_thresholds: Option<String>,
    /// Fixed F scores: four ascending purchase counts; F <= t1 scores 1,
    /// <= t2 2, <= t3 3, <= t4 4, else 5 (e.g. 1,2,3,5).
    #[arg(long, value_name = "COUNTS")]
    pub f_thresholds: Option<String>,
    /// Fixed M scores: four ascending amounts (up to two decimals); M <= t1
    /// scores 1, ..., > t4 5 (e.g. 50,100,250,500).
    #[arg(long, value_name = "AMOUNTS")]
    pub m_thresholds: Option<String>,
}

impl RfmOptions {
    /// The scoring rule: quintiles, or the thresholds given per metric.
    pub fn scoring(&self) -> Result<crate::features::Scoring> {
        self.validate().map_err(|(_, e)| e)?;
        self.keyed_scoring().map_err(|(_, e)| e)
    }

    /// Checks the window and thresholds without data; an error names the
    /// job file key at fault.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, EngineError)> {
        self.lookback_us().map_err(|e| ("lookback", e))?;
        self.keyed_scoring().map(|_| ())
    }

    fn keyed_scoring(
        &self,
    ) -> std::result::Result<crate::features::Scoring, (&'static str, EngineError)> {
        let count = |v: &str| v.parse::<i64>().ok().filter(|&n| n >= 0);
        let keyed = |key: &'static str| move |e| (key, e);
        Ok(crate::features::Scoring {
            recency_days: self
                .r_thresholds
                .as_deref()
                .map(|t| thresholds("--r-thresholds", t, count))
                .transpose()
                .map_err(keyed("r_thresholds"))?,
            frequency: self
                .f_thresholds
                .as_deref()
                .map(|t| thresholds("--f-thresholds", t, count))
                .transpose()
                .map_err(keyed("f_thresholds"))?,
            monetary_cents: self
                .m_thresholds
                .as_deref()
                .map(|t| thresholds("--m-thresholds", t, cents))
                .transpose()
                .map_err(keyed("m_thresholds"))?,
        })
    }

    /// The lookback window in microseconds, if given.
    pub fn lookback_us(&self) -> Result<Option<i64>> {
        self.lookback
            .as_deref()
            .map(|l| {
                parse_window(l).map_err(|e| {
                    EngineError::BadRequest(format!("--lookback: {}", e.to_string().trim()))
                })
            })
            .transpose()
    }
}

/// Four strictly ascending thresholds `t1,t2,t3,t4`, each parsed by `one`.
fn thresholds<T: PartialOrd + Copy + Default>(
    flag: &str,
    text: &str,
    one: impl Fn(&str) -> Option<T>,
) -> Result<[T; 4]> {
    let bad = |why: &str| {
        EngineError::BadRequest(format!(
            "{flag} {text}: {why}; expected four ascending numbers t1,t2,t3,t4 (e.g. 1,2,3,5)"
        ))
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(bad(&format!("{} values", parts.len())));
    }
    let mut out = [T::default(); 4];
    for (slot, p) in out.iter_mut().zip(&parts) {
        *slot = one(p).ok_or_else(|| bad(&format!("`{p}` is not a number of 0 or more")))?;
    }
    if out.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("not strictly ascending"));
    }
    Ok(out)
}

/// An amount of 0 or more with up to two decimals, in cents.
fn cents(text: &str) -> Option<i128> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let frac: i128 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

/// The readout asked for: the flags of `tenure abtest` that are not about
/// where the data is, and the keys of a `kind = "abtest"` analysis in a job
/// file (`metrics = ["count:purchase", "sum:revenue"]`).
#[derive(clap::Args, Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AbtestOptions {
    /// Column whose value names a user's arm.
    #[arg(long, value_name = "COLUMN", default_value = BY)]
    #[serde(default = "default_by")]
    pub by: String,
    /// A metric: count:<event>, sum:<column>, segment:<expr> or
    /// funnel:<a>b>c> within <duration> (repeatable).
    #[arg(
        long = "metric",
        value_name = "SPEC",
        required_unless_present = "from_summary"
    )]
    pub metrics: Vec<String>,
    /// The control arm (default: the first arm).
    #[arg(long, value_name = "ARM")]
    #[serde(default)]
    pub control: Option<String>,
    /// Expected traffic split, one weight per arm in arm order (default: equal).
    #[arg(long, value_name = "WEIGHTS")]
    #[serde(default)]
    pub split: Option<String>,
    /// relative (lift, the default) or absolute (treatment minus control).
    #[arg(long, value_name = "KIND", default_value = DIFFERENCE)]
    #[serde(default = "default_difference")]
    pub difference: String,
    /// Alternative hypothesis: two, greater or less.
    #[arg(long, value_name = "SIDE", default_value = SIDED)]
    #[serde(default = "default_sided")]
    pub sided: String,
    /// Sequential testing (confidence sequences, valid under peeking), tuned for
    /// N* total users (default N* 5000).
    #[arg(long, value_name = "N*", num_args = 0..=1, default_missing_value = "5000")]
    #[serde(default)]
    pub sequential: Option<f64>,
    /// Add the Bayesian chance to win and risk (flat prior, unless
    /// --prior-mean/--prior-stddev give one).
    #[arg(long)]
    #[serde(default)]
    pub bayesian: bool,
    /// Only users matching this segment expression as of their exposure (R,
    /// F, M, lifecycle, properties, `did` counts and first/last seen `within`
    /// on their events before it, windows ending at it) are in the test, e.g.
    /// 'F >= 1' for returning buyers.
    #[arg(long, value_name = "EXPR")]
    #[serde(default)]
    pub population: Option<String>,
    /// Read every metric per value of this column (a user's value on their
    /// events since exposure): the 20 values with the most users, then
    /// `(other)`, `(several)` (users with more than one value) and `(none)`;
    /// each with its own sample-ratio check (column `dimension`).
    #[arg(long, value_name = "COLUMN")]
    #[serde(default)]
    pub by_dimension: Option<String>,
    /// CUPED: adjust count: and sum: metrics by the same metric over this many
    /// days before each user's exposure (regression adjustment, GrowthBook's
    /// pooled theta); other metrics are read unadjusted.
    #[arg(long, value_name = "DAYS")]
    #[serde(default)]
    pub cuped: Option<u32>,
    /// Mean of a proper Gaussian prior on the effect (on the scale of
    /// --difference: 0.02 = a 2% lift); implies --bayesian. GrowthBook's
    /// informative prior.
    #[arg(
        long,
        value_name = "M",
        requires = "prior_stddev",
        allow_negative_numbers = true
    )]
    #[serde(default)]
    pub prior_mean: Option<f64>,
    /// Standard deviation of that prior (> 0; 0.1 = most lifts within ±20%).
    #[arg(long, value_name = "S", requires = "prior_mean")]
    #[serde(default)]
    pub prior_stddev: Option<f64>,
    /// Multiple-testing correction across metrics and arms: none, holm or bh.
    #[arg(long, value_name = "METHOD", default_value = CORRECTION)]
    #[serde(default = "default_correction")]
    pub correction: String,
    /// Significance level (the CI covers 1 - alpha).
    #[arg(long, default_value_t = ALPHA)]
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Segment files defining @names for segment: metrics (repeatable).
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub segments: Vec<String>,
    /// Name of the purchase event (R, F, M in segment: metrics).
    #[arg(long, value_name = "EVENT", default_value = PURCHASE)]
    #[serde(default = "default_purchase")]
    pub purchase_event: String,
}

const BY: &str = "variant";
const DIFFERENCE: &str = "relative";
const SIDED: &str = "two";
const CORRECTION: &str = "none";
const ALPHA: f64 = 0.05;

fn default_by() -> String {
    BY.into()
}
fn default_difference() -> String {
    DIFFERENCE.into()
}
fn default_sided() -> String {
    SIDED.into()
}
fn default_correction() -> String {
    CORRECTION.into()
}
fn default_alpha() -> f64 {
    ALPHA
}
fn default_purchase() -> String {
    PURCHASE.into()
}

impl AbtestOptions {
    /// Checks the settings and metric specs without data; on error, names
    /// the option at fault.
    pub fn validate(&self) -> Result<(), (&'static str, EngineError)> {
        fn at<E: std::fmt::Display>(
            key: &'static str,
        ) -> impl Fn(E) -> (&'static str, EngineError) {
            move |e| (key, EngineError::BadRequest(e.to_string()))
        }
        if self.metrics.is_empty() {
            return Err((
                "metrics",
                EngineError::BadRequest(
                    "an A/B readout needs at least one metric, e.g. metrics = [\"count:purchase\"]"
                        .into(),
                ),
            ));
        }
        for m in &self.metrics {
            crate::abtest::parse_metric(m).map_err(|e| ("metrics", e))?;
        }
        tenure_stats::Alpha::new(self.alpha).map_err(at("alpha"))?;
        self.difference
            .parse::<tenure_stats::Difference>()
            .map_err(at("difference"))?;
        self.sided
            .parse::<tenure_stats::Sided>()
            .map_err(at("sided"))?;
        self.sequential
            .map(tenure_stats::TuningParameter::new)
            .transpose()
            .map_err(at("sequential"))?;
        self.correction
            .parse::<tenure_stats::Correction>()
            .map_err(at("correction"))?;
        if let Some(split) = &self.split {
            tenure_stats::parse_split(split).map_err(at("split"))?;
        }
        self.prior().map_err(|e| ("prior_stddev", e))?;
        if self.cuped == Some(0) {
            return Err((
                "cuped",
                EngineError::BadRequest(
                    "--cuped 0: the pre-exposure window needs at least one day".into(),
                ),
            ));
        }
        Ok(())
    }
}

/// `event = name AND (sql)` over the events table: a start, return or counted
/// event condition as the flags give it (`--start-event`, `--start-where`).
pub async fn condition(
    events: &crate::Events,
    event: Option<&str>,
    sql: Option<&str>,
) -> Result<Option<datafusion::logical_expr::Expr>> {
    use datafusion::logical_expr::{col, lit};
    let mut e = event.map(|n| col("event").eq(lit(n.to_string())));
    if let Some(sql) = sql {
        let df = events.ctx.table("events").await?;
        let parsed = events
            .ctx
            .parse_sql_expr(sql, df.schema())
            .map_err(|err| EngineError::BadRequest(format!("bad condition `{sql}`: {err}")))?;
        e = Some(match e {
            Some(e) => e.and(parsed),
            None => parsed,
        });
    }
    Ok(e)
}

impl RetentionOptions {
    /// The retention this request asks for over `events`, with dates in `tz`
    /// and cells after `as_of` incomplete.
    pub async fn spec(
        &self,
        events: &crate::Events,
        tz: chrono_tz::Tz,
        as_of: Option<i64>,
    ) -> Result<crate::retention::RetentionSpec> {
        Ok(crate::retention::RetentionSpec {
            period: self.period.parse()?,
            tz,
            start: condition(
                events,
                self.start_event.as_deref(),
                self.start_where.as_deref(),
            )
            .await?,
            ret: condition(
                events,
                self.return_event.as_deref(),
                self.return_where.as_deref(),
            )
            .await?,
            mode: crate::retention::Mode::parse(&self.mode, self.brackets.as_deref())?,
            as_of,
            by: self.by.clone(),
            read: self.read.as_deref().map(str::parse).transpose()?,
            revenue: match self.value.as_deref() {
                None | Some("users") => false,
                Some("revenue") => true,
                Some(other) => {
                    return Err(EngineError::BadRequest(format!(
                        "--value {other}: expected users (the default) or revenue"
                    )));
                }
            },
        })
    }
}

impl LtvOptions {
    /// The cohorts whose cumulative revenue this request asks for: the
    /// retention request with the same start (any return, n-day, no
    /// breakdown).
    pub async fn spec(
        &self,
        events: &crate::Events,
        tz: chrono_tz::Tz,
        as_of: Option<i64>,
    ) -> Result<crate::retention::RetentionSpec> {
        let cohorts = RetentionOptions {
            period: self.period.clone(),
            start_event: self.start_event.clone(),
            start_where: self.start_where.clone(),
            by: self.by.clone(),
            ..Default::default()
        };
        cohorts.spec(events, tz, as_of).await
    }
}

impl StickinessOptions {
    /// The stickiness this request asks for.
    pub async fn spec(
        &self,
        events: &crate::Events,
        tz: chrono_tz::Tz,
        as_of: Option<i64>,
    ) -> Result<crate::stickiness::StickinessSpec> {
        self.validate()?;
        Ok(crate::stickiness::StickinessSpec {
            period: self.period.parse()?,
            tz,
            condition: condition(events, self.event.as_deref(), self.where_.as_deref()).await?,
            as_of,
        })
    }
}

impl KpiOptions {
    /// The KPIs this request asks for, reported in `tz`.
    pub fn spec(&self, tz: chrono_tz::Tz) -> Result<crate::kpi::KpiSpec> {
        Ok(crate::kpi::KpiSpec {
            period: self.period.parse()?,
            tz,
            purchase: crate::userstats::PurchaseSpec {
                event: self.purchase_event.clone(),
            },
            conversion_days: self.conversion_days.max(0),
            signup: self.signup_event.clone(),
        })
    }
}

impl FunnelOptions {
    /// The funnel this request asks for over `events`, users entering in
    /// `from..to` (UTC µs; the events must reach a window past `to`).
    pub fn spec(
        &self,
        events: &crate::Events,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<crate::funnel::FunnelSpec> {
        use crate::funnel::syntax;
        let steps = syntax::parse_steps(events, &self.steps)?;
        let exclusions = self
            .exclude
            .iter()
            .map(|x| syntax::parse_exclusion(events, x, steps.len()))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::funnel::FunnelSpec {
            steps,
            window_us: parse_window(&self.window)?,
            modes: Modes::parse(&self.mode)?,
            exclusions,
            by: self.by.clone(),
            user_groups: None,
            hold: self.hold.clone(),
            entry_from: from,
            entry_to: to,
        })
    }
}

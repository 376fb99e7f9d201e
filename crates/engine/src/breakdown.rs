//! Breakdowns: each user's value of a column at their first start event, so a
//! cohort can be split by, for example, `country` or `variant` as it was when
//! the user arrived (see `retention::RetentionFold`, which finds it in the
//! same pass as the cohorts).

/// Label of users whose value is null.
pub const NONE_LABEL: &str = "(none)";

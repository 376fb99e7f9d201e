//! One module per subcommand; each holds its clap `Args` (whose doc comments are
//! the help text) and a `run` function.

pub mod abtest;
pub mod cluster;
pub mod clv;
pub mod common;
pub mod compact;
pub mod completions;
pub mod funnel;
pub mod generate;
pub mod ingest;
pub mod kpi;
pub mod lifecycle;
pub mod ltv;
pub mod paths;
pub mod repair;
pub mod retention;
pub mod run;
pub mod segment;
pub mod sql;
pub mod sql_server;
pub mod stickiness;

//! Tenure's analytics engine on DataFusion (retention, funnels, RFM, lifecycle,
//! KPIs). Work starts with issue 3; the crate exists now so the workspace's
//! dependency graph (and its one DataFusion build) is in place.

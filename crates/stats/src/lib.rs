//! A/B test statistics for Tenure (work in progress: see issue 6).

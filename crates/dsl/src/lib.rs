//! Tenure's segment language (work in progress: see issue 5).

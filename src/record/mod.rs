//! What a run observed and the pure math over it: events, raw records, summaries, statistics, SLOs.

pub mod event;
pub mod metrics;
pub mod records;
pub mod slo;
pub mod stats;
pub mod summary;

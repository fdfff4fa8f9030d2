//! Running benchmarks: prepare and execute one load point, drive sweeps and searches, slots, the aggregator, the preflight.

pub mod aggregator;
pub mod drive;
pub mod preflight;
pub mod run;
pub mod search;
pub mod slot;

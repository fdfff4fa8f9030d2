//! What a run leaves behind: tables, results documents (runs and sweeps), files, charts, and reading them back.

pub mod document;
pub mod files;
pub mod plot;
pub mod report;
pub mod results;
pub mod sweep;

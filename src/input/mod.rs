//! Where the traffic comes from: the workload file (and its dataset aliases) and Hub downloads.

pub mod hub;
pub mod workload;

//! The one error type of the crate and its mapping to exit codes.
//!
//! A bad flag, workload row, file or URL is a [`Error::Usage`] (exit 2, nothing
//! sent to the server); a run that cannot proceed (unreachable endpoint, failed
//! preflight) is a [`Error::Run`] (exit 1). Failed *requests* are not errors at
//! all: they are data, counted by kind in the summary.

use std::fmt;

/// What stopped trie before or instead of a benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad input from the user: flags, workload, tokenizer, URL. Exit code 2.
    Usage(String),
    /// The run could not start or finish (endpoint unreachable, I/O). Exit code 1.
    Run(String),
    /// Ctrl+C / SIGTERM before the clock started. Exit code 130.
    Interrupted,
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Run(_) => 1,
            Error::Interrupted => 130,
        }
    }

    /// Shorthand for a usage error.
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    /// Shorthand for a run error.
    pub fn run(msg: impl Into<String>) -> Error {
        Error::Run(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Messages can quote a server; no registered secret is shown.
            Error::Usage(m) | Error::Run(m) => f.write_str(&crate::redact::clean(m)),
            Error::Interrupted => f.write_str("interrupted before the run started"),
        }
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The text of a caught panic, on one line and without secrets.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let raw = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string());
    crate::redact::one_line(&raw)
}

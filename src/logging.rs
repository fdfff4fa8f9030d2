//! The binary's logger: env_logger's `RUST_LOG` filter (default `info`),
//! trie's `[level    ] message` format, printed through [`crate::term`] (so
//! records never tear the progress line) after [`crate::redact::clean`] (so
//! no registered secret is printed, whatever a server echoed). ureq's trace
//! level dumps the bytes on the wire, the Authorization header included, and
//! tokenizers' traces every character: their trace records are dropped
//! whatever `RUST_LOG` asks.

/// Targets whose trace records never pass.
const HELD_BACK: [&str; 3] = ["ureq", "ureq_proto", "tokenizers"];

/// Whether a record of `target` at `level` is held back.
pub fn held_back(target: &str, level: log::Level) -> bool {
    level == log::Level::Trace
        && HELD_BACK.iter().any(|p| {
            target
                .strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

struct Guarded(env_logger::Logger);

impl log::Log for Guarded {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !held_back(m.target(), m.level()) && self.0.enabled(m)
    }

    fn log(&self, r: &log::Record) {
        if !held_back(r.target(), r.level()) && self.0.matches(r) {
            crate::term::line(&format_record(r.level(), &r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// One record as printed: `[warn     ] message`, secrets removed.
pub fn format_record(level: log::Level, message: &str) -> String {
    format!(
        "[{:<9}] {}",
        level.as_str().to_lowercase(),
        crate::redact::clean(message)
    )
}

/// Install the logger (once per process).
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Guarded(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_dumps_are_held_back() {
        use log::Level::{Debug, Trace};
        assert!(held_back("ureq_proto::util", Trace));
        assert!(held_back("ureq", Trace));
        assert!(held_back("tokenizers::models::bpe", Trace));
        assert!(!held_back("ureq_proto::util", Debug));
        assert!(!held_back("ureqx", Trace));
        assert!(!held_back("trie::slot", Trace));
    }

    #[test]
    fn records_are_formatted_without_secrets() {
        crate::redact::register("sk-logging-test-1");
        assert_eq!(
            format_record(log::Level::Warn, "echo: sk-logging-test-1"),
            "[warn     ] echo: <redacted>"
        );
    }
}

//! The binary's logger: env_logger (`RUST_LOG`, default `info`) in trie's
//! `[level    ] message` format, behind a guard. ureq's trace level dumps the
//! bytes on the wire, the Authorization header included, and tokenizers'
//! traces every character: their trace records are dropped whatever
//! `RUST_LOG` asks, so no secret can reach a log.

use std::io::Write;

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
        if self.enabled(r.metadata()) {
            self.0.log(r);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Install the logger (once per process).
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format(|f, record| {
                writeln!(
                    f,
                    "[{:<9}] {}",
                    record.level().as_str().to_lowercase(),
                    record.args()
                )
            })
            .build();
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
}

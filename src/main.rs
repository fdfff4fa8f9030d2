//! The `trie` binary: logger, parse, run, exit code. Everything else lives in
//! the library crate.

use std::sync::atomic::{AtomicUsize, Ordering};

use trie::cli::{self, Command};
use trie::stop::Stop;
use trie::term;

fn main() {
    // SAFETY: the first thing main does; no other thread runs yet.
    unsafe { trie::limits::tune_allocator() };
    trie::logging::init();
    // A panic is a bug in trie: reported through the printer (so it does not
    // tear the progress line), with its secrets removed.
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error (a bug in trie): {info}");
    }));
    let code =
        std::panic::catch_unwind(|| match cli::parse(std::env::args_os().skip(1).collect()) {
            Ok((cmd, progress)) => execute(cmd, progress),
            Err(e) => fail(&e),
        })
        .unwrap_or(1);
    std::process::exit(code);
}

/// Print `e` and return its exit code.
fn fail(e: &trie::Error) -> i32 {
    term::line(&format!("error: {e}"));
    e.exit_code()
}

/// The process's stop token, set by the first Ctrl+C / SIGTERM; a second
/// one exits at once.
fn interrupts() -> Stop {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let stop = Stop::new();
    let on_signal = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if SEEN.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        on_signal.trigger();
    });
    stop
}

/// Print `text` on stdout; exit 1 when stdout is closed or full.
fn print(text: &str) -> i32 {
    match term::stdout(text) {
        Ok(()) => 0,
        Err(e) => {
            term::line(&format!("error: cannot write to standard output: {e}"));
            1
        }
    }
}

fn print_or_fail(r: trie::Result<String>) -> i32 {
    match r {
        Ok(text) => print(&text),
        Err(e) => fail(&e),
    }
}

fn execute(cmd: Command, progress: bool) -> i32 {
    match cmd {
        Command::Print(text) => print(&text),
        Command::Report(path) => print_or_fail(trie::output::document::report_file(&path)),
        Command::Compare(paths) => print_or_fail(trie::output::document::compare_files(&paths)),
        Command::Plot(path, dir) => print_or_fail(trie::output::document::plot_file(&path, &dir)),
        Command::Sim(config) => {
            let stop = interrupts();
            match trie::sim::Sim::start(*config) {
                Ok(sim) => {
                    let code = print(&format!("listening on {}\n", sim.url()));
                    if code == 0 {
                        let _ = stop.receiver().recv();
                    }
                    sim.stop();
                    code
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run(config) if config.is_sweep() => {
            let hooks = trie::exec::run::Hooks {
                interrupt: interrupts(),
                progress,
                on_trace: None,
            };
            match trie::exec::drive::run(&config, &hooks) {
                Ok(out) => {
                    let tables = trie::output::sweep::tables(&out.doc);
                    let printed = if trie::output::files::any_is_stdout(&config.files) {
                        term::line(tables.trim_end());
                        0
                    } else {
                        print(&tables)
                    };
                    for e in &out.file_errors {
                        term::line(&format!("error: {e}"));
                    }
                    let completed: u64 = out
                        .doc
                        .runs
                        .iter()
                        .map(|r| r.results.summary.completed_requests)
                        .sum();
                    if out.doc.interrupted {
                        130
                    } else if completed == 0 || !out.file_errors.is_empty() || printed != 0 {
                        1
                    } else {
                        0
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Run(config) => {
            let hooks = trie::exec::run::Hooks {
                interrupt: interrupts(),
                progress,
                on_trace: None,
            };
            match trie::exec::run::run(&config, &hooks) {
                Ok(summary) => {
                    let tables = format!("{}\n", trie::output::report::tables(&summary));
                    let printed = if trie::output::files::any_is_stdout(&config.files) {
                        term::line(tables.trim_end());
                        0
                    } else {
                        print(&tables)
                    };
                    for e in &summary.file_errors {
                        term::line(&format!("error: {e}"));
                    }
                    if summary.interrupted {
                        130
                    } else if summary.completed_requests == 0
                        || !summary.file_errors.is_empty()
                        || printed != 0
                    {
                        1
                    } else {
                        0
                    }
                }
                Err(e) => fail(&e),
            }
        }
    }
}

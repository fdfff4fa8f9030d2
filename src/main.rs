//! The `trie` binary: logger, parse, run, exit code. Everything else lives in
//! the library crate.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use trie::cli::{self, Command};

fn main() {
    trie::logging::init();
    std::process::exit(match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok((cmd, progress)) => execute(cmd, progress),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    });
}

/// A channel that receives on the first Ctrl+C / SIGTERM; a second one exits at once.
fn interrupts() -> crossbeam_channel::Receiver<()> {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let _ = ctrlc::set_handler(move || {
        if SEEN.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        let _ = tx.try_send(());
    });
    rx
}

fn print_or_fail(r: trie::Result<String>) -> i32 {
    match r {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn execute(cmd: Command, progress: bool) -> i32 {
    match cmd {
        Command::Print(text) => {
            print!("{text}");
            0
        }
        Command::Report(path) => print_or_fail(trie::results::report_file(&path)),
        Command::Compare(paths) => print_or_fail(trie::results::compare_files(&paths)),
        Command::Sim(config) => {
            let stop = interrupts();
            match trie::sim::Sim::start(*config) {
                Ok(sim) => {
                    println!("listening on {}", sim.url());
                    let _ = std::io::stdout().flush();
                    let _ = stop.recv();
                    sim.stop();
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            }
        }
        Command::Run(config) => {
            let hooks = trie::run::Hooks {
                interrupt: Some(interrupts()),
                progress,
            };
            match trie::run::run(&config, &hooks) {
                Ok(summary) => {
                    println!("{}", trie::report::tables(&summary));
                    for e in &summary.file_errors {
                        eprintln!("error: {e}");
                    }
                    if summary.interrupted {
                        130
                    } else if summary.completed_requests == 0 || !summary.file_errors.is_empty() {
                        1
                    } else {
                        0
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            }
        }
    }
}

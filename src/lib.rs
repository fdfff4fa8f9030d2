//! trie — trace replay inference evaluation.
//!
//! trie replays agentic traces (token-length templates in JSONL: a prompt, then
//! turns of model answer + tool output over a growing context) against an
//! OpenAI-compatible `/v1/completions` endpoint, with synthetic text of exactly
//! the right token counts, and measures per-trace latency, TTFT, time to first
//! answer token, decode speed, inter-token latency, cache hit rates and workload
//! token throughput.
//!
//! # Example
//!
//! The Rust counterpart of the Python version's `Client(...).sync_run(...)`:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let summary = trie::Config::new("data/agentic.jsonl", "http://localhost:8000/v1")?
//!     .model("deepseek-ai/DeepSeek-V3")
//!     .concurrency(8)
//!     .duration(Duration::from_secs(180))
//!     .num_gpus(4)
//!     .run()?;
//! println!("{}", trie::report::tables(&summary));
//! if let Some(steady) = summary.steady_state {
//!     println!("steady-state completion tok/s: {:.1}", steady.completion_tok_per_s);
//! }
//! # Ok::<(), trie::Error>(())
//! ```
//!
//! # Bird's-eye view
//!
//! ```text
//! feeder ──Job{seq, template}──▶ crossbeam channel ──▶ slot 1..N (OS threads, blocking ureq, SSE)
//!                                                         │  │ reply texts ⇄ counts
//!                                                         │  └──▶ tokenizer workers (one per core)
//!                                                         │  Event (timestamps, usage, failures)
//!                                                         ▼
//!                                                   aggregator thread (owns all metrics state)
//!                                                         │ ├─▶ --events JSONL, a whole line per request
//!                                                         │ at the deadline / on Ctrl+C / SIGTERM
//!                                                         ▼
//!                                                   Summary ──▶ tables · key=value line (one printer)
//!                                                         └──▶ Results ──▶ --output JSON · --csv · --output-metrics
//! ```
//!
//! Before anything is sent, [`run::run`] validates everything that can be
//! wrong with the input: flags and workload rows against their bounds
//! ([`limits`]), the tokenizer, and every output path ([`files`]: resolved,
//! probed, compared with the inputs); it raises the open-file limit to what
//! the run needs. Then the [`preflight`] (model listed, one tiny completion:
//! unreachable or failing servers stop here, shortcomings become warnings).
//! Then one thread per slot takes jobs from the feeder, builds all synthetic
//! text of its trace, and runs the trace turn by turn with its own HTTP agent;
//! replies are counted on the tokenizer's worker threads. At the deadline the
//! run's [`stop::Stop`] is set: the feeder stops, every slot's agent is shut
//! down (which interrupts every blocked read at once), and the measured
//! window ends; the files are written when every slot has returned.
//!
//! # Codemap
//!
//! - [`cli`] — flags and `key=value` words → [`Config`] / [`sim::SimConfig`].
//! - [`config`] — the validated run configuration, also the builder API.
//! - [`limits`] — the bound of every value; open files; the allocator (the
//!   binary restarts itself once without glibc's per-thread cache).
//! - [`workload`] — JSONL loading and validation, dataset aliases.
//! - [`tokenizer`], [`hub`] — tokenizer resolution (file, dir, Hub cache,
//!   download), and the worker threads that count during a run.
//! - [`prompt`] — exact synthetic text: words that are one token each.
//! - [`client`] — the per-slot ureq agents and one request, streamed line by
//!   line, its end stamped at `[DONE]`, everything a server sends capped.
//! - [`transport`] — trie's TCP transport under ureq: one `read` per chunk,
//!   deadlines enforced by a watchdog thread that shuts the socket down.
//! - [`sse`] — pure parsing of SSE lines and completion chunks.
//! - [`slot`] — a worker thread running traces; request bodies; context counts.
//! - [`event`] — the messages slots send.
//! - [`aggregator`] — the one owner of metric state: events → [`records`].
//! - [`records`] — the raw rows of a run (traces, requests, failed
//!   attempts) and [`records::summarize`], the one pure function from rows
//!   to every figure (the aggregator and `trie report` both call it).
//! - [`metrics`] — pure math: percentiles, slopes, decode speed, ITL.
//! - [`stats`] — pure math over trials: Student-t intervals, cv.
//! - [`slo`] — the `--slo` grammar, verdicts and goodput (pure).
//! - [`summary`] — the one result type; [`report`] renders it (tables, figures,
//!   `trie compare`).
//! - [`sweep`] — many runs from one command: the sweep document and its
//!   per-point math, and [`sweep::search`] (the capacity bisection, pure).
//! - [`drive`] — runs a sweep or search: prepare once, every point and
//!   trial, the files after each run.
//! - [`plot`] — SVG charts and the self-contained HTML report (pure
//!   rendering).
//! - [`document`] — results documents read back (runs and sweeps) for
//!   `trie report`, `compare` and `plot`.
//! - [`preflight`] — the endpoint checks before the clock starts.
//! - [`stop`] — the stop token every blocking wait watches.
//! - [`term`] — the one printer of stdout and stderr.
//! - [`logging`] — the logger: through the printer, secrets removed, wire
//!   dumps held back.
//! - [`redact`] — the registered secrets and their removal from outside
//!   text, and the escaping of characters that would steer a terminal.
//! - [`results`] — rendering of the files: results document, CSV, event log
//!   lines, output metrics; [`files`] — where they go and how they are written.
//! - [`run`] — one benchmark from start to summary: [`run::prepare`] (once:
//!   inputs, outputs, sim, preflight), then [`run::execute`] (a load point,
//!   returning its results; the caller writes the files).
//! - [`sim`] — the simulated engine (`trie sim`).
//!
//! Layout: the crate is still flat files; the folders by concept proposed
//! for it as it grows are `cli/` (cli, config, limits), `input/` (workload,
//! hub), `text/` (prompt, tokenizer), `net/` (client, transport, sse,
//! preflight), `exec/` (run, drive, slot, event, aggregator, stop),
//! `record/` (records, metrics, stats, slo, summary), `output/` (report,
//! results, files, document, plot, term, logging, redact), `sweep/` and
//! `sim/` (already folders). No module imports one that imports it (a test
//! reads the sources and fails on a cycle).
//!
//! # Invariants
//!
//! - No async runtime; every thread is joined (slots and feeder in one
//!   `std::thread::scope`, the aggregator before [`run::run`] returns), with
//!   two exceptions that a stop must not wait for: a tokenizer worker still
//!   counting 200 ms after the run ends (a million-token reply), the
//!   workload's reader blocked on a FIFO when Ctrl+C comes, and the
//!   process's one deadline watchdog ([`transport`]), which lives as long
//!   as the process.
//! - Only the aggregator mutates metrics; slots send plain [`event::Event`]s.
//!   There is no lock on the token path, and no pool shared between slots.
//! - The timed path holds only I/O: the timestamp of a line is taken as soon as
//!   it is read, before parsing; no tokenizer call happens between a request's
//!   start and its end (replies are counted after, while the tool "runs").
//! - No panic ends a run: a panicking trace fails as `internal`, the run goes
//!   on, and every file is written; no value accepted by validation can
//!   overflow a clock or an allocation (every one is bounded in [`limits`]).
//! - No input, device or other result is ever overwritten: outputs are
//!   resolved and compared by device and inode before anything is sent.
//! - One Ctrl+C or SIGTERM stops trie within a second in every phase: every
//!   blocking wait watches a [`stop::Stop`] (a TCP connect, ureq's, is the
//!   one wait that does not: it is bounded by `--connect-timeout`).
//! - An absent figure is `None` (`null`, `–`), never 0.
//! - Secrets live in [`config::Secret`] (redacted `Debug`), are sent only in
//!   the `Authorization` header, and are removed by [`redact`] from every
//!   outside text and log record; files record `api_key_set` only.
//! - Synthetic text is a pure function of (seed, run of the sweep, trace
//!   sequence number, segment) and re-tokenizes to exactly the requested
//!   count; no two runs of a sweep send the same prompt.
//! - Every figure is computed from the raw records by one pure function;
//!   a results document read back gives the same figures to the bit.
//! - A failed request is data (counted by kind), never an error of the run.
//! - Memory is bounded by the slots, not the run's length, except the
//!   per-trace and per-request records the results keep.

pub mod aggregator;
pub mod cli;
pub mod client;
pub mod config;
pub mod document;
pub mod drive;
pub mod error;
pub mod event;
pub mod files;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod plot;
pub mod preflight;
pub mod prompt;
pub mod records;
pub mod redact;
pub mod report;
pub mod results;
pub mod run;
pub mod sim;
pub mod slo;
pub mod slot;
pub mod sse;
pub mod stats;
pub mod stop;
pub mod summary;
pub mod sweep;
pub mod term;
pub mod tokenizer;
pub mod transport;
pub mod workload;

pub use config::{Arrival, Config, Endpoint, LoadModel};
pub use error::{Error, Result};
pub use summary::Summary;

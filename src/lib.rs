//! trie — trace replay inference evaluation.
//!
//! trie replays agentic traces (token-length templates in JSONL: a prompt, then
//! turns of model answer + tool output over a growing context) against an
//! OpenAI-compatible endpoint — `/v1/completions`, `/v1/chat/completions`
//! (prompts counted through the model's own chat template) or
//! `/v1/embeddings` — with synthetic text of exactly the right token counts
//! (words, random tokens or natural text; optionally behind prefixes shared
//! across traces), and measures per-trace latency, TTFT, time to first
//! answer token, decode speed, inter-token latency, cache hit rates and
//! workload token throughput.
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
//! println!("{}", trie::output::report::tables(&summary));
//! if let Some(steady) = summary.steady_state {
//!     println!("steady-state completion tok/s: {:.1}", steady.completion_tok_per_s);
//! }
//! # Ok::<(), trie::Error>(())
//! ```
//!
//! # Bird's-eye view
//!
//! ```text
//! feeder ──Job{seq, template}──▶ crossbeam channel ──▶ slot 1..N (OS threads, blocking HTTP/1.1, SSE)
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
//! Before anything is sent, [`exec::run::run`] validates everything that can be
//! wrong with the input: flags and workload rows against their bounds
//! ([`limits`]), the tokenizer, and every output path ([`output::files`]: resolved,
//! probed, compared with the inputs); it raises the open-file limit to what
//! the run needs. Then the [`exec::preflight`] (model listed, one tiny completion:
//! unreachable or failing servers stop here, shortcomings become warnings).
//! Then one thread per slot takes jobs from the feeder, builds all synthetic
//! text of its trace, and runs the trace turn by turn with its own HTTP agent;
//! replies are counted on the tokenizer's worker threads. At the deadline the
//! run's [`stop::Stop`] is set: the feeder stops, every slot's agent is shut
//! down (which interrupts every blocked read at once), and the measured
//! window ends; the files are written when every slot has returned.
//!
//! A sweep (`--concurrency 1,2,4`, `--trials`, `--slo`) or a capacity search
//! (`trie capacity`) prepares once and calls [`exec::run::execute`] per run
//! from [`exec::drive`]: a fresh text key per run (no prompt of one run is in
//! the cache another left), an optional warm-up and cache reset before it,
//! the run's records summarized and judged against the SLOs after it, and
//! the one sweep document ([`output::sweep`]) written again after every run.
//!
//! # Codemap
//!
//! The crate is grouped by concept; each folder's module says what it
//! holds, and a file's name says what it does. Folders depend downwards in
//! this list (a test fails on any import cycle between top-level modules):
//!
//! - Primitives, flat: [`error`], [`limits`] (the bound of every value;
//!   open files; the allocator), [`stop`] (the stop token every blocking
//!   wait watches), [`redact`] (secrets out of outside text, terminal
//!   steering escaped), [`term`] (the one printer of stdout and stderr),
//!   [`logging`], [`config`] (the validated configuration, also the builder
//!   API) and [`cli`] (the table of flags → [`Config`] / [`sim::SimConfig`];
//!   `--help` is rendered from it).
//! - [`input`] — [`input::workload`] (JSONL loading and validation,
//!   dataset aliases) and [`input::hub`] (downloads).
//! - [`text`] — [`text::tokenizer`] (resolution, and the worker threads that
//!   count during a run), [`text::prompt`] (exact synthetic text: words
//!   that are one token each; shared prefixes), [`text::content`] (what a
//!   segment says: words, random tokens or natural text, each exact),
//!   [`text::chat`] (a model's chat template rendered as Hugging Face
//!   renders it) and [`text::conversation`] (a trace's growing chat and the
//!   exact count of its rendering, without tokenizing the context again).
//! - [`net`] — [`net::client`] (one client per slot; one request streamed
//!   line by line, its end stamped at `[DONE]`, everything a server sends
//!   capped), [`net::http1`] (trie's own HTTP/1.1 for plain-HTTP endpoints:
//!   one kept-alive connection per slot, chunked framing stripped in its one
//!   buffer; `https` goes through ureq), [`net::transport`] (the sockets
//!   under both: one `read` per chunk, deadlines enforced by a watchdog
//!   thread), [`net::sse`] (pure parsing of SSE lines and chunks) and
//!   [`net::scan`] (the small exact scanner for the common token chunk;
//!   anything else goes to serde).
//! - [`record`] — what a run observed, and the pure math over it:
//!   [`record::event`] (what slots send), [`record::records`] (the raw rows
//!   and [`record::records::summarize`], the one function from rows to every
//!   figure), [`record::summary`] (the result type), [`record::metrics`]
//!   (percentiles, slopes, decode speed), [`record::stats`] (Student-t over
//!   trials), [`record::slo`] (the `--slo` grammar, verdicts, goodput).
//! - [`output`] — what a run leaves: [`output::report`] (tables, figures,
//!   `trie compare`), [`output::results`] (the run's document, CSV, event
//!   lines), [`output::sweep`] (the sweep document and its per-point math),
//!   [`output::files`] (where files go and how they are written),
//!   [`output::plot`] (SVG charts, the HTML report) and
//!   [`output::document`] (documents read back for `report`, `compare`,
//!   `plot`).
//! - [`exec`] — running: [`exec::run`] ([`exec::run::prepare`] once:
//!   inputs, outputs, sim, preflight; then [`exec::run::execute`], one load
//!   point), [`exec::drive`] (sweeps and searches over `execute`),
//!   [`exec::search`] (the capacity bisection, pure), [`exec::slot`] (a
//!   worker thread running traces), [`exec::aggregator`] (the one owner of
//!   metric state) and [`exec::preflight`] (the checks before the clock,
//!   and cache resets).
//! - [`sim`] — the simulated engine (`trie sim`).
//!
//! # Invariants
//!
//! - No async runtime; every thread is joined (slots and feeder in one
//!   `std::thread::scope`, the aggregator before [`exec::run::run`] returns), with
//!   two exceptions that a stop must not wait for: a tokenizer worker still
//!   counting 200 ms after the run ends (a million-token reply), the
//!   workload's reader blocked on a FIFO when Ctrl+C comes, a lookup of the
//!   endpoint's host name that outlives `--connect-timeout` ([`net::http1`]),
//!   and the process's one deadline watchdog ([`net::transport`]), which
//!   lives as long as the process.
//! - Only the aggregator mutates metrics; slots send plain [`record::event::Event`]s.
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
//!   blocking wait watches a [`stop::Stop`] (a TCP connect or a host name
//!   lookup, ureq's or trie's own, is the one wait that does not: it is
//!   bounded by `--connect-timeout`).
//! - An absent figure is `None` (`null`, `–`), never 0.
//! - Secrets live in [`config::Secret`] (redacted `Debug`), are sent only in
//!   the `Authorization` header, and are removed by [`redact`] from every
//!   outside text and log record; files record `api_key_set` only.
//! - Synthetic text is a pure function of (seed, run of the sweep, trace
//!   sequence number, segment; a shared prefix: group) and re-tokenizes to
//!   exactly the requested count in every `--text` mode; no two runs of a
//!   sweep send the same prompt. A chat prompt's count is the rendering's
//!   count, never an estimate (or, when no template renders as the server
//!   does, a calibration the run records and warns about).
//! - Every figure is computed from the raw records by one pure function;
//!   a results document read back gives the same figures to the bit.
//! - A failed request is data (counted by kind), never an error of the run.
//! - Memory is bounded by the slots, not the run's length, except one row
//!   per started trace (about 100 bytes): the per-request rows wait in an
//!   unlinked temporary file until the run ends, and the progress line
//!   keeps 60 s of the token curve.

pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod input;
pub mod limits;
pub mod logging;
pub mod net;
pub mod output;
pub mod record;
pub mod redact;
pub mod sim;
pub mod stop;
pub mod term;
pub mod text;

pub use config::{Api, Arrival, Config, Endpoint, LoadModel};
pub use error::{Error, Result};
pub use record::summary::Summary;

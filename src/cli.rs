//! Command-line parsing. Every run flag is one entry of [`FLAGS`] (the
//! ripgrep `defs.rs` pattern): its long name, its Python-style word, its
//! section, help text, default and parser live together, and `trie --help`
//! is rendered from the table. Parsing has two stages: lexopt reads GNU
//! flags and `key=value` words, each flag's parser turns its text into a
//! typed raw value, then `Raw::into_config` checks how they combine and
//! builds a [`Config`]. Every error names the flag and the fix.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::config::{Api, Arrival, Config, Files, LoadModel, Search};
use crate::error::{Error, Result};
use crate::limits;
use crate::sim::SimConfig;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run a benchmark: one run, a sweep, or (with a search) `trie capacity`.
    Run(Box<Config>),
    /// Serve the simulated engine.
    Sim(Box<SimConfig>),
    /// Print the tables of a results file.
    Report(PathBuf),
    /// Print the headline figures of results files side by side.
    Compare(Vec<PathBuf>),
    /// Draw the charts of a results file into a directory.
    Plot(PathBuf, PathBuf),
    /// Print this text and exit 0.
    Print(String),
}

/// Which commands take a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `trie` and `trie capacity`.
    Both,
    /// `trie capacity` only.
    Capacity,
}

/// One run flag, everything about it in one place.
pub struct Flag {
    /// `--concurrency`.
    pub long: &'static str,
    /// `-q`, when it has one.
    pub short: Option<char>,
    /// The Python version's `key=` word, when it has one.
    pub py: Option<&'static str>,
    /// The value's name in help (`N`, `S`); `None`: a switch.
    pub value: Option<&'static str>,
    /// The help section.
    pub section: &'static str,
    /// Help text; `\n` starts a continuation line.
    pub help: &'static str,
    /// The default, shown in help.
    pub default: Option<&'static str>,
    /// Which commands take it.
    pub scope: Scope,
    /// Parse the value (switches get `"true"`) into the raw values.
    pub parse: fn(&mut Raw, &str) -> Result<()>,
}

/// The help sections, in order.
const SECTIONS: &[&str] = &[
    "Workload and endpoint",
    "Load (a comma-separated list runs one point per value, in order)",
    "Sweeps: trials, SLOs and goodput",
    "Capacity search (trie capacity)",
    "Requests",
    "Output files (written at the end, on Ctrl+C and on SIGTERM; sweeps: after every run)",
    "Output",
];

fn list<T>(flag: &str, v: &str, one: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(Error::usage(format!(
            "{flag}: '{v}' has an empty item; write values separated by commas, e.g. 1,2,4"
        )));
    }
    if items.len() > limits::MAX_POINTS {
        return Err(Error::usage(format!(
            "{flag}: {} values is too many: at most {}",
            items.len(),
            limits::MAX_POINTS
        )));
    }
    items.into_iter().map(one).collect()
}

fn percent(flag: &str, v: &str, lo: f64, hi: f64) -> Result<f64> {
    let x: f64 = num(flag, v, "a percentage")?;
    if !(x.is_finite() && x > lo && x < hi) {
        return Err(Error::usage(format!(
            "{flag}: '{v}' must be a percentage between {lo} and {hi}, exclusive"
        )));
    }
    Ok(x)
}

fn path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// Every run flag.
pub const FLAGS: &[Flag] = &[
    Flag {
        long: "--workload",
        short: None,
        py: Some("workload_path"),
        value: Some("PATH|ALIAS"),
        section: SECTIONS[0],
        help: "JSONL trace templates, or agentic, qa, office (downloaded\nfrom HF_ENDPOINT into TRIE_DATASET_CACHE)   [required]",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.workload = Some(v.to_string());
            Ok(())
        },
    },
    Flag {
        long: "--endpoint",
        short: None,
        py: Some("endpoint"),
        value: Some("URL|sim"),
        section: SECTIONS[0],
        help: "OpenAI-compatible base URL (/v1 added if missing), or\n`sim` for the built-in engine",
        default: Some("$OPENAI_BASE_URL"),
        scope: Scope::Both,
        parse: |r, v| {
            r.endpoint = Some(v.to_string());
            Ok(())
        },
    },
    Flag {
        long: "--model",
        short: None,
        py: Some("model"),
        value: Some("NAME"),
        section: SECTIONS[0],
        help: "model to request",
        default: Some("the one GET /v1/models lists"),
        scope: Scope::Both,
        parse: |r, v| {
            r.model = Some(v.to_string());
            Ok(())
        },
    },
    Flag {
        long: "--tokenizer",
        short: None,
        py: Some("tokenizer_model"),
        value: Some("PATH|DIR|ORG/NAME"),
        section: SECTIONS[0],
        help: "the server's tokenizer.json",
        default: Some("the model name"),
        scope: Scope::Both,
        parse: |r, v| {
            r.tokenizer = Some(v.to_string());
            Ok(())
        },
    },
    Flag {
        long: "--concurrency",
        short: None,
        py: Some("concurrency"),
        value: Some("N[,N...]"),
        section: SECTIONS[1],
        help: "closed loop: N slots running traces back to back",
        default: Some("1"),
        scope: Scope::Both,
        parse: |r, v| {
            r.concurrency = Some(list("--concurrency", v, |x| {
                Ok(whole("--concurrency", x, limits::MAX_SLOTS as u64)? as usize)
            })?);
            Ok(())
        },
    },
    Flag {
        long: "--arrival-rate",
        short: None,
        py: Some("arrival_rate"),
        value: Some("R[,R...]"),
        section: SECTIONS[1],
        help: "open loop: R traces/s (exclusive with --concurrency)",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.arrival_rate = Some(list("--arrival-rate", v, |x| {
                num("--arrival-rate", x, "a number of traces per second")
            })?);
            Ok(())
        },
    },
    Flag {
        long: "--arrival",
        short: None,
        py: None,
        value: Some("constant|poisson"),
        section: SECTIONS[1],
        help: "spacing of open-loop arrivals",
        default: Some("constant"),
        scope: Scope::Both,
        parse: |r, v| {
            r.arrival = Some(match v {
                "constant" => Arrival::Constant,
                "poisson" => Arrival::Poisson,
                other => {
                    return Err(Error::usage(format!(
                        "--arrival: '{other}' is not constant or poisson"
                    )));
                }
            });
            Ok(())
        },
    },
    Flag {
        long: "--max-inflight",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[1],
        help: "open loop: most traces in flight at once",
        default: Some("4096"),
        scope: Scope::Both,
        parse: |r, v| {
            r.max_inflight = Some(whole("--max-inflight", v, limits::MAX_SLOTS as u64)? as usize);
            Ok(())
        },
    },
    Flag {
        long: "--duration",
        short: None,
        py: Some("duration"),
        value: Some("S"),
        section: SECTIONS[1],
        help: "deadline for starting traces, seconds (each run of a sweep)",
        default: Some("300"),
        scope: Scope::Both,
        parse: |r, v| {
            r.duration = Some(secs("--duration", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--trials",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[2],
        help: "runs of each load point (statistics over them: mean ± a\nStudent-t interval, coefficient of variation)",
        default: Some("1"),
        scope: Scope::Both,
        parse: |r, v| {
            r.trials = Some(whole("--trials", v, limits::MAX_TRIALS as u64)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--warmup",
        short: None,
        py: None,
        value: Some("S"),
        section: SECTIONS[2],
        help: "run load for S seconds before each measured run, discarded",
        default: Some("none"),
        scope: Scope::Both,
        parse: |r, v| {
            r.warmup = Some(secs("--warmup", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--cooldown",
        short: None,
        py: None,
        value: Some("S"),
        section: SECTIONS[2],
        help: "pause S seconds after each run",
        default: Some("none"),
        scope: Scope::Both,
        parse: |r, v| {
            r.cooldown = Some(secs("--cooldown", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--reset-cache",
        short: None,
        py: None,
        value: None,
        section: SECTIONS[2],
        help: "reset the engine's prefix cache before each run (vLLM, SGLang,\nllama.cpp, sim); says which way worked, warns when none did",
        default: None,
        scope: Scope::Both,
        parse: |r, _| {
            r.reset_cache = true;
            Ok(())
        },
    },
    Flag {
        long: "--confidence",
        short: None,
        py: None,
        value: Some("PCT"),
        section: SECTIONS[2],
        help: "confidence of the intervals over trials, percent",
        default: Some("95"),
        scope: Scope::Both,
        parse: |r, v| {
            r.confidence = Some(percent("--confidence", v, 0.0, 100.0)? / 100.0);
            Ok(())
        },
    },
    Flag {
        long: "--slo",
        short: None,
        py: None,
        value: Some("LIST"),
        section: SECTIONS[2],
        help: "conditions METRIC:STAT<=VALUE or >=, comma-separated; METRIC a\nper-trace column or req.COLUMN; STAT mean, min, max or pNN;\ne.g. 'ttfat_s:p90<=8,decode_tps:p10>=20,req.ttft_s:p99<=2'",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.slo = Some(crate::record::slo::parse(v)?);
            Ok(())
        },
    },
    Flag {
        long: "--max-concurrency",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[3],
        help: "closed loop: the highest concurrency probed",
        default: Some("1024"),
        scope: Scope::Capacity,
        parse: |r, v| {
            r.max_concurrency =
                Some(whole("--max-concurrency", v, limits::MAX_SLOTS as u64)? as usize);
            Ok(())
        },
    },
    Flag {
        long: "--max-arrival-rate",
        short: None,
        py: None,
        value: Some("R"),
        section: SECTIONS[3],
        help: "search the open loop instead, from --arrival-rate (default 1)\nup to R traces/s",
        default: None,
        scope: Scope::Capacity,
        parse: |r, v| {
            r.max_arrival_rate = Some(num(
                "--max-arrival-rate",
                v,
                "a number of traces per second",
            )?);
            Ok(())
        },
    },
    Flag {
        long: "--precision",
        short: None,
        py: None,
        value: Some("PCT"),
        section: SECTIONS[3],
        help: "stop when the answer is within PCT percent (closed loop: or ±1)",
        default: Some("0 closed, 5 open"),
        scope: Scope::Capacity,
        parse: |r, v| {
            let p: f64 = num("--precision", v, "a percentage")?;
            r.precision = Some(p);
            Ok(())
        },
    },
    Flag {
        long: "--api",
        short: None,
        py: None,
        value: Some("completions|chat|embeddings"),
        section: SECTIONS[4],
        help: "completions: the context as one prompt (/v1/completions);\nchat: as messages (/v1/chat/completions), counted exactly\nwith the model's chat template; embeddings: one request per\ntrace (/v1/embeddings)",
        default: Some("completions"),
        scope: Scope::Both,
        parse: |r, v| {
            r.api = Some(match v.trim() {
                "completions" => Api::Completions,
                "chat" => Api::Chat,
                "embeddings" => Api::Embeddings,
                _ => {
                    return Err(Error::usage(format!(
                        "--api: '{v}' is not an API; pass completions, chat or embeddings"
                    )));
                }
            });
            Ok(())
        },
    },
    Flag {
        long: "--chat-template",
        short: None,
        py: None,
        value: Some("FILE"),
        section: SECTIONS[4],
        help: "the server's chat template (Jinja), when it is not the one\nbeside the tokenizer (chat_template.jinja, tokenizer_config.json)",
        default: Some("beside the tokenizer"),
        scope: Scope::Both,
        parse: |r, v| {
            r.chat_template = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--chat-template-kwargs",
        short: None,
        py: None,
        value: Some("JSON"),
        section: SECTIONS[4],
        help: "variables for the chat template, sent as chat_template_kwargs\nand used in trie's own rendering, e.g. '{\"enable_thinking\":false}'",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            let shown: String = v.chars().take(80).collect();
            let more = if v.chars().count() > 80 { "…" } else { "" };
            match serde_json::from_str::<serde_json::Value>(v) {
                Ok(serde_json::Value::Object(map)) => {
                    r.chat_kwargs = Some(map);
                    Ok(())
                }
                Ok(_) => Err(Error::usage(format!(
                    "--chat-template-kwargs: '{shown}{more}' is not a JSON object; pass e.g. '{{\"enable_thinking\":false}}'"
                ))),
                Err(e) => Err(Error::usage(format!(
                    "--chat-template-kwargs: '{shown}{more}' is not valid JSON ({e}); pass a JSON object, e.g. '{{\"enable_thinking\":false}}'"
                ))),
            }
        },
    },
    Flag {
        long: "--embed-tokens",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[4],
        help: "embeddings: tokens of each input",
        default: Some("the trace's input prompt length"),
        scope: Scope::Both,
        parse: |r, v| {
            r.embed_tokens = Some(whole("--embed-tokens", v, limits::MAX_CONTEXT_TOKENS)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--embed-batch",
        short: None,
        py: None,
        value: Some("B"),
        section: SECTIONS[4],
        help: "embeddings: inputs per request",
        default: Some("1"),
        scope: Scope::Both,
        parse: |r, v| {
            r.embed_batch = Some(whole("--embed-batch", v, limits::MAX_EMBED_BATCH)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--text",
        short: None,
        py: None,
        value: Some("MODE"),
        section: SECTIONS[4],
        help: "what synthetic text says, exact to the token in every mode:\nwords (one-token words), random-tokens (random vocabulary\nids decoded, as the Python version sends), corpus[:FILE]\n(windows of natural text; default: a bundled novel)",
        default: Some("words"),
        scope: Scope::Both,
        parse: |r, v| {
            r.text = Some(crate::text::content::TextMode::parse(v.trim()).ok_or_else(|| {
                Error::usage(format!(
                    "--text: '{v}' is not a text mode; pass words, random-tokens, corpus or corpus:FILE"
                ))
            })?);
            Ok(())
        },
    },
    Flag {
        long: "--shared-prefix",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[4],
        help: "every trace starts with one shared prompt of N tokens (a system\nprompt, tool definitions); chat: as a system message",
        default: Some("none"),
        scope: Scope::Both,
        parse: |r, v| {
            r.shared_prefix = Some(whole("--shared-prefix", v, limits::MAX_PREFIX_TOKENS)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--prefix-groups",
        short: None,
        py: None,
        value: Some("G"),
        section: SECTIONS[4],
        help: "G distinct shared prefixes; a trace takes one by its sequence\nnumber modulo G",
        default: Some("1"),
        scope: Scope::Both,
        parse: |r, v| {
            r.prefix_groups = Some(whole("--prefix-groups", v, limits::MAX_PREFIX_GROUPS)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--prefix-zipf",
        short: None,
        py: None,
        value: Some("S"),
        section: SECTIONS[4],
        help: "draw each trace's prefix group from a Zipf law of exponent S\ninstead (group 0 the most popular)",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.prefix_zipf = Some(num("--prefix-zipf", v, "a number")?);
            Ok(())
        },
    },
    Flag {
        long: "--seed",
        short: None,
        py: Some("seed"),
        value: Some("N"),
        section: SECTIONS[4],
        help: "seed of all synthetic text",
        default: Some("0"),
        scope: Scope::Both,
        parse: |r, v| {
            r.seed = Some(whole("--seed", v, u64::MAX)?);
            Ok(())
        },
    },
    Flag {
        long: "--api-key",
        short: None,
        py: Some("api_key"),
        value: Some("KEY"),
        section: SECTIONS[4],
        help: "bearer token",
        default: Some("$OPENAI_API_KEY"),
        scope: Scope::Both,
        parse: |r, v| {
            r.api_key = Some(v.to_string());
            Ok(())
        },
    },
    Flag {
        long: "--max-retries",
        short: None,
        py: Some("max_retries"),
        value: Some("N"),
        section: SECTIONS[4],
        help: "retries per request (connection errors, 408, 409, 429, 5xx)",
        default: Some("2"),
        scope: Scope::Both,
        parse: |r, v| {
            r.max_retries = Some(whole("--max-retries", v, limits::MAX_RETRIES as u64)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--timeout",
        short: None,
        py: Some("timeout"),
        value: Some("S"),
        section: SECTIONS[4],
        help: "per-request timeout, seconds",
        default: Some("600"),
        scope: Scope::Both,
        parse: |r, v| {
            r.timeout = Some(secs("--timeout", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--connect-timeout",
        short: None,
        py: None,
        value: Some("S"),
        section: SECTIONS[4],
        help: "timeout of connecting, and of each preflight request",
        default: Some("10"),
        scope: Scope::Both,
        parse: |r, v| {
            r.connect_timeout = Some(secs("--connect-timeout", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--max-line-bytes",
        short: None,
        py: None,
        value: Some("N"),
        section: SECTIONS[4],
        help: "longest SSE line (or non-streamed body) accepted; a longer\none fails the request as malformed",
        default: Some("16777216"),
        scope: Scope::Both,
        parse: |r, v| {
            r.max_line_bytes =
                Some(whole("--max-line-bytes", v, limits::MAX_LINE_BYTES.2 as u64)? as usize);
            Ok(())
        },
    },
    Flag {
        long: "--no-stream",
        short: None,
        py: Some("stream"),
        value: None,
        section: SECTIONS[4],
        help: "do not stream (no TTFT, TTFAT, decode speed, ITL)",
        default: None,
        scope: Scope::Both,
        // The switch gives "true" (no stream); the word stream=False gives
        // "False" through the same parser, inverted.
        parse: |r, v| {
            r.stream = Some(!boolean("--no-stream", v)?);
            Ok(())
        },
    },
    Flag {
        long: "--num-gpus",
        short: None,
        py: Some("num_gpus"),
        value: Some("N"),
        section: SECTIONS[4],
        help: "GPUs behind the endpoint, for the per-GPU figures",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.num_gpus = Some(whole("--num-gpus", v, limits::MAX_GPUS)? as u32);
            Ok(())
        },
    },
    Flag {
        long: "--output",
        short: None,
        py: None,
        value: Some("PATH"),
        section: SECTIONS[5],
        help: "results JSON: configuration, every figure, the raw records (a\nsweep: every run); read back by trie report / compare / plot",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.files.output = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--csv",
        short: None,
        py: None,
        value: Some("PATH"),
        section: SECTIONS[5],
        help: "one row per completed trace (a sweep: per point x trial)",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.files.csv = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--events",
        short: None,
        py: None,
        value: Some("PATH"),
        section: SECTIONS[5],
        help: "per-request event log, JSONL, flushed line by line",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.files.events = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--output-metrics",
        short: None,
        py: Some("output_metrics_path"),
        value: Some("PATH"),
        section: SECTIONS[5],
        help: "one JSONL row of output tokens per completed trace",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.files.output_metrics = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--plot",
        short: None,
        py: None,
        value: Some("DIR"),
        section: SECTIONS[5],
        help: "SVG charts and report.html (self-contained) into DIR",
        default: None,
        scope: Scope::Both,
        parse: |r, v| {
            r.plot = path(v);
            Ok(())
        },
    },
    Flag {
        long: "--progress-interval",
        short: None,
        py: Some("duration_update_interval"),
        value: Some("S"),
        section: SECTIONS[6],
        help: "log the remaining time every S seconds (>= 0.1)",
        default: Some("off"),
        scope: Scope::Both,
        parse: |r, v| {
            let d = secs("--progress-interval", v)?;
            r.progress_interval = Some((!d.is_zero()).then_some(d));
            Ok(())
        },
    },
    Flag {
        long: "--quiet",
        short: Some('q'),
        py: None,
        value: None,
        section: SECTIONS[6],
        help: "no live progress line",
        default: None,
        scope: Scope::Both,
        parse: |r, _| {
            r.quiet = true;
            Ok(())
        },
    },
];

/// The usage lines at the top of `trie --help`.
const USAGE: &str = "\
trie — trace replay inference evaluation: replay agentic trace workloads
against an OpenAI-compatible endpoint and measure it.

Usage: trie --workload PATH|agentic|qa|office --endpoint URL|sim [OPTIONS]
       trie capacity --slo LIST [OPTIONS]  the most load meeting every SLO
       trie sim [OPTIONS]              serve the simulated engine (trie sim --help)
       trie report RESULTS.json        print the tables of a run or sweep (--output)
       trie compare A.json B.json ...  headline figures side by side, change vs A
       trie plot RESULTS.json [DIR]    draw its charts (default DIR: RESULTS-plots)
       trie workload_path=... endpoint=... concurrency=...   (Python-style words)
";

/// The tail of `trie --help`.
const HELP_TAIL: &str = "  -h, --help               this text
  -V, --version            the version

Environment: OPENAI_BASE_URL, OPENAI_API_KEY, HF_ENDPOINT, HF_TOKEN, HF_HOME,
  HF_HUB_CACHE, TRIE_DATASET_CACHE, RUST_LOG (e.g. RUST_LOG=debug).
";

/// Width of help lines.
const HELP_WIDTH: usize = 88;
/// Column where help text starts.
const HELP_COLUMN: usize = 27;

/// `trie --help`, rendered from [`FLAGS`].
pub fn help() -> String {
    let mut out = String::from(USAGE);
    for section in SECTIONS {
        out.push('\n');
        out.push_str(section);
        out.push_str(":\n");
        for f in FLAGS.iter().filter(|f| f.section == *section) {
            let name = match (f.short, f.value) {
                (Some(c), None) => format!("-{c}, {}", f.long),
                (_, Some(v)) => format!("{} {v}", f.long),
                (None, None) => f.long.to_string(),
            };
            let mut lines: Vec<String> = f.help.split('\n').map(str::to_string).collect();
            let mut first = format!("  {name:<w$}", w = HELP_COLUMN - 3);
            if first.chars().count() >= HELP_COLUMN {
                out.push_str(first.trim_end());
                out.push('\n');
                first = " ".repeat(HELP_COLUMN);
            } else {
                first.push(' ');
            }
            lines[0] = format!("{first}{}", lines[0]);
            for l in lines.iter_mut().skip(1) {
                *l = format!("{}{l}", " ".repeat(HELP_COLUMN));
            }
            if let Some(d) = f.default {
                let tag = format!("[default: {d}]");
                let last = lines.last_mut().expect("one line at least");
                let used = last.chars().count();
                if used + 2 + tag.len() <= HELP_WIDTH {
                    last.push_str(&" ".repeat(HELP_WIDTH - used - tag.len()));
                    last.push_str(&tag);
                } else {
                    lines.push(format!("{tag:>HELP_WIDTH$}"));
                }
            }
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    out.push_str(HELP_TAIL);
    out.push_str("\nPython-style words (existing sweep scripts work unchanged):\n ");
    let mut width = 1;
    for f in FLAGS.iter().filter(|f| f.py.is_some()) {
        let w = format!(" {}=", f.py.unwrap_or_default());
        if width + w.len() > HELP_WIDTH - 10 {
            out.push_str("\n ");
            width = 1;
        }
        width += w.len();
        out.push_str(&w);
    }
    out.push('\n');
    out
}

/// `trie sim --help`.
pub const SIM_HELP: &str = "\
trie sim — a deterministic simulated inference engine (OpenAI-compatible
/v1/completions, /v1/chat/completions and /v1/embeddings with streaming,
usage, a prefix cache, a queue and faults).
Prints `listening on http://127.0.0.1:PORT/v1` first; Ctrl+C stops it.

Usage: trie sim [OPTIONS]

  --port N                 port on 127.0.0.1, 0 picks a free one          [default: 8000]
  --model NAME             served model name                         [default: trie-sim]
  --tokenizer PATH         tokenizer.json           [default: bundled data/tokenizer.json]
  --bos N                  BOS tokens added to every prompt                 [default: 1]
  --block-size N           KV block size, tokens                           [default: 16]
  --kv-tokens N            KV cache capacity, tokens                  [default: 1000000]
  --max-running N          sequences running at once; more queue          [default: 256]
  --prefill-tps R          prefill tokens/s, 0 = instant                [default: 50000]
  --decode-tps R           decode tokens/s per sequence, 0 = instant      [default: 100]
  --batch-knee K           sequences at full speed; past K each runs at K/running of it,
                           so the engine's throughput is decode-tps x min(running, K)
                                                                      [default: no knee]
  --tokens-per-chunk N     tokens per streamed chunk                        [default: 1]
  --chat-template FILE     Jinja template of chat requests  [default: bundled ChatML-like]
  --reasoning-tokens N     the first N tokens of each chat answer come as reasoning
                           (reasoning_content deltas)                       [default: 0]
  --seed N                 seed of generated text and faults                [default: 0]
  --fault-status-rate R    rate of requests answered with --fault-status    [default: 0]
  --fault-status CODE      HTTP status of those answers                   [default: 503]
  --fault-reset-rate R     rate of streams whose connection is closed half-way
  --fault-malformed-rate R rate of streams with a malformed JSON chunk
  --fault-stall-rate R     rate of responses stalling after the first chunk
  --fault-stall-secs S     length of a stall, seconds                      [default: 30]
  --fault-no-usage-rate R  rate of streams without the usage chunk
  --no-stream              answer stream requests with one JSON body (a server that
                           cannot stream)
  --no-cached-tokens       leave cached_tokens out of usage
  --eos-after N            ignore ignore_eos: stop every completion after N tokens
  --close-after-completion close the connection after every completion, though
                           kept alive (as llama-server does)
";

fn value_of(parser: &mut lexopt::Parser, flag: &str) -> Result<String> {
    let v = parser
        .value()
        .map_err(|_| Error::usage(format!("{flag} needs a value; see trie --help")))?;
    v.into_string()
        .map_err(|_| Error::usage(format!("{flag}: the value is not valid UTF-8")))
}

fn num<T: std::str::FromStr>(flag: &str, v: &str, what: &str) -> Result<T> {
    v.trim()
        .parse()
        .map_err(|_| Error::usage(format!("{flag}: '{v}' is not {what}")))
}

/// A whole number at most `max`; too many digits is "too large", not "not a number".
fn whole(flag: &str, v: &str, max: u64) -> Result<u64> {
    let t = v.trim();
    let too_large = || Error::usage(format!("{flag}: '{v}' is too large: at most {max}"));
    match t.parse::<u64>() {
        Ok(n) if n > max => Err(too_large()),
        Ok(n) => Ok(n),
        Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => Err(too_large()),
        Err(_) => Err(Error::usage(format!("{flag}: '{v}' is not a whole number"))),
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration> {
    let s: f64 = num(flag, v, "a number of seconds")?;
    if !(s.is_finite() && s >= 0.0) {
        return Err(Error::usage(format!(
            "{flag}: '{v}' must be a number of seconds >= 0"
        )));
    }
    if s > limits::MAX_SECONDS {
        return Err(Error::usage(format!(
            "{flag}: '{v}' is too large: at most {} seconds",
            limits::MAX_SECONDS
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

fn rate(flag: &str, v: &str) -> Result<f64> {
    let r: f64 = num(flag, v, "a number")?;
    if !(0.0..=1.0).contains(&r) {
        return Err(Error::usage(format!(
            "{flag}: '{v}' must be a rate between 0 and 1"
        )));
    }
    Ok(r)
}

fn boolean(flag: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::usage(format!("{flag}: '{v}' is not True or False"))),
    }
}

/// Typed values of a run's flags, before they are combined.
#[derive(Default)]
pub struct Raw {
    workload: Option<String>,
    endpoint: Option<String>,
    model: Option<String>,
    tokenizer: Option<String>,
    concurrency: Option<Vec<usize>>,
    arrival_rate: Option<Vec<f64>>,
    arrival: Option<Arrival>,
    max_inflight: Option<usize>,
    duration: Option<Duration>,
    trials: Option<u32>,
    warmup: Option<Duration>,
    cooldown: Option<Duration>,
    reset_cache: bool,
    confidence: Option<f64>,
    slo: Option<Vec<crate::record::slo::Slo>>,
    max_concurrency: Option<usize>,
    max_arrival_rate: Option<f64>,
    precision: Option<f64>,
    seed: Option<u64>,
    api_key: Option<String>,
    max_retries: Option<u32>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    max_line_bytes: Option<usize>,
    num_gpus: Option<u32>,
    stream: Option<bool>,
    api: Option<Api>,
    chat_template: Option<PathBuf>,
    chat_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    text: Option<crate::text::content::TextMode>,
    embed_tokens: Option<u32>,
    embed_batch: Option<u32>,
    shared_prefix: Option<u32>,
    prefix_groups: Option<u32>,
    prefix_zipf: Option<f64>,
    progress_interval: Option<Option<Duration>>,
    files: Files,
    plot: Option<PathBuf>,
    quiet: bool,
    /// Flags given, for the capacity-only check.
    given: Vec<&'static Flag>,
}

impl Raw {
    /// Apply `flag` with `value`.
    fn set(&mut self, flag: &'static Flag, value: &str) -> Result<()> {
        // An empty value is a shell variable that was not set: an error,
        // not a silently absent file or model (an empty key means none).
        if value.is_empty() && flag.long != "--api-key" {
            return Err(Error::usage(format!(
                "{} is empty; pass a value (an unset shell variable?)",
                flag.long
            )));
        }
        self.given.push(flag);
        (flag.parse)(self, value)
    }

    fn into_config(self, capacity: bool) -> Result<Config> {
        if !capacity && let Some(f) = self.given.iter().find(|f| f.scope == Scope::Capacity) {
            return Err(Error::usage(format!(
                "{} is a flag of trie capacity (the search); a sweep runs the points --concurrency lists",
                f.long
            )));
        }
        let workload = self.workload.ok_or_else(|| {
            Error::usage("--workload is required: a JSONL file or an alias (agentic, qa, office)")
        })?;
        let endpoint = self
            .endpoint
            .or_else(|| std::env::var("OPENAI_BASE_URL").ok().filter(|v| !v.is_empty()))
            .ok_or_else(|| {
                Error::usage("--endpoint is required (or set OPENAI_BASE_URL); `--endpoint sim` runs the built-in engine")
            })?;
        let mut cfg = Config::new(&workload, &endpoint)?;
        cfg.model = self.model.filter(|m| !m.is_empty());
        cfg.tokenizer = self.tokenizer.filter(|t| !t.is_empty());
        let concurrency_given = self.concurrency.is_some();
        let points: Vec<LoadModel> = match (self.concurrency, self.arrival_rate) {
            (Some(_), Some(_)) => {
                return Err(Error::usage(
                    "--concurrency and --arrival-rate exclude each other; pass one of them",
                ));
            }
            (c, None) => {
                if self.arrival.is_some() || self.max_inflight.is_some() {
                    return Err(Error::usage(
                        "--arrival and --max-inflight need --arrival-rate (open loop)",
                    ));
                }
                c.unwrap_or_else(|| vec![1])
                    .into_iter()
                    .map(|concurrency| LoadModel::Closed { concurrency })
                    .collect()
            }
            (None, Some(rates)) => rates
                .into_iter()
                .map(|rate| LoadModel::Open {
                    rate,
                    arrival: self.arrival.unwrap_or(Arrival::Constant),
                    max_inflight: self
                        .max_inflight
                        .unwrap_or(crate::config::DEFAULT_MAX_INFLIGHT),
                })
                .collect(),
        };
        cfg.load = points[0];
        if points.len() > 1 {
            if capacity {
                return Err(Error::usage(
                    "trie capacity searches the load itself: give at most one --concurrency or --arrival-rate (where the search starts), not a list",
                ));
            }
            cfg.sweep.points = points;
        }
        if let Some(d) = self.duration {
            cfg.duration = d;
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        cfg.api_key = self
            .api_key
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .filter(|k| !k.is_empty())
            .map(crate::config::Secret::new);
        if let Some(v) = self.max_retries {
            cfg.max_retries = v;
        }
        if let Some(v) = self.timeout {
            cfg.timeout = v;
        }
        if let Some(v) = self.connect_timeout {
            cfg.connect_timeout = v;
        }
        if let Some(v) = self.max_line_bytes {
            cfg.max_line_bytes = v;
        }
        cfg.num_gpus = self.num_gpus;
        if let Some(s) = self.stream {
            cfg.stream = s;
        }
        if let Some(api) = self.api {
            cfg.api = api;
        }
        let chat_flags = self.chat_template.is_some() || self.chat_kwargs.is_some();
        cfg.chat.template = self.chat_template;
        cfg.chat.kwargs = self.chat_kwargs.unwrap_or_default();
        if let Some(t) = self.text {
            cfg.text = t;
        }
        if self.embed_tokens.is_some() || self.embed_batch.is_some() {
            if cfg.api != Api::Embeddings {
                return Err(Error::usage(
                    "--embed-tokens and --embed-batch shape embeddings requests; pass --api embeddings",
                ));
            }
            cfg.embed.tokens = self.embed_tokens;
            cfg.embed.batch = self.embed_batch.unwrap_or(1);
        }

        match (self.shared_prefix, self.prefix_groups, self.prefix_zipf) {
            (Some(tokens), groups, zipf) => {
                cfg.prefix = Some(crate::config::SharedPrefix {
                    tokens,
                    groups: groups.unwrap_or(1),
                    zipf,
                });
            }
            (None, None, None) => {}
            (None, _, _) => {
                return Err(Error::usage(
                    "--prefix-groups and --prefix-zipf choose among shared prefixes; pass --shared-prefix N too",
                ));
            }
        }
        if cfg.api != Api::Chat && chat_flags {
            return Err(Error::usage(
                "--chat-template and --chat-template-kwargs apply to chat requests; pass --api chat",
            ));
        }
        if let Some(p) = self.progress_interval {
            cfg.progress_interval = p;
        }
        cfg.files = self.files;
        let sw = &mut cfg.sweep;
        if let Some(t) = self.trials {
            sw.trials = t;
        }
        sw.warmup = self.warmup.filter(|d| !d.is_zero());
        sw.cooldown = self.cooldown.filter(|d| !d.is_zero());
        sw.reset_cache = self.reset_cache;
        if let Some(c) = self.confidence {
            sw.confidence = c;
        }
        sw.slo = self.slo.unwrap_or_default();
        sw.plot = self.plot;
        if capacity {
            let open = matches!(cfg.load, LoadModel::Open { .. });
            match (open, self.max_arrival_rate.is_some()) {
                (true, false) => {
                    return Err(Error::usage(
                        "trie capacity: --arrival-rate starts an open-loop search, which needs --max-arrival-rate (its upper bound)",
                    ));
                }
                (false, true) if concurrency_given => {
                    return Err(Error::usage(
                        "trie capacity: --concurrency starts a closed-loop search, --max-arrival-rate bounds an open-loop one; pass one of them",
                    ));
                }
                _ => {}
            }
            let d = Search::default();
            sw.search = Some(Search {
                max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
                max_arrival_rate: self.max_arrival_rate,
                precision_pct: self.precision.unwrap_or(d.precision_pct),
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Parse `trie`'s arguments (without the program name). Also returns whether
/// the live progress line is wanted.
pub fn parse(args: Vec<OsString>) -> Result<(Command, bool)> {
    let first = args.first().and_then(|a| a.to_str()).unwrap_or_default();
    match first {
        "sim" => return Ok((parse_sim(args[1..].to_vec())?, false)),
        "report" | "compare" | "plot" => {
            return Ok((parse_files(first, &args[1..])?, false));
        }
        _ => {}
    }
    let capacity = first == "capacity";
    let args = if capacity { args[1..].to_vec() } else { args };
    let mut parser = lexopt::Parser::from_args(args);
    let mut raw = Raw::default();
    let find = |long: &str| FLAGS.iter().find(|f| f.long == long);
    while let Some(arg) = parser
        .next()
        .map_err(|e| Error::usage(format!("{e}; see trie --help")))?
    {
        match arg {
            Short('h') | Long("help") => return Ok((Command::Print(help()), false)),
            Short('V') | Long("version") => {
                return Ok((
                    Command::Print(format!("trie {}\n", env!("CARGO_PKG_VERSION"))),
                    false,
                ));
            }
            Short(c) => match FLAGS.iter().find(|f| f.short == Some(c)) {
                Some(f) => raw.set(f, "true")?,
                None => return Err(Error::usage(format!("unknown flag -{c}; see trie --help"))),
            },
            Long("stream") => {
                return Err(Error::usage(
                    "unknown flag --stream: streaming is the default; --no-stream turns it off",
                ));
            }
            Long(name) => {
                let long = format!("--{name}");
                let Some(f) = find(&long) else {
                    return Err(Error::usage(format!(
                        "unknown flag {long}; see trie --help"
                    )));
                };
                match f.value {
                    None => raw.set(f, "true")?,
                    Some(_) => {
                        let v = value_of(&mut parser, f.long)?;
                        raw.set(f, &v)?;
                    }
                }
            }
            Value(v) => {
                let word = v
                    .into_string()
                    .map_err(|_| Error::usage("an argument is not valid UTF-8"))?;
                let Some((key, value)) = word.split_once('=') else {
                    return Err(Error::usage(format!(
                        "unexpected argument '{word}'; flags start with -- (see trie --help)"
                    )));
                };
                let Some(f) = FLAGS.iter().find(|f| f.py == Some(key)) else {
                    return Err(Error::usage(format!(
                        "unknown setting '{key}='; known: {}",
                        FLAGS
                            .iter()
                            .filter_map(|f| f.py)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if f.long == "--no-stream" {
                    // stream=True means streaming: the switch's opposite.
                    let on = boolean("stream", value)?;
                    raw.set(f, if on { "false" } else { "true" })?;
                } else {
                    raw.set(f, value)?;
                }
            }
        }
    }
    let quiet = raw.quiet;
    Ok((Command::Run(Box::new(raw.into_config(capacity)?)), !quiet))
}

/// `trie report FILE` / `trie compare FILE FILE...` / `trie plot FILE [DIR]`.
fn parse_files(cmd: &str, args: &[OsString]) -> Result<Command> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Print(help()));
    }
    if let Some(flag) = args.iter().find(|a| a.to_string_lossy().starts_with('-')) {
        return Err(Error::usage(format!(
            "trie {cmd}: unknown flag {}; it takes results files written by --output",
            flag.to_string_lossy()
        )));
    }
    let files: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    match (cmd, files.len()) {
        ("plot", 1) => {
            let stem = files[0].file_stem().unwrap_or_default().to_string_lossy();
            let dir = files[0].with_file_name(format!("{stem}-plots"));
            Ok(Command::Plot(files[0].clone(), dir))
        }
        ("plot", 2) => Ok(Command::Plot(files[0].clone(), files[1].clone())),
        ("plot", _) => Err(Error::usage(
            "trie plot takes a results file and an optional directory: trie plot RESULTS.json [DIR]",
        )),
        ("report", 1) => Ok(Command::Report(files[0].clone())),
        ("report", _) => Err(Error::usage(
            "trie report takes one results file: trie report RESULTS.json",
        )),
        (_, n) if n >= 2 => Ok(Command::Compare(files)),
        _ => Err(Error::usage(
            "trie compare takes two or more results files: trie compare A.json B.json",
        )),
    }
}

fn parse_sim(args: Vec<OsString>) -> Result<Command> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut c = SimConfig::default();
    while let Some(arg) = parser
        .next()
        .map_err(|e| Error::usage(format!("{e}; see trie sim --help")))?
    {
        let flag = match &arg {
            Short('h') | Long("help") => return Ok(Command::Print(SIM_HELP.to_string())),
            Long("no-stream") => {
                c.quirks.no_stream = true;
                continue;
            }
            Long("no-cached-tokens") => {
                c.quirks.no_cached_tokens = true;
                continue;
            }
            Long("close-after-completion") => {
                c.quirks.close_after_completion = true;
                continue;
            }
            Long(name) => format!("--{name}"),
            Short(ch) => {
                return Err(Error::usage(format!(
                    "unknown flag -{ch}; see trie sim --help"
                )));
            }
            Value(v) => {
                return Err(Error::usage(format!(
                    "unexpected argument '{}'; see trie sim --help",
                    v.to_string_lossy()
                )));
            }
        };
        let known = [
            "--port",
            "--model",
            "--tokenizer",
            "--bos",
            "--block-size",
            "--kv-tokens",
            "--max-running",
            "--prefill-tps",
            "--decode-tps",
            "--batch-knee",
            "--tokens-per-chunk",
            "--seed",
            "--fault-status-rate",
            "--fault-status",
            "--fault-reset-rate",
            "--fault-malformed-rate",
            "--fault-stall-rate",
            "--fault-stall-secs",
            "--fault-no-usage-rate",
            "--eos-after",
            "--chat-template",
            "--reasoning-tokens",
        ];
        if !known.contains(&flag.as_str()) {
            return Err(Error::usage(format!(
                "unknown flag {flag}; see trie sim --help"
            )));
        }
        let v = value_of(&mut parser, &flag)?;
        let f = flag.as_str();
        let tps = |v: &str| -> Result<f64> {
            let r: f64 = num(f, v, "a number of tokens/s")?;
            if !(r.is_finite() && r >= 0.0) {
                return Err(Error::usage(format!(
                    "{f}: '{v}' must be a number of tokens/s >= 0"
                )));
            }
            Ok(r)
        };
        match f {
            "--port" => c.port = whole(f, &v, u16::MAX as u64)? as u16,
            "--model" => c.model = v,
            "--tokenizer" => c.tokenizer = Some(v.into()),
            "--bos" => c.bos = whole(f, &v, limits::MAX_SIM_BOS)? as usize,
            "--block-size" => c.block_size = whole(f, &v, limits::MAX_SIM_COUNT)? as usize,
            "--kv-tokens" => c.kv_tokens = whole(f, &v, limits::MAX_SIM_KV_TOKENS)? as usize,
            "--max-running" => c.max_running = whole(f, &v, limits::MAX_SIM_COUNT)? as usize,
            "--prefill-tps" => c.prefill_tps = tps(&v)?,
            "--decode-tps" => c.decode_tps = tps(&v)?,
            "--batch-knee" => c.batch_knee = Some(whole(f, &v, limits::MAX_SIM_COUNT)? as usize),
            "--tokens-per-chunk" => {
                c.tokens_per_chunk = whole(f, &v, limits::MAX_SIM_COUNT)? as usize
            }
            "--seed" => c.seed = whole(f, &v, u64::MAX)?,
            "--fault-status-rate" => c.faults.status_rate = rate(f, &v)?,
            "--fault-status" => {
                c.faults.status = whole(f, &v, 999)? as u16;
                if !(400..=599).contains(&c.faults.status) {
                    return Err(Error::usage(format!(
                        "{f}: '{v}' must be an HTTP error status 400-599"
                    )));
                }
            }
            "--fault-reset-rate" => c.faults.reset_rate = rate(f, &v)?,
            "--fault-malformed-rate" => c.faults.malformed_rate = rate(f, &v)?,
            "--fault-stall-rate" => c.faults.stall_rate = rate(f, &v)?,
            "--fault-stall-secs" => c.faults.stall = secs(f, &v)?,
            "--fault-no-usage-rate" => c.faults.no_usage_rate = rate(f, &v)?,
            "--chat-template" => c.chat_template = Some(v.into()),
            "--reasoning-tokens" => {
                c.reasoning_tokens = whole(f, &v, limits::MAX_SIM_COUNT)? as usize
            }
            "--eos-after" => {
                c.quirks.eos_after = Some(whole(f, &v, limits::MAX_SIM_EOS_AFTER)? as usize)
            }
            _ => unreachable!("checked against `known`"),
        }
    }
    c.faults.validate()?;
    Ok(Command::Sim(Box::new(c)))
}

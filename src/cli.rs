//! Command-line parsing, in two stages: lexopt reads GNU flags and the Python
//! version's `key=value` words into raw values, then they are validated into a
//! [`Config`] or [`SimConfig`]. Every error names the flag and the fix.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::config::{Arrival, Config, Files, LoadModel};
use crate::error::{Error, Result};
use crate::limits;
use crate::sim::SimConfig;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run a benchmark.
    Run(Box<Config>),
    /// Serve the simulated engine.
    Sim(Box<SimConfig>),
    /// Print the tables of a results file.
    Report(PathBuf),
    /// Print the headline figures of results files side by side.
    Compare(Vec<PathBuf>),
    /// Print this text and exit 0.
    Print(String),
}

/// `trie --help`.
pub const HELP: &str = "\
trie — trace replay inference evaluation: replay agentic trace workloads
against an OpenAI-compatible endpoint and measure it.

Usage: trie --workload PATH|agentic|qa|office --endpoint URL|sim [OPTIONS]
       trie sim [OPTIONS]              serve the simulated engine (trie sim --help)
       trie report RESULTS.json        print the tables of a run written by --output
       trie compare A.json B.json ...  headline figures side by side, change vs A
       trie workload_path=... endpoint=... concurrency=...   (Python-style words)

Workload and endpoint:
  --workload PATH|ALIAS    JSONL trace templates, or agentic, qa, office (downloaded
                           from HF_ENDPOINT into TRIE_DATASET_CACHE)   [required]
  --endpoint URL|sim       OpenAI-compatible base URL (/v1 added if missing), or
                           `sim` for the built-in engine    [default: $OPENAI_BASE_URL]
  --model NAME             model to request        [default: the one GET /v1/models lists]
  --tokenizer PATH|DIR|ORG/NAME  the server's tokenizer.json [default: the model name]

Load:
  --concurrency N          closed loop: N slots running traces back to back  [default: 1]
  --arrival-rate R         open loop: R traces/s (exclusive with --concurrency)
  --arrival constant|poisson  spacing of open-loop arrivals           [default: constant]
  --max-inflight N         open loop: most traces in flight at once     [default: 4096]
  --duration S             deadline for starting traces, seconds          [default: 300]

Requests:
  --seed N                 seed of all synthetic text                       [default: 0]
  --api-key KEY            bearer token                    [default: $OPENAI_API_KEY]
  --max-retries N          retries per request (connection errors, 408, 409, 429, 5xx)
                                                                            [default: 2]
  --timeout S              per-request timeout, seconds                   [default: 600]
  --connect-timeout S      timeout of connecting, and of each preflight request
                                                                           [default: 10]
  --max-line-bytes N       longest SSE line (or non-streamed body) accepted; a longer
                           one fails the request as malformed      [default: 16777216]
  --no-stream              do not stream (no TTFT, TTFAT, decode speed, ITL)
  --num-gpus N             GPUs behind the endpoint, for the per-GPU column

Output files (written at the end, on Ctrl+C and on SIGTERM):
  --output PATH            results JSON: configuration, every figure, per-trace records,
                           token curve, failures (read back by trie report / compare)
  --csv PATH               one row per completed trace
  --events PATH            per-request event log, JSONL, flushed line by line
  --output-metrics PATH    one JSONL row of output tokens per completed trace

Output:
  --progress-interval S    log the remaining time every S seconds (>= 0.1) [default: off]
  -q, --quiet              no live progress line
  -h, --help               this text
  -V, --version            the version

Python-style words (existing sweep scripts work unchanged):
  workload_path= endpoint= model= concurrency= tokenizer_model= duration= seed=
  api_key= max_retries= timeout= num_gpus= stream=True|False arrival_rate=
  duration_update_interval= output_metrics_path=

Environment: OPENAI_BASE_URL, OPENAI_API_KEY, HF_ENDPOINT, HF_TOKEN, HF_HOME,
  HF_HUB_CACHE, TRIE_DATASET_CACHE, RUST_LOG (e.g. RUST_LOG=debug).
";

/// `trie sim --help`.
pub const SIM_HELP: &str = "\
trie sim — a deterministic simulated inference engine (OpenAI-compatible
/v1/completions with streaming, usage, a prefix cache, a queue and faults).
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

/// Raw values of a run, before validation.
#[derive(Default)]
struct Raw {
    workload: Option<String>,
    endpoint: Option<String>,
    model: Option<String>,
    tokenizer: Option<String>,
    concurrency: Option<String>,
    arrival_rate: Option<String>,
    arrival: Option<String>,
    max_inflight: Option<String>,
    duration: Option<String>,
    seed: Option<String>,
    api_key: Option<String>,
    max_retries: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    max_line_bytes: Option<String>,
    num_gpus: Option<String>,
    stream: Option<bool>,
    progress_interval: Option<String>,
    output: Option<String>,
    csv: Option<String>,
    events: Option<String>,
    output_metrics: Option<String>,
}

/// The `key=value` words of the Python version, mapped to flags.
const PY_WORDS: &[(&str, &str)] = &[
    ("workload_path", "--workload"),
    ("endpoint", "--endpoint"),
    ("model", "--model"),
    ("concurrency", "--concurrency"),
    ("tokenizer_model", "--tokenizer"),
    ("duration", "--duration"),
    ("seed", "--seed"),
    ("api_key", "--api-key"),
    ("max_retries", "--max-retries"),
    ("timeout", "--timeout"),
    ("num_gpus", "--num-gpus"),
    ("stream", "--stream"),
    ("arrival_rate", "--arrival-rate"),
    ("duration_update_interval", "--progress-interval"),
    ("output_metrics_path", "--output-metrics"),
];

/// Run flags that have no Python-style word.
const FLAG_ONLY: &[&str] = &[
    "--arrival",
    "--max-inflight",
    "--connect-timeout",
    "--max-line-bytes",
    "--output",
    "--csv",
    "--events",
];

/// Whether `flag` is a run flag that takes a value.
fn takes_value(flag: &str) -> bool {
    FLAG_ONLY.contains(&flag) || PY_WORDS.iter().any(|(_, f)| *f == flag && *f != "--stream")
}

impl Raw {
    /// Store `value` for `flag`.
    fn set(&mut self, flag: &str, value: String) -> Result<()> {
        // An empty value is a shell variable that was not set: an error,
        // not a silently absent file or model (an empty key means none).
        if value.is_empty() && flag != "--api-key" {
            return Err(Error::usage(format!(
                "{flag} is empty; pass a value (an unset shell variable?)"
            )));
        }
        let slot = match flag {
            "--workload" => &mut self.workload,
            "--endpoint" => &mut self.endpoint,
            "--model" => &mut self.model,
            "--tokenizer" => &mut self.tokenizer,
            "--concurrency" => &mut self.concurrency,
            "--arrival-rate" => &mut self.arrival_rate,
            "--arrival" => &mut self.arrival,
            "--max-inflight" => &mut self.max_inflight,
            "--duration" => &mut self.duration,
            "--seed" => &mut self.seed,
            "--api-key" => &mut self.api_key,
            "--max-retries" => &mut self.max_retries,
            "--timeout" => &mut self.timeout,
            "--connect-timeout" => &mut self.connect_timeout,
            "--max-line-bytes" => &mut self.max_line_bytes,
            "--num-gpus" => &mut self.num_gpus,
            "--progress-interval" => &mut self.progress_interval,
            "--output" => &mut self.output,
            "--csv" => &mut self.csv,
            "--events" => &mut self.events,
            "--output-metrics" => &mut self.output_metrics,
            "--stream" => {
                self.stream = Some(boolean("stream", &value)?);
                return Ok(());
            }
            _ => {
                return Err(Error::usage(format!(
                    "unknown flag {flag}; see trie --help"
                )));
            }
        };
        *slot = Some(value);
        Ok(())
    }

    fn into_config(self) -> Result<Config> {
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
        cfg.load = match (self.concurrency, self.arrival_rate) {
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
                let n = match c {
                    Some(v) => whole("--concurrency", &v, limits::MAX_SLOTS as u64)? as usize,
                    None => 1,
                };
                LoadModel::Closed { concurrency: n }
            }
            (None, Some(r)) => LoadModel::Open {
                rate: num("--arrival-rate", &r, "a number of traces per second")?,
                arrival: match self.arrival.as_deref() {
                    None | Some("constant") => Arrival::Constant,
                    Some("poisson") => Arrival::Poisson,
                    Some(other) => {
                        return Err(Error::usage(format!(
                            "--arrival: '{other}' is not constant or poisson"
                        )));
                    }
                },
                max_inflight: match self.max_inflight {
                    Some(v) => whole("--max-inflight", &v, limits::MAX_SLOTS as u64)? as usize,
                    None => 4096,
                },
            },
        };
        if let Some(v) = self.duration {
            cfg.duration = secs("--duration", &v)?;
        }
        if let Some(v) = self.seed {
            cfg.seed = whole("--seed", &v, u64::MAX)?;
        }
        cfg.api_key = self
            .api_key
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .filter(|k| !k.is_empty())
            .map(crate::config::Secret::new);
        if let Some(v) = self.max_retries {
            cfg.max_retries = whole("--max-retries", &v, limits::MAX_RETRIES as u64)? as u32;
        }
        if let Some(v) = self.timeout {
            cfg.timeout = secs("--timeout", &v)?;
        }
        if let Some(v) = self.connect_timeout {
            cfg.connect_timeout = secs("--connect-timeout", &v)?;
        }
        if let Some(v) = self.max_line_bytes {
            cfg.max_line_bytes =
                whole("--max-line-bytes", &v, limits::MAX_LINE_BYTES.2 as u64)? as usize;
        }
        if let Some(v) = self.num_gpus {
            cfg.num_gpus = Some(whole("--num-gpus", &v, limits::MAX_GPUS)? as u32);
        }
        if let Some(s) = self.stream {
            cfg.stream = s;
        }
        if let Some(v) = self.progress_interval {
            let d = secs("--progress-interval", &v)?;
            cfg.progress_interval = (!d.is_zero()).then_some(d);
        }
        let path = |v: Option<String>| v.filter(|p| !p.is_empty()).map(PathBuf::from);
        cfg.files = Files {
            output: path(self.output),
            csv: path(self.csv),
            events: path(self.events),
            output_metrics: path(self.output_metrics),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Parse `trie`'s arguments (without the program name). Also returns whether
/// the live progress line is wanted.
pub fn parse(args: Vec<OsString>) -> Result<(Command, bool)> {
    if args.first().is_some_and(|a| a == "sim") {
        return Ok((parse_sim(args[1..].to_vec())?, false));
    }
    if let Some(cmd) = args
        .first()
        .and_then(|a| a.to_str())
        .filter(|a| *a == "report" || *a == "compare")
    {
        return Ok((parse_files(cmd, &args[1..])?, false));
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut raw = Raw::default();
    let mut progress = true;
    while let Some(arg) = parser
        .next()
        .map_err(|e| Error::usage(format!("{e}; see trie --help")))?
    {
        match arg {
            Short('h') | Long("help") => return Ok((Command::Print(HELP.to_string()), false)),
            Short('V') | Long("version") => {
                return Ok((
                    Command::Print(format!("trie {}\n", env!("CARGO_PKG_VERSION"))),
                    false,
                ));
            }
            Short('q') | Long("quiet") => progress = false,
            Long("no-stream") => raw.stream = Some(false),
            Long(name) => {
                let flag = format!("--{name}");
                if flag == "--stream" {
                    return Err(Error::usage(
                        "unknown flag --stream: streaming is the default; --no-stream turns it off",
                    ));
                }
                if !takes_value(&flag) {
                    return Err(Error::usage(format!(
                        "unknown flag {flag}; see trie --help"
                    )));
                }
                let v = value_of(&mut parser, &flag)?;
                raw.set(&flag, v)?;
            }
            Short(c) => return Err(Error::usage(format!("unknown flag -{c}; see trie --help"))),
            Value(v) => {
                let word = v
                    .into_string()
                    .map_err(|_| Error::usage("an argument is not valid UTF-8"))?;
                let Some((key, value)) = word.split_once('=') else {
                    return Err(Error::usage(format!(
                        "unexpected argument '{word}'; flags start with -- (see trie --help)"
                    )));
                };
                let Some((_, flag)) = PY_WORDS.iter().find(|(k, _)| *k == key) else {
                    return Err(Error::usage(format!(
                        "unknown setting '{key}='; known: {}",
                        PY_WORDS
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                raw.set(flag, value.to_string())?;
            }
        }
    }
    Ok((Command::Run(Box::new(raw.into_config()?)), progress))
}

/// `trie report FILE` / `trie compare FILE FILE...`.
fn parse_files(cmd: &str, args: &[OsString]) -> Result<Command> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Print(HELP.to_string()));
    }
    if let Some(flag) = args.iter().find(|a| a.to_string_lossy().starts_with('-')) {
        return Err(Error::usage(format!(
            "trie {cmd}: unknown flag {}; it takes results files written by --output",
            flag.to_string_lossy()
        )));
    }
    let files: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
    match (cmd, files.len()) {
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
            "--eos-after" => {
                c.quirks.eos_after = Some(whole(f, &v, limits::MAX_SIM_EOS_AFTER)? as usize)
            }
            _ => unreachable!("checked against `known`"),
        }
    }
    c.faults.validate()?;
    Ok(Command::Sim(Box::new(c)))
}

//! The validated run configuration, which is also the library's builder:
//! `Config::new(workload, endpoint).concurrency(8).run()`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits;

/// Where requests go.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    /// An OpenAI-compatible base URL, normalised to end in `/v1`.
    Url(String),
    /// The built-in simulated engine, started in-process on a free port.
    Sim,
}

/// Open-loop arrival process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Constant spacing `1 / rate` (as the Python version does).
    Constant,
    /// Exponential gaps with mean `1 / rate`.
    Poisson,
}

/// The default of `--max-inflight`: most open-loop traces in flight.
pub const DEFAULT_MAX_INFLIGHT: usize = 4096;

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadModel {
    /// `concurrency` slots, each running traces back to back.
    Closed {
        /// Number of slots.
        concurrency: usize,
    },
    /// Traces start on a schedule, whatever is in flight.
    Open {
        /// Traces per second.
        rate: f64,
        /// Spacing of arrivals.
        arrival: Arrival,
        /// Most traces in flight at once; later arrivals wait.
        max_inflight: usize,
    },
}

pub use crate::net::client::Api;

/// How chat requests are rendered (`--api chat`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatSettings {
    /// `--chat-template FILE`: the Jinja template the server uses, when it
    /// is not beside the tokenizer (or differs from it).
    pub template: Option<PathBuf>,
    /// `--chat-template-kwargs JSON`: variables for the template, sent as
    /// the request's `chat_template_kwargs` and used in trie's own
    /// rendering (`{"enable_thinking": false}`).
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// A prefix every trace starts with (`--shared-prefix`): a system prompt,
/// tool definitions, instructions shared across traces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SharedPrefix {
    /// Its tokens.
    pub tokens: u32,
    /// Distinct prefixes; a trace takes one by its sequence number modulo
    /// `groups`, or by a Zipf draw.
    pub groups: u32,
    /// The Zipf exponent of the draw (`None`: round robin).
    pub zipf: Option<f64>,
}

/// Embeddings requests (`--api embeddings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbedSettings {
    /// Tokens of each input (`None`: the trace's input prompt length).
    pub tokens: Option<u32>,
    /// Inputs per request.
    pub batch: u32,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            tokens: None,
            batch: 1,
        }
    }
}

/// A secret (API key) that never shows in `Debug` output, logs or files.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Workload path or alias (`agentic`, `qa`, `office`).
    pub workload: String,
    /// Where requests go.
    pub endpoint: Endpoint,
    /// Model name; `None` asks `GET /v1/models`.
    pub model: Option<String>,
    /// Tokenizer path, directory or Hub id; `None` means the model name.
    pub tokenizer: Option<String>,
    /// Closed or open loop.
    pub load: LoadModel,
    /// Deadline for starting traces.
    pub duration: Duration,
    /// Seed of all synthetic text.
    pub seed: u64,
    /// Bearer token; `None` or empty sends no Authorization header.
    pub api_key: Option<Secret>,
    /// Retries per request.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Timeout of connecting, and of each preflight request.
    pub connect_timeout: Duration,
    /// Longest SSE line (and non-streamed body) accepted, bytes.
    pub max_line_bytes: usize,
    /// GPUs behind the endpoint, for the per-GPU column.
    pub num_gpus: Option<u32>,
    /// Stream responses (needed for TTFT, TTFAT, decode speed, ITL).
    pub stream: bool,
    /// Print an info line with the remaining time this often.
    pub progress_interval: Option<Duration>,
    /// Files the run writes.
    pub files: Files,
    /// Many runs from one command: load lists, trials, SLOs, the search.
    pub sweep: Sweep,
    /// The API requests go to.
    pub api: Api,
    /// Chat rendering (`--api chat`).
    pub chat: ChatSettings,
    /// The prefix every trace starts with (`--shared-prefix`).
    pub prefix: Option<SharedPrefix>,
    /// What synthetic text says (`--text`).
    pub text: crate::text::content::TextMode,
    /// Embeddings requests (`--api embeddings`).
    pub embed: EmbedSettings,
}

/// Many runs from one command (`--concurrency 1,2,4`, `--trials`, `--slo`,
/// `trie capacity`). The default is one run of `load`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The load points, in order (`load` is the first); empty: `load` alone.
    pub points: Vec<LoadModel>,
    /// Runs of each point.
    pub trials: u32,
    /// Load run (and discarded) before each measured run.
    pub warmup: Option<Duration>,
    /// Pause after each run.
    pub cooldown: Option<Duration>,
    /// Reset the engine's prefix cache before each run.
    pub reset_cache: bool,
    /// Confidence of the intervals over trials (0.95: 95 %).
    pub confidence: f64,
    /// Service-level objectives judged per run.
    pub slo: Vec<crate::record::slo::Slo>,
    /// `trie capacity`: search for the most load meeting `slo`.
    pub search: Option<Search>,
    /// `--plot DIR`: SVG charts and an HTML report.
    pub plot: Option<PathBuf>,
}

impl Default for Sweep {
    fn default() -> Sweep {
        Sweep {
            points: Vec::new(),
            trials: 1,
            warmup: None,
            cooldown: None,
            reset_cache: false,
            confidence: 0.95,
            slo: Vec::new(),
            search: None,
            plot: None,
        }
    }
}

/// The capacity search's bounds (`trie capacity`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Search {
    /// Closed loop: the most concurrency probed.
    pub max_concurrency: usize,
    /// Open loop (when set): the highest arrival rate probed, traces/s.
    pub max_arrival_rate: Option<f64>,
    /// Stop bisecting when the bracket is within this percent of the
    /// passing value (and, closed loop, within ±1).
    pub precision_pct: f64,
}

impl Default for Search {
    fn default() -> Search {
        Search {
            max_concurrency: 1024,
            max_arrival_rate: None,
            precision_pct: 0.0,
        }
    }
}

/// Files a run writes (each optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Files {
    /// `--output`: the results JSON document, written atomically at the end.
    pub output: Option<PathBuf>,
    /// `--csv`: one row per completed trace.
    pub csv: Option<PathBuf>,
    /// `--events`: per-request JSONL, each line flushed as it is written.
    pub events: Option<PathBuf>,
    /// `--output-metrics`: one JSONL row of output tokens per completed trace.
    pub output_metrics: Option<PathBuf>,
}

impl Files {
    /// (flag, path) of every file asked for.
    pub fn all(&self) -> Vec<(&'static str, &Path)> {
        [
            ("--output", &self.output),
            ("--csv", &self.csv),
            ("--events", &self.events),
            ("--output-metrics", &self.output_metrics),
        ]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect()
    }
}

impl Config {
    /// A run of `workload` against `endpoint` (a URL or `sim`) with the
    /// defaults: concurrency 1, 300 s, seed 0, 2 retries, 600 s timeout,
    /// 10 s connect timeout, streaming.
    pub fn new(workload: &str, endpoint: &str) -> Result<Config> {
        Ok(Config {
            workload: workload.to_string(),
            endpoint: parse_endpoint(endpoint)?,
            model: None,
            tokenizer: None,
            load: LoadModel::Closed { concurrency: 1 },
            duration: Duration::from_secs(300),
            seed: 0,
            api_key: None,
            max_retries: 2,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            max_line_bytes: limits::MAX_LINE_BYTES.0,
            num_gpus: None,
            stream: true,
            progress_interval: None,
            files: Files::default(),
            sweep: Sweep::default(),
            api: Api::Completions,
            chat: ChatSettings::default(),
            prefix: None,
            text: Default::default(),
            embed: EmbedSettings::default(),
        })
    }

    /// Set the model name.
    pub fn model(mut self, model: &str) -> Config {
        self.model = Some(model.to_string());
        self
    }

    /// Set the tokenizer (path, directory or Hub id).
    pub fn tokenizer(mut self, tokenizer: &str) -> Config {
        self.tokenizer = Some(tokenizer.to_string());
        self
    }

    /// Closed loop with `n` slots.
    pub fn concurrency(mut self, n: usize) -> Config {
        self.load = LoadModel::Closed { concurrency: n };
        self
    }

    /// Open loop at `rate` traces/s.
    pub fn arrival_rate(mut self, rate: f64, arrival: Arrival, max_inflight: usize) -> Config {
        self.load = LoadModel::Open {
            rate,
            arrival,
            max_inflight,
        };
        self
    }

    /// Deadline for starting traces.
    pub fn duration(mut self, d: Duration) -> Config {
        self.duration = d;
        self
    }

    /// Seed of the synthetic text.
    pub fn seed(mut self, seed: u64) -> Config {
        self.seed = seed;
        self
    }

    /// Bearer token.
    pub fn api_key(mut self, key: &str) -> Config {
        self.api_key = Some(Secret::new(key));
        self
    }

    /// Retries per request.
    pub fn max_retries(mut self, n: u32) -> Config {
        self.max_retries = n;
        self
    }

    /// Per-request timeout.
    pub fn timeout(mut self, d: Duration) -> Config {
        self.timeout = d;
        self
    }

    /// Timeout of connecting and of each preflight request.
    pub fn connect_timeout(mut self, d: Duration) -> Config {
        self.connect_timeout = d;
        self
    }

    /// Longest SSE line (and non-streamed body) accepted, bytes.
    pub fn max_line_bytes(mut self, n: usize) -> Config {
        self.max_line_bytes = n;
        self
    }

    /// GPUs behind the endpoint.
    pub fn num_gpus(mut self, n: u32) -> Config {
        self.num_gpus = Some(n);
        self
    }

    /// Send requests to `api`.
    pub fn api(mut self, api: Api) -> Config {
        self.api = api;
        self
    }

    /// Render chat requests with this template file (`--chat-template`).
    pub fn chat_template(mut self, path: impl Into<PathBuf>) -> Config {
        self.chat.template = Some(path.into());
        self
    }

    /// Start every trace with one of `groups` shared prefixes of `tokens`
    /// tokens (`zipf`: drawn with this exponent, else round robin).
    pub fn shared_prefix(mut self, tokens: u32, groups: u32, zipf: Option<f64>) -> Config {
        self.prefix = Some(SharedPrefix {
            tokens,
            groups,
            zipf,
        });
        self
    }

    /// Embeddings: `tokens` per input (`None`: each trace's input prompt
    /// length), `batch` inputs per request.
    pub fn embed(mut self, tokens: Option<u32>, batch: u32) -> Config {
        self.embed = EmbedSettings { tokens, batch };
        self
    }

    /// What synthetic text says (`--text`).
    pub fn text(mut self, mode: crate::text::content::TextMode) -> Config {
        self.text = mode;
        self
    }

    /// Stream responses or not.
    pub fn stream(mut self, on: bool) -> Config {
        self.stream = on;
        self
    }

    /// Write the results JSON document here.
    pub fn output(mut self, path: impl Into<PathBuf>) -> Config {
        self.files.output = Some(path.into());
        self
    }

    /// Write one CSV row per completed trace here.
    pub fn csv(mut self, path: impl Into<PathBuf>) -> Config {
        self.files.csv = Some(path.into());
        self
    }

    /// Write the per-request event log (JSONL) here.
    pub fn events(mut self, path: impl Into<PathBuf>) -> Config {
        self.files.events = Some(path.into());
        self
    }

    /// Write per-trace output-token rows (JSONL) here.
    pub fn output_metrics(mut self, path: impl Into<PathBuf>) -> Config {
        self.files.output_metrics = Some(path.into());
        self
    }

    /// Slots for the closed loop, or the in-flight limit of the open loop.
    pub fn max_slots(&self) -> usize {
        let slots = |l: &LoadModel| match *l {
            LoadModel::Closed { concurrency } => concurrency,
            LoadModel::Open { max_inflight, .. } => max_inflight,
        };
        // A search probes loads beyond the points: up to --max-concurrency,
        // or (open loop) the in-flight limit of its arrival rates.
        let search = match self.sweep.search {
            Some(s) if s.max_arrival_rate.is_none() => s.max_concurrency,
            Some(_) => match self.load {
                LoadModel::Open { max_inflight, .. } => max_inflight,
                LoadModel::Closed { .. } => DEFAULT_MAX_INFLIGHT,
            },
            None => 0,
        };
        self.points()
            .iter()
            .map(slots)
            .max()
            .unwrap_or(0)
            .max(search)
    }

    /// The load points of the sweep, in order (`[load]` for one run).
    pub fn points(&self) -> Vec<LoadModel> {
        if self.sweep.points.is_empty() {
            vec![self.load]
        } else {
            self.sweep.points.clone()
        }
    }

    /// More than one run: a sweep document instead of a run's.
    pub fn is_sweep(&self) -> bool {
        let sw = &self.sweep;
        // SLOs, warm-ups and cache resets are sweep machinery: one point
        // with them is a sweep of one run (its document carries verdicts).
        self.points().len() > 1
            || sw.trials > 1
            || sw.search.is_some()
            || !sw.slo.is_empty()
            || sw.warmup.is_some()
            || sw.cooldown.is_some()
            || sw.reset_cache
    }

    /// This configuration at load point `load` (one run of a sweep).
    pub fn at(&self, load: LoadModel) -> Config {
        let mut c = self.clone();
        c.load = load;
        c.sweep.points.clear();
        c
    }

    /// Closed loop at each of `concurrencies`, one point each, in order.
    pub fn concurrencies(mut self, concurrencies: &[usize]) -> Config {
        self.sweep.points = concurrencies
            .iter()
            .map(|&concurrency| LoadModel::Closed { concurrency })
            .collect();
        if let Some(first) = self.sweep.points.first() {
            self.load = *first;
        }
        self
    }

    /// Runs of each point.
    pub fn trials(mut self, n: u32) -> Config {
        self.sweep.trials = n;
        self
    }

    /// Write SVG charts and `report.html` into `dir`.
    pub fn plot(mut self, dir: impl Into<PathBuf>) -> Config {
        self.sweep.plot = Some(dir.into());
        self
    }

    /// Service-level objectives (the `--slo` grammar).
    pub fn slo(mut self, text: &str) -> Result<Config> {
        self.sweep.slo = crate::record::slo::parse(text)?;
        Ok(self)
    }

    /// Check every value against its bounds ([`crate::limits`]); errors
    /// name the flag and the allowed range.
    pub fn validate(&self) -> Result<()> {
        for load in self.points() {
            self.at(load).validate_load()?;
        }
        if self.api == Api::Embeddings && self.prefix.is_some() {
            return Err(Error::usage(
                "--shared-prefix starts the traces of completions or chat; embeddings inputs have none",
            ));
        }
        check_count(
            "--embed-batch",
            self.embed.batch as usize,
            1,
            limits::MAX_EMBED_BATCH as usize,
        )?;
        if let Some(t) = self.embed.tokens {
            check_count(
                "--embed-tokens",
                t as usize,
                1,
                limits::MAX_CONTEXT_TOKENS as usize,
            )?;
            let total = t as u64 * self.embed.batch as u64;
            if total > limits::MAX_CONTEXT_TOKENS {
                return Err(Error::usage(format!(
                    "--embed-tokens {t} x --embed-batch {} is {total} tokens per request, too many: at most {}; lower one of them",
                    self.embed.batch,
                    limits::MAX_CONTEXT_TOKENS
                )));
            }
        }
        if let Some(p) = self.prefix {
            check_count(
                "--shared-prefix",
                p.tokens as usize,
                1,
                limits::MAX_PREFIX_TOKENS as usize,
            )?;
            check_count(
                "--prefix-groups",
                p.groups as usize,
                1,
                limits::MAX_PREFIX_GROUPS as usize,
            )?;
            if let Some(s) = p.zipf
                && !(s.is_finite() && s > 0.0 && s <= limits::MAX_ZIPF)
            {
                return Err(Error::usage(format!(
                    "--prefix-zipf {s} is out of range: above 0, at most {}",
                    limits::MAX_ZIPF
                )));
            }
        }
        let sw = &self.sweep;
        if sw.trials == 0 || sw.trials > limits::MAX_TRIALS {
            return Err(Error::usage(format!(
                "--trials {} is out of range: from 1 to {}",
                sw.trials,
                limits::MAX_TRIALS
            )));
        }
        if sw.points.len() > limits::MAX_POINTS {
            return Err(Error::usage(format!(
                "{} load points is too many: at most {}",
                sw.points.len(),
                limits::MAX_POINTS
            )));
        }
        for (flag, d) in [("--warmup", sw.warmup), ("--cooldown", sw.cooldown)] {
            if let Some(d) = d {
                check_seconds(flag, d)?;
            }
        }
        if !(sw.confidence > 0.0 && sw.confidence < 1.0) {
            return Err(Error::usage(format!(
                "--confidence {} is out of range: between 0 and 100 percent, exclusive",
                100.0 * sw.confidence
            )));
        }
        if let Some(s) = sw.search {
            if sw.slo.is_empty() {
                return Err(Error::usage(
                    "trie capacity needs --slo: the conditions a load point must meet (e.g. --slo 'ttfat_s:p90<=8')",
                ));
            }
            check_count("--max-concurrency", s.max_concurrency, 1, limits::MAX_SLOTS)?;
            if let Some(r) = s.max_arrival_rate {
                let (lo, hi) = limits::ARRIVAL_RATE;
                if !(r.is_finite() && (lo..=hi).contains(&r)) {
                    return Err(Error::usage(format!(
                        "--max-arrival-rate {r} is out of range: from {lo} to {hi} traces per second"
                    )));
                }
            }
            match (s.max_arrival_rate, self.load) {
                (None, LoadModel::Closed { concurrency }) if concurrency > s.max_concurrency => {
                    return Err(Error::usage(format!(
                        "--concurrency {concurrency} (where the search starts) is above --max-concurrency {}; lower it or raise --max-concurrency",
                        s.max_concurrency
                    )));
                }
                (Some(max), LoadModel::Open { rate, .. }) if rate > max => {
                    return Err(Error::usage(format!(
                        "--arrival-rate {rate} (where the search starts) is above --max-arrival-rate {max}; lower it or raise --max-arrival-rate"
                    )));
                }
                _ => {}
            }
            if !(0.0..=50.0).contains(&s.precision_pct) {
                return Err(Error::usage(format!(
                    "--precision {} is out of range: from 0 to 50 percent",
                    s.precision_pct
                )));
            }
        }
        Ok(())
    }

    /// Check the values of one run.
    fn validate_load(&self) -> Result<()> {
        if let Some(at) = self
            .api_key
            .as_ref()
            .and_then(|k| k.expose().chars().position(|c| !c.is_ascii_graphic()))
        {
            // Never echo the key itself.
            return Err(Error::usage(format!(
                "--api-key has a character that cannot go in an HTTP header (a space, newline or non-ASCII letter) at position {}; check the key (a key file with a trailing newline?)",
                at + 1
            )));
        }
        match self.load {
            LoadModel::Closed { concurrency } => {
                check_count("--concurrency", concurrency, 1, limits::MAX_SLOTS)?
            }
            LoadModel::Open {
                rate, max_inflight, ..
            } => {
                let (lo, hi) = limits::ARRIVAL_RATE;
                if !(rate.is_finite() && (lo..=hi).contains(&rate)) {
                    return Err(Error::usage(format!(
                        "--arrival-rate {rate} is out of range: from {lo} to {hi} traces per second"
                    )));
                }
                check_count("--max-inflight", max_inflight, 1, limits::MAX_SLOTS)?;
            }
        }
        check_seconds("--duration", self.duration)?;
        check_seconds("--timeout", self.timeout)?;
        check_seconds("--connect-timeout", self.connect_timeout)?;
        if let Some(p) = self.progress_interval {
            check_seconds("--progress-interval", p)?;
            if p.as_secs_f64() < limits::MIN_PROGRESS_INTERVAL_S {
                return Err(Error::usage(format!(
                    "--progress-interval must be at least {} seconds",
                    limits::MIN_PROGRESS_INTERVAL_S
                )));
            }
        }
        if self.max_retries > limits::MAX_RETRIES {
            return Err(Error::usage(format!(
                "--max-retries {} is too large: at most {}",
                self.max_retries,
                limits::MAX_RETRIES
            )));
        }
        let (_, lo, hi) = limits::MAX_LINE_BYTES;
        check_count("--max-line-bytes", self.max_line_bytes, lo, hi)?;
        if self.num_gpus == Some(0) {
            return Err(Error::usage("--num-gpus must be at least 1"));
        }
        Ok(())
    }
}

/// `n` within `lo..=hi`, or an error naming `flag`.
fn check_count(flag: &str, n: usize, lo: usize, hi: usize) -> Result<()> {
    if n < lo {
        Err(Error::usage(format!("{flag} must be at least {lo}")))
    } else if n > hi {
        Err(Error::usage(format!(
            "{flag} {n} is too large: at most {hi}"
        )))
    } else {
        Ok(())
    }
}

/// A duration within `(0, MAX_SECONDS]`, or an error naming `flag`.
fn check_seconds(flag: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::usage(format!("{flag} must be more than 0 seconds")));
    }
    if d.as_secs_f64() > limits::MAX_SECONDS {
        return Err(Error::usage(format!(
            "{flag} {} s is too large: at most {} seconds",
            d.as_secs_f64(),
            limits::MAX_SECONDS
        )));
    }
    Ok(())
}

/// `sim`, or a URL normalised to `scheme://host[:port][/path]/v1`: the
/// scheme in lowercase, a trailing `/` or `/completions` dropped, `/v1`
/// added when missing; a chat route is refused (not silently swapped).
pub fn parse_endpoint(raw: &str) -> Result<Endpoint> {
    let s = raw.trim();
    if s == "sim" {
        return Ok(Endpoint::Sim);
    }
    let fix = "pass --endpoint http://HOST:PORT[/v1] (or `sim` for the built-in engine)";
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::usage(format!(
            "--endpoint '{}' contains spaces or control characters (another flag inside its value?); {fix}",
            s.escape_debug()
        )));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(Error::usage(format!(
            "--endpoint '{raw}' is not a URL; {fix}"
        )));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(Error::usage(format!(
            "--endpoint '{raw}': scheme must be http or https; {fix}"
        )));
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.contains('@') {
        // Never echo it: the part before '@' is a password.
        return Err(Error::usage(
            "--endpoint must not carry credentials (user:password@host); pass the key with --api-key or OPENAI_API_KEY",
        ));
    }
    // `[v6]:port`, `name:port`, or no port.
    let (hostname, port) = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => ("", None),
        },
        None => match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        },
    };
    if hostname.is_empty() {
        return Err(Error::usage(format!(
            "--endpoint '{raw}' has no valid host; {fix}"
        )));
    }
    if let Some(port) = port.filter(|p| p.parse::<u16>().map(|p| p == 0).unwrap_or(true)) {
        return Err(Error::usage(format!(
            "--endpoint '{raw}': port '{port}' is not a port number 1-65535; {fix}"
        )));
    }
    if rest.contains(['?', '#']) {
        return Err(Error::usage(format!(
            "--endpoint '{raw}' must not carry a query or fragment; {fix}"
        )));
    }
    let mut rest = rest.trim_end_matches('/');
    for (route, api) in [("/chat/completions", "chat"), ("/embeddings", "embeddings")] {
        if rest.ends_with(route) {
            let what = if api == "chat" {
                "a chat completions"
            } else {
                "an embeddings"
            };
            return Err(Error::usage(format!(
                "--endpoint '{raw}' is {what} route: pass the API base (…/v1), and --api {api}"
            )));
        }
    }
    if let Some(base) = rest.strip_suffix("/completions") {
        rest = base.trim_end_matches('/');
    }
    let base = if rest.ends_with("/v1") {
        rest.to_string()
    } else {
        format!("{rest}/v1")
    };
    Ok(Endpoint::Url(format!("{scheme}://{base}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise_to_v1() {
        for (raw, want) in [
            ("http://localhost:8000", "http://localhost:8000/v1"),
            ("http://localhost:8000/", "http://localhost:8000/v1"),
            ("http://localhost:8000/v1", "http://localhost:8000/v1"),
            ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
            (
                "https://api.example.com/proxy",
                "https://api.example.com/proxy/v1",
            ),
            ("http://[::1]:8000", "http://[::1]:8000/v1"),
            ("HTTP://Host:8000", "http://Host:8000/v1"),
            ("http://h:8000/v1/completions", "http://h:8000/v1"),
            ("http://h:8000/completions", "http://h:8000/v1"),
        ] {
            assert_eq!(
                parse_endpoint(raw).unwrap(),
                Endpoint::Url(want.to_string()),
                "{raw}"
            );
        }
        assert_eq!(parse_endpoint("sim").unwrap(), Endpoint::Sim);
        for bad in [
            "localhost:8000",
            "ftp://x",
            "http://",
            "http://:80",
            "http://h:99999",
            "http://h:x/v1",
            "http://h/v1?x=1",
            "http://user:pw@h:8000",
            "http://h:8000 --model m",
            "http://h:8000/v1\tx",
            "http://h:80/a b/v1",
            "http://h:8000/v1/chat/completions/",
        ] {
            assert!(matches!(parse_endpoint(bad), Err(Error::Usage(_))), "{bad}");
        }
        let e = parse_endpoint("http://user:hunter2@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}

//! The validated run configuration, which is also the library's builder:
//! `Config::new(workload, endpoint).concurrency(8).run()`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

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
    /// GPUs behind the endpoint, for the per-GPU column.
    pub num_gpus: Option<u32>,
    /// Stream responses (needed for TTFT, TTFAT, decode speed, ITL).
    pub stream: bool,
    /// Print an info line with the remaining time this often.
    pub progress_interval: Option<Duration>,
    /// Files the run writes.
    pub files: Files,
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

    /// Check each file can be created: its directory exists and it is not a
    /// directory itself. Nothing is created or truncated here.
    pub fn check(&self) -> Result<()> {
        let all = self.all();
        for (i, (flag, path)) in all.iter().enumerate() {
            let shown = path.display();
            if path.is_dir() {
                return Err(Error::usage(format!(
                    "{flag} {shown} is a directory; pass a file path"
                )));
            }
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(Error::usage(format!(
                    "{flag} {shown}: directory {} does not exist; create it or pass another path",
                    parent.display()
                )));
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, p)| p == path) {
                return Err(Error::usage(format!(
                    "{flag} and {other} both name {shown}; pass different files"
                )));
            }
        }
        Ok(())
    }
}

impl Config {
    /// A run of `workload` against `endpoint` (a URL or `sim`) with the
    /// defaults: concurrency 1, 300 s, seed 0, 2 retries, 600 s timeout, streaming.
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
            num_gpus: None,
            stream: true,
            progress_interval: None,
            files: Files::default(),
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

    /// GPUs behind the endpoint.
    pub fn num_gpus(mut self, n: u32) -> Config {
        self.num_gpus = Some(n);
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

    /// Run the benchmark (see [`crate::run::run`]).
    pub fn run(&self) -> Result<crate::Summary> {
        crate::run::run(self, &crate::run::Hooks::default())
    }

    /// Slots for the closed loop, or the in-flight limit of the open loop.
    pub fn max_slots(&self) -> usize {
        match self.load {
            LoadModel::Closed { concurrency } => concurrency,
            LoadModel::Open { max_inflight, .. } => max_inflight,
        }
    }

    /// Check values that the builder could not check one at a time.
    pub fn validate(&self) -> Result<()> {
        match self.load {
            LoadModel::Closed { concurrency: 0 } => {
                return Err(Error::usage("--concurrency must be at least 1"));
            }
            LoadModel::Open {
                rate, max_inflight, ..
            } => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(Error::usage(
                        "--arrival-rate must be a positive number of traces per second",
                    ));
                }
                if max_inflight == 0 {
                    return Err(Error::usage("--max-inflight must be at least 1"));
                }
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return Err(Error::usage("--duration must be more than 0 seconds"));
        }
        if self.timeout.is_zero() {
            return Err(Error::usage("--timeout must be more than 0 seconds"));
        }
        if self.num_gpus == Some(0) {
            return Err(Error::usage("--num-gpus must be at least 1"));
        }
        self.files.check()
    }
}

/// `sim`, or a URL normalised to `scheme://host[:port][/path]/v1`.
pub fn parse_endpoint(raw: &str) -> Result<Endpoint> {
    let s = raw.trim();
    if s == "sim" {
        return Ok(Endpoint::Sim);
    }
    let fix = "pass --endpoint http://HOST:PORT[/v1] (or `sim` for the built-in engine)";
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(Error::usage(format!(
            "--endpoint '{raw}' is not a URL; {fix}"
        )));
    };
    if scheme != "http" && scheme != "https" {
        return Err(Error::usage(format!(
            "--endpoint '{raw}': scheme must be http or https; {fix}"
        )));
    }
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or("");
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
    if host.contains('@') {
        // Never echo it: the part before '@' is a password.
        return Err(Error::usage(
            "--endpoint must not carry credentials (user:password@host); pass the key with --api-key or OPENAI_API_KEY",
        ));
    }
    if hostname.is_empty() || host.contains(' ') {
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

//! The files a run leaves behind: the results document (`--output`), the CSV
//! of completed traces (`--csv`), the per-request event log (`--events`) and
//! the Python version's output-metrics rows (`--output-metrics`). Rendering is
//! pure; writing is atomic (temporary file + rename), except the event log,
//! which is appended and flushed line by line so a killed run keeps it.
//!
//! `data/results.schema.json` is the JSON Schema of [`Results`]; a test checks
//! real documents against it and that README documents every field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::{Arrival, Config, Endpoint, LoadModel};
use crate::error::{Error, Result};
use crate::output::report;
use crate::record::event::{Event, Next, trace_id};
use crate::record::records::Records;
use crate::record::summary::Summary;

/// Version of the results document layout; bumped on incompatible changes
/// (2: absent figures are `null`; 3: per-request stats; 4: raw records).
/// Older documents
/// are still read.
pub const SCHEMA_VERSION: u32 = 4;

/// What happens at the deadline, in words (SPEC §4).
pub const DEADLINE_POLICY: &str = "traces start until duration_s; at the deadline (or on Ctrl+C / SIGTERM) requests in flight are cut off at once; their traces count as cancelled, neither completed nor failed; their finished requests still count in the token curve";

/// The results document of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Version of trie that wrote it.
    pub trie_version: String,
    /// Start of the run, RFC 3339 UTC.
    pub started_at: String,
    /// Host name of the machine trie ran on.
    pub host: String,
    /// The run's configuration, secrets removed.
    pub config: RunConfig,
    /// The deadline policy and what it did.
    pub deadline: Deadline,
    /// Every figure of the `benchmark complete` line, by the same names
    /// (`null`: not measured).
    pub figures: BTreeMap<String, Option<f64>>,
    /// Everything measured: per-trace stats, rates, failures, per-trace
    /// records, the token curve.
    pub summary: Summary,
    /// The raw rows every figure of `summary` is computed from
    /// ([`crate::record::records::summarize`]; absent before schema 4).
    #[serde(default)]
    pub records: Option<Records>,
}

/// `--text` of documents written before it existed.
fn words() -> String {
    "words".into()
}

/// The configuration of a run as recorded (no secrets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `--workload` as given (path or alias).
    pub workload: String,
    /// The file read.
    pub workload_path: String,
    /// FNV-1a of its bytes (hex).
    pub workload_fnv1a: String,
    /// `--tokenizer` as given (`null`: derived from the model, or bundled for `sim`).
    pub tokenizer: Option<String>,
    /// The tokenizer.json read.
    pub tokenizer_path: String,
    /// FNV-1a of its bytes (hex).
    pub tokenizer_fnv1a: String,
    /// The preflight found the server reads non-special added-token text
    /// (such as `<｜Assistant｜>`) as plain text, and replies were counted so.
    pub added_tokens_as_text: bool,
    /// The API requests went to (absent from older documents: completions).
    #[serde(default)]
    pub api: crate::net::client::Api,
    /// Chat: how prompt tokens were counted (the template trie rendered and
    /// the tokens the server adds to it, or the calibration from the
    /// server's counts); `null` for completions.
    #[serde(default)]
    pub chat_counting: Option<String>,
    /// Chat: `--chat-template-kwargs`.
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// `--shared-prefix`: tokens of the prefix every trace starts with.
    #[serde(default)]
    pub shared_prefix: Option<u32>,
    /// `--prefix-groups` (with a shared prefix).
    #[serde(default)]
    pub prefix_groups: Option<u32>,
    /// `--prefix-zipf` (with a shared prefix).
    #[serde(default)]
    pub prefix_zipf: Option<f64>,
    /// Embeddings: `--embed-tokens` (`null`: each trace's input prompt
    /// length; or not embeddings).
    #[serde(default)]
    pub embed_tokens: Option<u32>,
    /// Embeddings: `--embed-batch` (`null`: not embeddings).
    #[serde(default)]
    pub embed_batch: Option<u32>,
    /// `--text`: what synthetic text says (absent from older documents:
    /// words).
    #[serde(default = "words")]
    pub text: String,
    /// Base URL requests went to.
    pub endpoint: String,
    /// Whether it was the built-in simulated engine.
    pub endpoint_is_sim: bool,
    /// Model name sent.
    pub model: String,
    /// `closed` or `open`.
    pub load: String,
    /// Closed loop: slots.
    pub concurrency: Option<usize>,
    /// Open loop: traces/s.
    pub arrival_rate: Option<f64>,
    /// Open loop: `constant` or `poisson`.
    pub arrival: Option<String>,
    /// Open loop: in-flight limit.
    pub max_inflight: Option<usize>,
    /// Deadline for starting traces, seconds.
    pub duration_s: f64,
    /// Seed of all synthetic text.
    pub seed: u64,
    /// Retries per request.
    pub max_retries: u32,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
    /// Connect (and preflight request) timeout, seconds (absent from
    /// version 1 documents).
    #[serde(default)]
    pub connect_timeout_s: f64,
    /// Longest SSE line accepted, bytes (absent from version 1 documents).
    #[serde(default)]
    pub max_line_bytes: usize,
    /// GPUs behind the endpoint.
    pub num_gpus: Option<u32>,
    /// Whether requests asked to stream.
    pub stream: bool,
    /// Whether an API key was sent (the key itself is never recorded).
    pub api_key_set: bool,
    /// Progress log interval, seconds.
    pub progress_interval_s: Option<f64>,
    /// `--output`.
    pub output: Option<String>,
    /// `--csv`.
    pub csv: Option<String>,
    /// `--events`.
    pub events: Option<String>,
    /// `--output-metrics`.
    pub output_metrics: Option<String>,
}

/// The deadline policy and what happened to traces in flight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deadline {
    /// [`DEADLINE_POLICY`].
    pub policy: String,
    /// The run was stopped by Ctrl+C / SIGTERM before its deadline.
    pub interrupted: bool,
    /// When the stop came, seconds since the start.
    pub stopped_at_s: f64,
    /// Traces in flight at the stop (cancelled).
    pub cancelled_traces: u64,
    /// Requests cut off in flight, or while waiting to be retried, at the stop.
    pub cancelled_requests: u64,
}

fn path_string(p: &Option<std::path::PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

impl RunConfig {
    /// The record of `cfg`; the other arguments are what the run resolved.
    pub fn new(
        cfg: &Config,
        endpoint: &str,
        model: &str,
        workload_path: &Path,
        workload_fnv1a: &str,
        tokenizer: &crate::text::tokenizer::Tokenizer,
        added_tokens_as_text: bool,
    ) -> RunConfig {
        let mut rc = RunConfig {
            workload: cfg.workload.clone(),
            workload_path: workload_path.display().to_string(),
            workload_fnv1a: workload_fnv1a.to_string(),
            tokenizer: cfg.tokenizer.clone(),
            tokenizer_path: tokenizer.source.clone(),
            tokenizer_fnv1a: tokenizer.content_hash.clone(),
            added_tokens_as_text,
            api: cfg.api,
            chat_template_kwargs: (!cfg.chat.kwargs.is_empty()).then(|| cfg.chat.kwargs.clone()),
            shared_prefix: cfg.prefix.map(|p| p.tokens),
            prefix_groups: cfg.prefix.map(|p| p.groups),
            prefix_zipf: cfg.prefix.and_then(|p| p.zipf),
            text: cfg.text.name(),
            embed_tokens: cfg
                .embed
                .tokens
                .filter(|_| cfg.api == crate::net::client::Api::Embeddings),
            embed_batch: (cfg.api == crate::net::client::Api::Embeddings)
                .then_some(cfg.embed.batch),
            endpoint: endpoint.to_string(),
            endpoint_is_sim: cfg.endpoint == Endpoint::Sim,
            model: crate::redact::name(model),
            duration_s: cfg.duration.as_secs_f64(),
            seed: cfg.seed,
            max_retries: cfg.max_retries,
            timeout_s: cfg.timeout.as_secs_f64(),
            connect_timeout_s: cfg.connect_timeout.as_secs_f64(),
            max_line_bytes: cfg.max_line_bytes,
            num_gpus: cfg.num_gpus,
            stream: cfg.stream,
            api_key_set: cfg.api_key.is_some(),
            progress_interval_s: cfg.progress_interval.map(|d| d.as_secs_f64()),
            output: path_string(&cfg.files.output),
            csv: path_string(&cfg.files.csv),
            events: path_string(&cfg.files.events),
            output_metrics: path_string(&cfg.files.output_metrics),
            ..RunConfig::default()
        };
        rc.set_load(&cfg.load);
        rc
    }

    /// Record `load` as the run's load (each run of a sweep has its own).
    pub fn set_load(&mut self, load: &LoadModel) {
        (
            self.load,
            self.concurrency,
            self.arrival_rate,
            self.arrival,
            self.max_inflight,
        ) = match *load {
            LoadModel::Closed { concurrency } => {
                ("closed".into(), Some(concurrency), None, None, None)
            }
            LoadModel::Open {
                rate,
                arrival,
                max_inflight,
            } => (
                "open".into(),
                None,
                Some(rate),
                Some(
                    match arrival {
                        Arrival::Constant => "constant",
                        Arrival::Poisson => "poisson",
                    }
                    .into(),
                ),
                Some(max_inflight),
            ),
        };
    }
}

impl Results {
    /// The document of a finished run.
    pub fn new(
        started: SystemTime,
        config: RunConfig,
        stopped_at_s: f64,
        summary: Summary,
        records: Records,
    ) -> Results {
        Results {
            schema_version: SCHEMA_VERSION,
            trie_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: rfc3339(started),
            host: host_name(),
            config,
            deadline: Deadline {
                policy: DEADLINE_POLICY.to_string(),
                interrupted: summary.interrupted,
                stopped_at_s,
                cancelled_traces: summary.cancelled_traces,
                cancelled_requests: summary.cancelled_requests,
            },
            figures: report::figure_map(&summary),
            summary,
            records: Some(records),
        }
    }

    /// Read a run's results document; errors name the file and the fix.
    pub fn read(path: &Path) -> Result<Results> {
        let value = read_document(path)?;
        parse_document(path, value)
    }

    /// The run's figures: computed again from its records
    /// ([`crate::record::records::summarize`]) when the document has them (schema 4
    /// on), else as stored.
    pub fn summarize(&self) -> Summary {
        match &self.records {
            Some(r) => {
                crate::record::records::summarize(&self.summary, r, self.summary.wall_time_s)
            }
            None => self.summary.clone(),
        }
    }

    /// The document as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// The JSON of a results document (a run's or a sweep's), its version
/// checked; errors name the file and the fix.
pub fn read_document(path: &Path) -> Result<serde_json::Value> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!(
            "{shown}: cannot read it ({e}); pass a file written by trie --output"
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::usage(format!(
            "{shown}: not JSON ({e}); pass a file written by trie --output"
        ))
    })?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        None => Err(Error::usage(format!(
            "{shown}: no schema_version, not a trie results file; pass a file written by trie --output"
        ))),
        Some(v) if v > SCHEMA_VERSION as u64 => Err(Error::usage(format!(
            "{shown}: schema_version {v} is newer than this trie reads ({SCHEMA_VERSION}); use a newer trie"
        ))),
        Some(_) => Ok(value),
    }
}

/// `value` (read from `path`) as a `T`; the error names the file.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::usage(format!(
            "{}: not a valid trie results file ({e}); pass a file written by trie --output",
            path.display()
        ))
    })
}

/// The header of the per-trace CSV (`--csv`).
pub const CSV_HEADER: &str = "trace_id,template,slot,start_s,latency_s,ttft_s,ttfat_s,decode_tps,decode_tpot_ms,itl_ms,cache_hit_rate_pct,eligible_cache_hit_rate_pct,requests,output_tokens_per_trace,output_tokens_per_turn,retries";

/// One CSV row per completed trace (an absent figure, such as one that
/// needs streaming in a run that did not stream, is an empty cell; per-turn
/// tokens joined by `;`).
pub fn csv(s: &Summary) -> String {
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
    let pct = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_default();
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for t in &s.traces {
        let turns: Vec<String> = t
            .output_tokens_per_turn
            .iter()
            .map(u64::to_string)
            .collect();
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6},{},{},{},{},{},{},{},{},{},{},{}\n",
            t.trace_id,
            t.template,
            t.slot,
            t.start_s,
            t.latency_s,
            opt(t.ttft_s),
            opt(t.ttfat_s),
            opt(t.decode_tps),
            opt(t.decode_tpot_ms),
            opt(t.itl_ms),
            pct(t.cache_hit_rate_pct),
            pct(t.eligible_cache_hit_rate_pct),
            t.output_tokens_per_turn.len(),
            t.output_tokens_per_trace,
            turns.join(";"),
            t.retries,
        ));
    }
    out
}

/// The Python version's output-metrics rows: one JSON object per completed
/// trace with `request_id`, `output_tokens_per_turn`, `output_tokens_per_trace`.
pub fn output_metrics(s: &Summary) -> String {
    output_metrics_tagged(s, None)
}

/// The `--output-metrics` rows of `s`, each with `point` and `trial` when
/// `tag` is given (a run of a sweep).
pub fn output_metrics_tagged(s: &Summary, tag: Option<(usize, u32)>) -> String {
    s.traces
        .iter()
        .map(|t| {
            let mut row = serde_json::json!({
                "request_id": t.trace_id,
                "output_tokens_per_turn": t.output_tokens_per_turn,
                "output_tokens_per_trace": t.output_tokens_per_trace,
            });
            if let Some((point, trial)) = tag {
                row["point"] = point.into();
                row["trial"] = trial.into();
            }
            row.to_string() + "\n"
        })
        .collect()
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

/// One line of the event log (README, "The event log").
#[derive(Default, Serialize)]
struct EventLine<'a> {
    trace_id: String,
    template: usize,
    slot: usize,
    turn: usize,
    status: &'static str,
    start_us: u64,
    first_chunk_us: Option<u64>,
    end_us: u64,
    expected_prompt_tokens: u64,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    max_tokens: u64,
    retries: u32,
    failure: Option<String>,
    message: Option<&'a str>,
    body_fnv1a: Option<String>,
    server_timings: Option<crate::net::sse::ServerTimings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    point: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trial: Option<u32>,
}

/// The event-log line of a request event (`None` for other events).
pub fn event_json(ev: &Event, tag: Option<(usize, u32)>) -> Option<String> {
    let hex = |h: Option<u64>| h.map(|h| format!("{h:016x}"));
    let line = match ev {
        Event::Request(r) => EventLine {
            trace_id: trace_id(r.seq),
            template: r.template,
            slot: r.slot,
            turn: r.turn,
            status: "ok",
            start_us: micros(r.start),
            first_chunk_us: r.ttft.map(|t| micros(r.start + t)),
            end_us: micros(r.start + r.latency),
            expected_prompt_tokens: r.expected_prompt_tokens,
            prompt_tokens: r.usage.map(|u| u.prompt_tokens),
            cached_tokens: r.usage.and_then(|u| u.cached_tokens),
            completion_tokens: r.usage.map(|u| u.completion_tokens),
            max_tokens: r.max_tokens,
            retries: r.retries,
            body_fnv1a: hex(r.body_fnv1a),
            server_timings: r.timings,
            ..EventLine::default()
        },
        Event::Failed(a) => EventLine {
            trace_id: trace_id(a.seq),
            template: a.template,
            slot: a.slot,
            turn: a.turn,
            status: match (a.kind, a.next) {
                (crate::net::client::FailureKind::Cancelled, _) => "cancelled",
                (_, Next::Reconnect) => "reconnected",
                (_, Next::Retry) => "retried",
                (_, Next::GiveUp) => "failed",
            },
            start_us: micros(a.start),
            end_us: micros(a.end),
            expected_prompt_tokens: a.expected_prompt_tokens,
            max_tokens: a.max_tokens,
            retries: a.attempt,
            failure: Some(a.kind.name()),
            message: Some(&a.message),
            body_fnv1a: hex(a.body_fnv1a),
            ..EventLine::default()
        },
        _ => return None,
    };
    let line = EventLine {
        point: tag.map(|t| t.0),
        trial: tag.map(|t| t.1),
        ..line
    };
    serde_json::to_string(&line).ok()
}

/// `t` as RFC 3339 UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// This machine's host name (`unknown` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn csv_and_metrics_rows() {
        let s = Summary {
            traces: vec![crate::record::summary::TraceRecord {
                trace_id: "trace-4".into(),
                seq: 4,
                template: 2,
                slot: 1,
                start_s: 0.5,
                latency_s: 2.25,
                ttft_s: Some(0.1),
                ttfat_s: None,
                output_tokens_per_turn: vec![3, 5],
                output_tokens_per_trace: 8,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = csv(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            "trace-4,2,1,0.500000,2.250000,0.100000,,,,,,,2,8,3;5,0"
        );
        assert_eq!(
            lines[0].split(',').count(),
            lines[1].split(',').count(),
            "header and row agree"
        );
        assert_eq!(
            output_metrics(&s),
            "{\"output_tokens_per_trace\":8,\"output_tokens_per_turn\":[3,5],\"request_id\":\"trace-4\"}\n"
        );
    }
}

//! The one result type of a run. The tables, the `benchmark complete` line and
//! the files are all rendered from a [`Summary`]; every field carries its unit
//! in its name. A figure that could not be measured (no values, no time) is
//! `None`: `null` in files, `–` in tables, never 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::metrics::{CurvePoint, Rates, Stats};

/// One completed trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// `trace-<seq>`: the routing key its requests carried.
    pub trace_id: String,
    /// Trace sequence number.
    pub seq: u64,
    /// Template index in the workload.
    pub template: usize,
    /// Slot that ran it.
    pub slot: usize,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// Trace start to the end of its final response.
    pub latency_s: f64,
    /// TTFT of its first request (streaming only).
    pub ttft_s: Option<f64>,
    /// Trace start to the first chunk of its final request (streaming only).
    pub ttfat_s: Option<f64>,
    /// Mean decode tokens/s of its requests (streaming only).
    pub decode_tps: Option<f64>,
    /// 1000 / decode_tps (streaming only).
    pub decode_tpot_ms: Option<f64>,
    /// Mean observed inter-token interval (streaming only).
    pub itl_ms: Option<f64>,
    /// Σ cached / Σ prompt tokens, server-reported (`None` without prompt tokens).
    pub cache_hit_rate_pct: Option<f64>,
    /// Σ cached / Σ eligible prompt tokens (`None` for a one-request trace:
    /// nothing was eligible).
    pub eligible_cache_hit_rate_pct: Option<f64>,
    /// Server-reported completion tokens of each request.
    pub output_tokens_per_turn: Vec<u64>,
    /// Their sum.
    pub output_tokens_per_trace: u64,
    /// Retried attempts over all its requests.
    pub retries: u32,
}

/// Stats over every completed request (of completed traces, and the
/// finished requests of traces that failed or were cut off at the deadline),
/// one per table row (`None`: no request had the figure).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerRequest {
    /// `TTFT (s)` (streaming only).
    pub ttft_s: Option<Stats>,
    /// `ITL (ms)`: each request's mean inter-token interval (streaming only).
    pub itl_ms: Option<Stats>,
    /// `Decode TPS (tok/s)` (streaming only).
    pub decode_tps: Option<Stats>,
    /// `Latency (s)`.
    pub latency_s: Option<Stats>,
    /// `Prompt tokens` (server-reported, else what trie sent).
    pub prompt_tokens: Option<Stats>,
    /// `Cached tokens` (requests whose server reported them).
    pub cached_tokens: Option<Stats>,
    /// `Completion tokens` (server-reported, else max_tokens).
    pub completion_tokens: Option<Stats>,
}

/// Stats over completed traces, one per table row (`None`: no trace had
/// the figure).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerTrace {
    /// `Latency (s)`.
    pub latency_s: Option<Stats>,
    /// `TTFT (s)`.
    pub ttft_s: Option<Stats>,
    /// `TTFAT (s)`.
    pub ttfat_s: Option<Stats>,
    /// `Decode TPS (tok/s)`.
    pub decode_tps: Option<Stats>,
    /// `Decode TPOT (ms/tok)`.
    pub decode_tpot_ms: Option<Stats>,
    /// `ITL (ms)`.
    pub itl_ms: Option<Stats>,
    /// `Cache hit rate (%)`.
    pub cache_hit_rate_pct: Option<Stats>,
    /// `Eligible cache hit rate (%)`.
    pub eligible_cache_hit_rate_pct: Option<Stats>,
    /// `Output tokens/turn`.
    pub output_tokens_per_turn: Option<Stats>,
    /// `Output tokens/trace`.
    pub output_tokens_per_trace: Option<Stats>,
}

/// Failures of one kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureCount {
    /// Failed traces whose last failure was of this kind.
    pub traces: u64,
    /// Failed attempts that were retried.
    pub retried_attempts: u64,
    /// A few example messages.
    pub examples: Vec<String>,
}

/// Open-loop arrival figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrivalStats {
    /// Median lateness of trace starts versus their schedule (`None`: no start).
    pub late_s_p50: Option<f64>,
    /// 99th percentile lateness.
    pub late_s_p99: Option<f64>,
    /// Arrivals that waited for the in-flight limit.
    pub waited_for_limit: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Model name sent to the endpoint.
    pub model: String,
    /// Endpoint base URL.
    pub endpoint: String,
    /// Workload path.
    pub workload: String,
    /// Trace templates in the workload.
    pub workload_templates: usize,
    /// Closed-loop slots (None in open loop).
    pub concurrency: Option<usize>,
    /// Open-loop traces/s (None in closed loop).
    pub arrival_rate: Option<f64>,
    /// Deadline for starting traces, seconds.
    pub duration_s: f64,
    /// GPUs, when given.
    pub num_gpus: Option<u32>,
    /// Seed.
    pub seed: u64,
    /// Whether responses streamed.
    pub stream: bool,
    /// Completed traces (the Python version calls them requests).
    pub completed_requests: u64,
    /// Failed traces.
    pub failed_requests: u64,
    /// Traces cancelled in flight at the deadline or on Ctrl+C.
    pub cancelled_traces: u64,
    /// Traces started.
    pub started_traces: u64,
    /// Successful HTTP requests.
    pub http_requests: u64,
    /// Requests whose server-reported prompt_tokens differed from what trie meant to send.
    pub prompt_token_mismatches: u64,
    /// The API requests went to (absent from older documents: completions).
    #[serde(default)]
    pub api: crate::net::client::Api,
    /// Chat: the template's tokens in the prompts sent (prompt tokens trie
    /// sent less the workload's), per request on average; `None` for
    /// completions, where there are none.
    #[serde(default)]
    pub template_tokens_per_request: Option<f64>,
    /// Chat: the template's tokens in all prompts sent.
    #[serde(default)]
    pub template_tokens_total: Option<i64>,
    /// Embeddings: inputs per request (`None`: not embeddings).
    #[serde(default)]
    pub embed_batch: Option<u32>,
    /// Embeddings: requests answered per second of the run.
    #[serde(default)]
    pub embed_requests_per_s: Option<f64>,
    /// Embeddings: inputs embedded per second.
    #[serde(default)]
    pub embed_inputs_per_s: Option<f64>,
    /// Embeddings: input tokens per second, as the server counted them.
    #[serde(default)]
    pub embed_input_tokens_per_s: Option<f64>,
    /// Tokens of the shared prefix traces started with (`--shared-prefix`).
    #[serde(default)]
    pub shared_prefix_tokens: Option<u64>,
    /// The shared prefix's hit rate: of the first requests of traces whose
    /// prefix another request had already left in the cache, the share of
    /// the prefix's tokens the server reported cached (`None`: no shared
    /// prefix, none eligible, or no cached tokens reported).
    #[serde(default)]
    pub prefix_cache_hit_rate_pct: Option<f64>,
    /// Requests without usage (completion fell back to max_tokens).
    pub requests_without_usage: u64,
    /// Requests whose usage had no cached_tokens.
    pub requests_without_cached_tokens: u64,
    /// Requests that got fewer completion tokens than max_tokens (the server ignored ignore_eos).
    pub short_completions: u64,
    /// Requests cut off in flight, or while waiting to be retried, at the stop.
    pub cancelled_requests: u64,
    /// Sends that failed before any answer on a kept-alive connection the
    /// server had closed since the slot's last response, sent again at once on
    /// a new connection (not failures).
    pub reconnects: u64,
    /// The measured window: run start to the deadline or the interrupt.
    pub wall_time_s: f64,
    /// Completed traces per wall-clock second.
    pub trace_per_s: f64,
    /// Per-trace stats.
    pub per_trace: PerTrace,
    /// Per-request stats (absent from results files before schema 3).
    #[serde(default)]
    pub per_request: PerRequest,
    /// Token rates over the wall time.
    pub overall: Option<Rates>,
    /// Slope over the last 30 s (`None`: fewer than two points).
    pub last_30s_window: Option<Rates>,
    /// Slope after the first 20 % (the headline; `None`: fewer than two points).
    pub steady_state: Option<Rates>,
    /// Steady state / num_gpus.
    pub steady_state_per_gpu: Option<Rates>,
    /// Failures by kind name (`http_503`, `reset`, ...).
    pub failures: BTreeMap<String, FailureCount>,
    /// Open-loop arrival figures.
    pub arrival: Option<ArrivalStats>,
    /// Stopped by Ctrl+C / SIGTERM.
    pub interrupted: bool,
    /// Completed traces.
    pub traces: Vec<TraceRecord>,
    /// The cumulative token curve.
    pub curve: Vec<CurvePoint>,
    /// Result files that could not be written (not part of the document).
    #[serde(skip)]
    pub file_errors: Vec<String>,
}

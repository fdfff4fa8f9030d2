//! The raw records of a run — one row per started trace, per completed
//! request and per failed attempt — and [`summarize`], the one pure function
//! that turns them into every figure of a [`crate::record::summary::Summary`]. The aggregator calls
//! it at the end of a run; `trie report` and `trie compare` call it on the
//! records read back from a results file, and get the same figures to the
//! last bit (times are `f64` seconds since the run started, written with
//! serde_json's round-trip float format).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::input::workload::TurnTokens;
use crate::net::sse::Usage;
use crate::record::event::{FailedAttempt, Next, RequestRecord, TraceEnd, trace_id};
use crate::record::metrics::{self, CurvePoint, Stats};
use crate::record::summary::{
    ArrivalStats, FailureCount, PerRequest, PerTrace, Summary, TraceRecord,
};

/// Example messages kept per failure kind.
pub const EXAMPLES: usize = 3;

fn is_false(b: &bool) -> bool {
    !*b
}

/// One completed request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRow {
    /// Trace sequence number.
    pub seq: u64,
    /// Template index in the workload.
    pub template: usize,
    /// Slot that sent it.
    pub slot: usize,
    /// Request index in its trace (`num_turns` is the final request).
    pub turn: usize,
    /// Sent, seconds since the run started.
    pub start_s: f64,
    /// First chunk with text, seconds after the send (streaming only).
    pub ttft_s: Option<f64>,
    /// End (`[DONE]` or the last line), seconds after the send.
    pub latency_s: f64,
    /// `max_tokens` it asked for.
    pub max_tokens: u64,
    /// Prompt tokens trie sent (BOS included).
    pub expected_prompt_tokens: u64,
    /// The workload's prompt tokens of this request (SPEC §5 accounting).
    pub planned_prompt_tokens: u64,
    /// Of those, the workload's cached (earlier context) tokens.
    pub planned_cached_tokens: u64,
    /// What the server reported (`null`: no usage).
    pub usage: Option<Usage>,
    /// Sum of the observed inter-token intervals, seconds.
    pub itl_sum_s: f64,
    /// Their number.
    pub itl_count: u64,
    /// Failed attempts before this one.
    pub retries: u32,
    /// Its choices were chat-shaped (`delta`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub chat_shaped: bool,
    /// The shared prefix its trace started with (`--shared-prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_group: Option<u32>,
    /// That prefix's tokens (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RequestRow {
    /// The row of `r`, whose workload accounting is `planned`; `prefix`:
    /// the group and tokens of its shared prefix.
    pub fn new(r: &RequestRecord, planned: TurnTokens, prefix: Option<(u32, u64)>) -> RequestRow {
        RequestRow {
            seq: r.seq,
            template: r.template,
            slot: r.slot,
            turn: r.turn,
            start_s: r.start.as_secs_f64(),
            ttft_s: r.ttft.map(|t| t.as_secs_f64()),
            latency_s: r.latency.as_secs_f64(),
            max_tokens: r.max_tokens,
            expected_prompt_tokens: r.expected_prompt_tokens,
            planned_prompt_tokens: planned.new_prompt.saturating_add(planned.cached_prompt),
            planned_cached_tokens: planned.cached_prompt,
            usage: r.usage,
            itl_sum_s: r.itl_sum.as_secs_f64(),
            itl_count: r.itl_count,
            retries: r.retries,
            chat_shaped: r.chat_shaped,
            prefix_group: prefix.map(|p| p.0),
            prefix_tokens: prefix.map_or(0, |p| p.1),
        }
    }

    /// Completion tokens: the server's count, else `max_tokens`.
    pub fn completion_tokens(&self) -> u64 {
        self.usage.map_or(self.max_tokens, |u| u.completion_tokens)
    }

    /// Prompt tokens: the server's count, else what trie sent.
    pub fn prompt_tokens(&self) -> u64 {
        self.usage
            .map_or(self.expected_prompt_tokens, |u| u.prompt_tokens)
    }

    /// Cached prompt tokens as the server reported them (`None`: not
    /// reported).
    pub fn reported_cached(&self) -> Option<u64> {
        self.usage.and_then(|u| u.cached_tokens)
    }

    /// Cached prompt tokens for sums (0 when not reported; a trace none of
    /// whose requests reported them has no hit rate at all).
    pub fn cached_tokens(&self) -> u64 {
        self.reported_cached().unwrap_or(0)
    }

    /// End, seconds since the run started.
    pub fn end_s(&self) -> f64 {
        self.start_s + self.latency_s
    }

    /// Decode tokens/s: (completion − 1) / (latency − TTFT).
    pub fn decode_tps(&self) -> Option<f64> {
        metrics::decode_tps(self.completion_tokens(), self.latency_s, self.ttft_s)
    }

    /// Mean observed inter-token interval, ms.
    pub fn itl_ms(&self) -> Option<f64> {
        (self.ttft_s.is_some() && self.itl_count > 0)
            .then(|| 1000.0 * self.itl_sum_s / self.itl_count as f64)
    }
}

/// How a trace ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every request succeeded.
    Completed,
    /// A request failed for good.
    Failed,
    /// Cut off by the deadline or Ctrl+C (or never ended).
    #[default]
    Cancelled,
}

/// One started trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Trace sequence number.
    pub seq: u64,
    /// Template index.
    pub template: usize,
    /// Slot that ran it.
    pub slot: usize,
    /// Start, seconds since the run started.
    pub start_s: f64,
    /// End, seconds since the run started (`null`: still running at the end).
    pub end_s: Option<f64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Failed: the kind of its last failure.
    pub failure: Option<String>,
    /// Open loop: how late its start was versus its schedule, seconds.
    pub late_s: Option<f64>,
}

/// What followed a failed attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptNext {
    /// Retried after a backoff.
    Retry,
    /// Sent again at once on a new connection (not a failure).
    Reconnect,
    /// Nothing: the trace failed.
    #[default]
    GiveUp,
    /// Cut off by the stop.
    Cancelled,
}

/// One failed attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRow {
    /// Trace sequence number.
    pub seq: u64,
    /// Request index in its trace.
    pub turn: usize,
    /// Slot.
    pub slot: usize,
    /// Sent, seconds since the run started.
    pub start_s: f64,
    /// Failed, seconds since the run started.
    pub end_s: f64,
    /// Failure kind (`http_503`, `reset`, ...).
    pub kind: String,
    /// What followed.
    pub next: AttemptNext,
}

impl AttemptRow {
    /// The row of `a`.
    pub fn new(a: &FailedAttempt) -> AttemptRow {
        AttemptRow {
            seq: a.seq,
            turn: a.turn,
            slot: a.slot,
            start_s: a.start.as_secs_f64(),
            end_s: a.end.as_secs_f64(),
            kind: a.kind.name(),
            next: match (a.kind, a.next) {
                (crate::net::client::FailureKind::Cancelled, _) => AttemptNext::Cancelled,
                (_, Next::Retry) => AttemptNext::Retry,
                (_, Next::Reconnect) => AttemptNext::Reconnect,
                (_, Next::GiveUp) => AttemptNext::GiveUp,
            },
        }
    }
}

/// Everything a run observed, row by row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Records {
    /// Started traces, in start order.
    pub traces: Vec<TraceRow>,
    /// Completed requests, in completion order.
    pub requests: Vec<RequestRow>,
    /// Failed attempts, in order.
    pub attempts: Vec<AttemptRow>,
    /// A few messages per failure kind (secrets removed).
    pub failure_examples: BTreeMap<String, Vec<String>>,
    /// Open loop: arrivals that waited for the in-flight limit.
    pub waited_for_limit: u64,
}

impl Records {
    /// Keep `message` as an example of `kind` (at most [`EXAMPLES`]).
    pub fn example(&mut self, kind: String, message: String) {
        let list = self.failure_examples.entry(kind).or_default();
        if list.len() < EXAMPLES {
            list.push(message);
        }
    }

    /// Trace `seq` ended at `at_s` (seconds since the start); `index` finds
    /// its row. Returns its outcome, `None` for an unknown trace.
    pub fn trace_ended(&mut self, index: usize, at_s: f64, end: TraceEnd) -> Option<Outcome> {
        let (outcome, failure) = match end {
            TraceEnd::Completed => (Outcome::Completed, None),
            TraceEnd::Failed { kind, message } => {
                self.example(kind.name(), message);
                (Outcome::Failed, Some(kind.name()))
            }
            TraceEnd::Cancelled => (Outcome::Cancelled, None),
        };
        let row = self.traces.get_mut(index)?;
        row.end_s = Some(at_s);
        row.outcome = outcome;
        row.failure = failure;
        Some(outcome)
    }
}

/// One increment of the token curve (workload accounting, SPEC §5).
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// When the request ended, seconds since the run started.
    pub t_s: f64,
    /// Its planned prompt tokens.
    pub prompt: u64,
    /// Of those, cached.
    pub cached: u64,
    /// Its completion tokens (max_tokens).
    pub completion: u64,
}

impl Step {
    /// The curve step of `r`.
    pub fn of(r: &RequestRow) -> Step {
        Step {
            t_s: r.end_s(),
            prompt: r.planned_prompt_tokens,
            cached: r.planned_cached_tokens,
            completion: r.max_tokens,
        }
    }
}

impl CurvePoint {
    /// Add step `s` (sums saturate).
    pub fn add(&mut self, s: &Step) {
        self.t_s = self.t_s.max(s.t_s);
        self.prompt = self.prompt.saturating_add(s.prompt);
        self.cached = self.cached.saturating_add(s.cached);
        self.uncached = self
            .uncached
            .saturating_add(s.prompt.saturating_sub(s.cached));
        self.completion = self.completion.saturating_add(s.completion);
    }
}

/// The cumulative curve of `steps` (in time order).
pub fn curve(steps: &[Step]) -> Vec<CurvePoint> {
    let mut acc = CurvePoint::default();
    steps
        .iter()
        .map(|s| {
            acc.add(s);
            acc.t_s = s.t_s;
            acc
        })
        .collect()
}

/// The curve steps of `requests`, in time order (stable for equal times).
pub fn steps(requests: &[RequestRow]) -> Vec<Step> {
    let mut steps: Vec<Step> = requests.iter().map(Step::of).collect();
    steps.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    steps
}

/// Every figure of a run from its records. `base` carries the run's
/// description (model, endpoint, load, …, `interrupted`); every measured
/// field of the result comes from `records` and `wall_s` (the measured
/// window, seconds) alone.
pub fn summarize(base: &Summary, records: &Records, wall_s: f64) -> Summary {
    let mut s = Summary {
        model: base.model.clone(),
        endpoint: base.endpoint.clone(),
        workload: base.workload.clone(),
        workload_templates: base.workload_templates,
        concurrency: base.concurrency,
        arrival_rate: base.arrival_rate,
        duration_s: base.duration_s,
        num_gpus: base.num_gpus,
        seed: base.seed,
        stream: base.stream,
        api: base.api,
        shared_prefix_tokens: base.shared_prefix_tokens,
        embed_batch: base.embed_batch,
        interrupted: base.interrupted,
        ..Summary::default()
    };
    let mut by_trace: HashMap<u64, Vec<&RequestRow>> = HashMap::new();
    for r in &records.requests {
        by_trace.entry(r.seq).or_default().push(r);
    }
    let prefix = PrefixUse::of(&records.requests);
    let mut traces: Vec<TraceRecord> = records
        .traces
        .iter()
        .filter(|t| t.outcome == Outcome::Completed)
        .map(|t| {
            let mut reqs = by_trace.remove(&t.seq).unwrap_or_default();
            reqs.sort_by_key(|r| r.turn);
            trace_record(t, &reqs, &prefix)
        })
        .collect();
    traces.sort_by_key(|r| r.seq);

    let col = |f: &dyn Fn(&TraceRecord) -> Option<f64>| Stats::of(traces.iter().filter_map(f));
    s.per_trace = PerTrace {
        latency_s: col(&|r| Some(r.latency_s)),
        ttft_s: col(&|r| r.ttft_s),
        ttfat_s: col(&|r| r.ttfat_s),
        decode_tps: col(&|r| r.decode_tps),
        decode_tpot_ms: col(&|r| r.decode_tpot_ms),
        itl_ms: col(&|r| r.itl_ms),
        cache_hit_rate_pct: col(&|r| r.cache_hit_rate_pct),
        eligible_cache_hit_rate_pct: col(&|r| r.eligible_cache_hit_rate_pct),
        output_tokens_per_turn: col(&|r| {
            Some(r.output_tokens_per_trace as f64 / r.output_tokens_per_turn.len().max(1) as f64)
        }),
        output_tokens_per_trace: col(&|r| Some(r.output_tokens_per_trace as f64)),
    };
    let req = &records.requests;
    let rcol = |f: &dyn Fn(&RequestRow) -> Option<f64>| Stats::of(req.iter().filter_map(f));
    s.per_request = PerRequest {
        ttft_s: rcol(&|r| r.ttft_s),
        itl_ms: rcol(&RequestRow::itl_ms),
        decode_tps: rcol(&RequestRow::decode_tps),
        latency_s: rcol(&|r| Some(r.latency_s)),
        prompt_tokens: rcol(&|r| Some(r.prompt_tokens() as f64)),
        cached_tokens: rcol(&|r| r.reported_cached().map(|c| c as f64)),
        completion_tokens: rcol(&|r| Some(r.completion_tokens() as f64)),
    };

    let count =
        |f: &dyn Fn(&TraceRow) -> bool| records.traces.iter().filter(|t| f(t)).count() as u64;
    s.completed_requests = traces.len() as u64;
    s.failed_requests = count(&|t| t.outcome == Outcome::Failed);
    s.cancelled_traces = count(&|t| t.outcome == Outcome::Cancelled);
    s.started_traces = records.traces.len() as u64;
    s.http_requests = req.len() as u64;
    let rcount = |f: &dyn Fn(&RequestRow) -> bool| req.iter().filter(|r| f(r)).count() as u64;
    s.prompt_token_mismatches = rcount(&|r| {
        r.usage
            .is_some_and(|u| u.prompt_tokens != r.expected_prompt_tokens)
    });
    // The shared prefix's own hit rate: of the first requests whose prefix
    // was eligible, the share of its tokens the server had cached.
    let (prefix_eligible, prefix_hit, prefix_reported) =
        req.iter().fold((0u64, 0u64, false), |(e, h, rep), r| {
            let eligible = prefix.eligible(r);
            if eligible == 0 {
                return (e, h, rep);
            }
            (
                e + eligible,
                h + r.cached_tokens().min(eligible),
                rep || r.reported_cached().is_some(),
            )
        });
    s.prefix_cache_hit_rate_pct = (prefix_reported && prefix_eligible > 0)
        .then(|| 100.0 * prefix_hit as f64 / prefix_eligible as f64);
    if s.api == crate::net::client::Api::Chat && !req.is_empty() {
        let total: i64 = req
            .iter()
            .map(|r| r.expected_prompt_tokens as i64 - r.planned_prompt_tokens as i64)
            .sum();
        s.template_tokens_total = Some(total);
        s.template_tokens_per_request = Some(total as f64 / req.len() as f64);
    }
    if let Some(batch) = s.embed_batch.filter(|_| wall_s > 0.0) {
        let requests = req.len() as f64 / wall_s;
        s.embed_requests_per_s = Some(requests);
        s.embed_inputs_per_s = Some(requests * batch as f64);
        let tokens = req
            .iter()
            .map(|r| r.prompt_tokens())
            .fold(0u64, u64::saturating_add);
        s.embed_input_tokens_per_s = Some(tokens as f64 / wall_s);
    }
    s.requests_without_usage = rcount(&|r| r.usage.is_none());
    s.requests_without_cached_tokens =
        rcount(&|r| r.usage.is_some_and(|u| u.cached_tokens.is_none()));
    s.short_completions = rcount(&|r| r.usage.is_some_and(|u| u.completion_tokens < r.max_tokens));
    let acount = |n: AttemptNext| records.attempts.iter().filter(|a| a.next == n).count() as u64;
    s.cancelled_requests = acount(AttemptNext::Cancelled);
    s.reconnects = acount(AttemptNext::Reconnect);

    s.wall_time_s = wall_s;
    s.trace_per_s = if wall_s > 0.0 {
        traces.len() as f64 / wall_s
    } else {
        0.0
    };
    let curve = curve(&steps(req));
    let totals = curve.last().copied().unwrap_or_default();
    s.overall = metrics::overall(&totals, wall_s);
    s.last_30s_window = metrics::last_window(&curve, 30.0);
    s.steady_state = metrics::steady_state(&curve);
    s.steady_state_per_gpu = s.steady_state.zip(s.num_gpus).map(|(r, n)| r.per(n as f64));
    if s.arrival_rate.is_some() {
        let mut late: Vec<f64> = records.traces.iter().filter_map(|t| t.late_s).collect();
        late.sort_by(f64::total_cmp);
        let q = |q| (!late.is_empty()).then(|| metrics::percentile(&late, q).max(0.0));
        s.arrival = Some(ArrivalStats {
            late_s_p50: q(50.0),
            late_s_p99: q(99.0),
            waited_for_limit: records.waited_for_limit,
        });
    }

    let mut failures: BTreeMap<String, FailureCount> = BTreeMap::new();
    for t in &records.traces {
        if let Some(kind) = t.failure.as_ref().filter(|_| t.outcome == Outcome::Failed) {
            failures.entry(kind.clone()).or_default().traces += 1;
        }
    }
    for a in records
        .attempts
        .iter()
        .filter(|a| a.next == AttemptNext::Retry)
    {
        failures.entry(a.kind.clone()).or_default().retried_attempts += 1;
    }
    for (kind, examples) in &records.failure_examples {
        failures.entry(kind.clone()).or_default().examples = examples.clone();
    }
    s.failures = failures;
    s.traces = traces;
    s.curve = curve;
    s
}

/// Per-trace figures (SPEC §5) of trace `t` from its requests, in turn
/// order; a figure without values is absent, and sums saturate.
/// When each shared prefix was first in the server's cache: the earliest
/// end of a request that sent it.
struct PrefixUse(HashMap<u32, f64>);

impl PrefixUse {
    fn of(requests: &[RequestRow]) -> PrefixUse {
        let mut first: HashMap<u32, f64> = HashMap::new();
        for r in requests {
            if let Some(g) = r.prefix_group {
                let end = first.entry(g).or_insert(f64::INFINITY);
                *end = end.min(r.end_s());
            }
        }
        PrefixUse(first)
    }

    /// The tokens of `r`'s shared prefix eligible for the cache: all of
    /// them once an earlier request that sent the prefix has ended (its
    /// prefill is then in the cache), for the first request of a trace
    /// (later ones count it in their predecessor's prompt).
    fn eligible(&self, r: &RequestRow) -> u64 {
        match r.prefix_group.and_then(|g| self.0.get(&g)) {
            Some(&end) if r.turn == 0 && end < r.start_s => r.prefix_tokens,
            _ => 0,
        }
    }
}

fn trace_record(t: &TraceRow, reqs: &[&RequestRow], prefix: &PrefixUse) -> TraceRecord {
    let first = reqs.first();
    let last = reqs.last();
    let streaming = first.is_some_and(|r| r.ttft_s.is_some());
    let decodes: Vec<f64> = reqs.iter().filter_map(|r| r.decode_tps()).collect();
    let decode_tps = (streaming && !decodes.is_empty())
        .then(|| decodes.iter().sum::<f64>() / decodes.len() as f64);
    let (itl_sum, itl_n) = reqs.iter().fold((0.0f64, 0u64), |(s, n), r| {
        (s + r.itl_sum_s, n.saturating_add(r.itl_count))
    });
    let sum = |it: &mut dyn Iterator<Item = u64>| it.fold(0u64, u64::saturating_add);
    let prompt = sum(&mut reqs.iter().map(|r| r.prompt_tokens()));
    let cached = sum(&mut reqs.iter().map(|r| r.cached_tokens()));
    // Eligible: what the previous request left in the cache (its prompt and
    // answer). Only hits on that count, at most all of it: a first request's
    // hits beyond its shared prefix, or more than its predecessor left, come
    // from other traces.
    // A first request may hit its shared prefix, once another request
    // has left it in the cache.
    let first_eligible = first.map_or(0, |r| prefix.eligible(r));
    let first_hit = first.map_or(0, |r| r.cached_tokens().min(first_eligible));
    let (eligible, eligible_hit) =
        reqs.windows(2)
            .fold((first_eligible, first_hit), |(e, h), w| {
                let eligible = w[0]
                    .prompt_tokens()
                    .saturating_add(w[0].completion_tokens());
                let hit = w[1].cached_tokens().min(eligible);
                (e.saturating_add(eligible), h.saturating_add(hit))
            });
    // A server that never reports cached tokens has no hit rate (not 0 %).
    let reported = reqs.iter().any(|r| r.reported_cached().is_some());
    let pct = |num: u64, den: u64| (reported && den > 0).then(|| 100.0 * num as f64 / den as f64);
    let out: Vec<u64> = reqs.iter().map(|r| r.completion_tokens()).collect();
    let end_s = t.end_s.unwrap_or(t.start_s);
    TraceRecord {
        trace_id: trace_id(t.seq),
        seq: t.seq,
        template: t.template,
        slot: t.slot,
        start_s: t.start_s,
        latency_s: (end_s - t.start_s).max(0.0),
        ttft_s: first.and_then(|r| r.ttft_s),
        ttfat_s: last.and_then(|r| r.ttft_s.map(|f| r.start_s + f - t.start_s)),
        decode_tps,
        decode_tpot_ms: decode_tps.filter(|d| *d > 0.0).map(|d| 1000.0 / d),
        itl_ms: (streaming && itl_n > 0).then(|| 1000.0 * itl_sum / itl_n as f64),
        cache_hit_rate_pct: pct(cached, prompt),
        eligible_cache_hit_rate_pct: pct(eligible_hit, eligible),
        output_tokens_per_trace: sum(&mut out.iter().copied()),
        output_tokens_per_turn: out,
        retries: reqs.iter().map(|r| r.retries).fold(0, u32::saturating_add),
    }
}

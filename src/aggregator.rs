//! The aggregator: the one owner of metric state. It turns slot events into
//! per-trace records, the workload token curve and failure counts, renders the
//! progress line, and produces the [`Summary`] at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::client::FailureKind;
use crate::event::{Event, Next, RequestRecord, TraceEnd};
use crate::metrics::{self, CurvePoint, Rates, Stats};
use crate::preflight::Warned;
use crate::summary::{ArrivalStats, FailureCount, PerRequest, PerTrace, Summary, TraceRecord};
use crate::workload::Workload;

/// Example messages kept per failure kind.
const EXAMPLES: usize = 3;

struct Active {
    template: usize,
    slot: usize,
    start: Duration,
    requests: Vec<RequestRecord>,
}

/// One increment of the token curve.
#[derive(Clone, Copy)]
struct Step {
    t_s: f64,
    prompt: u64,
    cached: u64,
    completion: u64,
}

impl CurvePoint {
    fn add(&mut self, s: &Step) {
        self.t_s = self.t_s.max(s.t_s);
        self.prompt = self.prompt.saturating_add(s.prompt);
        self.cached = self.cached.saturating_add(s.cached);
        self.uncached = self
            .uncached
            .saturating_add(s.prompt.saturating_sub(s.cached));
        self.completion = self.completion.saturating_add(s.completion);
    }
}

/// The per-request figures, a column each (f32 would lose milliseconds of
/// long latencies; these are 8 bytes a figure, 56 a request).
#[derive(Default)]
struct RequestColumns {
    ttft_s: Vec<f64>,
    itl_ms: Vec<f64>,
    decode_tps: Vec<f64>,
    latency_s: Vec<f64>,
    prompt_tokens: Vec<f64>,
    cached_tokens: Vec<f64>,
    completion_tokens: Vec<f64>,
}

impl RequestColumns {
    fn push(&mut self, r: &RequestRecord) {
        if let Some(t) = r.ttft {
            self.ttft_s.push(t.as_secs_f64());
            if r.itl_count > 0 {
                self.itl_ms
                    .push(1000.0 * r.itl_sum.as_secs_f64() / r.itl_count as f64);
            }
            self.decode_tps.extend(r.decode_tps());
        }
        self.latency_s.push(r.latency.as_secs_f64());
        self.prompt_tokens.push(r.prompt_tokens() as f64);
        if let Some(c) = r.usage.and_then(|u| u.cached_tokens) {
            self.cached_tokens.push(c as f64);
        }
        self.completion_tokens.push(r.completion_tokens() as f64);
    }

    fn stats(&self) -> PerRequest {
        let of = |v: &Vec<f64>| Stats::of(v.iter().copied());
        PerRequest {
            ttft_s: of(&self.ttft_s),
            itl_ms: of(&self.itl_ms),
            decode_tps: of(&self.decode_tps),
            latency_s: of(&self.latency_s),
            prompt_tokens: of(&self.prompt_tokens),
            cached_tokens: of(&self.cached_tokens),
            completion_tokens: of(&self.completion_tokens),
        }
    }
}

/// Metric state of a run.
pub struct Aggregator {
    workload: Arc<Workload>,
    active: HashMap<u64, Active>,
    completed: Vec<TraceRecord>,
    failed: u64,
    cancelled: u64,
    started: u64,
    failures: BTreeMap<String, FailureCount>,
    /// Curve increments in time order (kept sorted as they come).
    steps: Vec<Step>,
    /// Their running totals.
    totals: CurvePoint,
    http_requests: u64,
    mismatches: u64,
    no_usage: u64,
    no_cached: u64,
    lateness_s: Vec<f64>,
    /// The per-request figures of every completed request, as they come.
    per_request: RequestColumns,
    waited: u64,
    short: u64,
    chat_shaped: u64,
    cancelled_requests: u64,
    reconnects: u64,
    warned: Warned,
}

impl Aggregator {
    /// Empty state for a run of `workload`; what `warned` names was already
    /// warned about (by the preflight) and is only counted.
    pub fn new(workload: Arc<Workload>, warned: Warned) -> Aggregator {
        Aggregator {
            workload,
            active: HashMap::new(),
            completed: Vec::new(),
            failed: 0,
            cancelled: 0,
            started: 0,
            failures: BTreeMap::new(),
            steps: Vec::new(),
            totals: CurvePoint::default(),
            http_requests: 0,
            mismatches: 0,
            no_usage: 0,
            no_cached: 0,
            lateness_s: Vec::new(),
            per_request: RequestColumns::default(),
            waited: 0,
            short: 0,
            chat_shaped: 0,
            cancelled_requests: 0,
            reconnects: 0,
            warned,
        }
    }

    /// Apply one event.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::TraceStarted {
                seq,
                template,
                slot,
                at,
                late,
            } => {
                self.started += 1;
                if let Some(l) = late {
                    self.lateness_s.push(l.as_secs_f64());
                }
                self.active.insert(
                    seq,
                    Active {
                        template,
                        slot,
                        start: at,
                        requests: Vec::new(),
                    },
                );
            }
            Event::Request(r) => self.request(r),
            Event::Failed(a) => {
                if a.kind == FailureKind::Cancelled {
                    self.cancelled_requests += 1;
                } else if a.next == Next::Reconnect {
                    self.reconnects += 1;
                } else if a.next == Next::Retry {
                    let f = self.failures.entry(a.kind.name()).or_default();
                    f.retried_attempts += 1;
                    if f.examples.len() < EXAMPLES {
                        f.examples.push(a.message);
                    }
                }
            }
            Event::TraceEnded { seq, at, end } => {
                let Some(active) = self.active.remove(&seq) else {
                    return;
                };
                match end {
                    TraceEnd::Completed => {
                        let rec = trace_record(seq, &active, at);
                        self.completed.push(rec);
                    }
                    TraceEnd::Failed { kind, message } => {
                        self.failed += 1;
                        self.failure(kind, message);
                    }
                    TraceEnd::Cancelled => self.cancelled += 1,
                }
            }
            Event::WaitedForLimit => self.waited += 1,
        }
    }

    /// Count a failed trace of `kind`.
    fn failure(&mut self, kind: FailureKind, message: String) {
        let f = self.failures.entry(kind.name()).or_default();
        f.traces += 1;
        if f.examples.len() < EXAMPLES {
            f.examples.push(message);
        }
    }

    /// Record an event that could not be handled (a bug in trie, caught):
    /// listed under the `internal` kind, without a failed trace.
    pub fn internal_error(&mut self, message: String) {
        let f = self
            .failures
            .entry(FailureKind::Internal.name())
            .or_default();
        if f.examples.len() < EXAMPLES {
            f.examples.push(message);
        }
    }

    fn request(&mut self, r: RequestRecord) {
        self.http_requests += 1;
        self.per_request.push(&r);
        if r.chat_shaped {
            if !std::mem::replace(&mut self.warned.chat_shaped, true) {
                log::warn!(
                    "the server streams chat-shaped choices (delta) on /v1/completions: replies are empty, so contexts and decode figures are wrong; is --endpoint an OpenAI completions API?"
                );
            }
            self.chat_shaped += 1;
        }
        match r.usage {
            None => self.no_usage += 1,
            Some(u) => {
                if u.cached_tokens.is_none() {
                    self.no_cached += 1;
                }
                if u.completion_tokens < r.max_tokens {
                    if !std::mem::replace(&mut self.warned.short, true) {
                        log::warn!(
                            "{}",
                            crate::preflight::short_completion(u.completion_tokens, r.max_tokens)
                        );
                    }
                    self.short += 1;
                }
                if u.prompt_tokens != r.expected_prompt_tokens {
                    self.mismatches += 1;
                    log::debug!(
                        "trace {} turn {}: server counted {} prompt tokens, trie sent {}",
                        r.seq,
                        r.turn,
                        u.prompt_tokens,
                        r.expected_prompt_tokens
                    );
                }
            }
        }
        // Workload accounting (SPEC §5): from the template, not the server.
        let tt = self.workload.traces[r.template].turn_tokens(r.turn);
        let step = Step {
            t_s: (r.start + r.latency).as_secs_f64(),
            prompt: tt.new_prompt + tt.cached_prompt,
            cached: tt.cached_prompt,
            completion: tt.completion,
        };
        // Requests end nearly in order: insert from the back.
        let at = self
            .steps
            .iter()
            .rposition(|s| s.t_s <= step.t_s)
            .map_or(0, |i| i + 1);
        self.steps.insert(at, step);
        self.totals.add(&step);
        if let Some(a) = self.active.get_mut(&r.seq) {
            a.requests.push(r);
        }
    }

    /// The cumulative token curve, in time order.
    pub fn curve(&self) -> Vec<CurvePoint> {
        let mut acc = CurvePoint::default();
        self.steps
            .iter()
            .map(|s| {
                acc.add(s);
                acc.t_s = s.t_s;
                acc
            })
            .collect()
    }

    /// The slope of the curve's last `window_s`, as [`metrics::last_window`]
    /// computes it, from the steps inside the window only (the progress
    /// line's cost does not grow with the run).
    fn window_rates(&self, window_s: f64) -> Option<Rates> {
        let last = self.steps.last()?;
        let first = self
            .steps
            .iter()
            .rposition(|s| s.t_s < last.t_s - window_s)
            .map_or(0, |i| i + 1);
        // From the point of step `first` to the last: what the later steps added.
        let mut gained = CurvePoint::default();
        self.steps[first + 1..].iter().for_each(|s| gained.add(s));
        let dt = last.t_s - self.steps[first].t_s;
        (dt > 0.0).then(|| Rates::between(&CurvePoint::default(), &gained, dt))
    }

    /// Completed traces so far.
    pub fn completed(&self) -> usize {
        self.completed.len()
    }

    /// The live progress text at `elapsed` of `duration`.
    pub fn progress(&self, elapsed: Duration, duration: Duration) -> String {
        let e = elapsed.as_secs_f64();
        let rate = |r: Option<f64>, decimals: usize| match r {
            Some(x) => format!("{x:.decimals$}"),
            None => "–".to_string(),
        };
        let overall = metrics::overall(&self.totals, e);
        let last = self.window_rates(30.0);
        format!(
            "{:.0}/{:.0}s completed={} failed={} in_flight={} trace/s={} prompt_tok/s={} completion_tok/s={} last_30s_completion_tok/s={}",
            e.min(duration.as_secs_f64()),
            duration.as_secs_f64(),
            self.completed.len(),
            self.failed,
            self.active.len(),
            rate((e > 0.0).then(|| self.completed.len() as f64 / e), 2),
            rate(overall.map(|r| r.prompt_tok_per_s), 0),
            rate(overall.map(|r| r.completion_tok_per_s), 1),
            rate(last.map(|r| r.completion_tok_per_s), 1),
        )
    }

    /// The summary; `summary` carries the run's description, filled in here
    /// with every measured figure. `wall` is the measured window.
    pub fn finish(mut self, mut summary: Summary, wall: Duration) -> Summary {
        let wall_s = wall.as_secs_f64();
        // Traces still active never ended (cannot happen once slots are joined).
        self.cancelled += self.active.len() as u64;
        let curve = self.curve();
        let t = &self.completed;
        let col = |f: &dyn Fn(&TraceRecord) -> Option<f64>| Stats::of(t.iter().filter_map(f));
        summary.per_trace = PerTrace {
            latency_s: col(&|r| Some(r.latency_s)),
            ttft_s: col(&|r| r.ttft_s),
            ttfat_s: col(&|r| r.ttfat_s),
            decode_tps: col(&|r| r.decode_tps),
            decode_tpot_ms: col(&|r| r.decode_tpot_ms),
            itl_ms: col(&|r| r.itl_ms),
            cache_hit_rate_pct: col(&|r| r.cache_hit_rate_pct),
            eligible_cache_hit_rate_pct: col(&|r| r.eligible_cache_hit_rate_pct),
            output_tokens_per_turn: col(&|r| {
                Some(
                    r.output_tokens_per_trace as f64 / r.output_tokens_per_turn.len().max(1) as f64,
                )
            }),
            output_tokens_per_trace: col(&|r| Some(r.output_tokens_per_trace as f64)),
        };
        summary.per_request = self.per_request.stats();
        summary.completed_requests = t.len() as u64;
        summary.failed_requests = self.failed;
        summary.cancelled_traces = self.cancelled;
        summary.started_traces = self.started;
        summary.http_requests = self.http_requests;
        summary.prompt_token_mismatches = self.mismatches;
        summary.requests_without_usage = self.no_usage;
        summary.requests_without_cached_tokens = self.no_cached;
        summary.short_completions = self.short;
        summary.cancelled_requests = self.cancelled_requests;
        summary.reconnects = self.reconnects;
        summary.wall_time_s = wall_s;
        summary.trace_per_s = if wall_s > 0.0 {
            t.len() as f64 / wall_s
        } else {
            0.0
        };
        summary.overall = metrics::overall(&self.totals, wall_s);
        summary.last_30s_window = metrics::last_window(&curve, 30.0);
        summary.steady_state = metrics::steady_state(&curve);
        summary.steady_state_per_gpu = summary
            .steady_state
            .zip(summary.num_gpus)
            .map(|(s, n)| s.per(n as f64));
        if summary.arrival_rate.is_some() {
            self.lateness_s.sort_by(f64::total_cmp);
            let late = |q| {
                (!self.lateness_s.is_empty())
                    .then(|| metrics::percentile(&self.lateness_s, q).max(0.0))
            };
            summary.arrival = Some(ArrivalStats {
                late_s_p50: late(50.0),
                late_s_p99: late(99.0),
                waited_for_limit: self.waited,
            });
        }
        summary.failures = self.failures;
        self.completed.sort_by_key(|r| r.seq);
        summary.traces = self.completed;
        summary.curve = curve;
        summary
    }
}

/// Per-trace figures (SPEC §5) from its requests, in turn order; a figure
/// without values is absent, and sums saturate.
fn trace_record(seq: u64, a: &Active, end: Duration) -> TraceRecord {
    let reqs = &a.requests;
    let secs = |d: Duration| d.as_secs_f64();
    let first = reqs.first();
    let last = reqs.last();
    let streaming = first.is_some_and(|r| r.ttft.is_some());
    let decodes: Vec<f64> = reqs.iter().filter_map(RequestRecord::decode_tps).collect();
    let decode_tps = (streaming && !decodes.is_empty())
        .then(|| decodes.iter().sum::<f64>() / decodes.len() as f64);
    let (itl_sum, itl_n) = reqs.iter().fold((Duration::ZERO, 0u64), |(s, n), r| {
        (s.saturating_add(r.itl_sum), n.saturating_add(r.itl_count))
    });
    let sum = |it: &mut dyn Iterator<Item = u64>| it.fold(0u64, u64::saturating_add);
    let prompt = sum(&mut reqs.iter().map(RequestRecord::prompt_tokens));
    let cached = sum(&mut reqs.iter().map(RequestRecord::cached_tokens));
    // Eligible: what the previous request left in the cache (its prompt and
    // answer). Only hits on that count, at most all of it: a first request's
    // hits, or more than its predecessor left, come from other traces.
    let (eligible, eligible_hit) = reqs.windows(2).fold((0u64, 0u64), |(e, h), w| {
        let eligible = w[0]
            .prompt_tokens()
            .saturating_add(w[0].completion_tokens());
        let hit = w[1].cached_tokens().min(eligible);
        (e.saturating_add(eligible), h.saturating_add(hit))
    });
    // A server that never reports cached tokens has no hit rate (not 0 %).
    let reported = reqs
        .iter()
        .any(|r| r.usage.is_some_and(|u| u.cached_tokens.is_some()));
    let pct = |num: u64, den: u64| (reported && den > 0).then(|| 100.0 * num as f64 / den as f64);
    let out: Vec<u64> = reqs.iter().map(RequestRecord::completion_tokens).collect();
    TraceRecord {
        trace_id: crate::event::trace_id(seq),
        seq,
        template: a.template,
        slot: a.slot,
        start_s: secs(a.start),
        latency_s: secs(end.saturating_sub(a.start)),
        ttft_s: first.and_then(|r| r.ttft).map(secs),
        ttfat_s: last.and_then(|r| r.ttft.map(|t| secs(r.start + t) - secs(a.start))),
        decode_tps,
        decode_tpot_ms: decode_tps.filter(|d| *d > 0.0).map(|d| 1000.0 / d),
        itl_ms: (streaming && itl_n > 0).then(|| 1000.0 * secs(itl_sum) / itl_n as f64),
        cache_hit_rate_pct: pct(cached, prompt),
        eligible_cache_hit_rate_pct: pct(eligible_hit, eligible),
        output_tokens_per_trace: sum(&mut out.iter().copied()),
        output_tokens_per_turn: out,
        retries: reqs.iter().map(|r| r.retries).fold(0, u32::saturating_add),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Usage;
    use crate::workload::parse;

    fn req(
        turn: usize,
        start_ms: u64,
        ttft_ms: u64,
        lat_ms: u64,
        prompt: u64,
        cached: u64,
        completion: u64,
    ) -> RequestRecord {
        RequestRecord {
            seq: 7,
            template: 0,
            slot: 0,
            turn,
            start: Duration::from_millis(start_ms),
            ttft: Some(Duration::from_millis(ttft_ms)),
            latency: Duration::from_millis(lat_ms),
            max_tokens: completion,
            usage: Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cached_tokens: Some(cached),
            }),
            expected_prompt_tokens: prompt,
            itl_sum: Duration::from_millis(lat_ms - ttft_ms),
            itl_count: completion - 1,
            retries: 0,
            timings: None,
            body_fnv1a: None,
            chat_shaped: false,
        }
    }

    #[test]
    fn per_trace_figures_follow_spec() {
        let wl = parse("w", r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[11],"tool_call_output_length":[20],"tool_call_latency":[0.5],"final_assistant_response_length":21}"#).unwrap();
        let mut agg = Aggregator::new(
            Arc::new(Workload {
                path: "w".into(),
                content_hash: String::new(),
                traces: wl,
            }),
            Warned::default(),
        );
        agg.handle(Event::TraceStarted {
            seq: 7,
            template: 0,
            slot: 3,
            at: Duration::from_millis(1000),
            late: None,
        });
        // Turn 0 hits a prefix another trace left: not eligible.
        agg.handle(Event::Request(req(0, 1000, 100, 1100, 100, 40, 11)));
        agg.handle(Event::Request(req(1, 2600, 50, 2050, 131, 96, 21)));
        agg.handle(Event::TraceEnded {
            seq: 7,
            at: Duration::from_millis(4650),
            end: TraceEnd::Completed,
        });
        let s = agg.finish(Summary::default(), Duration::from_secs(10));
        let r = &s.traces[0];
        assert_eq!(r.latency_s, 3.65);
        assert_eq!(r.ttft_s, Some(0.1));
        assert!((r.ttfat_s.unwrap() - 1.65).abs() < 1e-9);
        // decode: 10 tok / 1.0 s and 20 tok / 2.0 s
        assert_eq!(r.decode_tps, Some(10.0));
        assert_eq!(r.decode_tpot_ms, Some(100.0));
        assert!((r.cache_hit_rate_pct.unwrap() - 100.0 * 136.0 / 231.0).abs() < 1e-9);
        assert!((r.eligible_cache_hit_rate_pct.unwrap() - 100.0 * 96.0 / 111.0).abs() < 1e-9);
        assert_eq!(r.output_tokens_per_turn, vec![11, 21]);
        // curve: turn 0 adds 100 new prompt; turn 1 adds 20 new + 111 cached.
        let last = s.curve.last().unwrap();
        assert_eq!(
            (last.prompt, last.cached, last.uncached, last.completion),
            (231, 111, 120, 32)
        );
        assert_eq!(s.completed_requests, 1);
        assert_eq!(s.trace_per_s, 0.1);
    }

    #[test]
    fn requests_of_unfinished_traces_count_per_request() {
        let wl = parse("w", r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[11],"tool_call_output_length":[20],"tool_call_latency":[0.5],"final_assistant_response_length":21}"#).unwrap();
        let wl = Arc::new(Workload {
            path: "w".into(),
            content_hash: String::new(),
            traces: wl,
        });
        let mut agg = Aggregator::new(wl, Warned::default());
        agg.handle(Event::TraceStarted {
            seq: 7,
            template: 0,
            slot: 0,
            at: Duration::ZERO,
            late: None,
        });
        let mut r = req(0, 0, 100, 1100, 100, 0, 11);
        r.usage.as_mut().unwrap().cached_tokens = None;
        agg.handle(Event::Request(r));
        // Cut off at the deadline before its final request.
        agg.handle(Event::TraceEnded {
            seq: 7,
            at: Duration::from_millis(2000),
            end: TraceEnd::Cancelled,
        });
        let s = agg.finish(Summary::default(), Duration::from_secs(2));
        assert_eq!(s.per_trace, PerTrace::default());
        let p = &s.per_request;
        assert_eq!(p.ttft_s.unwrap().p50, 0.1);
        assert_eq!(p.latency_s.unwrap().max, 1.1);
        assert_eq!(p.prompt_tokens.unwrap().mean, 100.0);
        assert_eq!(p.completion_tokens.unwrap().mean, 11.0);
        assert!((p.decode_tps.unwrap().mean - 10.0).abs() < 1e-9);
        assert!((p.itl_ms.unwrap().mean - 100.0).abs() < 1e-9);
        assert_eq!(p.cached_tokens, None, "not reported: absent, not 0");
    }

    #[test]
    fn absent_figures_stay_absent_and_the_window_is_incremental() {
        let wl = parse("w", r#"{"num_turns":0,"input_prompt_length":10,"assistant_response_length":[],"tool_call_output_length":[],"tool_call_latency":[],"final_assistant_response_length":1}"#).unwrap();
        let mut agg = Aggregator::new(
            Arc::new(Workload {
                path: "w".into(),
                content_hash: String::new(),
                traces: wl,
            }),
            Warned::default(),
        );
        // Nothing completed: every per-trace statistic and slope is absent.
        let empty = Aggregator::new(agg.workload.clone(), Warned::default())
            .finish(Summary::default(), Duration::from_secs(3));
        assert_eq!(empty.per_trace, PerTrace::default());
        assert_eq!((empty.steady_state, empty.last_30s_window), (None, None));
        assert_eq!(empty.overall, Some(Rates::default()));
        // One one-token request per trace: no decode speed, nothing eligible.
        for (seq, end_ms) in [
            (1u64, 700u64),
            (2, 300),
            (3, 40_000),
            (4, 39_000),
            (5, 80_000),
        ] {
            agg.handle(Event::TraceStarted {
                seq,
                template: 0,
                slot: 0,
                at: Duration::ZERO,
                late: None,
            });
            let mut r = req(0, 0, 5, end_ms, 10, 0, 1);
            r.seq = seq;
            if seq == 5 {
                // A server that does not report cached tokens.
                r.usage.as_mut().unwrap().cached_tokens = None;
            }
            agg.handle(Event::Request(r));
            agg.handle(Event::TraceEnded {
                seq,
                at: Duration::from_millis(end_ms),
                end: TraceEnd::Completed,
            });
            assert_eq!(
                agg.window_rates(30.0),
                metrics::last_window(&agg.curve(), 30.0),
                "{seq}"
            );
        }
        let times: Vec<f64> = agg.curve().iter().map(|p| p.t_s).collect();
        assert_eq!(
            times,
            [0.3, 0.7, 39.0, 40.0, 80.0],
            "steps are kept in time order"
        );
        let s = agg.finish(Summary::default(), Duration::from_secs(90));
        let r = &s.traces[0];
        assert_eq!(
            (r.decode_tps, r.decode_tpot_ms, r.itl_ms),
            (None, None, None)
        );
        assert_eq!(r.eligible_cache_hit_rate_pct, None);
        assert_eq!(r.cache_hit_rate_pct, Some(0.0));
        let unreported = s.traces.iter().find(|t| t.seq == 5).unwrap();
        assert_eq!(unreported.cache_hit_rate_pct, None, "absent, not 0 %");
        assert_eq!(s.per_trace.decode_tps, None);
        assert_eq!(s.per_trace.eligible_cache_hit_rate_pct, None);
        assert!(s.per_trace.latency_s.is_some());
    }
}

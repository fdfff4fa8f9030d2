//! The aggregator: the one owner of metric state. It turns slot events into
//! the run's [`Records`] (one row per trace, request and failed attempt),
//! keeps the little live state the progress line needs, and at the end hands
//! the records to [`crate::record::records::summarize`] for the [`crate::record::summary::Summary`].

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::exec::preflight::Warned;
use crate::input::workload::Workload;
use crate::net::client::FailureKind;
use crate::record::event::{Event, Next, RequestRecord};
use crate::record::metrics::{self, CurvePoint, Rates};
use crate::record::records::{AttemptRow, Outcome, Records, RequestRow, Step, TraceRow};

/// How much of the token curve the progress line keeps, seconds (its
/// window is 30 s).
const KEEP_STEPS_S: f64 = 60.0;

/// The request rows of a run. A long run makes millions: they wait in an
/// unlinked temporary file (one JSON line each, floats round-tripped), so
/// the aggregator's memory stays flat, and are read back at the end. Where
/// no temporary file can be made, or a write fails, they stay in memory.
enum Rows {
    Memory(Vec<RequestRow>),
    Spilled { file: BufWriter<File>, count: usize },
}

impl Rows {
    fn new() -> Rows {
        match spill_file() {
            Ok(file) => Rows::Spilled {
                file: BufWriter::with_capacity(64 << 10, file),
                count: 0,
            },
            Err(e) => {
                log::debug!("request rows stay in memory: no temporary file ({e})");
                Rows::Memory(Vec::new())
            }
        }
    }

    fn push(&mut self, row: RequestRow) {
        if let Rows::Spilled { file, count } = self {
            let written = serde_json::to_writer(&mut *file, &row)
                .map_err(std::io::Error::other)
                .and_then(|_| file.write_all(b"\n"));
            match written {
                Ok(()) => {
                    *count += 1;
                    return;
                }
                Err(e) => {
                    log::warn!(
                        "request rows: the temporary file failed ({e}); the rest stay in memory"
                    );
                    let mut rows = std::mem::replace(self, Rows::Memory(Vec::new())).into_vec();
                    // Whole in the buffer already, it came back with the rest.
                    if rows.last() != Some(&row) {
                        rows.push(row);
                    }
                    *self = Rows::Memory(rows);
                    return;
                }
            }
        }
        if let Rows::Memory(v) = self {
            v.push(row);
        }
    }

    /// Every row, in the order they came. A write that failed (a full
    /// disk) loses nothing that reached the file or its buffer: the file is
    /// read back and the bytes still buffered follow; only a line cut in two
    /// is skipped.
    fn into_vec(self) -> Vec<RequestRow> {
        let (file, count) = match self {
            Rows::Memory(v) => return v,
            Rows::Spilled { file, count } => (file, count),
        };
        let (file, pending) = match file.into_inner() {
            Ok(f) => (f, Vec::new()),
            Err(e) => {
                let (f, buffered) = e.into_inner().into_parts();
                (f, buffered.unwrap_or_default())
            }
        };
        let mut bytes = Vec::new();
        let read = (&file)
            .rewind()
            .and_then(|_| BufReader::new(&file).read_to_end(&mut bytes));
        if let Err(e) = read {
            log::error!("request rows: cannot read the temporary file back ({e})");
        }
        bytes.extend_from_slice(&pending);
        let rows: Vec<RequestRow> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        if rows.len() < count {
            log::error!(
                "request rows: {} of {count} came back from the temporary file; the figures miss the rest",
                rows.len()
            );
        }
        rows
    }
}

/// A temporary file nobody else can open: created anew, then unlinked.
fn spill_file() -> std::io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        ".trie-rows-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Metric state of a run.
pub struct Aggregator {
    workload: Arc<Workload>,
    /// Every record but the request rows.
    records: Records,
    /// The request rows.
    rows: Rows,
    /// Traces in flight: sequence number → row in `records.traces`.
    active: HashMap<u64, usize>,
    completed: usize,
    failed: u64,
    /// The last [`KEEP_STEPS_S`] of curve increments in time order (kept
    /// sorted as they come), for the progress line's window.
    steps: VecDeque<Step>,
    /// Their running totals.
    totals: CurvePoint,
    warned: Warned,
    /// Tokens of the shared prefix (`--shared-prefix`), 0 without one.
    prefix_tokens: u64,
    /// Shared prefixes: the earliest end of a request that sent each.
    prefixes_sent: HashMap<u32, Duration>,
    /// Embeddings requests: a request's workload is its inputs.
    embeddings: bool,
}

impl Aggregator {
    /// Empty state for a run of `workload`; what `warned` names was already
    /// warned about (by the preflight) and is only counted.
    pub fn new(workload: Arc<Workload>, warned: Warned) -> Aggregator {
        Aggregator {
            workload,
            records: Records::default(),
            rows: Rows::new(),
            active: HashMap::new(),
            completed: 0,
            failed: 0,
            steps: VecDeque::new(),
            totals: CurvePoint::default(),
            prefix_tokens: 0,
            prefixes_sent: HashMap::new(),
            embeddings: false,
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
                self.active.insert(seq, self.records.traces.len());
                self.records.traces.push(TraceRow {
                    seq,
                    template,
                    slot,
                    start_s: at.as_secs_f64(),
                    late_s: late.map(|l| l.as_secs_f64()),
                    ..TraceRow::default()
                });
            }
            Event::Request(r) => self.request(&r),
            Event::Failed(a) => {
                if a.next == Next::Retry && a.kind != FailureKind::Cancelled {
                    self.records.example(a.kind.name(), a.message.clone());
                }
                self.records.attempts.push(AttemptRow::new(&a));
            }
            Event::TraceEnded { seq, at, end } => {
                let Some(index) = self.active.remove(&seq) else {
                    return;
                };
                match self.records.trace_ended(index, at.as_secs_f64(), end) {
                    Some(Outcome::Completed) => self.completed += 1,
                    Some(Outcome::Failed) => self.failed += 1,
                    _ => {}
                }
            }
            Event::WaitedForLimit => self.records.waited_for_limit += 1,
        }
    }

    /// Each trace is one embeddings request: its workload is the tokens of
    /// its inputs, nothing generated.
    pub fn with_embeddings(mut self, on: bool) -> Aggregator {
        self.embeddings = on;
        self
    }

    /// Traces start with a shared prefix of `tokens` tokens.
    pub fn with_prefix(mut self, tokens: u64) -> Aggregator {
        self.prefix_tokens = tokens;
        self
    }

    /// Record an event that could not be handled (a bug in trie, caught):
    /// listed under the `internal` kind, without a failed trace.
    pub fn internal_error(&mut self, message: String) {
        self.records.example(FailureKind::Internal.name(), message);
    }

    fn request(&mut self, r: &RequestRecord) {
        if r.chat_shaped && !std::mem::replace(&mut self.warned.chat_shaped, true) {
            log::warn!(
                "the server streams chat-shaped choices (delta) on /v1/completions: it renders a chat template around every prompt, so prompt counts are off; is --endpoint an OpenAI completions API? (for chat, pass --api chat)"
            );
        }
        if let Some(u) = r.usage {
            if u.completion_tokens < r.max_tokens
                && !std::mem::replace(&mut self.warned.short, true)
            {
                log::warn!(
                    "{}",
                    crate::exec::preflight::short_completion(u.completion_tokens, r.max_tokens)
                );
            }
            if u.prompt_tokens != r.expected_prompt_tokens {
                log::debug!(
                    "trace {} turn {}: server counted {} prompt tokens, trie sent {}",
                    r.seq,
                    r.turn,
                    u.prompt_tokens,
                    r.expected_prompt_tokens
                );
            }
        }
        // Workload accounting (SPEC §5): from the template, not the server.
        let mut planned = self.workload.traces[r.template].turn_tokens(r.turn);
        if self.embeddings {
            planned = crate::input::workload::TurnTokens {
                new_prompt: r.expected_prompt_tokens,
                cached_prompt: 0,
                completion: 0,
            };
        }
        // The shared prefix: cached once a request that sent it has ended
        // before this one was sent (what the per-trace eligibility counts
        // too); new for the first requests of its group before that.
        let prefix = r.prefix_group.map(|g| (g, self.prefix_tokens));
        if let Some((group, tokens)) = prefix {
            let end = r.start + r.latency;
            let first_end = self.prefixes_sent.entry(group).or_insert(end);
            let cached = r.turn > 0 || *first_end < r.start;
            *first_end = (*first_end).min(end);
            if cached {
                planned.cached_prompt += tokens;
            } else {
                planned.new_prompt += tokens;
            }
        }
        let row = RequestRow::new(r, planned, prefix);
        let step = Step::of(&row);
        // Requests end nearly in order: insert from the back.
        let at = self
            .steps
            .iter()
            .rposition(|s| s.t_s <= step.t_s)
            .map_or(0, |i| i + 1);
        self.steps.insert(at, step);
        self.totals.add(&step);
        let last = self.steps.back().map_or(0.0, |s| s.t_s);
        while self
            .steps
            .front()
            .is_some_and(|s| s.t_s < last - KEEP_STEPS_S)
        {
            self.steps.pop_front();
        }
        self.rows.push(row);
    }

    /// The slope of the curve's last `window_s`, as [`metrics::last_window`]
    /// computes it, from the steps inside the window only (the progress
    /// line's cost does not grow with the run).
    fn window_rates(&self, window_s: f64) -> Option<Rates> {
        let last = self.steps.back()?;
        let first = self
            .steps
            .iter()
            .rposition(|s| s.t_s < last.t_s - window_s)
            .map_or(0, |i| i + 1);
        // From the point of step `first` to the last: what the later steps added.
        let mut gained = CurvePoint::default();
        self.steps.range(first + 1..).for_each(|s| gained.add(s));
        let dt = last.t_s - self.steps[first].t_s;
        (dt > 0.0).then(|| Rates::between(&CurvePoint::default(), &gained, dt))
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
            self.completed,
            self.failed,
            self.active.len(),
            rate((e > 0.0).then(|| self.completed as f64 / e), 2),
            rate(overall.map(|r| r.prompt_tok_per_s), 0),
            rate(overall.map(|r| r.completion_tok_per_s), 1),
            rate(last.map(|r| r.completion_tok_per_s), 1),
        )
    }

    /// The run's records, for [`crate::record::records::summarize`]. Traces still active
    /// never ended (cannot happen once slots are joined): their rows stay
    /// `cancelled`, without an end.
    pub fn into_records(self) -> Records {
        let mut records = self.records;
        records.requests = self.rows.into_vec();
        records
    }

    /// The curve so far (tests).
    #[cfg(test)]
    fn curve(&self) -> Vec<CurvePoint> {
        let steps: Vec<Step> = self.steps.iter().copied().collect();
        crate::record::records::curve(&steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::workload::parse;
    use crate::net::sse::Usage;
    use crate::record::event::TraceEnd;
    use crate::record::summary::{PerTrace, Summary};

    const ONE_TURN: &str = r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[11],"tool_call_output_length":[20],"tool_call_latency":[0.5],"final_assistant_response_length":21}"#;
    const NO_TURN: &str = r#"{"num_turns":0,"input_prompt_length":10,"assistant_response_length":[],"tool_call_output_length":[],"tool_call_latency":[],"final_assistant_response_length":1}"#;

    /// An aggregator of a workload of one `row`.
    fn aggregator(row: &str) -> Aggregator {
        let traces = parse("w", row).unwrap();
        let workload = Workload {
            path: "w".into(),
            content_hash: String::new(),
            traces,
        };
        Aggregator::new(Arc::new(workload), Warned::default())
    }

    fn finish(agg: Aggregator, wall_s: f64) -> Summary {
        crate::record::records::summarize(&Summary::default(), &agg.into_records(), wall_s)
    }

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
            prefix_group: None,
        }
    }

    #[test]
    fn a_shared_prefix_is_cached_and_eligible_once_a_request_that_sent_it_ended() {
        let mut agg = aggregator(NO_TURN).with_prefix(50);
        // Three traces of one group: A ends at 1.1 s; B was sent at 0.5 s
        // (A still running: not eligible); C at 2 s (eligible: A ended).
        let starts = [(1, 0, 1100, 0), (2, 500, 1000, 0), (3, 2000, 400, 48)];
        for (seq, start_ms, lat_ms, cached) in starts {
            agg.handle(Event::TraceStarted {
                seq,
                template: 0,
                slot: 0,
                at: Duration::from_millis(start_ms),
                late: None,
            });
            let mut r = req(0, start_ms, 10, lat_ms, 60, cached, 1);
            r.seq = seq;
            r.max_tokens = 1;
            r.prefix_group = Some(4);
            agg.handle(Event::Request(r));
            agg.handle(Event::TraceEnded {
                seq,
                at: Duration::from_millis(start_ms + lat_ms),
                end: TraceEnd::Completed,
            });
        }
        let records = agg.into_records();
        let planned: Vec<(u64, u64)> = records
            .requests
            .iter()
            .map(|r| (r.planned_prompt_tokens, r.planned_cached_tokens))
            .collect();
        // Workload accounting: 10 own tokens each; the prefix new for A
        // and for B (sent before A ended), cached for C, as eligibility.
        assert_eq!(planned, [(60, 0), (60, 0), (60, 50)]);
        let s = crate::record::records::summarize(&Summary::default(), &records, 3.0);
        // Only C was eligible: 48 of its 50 prefix tokens hit.
        assert_eq!(s.prefix_cache_hit_rate_pct, Some(96.0));
        let eligible: Vec<Option<f64>> = s
            .traces
            .iter()
            .map(|t| t.eligible_cache_hit_rate_pct)
            .collect();
        assert_eq!(eligible, [None, None, Some(96.0)]);
    }

    #[test]
    fn request_rows_wait_on_disk_and_come_back_exactly() {
        let mut rows = Rows::new();
        assert!(matches!(rows, Rows::Spilled { .. }), "a temporary file");
        let made: Vec<RequestRow> = (0..2000u64)
            .map(|i| RequestRow {
                seq: i,
                turn: (i % 7) as usize,
                start_s: i as f64 / 3.0,
                ttft_s: (i % 2 == 0).then_some(0.1 + i as f64 * 1e-9),
                latency_s: std::f64::consts::PI * i as f64,
                itl_sum_s: 1.0 / (i + 1) as f64,
                usage: (i % 3 != 0).then_some(Usage {
                    prompt_tokens: i,
                    completion_tokens: 2 * i,
                    cached_tokens: (i % 5 == 0).then_some(i / 2),
                }),
                ..RequestRow::default()
            })
            .collect();
        for r in &made {
            rows.push(r.clone());
        }
        assert!(rows.into_vec() == made, "every float and count to the bit");
        // No file is left behind: it was unlinked when made.
        let left = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!(".trie-rows-{}-", std::process::id()))
            })
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn per_trace_figures_follow_spec() {
        let mut agg = aggregator(ONE_TURN);
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
        let s = finish(agg, 10.0);
        let r = &s.traces[0];
        assert!((r.latency_s - 3.65).abs() < 1e-12);
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
        let mut agg = aggregator(ONE_TURN);
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
        let s = finish(agg, 2.0);
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
        let mut agg = aggregator(NO_TURN);
        // Nothing completed: every per-trace statistic and slope is absent.
        let empty = finish(
            Aggregator::new(agg.workload.clone(), Warned::default()),
            3.0,
        );
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
        // In time order, and only the last 60 s of them (80 - 60 = 20).
        assert_eq!(times, [39.0, 40.0, 80.0], "steps are kept in time order");
        let s = finish(agg, 90.0);
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

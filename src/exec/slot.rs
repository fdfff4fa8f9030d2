//! One slot: an OS thread that takes trace jobs from the feeder's channel and
//! runs each trace turn by turn with blocking requests. All synthetic text of a
//! trace is made before its clock starts; the only work between requests is
//! appending the reply to the request body and counting its tokens, done while
//! the tool call "runs".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::panic_message;
use crate::input::workload::{Trace, Workload};
use crate::net::client::{Client, Expect, Failure, FailureKind, Http, Reply};
use crate::record::event::{Event, FailedAttempt, Next, RequestRecord, TraceEnd, trace_id};
use crate::record::metrics;
use crate::stop::Stop;
use crate::text::prompt::{Synth, segment_key};
use crate::text::tokenizer::{Counter, Workers};

/// BOS tokens a server adds to every prompt (vLLM, SGLang, TensorRT-LLM, llama.cpp).
pub const SERVER_BOS: u64 = 1;

/// One trace to run.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    /// Trace sequence number: which trace of the run this is.
    pub seq: u64,
    /// Template index in the workload.
    pub template: usize,
    /// Open loop: when it was due to start.
    pub due: Option<Instant>,
}

/// A test seam: called at the start of every trace, inside the slot's panic
/// guard (tests make it panic to prove a panicking slot loses nothing).
pub type TraceHook = dyn Fn(u64) + Send + Sync;

/// What every slot shares (read-only) for a run.
pub struct SlotContext<'a> {
    /// What the slots' HTTP clients share.
    pub http: &'a Http,
    /// The workload.
    pub workload: &'a Workload,
    /// The word generator.
    pub synth: &'a Synth,
    /// The tokenizer's threads, for counting replies after requests end.
    pub tokenizer: &'a Workers,
    /// The model name as a JSON string.
    pub model_json: String,
    /// Seed of all synthetic text.
    pub seed: u64,
    /// Retries per request.
    pub max_retries: u32,
    /// Set when the run stops (deadline or interrupt): wakes every sleeping
    /// slot and breaks off every request.
    pub stop: &'a Stop,
    /// When the run started.
    pub epoch: Instant,
    /// Where events go.
    pub events: Sender<Event>,
    /// Hash every request body into its event (for the event log).
    pub hash_bodies: bool,
    /// Called at the start of every trace (tests).
    pub on_trace: Option<&'a TraceHook>,
}

impl SlotContext<'_> {
    fn since_epoch(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }

    fn trace_ended(&self, seq: u64, end: TraceEnd) {
        let _ = self.events.send(Event::TraceEnded {
            seq,
            at: self.since_epoch(Instant::now()),
            end,
        });
    }
}

/// Run jobs until the channel closes or the run stops. A panic inside a
/// trace (a bug) fails that trace as `internal`; the slot goes on.
pub fn run_slot(slot: usize, ctx: &SlotContext, jobs: &Receiver<Job>) {
    let client = ctx.http.client(ctx.stop);
    let counter = ctx.tokenizer.counter();
    // Whether this slot's last request ended well, leaving a kept-alive
    // connection in its pool.
    let mut warm = false;
    for job in jobs.iter() {
        if ctx.stop.is_set() {
            break;
        }
        let mut began = false;
        let traced = catch_unwind(AssertUnwindSafe(|| {
            if let Some(hook) = ctx.on_trace {
                hook(job.seq);
            }
            run_trace(slot, ctx, &client, &counter, job, &mut warm, &mut began)
        }));
        if let Err(panic) = traced {
            let message = format!("internal error (a bug in trie): {}", panic_message(&panic));
            // The panic hook (of the binary) has logged it already.
            log::debug!("{} slot {slot}: {message}", trace_id(job.seq));
            if !began {
                // Started now, so that its failure is counted.
                let _ = ctx.events.send(Event::TraceStarted {
                    seq: job.seq,
                    template: job.template,
                    slot,
                    at: ctx.since_epoch(Instant::now()),
                    late: None,
                });
            }
            ctx.trace_ended(
                job.seq,
                TraceEnd::Failed {
                    kind: FailureKind::Internal,
                    message,
                },
            );
            warm = false;
        }
    }
}

/// The request body of one trace, grown in place: `{..."prompt":"<context>`
/// plus a per-request tail with `max_tokens` that is cut off after sending.
/// Optionally hashed as it grows, so the hash of each request costs only its
/// new bytes, all hashed before the request's clock starts.
pub struct Body {
    buf: Vec<u8>,
    /// FNV-1a of `buf` up to the tail, when hashing.
    prefix_hash: Option<u64>,
    /// FNV-1a of the whole body after [`Body::finish`].
    full_hash: Option<u64>,
}

impl Body {
    /// The fixed head of every request of a trace.
    pub fn new(model_json: &str, stream: bool) -> Body {
        let stream_part = if stream {
            r#""stream":true,"stream_options":{"include_usage":true},"#
        } else {
            ""
        };
        let head = format!(r#"{{"model":{model_json},"ignore_eos":true,{stream_part}"prompt":""#);
        Body {
            buf: head.into_bytes(),
            prefix_hash: None,
            full_hash: None,
        }
    }

    /// Keep an FNV-1a hash of the body (for the event log).
    pub fn hashed(mut self) -> Body {
        self.prefix_hash = Some(crate::input::workload::fnv1a(&self.buf));
        self
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if let Some(h) = self.prefix_hash.as_mut() {
            *h = crate::input::workload::fnv1a_extend(*h, bytes);
        }
    }

    /// Append synthetic text (ASCII letters and spaces: nothing to escape).
    pub fn push_synthetic(&mut self, text: &str) {
        debug_assert!(text.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
        self.extend(text.as_bytes());
    }

    /// Append arbitrary text, JSON-escaped.
    pub fn push_text(&mut self, text: &str) {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        self.extend(&quoted.as_bytes()[1..quoted.len() - 1]);
    }

    /// The full body with this `max_tokens`; call [`Body::cut`] after sending.
    pub fn finish(&mut self, max_tokens: u32) -> usize {
        let len = self.buf.len();
        let tail = format!(r#"","max_tokens":{max_tokens}}}"#);
        self.buf.extend_from_slice(tail.as_bytes());
        self.full_hash = self
            .prefix_hash
            .map(|h| crate::input::workload::fnv1a_extend(h, tail.as_bytes()));
        len
    }

    /// FNV-1a of the finished body, when hashing.
    pub fn fnv1a(&self) -> Option<u64> {
        self.full_hash
    }

    /// Remove the per-request tail again.
    pub fn cut(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// The token count of a growing context, exact without re-tokenizing it: text
/// up to the last synthetic word is counted by construction; only the text
/// after it (replies) is tokenized, together with that word so merges across
/// the boundary are counted as the server will count them.
#[derive(Default)]
pub struct ContextCount {
    tokens: u64,
    tail: String,
    tail_tokens: u64,
}

impl ContextCount {
    /// Append `n` synthetic tokens of `text`.
    pub fn push_synthetic(&mut self, text: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.tokens += n;
        self.tail.clear();
        self.tail.push_str(&text[text.rfind(' ').unwrap_or(0)..]);
        self.tail_tokens = 1;
    }

    /// The text to count once `reply` is appended: the tail (the last
    /// synthetic word and the replies since) and the reply.
    pub fn tail_with(&self, reply: &str) -> String {
        let mut t = String::with_capacity(self.tail.len() + reply.len());
        t.push_str(&self.tail);
        t.push_str(reply);
        t
    }

    /// Append a reply: `tail` is [`ContextCount::tail_with`] of it, which
    /// counts `n` tokens.
    pub fn push_counted(&mut self, tail: String, n: u64) {
        self.tokens = self.tokens - self.tail_tokens + n;
        self.tail = tail;
        self.tail_tokens = n;
    }

    /// Text tokens of the context (no BOS).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// The synthetic segments of a trace: its first prompt (one token short, for
/// the server's BOS) and each tool output.
pub fn synthesize(synth: &Synth, seed: u64, seq: u64, t: &Trace) -> Vec<(String, u64)> {
    let first = t.input_prompt_length.saturating_sub(SERVER_BOS as u32) as u64;
    std::iter::once(first)
        .chain(t.tool_call_output_length.iter().map(|&n| n as u64))
        .enumerate()
        .map(|(k, n)| (synth.text(segment_key(seed, seq, k as u32), n as usize), n))
        .collect()
}

/// Run one trace; `began` is set once its start has been reported.
fn run_trace(
    slot: usize,
    ctx: &SlotContext,
    client: &Client,
    counter: &Counter,
    job: Job,
    warm: &mut bool,
    began: &mut bool,
) {
    let t = &ctx.workload.traces[job.template];
    let segments = synthesize(ctx.synth, ctx.seed, job.seq, t);
    let mut body = Body::new(&ctx.model_json, client.streaming());
    if ctx.hash_bodies {
        body = body.hashed();
    }
    let mut count = ContextCount::default();
    body.push_synthetic(&segments[0].0);
    count.push_synthetic(&segments[0].0, segments[0].1);
    let routing_key = trace_id(job.seq);

    let started = Instant::now();
    let _ = ctx.events.send(Event::TraceStarted {
        seq: job.seq,
        template: job.template,
        slot,
        at: ctx.since_epoch(started),
        late: job.due.map(|d| started.saturating_duration_since(d)),
    });
    *began = true;
    let mut end_at = started;
    for turn in 0..t.num_requests() {
        let max_tokens = t.max_tokens(turn);
        let expected_prompt_tokens = SERVER_BOS + count.tokens();
        let tail = body.finish(max_tokens);
        // The body's size bounds the prompt's (its JSON escapes only add).
        let expect = Expect::new(max_tokens as u64, ctx.synth.longest_token_bytes())
            .prompt_bytes(body.bytes().len() as u64);
        let body_fnv1a = body.fnv1a();
        let mut report = |f: &Failure, sent: Instant, attempt: u32, next: Next| {
            let _ = ctx.events.send(Event::Failed(FailedAttempt {
                seq: job.seq,
                template: job.template,
                slot,
                turn,
                attempt,
                start: ctx.since_epoch(sent),
                end: ctx.since_epoch(Instant::now()),
                max_tokens: max_tokens as u64,
                expected_prompt_tokens,
                kind: f.kind,
                message: f.message.clone(),
                next,
                body_fnv1a,
            }));
        };
        let result = send_with_retries(
            ctx,
            client,
            body.bytes(),
            &routing_key,
            expect,
            warm,
            &mut report,
        );
        body.cut(tail);
        let (reply, sent, retries) = match result {
            Ok(ok) => ok,
            Err(f) => {
                let end = if f.kind == FailureKind::Cancelled {
                    TraceEnd::Cancelled
                } else {
                    TraceEnd::Failed {
                        kind: f.kind,
                        message: f.message,
                    }
                };
                ctx.trace_ended(job.seq, end);
                return;
            }
        };
        end_at = sent + reply.latency;
        let tool_done = end_at
            + t.tool_call_latency
                .get(turn)
                .map(|&s| crate::limits::seconds(s))
                .unwrap_or_default();
        // Off the timed path from here on: the request has ended. The reply
        // (with the context before it) and, when chunks carry several
        // tokens, each chunk are counted on the tokenizer's threads; after
        // the stop the slot stops waiting for that.
        log::trace!("{routing_key} turn {turn} reply {:?}", reply.text);
        let more = turn < t.num_turns();
        let per_chunk = chunk_texts(&reply);
        let counted_chunks = per_chunk.is_some();
        let texts: Vec<String> = more
            .then(|| count.tail_with(&reply.text))
            .into_iter()
            .chain(per_chunk.into_iter().flatten())
            .collect();
        // A panic of the tokenizer fails the trace, after this request's
        // record (the server did answer it).
        let (counted, broken) = if texts.is_empty() {
            (Some((texts, Vec::new())), None)
        } else {
            match counter.count(texts, ctx.stop) {
                Ok(c) => (c, None),
                Err(message) => (None, Some(message)),
            }
        };
        let (itl_sum, itl_count) = itl_of(
            &reply,
            counted_chunks,
            counted.as_ref().map(|c| c.1.as_slice()),
        );
        let context = counted
            .filter(|_| more)
            .and_then(|(mut texts, counts)| Some((texts.swap_remove(0), *counts.first()? as u64)));
        let _ = ctx.events.send(Event::Request(RequestRecord {
            seq: job.seq,
            template: job.template,
            slot,
            turn,
            start: ctx.since_epoch(sent),
            ttft: reply.ttft,
            latency: reply.latency,
            max_tokens: max_tokens as u64,
            usage: reply.usage,
            expected_prompt_tokens,
            itl_sum,
            itl_count,
            retries,
            timings: reply.timings,
            body_fnv1a,
            chat_shaped: reply.chat_shaped,
        }));
        if let Some(message) = broken {
            let kind = FailureKind::Internal;
            ctx.trace_ended(job.seq, TraceEnd::Failed { kind, message });
            return;
        }
        if more {
            let Some((tail, n)) = context.filter(|_| !ctx.stop.is_set()) else {
                ctx.trace_ended(job.seq, TraceEnd::Cancelled);
                return;
            };
            body.push_text(&reply.text);
            count.push_counted(tail, n);
            let (text, n) = &segments[turn + 1];
            body.push_synthetic(text);
            count.push_synthetic(text, *n);
            if !ctx.stop.sleep_until(tool_done) {
                ctx.trace_ended(job.seq, TraceEnd::Cancelled);
                return;
            }
        }
    }
    let _ = ctx.events.send(Event::TraceEnded {
        seq: job.seq,
        at: ctx.since_epoch(end_at),
        end: TraceEnd::Completed,
    });
}

/// The text of each chunk of a reply, when its chunks do not carry one token
/// each (the count of chunks differs from the server's completion tokens):
/// they must be counted for the inter-token intervals.
fn chunk_texts(reply: &Reply) -> Option<Vec<String>> {
    let completion = reply
        .usage
        .map(|u| u.completion_tokens)
        .unwrap_or(reply.chunks.len() as u64);
    (completion != reply.chunks.len() as u64).then(|| {
        (0..reply.chunks.len())
            .map(|i| crate::net::sse::chunk_text(&reply.text, &reply.reasoning, &reply.chunks, i))
            .collect()
    })
}

/// Observed inter-token intervals of a reply: one token per chunk, or, when
/// `counted`, the chunks' counts at the end of `counts` (absent when they
/// could not be counted).
fn itl_of(reply: &Reply, counted: bool, counts: Option<&[usize]>) -> (Duration, u64) {
    let times: Vec<Duration> = reply.chunks.iter().map(|c| c.at).collect();
    let per_chunk: Vec<u64> = match (counted, counts) {
        (false, _) => vec![1; times.len()],
        (true, Some(c)) if c.len() >= times.len() => c[c.len() - times.len()..]
            .iter()
            .map(|&n| n.max(1) as u64)
            .collect(),
        (true, _) => return (Duration::ZERO, 0),
    };
    metrics::itl(&times, &per_chunk)
}

/// Most immediate re-sends of one request after a stale kept-alive
/// connection: the re-send goes on a new connection, which cannot be stale.
const MAX_RECONNECTS: u32 = 1;

/// A failed attempt: the failure, when it was sent, the attempt number, and
/// what follows.
type ReportFailure<'r> = dyn FnMut(&Failure, Instant, u32, Next) + 'r;

/// Send with retries and backoff, reporting every failed attempt; `Cancelled`
/// when the run stops meanwhile.
fn send_with_retries(
    ctx: &SlotContext,
    client: &Client,
    body: &[u8],
    routing_key: &str,
    expect: Expect,
    warm: &mut bool,
    report: &mut ReportFailure,
) -> Result<(Reply, Instant, u32), Failure> {
    let mut attempt = 0u32;
    // Stale kept-alive connections met by this request.
    let mut reconnects = 0;
    let was_warm = *warm;
    let cancelled = || Failure::new(FailureKind::Cancelled, "run stopped");
    loop {
        let mut sent = Instant::now();
        let failure = match client.complete(body, routing_key, expect, &mut sent) {
            Ok(reply) => {
                *warm = true;
                return Ok((reply, sent, attempt));
            }
            Err(f) => f,
        };
        if ctx.stop.is_set() {
            report(&cancelled(), sent, attempt, Next::GiveUp);
            return Err(cancelled());
        }
        // A kept-alive connection the server closed since its last response
        // (llama-server closes after every stream) fails on send, before any
        // answer: send again at once on another connection. Only when this
        // slot's last request succeeded (so a pooled connection exists) and
        // only a bounded number of times, so a server that drops requests
        // does not get more of them.
        if failure.kind == FailureKind::Reset
            && failure.stale
            && was_warm
            && attempt == 0
            && reconnects < MAX_RECONNECTS
        {
            reconnects += 1;
            report(&failure, sent, attempt, Next::Reconnect);
            continue;
        }
        *warm = false;
        let retried = failure.kind.retryable() && attempt < ctx.max_retries;
        report(
            &failure,
            sent,
            attempt,
            if retried { Next::Retry } else { Next::GiveUp },
        );
        if !retried {
            return Err(failure);
        }
        if !ctx.stop.sleep(crate::net::client::backoff(attempt)) {
            report(&cancelled(), Instant::now(), attempt + 1, Next::GiveUp);
            return Err(cancelled());
        }
        attempt += 1;
    }
}

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
use crate::text::content::Content;
use std::collections::BTreeMap;

use crate::text::chat::ChatTemplate;
use crate::text::conversation::{Calibration, Conversation, Counting, Plan};
use crate::text::prompt::{Prefixes, Synth, prefix_key, segment_key};
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
    /// Chat requests (`--api chat`); `None`: completions.
    pub chat: Option<&'a ChatRequests>,
    /// The shared prefixes traces start with (`--shared-prefix`).
    pub prefixes: Option<&'a Prefixes>,
    /// What synthetic text says (`--text`).
    pub content: &'a Content,
    /// Embeddings requests (`--api embeddings`); `None`: completions or chat.
    pub embed: Option<EmbedJob>,
}

/// How a trace becomes one embeddings request.
#[derive(Clone, Copy, Debug)]
pub struct EmbedJob {
    /// Tokens of each input as the server counts them (`None`: the
    /// trace's input prompt length).
    pub tokens: Option<u32>,
    /// Inputs per request.
    pub batch: u32,
    /// Tokens the server adds to every input (found by the preflight).
    pub added: u64,
}

impl SlotContext<'_> {
    fn since_epoch(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }

    /// Report `job` started on `slot` now; when. `on_schedule`: at its
    /// clock's start (its lateness counts), else a trace that fails before
    /// its clock would start, reported so that its failure is counted.
    fn started(&self, job: Job, slot: usize, on_schedule: bool) -> Instant {
        let now = Instant::now();
        let _ = self.events.send(Event::TraceStarted {
            seq: job.seq,
            template: job.template,
            slot,
            at: self.since_epoch(now),
            late: job
                .due
                .filter(|_| on_schedule)
                .map(|d| now.saturating_duration_since(d)),
        });
        now
    }

    /// Fail `job` before its clock started (as `internal`: trie could not
    /// make or count its text).
    fn failed_unstarted(&self, job: Job, slot: usize, message: String) {
        self.started(job, slot, false);
        self.failed_internal(job.seq, message);
    }

    /// End trace `seq` as failed by trie itself (`internal`).
    fn failed_internal(&self, seq: u64, message: String) {
        let kind = FailureKind::Internal;
        self.trace_ended(seq, TraceEnd::Failed { kind, message });
    }

    /// Report failed attempt `n` of a request, sent at `sent`.
    fn attempt_failed(&self, a: &Attempt, f: &Failure, sent: Instant, n: u32, next: Next) {
        let _ = self.events.send(Event::Failed(FailedAttempt {
            seq: a.job.seq,
            template: a.job.template,
            slot: a.slot,
            turn: a.turn,
            attempt: n,
            start: self.since_epoch(sent),
            end: self.since_epoch(Instant::now()),
            max_tokens: a.max_tokens,
            expected_prompt_tokens: a.expected_prompt_tokens,
            kind: f.kind,
            message: f.message.clone(),
            next,
            body_fnv1a: a.body_fnv1a,
        }));
    }

    fn trace_ended(&self, seq: u64, end: TraceEnd) {
        let _ = self.events.send(Event::TraceEnded {
            seq,
            at: self.since_epoch(Instant::now()),
            end,
        });
    }
}

/// The request an attempt was of (for its failure's event).
struct Attempt {
    job: Job,
    slot: usize,
    turn: usize,
    max_tokens: u64,
    expected_prompt_tokens: u64,
    body_fnv1a: Option<u64>,
}

/// How a trace whose request failed for good ends.
fn failed(f: Failure) -> TraceEnd {
    if f.kind == FailureKind::Cancelled {
        TraceEnd::Cancelled
    } else {
        TraceEnd::Failed {
            kind: f.kind,
            message: f.message,
        }
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
            match ctx.embed {
                Some(e) => run_embedding(slot, ctx, &client, job, e, &mut warm, &mut began),
                None => run_trace(slot, ctx, &client, &counter, job, &mut warm, &mut began),
            }
        }));
        if let Err(panic) = traced {
            let message = format!("internal error (a bug in trie): {}", panic_message(&panic));
            // The panic hook (of the binary) has logged it already.
            log::debug!("{} slot {slot}: {message}", trace_id(job.seq));
            if !began {
                // Started now, so that its failure is counted.
                ctx.started(job, slot, false);
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
/// (chat: `{..."messages":[{"role":"user","content":"<prompt>"},…`) plus a
/// per-request tail with `max_tokens` that is cut off after sending.
/// Optionally hashed as it grows, so the hash of each request costs only its
/// new bytes, all hashed before the request's clock starts.
pub struct Body {
    buf: Vec<u8>,
    /// Messages, not one prompt.
    chat: bool,
    /// FNV-1a of `buf` up to the tail, when hashing.
    prefix_hash: Option<u64>,
    /// FNV-1a of the whole body after [`Body::finish`].
    full_hash: Option<u64>,
}

/// The `"stream":…` fields of a request.
fn stream_fields(stream: bool) -> &'static str {
    if stream {
        r#""stream":true,"stream_options":{"include_usage":true},"#
    } else {
        ""
    }
}

impl Body {
    /// The fixed head of every completion request of a trace.
    pub fn new(model_json: &str, stream: bool) -> Body {
        let head = format!(
            r#"{{"model":{model_json},"ignore_eos":true,{}"prompt":""#,
            stream_fields(stream)
        );
        Body {
            buf: head.into_bytes(),
            chat: false,
            prefix_hash: None,
            full_hash: None,
        }
    }

    /// The fixed head of every chat request of a trace, its first message
    /// of `role` begun; `fields` are further JSON members, each followed
    /// by a comma (`"chat_template_kwargs":{…},`).
    pub fn chat(model_json: &str, stream: bool, fields: &str, role: &str) -> Body {
        let head = format!(
            r#"{{"model":{model_json},"ignore_eos":true,{}{fields}"messages":[{{"role":"{role}","content":""#,
            stream_fields(stream)
        );
        Body {
            buf: head.into_bytes(),
            chat: true,
            prefix_hash: None,
            full_hash: None,
        }
    }

    /// Chat: end the current message and begin one of `role` (a JSON-safe
    /// name). A prompt has no messages: nothing.
    pub fn message(&mut self, role: &str) {
        if self.chat {
            self.extend(format!(r#""}},{{"role":"{role}","content":""#).as_bytes());
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

    /// Append synthetic text: as it is when nothing in it needs escaping
    /// (words: letters and spaces), else JSON-escaped.
    pub fn push_synthetic(&mut self, text: &str) {
        if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.extend(text.as_bytes());
        } else {
            self.push_text(text);
        }
    }

    /// Append arbitrary text, JSON-escaped.
    pub fn push_text(&mut self, text: &str) {
        let quoted = serde_json::to_string(text).unwrap_or_default();
        self.extend(&quoted.as_bytes()[1..quoted.len() - 1]);
    }

    /// The full body with this `max_tokens`; call [`Body::cut`] after sending.
    pub fn finish(&mut self, max_tokens: u32) -> usize {
        let len = self.buf.len();
        let close = if self.chat { r#""}]"# } else { r#"""# };
        let tail = format!(r#"{close},"max_tokens":{max_tokens}}}"#);
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

/// The body of an embeddings request of `inputs`.
pub fn embeddings_body(model_json: &str, inputs: &[String]) -> Vec<u8> {
    let inputs = serde_json::to_string(inputs).unwrap_or_else(|_| "[]".into());
    format!(r#"{{"model":{model_json},"input":{inputs},"encoding_format":"float"}}"#).into_bytes()
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

/// The synthetic segments of a trace: its first prompt (`less` tokens
/// short: the server's BOS on a completion prompt) and each tool output,
/// saying what `content` says.
pub fn synthesize(
    synth: &Synth,
    content: &Content,
    seed: u64,
    seq: u64,
    t: &Trace,
    less: u64,
) -> Vec<(String, u64)> {
    let first = (t.input_prompt_length as u64).saturating_sub(less);
    std::iter::once(first)
        .chain(t.tool_call_output_length.iter().map(|&n| n as u64))
        .enumerate()
        .map(|(k, n)| {
            let key = segment_key(seed, seq, k as u32);
            (content.segment(synth, key, n as usize), n)
        })
        .collect()
}

/// How chat requests are made and counted (`--api chat`).
pub struct ChatRequests {
    /// How their prompt tokens are known.
    pub counting: Counting,
    /// Further JSON members of every request, each followed by a comma
    /// (`"chat_template_kwargs":{…},`).
    pub fields: String,
}

/// A trace's context and the exact count of its next prompt: the
/// completion prompt's ([`ContextCount`]), the chat conversation's as
/// trie renders it ([`Conversation`]), or a calibrated chat count. Growing
/// it is two steps around the tokenizer's threads: [`Context::grow`] gives
/// the texts to count, [`Context::settle`] takes their counts.
enum Context<'c> {
    Prompt {
        count: ContextCount,
        /// The tool output to append once the reply's tail is counted.
        pending: Option<(String, u64)>,
    },
    Rendered {
        conv: Conversation,
        template: &'c ChatTemplate,
        extra: &'c BTreeMap<String, serde_json::Value>,
        /// Tokens the server adds to the rendering.
        bos: u64,
        /// The rendering whose new pieces are being counted.
        plan: Option<Plan>,
    },
    Calibrated {
        calibration: Calibration,
        /// Content tokens (each message counted alone) and replies so far.
        content: u64,
        turns: i64,
        system: bool,
    },
}

impl<'c> Context<'c> {
    /// A context opened by `first` (its text and tokens), after the shared
    /// `prefix` (chat: a system message).
    fn new(
        chat: Option<&'c ChatRequests>,
        prefix: Option<&(String, u64)>,
        first: &(String, u64),
    ) -> Context<'c> {
        match chat.map(|c| &c.counting) {
            None => {
                let mut count = ContextCount::default();
                for (text, n) in prefix.into_iter().chain([first]) {
                    count.push_synthetic(text, *n);
                }
                Context::Prompt {
                    count,
                    pending: None,
                }
            }
            Some(Counting::Template {
                template,
                extra,
                bos,
            }) => {
                let mut conv = Conversation::new();
                if let Some((text, n)) = prefix {
                    conv.push_synthetic("system", text, *n);
                }
                conv.push_synthetic("user", &first.0, first.1);
                Context::Rendered {
                    conv,
                    template,
                    extra,
                    bos: *bos,
                    plan: None,
                }
            }
            Some(Counting::Calibrated(calibration)) => Context::Calibrated {
                calibration: *calibration,
                content: first.1 + prefix.map_or(0, |p| p.1),
                turns: 0,
                system: prefix.is_some(),
            },
        }
    }

    /// The texts to count for the prompt as it is: a rendering's pieces
    /// not counted yet (nothing for the others, whose first prompt is
    /// known).
    fn plan(&mut self) -> Result<Vec<String>, String> {
        let Context::Rendered {
            conv,
            template,
            extra,
            plan,
            ..
        } = self
        else {
            return Ok(Vec::new());
        };
        let p = conv.plan(template, extra)?;
        let texts = p.to_count();
        *plan = Some(p);
        Ok(texts)
    }

    /// Append `reply` and the tool's output `tool`; the texts to count.
    fn grow(&mut self, reply: &str, tool: &(String, u64)) -> Result<Vec<String>, String> {
        match self {
            Context::Prompt { count, pending } => {
                *pending = Some(tool.clone());
                Ok(vec![count.tail_with(reply)])
            }
            Context::Rendered { conv, .. } => {
                conv.push_text("assistant", reply);
                conv.push_synthetic("user", &tool.0, tool.1);
                self.plan()
            }
            Context::Calibrated { content, turns, .. } => {
                *content += tool.1;
                *turns += 1;
                Ok(vec![reply.to_string()])
            }
        }
    }

    /// The next prompt's tokens, given `texts` (from [`Context::plan`] or
    /// [`Context::grow`]) and their `counts`; `None` when they do not fit.
    fn settle(&mut self, mut texts: Vec<String>, counts: &[usize]) -> Option<u64> {
        match self {
            Context::Prompt { count, pending } => {
                if let Some((text, n)) = pending.take() {
                    count.push_counted(texts.swap_remove(0), *counts.first()? as u64);
                    count.push_synthetic(&text, n);
                }
                Some(SERVER_BOS + count.tokens())
            }
            Context::Rendered {
                conv, bos, plan, ..
            } => Some(*bos + conv.settle(plan.take()?, counts)?),
            Context::Calibrated {
                calibration: c,
                content,
                turns,
                system,
            } => {
                if *turns > 0 {
                    *content += *counts.first()? as u64;
                }
                let overhead = c.first + c.per_turn * *turns + if *system { c.system } else { 0 };
                Some((*content as i64 + overhead).max(0) as u64)
            }
        }
    }
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
    // A chat prompt's BOS is the template's (counted in the rendering).
    let less = if ctx.chat.is_some() { 0 } else { SERVER_BOS };
    let segments = synthesize(ctx.synth, ctx.content, ctx.seed, job.seq, t, less);
    let prefix = ctx.prefixes.map(|p| {
        let group = p.group(ctx.seed, job.seq);
        let key = prefix_key(ctx.seed, group);
        let text = p.text(group, || {
            ctx.content.segment(ctx.synth, key, p.tokens as usize)
        });
        (group, (text.to_string(), p.tokens))
    });
    let first_role = if prefix.is_some() { "system" } else { "user" };
    let mut body = match ctx.chat {
        None => Body::new(&ctx.model_json, client.streaming()),
        Some(chat) => Body::chat(
            &ctx.model_json,
            client.streaming(),
            &chat.fields,
            first_role,
        ),
    };
    if ctx.hash_bodies {
        body = body.hashed();
    }
    if let Some((_, (text, _))) = &prefix {
        body.push_synthetic(text);
        body.message("user");
    }
    body.push_synthetic(&segments[0].0);
    let mut context = Context::new(ctx.chat, prefix.as_ref().map(|p| &p.1), &segments[0]);
    let prefix_group = prefix.map(|p| p.0);
    // The first prompt is counted before the trace's clock starts.
    let first = context.plan().and_then(|texts| {
        let (texts, counts) = counter
            .count(texts, ctx.stop)?
            .ok_or_else(|| "run stopped".to_string())?;
        context
            .settle(texts, &counts)
            .ok_or_else(|| "counts that do not fit the prompt".to_string())
    });
    let mut expected_prompt_tokens = match first {
        Ok(n) => n,
        Err(_) if ctx.stop.is_set() => return,
        Err(e) => {
            *began = true;
            return ctx.failed_unstarted(job, slot, format!("cannot count the first prompt: {e}"));
        }
    };
    let routing_key = trace_id(job.seq);

    let started = ctx.started(job, slot, true);
    *began = true;
    let mut end_at = started;
    for turn in 0..t.num_requests() {
        let max_tokens = t.max_tokens(turn);
        let tail = body.finish(max_tokens);
        // The body's size bounds the prompt's (its JSON escapes only add).
        let expect = Expect::new(max_tokens as u64, ctx.synth.longest_token_bytes())
            .prompt_bytes(body.bytes().len() as u64);
        let body_fnv1a = body.fnv1a();
        let attempt = Attempt {
            job,
            slot,
            turn,
            max_tokens: max_tokens as u64,
            expected_prompt_tokens,
            body_fnv1a,
        };
        let mut report = |f: &Failure, sent: Instant, n: u32, next: Next| {
            ctx.attempt_failed(&attempt, f, sent, n, next)
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
            Err(f) => return ctx.trace_ended(job.seq, failed(f)),
        };
        end_at = sent + reply.latency;
        let tool_done = end_at
            + t.tool_call_latency
                .get(turn)
                .map(|&s| crate::limits::seconds(s))
                .unwrap_or_default();
        // Off the timed path from here on: the request has ended. The next
        // prompt (the reply and the tool's output appended) and, when
        // chunks carry several tokens, each chunk are counted on the
        // tokenizer's threads; after the stop the slot stops waiting for
        // that.
        log::trace!("{routing_key} turn {turn} reply {:?}", reply.text);
        let more = turn < t.num_turns();
        let grown = if more {
            context.grow(&reply.text, &segments[turn + 1])
        } else {
            Ok(Vec::new())
        };
        let per_chunk = chunk_texts(&reply);
        let counted_chunks = per_chunk.is_some();
        // A template that refuses the conversation, or a panic of the
        // tokenizer, fails the trace, after this request's record (the
        // server did answer it).
        let (counted, broken) = match grown {
            Err(e) => (None, Some(format!("cannot count the next prompt: {e}"))),
            Ok(texts) => {
                let n_context = texts.len();
                let texts: Vec<String> = texts
                    .into_iter()
                    .chain(per_chunk.into_iter().flatten())
                    .collect();
                if texts.is_empty() {
                    (Some((texts, Vec::new(), 0)), None)
                } else {
                    match counter.count(texts, ctx.stop) {
                        Ok(c) => (c.map(|(t, n)| (t, n, n_context)), None),
                        Err(message) => (None, Some(message)),
                    }
                }
            }
        };
        let (itl_sum, itl_count) = itl_of(
            &reply,
            counted_chunks,
            counted.as_ref().map(|c| c.1.as_slice()),
        );
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
            chat_shaped: reply.chat_shaped && ctx.chat.is_none(),
            prefix_group,
        }));
        if let Some(message) = broken {
            return ctx.failed_internal(job.seq, message);
        }
        if more {
            let Some((mut texts, counts, n_context)) = counted.filter(|_| !ctx.stop.is_set())
            else {
                ctx.trace_ended(job.seq, TraceEnd::Cancelled);
                return;
            };
            texts.truncate(n_context);
            let Some(next) = context.settle(texts, &counts[..n_context]) else {
                let message = "counts that do not fit the prompt".to_string();
                return ctx.failed_internal(job.seq, message);
            };
            expected_prompt_tokens = next;
            let tool = &segments[turn + 1];
            body.message("assistant");
            body.push_text(&reply.text);
            body.message("user");
            body.push_synthetic(&tool.0);
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

/// Run one trace as one embeddings request: `batch` inputs, each of the
/// trace's input prompt length (or `--embed-tokens`) as the server counts
/// them; `began` is set once its start has been reported.
#[allow(clippy::too_many_arguments)]
fn run_embedding(
    slot: usize,
    ctx: &SlotContext,
    client: &Client,
    job: Job,
    embed: EmbedJob,
    warm: &mut bool,
    began: &mut bool,
) {
    let t = &ctx.workload.traces[job.template];
    let tokens = embed.tokens.unwrap_or(t.input_prompt_length) as u64;
    let content = tokens.saturating_sub(embed.added);
    let inputs: Vec<String> = (0..embed.batch)
        .map(|k| {
            let key = segment_key(ctx.seed, job.seq, k);
            ctx.content.segment(ctx.synth, key, content as usize)
        })
        .collect();
    let body = embeddings_body(&ctx.model_json, &inputs);
    drop(inputs);
    let expected_prompt_tokens = embed.batch as u64 * (content + embed.added);
    let expect = Expect {
        prompt_bytes: Some(body.len() as u64),
        ..Expect::embeddings(embed.batch as u64)
    };
    let body_fnv1a = ctx
        .hash_bodies
        .then(|| crate::input::workload::fnv1a(&body));
    let routing_key = trace_id(job.seq);
    ctx.started(job, slot, true);
    *began = true;
    let attempt = Attempt {
        job,
        slot,
        turn: 0,
        max_tokens: 0,
        expected_prompt_tokens,
        body_fnv1a,
    };
    let mut report = |f: &Failure, sent: Instant, n: u32, next: Next| {
        ctx.attempt_failed(&attempt, f, sent, n, next)
    };
    let (reply, sent, retries) =
        match send_with_retries(ctx, client, &body, &routing_key, expect, warm, &mut report) {
            Ok(ok) => ok,
            Err(f) => return ctx.trace_ended(job.seq, failed(f)),
        };
    let _ = ctx.events.send(Event::Request(RequestRecord {
        seq: job.seq,
        template: job.template,
        slot,
        turn: 0,
        start: ctx.since_epoch(sent),
        ttft: None,
        latency: reply.latency,
        max_tokens: 0,
        usage: reply.usage,
        expected_prompt_tokens,
        itl_sum: Duration::ZERO,
        itl_count: 0,
        retries,
        timings: reply.timings,
        body_fnv1a,
        chat_shaped: false,
        prefix_group: None,
    }));
    let _ = ctx.events.send(Event::TraceEnded {
        seq: job.seq,
        at: ctx.since_epoch(sent + reply.latency),
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

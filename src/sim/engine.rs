//! Request handling of the simulated engine: routes, the completion endpoint,
//! the admission queue, the timing model and the injected faults.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::Value;

use super::http::{self, Request};
use super::{Fault, Shared, block_hashes};
use crate::text::prompt::{Rng, mix};

/// Token id standing for BOS in the cache's hash chain.
const BOS_ID: u32 = u32::MAX;

/// What the connection does after a request.
pub enum Outcome {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

type Writer = BufWriter<TcpStream>;

/// Dispatch one request.
pub fn route(shared: &Shared, req: &Request, w: &mut Writer) -> Outcome {
    let path = req.path.trim_end_matches('/');
    let result = match (req.method.as_str(), path) {
        ("GET", "/health") => http::write_json(w, 200, b"{\"status\":\"ok\"}", true),
        ("GET", "/v1/models") => {
            let body = serde_json::json!({
                "object": "list",
                "data": [{"id": shared.config.model, "object": "model", "created": 0, "owned_by": "trie-sim"}]
            });
            http::write_json(w, 200, body.to_string().as_bytes(), true)
        }
        ("POST", "/v1/completions") => return completion(shared, req, w, false),
        ("POST", "/v1/chat/completions") => return completion(shared, req, w, true),
        ("POST", "/v1/embeddings") => return embeddings(shared, req, w),
        // vLLM's shape: the cache is emptied, `200` with an empty body.
        ("POST", "/reset_prefix_cache") => {
            shared.cache.lock().clear();
            http::write_json(w, 200, b"", true)
        }
        (
            _,
            "/v1/completions"
            | "/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/models"
            | "/health"
            | "/reset_prefix_cache",
        ) => http::write_json(w, 405, &http::error_body(405, "method not allowed"), true),
        _ => http::write_json(
            w,
            404,
            &http::error_body(404, &format!("no route {path}")),
            true,
        ),
    };
    if result.is_ok() {
        Outcome::KeepAlive
    } else {
        Outcome::Close
    }
}

/// The FIFO admission queue in front of `max_running` sequence slots.
pub struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
    max_running: usize,
}

struct QueueState {
    running: usize,
    next_ticket: u64,
    next_admit: u64,
}

impl Queue {
    /// A queue in front of `max_running` slots.
    pub fn new(max_running: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                running: 0,
                next_ticket: 0,
                next_admit: 0,
            }),
            cv: Condvar::new(),
            max_running,
        }
    }

    /// Wait for a slot, in arrival order; `None` when the sim stops meanwhile.
    fn admit(&self, shared: &Shared) -> Option<Running<'_>> {
        let mut s = self.state.lock();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        while !(s.running < self.max_running && s.next_admit == ticket) {
            if shared.stopping.load(Ordering::SeqCst) {
                return None;
            }
            self.cv.wait_for(&mut s, Duration::from_millis(100));
        }
        s.running += 1;
        s.next_admit += 1;
        self.cv.notify_all();
        Some(Running {
            queue: self,
            at: Instant::now(),
        })
    }

    /// Sequences running now.
    fn running(&self) -> usize {
        self.state.lock().running
    }

    /// Wake every waiter (at stop).
    pub fn wake_all(&self) {
        self.cv.notify_all();
    }
}

/// A running sequence; frees its slot when dropped.
struct Running<'a> {
    queue: &'a Queue,
    at: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.queue.state.lock().running -= 1;
        self.queue.cv.notify_all();
    }
}

/// The prompt of a completion request.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

struct Params {
    prompt: Prompt,
    /// A chat request: its answer is chat-shaped.
    chat: bool,
    max_tokens: usize,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
}

fn parse_params(body: &[u8], shared: &Shared, chat: bool) -> Result<Params, (u16, String)> {
    let bad = |m: String| (400, m);
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let Value::Object(o) = v else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let model = &shared.config.model;
    if let Some(m) = o.get("model").filter(|m| m.as_str() != Some(model)) {
        return Err((
            404,
            format!("The model `{}` does not exist.", m.as_str().unwrap_or("?")),
        ));
    }
    let prompt = if chat {
        Prompt::Text(chat_prompt(&o, shared).map_err(bad)?)
    } else {
        match o.get("prompt") {
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or("").into())
            }
            Some(Value::Array(a))
                if a.iter()
                    .all(|x| x.as_u64().is_some_and(|n| n <= u32::MAX as u64)) =>
            {
                Prompt::Ids(
                    a.iter()
                        .filter_map(|x| x.as_u64())
                        .map(|n| n as u32)
                        .collect(),
                )
            }
            Some(_) => return Err(bad("prompt must be a string or a list of token ids".into())),
            None => return Err(bad("missing field prompt".into())),
        }
    };
    let max_tokens = match o.get("max_tokens") {
        None | Some(Value::Null) => 16,
        Some(x) => x
            .as_u64()
            .ok_or_else(|| bad("max_tokens must be a non-negative integer".into()))?
            as usize,
    };
    let flag = |name: &str| -> Result<bool, (u16, String)> {
        match o.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(format!("{name} must be a boolean"))),
        }
    };
    let include_usage = o
        .get("stream_options")
        .and_then(|s| s.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Params {
        prompt,
        chat,
        max_tokens,
        stream: flag("stream")?,
        include_usage,
        ignore_eos: flag("ignore_eos")?,
    })
}

/// The prompt of a chat request: its `messages` (each a role and a text
/// `content`) rendered with the sim's chat template and the request's
/// `chat_template_kwargs`, the assistant's header after them.
fn chat_prompt(o: &serde_json::Map<String, Value>, shared: &Shared) -> Result<String, String> {
    let Some(Value::Array(list)) = o.get("messages") else {
        return Err("messages must be a list of messages".into());
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m["role"]
            .as_str()
            .ok_or_else(|| format!("messages[{i}].role must be a string"))?;
        let content = match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            _ => return Err(format!("messages[{i}].content must be a string")),
        };
        messages.push(crate::text::chat::Message::new(role, &content));
    }
    let extra = match o.get("chat_template_kwargs") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(map)) => map.clone().into_iter().collect(),
        Some(_) => return Err("chat_template_kwargs must be an object".into()),
    };
    shared.template.render(&messages, true, &extra)
}

/// Seconds to process `tokens` at `rate` tokens/s (0 = instant), at most
/// [`crate::limits::MAX_SECONDS`].
fn secs(tokens: usize, rate: f64) -> Duration {
    if rate <= 0.0 {
        Duration::ZERO
    } else {
        crate::limits::seconds(tokens as f64 / rate)
    }
}

/// The share of its full speed each running sequence gets now (the batch
/// knee's model; 1 without a knee).
fn speed_share(shared: &Shared) -> f64 {
    match shared.config.batch_knee {
        Some(k) => {
            let running = shared.queue.running().max(1);
            (k as f64 / running as f64).min(1.0)
        }
        None => 1.0,
    }
}

/// When each token of one sequence is ready: token 0 at `first`, each next
/// one a decode step later, at the speed the load allows when its time is
/// set (a streamed chunk's when it is next; a whole body's at once).
struct Schedule<'a> {
    shared: &'a Shared,
    /// The latest token whose time is set, and that time.
    last: usize,
    at: Instant,
}

impl Schedule<'_> {
    /// When token `j` is ready (`j` not below an earlier call's).
    fn ready(&mut self, j: usize) -> Instant {
        if self.last < j {
            let rate = self.shared.config.decode_tps * speed_share(self.shared);
            self.at += secs(j - self.last, rate);
            self.last = j;
        }
        self.at
    }
}

/// Sleep until `t`; false when the sim is stopping.
fn sleep_until(shared: &Shared, t: Instant) -> bool {
    match shared.stop_rx.recv_deadline(t) {
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => true,
        _ => !shared.stopping.load(Ordering::SeqCst) && Instant::now() >= t,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn completion(shared: &Shared, req: &Request, w: &mut Writer, chat: bool) -> Outcome {
    let index = shared.requests.fetch_add(1, Ordering::Relaxed);
    let arrival = Instant::now();
    let cfg = &shared.config;
    let p = match parse_params(&req.body, shared, chat) {
        Ok(p) => p,
        Err((status, msg)) => {
            log::debug!("sim request={index} rejected status={status}: {msg}");
            return keep(http::write_json(
                w,
                status,
                &http::error_body(status, &msg),
                true,
            ));
        }
    };
    let fault = cfg.faults.pick(cfg.seed, index);
    let record = |prompt_tokens: usize, cached_tokens: usize| {
        if let Some(tx) = &cfg.recorder {
            let _ = tx.send(super::Recorded {
                routing_key: req.header("x-smg-routing-key").map(str::to_string),
                authorization: req.header("authorization").map(str::to_string),
                body: req.body.clone(),
                prompt_tokens,
                cached_tokens,
                fault,
            });
        }
    };
    if let Fault::Status(code) = fault {
        record(0, 0);
        log::debug!("sim request={index} fault=status{code}");
        return keep(http::write_json(
            w,
            code,
            &http::error_body(code, "injected fault"),
            true,
        ));
    }
    let mut ids = vec![BOS_ID; cfg.bos];
    match &p.prompt {
        Prompt::Text(t) => ids.extend(shared.tokenizer.encode(t)),
        Prompt::Ids(v) => ids.extend_from_slice(v),
    }
    let prompt_len = ids.len();
    let hashes = block_hashes(&ids, cfg.block_size);
    let Some(running) = shared.queue.admit(shared) else {
        return Outcome::Close;
    };
    let admitted = running.at;
    let cached = shared.cache.lock().lookup(&hashes, prompt_len);
    record(prompt_len, cached);
    let first_ready = admitted + secs(prompt_len - cached, cfg.prefill_tps * speed_share(shared));

    // The completion: deterministic in (seed, prompt, max_tokens).
    let prompt_key = ids
        .iter()
        .fold(mix(cfg.seed ^ 0x51_u64), |h, &id| mix(h ^ id as u64));
    let mut rng = Rng::new(prompt_key ^ p.max_tokens as u64);
    let n = if p.ignore_eos || p.max_tokens == 0 {
        p.max_tokens
    } else {
        1 + rng.below(p.max_tokens)
    };
    let n = cfg.quirks.eos_after.map_or(n, |k| n.min(k));
    let words: Vec<usize> = (0..n).map(|_| rng.below(shared.synth.len())).collect();
    let finish = if n == p.max_tokens { "length" } else { "stop" };
    let mut usage = serde_json::json!({
        "prompt_tokens": prompt_len,
        "completion_tokens": n,
        "total_tokens": prompt_len + n,
        "prompt_tokens_details": {"cached_tokens": cached},
    });
    if cfg.quirks.no_cached_tokens {
        usage["prompt_tokens_details"] = Value::Null;
    }
    let mut ready = Schedule {
        shared,
        last: 0,
        at: first_ready,
    };
    let (id, object) = if p.chat {
        ("chatcmpl", "chat.completion.chunk")
    } else {
        ("cmpl", "text_completion")
    };
    let head = format!(
        "{{\"id\":\"{id}-{index}\",\"object\":\"{object}\",\"created\":{},\"model\":{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        Value::from(cfg.model.as_str())
    );

    let mut first_sent = None;
    let sent = if p.stream && !cfg.quirks.no_stream {
        stream(
            shared,
            w,
            &p,
            fault,
            &words,
            finish,
            &head,
            &usage,
            &mut ready,
            &mut first_sent,
        )
    } else {
        whole(
            shared, w, &p, fault, &words, finish, &head, &usage, &mut ready,
        )
    };
    let done = Instant::now();
    if sent.is_ok() {
        ids.extend(words.iter().map(|&i| shared.synth.id(i)));
        shared
            .cache
            .lock()
            .insert(&block_hashes(&ids, cfg.block_size));
    }
    drop(running);
    log::debug!(
        "sim request={index} arrival_ms={:.3} prompt={prompt_len} cached={cached} queue_ms={:.3} first_token_ms={:.3} done_ms={:.3} completion={n} fault={fault:?}",
        ms(arrival - shared.epoch),
        ms(admitted - arrival),
        first_sent.map(|t: Instant| ms(t - arrival)).unwrap_or(-1.0),
        ms(done - arrival),
    );
    match sent {
        Ok(o) => o,
        Err(_) => Outcome::Close,
    }
}

/// Dimensions of the sim's embeddings.
const EMBED_DIM: usize = 8;

/// The inputs of an embeddings request: texts, or token-id lists.
fn embed_inputs(body: &[u8], model: &str) -> Result<Vec<Prompt>, (u16, String)> {
    let bad = |m: &str| (400, m.to_string());
    let v: Value =
        serde_json::from_slice(body).map_err(|e| (400, format!("invalid JSON body: {e}")))?;
    if let Some(m) = v.get("model").filter(|m| m.as_str() != Some(model)) {
        return Err((
            404,
            format!("The model `{}` does not exist.", m.as_str().unwrap_or("?")),
        ));
    }
    let ids = |a: &[Value]| -> Option<Vec<u32>> {
        a.iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&n| n <= u32::MAX as u64)
                    .map(|n| n as u32)
            })
            .collect()
    };
    let one = |x: &Value| match x {
        Value::String(s) => Some(Prompt::Text(s.clone())),
        Value::Array(a) => ids(a).map(Prompt::Ids),
        _ => None,
    };
    let inputs = match v.get("input") {
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            vec![Prompt::Ids(
                ids(a).ok_or_else(|| bad("input: token ids must fit 32 bits"))?,
            )]
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(one)
            .collect::<Option<Vec<Prompt>>>()
            .ok_or_else(|| bad("input must be a string, a list of strings, or token ids"))?,
        _ => {
            return Err(bad(
                "input must be a string, a list of strings, or token ids",
            ));
        }
    };
    Ok(inputs)
}

/// `POST /v1/embeddings`: every input tokenized (with `--bos`), the whole
/// request one sequence of the queue that takes its prefill time, then one
/// deterministic vector per input and usage; not streamed, never cached.
fn embeddings(shared: &Shared, req: &Request, w: &mut Writer) -> Outcome {
    let index = shared.requests.fetch_add(1, Ordering::Relaxed);
    let cfg = &shared.config;
    let inputs = match embed_inputs(&req.body, &cfg.model) {
        Ok(i) => i,
        Err((status, msg)) => {
            return keep(http::write_json(
                w,
                status,
                &http::error_body(status, &msg),
                true,
            ));
        }
    };
    let fault = cfg.faults.pick(cfg.seed, index);
    let mut counts = Vec::with_capacity(inputs.len());
    let mut vectors = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let ids = match input {
            Prompt::Text(t) => shared.tokenizer.encode(t),
            Prompt::Ids(v) => v.clone(),
        };
        counts.push(cfg.bos + ids.len());
        let key = ids
            .iter()
            .fold(mix(cfg.seed ^ 0xe3b), |h, &id| mix(h ^ id as u64));
        let mut rng = Rng::new(key);
        vectors.push(
            (0..EMBED_DIM)
                .map(|_| rng.unit() * 2.0 - 1.0)
                .collect::<Vec<f64>>(),
        );
    }
    let tokens: usize = counts.iter().sum();
    if let Some(tx) = &cfg.recorder {
        let _ = tx.send(super::Recorded {
            routing_key: req.header("x-smg-routing-key").map(str::to_string),
            authorization: req.header("authorization").map(str::to_string),
            body: req.body.clone(),
            prompt_tokens: tokens,
            cached_tokens: 0,
            fault,
        });
    }
    match fault {
        Fault::Status(code) => {
            return keep(http::write_json(
                w,
                code,
                &http::error_body(code, "injected fault"),
                true,
            ));
        }
        Fault::Reset => return Outcome::Close,
        _ => {}
    }
    let Some(running) = shared.queue.admit(shared) else {
        return Outcome::Close;
    };
    let done = running.at + secs(tokens, cfg.prefill_tps * speed_share(shared));
    if !sleep_until(shared, done) {
        return Outcome::Close;
    }
    drop(running);
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": cfg.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    keep(http::write_json(w, 200, body.to_string().as_bytes(), true))
}

fn keep(r: std::io::Result<()>) -> Outcome {
    if r.is_ok() {
        Outcome::KeepAlive
    } else {
        Outcome::Close
    }
}

/// The choice of `text` (and, chat, `reasoning`): a completion's
/// `"text"`, a chat stream's `"delta"` or a whole chat answer's `"message"`.
fn choice(p: &Params, whole: bool, reasoning: &str, text: &str, finish: Option<&str>) -> String {
    let finish = finish
        .map(|f| format!("\"{f}\""))
        .unwrap_or_else(|| "null".into());
    if !p.chat {
        return format!(
            "{{\"index\":0,\"text\":{},\"logprobs\":null,\"finish_reason\":{finish}}}",
            Value::from(text)
        );
    }
    let mut message = serde_json::Map::new();
    if whole {
        message.insert("role".into(), "assistant".into());
    }
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if whole || !text.is_empty() || reasoning.is_empty() {
        message.insert("content".into(), text.into());
    }
    let key = if whole { "message" } else { "delta" };
    format!(
        "{{\"index\":0,\"{key}\":{},\"logprobs\":null,\"finish_reason\":{finish}}}",
        Value::Object(message)
    )
}

fn choice_event(head: &str, choice: &str) -> String {
    format!("data: {head},\"choices\":[{choice}]}}\n\n")
}

/// The text of `words[lo..hi]`, split into reasoning (the completion's
/// first `reasoning` tokens, chat only) and answer.
fn texts(shared: &Shared, p: &Params, words: &[usize], lo: usize, hi: usize) -> (String, String) {
    let cut = if p.chat {
        shared.config.reasoning_tokens.clamp(lo, hi)
    } else {
        lo
    };
    let join = |r: &[usize]| r.iter().map(|&i| shared.synth.word(i)).collect::<String>();
    (join(&words[lo..cut]), join(&words[cut..hi]))
}

#[allow(clippy::too_many_arguments)]
fn stream(
    shared: &Shared,
    w: &mut Writer,
    p: &Params,
    fault: Fault,
    words: &[usize],
    finish: &str,
    head: &str,
    usage: &Value,
    ready: &mut Schedule<'_>,
    first_sent: &mut Option<Instant>,
) -> std::io::Result<Outcome> {
    let k = shared.config.tokens_per_chunk;
    let n = words.len();
    let chunks = n.div_ceil(k).max(1);
    let half = chunks / 2;
    http::begin_stream(w)?;
    if p.chat {
        // As vLLM does: the role first, without a token.
        let role = r#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#;
        http::write_chunk(w, choice_event(head, role).as_bytes())?;
    }
    for c in 0..chunks {
        if c == half && fault == Fault::Reset {
            w.flush()?;
            let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
            return Ok(Outcome::Close);
        }
        if c == half && fault == Fault::Malformed {
            http::write_chunk(w, b"data: {\"choices\": [{\"text\": \"oops\", \n\n")?;
        }
        let (lo, hi) = (c * k, ((c + 1) * k).min(n));
        let due = ready.ready(hi.saturating_sub(1));
        if due > Instant::now() {
            w.flush()?;
            if !sleep_until(shared, due) {
                return Ok(Outcome::Close);
            }
        }
        let (reasoning, text) = texts(shared, p, words, lo, hi);
        let last = c + 1 == chunks;
        let choice = choice(p, false, &reasoning, &text, last.then_some(finish));
        http::write_chunk(w, choice_event(head, &choice).as_bytes())?;
        if c == 0 {
            w.flush()?;
            *first_sent = Some(Instant::now());
            if fault == Fault::Stall
                && !sleep_until(shared, Instant::now() + shared.config.faults.stall)
            {
                return Ok(Outcome::Close);
            }
        }
    }
    if p.include_usage && fault != Fault::NoUsage {
        let ev = format!("data: {head},\"choices\":[],\"usage\":{usage}}}\n\n");
        http::write_chunk(w, ev.as_bytes())?;
    }
    http::write_chunk(w, b"data: [DONE]\n\n")?;
    http::end_stream(w)?;
    Ok(Outcome::KeepAlive)
}

#[allow(clippy::too_many_arguments)]
fn whole(
    shared: &Shared,
    w: &mut Writer,
    p: &Params,
    fault: Fault,
    words: &[usize],
    finish: &str,
    head: &str,
    usage: &Value,
    ready: &mut Schedule<'_>,
) -> std::io::Result<Outcome> {
    let mut due = ready.ready(words.len().saturating_sub(1));
    if fault == Fault::Stall {
        due += shared.config.faults.stall;
    }
    if !sleep_until(shared, due) {
        return Ok(Outcome::Close);
    }
    match fault {
        Fault::Reset => {
            let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
            return Ok(Outcome::Close);
        }
        Fault::Malformed => {
            http::write_json(w, 200, b"{\"choices\": [{\"text\": ", true)?;
            return Ok(Outcome::KeepAlive);
        }
        _ => {}
    }
    let (reasoning, text) = texts(shared, p, words, 0, words.len());
    let usage_part = if fault == Fault::NoUsage {
        String::new()
    } else {
        format!(",\"usage\":{usage}")
    };
    let choice = choice(p, true, &reasoning, &text, Some(finish));
    let head = head.replace("chat.completion.chunk", "chat.completion");
    let body = format!("{head},\"choices\":[{choice}]{usage_part}}}");
    http::write_json(w, 200, body.as_bytes(), true)?;
    Ok(Outcome::KeepAlive)
}

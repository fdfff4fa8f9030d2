//! `trie sim`: a deterministic simulated inference engine, OpenAI-compatible,
//! with a prefix cache, a queue, a timing model and fault injection.
//!
//! Threads only: one accept thread, one thread per connection (keep-alive).
//! [`Sim::start`] runs it in-process on `127.0.0.1:PORT` (port 0 picks a free
//! one); [`Sim::stop`] closes every connection and joins every thread.
//!
//! Timing model, per sequence: a request waits in a FIFO queue until fewer than
//! `max_running` sequences run; its prompt is looked up in the prefix cache;
//! token `j` (0-based) of the completion is ready at
//! `admitted + uncached_prompt / prefill_tps + j / decode_tps`; a chunk carries
//! `tokens_per_chunk` tokens and is sent when its last token is ready. A rate of
//! 0 means instant. Finished sequences insert prompt + completion blocks.
//!
//! With a batch knee K (`--batch-knee`), the engine has a fixed budget, as a
//! GPU does: while r sequences run, each one's prefill and decode run at
//! `rate × min(1, K / r)`, so the engine's decode throughput is
//! `decode_tps × min(r, K)` tokens/s: linear up to the knee, flat past it,
//! where every added sequence slows all the others. r is read as each
//! token's time is set (at admission for the prefill), so the model follows
//! the load as it changes.

mod cache;
mod engine;
mod http;

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

pub use cache::{PrefixCache, block_hashes};

use crate::error::{Error, Result};
use crate::text::prompt::Synth;
use crate::text::tokenizer::{Tokenizer, Workers};

/// The model name the sim serves by default; trie uses the bundled tokenizer
/// for it when no `--tokenizer` is given.
pub const SIM_MODEL: &str = "trie-sim";

/// The tokenizer bundled in the binary (`data/tokenizer.json`, 8k byte-level BPE).
pub const BUNDLED_TOKENIZER: &[u8] = include_bytes!("../../data/tokenizer.json");

/// The chat template the sim renders chat requests with, and trie with the
/// bundled tokenizer (`data/chat_template.jinja`, ChatML-like).
pub const BUNDLED_CHAT_TEMPLATE: &str = include_str!("../../data/chat_template.jinja");

/// Injected faults: each request draws one uniform number from (seed, request
/// index) and falls into at most one of these rates, in this order.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Rate of requests answered with `status` instead of a completion.
    pub status_rate: f64,
    /// The HTTP status of those answers (429, 500, 503, ...).
    pub status: u16,
    /// Rate of streams whose connection is closed half-way.
    pub reset_rate: f64,
    /// Rate of streams with a malformed JSON chunk half-way.
    pub malformed_rate: f64,
    /// Rate of responses that stall (no bytes) for `stall` after the first chunk.
    pub stall_rate: f64,
    /// How long a stall lasts.
    pub stall: Duration,
    /// Rate of streams without the usage chunk.
    pub no_usage_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            status_rate: 0.0,
            status: 503,
            reset_rate: 0.0,
            malformed_rate: 0.0,
            stall_rate: 0.0,
            stall: Duration::from_secs(30),
            no_usage_rate: 0.0,
        }
    }
}

/// The fault one request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer with this HTTP status.
    Status(u16),
    /// Close the connection half-way through the stream.
    Reset,
    /// Send a malformed JSON chunk half-way.
    Malformed,
    /// Stall after the first chunk.
    Stall,
    /// Leave out the usage chunk.
    NoUsage,
}

impl Faults {
    /// The fault of request number `index` under `seed`.
    pub fn pick(&self, seed: u64, index: u64) -> Fault {
        let u =
            crate::text::prompt::Rng::new(crate::text::prompt::mix(seed ^ 0xfa17) ^ index).unit();
        let mut edge = 0.0;
        for (rate, fault) in [
            (self.status_rate, Fault::Status(self.status)),
            (self.reset_rate, Fault::Reset),
            (self.malformed_rate, Fault::Malformed),
            (self.stall_rate, Fault::Stall),
            (self.no_usage_rate, Fault::NoUsage),
        ] {
            edge += rate;
            if u < edge {
                return fault;
            }
        }
        Fault::None
    }

    /// Check the rates add up to at most 1.
    pub fn validate(&self) -> Result<()> {
        let rates = [
            self.status_rate,
            self.reset_rate,
            self.malformed_rate,
            self.stall_rate,
            self.no_usage_rate,
        ];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 1.0 + 1e-9
        {
            return Err(Error::usage(
                "sim: fault rates must each be in [0, 1] and add up to at most 1",
            ));
        }
        Ok(())
    }
}

/// Ways a real server can fall short of what trie asks for (for testing the
/// preflight and the warnings).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quirks {
    /// Answer `"stream": true` requests with one whole JSON body.
    pub no_stream: bool,
    /// Leave `prompt_tokens_details.cached_tokens` out of usage.
    pub no_cached_tokens: bool,
    /// Ignore `ignore_eos`: stop every completion after at most this many tokens.
    pub eos_after: Option<usize>,
    /// Close the connection after every completion although it was kept
    /// alive (as llama-server does after every stream).
    pub close_after_completion: bool,
}

/// Everything `trie sim` can be told.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The served model name.
    pub model: String,
    /// tokenizer.json; `None` uses the bundled one.
    pub tokenizer: Option<std::path::PathBuf>,
    /// BOS tokens added to every prompt.
    pub bos: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV cache capacity in tokens.
    pub kv_tokens: usize,
    /// Sequences running at once; more queue.
    pub max_running: usize,
    /// Prefill speed, tokens/s (0 = instant).
    pub prefill_tps: f64,
    /// Decode speed per sequence, tokens/s (0 = instant).
    pub decode_tps: f64,
    /// Sequences running at full speed; past it every sequence slows by
    /// `knee / running` (`None`: no knee, speed independent of load).
    pub batch_knee: Option<usize>,
    /// Tokens per streamed chunk.
    pub tokens_per_chunk: usize,
    /// The chat template (Jinja) chat requests are rendered with; `None`:
    /// the bundled ChatML-like one.
    pub chat_template: Option<std::path::PathBuf>,
    /// The first this many tokens of every chat answer come as reasoning
    /// (`reasoning_content`), as reasoning models send them.
    pub reasoning_tokens: usize,
    /// Seed of generated text and faults.
    pub seed: u64,
    /// Injected faults.
    pub faults: Faults,
    /// Shortcomings to imitate.
    pub quirks: Quirks,
    /// Tests: every completion request is handed back here.
    pub recorder: Option<Sender<Recorded>>,
}

/// A completion request as the sim saw it (for tests).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `X-SMG-Routing-Key` header.
    pub routing_key: Option<String>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// Prompt tokens as the sim counted them (BOS included).
    pub prompt_tokens: usize,
    /// Cached tokens it reported.
    pub cached_tokens: usize,
    /// Fault it injected.
    pub fault: Fault,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            port: 8000,
            model: SIM_MODEL.to_string(),
            tokenizer: None,
            bos: 1,
            block_size: 16,
            kv_tokens: 1_000_000,
            max_running: 256,
            prefill_tps: 50_000.0,
            decode_tps: 100.0,
            batch_knee: None,
            tokens_per_chunk: 1,
            chat_template: None,
            reasoning_tokens: 0,
            seed: 0,
            faults: Faults::default(),
            quirks: Quirks::default(),
            recorder: None,
        }
    }
}

/// State shared by every thread of one sim.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub tokenizer: Workers,
    pub synth: Synth,
    pub template: crate::text::chat::ChatTemplate,
    pub cache: Mutex<PrefixCache>,
    pub queue: engine::Queue,
    pub requests: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    pub stopping: AtomicBool,
    /// Dropped at stop: every sleep waiting on it wakes up.
    pub stop_rx: Receiver<()>,
    pub epoch: std::time::Instant,
    conns: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
}

/// A running simulated engine.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: Option<Sender<()>>,
    acceptor: Option<JoinHandle<()>>,
    /// Set at shutdown: tokenizing (a 2M-token prompt takes seconds) stops.
    tokenizing: crate::stop::Stop,
}

impl Sim {
    /// Load the tokenizer, bind, and start serving.
    pub fn start(config: SimConfig) -> Result<Sim> {
        config.faults.validate()?;
        if config.block_size == 0
            || config.max_running == 0
            || config.tokens_per_chunk == 0
            || config.batch_knee == Some(0)
        {
            return Err(Error::usage(
                "sim: --block-size, --max-running, --tokens-per-chunk and --batch-knee must be at least 1",
            ));
        }
        if !(config.prefill_tps >= 0.0 && config.decode_tps >= 0.0) {
            return Err(Error::usage(
                "sim: --prefill-tps and --decode-tps must be >= 0",
            ));
        }
        let tokenizer = match &config.tokenizer {
            Some(p) => Tokenizer::from_file(p)?,
            None => Tokenizer::from_bytes(BUNDLED_TOKENIZER, "bundled data/tokenizer.json")?,
        };
        let synth = Synth::new(&tokenizer)?;
        let template = match &config.chat_template {
            Some(path) => {
                crate::text::chat::ChatTemplate::from_file(path, config.tokenizer.as_deref())?
            }
            None => crate::text::chat::ChatTemplate::new(
                BUNDLED_CHAT_TEMPLATE,
                "bundled data/chat_template.jinja",
                Default::default(),
            )?,
        };
        let tokenizing = crate::stop::Stop::new();
        let tokenizer = Workers::start(Arc::new(tokenizer), Some(tokenizing.clone()))?;
        // Three descriptors per connection: take what the system allows.
        // (every client connection, running or queued, costs three).
        let _ = crate::limits::ensure_open_files(u64::MAX, "the sim");
        let listener = TcpListener::bind(("127.0.0.1", config.port)).map_err(|e| {
            Error::run(format!(
                "sim: cannot listen on 127.0.0.1:{}: {e}",
                config.port
            ))
        })?;
        // std listens with a backlog of 128: hundreds of slots connecting at
        // once overflow it, and the kernel resets the connections it dropped.
        // Listening again raises it (Linux takes the new value).
        // SAFETY: listen(2) on the listener's own descriptor.
        unsafe {
            use std::os::unix::io::AsRawFd;
            libc::listen(listener.as_raw_fd(), 4096);
        }
        let addr = listener
            .local_addr()
            .map_err(|e| Error::run(format!("sim: {e}")))?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let shared = Arc::new(Shared {
            cache: Mutex::new(PrefixCache::new(config.block_size, config.kv_tokens)),
            queue: engine::Queue::new(config.max_running),
            config,
            tokenizer,
            synth,
            template,
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stop_rx,
            epoch: std::time::Instant::now(),
            conns: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sim-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .map_err(|e| Error::run(format!("sim: cannot spawn: {e}")))?
        };
        Ok(Sim {
            addr,
            shared,
            stop_tx: Some(stop_tx),
            acceptor: Some(acceptor),
            tokenizing,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stop serving: close every connection, join every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_tx.take();
        self.tokenizing.trigger();
        let _ = TcpStream::connect(self.addr); // wake the acceptor
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.shared.queue.wake_all();
        let conns = std::mem::take(&mut *self.shared.conns.lock());
        for (stream, _) in &conns {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for (_, handle) in conns {
            let _ = handle.join();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of descriptors, most likely: let connections close.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sim-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || serve_connection(stream, conn_shared));
        if let Ok(handle) = spawned {
            let mut conns = shared.conns.lock();
            conns.retain(|(_, h)| !h.is_finished());
            conns.push((clone, handle));
        }
    }
}

fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut writer = BufWriter::with_capacity(16 * 1024, write_half);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(r) => r,
            Err(http::ReadError::Closed) => return,
            Err(http::ReadError::Bad(status, msg)) => {
                let _ =
                    http::write_json(&mut writer, status, &http::error_body(status, msg), false);
                return;
            }
        };
        let keep = req.keep_alive
            && !(shared.config.quirks.close_after_completion && req.path.ends_with("/completions"));
        match engine::route(&shared, &req, &mut writer) {
            engine::Outcome::KeepAlive if keep => continue,
            _ => {
                let _ = std::io::Write::flush(&mut writer);
                let _ = writer.get_ref().shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

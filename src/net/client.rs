//! The blocking HTTP client. [`Http`] holds what a run's clients share (the
//! target, the ureq configuration, the resolver, the key); each slot gets
//! its own [`Client`], which holds that slot's one kept-alive connection, so
//! no lock or pool scan is shared between slots on the timed path. On a
//! plain-HTTP endpoint every request goes through trie's own HTTP/1.1
//! ([`crate::net::http1`]); on `https` (and for other hosts) through a
//! ureq agent. Both end in the same `Client::answer`. Every client is
//! registered with a [`Stop`], which shuts them all at the deadline or on
//! Ctrl+C.
//!
//! A request reads its stream line by line and takes each line's timestamp
//! before parsing. The end of a response is stamped when `data: [DONE]` is
//! read (or at the last data line when none comes); what follows is drained
//! for at most [`DRAIN`] outside the measurement, so a server that is slow
//! to end the body or close the connection cannot bend the latency. Lines,
//! reply text and bodies are capped, so no server can make trie allocate
//! without bound.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ureq::unversioned::transport::{Connector, NextTimeout, RustlsConnector};

use crate::net::http1::{self, Http1, SendError, Target};
use crate::net::sse::{self, ChunkMark, ServerTimings, Stream, StreamError, Usage};
use crate::net::transport::{DirectConnector, ReadWindow, Request};
use crate::stop::Stop;

/// The API requests go to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/completions`: the context as one prompt string.
    #[default]
    Completions,
    /// `/v1/chat/completions`: the context as messages, rendered by the
    /// server with the model's chat template.
    Chat,
    /// `/v1/embeddings`: one request per trace, its prompt as inputs.
    Embeddings,
}

impl Api {
    /// The route under the endpoint's `/v1`.
    pub fn route(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat/completions",
            Api::Embeddings => "embeddings",
        }
    }

    /// The name `--api` takes.
    pub fn name(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat",
            Api::Embeddings => "embeddings",
        }
    }
}

/// Why a request failed; counted by kind in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Could not connect (refused, unresolvable, unreachable, TLS handshake).
    Connect,
    /// The per-request timeout passed.
    Timeout,
    /// The server answered with an HTTP status other than 200.
    Http(u16),
    /// The connection broke mid-request or mid-stream.
    Reset,
    /// A chunk or body that is not the expected JSON (or an error object),
    /// or one beyond trie's caps.
    Malformed,
    /// The stream ended before it was complete.
    Truncated,
    /// The response carried no choice.
    NoChoices,
    /// Usage no server can truthfully report (cached > prompt tokens,
    /// completion > max_tokens).
    BadUsage,
    /// trie's own side failed (out of file descriptors, memory, ports): not
    /// the server's fault.
    Client,
    /// A bug in trie (a panic), caught: the trace failed, the run went on.
    Internal,
    /// Stopped by the deadline or Ctrl+C (not a server failure).
    Cancelled,
}

impl FailureKind {
    /// Worth another try: connection errors, timeouts, broken streams,
    /// client-side shortages, 408, 409, 429 and 5xx. Other answers would
    /// fail the same way again.
    pub fn retryable(self) -> bool {
        match self {
            FailureKind::Http(s) => matches!(s, 408 | 409 | 429) || s >= 500,
            FailureKind::Cancelled | FailureKind::BadUsage | FailureKind::Internal => false,
            _ => true,
        }
    }

    /// A short name: `http_503`, `reset`, ...
    pub fn name(self) -> String {
        match self {
            FailureKind::Http(s) => format!("http_{s}"),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}

/// The wait before retry number `attempt + 1`: 0.25 s doubling, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs_f64((0.25 * 2f64.powi(attempt.min(16) as i32)).min(8.0))
}

/// How long the rest of a response is read after its end (`[DONE]`, or a
/// finish reason with usage) before the connection is given up. It runs within the
/// trace's tool time (and delays the next turn only by what exceeds it), so
/// it is short: a well-behaved server's chunked terminator follows `[DONE]`
/// at once.
pub const DRAIN: Duration = Duration::from_millis(20);

/// How long an error body, or a usage chunk after the finish reason, may
/// take: the server has answered, it may not hold the slot for `--timeout`.
pub const AFTER_ANSWER: Duration = Duration::from_secs(1);

/// A failed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Detail for the report (secrets removed, one line, at most 300
    /// characters).
    pub message: String,
    /// It failed before any byte of a response came back, on a connection
    /// the server may have closed since its last use (trie's own client
    /// knows: a kept-alive one; through ureq, any failure before the
    /// response): sending it again at once on a new connection is not a
    /// retry.
    pub stale: bool,
}

impl Failure {
    /// A failure of `kind`; the message is cleaned by [`crate::redact::one_line`].
    pub fn new(kind: FailureKind, message: impl AsRef<str>) -> Failure {
        Failure {
            kind,
            message: crate::redact::one_line(message.as_ref()),
            stale: false,
        }
    }
}

/// A successful response.
#[derive(Debug, Default)]
pub struct Reply {
    /// First choice chunk, since the request was sent (streaming only).
    pub ttft: Option<Duration>,
    /// The end of the response (`[DONE]`, else its last data line, else its
    /// last byte), since the request was sent.
    pub latency: Duration,
    /// The generated text (chat: the answer, `content`).
    pub text: String,
    /// Reasoning text (chat reasoning deltas): tokens generated, not part of
    /// the answer that goes back into the context.
    pub reasoning: String,
    /// Token-carrying chunks (streaming only).
    pub chunks: Vec<ChunkMark>,
    /// Usage as the server reported it.
    pub usage: Option<Usage>,
    /// llama.cpp timings, when sent.
    pub timings: Option<ServerTimings>,
    /// Whether it came as an SSE stream (a server that cannot stream answers
    /// a stream request with one JSON body; it is read as such).
    pub streamed: bool,
    /// Its choices were chat-shaped (`delta` or `message`), not
    /// completion-shaped (`text`).
    pub chat_shaped: bool,
}

/// What a request may receive.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// `max_tokens` it asks for: far more completion tokens are bad usage.
    pub max_tokens: u64,
    /// Bytes of the prompt trie sends (`None`: not known): more prompt
    /// tokens than that (and a template's worth) are bad usage.
    pub prompt_bytes: Option<u64>,
    /// Most bytes of reply text its tokens can make.
    pub max_text_bytes: usize,
    /// An embeddings request of this many inputs: its answer is one
    /// embedding per input.
    pub inputs: Option<u64>,
}

impl Expect {
    /// What `max_tokens` tokens of a vocabulary whose longest token has
    /// `longest_token_bytes` bytes can be.
    pub fn new(max_tokens: u64, longest_token_bytes: usize) -> Expect {
        let per_token =
            (longest_token_bytes * crate::limits::TEXT_BYTES_PER_TOKEN_BYTE).max(64) as u64;
        Expect {
            max_tokens,
            prompt_bytes: None,
            max_text_bytes: most_tokens(max_tokens)
                .saturating_mul(per_token)
                .min(usize::MAX as u64) as usize,
            inputs: None,
        }
    }

    /// An embeddings request of `inputs` inputs.
    pub fn embeddings(inputs: u64) -> Expect {
        Expect {
            inputs: Some(inputs),
            ..Expect::new(0, 0)
        }
    }

    /// The size of the prompt trie sends, in bytes.
    pub fn prompt_bytes(mut self, bytes: u64) -> Expect {
        self.prompt_bytes = Some(bytes);
        self
    }
}

/// Tokens a server may add to a prompt of its own (BOS, a template).
pub const TEMPLATE_SLACK: u64 = 4096;

/// The most tokens a server can truthfully count for `n` asked or sent: a
/// few more are an engine's own way (an end token counted, a speculative
/// step overshooting, a template's tokens), far more are impossible.
fn most_tokens(n: u64) -> u64 {
    n.saturating_add((n / 10).max(16))
}

/// What every client of a run shares.
pub struct Http {
    config: ureq::config::Config,
    preflight_config: ureq::config::Config,
    resolver: SharedResolver,
    completions_url: Arc<str>,
    /// The completions route when it is plain HTTP (trie's own client).
    target: Option<Arc<Target>>,
    auth: Option<Arc<str>>,
    stream: bool,
    max_line: usize,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Http {
    /// Clients of `{endpoint}/completions` (endpoint normalised to `.../v1`):
    /// requests time out after `timeout`, connects and preflight requests
    /// after `connect_timeout`; SSE lines longer than `max_line` bytes fail.
    pub fn new(
        endpoint: &str,
        api_key: Option<&str>,
        stream: bool,
        timeout: Duration,
        connect_timeout: Duration,
        max_line: usize,
    ) -> Http {
        let completions_url = format!("{endpoint}/completions");
        Http {
            config: agent_config(timeout, connect_timeout),
            preflight_config: agent_config(connect_timeout, connect_timeout),
            resolver: SharedResolver::default(),
            target: Target::parse(&completions_url).map(Arc::new),
            completions_url: completions_url.into(),
            auth: api_key
                .filter(|k| !k.is_empty())
                .map(|k| format!("Bearer {k}").into()),
            stream,
            max_line,
            timeout,
            connect_timeout,
        }
    }

    /// The same clients sending to `{endpoint}/{route}` instead of
    /// `{endpoint}/completions` (`chat/completions`).
    pub fn route(mut self, route: &str) -> Http {
        let base = self
            .completions_url
            .strip_suffix("/completions")
            .unwrap_or(&self.completions_url)
            .to_string();
        let url = format!("{base}/{route}");
        self.target = Target::parse(&url).map(Arc::new);
        self.completions_url = url.into();
        self
    }

    /// A client with its own agent, shut down by `stop`.
    pub fn client(&self, stop: &Stop) -> Client {
        self.make(self.config.clone(), self.timeout, stop)
    }

    /// A client whose requests time out after the connect timeout (the
    /// preflight's), shut down by `stop`.
    pub fn preflight_client(&self, stop: &Stop) -> Client {
        self.make(self.preflight_config.clone(), self.connect_timeout, stop)
    }

    fn make(&self, config: ureq::config::Config, timeout: Duration, stop: &Stop) -> Client {
        let agent = ureq::Agent::with_parts(
            config,
            ().chain(DirectConnector).chain(RustlsConnector::default()),
            self.resolver.clone(),
        );
        let own = self.target.as_ref().map(|target| {
            // The headers ureq sends (its order differs, and it leaves a
            // default port out of Host; neither matters to a server).
            let mut fixed = format!(
                "User-Agent: trie/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n",
                env!("CARGO_PKG_VERSION")
            );
            if let Some(auth) = &self.auth {
                fixed.push_str(&format!("Authorization: {auth}\r\n"));
            }
            Http1::new(
                target.clone(),
                fixed,
                timeout,
                self.connect_timeout.min(timeout),
            )
        });
        if let Some(shut) = own.as_ref().map(Http1::shut) {
            stop.on_stop(move || shut.shutdown());
        }
        stop.watch(&agent);
        Client {
            agent,
            own: own.map(RefCell::new),
            completions_url: self.completions_url.clone(),
            auth: self.auth.clone(),
            stream: self.stream,
            max_line: self.max_line,
        }
    }
}

/// The status and body (at most 1 MiB, lossy UTF-8) of a small answer; a
/// redirect is a failure naming its `Location`.
fn small_answer(
    status: u16,
    location: Option<&str>,
    reader: &mut impl Read,
) -> Result<(u16, String), Failure> {
    if (300..400).contains(&status) {
        return Err(status_failure(status, location, reader));
    }
    let mut bytes = Vec::new();
    Read::take(reader, 1 << 20)
        .read_to_end(&mut bytes)
        .map_err(io_failure)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// [`small_answer`] of a ureq response.
fn small_ureq_answer(
    resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), Failure> {
    let resp = resp.map_err(|e| map_error(&e))?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    small_answer(
        status,
        location.as_deref(),
        &mut resp.into_body().into_reader(),
    )
}

/// Each connection's input and output buffer.
const IO_BUFFER: usize = 64 << 10;

/// A load generator's agent configuration: status codes are data, no
/// redirects (a 3xx is a failure naming its `Location`), one kept-alive
/// connection (per slot), no compression, 64 KiB buffers each way (ureq's
/// 128 KiB defaults cost 64 MB at 256 slots; a response header still fits,
/// and a larger body is written in more pieces).
fn agent_config(timeout: Duration, connect_timeout: Duration) -> ureq::config::Config {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        // Straight to the endpoint: a proxy from the environment would be
        // measured too.
        .proxy(None)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(connect_timeout.min(timeout)))
        .user_agent(format!("trie/{}", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .no_delay(true)
        .input_buffer_size(IO_BUFFER)
        .output_buffer_size(IO_BUFFER)
        .build()
}

/// One slot's HTTP client.
pub struct Client {
    agent: ureq::Agent,
    /// Completions on a plain-HTTP endpoint go through trie's own client.
    own: Option<RefCell<Http1>>,
    completions_url: Arc<str>,
    auth: Option<Arc<str>>,
    stream: bool,
    max_line: usize,
}

/// Resolves the endpoint's host once per run, for every client of the run.
/// ureq resolves before it looks in its pool, and with a timeout set it
/// resolves on a new thread, so without this every request would spawn a
/// thread (and carry its cost in TTFT). A run talks to one host; its
/// addresses are kept in a `OnceLock`, so a hit on the timed path is an
/// atomic load and a comparison: no lock, no allocation. Any other host is
/// resolved as ureq would.
#[derive(Clone, Debug, Default)]
struct SharedResolver(Arc<CachingResolver>);

#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    /// (scheme, authority, addresses) of the first host resolved.
    first: std::sync::OnceLock<(
        String,
        String,
        ureq::unversioned::resolver::ResolvedSocketAddrs,
    )>,
}

impl ureq::unversioned::resolver::Resolver for SharedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let cache = &self.0;
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if let Some((s, a, addrs)) = cache.first.get()
            && s == scheme
            && a == authority
        {
            return Ok(addrs.clone());
        }
        let addrs = cache.inner.resolve(uri, config, timeout)?;
        let _ = cache
            .first
            .set((scheme.to_string(), authority.to_string(), addrs.clone()));
        Ok(addrs)
    }
}

impl Client {
    /// `GET url`: the status and the body (at most 1 MiB, lossy UTF-8). A
    /// redirect is a failure naming its `Location`.
    pub fn get(&self, url: &str) -> Result<(u16, String), Failure> {
        let _request = Request::start();
        if let Some(answer) = self.own_small("GET", url, None) {
            return answer;
        }
        small_ureq_answer(self.authorized(self.agent.get(url)).call())
    }

    /// A small request on trie's own client, when `url` is on its host.
    fn own_small(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Option<Result<(u16, String), Failure>> {
        let mut own = self.own.as_ref()?.borrow_mut();
        let path = own.target().path_of(url)?.to_string();
        let mut sent = Instant::now();
        Some(match own.send(method, &path, body, &[], &mut sent) {
            Ok(mut r) => small_answer(r.status, r.location.as_deref(), &mut r.body),
            Err(e) => Err(send_failure(e)),
        })
    }

    /// `req` with the API key, when there is one.
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(auth) => req.header("Authorization", &**auth),
            None => req,
        }
    }

    /// `POST url` with an empty body (an engine's admin endpoint), answered
    /// as [`Client::get`] is.
    pub fn post_empty(&self, url: &str) -> Result<(u16, String), Failure> {
        let _request = Request::start();
        if let Some(answer) = self.own_small("POST", url, Some(&[])) {
            return answer;
        }
        small_ureq_answer(self.authorized(self.agent.post(url)).send_empty())
    }

    /// Whether requests stream.
    pub fn streaming(&self) -> bool {
        self.stream
    }

    /// Send one completion request (the JSON `body`) and read its answer.
    /// `sent` is set to the moment the request was handed to the socket layer.
    pub fn complete(
        &self,
        body: &[u8],
        routing_key: &str,
        expect: Expect,
        sent: &mut Instant,
    ) -> Result<Reply, Failure> {
        // The connection's deadline ends with the request (it may idle in
        // the pool longer than the timeout before the next one).
        let _request = Request::start();
        if let Some(own) = &self.own {
            let mut own = own.borrow_mut();
            let http1::Response {
                status,
                content_type,
                location,
                mut body,
            } = own
                .completions(body, routing_key, sent)
                .map_err(send_failure)?;
            let start = *sent;
            return self.answer(
                status,
                &content_type,
                location.as_deref(),
                &mut body,
                start,
                expect,
            );
        }
        let req = self.authorized(
            self.agent
                .post(&*self.completions_url)
                .header("Content-Type", "application/json")
                .header("X-SMG-Routing-Key", routing_key),
        );
        *sent = Instant::now();
        let resp = req.send(body).map_err(|e| Failure {
            stale: true,
            ..map_error(&e)
        })?;
        let start = *sent;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let location = header("location");
        let mut reader = BufReader::with_capacity(32 * 1024, resp.into_body().into_reader());
        self.answer(
            status,
            &content_type,
            location.as_deref(),
            &mut reader,
            start,
            expect,
        )
    }

    /// Read a response whose head says `status`, `content_type` (lowercase)
    /// and `location`, from its body `reader`.
    fn answer(
        &self,
        status: u16,
        content_type: &str,
        location: Option<&str>,
        reader: &mut impl BufRead,
        start: Instant,
        expect: Expect,
    ) -> Result<Reply, Failure> {
        let mut window = ReadWindow::closed();
        if status != 200 {
            window.open(AFTER_ANSWER);
            return Err(status_failure(status, location, reader));
        }
        if content_type.starts_with("text/html") {
            window.open(AFTER_ANSWER);
            let mut text = String::new();
            let _ = reader.take(2048).read_to_string(&mut text);
            return Err(Failure::new(
                FailureKind::Malformed,
                format!(
                    "not an OpenAI endpoint: got text/html ({}); is --endpoint the server's API base?",
                    crate::redact::one_line(&text)
                ),
            ));
        }
        // An embeddings answer is one JSON body, whatever it is labelled.
        let streamed = self.stream && expect.inputs.is_none();
        let reply = if streamed && !content_type.starts_with("application/json") {
            read_stream(reader, start, self.max_line, expect.max_text_bytes)
        } else {
            read_whole(reader, start, self.max_line, expect)
        }?;
        check_usage(reply.usage, expect)?;
        Ok(reply)
    }
}

/// The failure of a request that got no response head.
fn send_failure(e: SendError) -> Failure {
    match e {
        SendError::Connect(io) => client_shortage(&io).unwrap_or_else(|| {
            let kind = if io.kind() == std::io::ErrorKind::TimedOut {
                FailureKind::Timeout
            } else {
                FailureKind::Connect
            };
            Failure::new(kind, format!("connect: {io}"))
        }),
        SendError::Io(io) => io_failure(io),
        SendError::Stale(io) => Failure {
            stale: true,
            ..io_failure(io)
        },
        SendError::Protocol(m) => Failure::new(FailureKind::Malformed, m),
        SendError::Stopped => Failure::new(FailureKind::Cancelled, "run stopped"),
    }
}

/// The failure of a response whose status is not 200.
fn status_failure(status: u16, location: Option<&str>, reader: &mut impl Read) -> Failure {
    let mut text = String::new();
    let _ = reader.take(2048).read_to_string(&mut text);
    let message = match status {
        300..=399 => format!(
            "HTTP {status}: redirected to {}; trie does not follow redirects: point --endpoint at the final URL",
            location.unwrap_or("(no Location header)")
        ),
        _ if text.trim().is_empty() => format!("HTTP {status} without a body"),
        _ => format!("HTTP {status}: {}", crate::redact::one_line(&text)),
    };
    Failure::new(FailureKind::Http(status), message)
}

/// Usage no server can truthfully report is a `bad_usage` failure: more
/// cached than prompt tokens, far more completion tokens than asked for, or
/// more prompt tokens than the prompt has bytes (plus [`TEMPLATE_SLACK`]):
/// no tokenizer makes more tokens than bytes. A count that is merely
/// different (another tokenizer) is a mismatch, counted, not a failure.
pub fn check_usage(usage: Option<Usage>, expect: Expect) -> Result<(), Failure> {
    let Some(u) = usage else { return Ok(()) };
    let bad = |m: String| Err(Failure::new(FailureKind::BadUsage, m));
    if let Some(c) = u.cached_tokens.filter(|&c| c > u.prompt_tokens) {
        return bad(format!(
            "the server reported {c} cached_tokens of {} prompt_tokens",
            u.prompt_tokens
        ));
    }
    if u.completion_tokens > most_tokens(expect.max_tokens) {
        return bad(format!(
            "the server reported {} completion_tokens for max_tokens {}",
            u.completion_tokens, expect.max_tokens
        ));
    }
    if let Some(bytes) = expect
        .prompt_bytes
        .filter(|&b| u.prompt_tokens > b.saturating_add(TEMPLATE_SLACK))
    {
        return bad(format!(
            "the server reported {} prompt_tokens for a prompt of {bytes} bytes",
            u.prompt_tokens
        ));
    }
    Ok(())
}

/// Read one line of at most `cap` bytes into `line`.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, cap: usize) -> std::io::Result<usize> {
    Read::take(&mut *reader, cap as u64).read_until(b'\n', line)
}

fn too_long(cap: usize) -> Failure {
    Failure::new(
        FailureKind::Malformed,
        format!("an SSE line longer than {cap} bytes (--max-line-bytes)"),
    )
}

fn too_much_text(len: usize, max: usize) -> Failure {
    Failure::new(
        FailureKind::Malformed,
        format!("{len} bytes of reply text, more than the {max} its max_tokens can make"),
    )
}

/// Read an SSE stream (pure over `reader`, so tests feed it fake ones).
pub fn read_stream(
    reader: &mut impl BufRead,
    start: Instant,
    max_line: usize,
    max_text: usize,
) -> Result<Reply, Failure> {
    let mut stream = Stream::default();
    let mut line = Vec::with_capacity(1024);
    let mut window = ReadWindow::closed();
    let mut eof_at = None;
    loop {
        line.clear();
        let read = read_line(reader, &mut line, max_line);
        let at = start.elapsed();
        match read {
            // After a finish reason or [DONE] the answer is whole: a server
            // that then breaks the body or the connection does not fail it.
            Err(_) if stream.complete() => break,
            Err(e) => return Err(io_failure(e)),
            Ok(0) => {
                eof_at = Some(at);
                break;
            }
            Ok(n) if n >= max_line && line.last() != Some(&b'\n') => {
                return Err(too_long(max_line));
            }
            Ok(_) => {}
        }
        stream.feed(&line, at).map_err(stream_failure)?;
        let generated = stream.text.len() + stream.reasoning.len();
        if generated > max_text {
            return Err(too_much_text(generated, max_text));
        }
        if stream.done {
            window.open(DRAIN);
            drain(reader);
            break;
        }
        if stream.finished {
            // All that is left is [DONE], and the usage chunk when it has not
            // come yet (vLLM and SGLang send it after the finish, later under
            // load): wait for usage up to a second, for [DONE] only briefly.
            window.open(if stream.usage.is_some() {
                DRAIN
            } else {
                AFTER_ANSWER
            });
        }
    }
    drop(window);
    stream.finish().map_err(stream_failure)?;
    Ok(Reply {
        ttft: stream.ttft(),
        latency: stream
            .done_at
            .or(stream.last_data_at)
            .or(eof_at)
            .unwrap_or_else(|| start.elapsed()),
        chat_shaped: stream.chat_shaped,
        text: stream.text,
        reasoning: stream.reasoning,
        chunks: stream.chunks,
        usage: stream.usage,
        timings: stream.timings,
        streamed: true,
    })
}

/// Read what is left of a response, best effort (bounded by the read window).
fn drain(reader: &mut impl BufRead) {
    let mut budget = 1usize << 20;
    loop {
        match reader.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(buf) => {
                let n = buf.len().min(budget);
                reader.consume(n);
                budget -= n;
                if budget == 0 {
                    return;
                }
            }
        }
    }
}

/// A reader that keeps a copy of what was read from it.
struct Recorded<R> {
    inner: R,
    bytes: Vec<u8>,
}

impl<R: Read> Read for Recorded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Most bytes of one embedding in a response, beyond `--max-line-bytes`.
pub const EMBEDDING_BYTES: usize = 256 << 10;

/// Read a whole (non-streamed) JSON body: its end is the end of the JSON
/// value (stamped there), whenever the server closes the connection.
pub fn read_whole(
    reader: &mut impl BufRead,
    start: Instant,
    max_line: usize,
    expect: Expect,
) -> Result<Reply, Failure> {
    let max_text = expect.max_text_bytes;
    let cap = match expect.inputs {
        // One vector per input: a float vector of 8k dimensions is about
        // 190 KB of JSON.
        Some(n) => max_line.saturating_add((n as usize).saturating_mul(EMBEDDING_BYTES)),
        None => max_line.saturating_add(max_text.saturating_mul(6)),
    };
    // The JSON value's bytes, read up to its end (serde_json reads a reader
    // byte by byte, so nothing past the value is taken); skimmed, not built.
    let mut limited = Recorded {
        inner: Read::take(&mut *reader, cap as u64 + 1),
        bytes: Vec::new(),
    };
    let value = serde_json::Deserializer::from_reader(&mut limited)
        .into_iter::<serde::de::IgnoredAny>()
        .next();
    let latency = start.elapsed();
    let too_large = limited.inner.limit() == 0;
    let body = limited.bytes;
    match value {
        _ if too_large => {
            return Err(Failure::new(
                FailureKind::Malformed,
                format!("a response body larger than {cap} bytes"),
            ));
        }
        Some(Ok(_)) => {}
        Some(Err(e)) if e.is_io() => return Err(io_failure(e.into())),
        Some(Err(e)) if e.is_eof() => {
            return Err(Failure::new(
                FailureKind::Truncated,
                "the response body ended before its JSON did",
            ));
        }
        Some(Err(e)) => {
            return Err(Failure::new(
                FailureKind::Malformed,
                format!("malformed response: {e}"),
            ));
        }
        None => {
            return Err(Failure::new(
                FailureKind::Malformed,
                "an empty response body",
            ));
        }
    };
    let mut window = ReadWindow::closed();
    window.open(DRAIN);
    drain(reader);
    drop(window);
    if let Some(inputs) = expect.inputs {
        let (embeddings, usage) =
            sse::parse_embeddings(&body).map_err(|m| Failure::new(FailureKind::Malformed, m))?;
        if embeddings != inputs {
            return Err(Failure::new(
                FailureKind::Malformed,
                format!("{embeddings} embeddings for {inputs} inputs"),
            ));
        }
        return Ok(Reply {
            latency,
            usage,
            ..Reply::default()
        });
    }
    let chunk = sse::parse_chunk(&body).map_err(|m| Failure::new(FailureKind::Malformed, m))?;
    if !chunk.has_choice {
        return Err(Failure::new(
            FailureKind::NoChoices,
            "response without choices",
        ));
    }
    let generated = chunk.text.len() + chunk.reasoning.len();
    if generated > max_text {
        return Err(too_much_text(generated, max_text));
    }
    Ok(Reply {
        ttft: None,
        latency,
        chat_shaped: chunk.chat_shaped,
        text: chunk.text.into_owned(),
        reasoning: chunk.reasoning.into_owned(),
        chunks: Vec::new(),
        usage: chunk.usage,
        timings: chunk.timings,
        streamed: false,
    })
}

fn stream_failure(e: StreamError) -> Failure {
    match e {
        StreamError::Malformed(m) => Failure::new(FailureKind::Malformed, m),
        StreamError::Truncated => {
            Failure::new(FailureKind::Truncated, "stream ended before [DONE]")
        }
        StreamError::NoChoices => {
            Failure::new(FailureKind::NoChoices, "stream without any choice chunk")
        }
    }
}

/// Error numbers of the client's own shortages.
const CLIENT_ERRNOS: [i32; 5] = [
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOMEM,
    libc::ENOBUFS,
    libc::EADDRNOTAVAIL,
];

fn client_shortage(io: &std::io::Error) -> Option<Failure> {
    let errno = io.raw_os_error()?;
    CLIENT_ERRNOS.contains(&errno).then(|| {
        Failure::new(
            FailureKind::Client,
            format!(
                "trie's side: {io}{}",
                if errno == libc::EMFILE || errno == libc::ENFILE {
                    " (raise the open-file limit, ulimit -n)"
                } else {
                    ""
                }
            ),
        )
    })
}

fn io_failure(e: std::io::Error) -> Failure {
    // ureq wraps its own errors (timeouts, protocol) into io::Error on body reads.
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        return map_error(inner);
    }
    if let Some(f) = client_shortage(&e) {
        return f;
    }
    let kind = match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => FailureKind::Timeout,
        std::io::ErrorKind::UnexpectedEof => FailureKind::Truncated,
        // Broken HTTP framing (trie's own client).
        std::io::ErrorKind::InvalidData => FailureKind::Malformed,
        _ => FailureKind::Reset,
    };
    Failure::new(kind, e.to_string())
}

fn map_error(e: &ureq::Error) -> Failure {
    use std::io::ErrorKind as K;
    let kind = match e {
        ureq::Error::Timeout(_) => FailureKind::Timeout,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => FailureKind::Connect,
        ureq::Error::Io(io) => {
            if let Some(f) = client_shortage(io) {
                return f;
            }
            match io.kind() {
                K::ConnectionRefused | K::NotFound | K::HostUnreachable | K::NetworkUnreachable => {
                    FailureKind::Connect
                }
                K::TimedOut | K::WouldBlock => FailureKind::Timeout,
                _ => FailureKind::Reset,
            }
        }
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            return Failure::new(
                FailureKind::Connect,
                format!("TLS handshake failed ({e}): is the endpoint plain HTTP? use http://"),
            );
        }
        ureq::Error::Protocol(_)
        | ureq::Error::LargeResponseHeader(..)
        | ureq::Error::BodyExceedsLimit(_) => FailureKind::Malformed,
        _ => FailureKind::Reset,
    };
    Failure::new(kind, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_deep_in_a_stream_error_is_removed_before_the_message_is_cut() {
        crate::redact::register("sk-straddle-0123456789");
        let pad = "p".repeat(185);
        let line = format!(r#"{{"error":{{"message":"{pad} Bearer sk-straddle-0123456789"}}}}"#);
        let err = crate::net::sse::parse_chunk(line.as_bytes()).unwrap_err();
        let f = Failure::new(FailureKind::Malformed, err);
        assert!(!f.message.contains("sk-str"), "{}", f.message);
        assert!(f.message.contains(crate::redact::REDACTED), "{}", f.message);
    }

    /// A reader that yields `parts`, waits `linger`, and then fails with
    /// `end` (or EOF).
    struct Fake {
        parts: Vec<Vec<u8>>,
        linger: Duration,
        end: Option<std::io::ErrorKind>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.parts.is_empty() {
                std::thread::sleep(std::mem::take(&mut self.linger));
                return match self.end {
                    Some(k) => Err(std::io::Error::new(k, "fake")),
                    None => Ok(0),
                };
            }
            let part = &mut self.parts[0];
            let n = part.len().min(buf.len());
            buf[..n].copy_from_slice(&part[..n]);
            part.drain(..n);
            if part.is_empty() {
                self.parts.remove(0);
            }
            Ok(n)
        }
    }

    /// What a request whose replies may have `bytes` bytes of text expects.
    fn text_cap(bytes: usize) -> Expect {
        Expect {
            max_text_bytes: bytes,
            ..Expect::new(1, 1)
        }
    }

    fn fake(parts: &[&str], end: Option<std::io::ErrorKind>) -> BufReader<Fake> {
        BufReader::new(Fake {
            parts: parts.iter().map(|p| p.as_bytes().to_vec()).collect(),
            linger: Duration::ZERO,
            end,
        })
    }

    const A: &str =
        "data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"finish_reason\":null}]}\n\n";
    const B: &str =
        "data: {\"choices\":[{\"index\":0,\"text\":\" b\",\"finish_reason\":\"length\"}]}\n\n";
    const U: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn read(r: &mut impl BufRead) -> Result<Reply, Failure> {
        read_stream(r, Instant::now(), 1 << 20, 1 << 20)
    }

    #[test]
    fn a_whole_answer_is_a_success_however_the_connection_ends() {
        use std::io::ErrorKind::{ConnectionReset, TimedOut, UnexpectedEof};
        // [DONE] then: EOF, a reset, a timeout (a server that never closes),
        // a broken chunked terminator.
        for end in [
            None,
            Some(ConnectionReset),
            Some(TimedOut),
            Some(UnexpectedEof),
        ] {
            let r = read(&mut fake(&[A, B, U, DONE], end)).unwrap();
            assert_eq!(r.text, " a b", "{end:?}");
            assert_eq!(r.usage.unwrap().completion_tokens, 2);
        }
        // No [DONE], but a finish reason: complete too.
        for end in [None, Some(ConnectionReset), Some(TimedOut)] {
            assert!(read(&mut fake(&[A, B, U], end)).is_ok(), "{end:?}");
        }
        // Cut before the finish: a failure of the right kind.
        let kind = |end| read(&mut fake(&[A], end)).unwrap_err().kind;
        assert_eq!(kind(None), FailureKind::Truncated);
        assert_eq!(kind(Some(ConnectionReset)), FailureKind::Reset);
        assert_eq!(kind(Some(TimedOut)), FailureKind::Timeout);
    }

    #[test]
    fn the_end_is_stamped_at_done_or_at_the_last_data_line() {
        for parts in [&[A, B, U, DONE][..], &[A, B, U][..]] {
            let mut r = fake(parts, None);
            r.get_mut().linger = Duration::from_millis(300);
            let reply = read(&mut r).unwrap();
            assert!(
                reply.latency < Duration::from_millis(150),
                "{parts:?}: {:?}",
                reply.latency
            );
        }
    }

    #[test]
    fn a_whole_body_ends_with_its_json_not_with_the_connection() {
        use std::io::ErrorKind::{ConnectionReset, TimedOut};
        let body = r#"{"choices":[{"index":0,"text":" hi","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        for end in [None, Some(ConnectionReset), Some(TimedOut)] {
            let mut r = fake(&[body], end);
            r.get_mut().linger = Duration::from_millis(300);
            let reply = read_whole(&mut r, Instant::now(), 1 << 20, text_cap(1 << 20)).unwrap();
            assert_eq!(reply.text, " hi");
            assert!(
                reply.latency < Duration::from_millis(150),
                "{end:?}: {:?}",
                reply.latency
            );
        }
        let cut = &body[..40];
        let kind = |end| {
            read_whole(
                &mut fake(&[cut], end),
                Instant::now(),
                1 << 20,
                text_cap(1 << 20),
            )
            .unwrap_err()
            .kind
        };
        assert_eq!(kind(None), FailureKind::Truncated);
        assert_eq!(kind(Some(ConnectionReset)), FailureKind::Reset);
        let e = read_whole(
            &mut fake(&["<html>"], None),
            Instant::now(),
            1024,
            text_cap(10),
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Malformed);
    }

    #[test]
    fn an_embeddings_answer_may_be_larger_than_a_line_by_its_vectors() {
        // 64 inputs of 4,096 dimensions: about 7 MB, over a 1 MB line cap.
        let vector = format!("[{}]", vec!["-0.012345678901234567"; 4096].join(","));
        let data: Vec<String> = (0..64)
            .map(|i| format!(r#"{{"object":"embedding","index":{i},"embedding":{vector}}}"#))
            .collect();
        let body = format!(
            r#"{{"data":[{}],"usage":{{"prompt_tokens":640,"total_tokens":640}}}}"#,
            data.join(",")
        );
        assert!(body.len() > 5 << 20);
        let r = read_whole(
            &mut fake(&[&body], None),
            Instant::now(),
            1 << 20,
            Expect::embeddings(64),
        )
        .unwrap();
        assert_eq!(r.usage.unwrap().prompt_tokens, 640);
        // Still bounded: one input's worth cannot be megabytes more.
        let e = read_whole(
            &mut fake(&[&body], None),
            Instant::now(),
            1 << 20,
            Expect::embeddings(1),
        )
        .unwrap_err();
        assert!(e.message.contains("larger than"), "{e:?}");
    }

    #[test]
    fn an_embeddings_answer_must_hold_one_embedding_per_input() {
        let body = r#"{"data":[{"embedding":[0.5],"index":0}],"usage":{"prompt_tokens":9,"total_tokens":9}}"#;
        let ok = read_whole(
            &mut fake(&[body], None),
            Instant::now(),
            1024,
            Expect::embeddings(1),
        )
        .unwrap();
        assert_eq!(
            ok.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((9, 0))
        );
        let e = read_whole(
            &mut fake(&[body], None),
            Instant::now(),
            1024,
            Expect::embeddings(2),
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Malformed);
        assert!(e.message.contains("1 embeddings for 2 inputs"), "{e:?}");
    }

    #[test]
    fn lines_and_text_are_capped() {
        let long = format!("data: {}\n", "x".repeat(5000));
        let e = read_stream(&mut fake(&[&long], None), Instant::now(), 1024, 1 << 20);
        assert_eq!(e.unwrap_err().kind, FailureKind::Malformed);
        // An endless line without a newline, arriving in pieces.
        let piece = "y".repeat(700);
        let parts = vec![piece.as_str(); 10];
        let e = read_stream(&mut fake(&parts, None), Instant::now(), 1024, 1 << 20).unwrap_err();
        assert!(e.message.contains("longer than 1024 bytes"), "{e:?}");
        // More text than max_tokens can make.
        let e = read_stream(&mut fake(&[A, B, DONE], None), Instant::now(), 1024, 3).unwrap_err();
        assert!(e.message.contains("reply text"), "{e:?}");
        let body = format!("{{\"choices\":[{{\"text\":\"{}\"}}]}}", "z".repeat(5000));
        let e = read_whole(
            &mut fake(&[&body], None),
            Instant::now(),
            1024,
            text_cap(100),
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Malformed);
    }

    #[test]
    fn choice_zero_is_read_by_index_and_chat_shapes_are_flagged() {
        let other = "data: {\"choices\":[{\"index\":1,\"text\":\" no\"},{\"index\":0,\"text\":\" yes\",\"finish_reason\":\"length\"}]}\n\n";
        let r = read(&mut fake(&[other, DONE], None)).unwrap();
        assert_eq!(r.text, " yes");
        let chat = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" hi\"},\"finish_reason\":\"length\"}]}\n\n";
        let r = read(&mut fake(&[chat, DONE], None)).unwrap();
        assert!(r.chat_shaped);
        assert_eq!(r.text, " hi");
    }

    #[test]
    fn impossible_usage_is_bad_usage() {
        let u = |p, c, k| {
            Some(Usage {
                prompt_tokens: p,
                completion_tokens: c,
                cached_tokens: k,
            })
        };
        let four = Expect::new(4, 4).prompt_bytes(10);
        assert!(check_usage(u(10, 4, Some(10)), four).is_ok());
        assert!(check_usage(None, four).is_ok());
        // An engine's own slack is not impossible: an end token, a
        // speculative step, a template's tokens.
        assert!(check_usage(u(26, 20, Some(0)), four).is_ok());
        assert!(check_usage(u(10, 21, Some(0)), four).is_err());
        // Another tokenizer's count is a mismatch, not impossible; more
        // tokens than bytes (and a template's worth) is.
        assert!(check_usage(u(4106, 4, Some(0)), four).is_ok());
        assert!(check_usage(u(4107, 4, Some(0)), four).is_err());
        assert!(check_usage(u(u64::MAX, 4, None), Expect::new(4, 4)).is_ok());
        let e = check_usage(u(u64::MAX, 4, Some(1)), four).unwrap_err();
        assert!(
            e.message.contains("prompt_tokens for a prompt of 10 bytes"),
            "{e:?}"
        );
        let e = check_usage(u(10, 4, Some(11)), four).unwrap_err();
        assert_eq!(e.kind, FailureKind::BadUsage);
        let e = check_usage(u(10, u64::MAX, None), four).unwrap_err();
        assert!(
            e.message.contains("18446744073709551615 completion_tokens"),
            "{e:?}"
        );
        assert!(!FailureKind::BadUsage.retryable());
    }

    #[test]
    fn shortages_of_the_client_are_not_blamed_on_the_server() {
        let f = io_failure(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(f.kind, FailureKind::Client);
        assert!(f.message.contains("ulimit -n"), "{}", f.message);
        let f = map_error(&ureq::Error::Io(std::io::Error::from_raw_os_error(
            libc::ECONNREFUSED,
        )));
        assert_eq!(f.kind, FailureKind::Connect);
    }
}

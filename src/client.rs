//! One blocking HTTP client for the whole run: a ureq `Agent` configured for
//! load generation (status codes are data, a keep-alive pool as large as the
//! concurrency), and the request that reads a stream line by line, taking the
//! timestamp before parsing.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sse::{self, ChunkMark, ServerTimings, Stream, StreamError, Usage};

/// Why a request failed; counted by kind in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Could not connect (refused, unresolvable, unreachable).
    Connect,
    /// The per-request timeout passed.
    Timeout,
    /// The server answered with an HTTP status >= 400.
    Http(u16),
    /// The connection broke mid-request or mid-stream.
    Reset,
    /// A chunk or body that is not the expected JSON (or an error object).
    Malformed,
    /// The stream ended before it was complete.
    Truncated,
    /// The response carried no choice.
    NoChoices,
    /// Stopped by the deadline or Ctrl+C (not a server failure).
    Cancelled,
}

impl FailureKind {
    /// Worth another try: connection errors, timeouts, broken streams, 408,
    /// 409, 429 and 5xx. Other 4xx answers would fail the same way again.
    pub fn retryable(self) -> bool {
        match self {
            FailureKind::Http(s) => matches!(s, 408 | 409 | 429) || s >= 500,
            FailureKind::Cancelled => false,
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
    Duration::from_secs_f64((0.25 * 2f64.powi(attempt as i32)).min(8.0))
}

/// A failed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Detail for the report (never contains the API key).
    pub message: String,
    /// It failed while sending, before any byte of a response came back.
    pub before_response: bool,
}

impl Failure {
    /// A failure of `kind` with a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            before_response: false,
        }
    }
}

/// A successful response.
#[derive(Debug, Default)]
pub struct Reply {
    /// First choice chunk, since the request was sent (streaming only).
    pub ttft: Option<Duration>,
    /// Last byte, since the request was sent.
    pub latency: Duration,
    /// The generated text.
    pub text: String,
    /// Token-carrying chunks (streaming only).
    pub chunks: Vec<ChunkMark>,
    /// Usage as the server reported it.
    pub usage: Option<Usage>,
    /// llama.cpp timings, when sent.
    pub timings: Option<ServerTimings>,
    /// Whether it came as an SSE stream (a server that cannot stream answers
    /// a stream request with one JSON body; it is read as such).
    pub streamed: bool,
}

/// The run's HTTP client; cheap to clone (one shared pool).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    completions_url: String,
    auth: Option<String>,
    stream: bool,
}

/// Build the load-generation agent.
pub fn agent(pool: usize, timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(pool.max(8))
        .max_idle_connections_per_host(pool.max(8))
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(30))))
        .user_agent(format!("trie/{}", env!("CARGO_PKG_VERSION")))
        .accept_encoding("identity")
        .no_delay(true)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        CachingResolver::default(),
    )
}

/// Resolves the endpoint's host once per run. ureq resolves before it looks
/// in its pool, and with a timeout set it resolves on a new thread, so without
/// this every request would spawn a thread (and carry its cost in TTFT). A
/// run's agent talks to one host; its addresses are kept in a `OnceLock`, so a
/// hit on the timed path is an atomic load and a comparison: no lock, no
/// allocation. Any other host is resolved as ureq would.
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

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if let Some((s, a, addrs)) = self.first.get()
            && s == scheme
            && a == authority
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let _ = self
            .first
            .set((scheme.to_string(), authority.to_string(), addrs.clone()));
        Ok(addrs)
    }
}

impl Client {
    /// A client of `{endpoint}/completions` (endpoint normalised to `.../v1`).
    pub fn new(agent: ureq::Agent, endpoint: &str, api_key: Option<&str>, stream: bool) -> Client {
        Client {
            agent,
            completions_url: format!("{endpoint}/completions"),
            auth: api_key
                .filter(|k| !k.is_empty())
                .map(|k| format!("Bearer {k}")),
            stream,
        }
    }

    /// Whether requests stream.
    pub fn streaming(&self) -> bool {
        self.stream
    }

    /// Interrupt every request in flight and refuse new ones (the deadline).
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }

    /// Send one completion request (the JSON `body`) and read its answer.
    /// `sent` is set to the moment the request was handed to the socket layer.
    pub fn complete(
        &self,
        body: &[u8],
        routing_key: &str,
        sent: &mut Instant,
    ) -> Result<Reply, Failure> {
        let mut req = self
            .agent
            .post(&self.completions_url)
            .header("Content-Type", "application/json")
            .header("X-SMG-Routing-Key", routing_key);
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        *sent = Instant::now();
        let resp = req.send(body).map_err(|e| Failure {
            before_response: true,
            ..map_error(e)
        })?;
        let start = *sent;
        let status = resp.status().as_u16();
        let json_body = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        let mut reader = BufReader::with_capacity(32 * 1024, resp.into_body().into_reader());
        if status >= 400 {
            let mut text = String::new();
            let _ = reader.take(2048).read_to_string(&mut text);
            return Err(Failure::new(
                FailureKind::Http(status),
                format!("HTTP {status}: {}", one_line(&text)),
            ));
        }
        if self.stream && !json_body {
            read_stream(&mut reader, start)
        } else {
            read_whole(&mut reader, start)
        }
    }
}

fn read_stream(reader: &mut impl BufRead, start: Instant) -> Result<Reply, Failure> {
    let mut stream = Stream::default();
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_failure)?;
        let at = start.elapsed();
        if n == 0 {
            break;
        }
        stream.feed(&line, at).map_err(stream_failure)?;
        if stream.done {
            // Drain to the end so the connection returns to the pool.
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map_err(io_failure)?;
            break;
        }
    }
    let latency = start.elapsed();
    stream.finish().map_err(stream_failure)?;
    Ok(Reply {
        ttft: stream.first_choice,
        latency,
        text: stream.text,
        chunks: stream.chunks,
        usage: stream.usage,
        timings: stream.timings,
        streamed: true,
    })
}

fn read_whole(reader: &mut impl BufRead, start: Instant) -> Result<Reply, Failure> {
    let mut body = Vec::new();
    reader.read_to_end(&mut body).map_err(io_failure)?;
    let latency = start.elapsed();
    let chunk = sse::parse_chunk(&body).map_err(|m| Failure::new(FailureKind::Malformed, m))?;
    if !chunk.has_choice {
        return Err(Failure::new(
            FailureKind::NoChoices,
            "response without choices",
        ));
    }
    Ok(Reply {
        ttft: None,
        latency,
        text: chunk.text.into_owned(),
        chunks: Vec::new(),
        usage: chunk.usage,
        timings: chunk.timings,
        streamed: false,
    })
}

fn stream_failure(e: StreamError) -> Failure {
    match e {
        StreamError::Malformed(m) => Failure::new(FailureKind::Malformed, one_line(&m)),
        StreamError::Truncated => {
            Failure::new(FailureKind::Truncated, "stream ended before [DONE]")
        }
        StreamError::NoChoices => {
            Failure::new(FailureKind::NoChoices, "stream without any choice chunk")
        }
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    // ureq wraps its own errors (timeouts, protocol) into io::Error on body reads.
    let text = e.to_string();
    let kind = if e.kind() == std::io::ErrorKind::TimedOut
        || text.contains("timeout")
        || text.contains("Timeout")
    {
        FailureKind::Timeout
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FailureKind::Truncated
    } else {
        FailureKind::Reset
    };
    Failure::new(kind, one_line(&text))
}

fn map_error(e: ureq::Error) -> Failure {
    let kind = match &e {
        ureq::Error::Timeout(_) => FailureKind::Timeout,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => FailureKind::Connect,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotFound
            ) =>
        {
            FailureKind::Connect
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => FailureKind::Timeout,
        ureq::Error::Io(_) => FailureKind::Reset,
        ureq::Error::Protocol(_) => FailureKind::Malformed,
        _ => FailureKind::Reset,
    };
    Failure::new(kind, one_line(&e.to_string()))
}

/// First line of `s`, at most 300 characters.
pub fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

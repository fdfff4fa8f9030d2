//! trie's own HTTP/1.1 client for the timed path of plain-HTTP endpoints:
//! a slot's completion requests, one at a time, on one kept-alive
//! connection. `https` endpoints and the small requests of the preflight
//! go through ureq.
//!
//! Why not ureq here: its body layers (chunked decoding, a limit reader, a
//! timeout recomputed per read) and the copy into a `BufReader` cost more
//! CPU per streamed token than the socket read itself. Here a response's
//! bytes land in one buffer per connection, the chunked framing is
//! stripped in place, and an SSE line is copied once, into the caller's
//! line; a read is one `read` syscall, its deadline enforced by the
//! watchdog of [`crate::net::transport`].
//!
//! What it speaks: `POST` with a `Content-Length` body; responses framed
//! by `Transfer-Encoding: chunked`, `Content-Length` or the end of the
//! connection; interim `1xx` responses skipped; a connection kept for the
//! next request only when its response was read to the end, nothing
//! followed it, and neither side asked to close. Heads and chunk lines are
//! capped, so no server can make it allocate without bound.

use std::io::{self, BufRead, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::unversioned::transport::ShutdownHandle;

use crate::net::transport::{Watched, connect, timed_out};

/// A connection's read buffer; a response head must fit in it.
const BUFFER: usize = 32 << 10;
/// Longest chunk-size or trailer line.
const MAX_CHUNK_LINE: usize = 4096;
/// A kept-alive connection that fails sooner than this after the request
/// was sent, before any answer, was closed by the server beforehand.
const STALE_WITHIN: Duration = Duration::from_millis(250);

/// Where a run's requests go, parsed once.
#[derive(Debug)]
pub struct Target {
    /// Host to resolve (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The request target of the completions route.
    path: String,
    addrs: OnceLock<Vec<SocketAddr>>,
}

impl Target {
    /// The target of `url` when it is plain `http://` (else `None`).
    pub fn parse(url: &str) -> Option<Target> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            addrs: OnceLock::new(),
        })
    }

    /// The request target of `url` when it is on this host over plain HTTP.
    pub fn path_of<'u>(&self, url: &'u str) -> Option<&'u str> {
        let rest = url
            .strip_prefix("http://")?
            .strip_prefix(&*self.authority)?;
        match rest {
            "" => Some("/"),
            r if r.starts_with('/') => Some(r),
            _ => None,
        }
    }

    /// The completions route.
    pub fn completions(&self) -> &str {
        &self.path
    }

    /// The host's addresses, resolved once (within `timeout`).
    fn addrs(&self, timeout: Duration) -> io::Result<&[SocketAddr]> {
        if let Some(a) = self.addrs.get() {
            return Ok(a);
        }
        let found = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => resolve(&self.host, self.port, timeout)?,
        };
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            ));
        }
        Ok(self.addrs.get_or_init(|| found))
    }
}

/// Resolve `host` on a helper thread, so a resolver that hangs costs at
/// most `timeout`.
fn resolve(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let name = host.to_string();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
        })?;
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {host} took longer than --connect-timeout"),
        ))
    })
}

/// What a stop shuts down: the client's connection of the moment, and
/// every later one before it is used.
#[derive(Default)]
pub struct Shut {
    closed: AtomicBool,
    current: Mutex<Option<Weak<dyn ShutdownHandle>>>,
}

impl Shut {
    /// Shut the current connection down; refuse every later request.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(h) = self.current.lock().as_ref().and_then(Weak::upgrade) {
            h.shutdown();
        }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// Connecting (or resolving) failed.
    Connect(io::Error),
    /// The connection failed before the response head was whole.
    Io(io::Error),
    /// The same on a kept-alive connection before any byte of a response:
    /// the server may have closed it since its last response.
    Stale(io::Error),
    /// The response head is not HTTP/1.x as it must be.
    Protocol(String),
    /// The client was shut down (the run stopped).
    Stopped,
}

/// One kept-alive connection and its read buffer.
struct Conn {
    sock: Watched,
    buf: Box<[u8]>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
}

impl Conn {
    fn new(sock: Watched) -> Conn {
        Conn {
            sock,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Read more bytes after the unread ones (one `read`); 0 at the end of
    /// the stream. `Err(InvalidData)` when the unread bytes fill the buffer.
    fn fill(&mut self, budget: Option<Instant>) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.pos == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {} bytes without the expected line end",
                        self.buf.len()
                    ),
                ));
            }
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        self.sock.watch(budget).map_err(|_| timed_out())?;
        let n = self.sock.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The bounds of one line (without its `\n` or `\r\n`) of at most `cap`
    /// bytes in the buffer, reading more as needed; `None` at the end of
    /// the stream.
    fn line(&mut self, cap: usize, budget: Option<Instant>) -> io::Result<Option<(usize, usize)>> {
        let mut searched = 0;
        loop {
            let unread = self.buffered();
            if let Some(i) = unread[searched..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                let end = start + searched + i;
                self.pos = end + 1;
                let cr = end > start && self.buf[end - 1] == b'\r';
                return Ok(Some((start, end - usize::from(cr))));
            }
            searched = unread.len();
            if searched > cap {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a chunk framing line longer than {cap} bytes"),
                ));
            }
            // `fill` may move the unread bytes to the front: `searched`
            // counts from `pos`, so it stays right.
            if self.fill(budget)? == 0 {
                return Ok(None);
            }
        }
    }
}

/// A plain-HTTP/1.1 client of one slot.
pub struct Http1 {
    target: Arc<Target>,
    shut: Arc<Shut>,
    conn: Option<Conn>,
    /// The request head, built anew in this buffer for each request.
    out: Vec<u8>,
    /// Headers every request carries (`Name: value\r\n` lines).
    fixed: String,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Http1 {
    /// A client of `target`; requests time out after `timeout`, connects
    /// after `connect_timeout`; `fixed` are header lines every request
    /// carries. `shut` is what the stop calls.
    pub fn new(
        target: Arc<Target>,
        fixed: String,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Http1 {
        Http1 {
            target,
            shut: Arc::default(),
            conn: None,
            out: Vec::with_capacity(1024),
            fixed,
            timeout,
            connect_timeout,
        }
    }

    /// Where requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `POST` a completion request's JSON `body`.
    pub fn completions(
        &mut self,
        body: &[u8],
        routing_key: &str,
        sent: &mut Instant,
    ) -> Result<Response<'_>, SendError> {
        let target = self.target.clone();
        self.send(
            "POST",
            target.completions(),
            Some(body),
            &[
                ("Content-Type", "application/json"),
                ("X-SMG-Routing-Key", routing_key),
            ],
            sent,
        )
    }

    /// What shuts this client down.
    pub fn shut(&self) -> Arc<Shut> {
        self.shut.clone()
    }

    /// Send `method path` with `body` (`Content-Length` framed; none for
    /// `None`) and the extra `headers`; `sent` is set when the request is
    /// handed to the socket. Returns the response whose head has been read.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
        sent: &mut Instant,
    ) -> Result<Response<'_>, SendError> {
        if self.shut.closed() {
            return Err(SendError::Stopped);
        }
        self.out.clear();
        let t = &*self.target;
        for part in [
            method,
            " ",
            path,
            " HTTP/1.1\r\nHost: ",
            &t.authority,
            "\r\n",
            &self.fixed,
        ] {
            self.out.extend_from_slice(part.as_bytes());
        }
        for (name, value) in headers {
            for part in [name, ": ", value, "\r\n"] {
                self.out.extend_from_slice(part.as_bytes());
            }
        }
        if let Some(body) = body {
            self.out.extend_from_slice(b"Content-Length: ");
            self.out
                .extend_from_slice(body.len().to_string().as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        let body = body.unwrap_or_default();
        // The request starts before its connection is found or made (as
        // it did with ureq, and does for any client): a connect is part of
        // its time to first token.
        *sent = Instant::now();
        let budget = sent.checked_add(self.timeout);
        let kept = self
            .conn
            .take()
            .filter(|c| c.pos == c.end && c.sock.is_open());
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(c) => c,
            None => self.open(budget)?,
        };
        conn.sock
            .watch(budget)
            .map_err(|_| SendError::Io(timed_out()))?;
        // Stale: the kept-alive connection failed at once, before any
        // byte of an answer (a server that closed it since its last
        // response); a failure after the server held the request a while
        // (a proxy's read timeout) is the request's own.
        let sent_at = *sent;
        let failed = |e: io::Error| {
            if reused && e.kind() != io::ErrorKind::TimedOut && sent_at.elapsed() < STALE_WITHIN {
                SendError::Stale(e)
            } else {
                SendError::Io(e)
            }
        };
        // Head and body in one writev: no copy of the body, which may be
        // megabytes, into a buffer that would keep that size per slot.
        conn.sock
            .write_parts(&mut [io::IoSlice::new(&self.out), io::IoSlice::new(body)])
            .map_err(failed)?;
        let mut answered = false;
        let head = read_head(&mut conn, budget, &mut answered).map_err(|e| match e {
            SendError::Io(e) if !answered => failed(e),
            e => e,
        })?;
        let framing = head.framing;
        let keep = head.keep_alive && !matches!(framing, Framing::Close);
        Ok(Response {
            status: head.status,
            content_type: head.content_type,
            location: head.location,
            body: Body {
                home: &mut self.conn,
                conn: Some(conn),
                state: match framing {
                    Framing::Chunked => State::Size,
                    Framing::Length(0) => State::Done,
                    Framing::Length(n) => State::Data(n),
                    Framing::Close => State::Close,
                },
                chunked: framing == Framing::Chunked,
                keep,
                budget,
            },
        })
    }

    /// A new connection (the stop can reach it before it is used).
    fn open(&mut self, budget: Option<Instant>) -> Result<Conn, SendError> {
        let connect_by = Instant::now()
            .checked_add(self.connect_timeout)
            .map(|c| budget.map_or(c, |b| b.min(c)));
        let addrs = self
            .target
            .addrs(self.connect_timeout)
            .map_err(SendError::Connect)?;
        let sock = Watched::new(connect(addrs, connect_by).map_err(SendError::Connect)?);
        *self.shut.current.lock() = Some(sock.handle());
        if self.shut.closed() {
            return Err(SendError::Stopped);
        }
        Ok(Conn::new(sock))
    }
}

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    Close,
}

/// A parsed response head.
#[derive(Debug)]
struct Head {
    status: u16,
    content_type: String,
    location: Option<String>,
    framing: Framing,
    keep_alive: bool,
}

fn protocol(m: impl Into<String>) -> SendError {
    SendError::Protocol(m.into())
}

/// Read the final response head (interim `1xx` ones are skipped);
/// `answered` is set once any byte of a response has come.
fn read_head(
    conn: &mut Conn,
    budget: Option<Instant>,
    answered: &mut bool,
) -> Result<Head, SendError> {
    loop {
        let mut searched = 0;
        let len = loop {
            let unread = conn.buffered();
            if let Some(n) = head_end(unread, searched) {
                break n;
            }
            searched = unread.len().saturating_sub(3);
            match conn.fill(budget) {
                Ok(0) if conn.pos == conn.end => {
                    return Err(SendError::Io(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the connection without a response",
                    )));
                }
                Ok(0) => return Err(protocol("the response ended inside its head")),
                Ok(_) => *answered = true,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(protocol(format!(
                        "a response head larger than {} KiB",
                        BUFFER >> 10
                    )));
                }
                Err(e) => return Err(SendError::Io(e)),
            }
        };
        let text = &conn.buf[conn.pos..conn.pos + len];
        let head = parse_head(text)?;
        conn.pos += len;
        if head.status >= 100 && head.status < 200 {
            if head.status == 101 {
                return Err(protocol("the server switched protocols (HTTP 101)"));
            }
            continue;
        }
        return Ok(head);
    }
}

/// The length of the head at the start of `b` (through its blank line),
/// looking for its end from `from` on.
fn head_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = b[i..].iter().position(|&c| c == b'\n') {
        let nl = i + p;
        let rest = &b[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// Parse a response head (status line and header lines). Bytes outside
/// ASCII in values and the reason phrase are allowed (obs-text); a folded
/// line continues the header before it (obs-fold).
fn parse_head(text: &[u8]) -> Result<Head, SendError> {
    let text = String::from_utf8_lossy(text);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let bad_status = || {
        protocol(format!(
            "not an HTTP/1.x response: {}",
            crate::redact::one_line(status_line)
        ))
    };
    let mut words = status_line.splitn(3, ' ');
    let http10 = match words.next().unwrap_or("") {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad_status()),
    };
    let status = words
        .next()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| *c >= 100)
        .ok_or_else(bad_status)?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = fields.last_mut() else {
                return Err(protocol("a response head that starts with a folded line"));
            };
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let field = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && name.bytes().all(is_token));
        let Some((name, value)) = field else {
            return Err(protocol(format!(
                "a bad response header line: {}",
                crate::redact::one_line(line)
            )));
        };
        fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut head = Head {
        status,
        content_type: String::new(),
        location: None,
        framing: Framing::Close,
        keep_alive: !http10,
    };
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for (name, value) in &fields {
        match name.as_str() {
            "content-type" => head.content_type = value.to_ascii_lowercase(),
            "location" => head.location = Some(value.clone()),
            "content-length" => {
                // A list of one value repeated is that value.
                for v in value.split(',').map(str::trim) {
                    let n = Some(v)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| {
                            protocol(format!(
                                "a bad Content-Length: {}",
                                crate::redact::one_line(value)
                            ))
                        })?;
                    if length.is_some_and(|l| l != n) {
                        return Err(protocol("two different Content-Length values"));
                    }
                    length = Some(n);
                }
            }
            "transfer-encoding" => {
                // Chunked only when it is the last coding.
                let last = value.rsplit(',').next().unwrap_or("").trim();
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        head.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                        head.keep_alive = true;
                    }
                }
            }
            _ => {}
        }
    }
    head.framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            // A coding trie cannot frame: the body ends with the connection.
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    if chunked.is_some() && length.is_some() {
        head.keep_alive = false;
    }
    Ok(head)
}

/// A character of an HTTP token (a header field name).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The size of a chunk-size line's hex digits (leading zeros allowed).
fn chunk_size(hex: &[u8]) -> Option<u64> {
    if hex.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digits = &hex[hex.iter().position(|&b| b != b'0').unwrap_or(hex.len())..];
    match digits.len() {
        0 => Some(0),
        // At most 15 hex digits: always fits.
        1..=15 => u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok(),
        _ => None,
    }
}

/// A response whose head has been read.
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// `Content-Type`, in lowercase (empty when absent).
    pub content_type: String,
    /// `Location`, when present.
    pub location: Option<String>,
    /// The body.
    pub body: Body<'a>,
}

/// Where the body reader is in the framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside data: this many bytes left (of the chunk or of the body).
    Data(u64),
    /// After a chunk's data: its line end.
    DataEnd,
    /// After the last chunk: trailer lines up to a blank one.
    Trailers,
    /// Until the connection ends.
    Close,
    /// The body is whole.
    Done,
}

/// A response body, read through the connection's buffer. Dropped after
/// its end (and nothing more), its connection waits for the next request.
pub struct Body<'a> {
    home: &'a mut Option<Conn>,
    conn: Option<Conn>,
    state: State,
    /// `Data` is a chunk's (else the length-framed body's).
    chunked: bool,
    /// Chunked or a length, and neither side asked to close.
    keep: bool,
    budget: Option<Instant>,
}

fn framing_error(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

/// The next chunk-size, chunk-end or trailer line; the body's end
/// before it is an error.
fn framing_line(conn: &mut Conn, budget: Option<Instant>) -> io::Result<(usize, usize)> {
    conn.line(MAX_CHUNK_LINE, budget)?.ok_or_else(cut_short)
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection ended inside the response body",
    )
}

impl Body<'_> {
    /// Advance through framing until data (or the end) is buffered.
    fn ready(&mut self) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        loop {
            match self.state {
                State::Done => return Ok(()),
                State::Data(_) | State::Close if conn.pos < conn.end => return Ok(()),
                State::Data(_) => {
                    if conn.fill(self.budget)? == 0 {
                        return Err(cut_short());
                    }
                }
                State::Close => {
                    if conn.fill(self.budget)? == 0 {
                        self.state = State::Done;
                    }
                }
                State::Size => {
                    let (a, b) = framing_line(conn, self.budget)?;
                    let line = &conn.buf[a..b];
                    let hex = line.split(|&c| c == b';').next().unwrap_or(b"");
                    let hex = hex.trim_ascii();
                    let size = chunk_size(hex).ok_or_else(|| {
                        framing_error(format!(
                            "a bad chunk size: {}",
                            crate::redact::one_line(&String::from_utf8_lossy(line))
                        ))
                    })?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    let (a, b) = framing_line(conn, self.budget)?;
                    if a != b {
                        return Err(framing_error("chunk data longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailers => {
                    let (a, b) = framing_line(conn, self.budget)?;
                    if a == b {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

impl BufRead for Body<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.ready()?;
        let Some(conn) = self.conn.as_ref() else {
            return Ok(&[]);
        };
        Ok(match self.state {
            State::Data(left) => {
                let n = (conn.end - conn.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                &conn.buf[conn.pos..conn.pos + n]
            }
            State::Close => conn.buffered(),
            _ => &[],
        })
    }

    fn consume(&mut self, amt: usize) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let amt = amt.min(conn.end - conn.pos);
        conn.pos += amt;
        if let State::Data(left) = self.state {
            let left = left - (amt as u64).min(left);
            self.state = match (left, self.chunked) {
                (0, true) => State::DataEnd,
                (0, false) => State::Done,
                (n, _) => State::Data(n),
            };
        }
    }
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Drop for Body<'_> {
    fn drop(&mut self) {
        if self.keep && self.state == State::Done {
            *self.home = self.conn.take().filter(|c| c.pos == c.end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A server that answers each request with the next of `answers`
    /// (written in `piece`-byte writes) and reports each request's bytes and
    /// the number of its connection.
    fn server(
        answers: Vec<&'static str>,
        piece: usize,
    ) -> (String, crossbeam_channel::Receiver<(usize, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                while let Some(request) = read_request(&mut conn) {
                    let _ = tx.send((n, request));
                    let Some(answer) = answers.next() else { return };
                    if answer == LATE_CLOSE {
                        std::thread::sleep(Duration::from_millis(400));
                        break;
                    }
                    // Latin-1: a char below 256 is one byte, so answers can
                    // carry bytes that are not UTF-8.
                    let bytes: Vec<u8> = answer.chars().map(|c| c as u8).collect();
                    for part in bytes.chunks(piece) {
                        if conn.write_all(part).is_err() {
                            break;
                        }
                        conn.flush().unwrap();
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let closes = answer.is_empty()
                        || answer.starts_with("HTTP/1.0")
                        || answer.contains("Connection: close");
                    if closes {
                        break;
                    }
                }
            }
        });
        (url, rx)
    }

    /// An answer that is no answer: the connection closed after 400 ms.
    const LATE_CLOSE: &str = "(late close)";

    /// One request's head and `Content-Length` body.
    fn read_request(conn: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if conn.read(&mut b).ok()? == 0 {
                return None;
            }
            got.push(b[0]);
        }
        let head = String::from_utf8_lossy(&got).to_string();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).ok()?;
        got.extend_from_slice(&body);
        Some(got)
    }

    fn client(url: &str, timeout: Duration) -> Http1 {
        Http1::new(
            Arc::new(Target::parse(url).unwrap()),
            "User-Agent: trie/test\r\n".into(),
            timeout,
            Duration::from_secs(2),
        )
    }

    /// Send one completion request; the body as read, or the error.
    fn call(c: &mut Http1, body: &str) -> Result<(u16, String, bool), String> {
        let mut sent = Instant::now();
        let mut r = c
            .completions(body.as_bytes(), "key-1", &mut sent)
            .map_err(|e| format!("{e:?}"))?;
        let mut text = String::new();
        r.body
            .read_to_string(&mut text)
            .map_err(|e| format!("{:?}: {e}", e.kind()))?;
        Ok((r.status, text, r.body.state == State::Done))
    }

    #[test]
    fn the_request_on_the_wire_is_exact() {
        let (url, rx) = server(
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            1 << 10,
        );
        let mut c = client(&url, Duration::from_secs(5));
        assert_eq!(call(&mut c, "{\"a\":1}").unwrap(), (200, "ok".into(), true));
        let (_, request) = rx.recv().unwrap();
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches("/v1/completions");
        assert_eq!(
            String::from_utf8(request).unwrap(),
            format!(
                "POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trie/test\r\nContent-Type: application/json\r\nX-SMG-Routing-Key: key-1\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}"
            )
        );
    }

    #[test]
    fn a_body_of_megabytes_goes_out_whole_behind_its_head() {
        // Larger than a socket buffer: writev returns short, and the rest
        // must follow in order.
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (url, rx) = server(vec![ok, ok], 1 << 10);
        let mut c = client(&url, Duration::from_secs(20));
        // A body that once was copied behind the head: the head's buffer
        // kept its size for the slot's life.
        assert_eq!(call(&mut c, &"x".repeat(60_000)).unwrap().1, "ok");
        assert!(
            c.out.capacity() < 4096,
            "the body was copied: {}",
            c.out.capacity()
        );
        let _ = rx.recv().unwrap();
        let body: String = (0..600_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let body = body.repeat(5);
        assert_eq!(call(&mut c, &body).unwrap().1, "ok");
        let (_, request) = rx.recv().unwrap();
        let split = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(String::from_utf8_lossy(&request[..split]).contains("Content-Length: 3000000\r\n"));
        assert!(
            request[split..] == *body.as_bytes(),
            "the body arrived changed"
        );
    }

    #[test]
    fn a_chunked_body_read_byte_by_byte_is_whole_and_its_connection_kept() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (url, rx) = server(
            vec![
                chunked,
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
                "HTTP/1.0 200 OK\r\n\r\nuntil close",
                "HTTP/1.1 204 No Content\r\n\r\n",
            ],
            1,
        );
        let mut c = client(&url, Duration::from_secs(5));
        assert_eq!(
            call(&mut c, "1").unwrap(),
            (200, "hello 0123456789".into(), true)
        );
        // Interim responses are skipped; a length-framed body keeps it too.
        assert_eq!(call(&mut c, "2").unwrap(), (200, "abc".into(), true));
        // HTTP/1.0 without a length: the body is the rest of the connection.
        assert_eq!(
            call(&mut c, "3").unwrap(),
            (200, "until close".into(), true)
        );
        assert_eq!(call(&mut c, "4").unwrap(), (204, String::new(), true));
        let conns: Vec<usize> = rx.try_iter().map(|(n, _)| n).collect();
        assert_eq!(
            conns,
            [0, 0, 0, 1],
            "a kept connection is reused, a closed one not"
        );
    }

    #[test]
    fn a_connection_that_asked_to_close_or_sent_too_much_is_not_reused() {
        let (url, rx) = server(
            vec![
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbEXTRA",
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
            ],
            1 << 10,
        );
        let mut c = client(&url, Duration::from_secs(5));
        for want in ["a", "b", "c"] {
            // Give the extra bytes time to arrive before the next request.
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(call(&mut c, want).unwrap().1, want);
        }
        let conns: Vec<usize> = rx.try_iter().map(|(n, _)| n).collect();
        assert_eq!(conns, [0, 1, 2]);
    }

    #[test]
    fn broken_framing_is_an_error_never_a_body() {
        for (answer, kind) in [
            // Cut inside a chunk.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n9\r\nabc",
                io::ErrorKind::UnexpectedEof,
            ),
            // Cut before the last chunk.
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n",
                io::ErrorKind::UnexpectedEof,
            ),
            // Cut before its length.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc",
                io::ErrorKind::UnexpectedEof,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                io::ErrorKind::InvalidData,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                io::ErrorKind::InvalidData,
            ),
        ] {
            let (url, _rx) = server(vec![answer], 1 << 10);
            let mut c = client(&url, Duration::from_secs(5));
            let err = call(&mut c, "x").unwrap_err();
            assert!(err.starts_with(&format!("{kind:?}")), "{answer:?}: {err}");
        }
        let long = Box::leak(
            format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "y".repeat(BUFFER)).into_boxed_str(),
        );
        for (answer, want) in [
            ("SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
            (&*long, "larger than 32 KiB"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "a bad Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "two different",
            ),
            ("HTTP/1.1 101 Switching\r\n\r\n", "switched protocols"),
            ("", "ConnectionAborted"),
        ] {
            let (url, _rx) = server(vec![answer], 1 << 10);
            let mut c = client(&url, Duration::from_secs(5));
            let err = call(&mut c, "x").unwrap_err();
            assert!(err.contains(want), "{answer:.40?}: {err}");
        }
    }

    #[test]
    fn a_silent_server_times_out_and_a_shut_client_stops_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
        let accepted = std::thread::spawn(move || {
            let conns: Vec<_> = listener.incoming().take(2).collect();
            std::thread::sleep(Duration::from_secs(3));
            drop(conns);
        });
        let mut c = client(&url, Duration::from_millis(300));
        let t = Instant::now();
        let err = call(&mut c, "x").unwrap_err();
        assert!(err.contains("TimedOut"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // A stop breaks off a blocked read, and refuses later requests.
        let mut c = client(&url, Duration::from_secs(30));
        let shut = c.shut();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            shut.shutdown();
        });
        let t = Instant::now();
        assert!(call(&mut c, "x").is_err());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(call(&mut c, "x").unwrap_err(), "Stopped");
        drop(accepted);
    }

    #[test]
    fn heads_are_read_as_http_allows_and_no_further() {
        for (answer, body) in [
            // Bytes outside ASCII (not UTF-8: Latin-1 on the wire) in a
            // value and in the reason phrase.
            (
                "HTTP/1.1 200 \u{c0}K\r\nX-Server: caf\u{e9}\r\nContent-Length: 2\r\n\r\nok",
                "ok",
            ),
            // A folded line continues the header before it, colon or not.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n\r\nhello",
                "hello",
            ),
            // A list of one length repeated; a chunk size with leading zeros.
            ("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", "abc"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0000000000000003\r\nabc\r\n0\r\n\r\n",
                "abc",
            ),
        ] {
            let (url, _rx) = server(vec![answer], 1 << 10);
            let mut c = client(&url, Duration::from_secs(5));
            assert_eq!(call(&mut c, "x").unwrap().1, body, "{answer:?}");
        }
        for (answer, want) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
                "a bad Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
                "two different",
            ),
            (
                "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
                "not an HTTP/1.x response",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
                "a bad response header line",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
                "a bad chunk size",
            ),
        ] {
            let (url, _rx) = server(vec![answer], 1 << 10);
            let mut c = client(&url, Duration::from_secs(5));
            let err = call(&mut c, "x").unwrap_err();
            assert!(err.contains(want), "{answer:?}: {err}");
        }
    }

    #[test]
    fn only_a_kept_alive_connection_that_got_no_answer_is_stale() {
        // The first answer keeps the connection; the second request on it
        // gets nothing (the server closed it): stale. On a new connection,
        // the same silence is no stale connection.
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
        let (url, _rx) = server(vec![ok, "", "", ok, LATE_CLOSE], 1 << 10);
        let mut c = client(&url, Duration::from_secs(5));
        assert_eq!(call(&mut c, "1").unwrap().1, "a");
        let err = call(&mut c, "2").unwrap_err();
        assert!(err.starts_with("Stale("), "{err}");
        let err = call(&mut c, "3").unwrap_err();
        assert!(err.starts_with("Io("), "{err}");
        // A kept-alive connection the server held a while before closing
        // it: the request's own failure, not a stale connection.
        assert_eq!(call(&mut c, "4").unwrap().1, "a");
        let err = call(&mut c, "5").unwrap_err();
        assert!(err.starts_with("Io("), "{err}");
    }

    #[test]
    fn urls_on_the_host_are_its_paths() {
        let t = Target::parse("http://[::1]:8000/v1/completions").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.completions()),
            ("::1", 8000, "/v1/completions")
        );
        assert_eq!(t.path_of("http://[::1]:8000/metrics"), Some("/metrics"));
        assert_eq!(t.path_of("http://[::1]:8000"), Some("/"));
        assert_eq!(t.path_of("http://[::1]:80001/x"), None);
        assert_eq!(t.path_of("https://[::1]:8000/x"), None);
        assert!(Target::parse("https://h/v1/completions").is_none());
        assert_eq!(Target::parse("http://h/v1/completions").unwrap().port, 80);
    }
}

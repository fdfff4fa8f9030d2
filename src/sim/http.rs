//! Minimal HTTP/1.1 framing for the simulated engine: requests are parsed by
//! `httparse`; responses are either a complete body or a chunked stream that
//! is flushed as the timing model releases each piece.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

/// Largest request head we accept.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body we accept (a 200k-token prompt is about 1.5 MB).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One parsed request.
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The body (Content-Length framed).
    pub body: Vec<u8>,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// Header values by lowercase name.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header's value (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
pub enum ReadError {
    /// The connection ended or failed: close it.
    Closed,
    /// The request is malformed: answer with this status and close.
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

/// Read the next request from a keep-alive connection.
pub fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Request, ReadError> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head == b"\r\n" || head == b"\n" {
            head.clear(); // tolerate stray blank lines between requests
        }
        if head.len() > MAX_HEAD {
            return Err(ReadError::Bad(431, "request header too large"));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ReadError::Bad(400, "malformed request head")),
    }
    let method = req.method.unwrap_or("").to_string();
    let path = req
        .path
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let http10 = req.version == Some(0);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Err(ReadError::Bad(
            411,
            "chunked request bodies are not supported; send Content-Length",
        ));
    }
    let len = match find("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, "bad Content-Length"))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Bad(413, "request body too large"));
    }
    let mut body = vec![0u8; len];
    io::Read::read_exact(reader, &mut body)?;
    let keep_alive = match find("connection") {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => !http10,
    };
    Ok(Request {
        method,
        path,
        body,
        keep_alive,
        headers,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Write a complete response with a JSON body.
pub fn write_json(
    w: &mut impl Write,
    status: u16,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    )?;
    w.write_all(body)?;
    w.flush()
}

/// An OpenAI-style error body.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    let kind = match status {
        400 | 411 | 413 | 431 => "invalid_request_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": status}})
        .to_string()
        .into_bytes()
}

/// Start a chunked `text/event-stream` response.
pub fn begin_stream(w: &mut impl Write) -> io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
}

/// Write one chunk of a chunked body (not flushed).
pub fn write_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")
}

/// End a chunked body and flush.
pub fn end_stream(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

//! A scripted HTTP server on 127.0.0.1 for hostile-server tests: each
//! request is handed to a closure that writes whatever bytes it likes on the
//! raw socket, and says what happens to the connection afterwards. Helpers
//! write the well-formed answers (a model list, a streamed completion with
//! exact usage) that the misbehaviour is mixed into.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use trie::text::tokenizer::Tokenizer;

/// One request as the scripted server read it.
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    /// A header's value (name in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether it is trie's preflight probe.
    pub fn is_probe(&self) -> bool {
        self.header("x-smg-routing-key") == Some(trie::exec::preflight::PROBE_ROUTING_KEY)
    }

    /// Whether it is a completion request of a trace.
    pub fn is_trace(&self) -> bool {
        self.method == "POST" && !self.is_probe()
    }

    /// `max_tokens` of a completion request.
    pub fn max_tokens(&self) -> u64 {
        self.json()["max_tokens"].as_u64().unwrap_or(0)
    }

    /// The prompt of a completion request.
    pub fn prompt(&self) -> String {
        self.json()["prompt"].as_str().unwrap_or("").to_string()
    }
}

/// What the connection does after an answer.
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close it.
    Close,
    /// Keep it open without a word for this long, then close it.
    Hold(Duration),
}

type Handler = dyn Fn(&Req, &mut TcpStream) -> After + Send + Sync;

/// Every request's method, path and body, in order.
pub type Log = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A running scripted server (its threads end with the test process).
pub struct Scripted {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Requests read so far.
    pub requests: Arc<AtomicUsize>,
    /// Every request's method, path and body, in order.
    pub log: Log,
}

/// Serve `handler` on a free port.
pub fn scripted(
    handler: impl Fn(&Req, &mut TcpStream) -> After + Send + Sync + 'static,
) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handler: Arc<Handler> = Arc::new(handler);
    let requests = Arc::new(AtomicUsize::new(0));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let (n, l) = (requests.clone(), log.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (handler, n, l) = (handler.clone(), n.clone(), l.clone());
            std::thread::spawn(move || serve(conn, &*handler, &n, &l));
        }
    });
    Scripted { url, requests, log }
}

fn serve(mut conn: TcpStream, handler: &Handler, n: &AtomicUsize, log: &Log) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        n.fetch_add(1, Ordering::SeqCst);
        log.lock()
            .unwrap()
            .push((req.method.clone(), req.path.clone(), req.body.clone()));
        match handler(&req, &mut conn) {
            After::KeepAlive => {}
            After::Close => return,
            After::Hold(d) => {
                std::thread::sleep(d);
                return;
            }
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

/// The bundled tokenizer (the prompt counts of a well-behaved answer).
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_file(std::path::Path::new("data/tokenizer.json")).unwrap())
}

/// A complete response with a body.
pub fn respond(c: &mut TcpStream, status: &str, content_type: &str, extra: &str, body: &str) {
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
}

/// A model list of `ids`.
pub fn models(c: &mut TcpStream, ids: &[&str]) {
    let data: Vec<Value> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
    respond(
        c,
        "200 OK",
        "application/json",
        "",
        &serde_json::json!({"object": "list", "data": data}).to_string(),
    );
}

/// Start a chunked SSE response.
pub fn begin_sse(c: &mut TcpStream) {
    let _ = c.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
}

/// One chunk of a chunked body.
pub fn chunk(c: &mut TcpStream, data: &str) {
    let _ = write!(c, "{:x}\r\n{data}\r\n", data.len());
    let _ = c.flush();
}

/// The end of a chunked body.
pub fn end_chunks(c: &mut TcpStream) {
    let _ = c.write_all(b"0\r\n\r\n");
}

/// The SSE events of a well-formed completion of `req`: one `" a"` token per
/// chunk, a finish reason, usage with the exact prompt count, `[DONE]`.
pub fn completion_events(req: &Req) -> Vec<String> {
    let n = req.max_tokens();
    let mut out: Vec<String> = (0..n)
        .map(|i| {
            let finish = if i + 1 == n { "\"length\"" } else { "null" };
            format!("data: {{\"choices\":[{{\"index\":0,\"text\":\" a\",\"finish_reason\":{finish}}}]}}\n\n")
        })
        .collect();
    out.push(format!("data: {}\n\n", usage_chunk(req, n, 0)));
    out.push("data: [DONE]\n\n".to_string());
    out
}

/// A usage chunk for `req` with `completion` and `cached` tokens.
pub fn usage_chunk(req: &Req, completion: u64, cached: u64) -> String {
    let prompt = 1 + tokenizer().count(&req.prompt()) as u64;
    serde_json::json!({
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    })
    .to_string()
}

/// A well-behaved answer: the model list (`m`) or a streamed completion.
pub fn normal(req: &Req, c: &mut TcpStream) -> After {
    if req.method == "GET" {
        models(c, &["m"]);
        return After::KeepAlive;
    }
    begin_sse(c);
    for e in completion_events(req) {
        chunk(c, &e);
    }
    end_chunks(c);
    After::KeepAlive
}

//! Shared by the benches (and the integration tests): `trie sim` as a child process (so its CPU and
//! memory are not the harness's), and this process's CPU time and peak RSS
//! from /proc.

#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// Clock ticks per second of /proc/*/stat (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// `trie sim` on a free port, killed on drop.
pub struct SimChild {
    /// The process.
    pub child: Child,
    /// Base URL.
    pub url: String,
}

impl SimChild {
    /// Start `trie sim --port 0 ARGS`.
    pub fn start(args: &[&str]) -> SimChild {
        Self::start_with(&[], args)
    }

    /// Start `trie sim --port 0` with instant prefill and decode, room for
    /// 4,096 running sequences, and ARGS.
    pub fn instant(args: &[&str]) -> SimChild {
        Self::start_with(
            &[
                "--prefill-tps",
                "0",
                "--decode-tps",
                "0",
                "--max-running",
                "4096",
            ],
            args,
        )
    }

    fn start_with(base: &[&str], args: &[&str]) -> SimChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trie"))
            .args(["sim", "--port", "0"])
            .args(base)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("trie sim starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        SimChild { child, url }
    }

    /// CPU seconds the sim has used.
    pub fn cpu_s(&self) -> f64 {
        cpu_s_of(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for SimChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cpu_s_of(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the ")" of the command name: state is 3rd, utime 14th, stime 15th.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS
}

/// CPU seconds (user + system) this process has used.
pub fn cpu_s() -> f64 {
    cpu_s_of("/proc/self/stat")
}

/// Peak resident set size of this process, MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Write a workload of `rows` to a temp file.
pub fn workload(name: &str, rows: &[serde_json::Value]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("trie-bench-{}-{name}", std::process::id()));
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&p, text.join("\n")).unwrap();
    p
}

/// `p`-th percentile (0-100) of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    trie::record::metrics::percentile(sorted, p)
}

/// The machine, for the record.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cores} cores, {cpu}; {}",
        trie::output::results::rfc3339(std::time::SystemTime::now())
    )
}

/// One streamed completion read the barest way: a plain `TcpStream`, lines
/// timestamped as they are read, nothing parsed. Returns the arrival time of
/// each `data:` line carrying text since the request was written (the reference the
/// benches compare trie's client with).
pub fn raw_stream(addr: &str, body: &[u8]) -> Vec<std::time::Duration> {
    raw_stream_with(addr, body, false)
}

/// [`raw_stream`], parsing each data line's JSON as trie does when `parse`
/// (what the bare reader would pay to know a chunk's text).
pub fn raw_stream_with(addr: &str, body: &[u8], parse: bool) -> Vec<std::time::Duration> {
    use std::io::{BufReader, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).ok();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let start = std::time::Instant::now();
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(body).unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = Vec::new();
    let mut at = Vec::new();
    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let t = start.elapsed();
        // Token chunks only (the usage chunk has no text).
        let text = if parse {
            match trie::net::sse::classify(&line) {
                trie::net::sse::Line::Data(d) => {
                    trie::net::sse::parse_chunk(d).is_ok_and(|c| !c.text.is_empty())
                }
                _ => false,
            }
        } else {
            line.starts_with(b"data: {") && line.windows(7).any(|w| w == b"\"text\":")
        };
        if text {
            at.push(t);
        }
        line.clear();
    }
    at
}

/// The first numeric argument (seconds per point), else `default`.
pub fn seconds_arg(default: f64) -> f64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(default)
}

/// `host:port` of a base URL `http://host:port/v1`.
pub fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string()
}

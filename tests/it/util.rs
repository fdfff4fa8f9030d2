//! Shared helpers: sims with recorders, temp workloads, raw HTTP calls.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::Receiver;
use trie::sim::{Recorded, Sim, SimConfig};

/// A fast sim (instant prefill, 5000 tok/s decode) with a recorder.
pub fn fast_sim(mut cfg: SimConfig) -> (Sim, Receiver<Recorded>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    cfg.port = 0;
    cfg.recorder = Some(tx);
    (Sim::start(cfg).expect("sim starts"), rx)
}

/// Default fast settings.
pub fn fast() -> SimConfig {
    SimConfig {
        prefill_tps: 0.0,
        decode_tps: 5000.0,
        ..SimConfig::default()
    }
}

/// Write `text` to a fresh temp file and return its path.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "trie-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One workload row.
pub fn row(ipl: u32, answers: &[u32], tools: &[u32], latency: f64, final_len: u32) -> String {
    serde_json::json!({
        "num_turns": answers.len(),
        "input_prompt_length": ipl,
        "assistant_response_length": answers,
        "tool_call_output_length": tools,
        "tool_call_latency": vec![latency; answers.len()],
        "final_assistant_response_length": final_len,
    })
    .to_string()
}

/// POST a JSON body; returns (status, body).
pub fn post(url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let mut s = String::new();
            let r = resp.into_body().into_reader().read_to_string(&mut s);
            match r {
                Ok(_) => (status, s),
                Err(e) => (status, format!("{s}<read error: {e}>")),
            }
        }
        Err(e) => (0, format!("<error: {e}>")),
    }
}

/// GET; returns (status, body).
pub fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

/// Parse SSE `data:` JSON payloads of a body.
pub fn events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or(serde_json::Value::String(d.to_string())))
        .collect()
}

/// The trie binary: this build's, or `TRIE_TEST_BIN` when set (to show that a
/// test fails on another build, such as one before a fix).
pub fn trie_bin() -> std::process::Command {
    let bin =
        std::env::var_os("TRIE_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_trie").into());
    let mut c = std::process::Command::new(bin);
    c.env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("RUST_LOG")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdin(std::process::Stdio::null());
    c
}

/// Run the trie binary to the end: (exit code, stdout, stderr).
pub fn trie_run(args: &[&str]) -> (i32, String, String) {
    let out = trie_bin().args(args).output().expect("trie runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `trie sim` as a child process, shared with the benches.
pub use crate::support::SimChild;

/// Send `signal` (e.g. "INT") to a process.
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Wait up to `secs` for `cond`.
pub fn wait_for(secs: f64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Held by tests that load the CPU hard (the real engine) and by tests that
/// check wall-clock timing, so that on a 2-core machine the one does not
/// starve the other.
pub fn cpu_exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

//! Soak: a long run at 256 slots against `trie sim` (a separate process),
//! sampling the resident memory of trie (and of the sim), its open files and
//! threads every 10 s. Target: trie's RSS flat within 10 % after the first
//! minute.
//!
//! cargo bench --bench soak [-- SECONDS [WORKLOAD]]   (default 1800 s, data/qa.jsonl)

#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{SimChild, machine};

/// `VmRSS` of process `pid`, MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Entries of `/proc/PID/<what>` (open files, threads).
fn count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1800.0);
    let workload = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "data/qa.jsonl".into());
    let sim = SimChild::start(&["--max-running", "256"]);
    println!("machine: {}", machine());
    println!("soak: {workload}, 256 slots, {secs} s, sim {}", sim.url);
    let mut trie = Command::new(env!("CARGO_BIN_EXE_trie"))
        .args([
            "--workload",
            &workload,
            "--endpoint",
            &sim.url,
            "--concurrency",
            "256",
            "--duration",
            &secs.to_string(),
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trie runs");
    let pid = trie.id();
    let start = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    println!(
        "{:>7} {:>10} {:>10} {:>6} {:>8}",
        "t_s", "trie_MB", "sim_MB", "fds", "threads"
    );
    while trie.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_secs(10));
        let t = start.elapsed().as_secs_f64();
        let rss = rss_mb(pid);
        if rss == 0.0 {
            break;
        }
        samples.push((t, rss));
        println!(
            "{t:>7.0} {rss:>10.1} {:>10.1} {:>6} {:>8}",
            rss_mb(sim.child.id()),
            count(pid, "fd"),
            count(pid, "task")
        );
    }
    let out = trie.wait_with_output().expect("trie ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.contains("benchmark complete")) {
        let pick = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or("?")
                .to_string()
        };
        println!(
            "completed traces {}, requests {}, failed {}, exit {:?}",
            pick("completed_requests"),
            pick("http_requests"),
            pick("failed_requests"),
            out.status.code()
        );
    }
    let after: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t >= 60.0)
        .map(|s| s.1)
        .collect();
    if let (Some(first), Some(max)) = (after.first(), after.iter().copied().max_by(f64::total_cmp))
    {
        let growth = 100.0 * (max - first) / first;
        println!(
            "RSS after the first minute: {first:.1} MB, at most {max:.1} MB ({growth:+.1} %); target within 10 %: {}",
            if growth <= 10.0 { "met" } else { "missed" }
        );
    }
}

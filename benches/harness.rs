//! Harness ceiling: trie against `trie sim` with instant prefill and decode
//! (a separate process), at concurrency 1, 16, 256 and 1024: traces/s,
//! requests/s, streamed chunks/s, and trie's own CPU seconds per 1,000 chunks.
//! Then the overhead at a paced 10k chunks/s (100 slots × 100 tok/s) against
//! the bare reader, in five interleaved rounds (this VM's speed drifts by a
//! fifth between runs); medians compared.
//!
//! cargo bench --bench harness [-- SECONDS]
//!
//! Targets: >= 100k chunks/s; < 5 % of a core at 10k chunks/s; <= 1.25x the
//! bare reader's CPU per chunk at 10k chunks/s.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{SimChild, cpu_s, machine, workload};
use trie::Config;

/// One run: (summary, trie CPU s, sim CPU s).
fn measure(
    url: &str,
    wl: &str,
    conc: usize,
    secs: f64,
    sim: &SimChild,
) -> (trie::Summary, f64, f64) {
    let cfg = Config::new(wl, url)
        .unwrap()
        .concurrency(conc)
        .duration(Duration::from_secs_f64(secs))
        .max_retries(0);
    // Prepared first (tokenizer, vocabulary proof, preflight): the CPU
    // measured is the load point's, per chunk.
    let hooks = trie::exec::run::Hooks::default();
    let mut prepared = trie::exec::run::prepare(&cfg, &hooks.interrupt).expect("prepare");
    let (c0, s0) = (cpu_s(), sim.cpu_s());
    let results =
        trie::exec::run::execute(&cfg, &mut prepared, &hooks, &Default::default()).expect("run");
    let (c1, s1) = (cpu_s(), sim.cpu_s());
    prepared.close();
    (results.summary, c1 - c0, s1 - s0)
}

fn main() {
    let secs = support::seconds_arg(8.0);
    // Short multi-turn traces: 5 requests of 64 one-token chunks each.
    let row = serde_json::json!({
        "num_turns": 4,
        "input_prompt_length": 128,
        "assistant_response_length": [64, 64, 64, 64],
        "tool_call_output_length": [32, 32, 32, 32],
        "tool_call_latency": [0.0, 0.0, 0.0, 0.0],
        "final_assistant_response_length": 64,
    });
    let wl = workload("ceiling.jsonl", &vec![row; 64]);
    let wl = wl.to_str().unwrap();
    println!("machine: {}", machine());
    println!("run: {secs} s per point, sim: instant prefill and decode, 1 token per chunk");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>16} {:>10} {:>10}",
        "conc", "traces/s", "requests/s", "chunks/s", "trie CPU s/1k ch", "trie CPU", "sim CPU"
    );
    let sim = SimChild::instant(&[]);
    for conc in [1usize, 16, 256, 1024] {
        let (s, trie_cpu, sim_cpu) = measure(&sim.url, wl, conc, secs, &sim);
        let wall = s.wall_time_s;
        let chunks = s.curve.last().map(|p| p.completion).unwrap_or(0) as f64;
        println!(
            "{conc:>6} {:>10.1} {:>12.0} {:>12.0} {:>16.4} {:>9.0}% {:>9.0}%",
            s.completed_requests as f64 / wall,
            s.http_requests as f64 / wall,
            chunks / wall,
            1000.0 * trie_cpu / chunks.max(1.0),
            100.0 * trie_cpu / wall,
            100.0 * sim_cpu / wall,
        );
    }
    drop(sim);

    // Overhead at a paced 10k chunks/s, against the floor: rounds of trie,
    // the bare reader and the bare reader with JSON, interleaved so that
    // the machine's drift hits all three alike; medians compared.
    let sim = SimChild::instant(&["--decode-tps", "100"]);
    let paced = secs.max(10.0);
    let mut rounds: Vec<[f64; 3]> = Vec::new();
    for round in 1..=PACED_ROUNDS {
        let (s, trie_cpu, _) = measure(&sim.url, wl, 100, paced, &sim);
        let chunks = s.curve.last().map(|p| p.completion).unwrap_or(0) as f64;
        println!(
            "round {round}: trie, 100 slots x 100 tok/s: {:.0} chunks/s, {:.2} % of a core ({:.4} CPU s per 1k chunks)",
            chunks / s.wall_time_s,
            100.0 * trie_cpu / s.wall_time_s,
            1000.0 * trie_cpu / chunks.max(1.0)
        );
        let mut row = [1000.0 * trie_cpu / chunks.max(1.0), 0.0, 0.0];
        for (i, (parse, what)) in [
            (
                false,
                "floor (100 threads reading the same streams with std::net, nothing else)",
            ),
            (
                true,
                "floor + JSON (the same, parsing each chunk's JSON as trie does)",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let (chunks, cpu, wall) = raw_floor(&sim.url, 100, paced, parse);
            println!(
                "round {round}: {what}: {:.0} chunks/s, {:.2} % of a core ({:.4} CPU s per 1k chunks)",
                chunks / wall,
                100.0 * cpu / wall,
                1000.0 * cpu / chunks.max(1.0)
            );
            row[i + 1] = 1000.0 * cpu / chunks.max(1.0);
        }
        rounds.push(row);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let column = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let (t, f, j) = (column(0), column(1), column(2));
    let paired = median(rounds.iter().map(|r| r[0] / r[1]).collect());
    println!(
        "paced medians (CPU s per 1k chunks): trie {t:.4}, floor {f:.4}, floor + JSON {j:.4}; trie / floor = {:.2}x (median of the rounds' own ratios {paired:.2}x), trie / (floor + JSON) = {:.2}x (target <= 1.25x the floor)",
        t / f,
        t / j
    );
}

/// Rounds of the paced comparison.
const PACED_ROUNDS: usize = 5;

/// The cost of the architecture itself: `threads` blocking threads reading
/// SSE lines from plain `TcpStream`s (no HTTP library, no parsing, no
/// timestamps). Returns (chunks, CPU s, wall s).
fn raw_floor(url: &str, threads: usize, secs: f64, parse: bool) -> (f64, f64, f64) {
    let addr = support::host_port(url);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let chunks = std::sync::atomic::AtomicU64::new(0);
    let c0 = cpu_s();
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (addr, stop, chunks) = (&addr, &stop, &chunks);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"model":"trie-sim","prompt":"a b c {i} {n}","max_tokens":64,"ignore_eos":true,"stream":true}}"#
                    );
                    n += 1;
                    let at = support::raw_stream_with(addr, body.as_bytes(), parse);
                    chunks.fetch_add(at.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let wall = t0.elapsed().as_secs_f64();
    (chunks.into_inner() as f64, cpu_s() - c0, wall)
}

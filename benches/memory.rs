//! Memory: peak RSS of the harness (this process; the sim is a child) at
//! concurrency 48 on traces that grow to 128k tokens: a 16k-token prompt,
//! then 8 turns of 50 answer and 14k tool tokens (context at the final
//! request: 128,432 tokens).
//!
//! cargo bench --bench memory [-- SECONDS]
//!
//! Target: < 150 MB.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{SimChild, machine, peak_rss_mb, workload};
use trie::Config;

fn main() {
    let secs = support::seconds_arg(60.0);
    let row = serde_json::json!({
        "num_turns": 8,
        "input_prompt_length": 16_000,
        "assistant_response_length": vec![50; 8],
        "tool_call_output_length": vec![14_000; 8],
        "tool_call_latency": vec![0.0; 8],
        "final_assistant_response_length": 50,
    });
    let wl = workload("memory.jsonl", &vec![row; 48]);
    println!("machine: {}", machine());
    let before = peak_rss_mb();
    let sim = SimChild::instant(&["--kv-tokens", "20000000"]);
    let s = Config::new(wl.to_str().unwrap(), &sim.url)
        .unwrap()
        .concurrency(48)
        .duration(Duration::from_secs_f64(secs))
        .run()
        .expect("run");
    let longest = s
        .traces
        .iter()
        .map(|t| t.output_tokens_per_turn.len())
        .max()
        .unwrap_or(0);
    println!(
        "concurrency 48, {secs} s: {} traces completed ({} requests, {} cancelled at the deadline), {} requests per trace, prompt tokens sent {:.1} M, mismatches {}",
        s.completed_requests,
        s.http_requests,
        s.cancelled_traces,
        longest,
        s.curve.last().map(|p| p.prompt).unwrap_or(0) as f64 / 1e6,
        s.prompt_token_mismatches
    );
    println!(
        "peak RSS: {:.1} MB (before the run: {before:.1} MB)",
        peak_rss_mb()
    );
}

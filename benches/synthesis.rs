//! Prompt synthesis speed: tokens/s per core for segments of 1k, 8k, 32k and
//! 128k tokens, and the time from start to the first request's text for an
//! 8,192-template workload (load + validate the workload, load the tokenizer,
//! find its words, synthesize the first trace).
//!
//! cargo bench --bench synthesis [-- TOKENIZER_JSON]

use std::hint::black_box;
use std::time::Instant;

use trie::text::prompt::{Synth, segment_key};
use trie::text::tokenizer::Tokenizer;

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "data/tokenizer.json".into());
    let tok = Tokenizer::from_file(std::path::Path::new(&path)).expect("tokenizer");
    let synth = Synth::new(&tok).expect("words");
    println!("tokenizer {path}: {} words", synth.len());
    println!("{:>10} {:>14} {:>12}", "segment", "tokens/s", "ns/token");
    for n in [1_000usize, 8_000, 32_000, 128_000] {
        let total = 64_000_000usize;
        let reps = total / n;
        let mut out = String::with_capacity(n * 12);
        let start = Instant::now();
        for i in 0..reps {
            out.clear();
            synth.write(segment_key(1, i as u64, 0), n, &mut out);
            black_box(&out);
        }
        let secs = start.elapsed().as_secs_f64();
        let tps = (reps * n) as f64 / secs;
        println!("{n:>10} {tps:>14.0} {:>12.2}", 1e9 / tps);
    }
    // Exactness on the measured output (a benchmark that measured wrong text would be worthless).
    let check = synth.text(segment_key(1, 0, 0), 128_000);
    assert_eq!(tok.count(&check), 128_000);

    // Start to first request text, 8,192 templates shaped like office work.
    let dir = std::env::temp_dir().join(format!("trie-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wl = dir.join("w.jsonl");
    let turns = 35;
    let row = serde_json::json!({
        "num_turns": turns, "input_prompt_length": 8900,
        "assistant_response_length": vec![120; turns], "tool_call_output_length": vec![900; turns],
        "tool_call_latency": vec![0.5; turns], "final_assistant_response_length": 1200,
    })
    .to_string();
    std::fs::write(&wl, vec![row; 8192].join("\n")).unwrap();
    let start = Instant::now();
    let workload = trie::input::workload::load(&wl, &trie::stop::Stop::new()).unwrap();
    let tok = Tokenizer::from_file(std::path::Path::new(&path)).unwrap();
    let synth = Synth::new(&tok).unwrap();
    let segments = trie::exec::slot::synthesize(
        &synth,
        &trie::text::content::Content::Words,
        0,
        0,
        &workload.traces[0],
        1,
    );
    black_box(&segments);
    println!(
        "start to first request text, 8192 templates: {:.1} ms ({} templates, first trace {} segments)",
        start.elapsed().as_secs_f64() * 1e3,
        workload.traces.len(),
        segments.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

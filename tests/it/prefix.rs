//! Shared prefixes (`--shared-prefix`, `--prefix-groups`, `--prefix-zipf`)
//! against in-process sims: the same text in every trace of a group, cached
//! by the server after its first use, and accounted for.

use std::collections::BTreeMap;
use std::time::Duration;

use trie::exec::run::{Hooks, run};
use trie::sim::{Recorded, SimConfig};
use trie::text::tokenizer::Tokenizer;
use trie::{Api, Config};

use crate::util::{fast, fast_sim, row, temp_file, trie_run};

fn config(workload: &std::path::Path, url: &str) -> Config {
    Config::new(workload.to_str().unwrap(), url)
        .unwrap()
        .model("trie-sim")
        .tokenizer("data/tokenizer.json")
}

/// The first request of each trace the sim saw, by sequence number.
fn first_requests(rx: &crossbeam_channel::Receiver<Recorded>) -> BTreeMap<u64, Recorded> {
    let mut out = BTreeMap::new();
    for r in rx.try_iter() {
        let Some(seq) = r
            .routing_key
            .as_deref()
            .and_then(|k| k.strip_prefix("trace-"))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        out.entry(seq).or_insert(r);
    }
    out
}

fn prompt(r: &Recorded) -> String {
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    body["prompt"].as_str().unwrap().to_string()
}

const PREFIX: usize = 500;

#[test]
fn every_trace_starts_with_the_shared_prefix_and_hits_it_after_the_first() {
    let path = temp_file("w.jsonl", &row(100, &[10], &[30], 0.0, 5));
    let (sim, rx) = fast_sim(fast());
    let s = run(
        &config(&path, &sim.url())
            .concurrency(2)
            .shared_prefix(PREFIX as u32, 1, None)
            .duration(Duration::from_millis(800)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 6, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    let tok = Tokenizer::from_file(std::path::Path::new("data/tokenizer.json")).unwrap();
    let firsts = first_requests(&rx);
    let p0 = prompt(&firsts[&0]);
    let prefix: String = p0.split(' ').take(PREFIX + 1).collect::<Vec<_>>().join(" ");
    assert_eq!(tok.count(&prefix), PREFIX);
    for (seq, r) in &firsts {
        // The same prefix text, then the trace's own prompt: the prompt is
        // the workload's 100 tokens (BOS included) plus the prefix.
        assert!(prompt(r).starts_with(&prefix), "trace {seq}");
        assert_eq!(r.prompt_tokens, 100 + PREFIX, "trace {seq}");
        // After the first two (sent at once), the server had the prefix:
        // whole 16-token blocks of BOS + prefix.
        if *seq >= 2 {
            assert!(
                r.cached_tokens >= (PREFIX + 1) / 16 * 16,
                "trace {seq}: {} cached",
                r.cached_tokens
            );
        }
    }
    // Traces' own prompts differ.
    assert_ne!(prompt(&firsts[&0]), prompt(&firsts[&1]));
    assert_eq!(s.shared_prefix_tokens, Some(PREFIX as u64));
    // Whole blocks: 496 of BOS + 500 prefix tokens are cached.
    assert_eq!(s.prefix_cache_hit_rate_pct, Some(100.0 * 496.0 / 500.0));
    // The first request of a trace is eligible for the prefix: with it,
    // the eligible hit rate stays near 100 %.
    assert!(s.per_trace.eligible_cache_hit_rate_pct.unwrap().min > 95.0);
}

#[test]
fn prefix_groups_take_turns_and_stay_apart() {
    let path = temp_file("w.jsonl", &row(50, &[], &[], 0.0, 3));
    let (sim, rx) = fast_sim(fast());
    let s = run(
        &config(&path, &sim.url())
            .concurrency(1)
            .shared_prefix(PREFIX as u32, 3, None)
            .duration(Duration::from_millis(500)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 7, "{s:?}");
    let firsts = first_requests(&rx);
    let head = |seq: u64| prompt(&firsts[&seq])[..200].to_string();
    for seq in 0..4u64 {
        assert_eq!(head(seq), head(seq + 3), "group {}", seq % 3);
    }
    assert_ne!(head(0), head(1));
    assert_ne!(head(1), head(2));
    // The first trace of each group missed its prefix; every later one hit.
    for (seq, r) in &firsts {
        if *seq >= 3 {
            assert!(r.cached_tokens >= 496, "trace {seq}: {}", r.cached_tokens);
        } else {
            assert_eq!(r.cached_tokens, 0, "trace {seq}");
        }
    }
    // Workload accounting: new at a group's first use, cached after it.
    let first_use: u64 = s.curve.last().unwrap().prompt - s.curve.last().unwrap().cached;
    // 3 prefixes and every trace's 50 own tokens were new.
    assert_eq!(first_use, 3 * PREFIX as u64 + 50 * s.completed_requests);
}

#[test]
fn zipf_draws_favour_the_first_groups_in_chat_too() {
    let path = temp_file("w.jsonl", &row(30, &[4], &[8], 0.0, 3));
    let (sim, rx) = fast_sim(SimConfig {
        decode_tps: 0.0,
        ..fast()
    });
    let s = run(
        &config(&path, &sim.url())
            .api(Api::Chat)
            .concurrency(2)
            .shared_prefix(64, 8, Some(1.5))
            .duration(Duration::from_millis(700)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 50, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    // The prefix is the system message; count traces per distinct prefix.
    let mut per_prefix: BTreeMap<String, usize> = BTreeMap::new();
    for r in first_requests(&rx).values() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let m = &body["messages"];
        assert_eq!(m[0]["role"], "system");
        assert_eq!(m[1]["role"], "user");
        *per_prefix
            .entry(m[0]["content"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let mut counts: Vec<usize> = per_prefix.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    // Zipf 1.5 over 8 groups: the first takes about 44 %, the last 2 %.
    let total: usize = counts.iter().sum();
    assert!(counts.len() >= 4, "{counts:?}");
    assert!(counts[0] * 100 > total * 30, "{counts:?}");
    assert!(s.prefix_cache_hit_rate_pct.unwrap() > 90.0);
}

#[test]
fn prefix_flags_are_checked() {
    let wl = temp_file("w.jsonl", &row(100, &[], &[], 0.0, 10));
    let w = wl.to_str().unwrap();
    for (args, needle) in [
        (vec!["--prefix-groups", "4"], "pass --shared-prefix N too"),
        (vec!["--prefix-zipf", "1.1"], "pass --shared-prefix N too"),
        (
            vec!["--shared-prefix", "0"],
            "--shared-prefix must be at least 1",
        ),
        (vec!["--shared-prefix", "9999999999"], "too large"),
        (
            vec!["--shared-prefix", "10", "--prefix-groups", "0"],
            "--prefix-groups must be at least 1",
        ),
        (
            vec!["--shared-prefix", "10", "--prefix-zipf", "0"],
            "--prefix-zipf 0 is out of range",
        ),
    ] {
        let mut all = vec!["--workload", w, "--endpoint", "sim"];
        all.extend(args);
        let (code, _out, err) = trie_run(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
}

//! `trie sim` behaviour: streaming, usage, prefix cache, timing, faults, errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trie::sim::{Fault, Faults, SimConfig};
use trie::text::prompt::Synth;
use trie::text::tokenizer::Tokenizer;

use crate::util::{events, fast, fast_sim, get, post};

fn words(n: usize, key: u64) -> String {
    let tok = Tokenizer::from_bytes(trie::sim::BUNDLED_TOKENIZER, "bundled").unwrap();
    Synth::new(&tok).unwrap().text(key, n)
}

fn body(prompt: &str, max_tokens: usize, stream: bool) -> String {
    serde_json::json!({"model": "trie-sim", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": true,
        "stream": stream, "stream_options": {"include_usage": true}, "unknown_field": [1, 2]})
    .to_string()
}

#[test]
fn streams_max_tokens_chunks_and_a_usage_chunk() {
    let (sim, _rx) = fast_sim(fast());
    let prompt = words(100, 1);
    let (status, text) = post(
        &format!("{}/completions", sim.url()),
        &body(&prompt, 37, true),
    );
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let evs = events(&text);
    let choice_chunks: Vec<_> = evs
        .iter()
        .filter(|e| e["choices"].as_array().is_some_and(|c| !c.is_empty()))
        .collect();
    assert_eq!(choice_chunks.len(), 37);
    assert_eq!(choice_chunks[36]["choices"][0]["finish_reason"], "length");
    let usage = &evs.last().unwrap()["usage"];
    assert_eq!(evs.last().unwrap()["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["prompt_tokens"], 101); // 100 + BOS
    assert_eq!(usage["completion_tokens"], 37);
    assert_eq!(usage["total_tokens"], 138);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    // The generated text re-tokenizes to the reported count.
    let text: String = choice_chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    let tok = Tokenizer::from_bytes(trie::sim::BUNDLED_TOKENIZER, "bundled").unwrap();
    assert_eq!(tok.count(&text), 37);
    // Non-streaming: one body, same usage shape.
    let (status, text) = post(
        &format!("{}/completions", sim.url()),
        &body(&prompt, 5, false),
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(tok.count(v["choices"][0]["text"].as_str().unwrap()), 5);
}

#[test]
fn prefix_cache_hits_shared_prefix_and_forgets_after_eviction() {
    let (sim, _rx) = fast_sim(SimConfig {
        kv_tokens: 4096,
        ..fast()
    });
    let url = format!("{}/completions", sim.url());
    let prefix = words(2000, 7);
    let usage = |p: &str| -> serde_json::Value {
        let (_, text) = post(&url, &body(p, 4, false));
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["usage"].clone()
    };
    assert_eq!(
        usage(&format!("{prefix}{}", words(50, 8)))["prompt_tokens_details"]["cached_tokens"],
        0
    );
    let second = usage(&format!("{prefix}{}", words(50, 9)));
    let cached = second["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= 1800,
        "cached {cached} of a 2001-token shared prefix"
    );
    assert_eq!(cached % 16, 0, "whole blocks");
    // Two other long prompts push the prefix out of a 4096-token cache.
    usage(&words(3000, 10));
    usage(&words(3000, 11));
    assert_eq!(
        usage(&format!("{prefix}{}", words(50, 12)))["prompt_tokens_details"]["cached_tokens"],
        0
    );
}

#[test]
fn ttft_and_decode_respect_the_timing_model() {
    let _cpu = crate::util::cpu_exclusive();
    let (sim, _rx) = fast_sim(SimConfig {
        prefill_tps: 10_000.0,
        decode_tps: 100.0,
        ..SimConfig::default()
    });
    let url = format!("{}/completions", sim.url());
    let prompt = words(1999, 3); // 2000 tokens with BOS: 0.2 s of prefill
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    let resp = agent.post(&url).send(body(&prompt, 11, true)).unwrap();
    let mut reader = BufReader::new(resp.into_body().into_reader());
    let mut first = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if first.is_none() && line.contains("\"text\"") {
            first = Some(start.elapsed());
        }
        line.clear();
    }
    let total = start.elapsed();
    let ttft = first.unwrap();
    assert!(ttft >= Duration::from_millis(200), "ttft {ttft:?}");
    assert!(ttft < Duration::from_millis(400), "ttft {ttft:?}");
    // 10 more tokens at 100 tok/s, after 0.2 s of prefill (measured from
    // the start: a late first read would shorten the span after it).
    assert!(total >= Duration::from_millis(300), "total {total:?}");
    assert!(
        total - ttft >= Duration::from_millis(50),
        "decode {:?}",
        total - ttft
    );
    assert!(
        total - ttft < Duration::from_millis(300),
        "decode {:?}",
        total - ttft
    );
}

#[test]
fn queue_delays_requests_beyond_max_running() {
    let (sim, _rx) = fast_sim(SimConfig {
        max_running: 1,
        prefill_tps: 0.0,
        decode_tps: 50.0,
        ..SimConfig::default()
    });
    let url = format!("{}/completions", sim.url());
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            let b = body(&words(10, 40 + i), 10, false);
            std::thread::spawn(move || post(&url, &b))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0, 200);
    }
    // Each takes 9/50 s of decode; one had to wait for the other.
    assert!(
        start.elapsed() >= Duration::from_millis(360),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn past_the_batch_knee_every_sequence_slows_and_throughput_is_flat() {
    let _cpu = crate::util::cpu_exclusive();
    // decode 100 tok/s per sequence, knee 2: with 4 streams running, each
    // decodes at 100 × 2/4 = 50 tok/s, so 41 tokens (40 steps) take 0.8 s
    // instead of 0.4 s: the engine's throughput stays 200 tok/s.
    let took = |knee: Option<usize>, n: u64| -> Vec<f64> {
        let (sim, _rx) = fast_sim(SimConfig {
            prefill_tps: 0.0,
            decode_tps: 100.0,
            batch_knee: knee,
            ..SimConfig::default()
        });
        let url = format!("{}/completions", sim.url());
        let bodies: Vec<String> = (0..n).map(|i| body(&words(10, 60 + i), 41, true)).collect();
        let handles: Vec<_> = bodies
            .into_iter()
            .map(|b| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let (status, text) = post(&url, &b);
                    assert_eq!(status, 200);
                    assert!(text.contains("[DONE]"), "{text}");
                    start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    for t in took(None, 4) {
        assert!((0.38..0.6).contains(&t), "no knee, 4 running: {t} s");
    }
    for t in took(Some(2), 1) {
        assert!((0.38..0.6).contains(&t), "below the knee: {t} s");
    }
    // Every sequence slows, none keeps its full speed.
    for t in took(Some(2), 4) {
        assert!((0.7..1.0).contains(&t), "past the knee: {t} s");
    }
}

#[test]
fn fault_rates_hold_over_many_requests() {
    let f = Faults {
        status_rate: 0.1,
        status: 429,
        reset_rate: 0.05,
        malformed_rate: 0.05,
        stall_rate: 0.02,
        no_usage_rate: 0.2,
        ..Faults::default()
    };
    let n = 20_000u64;
    let mut counts = std::collections::HashMap::new();
    for i in 0..n {
        *counts.entry(f.pick(42, i)).or_insert(0u64) += 1;
    }
    for (fault, rate) in [
        (Fault::Status(429), 0.1),
        (Fault::Reset, 0.05),
        (Fault::Malformed, 0.05),
        (Fault::Stall, 0.02),
        (Fault::NoUsage, 0.2),
        (Fault::None, 0.58),
    ] {
        let got = counts.get(&fault).copied().unwrap_or(0) as f64 / n as f64;
        assert!((got - rate).abs() < 0.012, "{fault:?}: {got} vs {rate}");
    }
    // Deterministic by seed: same picks twice, different under another seed.
    assert!((0..100).all(|i| f.pick(42, i) == f.pick(42, i)));
    assert!((0..100).any(|i| f.pick(42, i) != f.pick(43, i)));
}

#[test]
fn each_fault_mode_shows_on_the_wire() {
    let url_of = |faults: Faults| {
        let (sim, rx) = fast_sim(SimConfig { faults, ..fast() });
        (format!("{}/completions", sim.url()), sim, rx)
    };
    let prompt = words(20, 5);
    let (url, _s, _r) = url_of(Faults {
        status_rate: 1.0,
        status: 503,
        ..Faults::default()
    });
    let (status, text) = post(&url, &body(&prompt, 8, true));
    assert_eq!(status, 503);
    assert!(text.contains("\"error\""));

    let (url, _s, _r) = url_of(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let (_, text) = post(&url, &body(&prompt, 8, true));
    assert!(
        !text.contains("[DONE]") && text.contains("<read error"),
        "{text}"
    );

    let (url, _s, _r) = url_of(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    });
    let (_, text) = post(&url, &body(&prompt, 8, true));
    assert!(
        events(&text).iter().any(|e| e.is_string()),
        "a chunk that is not JSON"
    );

    let (url, _s, _r) = url_of(Faults {
        no_usage_rate: 1.0,
        ..Faults::default()
    });
    let (_, text) = post(&url, &body(&prompt, 8, true));
    assert!(text.contains("[DONE]") && !text.contains("\"usage\""));

    let (url, _s, _r) = url_of(Faults {
        stall_rate: 1.0,
        stall: Duration::from_millis(400),
        ..Faults::default()
    });
    let t = Instant::now();
    let (_, text) = post(&url, &body(&prompt, 8, true));
    assert!(t.elapsed() >= Duration::from_millis(400) && text.contains("[DONE]"));
}

#[test]
fn malformed_body_gets_400_and_models_are_listed() {
    let (sim, _rx) = fast_sim(SimConfig {
        model: "my-model".into(),
        ..fast()
    });
    let url = format!("{}/completions", sim.url());
    let (status, text) = post(&url, "{not json");
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    assert_eq!(post(&url, r#"{"prompt": 5}"#).0, 400);
    assert_eq!(post(&url, r#"{"prompt": "x", "model": "other"}"#).0, 404);
    let (status, text) = get(&format!("{}/models", sim.url()));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "my-model");
    assert_eq!(get(&format!("http://{}/health", sim.addr())).0, 200);
}

#[test]
fn binary_prints_its_url_first_within_a_second() {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trie"))
        .args(["sim", "--port", "0", "--tokenizer", "data/tokenizer.json"])
        .env("GLIBC_TUNABLES", "glibc.malloc.check=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = start.elapsed();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );
    assert_eq!(get(&format!("{url}/models")).0, 200);
    // It started itself again (same pid) without glibc's per-thread cache,
    // keeping the user's tunables and a note of them to put back.
    let env = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let env: Vec<String> = env
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    // (glibc may split the tunables' string in place as it reads it.)
    let tunables = env.join(":");
    assert!(
        tunables.contains("GLIBC_TUNABLES=glibc.malloc.check=0:glibc.malloc.tcache_count=0"),
        "{env:?}"
    );
    assert!(
        env.iter()
            .any(|v| v == "TRIE_USER_GLIBC_TUNABLES=+glibc.malloc.check=0")
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready < Duration::from_secs(1), "ready after {ready:?}");
}

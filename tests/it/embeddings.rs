//! `--api embeddings` against in-process sims: one request per trace of
//! `--embed-batch` inputs, each exactly `--embed-tokens` tokens as the
//! server counts them, in closed and open loop and in sweeps.

use std::time::Duration;

use trie::exec::run::{Hooks, run};
use trie::{Api, Arrival, Config};

use crate::util::{fast, fast_sim, row, temp_file, trie_run};

fn config(workload: &std::path::Path, url: &str) -> Config {
    Config::new(workload.to_str().unwrap(), url)
        .unwrap()
        .model("trie-sim")
        .tokenizer("data/tokenizer.json")
        .api(Api::Embeddings)
}

#[test]
fn every_request_carries_the_batch_of_inputs_of_the_length_asked_for() {
    let wl = temp_file("w.jsonl", &row(300, &[5], &[7], 0.0, 9));
    let (sim, rx) = fast_sim(fast());
    let s = run(
        &config(&wl, &sim.url())
            .embed(Some(120), 4)
            .concurrency(2)
            .duration(Duration::from_millis(600)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.http_requests >= 10, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    let tok =
        trie::text::tokenizer::Tokenizer::from_file(std::path::Path::new("data/tokenizer.json"))
            .unwrap();
    let mut seen = 0;
    for r in rx.try_iter() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let inputs = body["input"].as_array().unwrap();
        let probe = r.routing_key.as_deref() == Some(trie::exec::preflight::PROBE_ROUTING_KEY);
        if probe {
            continue;
        }
        assert_eq!(inputs.len(), 4);
        // 119 tokens of text each, and the sim's BOS: 120 as it counts.
        for i in inputs {
            assert_eq!(tok.count(i.as_str().unwrap()), 119);
        }
        assert_eq!(r.prompt_tokens, 4 * 120);
        assert!(body.get("stream").is_none() && body.get("max_tokens").is_none());
        seen += 1;
    }
    assert!(seen >= 10);
    // The figures: requests, inputs and input tokens per second agree.
    let rps = s.embed_requests_per_s.unwrap();
    assert!((s.embed_inputs_per_s.unwrap() - 4.0 * rps).abs() < 1e-9);
    assert!((s.embed_input_tokens_per_s.unwrap() - 480.0 * rps).abs() < 1e-6);
    assert!((rps - s.http_requests as f64 / s.wall_time_s).abs() < 1e-9);
    assert!(s.per_request.latency_s.is_some());
    assert!(s.per_request.ttft_s.is_none(), "not streamed: no TTFT");
    // A trace is one request: its workload is the inputs, nothing generated.
    let last = s.curve.last().unwrap();
    assert_eq!(last.completion, 0);
    assert_eq!(last.prompt, 480 * s.http_requests);
}

#[test]
fn embeddings_run_open_loop_and_in_sweeps() {
    let wl = temp_file("w.jsonl", &row(64, &[], &[], 0.0, 1));
    let (sim, _rx) = fast_sim(fast());
    let s = run(
        &config(&wl, &sim.url())
            .arrival_rate(40.0, Arrival::Constant, 64)
            .duration(Duration::from_millis(500)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.http_requests >= 15, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    // The input prompt length (64) is each input's length by default.
    assert!(
        (s.embed_input_tokens_per_s.unwrap() / s.embed_requests_per_s.unwrap() - 64.0).abs() < 1e-9
    );

    let out = wl.with_file_name("sweep.json");
    let cfg = config(&wl, &sim.url())
        .embed(None, 2)
        .concurrencies(&[1, 2])
        .duration(Duration::from_millis(300))
        .output(&out);
    trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        let figures = &r["results"]["figures"];
        assert!(
            figures["embed_requests_per_s"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        assert_eq!(figures["prompt_token_mismatches"], 0.0);
    }
}

#[test]
fn embeddings_flags_are_checked() {
    let wl = temp_file("w.jsonl", &row(100, &[], &[], 0.0, 10));
    let w = wl.to_str().unwrap();
    for (args, needle) in [
        (vec!["--embed-batch", "4"], "pass --api embeddings"),
        (vec!["--embed-tokens", "64"], "pass --api embeddings"),
        (
            vec!["--api", "embeddings", "--embed-batch", "0"],
            "--embed-batch must be at least 1",
        ),
        (
            vec!["--api", "embeddings", "--embed-batch", "5000"],
            "too large",
        ),
        (
            vec!["--api", "embeddings", "--shared-prefix", "10"],
            "embeddings inputs have none",
        ),
        (
            vec![
                "--api",
                "embeddings",
                "--embed-tokens",
                "2000000",
                "--embed-batch",
                "4096",
            ],
            "tokens per request, too many",
        ),
    ] {
        let mut all = vec!["--workload", w, "--endpoint", "sim"];
        all.extend(args);
        let (code, _out, err) = trie_run(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
}

//! `--api chat` against in-process sims: messages on the wire, prompts
//! counted exactly through the chat template, reasoning deltas, the role
//! chunk, calibration when trie cannot render as the server does.

use std::collections::BTreeMap;
use std::time::Duration;

use trie::exec::run::{Hooks, run};
use trie::sim::{Recorded, SimConfig};
use trie::text::tokenizer::Tokenizer;
use trie::{Api, Config};

use crate::util::{fast, fast_sim, row, temp_file, trie_run};

fn chat_config(workload: &std::path::Path, url: &str) -> Config {
    Config::new(workload.to_str().unwrap(), url)
        .unwrap()
        .model("trie-sim")
        .tokenizer("data/tokenizer.json")
        .api(Api::Chat)
}

/// Requests the sim recorded, without the preflight's, by trace.
fn by_trace(rx: &crossbeam_channel::Receiver<Recorded>) -> BTreeMap<String, Vec<Recorded>> {
    let mut out: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    for r in rx.try_iter() {
        let key = r.routing_key.clone().unwrap_or_default();
        if key != trie::exec::preflight::PROBE_ROUTING_KEY {
            out.entry(key).or_default().push(r);
        }
    }
    out
}

fn messages(r: &Recorded) -> Vec<(String, String)> {
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn bundled() -> Tokenizer {
    Tokenizer::from_bytes(trie::sim::BUNDLED_TOKENIZER, "bundled").unwrap()
}

#[test]
fn chat_requests_carry_the_conversation_and_are_counted_exactly() {
    let wl = [
        row(300, &[20, 35, 7], &[100, 0, 250], 0.0, 40),
        row(2, &[5], &[3], 0.0, 6),
        row(1500, &[], &[], 0.0, 12),
    ]
    .join("\n");
    let path = temp_file("w.jsonl", &wl);
    let (sim, rx) = fast_sim(fast());
    let s = run(
        &chat_config(&path, &sim.url())
            .concurrency(3)
            .duration(Duration::from_secs(2)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 3, "{s:?}");
    assert!(s.http_requests >= 7);
    // Every prompt the server counted is the one trie counted.
    assert_eq!(s.prompt_token_mismatches, 0, "{s:?}");
    // The template's tokens are reported: ChatML's headers in the bundled
    // 8k tokenizer, for every message and the assistant's header.
    let per_request = s.template_tokens_per_request.unwrap();
    assert!(per_request > 10.0 && per_request < 200.0, "{per_request}");
    assert!(s.template_tokens_total.unwrap() > 0);
    assert!(
        s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean > 90.0,
        "{:?}",
        s.per_trace.eligible_cache_hit_rate_pct
    );

    let tok = bundled();
    let traces = trie::input::workload::load(&path, &trie::stop::Stop::new())
        .unwrap()
        .traces;
    let mut checked = 0;
    for (key, reqs) in by_trace(&rx) {
        let seq: usize = key.strip_prefix("trace-").unwrap().parse().unwrap();
        let t = &traces[seq % traces.len()];
        for (i, r) in reqs.iter().enumerate() {
            let m = messages(r);
            // user, then (assistant, user) per turn before this request.
            assert_eq!(m.len(), 1 + 2 * i, "{key} request {i}");
            for (j, (role, content)) in m.iter().enumerate() {
                let want = if j % 2 == 0 { "user" } else { "assistant" };
                assert_eq!(role, want, "{key} request {i} message {j}");
                // Segments are exact content tokens: the first prompt has
                // all of input_prompt_length (no BOS taken off in chat),
                // each tool output its length.
                if j == 0 {
                    assert_eq!(tok.count(content), t.input_prompt_length as usize);
                } else if j % 2 == 0 {
                    let n = t.tool_call_output_length[j / 2 - 1] as usize;
                    assert_eq!(tok.count(content), n, "{key} request {i} message {j}");
                }
            }
            // The previous answer goes back as the server sent it.
            if i > 0 {
                let before = messages(&reqs[i - 1]);
                assert_eq!(&m[..before.len()], &before[..]);
                assert_eq!(
                    tok.count(&m[before.len()].1),
                    t.assistant_response_length[i - 1] as usize
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 7);
}

#[test]
fn reasoning_deltas_are_tokens_and_stay_out_of_the_context() {
    let path = temp_file("w.jsonl", &row(200, &[30], &[50], 0.0, 20));
    let (sim, rx) = fast_sim(SimConfig {
        reasoning_tokens: 8,
        decode_tps: 1000.0,
        ..fast()
    });
    let s = run(
        &chat_config(&path, &sim.url()).duration(Duration::from_millis(800)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 1, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    let t = &s.traces[0];
    // Reasoning and answer tokens alike: 30 and 20 generated tokens, one
    // millisecond apart.
    assert_eq!(t.output_tokens_per_turn, vec![30, 20]);
    let itl = t.itl_ms.unwrap();
    assert!((0.8..1.6).contains(&itl), "{itl}");
    // The reply that went back holds the 22 answer tokens only.
    let reqs = &by_trace(&rx)["trace-0"];
    let m = messages(&reqs[1]);
    assert_eq!(m[1].0, "assistant");
    assert_eq!(bundled().count(&m[1].1), 30 - 8);
}

#[test]
fn the_role_chunk_is_not_the_first_token() {
    // 4,000 prompt tokens at 20k tok/s: the first token comes after 0.2 s;
    // the role-only chunk at once.
    let path = temp_file("w.jsonl", &row(4000, &[], &[], 0.0, 5));
    let (sim, _rx) = fast_sim(SimConfig {
        prefill_tps: 20_000.0,
        ..fast()
    });
    let s = run(
        &chat_config(&path, &sim.url()).duration(Duration::from_millis(400)),
        &Hooks::default(),
    )
    .unwrap();
    let ttft = s.traces[0].ttft_s.unwrap();
    assert!(ttft >= 0.19, "TTFT {ttft} counted the role chunk");
}

#[test]
fn without_a_template_trie_calibrates_from_the_server_and_says_so() {
    // A tokenizer with no chat template beside it; the sim renders ChatML.
    let dir = temp_file("tokenizer.json", "")
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::copy("data/tokenizer.json", dir.join("tokenizer.json")).unwrap();
    let wl = temp_file("w.jsonl", &row(300, &[20, 35], &[100, 40], 0.0, 30));
    let out = dir.join("r.json");
    let (code, _out, err) = trie_run(&[
        "--workload",
        wl.to_str().unwrap(),
        "--endpoint",
        "sim",
        "--api",
        "chat",
        "--tokenizer",
        dir.join("tokenizer.json").to_str().unwrap(),
        "--duration",
        "1",
        "--output",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no chat template was found"), "{err}");
    assert!(
        err.contains("counted from the server's own counts"),
        "{err}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["config"]["api"], "chat");
    assert!(
        doc["config"]["chat_counting"]
            .as_str()
            .unwrap()
            .starts_with("calibrated"),
        "{}",
        doc["config"]["chat_counting"]
    );
    // ChatML's tokens around a message do not depend on its words: the
    // calibration is exact here.
    assert_eq!(doc["summary"]["prompt_token_mismatches"], 0);
    assert!(doc["summary"]["http_requests"].as_u64().unwrap() >= 3);
}

#[test]
fn a_template_the_server_does_not_use_is_caught_by_the_preflight() {
    // trie is told of a template with other headers than the sim's.
    let other = temp_file(
        "other.jinja",
        "{% for m in messages %}### {{ m.role }}:\n{{ m.content }}\n\n{% endfor %}{% if add_generation_prompt %}### assistant:\n{% endif %}",
    );
    let wl = temp_file("w.jsonl", &row(100, &[10], &[10], 0.0, 10));
    let (code, _out, err) = trie_run(&[
        "--workload",
        wl.to_str().unwrap(),
        "--endpoint",
        "sim",
        "--api",
        "chat",
        "--chat-template",
        other.to_str().unwrap(),
        "--duration",
        "1",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the server renders differently"), "{err}");
    assert!(err.contains("other.jinja"), "{err}");
}

#[test]
fn chat_flags_are_checked_before_anything_is_sent() {
    let wl = temp_file("w.jsonl", &row(100, &[], &[], 0.0, 10));
    let w = wl.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--api", "embeddingz"],
            "--api: 'embeddingz' is not an API",
        ),
        (
            vec!["--chat-template-kwargs", "{\"enable_thinking\":false}"],
            "pass --api chat",
        ),
        (
            vec!["--api", "chat", "--chat-template-kwargs", "[1]"],
            "is not a JSON object",
        ),
        (vec!["--chat-template-kwargs", "{}"], "pass --api chat"),
        (
            vec!["--api", "chat", "--chat-template-kwargs", "{\"a\":"],
            "is not valid JSON",
        ),
        (
            vec!["--api", "chat", "--chat-template", "/nonexistent/t.jinja"],
            "cannot read it",
        ),
        (
            vec!["--api", "chat", "--chat-template", "/dev/zero"],
            "not a regular file",
        ),
    ] {
        let mut all = vec!["--workload", w, "--endpoint", "sim"];
        all.extend(args);
        let (code, _out, err) = trie_run(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
    }
    // A template that does not compile.
    let bad = temp_file("bad.jinja", "{% for m in messages %}");
    let (code, _out, err) = trie_run(&[
        "--workload",
        w,
        "--endpoint",
        "sim",
        "--api",
        "chat",
        "--chat-template",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be compiled"), "{err}");
    // One that cannot render the run's conversation (here: no system
    // role, with a shared prefix): refused before anything is sent, even
    // when the endpoint is a URL nothing listens on.
    let nosys = temp_file(
        "nosys.jinja",
        "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}",
    );
    let (code, _out, err) = trie_run(&[
        "--workload",
        w,
        "--endpoint",
        "http://127.0.0.1:9",
        "--model",
        "m",
        "--tokenizer",
        "data/tokenizer.json",
        "--api",
        "chat",
        "--shared-prefix",
        "10",
        "--chat-template",
        nosys.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("System role not supported"), "{err}");
    assert!(err.contains("a system and a user message"), "{err}");
}

#[test]
fn chat_template_kwargs_reach_the_server_and_trie_s_rendering() {
    // A template that renders a variable: trie and the sim must agree on it.
    let tpl = temp_file(
        "kw.jinja",
        "{% if enable_thinking %}<think on>{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    );
    let wl = temp_file("w.jsonl", &row(100, &[10], &[10], 0.0, 10));
    let (sim, rx) = fast_sim(SimConfig {
        chat_template: Some(tpl.clone()),
        ..fast()
    });
    let mut cfg = chat_config(&wl, &sim.url())
        .chat_template(&tpl)
        .duration(Duration::from_millis(600));
    cfg.chat
        .kwargs
        .insert("enable_thinking".into(), serde_json::Value::Bool(true));
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert!(s.completed_requests >= 1, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    let reqs = by_trace(&rx);
    let body: serde_json::Value = serde_json::from_slice(&reqs["trace-0"][0].body).unwrap();
    assert_eq!(body["chat_template_kwargs"]["enable_thinking"], true);
    // Without the variable, the rendering (and so the server's count) has
    // the <think on> tokens fewer, and trie counts that too.
    let with = reqs["trace-0"][0].prompt_tokens;
    let mut cfg = chat_config(&wl, &sim.url())
        .chat_template(&tpl)
        .duration(Duration::from_millis(600));
    cfg.seed = 0;
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert_eq!(s.prompt_token_mismatches, 0);
    let without = by_trace(&rx)["trace-0"][0].prompt_tokens;
    assert_eq!(with - without, bundled().count("<think on>"));
}

#[test]
fn calibration_is_not_skewed_by_the_probes_added_token() {
    // DeepSeek-V4's tokenizer has non-special added tokens; a server that
    // reads them as plain text counts the probe's one added token as
    // several. Calibrated on the probes as they were, every turn drifted
    // by that difference.
    let Ok(json) = std::fs::read_to_string("../shared/real-server/deepseek-v4/tokenizer.json")
    else {
        eprintln!("skipped: no DeepSeek-V4 tokenizer in ../shared/real-server");
        return;
    };
    let dir = temp_file("tokenizer.json", &json)
        .parent()
        .unwrap()
        .to_path_buf();
    // The server's tokenizer: the same without the non-special added tokens.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["added_tokens"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["special"].as_bool().unwrap_or(true));
    let server_tok = dir.join("server-tokenizer.json");
    std::fs::write(&server_tok, v.to_string()).unwrap();
    let wl = temp_file(
        "w.jsonl",
        &row(200, &[10, 10, 10, 10], &[30, 30, 30, 30], 0.0, 10),
    );
    let (sim, _rx) = fast_sim(SimConfig {
        tokenizer: Some(server_tok),
        ..fast()
    });
    let s = run(
        &Config::new(wl.to_str().unwrap(), &sim.url())
            .unwrap()
            .model("trie-sim")
            .tokenizer(dir.join("tokenizer.json").to_str().unwrap())
            .api(Api::Chat)
            .duration(Duration::from_millis(700)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.http_requests >= 5, "{} requests", s.http_requests);
    // No template beside this tokenizer: calibrated, and exact here
    // (ChatML's markers cost the same around any words).
    assert_eq!(
        s.prompt_token_mismatches, 0,
        "of {} requests",
        s.http_requests
    );
}

//! trie against a real engine: llama.cpp's `llama-server` from
//! `../shared/real-server` (built once per machine by its script; `.ci/run`
//! builds it and sets `TRIE_REQUIRE_REAL_SERVER=1`, so in CI this test runs
//! every time). Without the build and without that variable it is skipped with
//! a message, so `cargo test` works on a machine without the kit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use trie::Config;
use trie::text::content::TextMode;

use crate::util::temp_file;

/// The kit directory (`TRIE_REAL_SERVER_KIT`, default `../shared/real-server`).
fn kit() -> PathBuf {
    std::env::var_os("TRIE_REAL_SERVER_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/real-server"))
}

/// The built server, as `build-llama-server.sh` leaves it.
fn built_server() -> PathBuf {
    let home = std::env::var_os("TRIE_REAL_SERVER_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/trie-real-server")
        });
    home.join("bin/llama-server")
}

/// A running llama-server, killed on drop.
struct Server {
    pid: String,
    url: String,
}

impl Server {
    fn start(slots: u32, model: &str) -> Option<Server> {
        Server::start_with(slots, model, &[])
    }

    /// Started with extra llama-server flags.
    fn start_with(slots: u32, model: &str, flags: &[&str]) -> Option<Server> {
        let required = std::env::var_os("TRIE_REQUIRE_REAL_SERVER").is_some();
        let start = kit().join("start.sh");
        if !start.exists() || !built_server().exists() {
            assert!(
                !required,
                "TRIE_REQUIRE_REAL_SERVER is set but {} or {} is missing",
                start.display(),
                built_server().display()
            );
            eprintln!(
                "skipped: no llama-server build at {} (run {}/build-llama-server.sh)",
                built_server().display(),
                kit().display()
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::process::Command::new("bash")
            .arg(&start)
            .args([&port.to_string(), &slots.to_string(), model])
            .args(flags)
            .output()
            .expect("start.sh runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (pid, url) = text
            .trim()
            .split_once(' ')
            .expect("start.sh prints PID URL");
        Some(Server {
            pid: pid.to_string(),
            url: url.to_string(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(&self.pid).status();
    }
}

/// Multi-turn traces small enough for a CPU engine: prompts of 300-2,000
/// tokens, 2-5 turns of 10-30 answer and 50-400 tool tokens.
fn workload() -> PathBuf {
    let mut rng = trie::text::prompt::Rng::new(5);
    let mut between = |lo: u64, hi: u64| lo + rng.below((hi - lo + 1) as usize) as u64;
    let rows: Vec<String> = (0..8)
        .map(|_| {
            let n = between(2, 5) as usize;
            serde_json::json!({
                "num_turns": n,
                "input_prompt_length": between(300, 2000),
                "assistant_response_length": (0..n).map(|_| between(10, 30)).collect::<Vec<_>>(),
                "tool_call_output_length": (0..n).map(|_| between(50, 400)).collect::<Vec<_>>(),
                "tool_call_latency": vec![0.02; n],
                "final_assistant_response_length": between(20, 40),
            })
            .to_string()
        })
        .collect();
    temp_file("real.jsonl", &rows.join("\n"))
}

fn ok_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["status"] == "ok")
        .collect()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

#[test]
fn llama_server_counts_every_prompt_as_trie_meant_and_caches_later_turns() {
    let _cpu = crate::util::cpu_exclusive();
    let Some(server) = Server::start(4, "tiny") else {
        return;
    };
    let events = workload().with_file_name("events.jsonl");
    let s = Config::new(workload().to_str().unwrap(), &server.url)
        .unwrap()
        .tokenizer(kit().join("tiny/tokenizer.json").to_str().unwrap())
        .concurrency(4)
        .duration(Duration::from_secs(12))
        .events(&events)
        .run()
        .unwrap();
    assert!(
        s.completed_requests >= 8,
        "{} traces completed",
        s.completed_requests
    );
    assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
    assert_eq!(s.requests_without_usage, 0);
    assert_eq!(s.requests_without_cached_tokens, 0);
    assert_eq!(s.short_completions, 0, "llama-server honours ignore_eos");

    let ok = ok_events(&events);
    assert_eq!(ok.len() as u64, s.http_requests);
    // Every prompt is exactly what trie meant to send.
    for e in &ok {
        assert_eq!(e["prompt_tokens"], e["expected_prompt_tokens"], "{e}");
    }
    assert_eq!(s.prompt_token_mismatches, 0);
    // Later turns hit the cache.
    let later: Vec<&Value> = ok.iter().filter(|e| u(&e["turn"]) > 0).collect();
    assert!(later.len() >= 20);
    let hits = later.iter().filter(|e| u(&e["cached_tokens"]) > 0).count();
    assert!(
        hits * 10 >= later.len() * 9,
        "{hits} of {} later turns hit",
        later.len()
    );
    assert!(
        s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean >= 90.0,
        "eligible cache hit rate {:.1} %",
        s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean
    );

    // The server's own timings agree with what trie measured and counted.
    let (mut client_decode_ms, mut server_decode_ms) = (0.0, 0.0);
    let (mut server_prompt, mut server_completion) = (0, 0);
    for e in &ok {
        let t = &e["server_timings"];
        assert!(t.is_object(), "llama-server sends timings: {e}");
        assert_eq!(u(&t["prompt_n"]) + u(&t["cache_n"]), u(&e["prompt_tokens"]));
        assert_eq!(u(&t["cache_n"]), u(&e["cached_tokens"]));
        assert_eq!(u(&t["predicted_n"]), u(&e["completion_tokens"]));
        server_prompt += u(&e["prompt_tokens"]);
        server_completion += u(&t["predicted_n"]);
        let ttft_ms = (u(&e["first_chunk_us"]) - u(&e["start_us"])) as f64 / 1000.0;
        let prompt_ms = t["prompt_ms"].as_f64().unwrap();
        // The first token cannot arrive before the server finished the prompt.
        assert!(
            ttft_ms >= prompt_ms,
            "TTFT {ttft_ms} ms < server prompt {prompt_ms} ms"
        );
        let n = u(&t["predicted_n"]) as f64;
        if n > 1.0 {
            client_decode_ms += (u(&e["end_us"]) - u(&e["first_chunk_us"])) as f64 / 1000.0;
            // The server's decode time covers n tokens; trie's interval, n - 1.
            server_decode_ms += t["predicted_ms"].as_f64().unwrap() * (n - 1.0) / n;
        }
    }
    let ratio = client_decode_ms / server_decode_ms;
    eprintln!(
        "llama-server tiny: {} requests, {} mismatches, {hits} of {} later turns cached, eligible cache hit rate {:.1} %, decode time trie/server {ratio:.3}",
        ok.len(),
        s.prompt_token_mismatches,
        later.len(),
        s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean
    );
    assert!(
        (0.8..1.25).contains(&ratio),
        "decode time: trie / server = {ratio:.3}"
    );
    // Per-token figures: trie's TPOT and ITL against the server's ms per token.
    let server_tpot = server_decode_ms / (server_completion as f64 - ok.len() as f64);
    for (what, x) in [
        ("TPOT", s.per_trace.decode_tpot_ms.unwrap().mean),
        ("ITL", s.per_trace.itl_ms.unwrap().mean),
    ] {
        let r = x / server_tpot;
        eprintln!("{what}: trie {x:.2} ms, server {server_tpot:.2} ms per token ({r:.3})");
        assert!(
            (0.75..1.35).contains(&r),
            "{what} {x:.2} ms vs server {server_tpot:.2} ms"
        );
    }
    // The token curve (workload accounting, SPEC §5) ends where the server's
    // counts do: completions exactly; prompts within 1 %, because a real
    // reply re-tokenized inside its context is not always exactly its
    // template's length (trie counts that exactly per request, see above;
    // the template accounting does not).
    let last = s.curve.last().unwrap();
    assert_eq!(last.completion, server_completion);
    let drift = (last.prompt as f64 - server_prompt as f64).abs() / server_prompt as f64;
    eprintln!(
        "curve prompt tokens {} vs server {server_prompt}: {:.2} %",
        last.prompt,
        100.0 * drift
    );
    assert!(
        drift < 0.01,
        "curve {} vs server {server_prompt} prompt tokens",
        last.prompt
    );
}

#[test]
fn llama_server_with_the_deepseek_v4_tokenizer_gets_exact_prompts() {
    // A random-weight model over DeepSeek-V4's vocabulary emits added-token
    // text such as `<｜Assistant｜>`; llama.cpp reads it back as plain text,
    // Hugging Face tokenizers as one token. The preflight finds out which, so
    // every later prompt is still counted exactly.
    let _cpu = crate::util::cpu_exclusive();
    let Some(server) = Server::start(2, "deepseek-v4") else {
        return;
    };
    let out = workload().with_file_name("deepseek.json");
    let s = Config::new(workload().to_str().unwrap(), &server.url)
        .unwrap()
        .tokenizer(kit().join("deepseek-v4/tokenizer.json").to_str().unwrap())
        .concurrency(2)
        .duration(Duration::from_secs(10))
        .output(&out)
        .run()
        .unwrap();
    let doc = trie::output::results::Results::read(&out).unwrap();
    assert!(
        doc.config.added_tokens_as_text,
        "the preflight saw how llama.cpp reads them"
    );
    eprintln!(
        "llama-server deepseek-v4: {} requests, {} mismatches",
        s.http_requests, s.prompt_token_mismatches
    );
    assert!(s.http_requests >= 30, "{} requests", s.http_requests);
    assert_eq!(s.prompt_token_mismatches, 0);
    assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
}

#[test]
fn llama_server_chat_prompts_are_counted_exactly_through_both_kit_templates() {
    // --api chat on both kit models: Qwen3's template over the tiny
    // vocabulary, and DeepSeek-V4's real template and tokenizer, which
    // llama.cpp renders with thinking variables of its own (the preflight
    // finds them) and whose added-token text it reads as plain text.
    let _cpu = crate::util::cpu_exclusive();
    for (model, slots) in [("tiny", 4), ("deepseek-v4", 2)] {
        let Some(server) = Server::start(slots, model) else {
            return;
        };
        let out = workload().with_file_name(format!("chat-{model}.json"));
        let s = Config::new(workload().to_str().unwrap(), &server.url)
            .unwrap()
            .tokenizer(kit().join(model).join("tokenizer.json").to_str().unwrap())
            .api(trie::Api::Chat)
            .concurrency(slots as usize)
            .duration(Duration::from_secs(10))
            .output(&out)
            .run()
            .unwrap();
        let doc = trie::output::results::Results::read(&out).unwrap();
        let counting = doc.config.chat_counting.clone().unwrap_or_default();
        eprintln!(
            "llama-server {model} chat: {} requests, {} mismatches, eligible cache hit {:.1} %, {:.1} template tokens per request; {counting}",
            s.http_requests,
            s.prompt_token_mismatches,
            s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean,
            s.template_tokens_per_request.unwrap()
        );
        assert!(counting.starts_with("exact"), "{counting}");
        assert!(s.http_requests >= 30, "{} requests", s.http_requests);
        assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
        assert_eq!(s.requests_without_usage, 0);
        assert_eq!(s.prompt_token_mismatches, 0);
        assert!(s.template_tokens_per_request.unwrap() > 0.0);
        assert!(
            s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean >= 90.0,
            "eligible cache hit rate {:.1} %",
            s.per_trace.eligible_cache_hit_rate_pct.unwrap().mean
        );
    }
}

#[test]
fn llama_server_caches_the_shared_prefix_across_traces_in_both_apis() {
    let _cpu = crate::util::cpu_exclusive();
    let Some(server) = Server::start(2, "tiny") else {
        return;
    };
    for api in [trie::Api::Completions, trie::Api::Chat] {
        let out = workload().with_file_name(format!("prefix-{}.json", api.name()));
        let s = Config::new(workload().to_str().unwrap(), &server.url)
            .unwrap()
            .tokenizer(kit().join("tiny/tokenizer.json").to_str().unwrap())
            .api(api)
            .shared_prefix(800, 1, None)
            .concurrency(2)
            .duration(Duration::from_secs(6))
            .output(&out)
            .run()
            .unwrap();
        let doc = trie::output::results::Results::read(&out).unwrap();
        let records = doc.records.unwrap();
        let firsts: Vec<_> = records.requests.iter().filter(|r| r.turn == 0).collect();
        // Every trace's first request after the first two (sent together)
        // found at least the prefix in llama.cpp's cache.
        let later: Vec<_> = firsts.iter().filter(|r| r.seq >= 2).collect();
        assert!(later.len() >= 10, "{} traces", later.len());
        for r in &later {
            assert!(
                r.cached_tokens() >= 800,
                "{}: trace {} cached {}",
                api.name(),
                r.seq,
                r.cached_tokens()
            );
        }
        eprintln!(
            "llama-server tiny {} with an 800-token shared prefix: {} traces, prefix hit rate {:?} %, {} mismatches",
            api.name(),
            firsts.len(),
            s.prefix_cache_hit_rate_pct,
            s.prompt_token_mismatches
        );
        assert_eq!(s.prefix_cache_hit_rate_pct, Some(100.0));
        assert_eq!(s.prompt_token_mismatches, 0);
        assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
    }
}

#[test]
fn llama_server_embeds_batches_counted_exactly() {
    // start.sh passes extra flags through: embeddings need a pooling type
    // (the tiny model has none of its own).
    let _cpu = crate::util::cpu_exclusive();
    let Some(server) = Server::start_with(2, "tiny", &["--embeddings", "--pooling", "mean"]) else {
        return;
    };
    let s = Config::new(workload().to_str().unwrap(), &server.url)
        .unwrap()
        .tokenizer(kit().join("tiny/tokenizer.json").to_str().unwrap())
        .api(trie::Api::Embeddings)
        // llama.cpp embeds an input within one physical batch (512).
        .embed(Some(256), 4)
        .concurrency(2)
        .duration(Duration::from_secs(4))
        .run()
        .unwrap();
    eprintln!(
        "llama-server tiny embeddings: {} requests of 4 x 256 tokens, {:.1} requests/s, {:.0} input tokens/s, latency p50 {:.3} s, {} mismatches",
        s.http_requests,
        s.embed_requests_per_s.unwrap(),
        s.embed_input_tokens_per_s.unwrap(),
        s.per_request.latency_s.unwrap().p50,
        s.prompt_token_mismatches
    );
    assert!(s.http_requests >= 5, "{} requests", s.http_requests);
    assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
    assert_eq!(s.requests_without_usage, 0);
    assert_eq!(s.prompt_token_mismatches, 0);
    assert!(
        (s.embed_input_tokens_per_s.unwrap() / s.embed_requests_per_s.unwrap() - 1024.0).abs()
            < 1e-6
    );
}

#[test]
fn llama_server_counts_random_token_and_natural_text_exactly_in_both_apis() {
    // DeepSeek-V4's 129k vocabulary under llama.cpp's own tokenizer: random
    // tokens decoded (bytes of every script) and natural text, exact.
    let _cpu = crate::util::cpu_exclusive();
    let Some(server) = Server::start(2, "deepseek-v4") else {
        return;
    };
    for api in [trie::Api::Completions, trie::Api::Chat] {
        for text in [TextMode::RandomTokens, TextMode::Corpus(None)] {
            let s = Config::new(workload().to_str().unwrap(), &server.url)
                .unwrap()
                .tokenizer(kit().join("deepseek-v4/tokenizer.json").to_str().unwrap())
                .api(api)
                .text(text.clone())
                .concurrency(2)
                .duration(Duration::from_secs(4))
                .run()
                .unwrap();
            eprintln!(
                "llama-server deepseek-v4 {} --text {}: {} requests, {} mismatches",
                api.name(),
                text.name(),
                s.http_requests,
                s.prompt_token_mismatches
            );
            // Exactness is the point here, not speed: a few requests each.
            assert!(s.http_requests >= 5, "{} requests", s.http_requests);
            assert_eq!(s.failures.len(), 0, "{:?}", s.failures);
            assert_eq!(
                s.prompt_token_mismatches,
                0,
                "{} {}",
                api.name(),
                text.name()
            );
        }
    }
}

/// The kit's real chat templates (`$TRIE_REAL_SERVER_HOME/templates`).
fn templates_dir() -> PathBuf {
    built_server()
        .parent()
        .and_then(Path::parent)
        .map(|home| home.join("templates"))
        .unwrap_or_default()
}

/// llama-server's rendering of `conversation` with `template`: (prompt,
/// bos_token, eos_token); `None` when it refuses the template.
fn llama_renders(template: &Path, conversation: &Value) -> Option<(String, String, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(built_server())
        .args(["-m", kit().join("tiny/model.gguf").to_str().unwrap()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", "4096", "-np", "1", "--no-webui", "--jinja"])
        .arg("--chat-template-file")
        .arg(template)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("llama-server starts");
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut healthy = false;
    for _ in 0..150 {
        if agent
            .get(&format!("{base}/health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            healthy = true;
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = healthy.then(|| {
        let read = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| -> Option<Value> {
            serde_json::from_str(&r.ok()?.body_mut().read_to_string().ok()?).ok()
        };
        let props = read(agent.get(&format!("{base}/props")).call())?;
        let rendered = read(
            agent
                .post(&format!("{base}/apply-template"))
                .header("Content-Type", "application/json")
                .send(conversation.to_string()),
        )?;
        Some((
            rendered["prompt"].as_str()?.to_string(),
            props["bos_token"].as_str().unwrap_or("").to_string(),
            props["eos_token"].as_str().unwrap_or("").to_string(),
        ))
    });
    let _ = child.kill();
    let _ = child.wait();
    got.flatten()
}

/// Templates whose rendering differs from llama.cpp's, and why (README
/// lists them too). Each is llama.cpp's own doing, not the template's:
/// trie renders them as Hugging Face's `apply_chat_template` (vLLM, SGLang)
/// does.
const TEMPLATE_EXCEPTIONS: &[&str] = &[
    // llama.cpp passes `enable_thinking` to some formats and not others.
    "Apertus-8B-Instruct",
    // llama.cpp's DeepSeek handler sets its own thinking variables.
    "deepseek-ai-DeepSeek-V4",
    "deepseek-ai-DeepSeek-V4-Flash-0731",
    // Adds an undefined variable to a string: Python's Jinja raises, as
    // trie does; llama.cpp's engine reads it as empty.
    "fireworks-ai-llama-3-firefunction-v2",
    // The template refuses a system message (`raise_exception`); llama.cpp
    // folds it into the first user message.
    "google-gemma-2-2b-it",
    // llama.cpp passes today's date as `date_string`; Hugging Face does
    // not, and the template's default is "26 Jul 2024".
    "meta-llama-Llama-3.1-8B-Instruct",
    "meta-llama-Llama-3.3-70B-Instruct",
];

#[test]
fn chat_templates_render_as_llama_server_renders_them() {
    let dir = templates_dir();
    let required = std::env::var_os("TRIE_REQUIRE_REAL_SERVER").is_some();
    if !dir.is_dir() || !built_server().exists() {
        assert!(
            !required,
            "TRIE_REQUIRE_REAL_SERVER is set but {} is missing",
            dir.display()
        );
        eprintln!("skipped: no templates at {}", dir.display());
        return;
    }
    let _cpu = crate::util::cpu_exclusive();
    let messages = serde_json::json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is in the file?"},
        {"role": "assistant", "content": "Let me look at it."},
        {"role": "user", "content": "tool output: 42 lines"},
        {"role": "assistant", "content": "The file has 42 lines."},
        {"role": "user", "content": "Thanks. Summarize."}
    ]);
    let ours: Vec<trie::text::chat::Message> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            trie::text::chat::Message::new(
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    // What llama.cpp passes besides the messages.
    let extra: std::collections::BTreeMap<String, Value> =
        [("enable_thinking".to_string(), Value::Bool(true))].into();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
        .collect();
    paths.sort();
    let (mut same, mut refused) = (Vec::new(), Vec::new());
    let mut differ = Vec::new();
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let Some((want, bos, eos)) =
            llama_renders(path, &serde_json::json!({"messages": messages}))
        else {
            refused.push(name);
            continue;
        };
        let source = std::fs::read_to_string(path).unwrap();
        let tokens = [
            ("bos_token".to_string(), bos.clone()),
            ("eos_token".to_string(), eos),
        ]
        .into();
        let got = trie::text::chat::ChatTemplate::new(&source, &name, tokens)
            .map_err(|e| e.to_string())
            .and_then(|t| t.render(&ours, true, &extra));
        // llama.cpp leaves out the BOS the template writes first: the
        // server adds it when it tokenizes.
        let got = got.map(|g| match g.strip_prefix(bos.as_str()) {
            Some(rest) if !bos.is_empty() && !want.starts_with(bos.as_str()) => rest.to_string(),
            _ => g,
        });
        match got {
            Ok(g) if g == want => same.push(name),
            Ok(g) => differ.push(format!("{name}: trie {g:?} vs llama.cpp {want:?}")),
            Err(e) => differ.push(format!("{name}: trie failed: {e}")),
        }
    }
    // Straight to the process's stderr, past the test harness's capture:
    // CI's log shows the agreement count on every run.
    let _ = writeln!(
        std::io::stderr(),
        "chat templates: {} of {} that llama.cpp renders render identically in trie ({} refused by llama.cpp: {refused:?})",
        same.len(),
        paths.len() - refused.len(),
        refused.len()
    );
    for d in &differ {
        eprintln!("  differs: {}", d.chars().take(600).collect::<String>());
    }
    let mut names: Vec<&str> = differ
        .iter()
        .map(|d| d.split(':').next().unwrap())
        .collect();
    names.sort_unstable();
    let mut known = TEMPLATE_EXCEPTIONS.to_vec();
    known.sort_unstable();
    assert_eq!(
        names, known,
        "templates that render differently from llama.cpp"
    );
    assert!(same.len() >= 60, "{} identical", same.len());
}

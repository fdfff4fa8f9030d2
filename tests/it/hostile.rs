//! Hostile servers: each one misbehaves in one way a real (or broken) server
//! can, and trie must keep its numbers right, its run alive, its secrets in,
//! and its messages clear.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use trie::Config;
use trie::exec::run::{Hooks, run};

use crate::scripted::{
    After, Req, begin_sse, chunk, completion_events, end_chunks, models, normal, respond, scripted,
    usage_chunk,
};
use crate::util::{row, signal, temp_file, trie_bin, trie_run};

fn workload() -> PathBuf {
    temp_file("w.jsonl", &row(30, &[3], &[5], 0.0, 4))
}

/// A run of the library against `url` (model `m`, bundled tokenizer).
fn config(url: &str, secs: f64) -> Config {
    Config::new(workload().to_str().unwrap(), url)
        .unwrap()
        .model("m")
        .tokenizer("data/tokenizer.json")
        .duration(Duration::from_secs_f64(secs))
}

/// The trie binary against `url` (model `m`, bundled tokenizer, the small
/// workload) with `extra` flags: (exit code, stdout, stderr).
fn run_bin(url: &str, extra: &[&str]) -> (i32, String, String) {
    let wl = workload();
    let mut args = vec!["--workload", wl.to_str().unwrap(), "--endpoint", url];
    args.extend(["--model", "m", "--tokenizer", "data/tokenizer.json"]);
    args.extend(extra);
    trie_run(&args)
}

fn jsonl(p: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn the_end_of_a_response_is_its_done_not_the_connection_closing() {
    let _cpu = crate::util::cpu_exclusive();
    // After [DONE]: (a) two seconds of silence before the close, the
    // chunked terminator missing; (b) the connection never closes at all.
    for hold in [Duration::from_secs(2), Duration::from_secs(60)] {
        let server = scripted(move |req, c| {
            if !req.is_trace() {
                return normal(req, c);
            }
            begin_sse(c);
            for e in completion_events(req) {
                chunk(c, &e);
            }
            After::Hold(hold)
        });
        let events = temp_file("e.jsonl", "");
        let s = run(
            &config(&server.url, 2.5)
                .timeout(Duration::from_secs(5))
                .events(&events),
            &Hooks::default(),
        )
        .unwrap();
        assert!(s.failures.is_empty(), "{hold:?}: {:?}", s.failures);
        assert!(s.completed_requests >= 3, "{hold:?}: {s:?}");
        for e in jsonl(&events).iter().filter(|e| e["status"] == "ok") {
            let took = e["end_us"].as_u64().unwrap() - e["start_us"].as_u64().unwrap();
            assert!(took < 100_000, "{hold:?}: a request took {took} µs: {e}");
        }
        let decode = s.per_trace.decode_tps.unwrap();
        assert!(decode.min > 50.0, "{hold:?}: decode {decode:?}");
    }
}

#[test]
fn a_server_that_answered_cannot_hold_the_slot_for_the_timeout() {
    let _cpu = crate::util::cpu_exclusive();
    let held = Duration::from_secs(30);
    // (a) A finish reason, no usage, no [DONE], the connection kept open.
    let no_usage = scripted(move |req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        begin_sse(c);
        let events = completion_events(req);
        for e in &events[..events.len() - 2] {
            chunk(c, e);
        }
        After::Hold(held)
    });
    // (b) A whole JSON body (not streamed) and then silence, no close.
    let whole = scripted(move |req, c| {
        if req.method == "GET" {
            return normal(req, c);
        }
        let n = req.max_tokens();
        let body = serde_json::json!({
            "choices": [{"index": 0, "text": " a".repeat(n as usize), "finish_reason": "length"}],
        });
        let mut body = body.to_string();
        body.pop();
        let usage = usage_chunk(req, n, 0);
        let usage = &usage[usage.find("\"usage\"").unwrap()..];
        body.push(',');
        body.push_str(usage);
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len() + 1000
        );
        After::Hold(held)
    });
    // (c) A 503 whose body stops half way.
    let stalled = scripted(move |req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        let _ = c.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\noverloaded",
        );
        After::Hold(held)
    });
    for (name, server, stream, ok) in [
        ("no usage", &no_usage, true, true),
        ("whole body", &whole, false, true),
        ("stalled error body", &stalled, true, false),
    ] {
        let began = Instant::now();
        let s = run(
            &config(&server.url, 3.0)
                .timeout(Duration::from_secs(60))
                .stream(stream)
                .max_retries(0),
            &Hooks::default(),
        );
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "{name}: the run took {took:?}"
        );
        match (ok, s) {
            (true, Ok(s)) => {
                assert!(s.failures.is_empty(), "{name}: {:?}", s.failures);
                assert!(s.http_requests >= 2, "{name}: {s:?}");
                // Stamped at the answer's end, not at the give-up.
                let latency = s.per_request.latency_s.unwrap();
                assert!(latency.max < 0.5, "{name}: {latency:?}");
            }
            (false, Ok(s)) => {
                let f = s.failures.get("http_503");
                assert!(f.is_some(), "{name}: {:?}", s.failures);
                assert!(
                    f.unwrap().examples[0].contains("overloaded"),
                    "{name}: {:?}",
                    s.failures
                );
            }
            (_, Err(e)) => assert!(!ok && e.to_string().contains("503"), "{name}: {e}"),
        }
    }
}

#[test]
fn an_endless_sse_line_fails_its_request_at_the_line_cap() {
    let server = scripted(|req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: ",
        );
        let block = vec![b'x'; 64 * 1024];
        while c.write_all(&block).is_ok() {}
        After::Close
    });
    let s = run(
        &config(&server.url, 1.5)
            .max_retries(0)
            .max_line_bytes(1 << 20),
        &Hooks::default(),
    )
    .unwrap();
    let f = &s.failures["malformed"];
    assert!(f.traces >= 1, "{:?}", s.failures);
    assert!(
        f.examples[0].contains("an SSE line longer than 1048576 bytes"),
        "{:?}",
        f.examples
    );
}

#[test]
fn redirects_are_failures_that_name_the_location() {
    let server = scripted(|req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        respond(
            c,
            "302 Found",
            "text/plain",
            "Location: http://127.0.0.1:9/elsewhere\r\n",
            "moved",
        );
        After::KeepAlive
    });
    let s = run(&config(&server.url, 1.0).max_retries(0), &Hooks::default()).unwrap();
    assert_eq!(s.completed_requests, 0);
    let f = &s.failures["http_302"];
    assert!(f.traces >= 1);
    assert!(
        f.examples[0].contains("redirected to http://127.0.0.1:9/elsewhere"),
        "{:?}",
        f.examples
    );
    // Nothing followed the redirect as a GET.
    let gets = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p != "/v1/models")
        .count();
    assert_eq!(gets, 0);
    // A redirected model list stops the preflight, naming where it points.
    let server = scripted(|_, c| {
        respond(
            c,
            "307 Temporary Redirect",
            "text/plain",
            "Location: https://example.invalid/v1/models\r\n",
            "",
        );
        After::KeepAlive
    });
    let (code, _, err) = trie_run(&[
        "--workload",
        workload().to_str().unwrap(),
        "--endpoint",
        &server.url,
        "--tokenizer",
        "data/tokenizer.json",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("redirected to https://example.invalid/v1/models"),
        "{err}"
    );
}

#[test]
fn impossible_usage_is_bad_usage_and_never_bends_a_sum() {
    // Two trace requests in five claim u64::MAX completion tokens, or more
    // cached tokens than the prompt has (each trace sends two requests, so
    // one trace in five meets neither).
    let n = Arc::new(AtomicUsize::new(0));
    let server = scripted(move |req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        let k = n.fetch_add(1, Ordering::SeqCst);
        let usage = match k % 5 {
            1 => usage_chunk(req, u64::MAX, 0),
            3 => usage_chunk(req, req.max_tokens(), 1_000_000),
            _ => return normal(req, c),
        };
        begin_sse(c);
        let mut events = completion_events(req);
        let at = events.len() - 2;
        events[at] = format!("data: {usage}\n\n");
        for e in events {
            chunk(c, &e);
        }
        end_chunks(c);
        After::KeepAlive
    });
    let s = run(&config(&server.url, 1.5).max_retries(0), &Hooks::default()).unwrap();
    let f = &s.failures["bad_usage"];
    assert!(f.traces >= 2, "{:?}", s.failures);
    let all = f.examples.join(" | ");
    assert!(
        all.contains("18446744073709551615 completion_tokens"),
        "{all}"
    );
    assert!(all.contains("1000000 cached_tokens"), "{all}");
    // Whatever completed is sane: no wrapped sum, no 10,000 % hit rate.
    assert!(s.completed_requests > 0, "{s:?}");
    for t in &s.traces {
        assert!(t.output_tokens_per_trace <= 7, "{t:?}");
        assert!(t.cache_hit_rate_pct.unwrap() <= 100.0, "{t:?}");
    }
}

#[test]
fn choice_zero_is_read_by_index_and_chat_shapes_are_warned_once() {
    // Choice 1 comes first in every chunk: its text must never be sent back.
    let server = scripted(|req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        begin_sse(c);
        for e in completion_events(req) {
            chunk(
                c,
                &e.replace(
                    "[{\"index\":0,",
                    "[{\"index\":1,\"text\":\" zzz\"},{\"index\":0,",
                ),
            );
        }
        end_chunks(c);
        After::KeepAlive
    });
    let s = run(&config(&server.url, 1.0), &Hooks::default()).unwrap();
    assert!(s.failures.is_empty() && s.completed_requests > 0, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    let log = server.log.lock().unwrap();
    assert!(
        log.iter()
            .all(|(_, _, b)| !String::from_utf8_lossy(b).contains("zzz"))
    );
    drop(log);
    // A chat-shaped stream on /completions: one warning, from the preflight.
    let server = scripted(|req, c| {
        if req.method == "GET" {
            return normal(req, c);
        }
        begin_sse(c);
        for e in completion_events(req) {
            chunk(
                c,
                &e.replace("\"text\":\" a\"", "\"delta\":{\"content\":\" a\"}"),
            );
        }
        end_chunks(c);
        After::KeepAlive
    });
    let (code, _, err) = run_bin(&server.url, &["--duration", "1", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("chat-shaped").count(), 1, "{err}");
}

#[test]
fn an_echoed_api_key_never_reaches_a_log_a_table_or_a_file() {
    const KEY: &str = "sk-ECHOED-5ec4e7";
    // Echoes the Authorization header in an error body, in an SSE error
    // object, and in a served model name.
    let n = Arc::new(AtomicUsize::new(0));
    let server = scripted(move |req, c| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        if req.method == "GET" {
            models(c, &["m", &auth]);
            return After::KeepAlive;
        }
        if req.is_probe() {
            return normal(req, c);
        }
        match n.fetch_add(1, Ordering::SeqCst) % 3 {
            0 => respond(
                c,
                "500 Internal Server Error",
                "application/json",
                "",
                &format!("{{\"error\":\"bad key {auth}\"}}"),
            ),
            1 => {
                begin_sse(c);
                chunk(
                    c,
                    &format!("data: {{\"error\":{{\"message\":\"{auth}\"}}}}\n\n"),
                );
                end_chunks(c);
            }
            _ => return normal(req, c),
        }
        After::KeepAlive
    });
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let files: Vec<PathBuf> = ["r.json", "r.csv", "e.jsonl", "m.jsonl"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let wl = workload();
    let mut args = vec![
        "--workload",
        wl.to_str().unwrap(),
        "--endpoint",
        &server.url,
        "--model",
        "m",
        "--tokenizer",
        "data/tokenizer.json",
        "--api-key",
        KEY,
        "--duration",
        "1.5",
        "--max-retries",
        "1",
        "-q",
    ];
    for (flag, f) in ["--output", "--csv", "--events", "--output-metrics"]
        .iter()
        .zip(&files)
    {
        args.extend([*flag, f.to_str().unwrap()]);
    }
    let out = trie_bin()
        .env("RUST_LOG", "debug")
        .args(&args)
        .output()
        .unwrap();
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all += &String::from_utf8_lossy(&out.stderr);
    assert!(
        all.contains("http_500"),
        "the echoing failures happened: {all}"
    );
    for f in &files {
        all += &std::fs::read_to_string(f).unwrap();
    }
    assert!(
        !all.contains(KEY) && !all.contains("ECHOED"),
        "the key leaked"
    );
    assert!(all.contains("<redacted>"), "the echo was seen and redacted");
    // A preflight failure that echoes it: the error message is clean too.
    let server = scripted(|req, c| {
        if req.method == "GET" {
            return normal(req, c);
        }
        let auth = req.header("authorization").unwrap_or("").to_string();
        respond(
            c,
            "401 Unauthorized",
            "text/plain",
            "",
            &format!("rejected {auth}"),
        );
        After::KeepAlive
    });
    let (code, _, err) = trie_run(&[
        "--workload",
        wl.to_str().unwrap(),
        "--endpoint",
        &server.url,
        "--model",
        "m",
        "--tokenizer",
        "data/tokenizer.json",
        "--api-key",
        KEY,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rejected Bearer <redacted>") && !err.contains("ECHOED"),
        "{err}"
    );
}

/// A server that reads requests and never answers.
fn silent() -> crate::scripted::Scripted {
    scripted(|_, _| After::Hold(Duration::from_secs(120)))
}

#[test]
fn a_server_that_never_answers_is_given_up_at_the_connect_timeout() {
    let server = silent();
    let start = Instant::now();
    let (code, _, err) = run_bin(&server.url, &["--connect-timeout", "1"]);
    let took = start.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(err.contains("--connect-timeout"), "{err}");
}

#[test]
fn one_signal_stops_trie_within_a_second_before_the_clock() {
    let _cpu = crate::util::cpu_exclusive();
    for sig in ["INT", "TERM"] {
        let server = silent();
        let child = trie_bin()
            .args([
                "--workload",
                workload().to_str().unwrap(),
                "--endpoint",
                &server.url,
                "--model",
                "m",
                "--tokenizer",
                "data/tokenizer.json",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Blocked in the preflight's GET /v1/models.
        assert!(crate::util::wait_for(10.0, || server
            .requests
            .load(Ordering::SeqCst)
            > 0));
        std::thread::sleep(Duration::from_millis(200));
        let signalled = Instant::now();
        signal(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        let took = signalled.elapsed();
        assert_eq!(out.status.code(), Some(130), "{sig}");
        assert!(took < Duration::from_secs(1), "{sig}: exit after {took:?}");
    }
}

#[test]
fn one_signal_stops_trie_reading_a_workload_that_never_comes() {
    // A FIFO without a writer: blocked in open(2) of the workload.
    let fifo = temp_file("x", "").parent().unwrap().join("wl.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let child = trie_bin()
        .args(["--workload", fifo.to_str().unwrap(), "--endpoint", "sim"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(1), "exit after {took:?}");
}

#[test]
fn answers_that_are_not_openai_completions_are_named() {
    for (status, ctype, body, expected) in [
        (
            "200 OK",
            "text/html",
            "<html><body>Welcome to nginx!</body></html>",
            "not an OpenAI endpoint: got text/html",
        ),
        (
            "204 No Content",
            "text/plain",
            "",
            "HTTP 204 without a body",
        ),
    ] {
        let server = scripted(move |req, c| {
            if req.method == "GET" {
                return normal(req, c);
            }
            respond(c, status, ctype, "", body);
            After::KeepAlive
        });
        let (code, _, err) = run_bin(&server.url, &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // https:// to a plain-HTTP port.
    let server = scripted(normal);
    let (code, _, err) = run_bin(&server.url.replace("http://", "https://"), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("TLS handshake failed") && err.contains("plain HTTP"),
        "{err}"
    );
}

#[test]
fn a_model_the_server_does_not_list_is_tried_with_a_warning() {
    // As llama-server: lists its file, serves any name.
    let server = scripted(|req, c| {
        if req.method == "GET" {
            models(c, &["/models/tiny.gguf"]);
            return After::KeepAlive;
        }
        normal(req, c)
    });
    let (code, _, err) = trie_run(&[
        "--workload",
        workload().to_str().unwrap(),
        "--endpoint",
        // Capitals and the full route are accepted and normalised.
        &format!("{}/v1/completions", server.url.to_uppercase()),
        "--model",
        "tiny",
        "--tokenizer",
        "data/tokenizer.json",
        "--duration",
        "1",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("model tiny is not among the models") && err.contains("/models/tiny.gguf"),
        "{err}"
    );
}

#[test]
fn a_reply_counted_after_the_deadline_does_not_stretch_the_measured_window() {
    let _cpu = crate::util::cpu_exclusive();
    // One long answer, in one chunk, that ends just before the deadline:
    // counting its tokens takes seconds of tokenizer work, which neither the
    // measured window nor the run waits for.
    let started = Arc::new(Mutex::new(None::<Instant>));
    let s2 = started.clone();
    let server = scripted(move |req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        let t0 = s2
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now)
            .to_owned();
        let n = req.max_tokens();
        let synth = trie::text::prompt::Synth::new(crate::scripted::tokenizer()).unwrap();
        let text = synth.text(5, n as usize);
        std::thread::sleep(Duration::from_millis(1700).saturating_sub(t0.elapsed()));
        begin_sse(c);
        chunk(
            c,
            &format!(
                "data: {{\"choices\":[{{\"index\":0,\"text\":\"{text}\",\"finish_reason\":\"length\"}}]}}\n\n"
            ),
        );
        chunk(c, &format!("data: {}\n\n", usage_chunk(req, n, 0)));
        chunk(c, "data: [DONE]\n\n");
        end_chunks(c);
        After::KeepAlive
    });
    let wl = temp_file("w.jsonl", &row(30, &[], &[], 0.0, 1_000_000));
    let begin = Instant::now();
    let s = run(
        &Config::new(wl.to_str().unwrap(), &server.url)
            .unwrap()
            .model("m")
            .tokenizer("data/tokenizer.json")
            .duration(Duration::from_secs(2)),
        &Hooks::default(),
    )
    .unwrap();
    assert_eq!(s.http_requests, 1, "{s:?}");
    assert!(
        begin.elapsed() < Duration::from_millis(2500),
        "the run waited {:?} for the count",
        begin.elapsed()
    );
    assert!(
        (2.0..2.2).contains(&s.wall_time_s),
        "wall time {} s",
        s.wall_time_s
    );
}

#[test]
fn a_panicking_slot_fails_its_trace_and_the_run_keeps_its_files() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let out = dir.join("r.json");
    let server = scripted(normal);
    let hooks = Hooks {
        on_trace: Some(Arc::new(|seq| {
            if seq == 2 {
                panic!("injected for the test");
            }
        })),
        ..Hooks::default()
    };
    let s = run(
        &config(&server.url, 1.5).concurrency(2).output(&out),
        &hooks,
    )
    .unwrap();
    let f = &s.failures["internal"];
    assert_eq!(f.traces, 1, "{:?}", s.failures);
    assert!(
        f.examples[0].contains("injected for the test"),
        "{:?}",
        f.examples
    );
    assert!(s.completed_requests > 2, "the run went on: {s:?}");
    let doc = trie::output::results::Results::read(&out).unwrap();
    assert_eq!(doc.summary.failures["internal"].traces, 1);
}

#[test]
fn a_request_is_sent_again_only_once_and_only_after_a_kept_alive_connection_died() {
    // The first trace request is answered on a kept-alive connection; every
    // later one is read and the connection closed without a word. The
    // first such failure is on a kept-alive connection (the server may
    // have closed it: one re-send on a new one); the re-send fails on a
    // new connection, which is no reason to send it again. With
    // --max-retries 0 no request may reach the server more than twice.
    let sends: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, usize>>> =
        Default::default();
    let seen = sends.clone();
    let server = scripted(move |req, c| {
        if !req.is_trace() {
            return normal(req, c);
        }
        let mut seen = seen.lock().unwrap();
        *seen.entry(req.body.clone()).or_default() += 1;
        if seen.values().sum::<usize>() > 1 {
            return After::Close;
        }
        normal(req, c)
    });
    let s = run(&config(&server.url, 1.5).max_retries(0), &Hooks::default()).unwrap();
    // One request answered (of a trace whose next turn failed).
    assert!(s.per_request.ttft_s.is_some_and(|t| t.max > 0.0), "{s:?}");
    let sends = sends.lock().unwrap();
    let most = sends.values().max().copied().unwrap_or(0);
    assert!(most <= 2, "a request reached the server {most} times");
    assert_eq!(s.reconnects, 1, "{s:?}");
}

/// An embeddings answer of `n` vectors with exact usage for `req`.
fn embeddings_answer(req: &Req, n: usize) -> String {
    let inputs = req.json()["input"].as_array().cloned().unwrap_or_default();
    let tokens: usize = inputs
        .iter()
        .map(|i| 1 + crate::scripted::tokenizer().count(i.as_str().unwrap_or("")))
        .sum();
    let data: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"object": "embedding", "index": i, "embedding": [0.5, -0.25]}))
        .collect();
    serde_json::json!({"data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        .to_string()
}

#[test]
fn embeddings_answers_are_read_whole_whatever_their_label_and_counted() {
    // Labelled as an event stream, an embeddings answer is still one JSON
    // body (it was read as SSE and failed as "no choices"); an answer with
    // one vector too few fails as malformed, counted, and the run goes on.
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let server = scripted(move |req, c| {
        if req.method == "GET" {
            models(c, &["m"]);
            return After::KeepAlive;
        }
        let inputs = req.json()["input"].as_array().map_or(0, Vec::len);
        let short = !req.is_probe() && seen.fetch_add(1, Ordering::SeqCst) % 2 == 1;
        let body = embeddings_answer(req, if short { inputs - 1 } else { inputs });
        respond(c, "200 OK", "text/event-stream", "", &body);
        After::KeepAlive
    });
    let s = run(
        &config(&server.url, 1.0)
            .api(trie::Api::Embeddings)
            .embed(Some(40), 3)
            .max_retries(0),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.http_requests >= 3, "{s:?}");
    assert_eq!(s.prompt_token_mismatches, 0);
    let malformed = &s.failures["malformed"];
    assert!(malformed.traces >= 3, "{:?}", s.failures);
    assert!(
        malformed.examples[0].contains("2 embeddings for 3 inputs"),
        "{:?}",
        malformed.examples
    );
}

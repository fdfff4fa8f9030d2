//! The harness against in-process sims: exact prompts, timing bounds,
//! deadline, retries, failures, CLI styles, validation, determinism.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trie::cli::{self, Command};
use trie::exec::run::{Hooks, run};
use trie::sim::{Fault, Faults, Recorded, SimConfig};
use trie::text::prompt::{Synth, segment_key};
use trie::text::tokenizer::Tokenizer;
use trie::{Config, Error};

use crate::util::{fast, fast_sim, row, temp_file};

fn config(workload: &std::path::Path, url: &str) -> Config {
    Config::new(workload.to_str().unwrap(), url)
        .unwrap()
        .model("trie-sim")
        .tokenizer("data/tokenizer.json")
}

/// Requests the sim recorded, without the preflight probe.
fn drain(rx: &crossbeam_channel::Receiver<Recorded>) -> Vec<Recorded> {
    rx.try_iter()
        .filter(|r| r.routing_key.as_deref() != Some(trie::exec::preflight::PROBE_ROUTING_KEY))
        .collect()
}

#[test]
fn synthesis_is_exact_for_many_lengths_and_seeds() {
    for path in [
        "data/tokenizer.json",
        "../shared/real-server/deepseek-v4/tokenizer.json",
    ] {
        let Ok(tok) = Tokenizer::from_file(std::path::Path::new(path)) else {
            continue;
        };
        let synth = Synth::new(&tok).unwrap();
        for seed in 0..4u64 {
            for n in (0..64).chain([100, 511, 1000, 4096, 20_000]) {
                let text = synth.text(segment_key(seed, n as u64, 1), n);
                assert_eq!(tok.count(&text), n, "{path} seed {seed} n {n}");
            }
        }
        assert_eq!(
            synth.text(segment_key(1, 2, 3), 50),
            synth.text(segment_key(1, 2, 3), 50)
        );
        assert_ne!(
            synth.text(segment_key(1, 2, 3), 50),
            synth.text(segment_key(1, 2, 4), 50)
        );
    }
    // 200k tokens in one segment.
    let tok = Tokenizer::from_file(std::path::Path::new("data/tokenizer.json")).unwrap();
    let synth = Synth::new(&tok).unwrap();
    assert_eq!(tok.count(&synth.text(9, 200_000)), 200_000);
}

#[test]
fn every_request_carries_exactly_the_expected_prompt_tokens() {
    let wl = [
        row(300, &[20, 35, 7], &[100, 0, 250], 0.0, 40),
        row(1, &[5], &[3], 0.0, 6),
        row(1500, &[], &[], 0.0, 12),
    ]
    .join("\n");
    let path = temp_file("w.jsonl", &wl);
    let (sim, rx) = fast_sim(fast());
    let summary = run(
        &config(&path, &sim.url())
            .concurrency(3)
            .duration(Duration::from_secs(2)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(summary.completed_requests >= 3, "{summary:?}");
    assert_eq!(summary.prompt_token_mismatches, 0);
    assert!(summary.http_requests > 0);
    // Independently: per trace, the server's prompt count follows the template.
    let traces = trie::input::workload::load(&path, &trie::stop::Stop::new())
        .unwrap()
        .traces;
    let mut by_trace: BTreeMap<String, Vec<Recorded>> = BTreeMap::new();
    for r in drain(&rx) {
        by_trace
            .entry(r.routing_key.clone().unwrap())
            .or_default()
            .push(r);
    }
    let mut checked = 0;
    for (key, reqs) in &by_trace {
        let seq: usize = key.strip_prefix("trace-").unwrap().parse().unwrap();
        let t = &traces[seq % traces.len()];
        let mut expected = t.input_prompt_length.max(1) as usize;
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(r.prompt_tokens, expected, "{key} request {i}");
            if i < t.assistant_response_length.len() {
                expected +=
                    (t.assistant_response_length[i] + t.tool_call_output_length[i]) as usize;
            }
            checked += 1;
        }
    }
    assert!(checked >= 7);
}

#[test]
fn latencies_sit_within_the_sim_timing_model() {
    // One trace: 2000-token prompt at 20k tok/s prefill (0.1 s), 21 tokens at
    // 100 tok/s (0.2 s of decode), a 0.3 s tool call, then 500 new tokens
    // (0.025 s) and 11 tokens (0.1 s).
    let path = temp_file("w.jsonl", &row(2000, &[21], &[500], 0.3, 11));
    let (sim, _rx) = fast_sim(SimConfig {
        prefill_tps: 20_000.0,
        decode_tps: 100.0,
        ..SimConfig::default()
    });
    let s = run(
        &config(&path, &sim.url()).duration(Duration::from_millis(1200)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests >= 1, "{s:?}");
    let t = &s.traces[0];
    let between = |x: f64, lo: f64, hi: f64, what: &str| {
        assert!(x >= lo && x <= hi, "{what} = {x}, expected [{lo}, {hi}]")
    };
    between(t.ttft_s.unwrap(), 0.100, 0.150, "ttft");
    let ttfat = 0.1 + 0.2 + 0.3 + 0.025;
    between(t.ttfat_s.unwrap(), ttfat, ttfat + 0.06, "ttfat");
    between(t.latency_s, ttfat + 0.1, ttfat + 0.1 + 0.08, "latency");
    // A first chunk stamped a few ms late (a busy machine) shortens the
    // decode span: 20 tokens / 0.195 s is 102.6 tok/s.
    between(t.decode_tps.unwrap(), 90.0, 105.0, "decode tps");
    between(t.itl_ms.unwrap(), 9.9, 11.0, "itl");
    assert_eq!(t.output_tokens_per_turn, vec![21, 11]);
    // Turn 2 reuses the whole first prompt + answer (2021 tokens → 2016 in blocks).
    assert!(
        t.eligible_cache_hit_rate_pct > Some(99.0),
        "{:?}",
        t.eligible_cache_hit_rate_pct
    );
}

#[test]
fn deadline_cancels_in_flight_traces_at_once() {
    let _cpu = crate::util::cpu_exclusive();
    let path = temp_file("w.jsonl", &row(100, &[], &[], 0.0, 5000));
    let (sim, _rx) = fast_sim(SimConfig {
        decode_tps: 100.0,
        ..fast()
    });
    let start = Instant::now();
    let s = run(
        &config(&path, &sim.url())
            .concurrency(4)
            .duration(Duration::from_millis(500)),
        &Hooks::default(),
    )
    .unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(s.completed_requests, 0);
    assert_eq!(s.failed_requests, 0);
    assert_eq!(s.cancelled_traces, 4);
    assert!(
        s.wall_time_s >= 0.5 && s.wall_time_s < 1.2,
        "{}",
        s.wall_time_s
    );
}

#[test]
fn interrupt_stops_the_run_and_keeps_what_finished() {
    let _cpu = crate::util::cpu_exclusive();
    let path = temp_file("w.jsonl", &row(50, &[], &[], 0.0, 3));
    let (sim, _rx) = fast_sim(fast());
    let hooks = Hooks::default();
    let interrupt = hooks.interrupt.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        interrupt.trigger();
    });
    let started = Instant::now();
    let s = run(
        &config(&path, &sim.url()).duration(Duration::from_secs(60)),
        &hooks,
    )
    .unwrap();
    t.join().unwrap();
    assert!(s.interrupted);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(s.completed_requests > 5, "{s:?}");
}

#[test]
fn retries_503_then_succeeds() {
    let path = temp_file("w.jsonl", &row(40, &[3], &[10], 0.0, 3));
    let (sim, rx) = fast_sim(SimConfig {
        faults: Faults {
            status_rate: 0.3,
            status: 503,
            ..Faults::default()
        },
        seed: 1,
        ..fast()
    });
    let s = run(
        &config(&path, &sim.url())
            .max_retries(6)
            .duration(Duration::from_secs(2)),
        &Hooks::default(),
    )
    .unwrap();
    let f = &s.failures["http_503"];
    assert!(f.retried_attempts > 0, "{s:?}");
    assert_eq!(f.traces, 0);
    assert_eq!(s.failed_requests, 0);
    assert!(s.completed_requests > 3);
    let recorded = drain(&rx);
    let faulted = recorded.iter().filter(|r| r.fault != Fault::None).count() as u64;
    assert_eq!(faulted, f.retried_attempts);
}

#[test]
fn a_server_failing_everything_fails_preflight() {
    let path = temp_file("w.jsonl", &row(40, &[3], &[10], 0.0, 3));
    let (sim, rx) = fast_sim(SimConfig {
        faults: Faults {
            status_rate: 1.0,
            status: 500,
            ..Faults::default()
        },
        ..fast()
    });
    let e = run(&config(&path, &sim.url()).max_retries(1), &Hooks::default()).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    let msg = e.to_string();
    assert!(msg.contains("preflight request failed (http_500)"), "{msg}");
    // The probe and its one retry; no trace was started.
    let probes = rx.try_iter().count();
    assert_eq!(probes, 2);
}

#[test]
fn failing_500s_count_failed_traces_and_the_run_goes_on() {
    let path = temp_file("w.jsonl", &row(40, &[3], &[10], 0.0, 3));
    let faults = Faults {
        status_rate: 0.5,
        status: 500,
        ..Faults::default()
    };
    // A seed whose first request (the preflight probe) gets through.
    let seed = (0..).find(|&s| faults.pick(s, 0) == Fault::None).unwrap();
    let (sim, rx) = fast_sim(SimConfig {
        faults,
        seed,
        ..fast()
    });
    let s = run(
        &config(&path, &sim.url())
            .max_retries(0)
            .concurrency(2)
            .duration(Duration::from_secs(1)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests > 0, "{s:?}");
    assert!(s.failed_requests >= 2, "{s:?}");
    let f = &s.failures["http_500"];
    assert_eq!(f.traces, s.failed_requests);
    assert_eq!(f.retried_attempts, 0);
    assert!(f.examples[0].contains("HTTP 500"));
    // Every failed trace ended on one 500 the sim injected; a 500 that
    // arrives after the deadline ends its trace as cancelled instead.
    let injected = drain(&rx)
        .iter()
        .filter(|r| r.fault == Fault::Status(500))
        .count() as u64;
    assert!(
        (s.failed_requests..=s.failed_requests + 2).contains(&injected),
        "{injected} injected, {} failed",
        s.failed_requests
    );
}

#[test]
fn both_cli_styles_give_the_same_config() {
    let args = |v: &[&str]| {
        v.iter()
            .map(|s| s.into())
            .collect::<Vec<std::ffi::OsString>>()
    };
    let gnu = args(&[
        "--workload",
        "qa",
        "--endpoint",
        "http://localhost:8000",
        "--model",
        "m",
        "--tokenizer",
        "org/tok",
        "--concurrency",
        "48",
        "--duration",
        "7200",
        "--seed",
        "3",
        "--api-key",
        "k",
        "--max-retries",
        "4",
        "--timeout",
        "60",
        "--num-gpus",
        "4",
        "--no-stream",
        "--progress-interval",
        "30",
    ]);
    let py = args(&[
        "workload_path=qa",
        "endpoint=http://localhost:8000/v1/",
        "model=m",
        "tokenizer_model=org/tok",
        "concurrency=48",
        "duration=7200",
        "seed=3",
        "api_key=k",
        "max_retries=4",
        "timeout=60",
        "num_gpus=4",
        "stream=False",
        "duration_update_interval=30",
    ]);
    let (Command::Run(a), _) = cli::parse(gnu).unwrap() else {
        panic!()
    };
    let (Command::Run(b), _) = cli::parse(py).unwrap() else {
        panic!()
    };
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert_eq!(
        a.endpoint,
        trie::Endpoint::Url("http://localhost:8000/v1".into())
    );
    assert_eq!(a.load, trie::LoadModel::Closed { concurrency: 48 });
    assert!(!a.stream);
    for (bad, needle) in [
        (
            args(&["--workload", "x", "--endpoint", "sim", "--bogus", "1"]),
            "unknown flag --bogus",
        ),
        (
            args(&["--workload", "x", "--endpoint", "sim", "--concurrency"]),
            "--concurrency needs a value",
        ),
        (
            args(&["--workload", "x", "--endpoint", "sim", "--concurrency", "0"]),
            "--concurrency must be at least 1",
        ),
        (
            args(&[
                "--workload",
                "x",
                "--endpoint",
                "sim",
                "--concurrency",
                "2",
                "--arrival-rate",
                "1",
            ]),
            "exclude each other",
        ),
        (
            args(&["--workload", "x", "--endpoint", "localhost:80"]),
            "is not a URL",
        ),
        (
            args(&["workload_path=x", "endpoint=sim", "stream=maybe"]),
            "not True or False",
        ),
        (
            args(&["workload_path=x", "bogus_key=1"]),
            "unknown setting 'bogus_key='",
        ),
    ] {
        let e = cli::parse(bad).unwrap_err();
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains(needle),
            "{e} !~ {needle}"
        );
        assert_eq!(e.exit_code(), 2);
    }
}

#[test]
fn bad_rows_are_named_by_line_and_nothing_is_sent() {
    let good = row(40, &[3], &[10], 0.0, 3);
    let (sim, rx) = fast_sim(fast());
    for (bad, needle) in [
        (
            good.replace("\"input_prompt_length\":40", "\"input_prompt_length\":-4"),
            "w.jsonl:3: input_prompt_length must be a non-negative integer, got -4",
        ),
        (
            good.replace("[10]", "[10, 11]"),
            "w.jsonl:3: tool_call_output_length has 2 entries, num_turns is 1",
        ),
        (
            good.replace(
                "\"tool_call_latency\":[0.0]",
                "\"tool_call_latency\":[\"x\"]",
            ),
            "w.jsonl:3: tool_call_latency[0] must be a finite number",
        ),
        (
            good.replace("\"num_turns\":1,", ""),
            "w.jsonl:3: missing field num_turns",
        ),
        (
            "{\"num_turns\": 1,".to_string(),
            "w.jsonl:3: not valid JSON",
        ),
    ] {
        let path = temp_file("w.jsonl", &format!("{good}\n\n{bad}\n"));
        let e = run(&config(&path, &sim.url()), &Hooks::default()).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} !~ {needle}");
        assert_eq!(e.exit_code(), 2);
    }
    assert_eq!(sim.requests(), 0);
    assert!(drain(&rx).is_empty());
}

#[test]
fn same_seed_sends_byte_identical_bodies_per_trace() {
    let wl = [
        row(200, &[10, 20], &[30, 40], 0.0, 5),
        row(64, &[7], &[9], 0.0, 8),
    ]
    .join("\n");
    let path = temp_file("w.jsonl", &wl);
    let bodies = |seed: u64| {
        let (sim, rx) = fast_sim(fast());
        let cfg = config(&path, &sim.url())
            .concurrency(4)
            .seed(seed)
            .duration(Duration::from_millis(800));
        run(&cfg, &Hooks::default()).unwrap();
        let mut by: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for r in drain(&rx) {
            by.entry(r.routing_key.unwrap()).or_default().push(r.body);
        }
        by
    };
    let (a, b, c) = (bodies(11), bodies(11), bodies(12));
    let common: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
    assert!(common.len() >= 8, "{}", common.len());
    for k in common {
        let n = a[k].len().min(b[k].len());
        assert!(n >= 1);
        assert_eq!(a[k][..n], b[k][..n], "trace {k}");
    }
    assert_ne!(
        a["trace-0"][0], c["trace-0"][0],
        "another seed sends other text"
    );
}

#[test]
fn api_key_goes_only_in_the_authorization_header() {
    let path = temp_file("w.jsonl", &row(20, &[], &[], 0.0, 2));
    let (sim, rx) = fast_sim(fast());
    run(
        &config(&path, &sim.url())
            .api_key("sk-secret-123")
            .duration(Duration::from_millis(300)),
        &Hooks::default(),
    )
    .unwrap();
    let rec = drain(&rx);
    assert!(!rec.is_empty());
    for r in &rec {
        assert_eq!(r.authorization.as_deref(), Some("Bearer sk-secret-123"));
        assert!(!String::from_utf8_lossy(&r.body).contains("sk-secret"));
    }
    // No key: no header, and the run works.
    let (sim, rx) = fast_sim(fast());
    let s = run(
        &config(&path, &sim.url()).duration(Duration::from_millis(300)),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests > 0);
    assert!(drain(&rx).iter().all(|r| r.authorization.is_none()));
}

#[test]
fn model_is_asked_from_the_server_when_omitted() {
    let path = temp_file("w.jsonl", &row(20, &[], &[], 0.0, 2));
    let (sim, _rx) = fast_sim(SimConfig {
        model: "served-one".into(),
        ..fast()
    });
    let cfg = Config::new(path.to_str().unwrap(), &sim.url())
        .unwrap()
        .tokenizer("data/tokenizer.json")
        .duration(Duration::from_millis(300));
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert_eq!(s.model, "served-one");
    assert!(s.completed_requests > 0);
}

#[test]
fn open_loop_starts_traces_on_schedule() {
    let path = temp_file("w.jsonl", &row(20, &[], &[], 0.0, 2));
    let (sim, _rx) = fast_sim(fast());
    let cfg = config(&path, &sim.url())
        .arrival_rate(20.0, trie::Arrival::Constant, 64)
        .duration(Duration::from_millis(1000));
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert!(
        (18..=21).contains(&s.started_traces),
        "{}",
        s.started_traces
    );
    let a = s.arrival.unwrap();
    assert!(a.late_s_p99.unwrap() < 0.05, "{a:?}");
    assert_eq!(a.waited_for_limit, 0);
}

#[test]
fn readme_command_runs_against_the_builtin_sim() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trie"))
        .args([
            "--workload",
            "data/qa.jsonl",
            "--endpoint",
            "sim",
            "--concurrency",
            "8",
            "--duration",
            "12",
            "-q",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("Per-trace metrics") && stdout.contains("Workload metrics"),
        "{stdout}"
    );
    assert!(
        stderr.contains("starting benchmark") && stderr.contains("benchmark complete"),
        "{stderr}"
    );
    assert!(stderr.contains("prompt_token_mismatches=0"), "{stderr}");
}

#[test]
fn kept_alive_connections_the_server_closed_are_reconnected_not_failed() {
    // Like llama-server: every completion closes its connection, though the
    // response announced nothing; the next send on the pooled one fails.
    let path = temp_file("w.jsonl", &row(40, &[3, 4], &[10, 5], 0.0, 3));
    let events = path.with_file_name("events.jsonl");
    let mut cfg = fast();
    cfg.quirks.close_after_completion = true;
    let (sim, rx) = fast_sim(cfg);
    let s = run(
        &config(&path, &sim.url())
            .concurrency(2)
            .duration(Duration::from_millis(800))
            .events(&events),
        &Hooks::default(),
    )
    .unwrap();
    assert!(s.completed_requests > 5, "{s:?}");
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    assert!(s.reconnects > 0, "the closed connections were met");
    let lines = std::fs::read_to_string(&events).unwrap();
    let reconnected = lines
        .lines()
        .filter(|l| l.contains("\"status\":\"reconnected\""))
        .count();
    assert_eq!(reconnected as u64, s.reconnects);
    // Nothing reached the server twice: it saw each successful request once,
    // plus at most the ones cut off at the deadline.
    let seen = drain(&rx).len() as u64;
    assert!(
        (s.http_requests..=s.http_requests + s.cancelled_requests).contains(&seen),
        "server saw {seen}, {} ok, {} cancelled",
        s.http_requests,
        s.cancelled_requests
    );
}

#[test]
fn a_server_that_drops_every_request_gets_no_extra_sends() {
    use std::sync::atomic::Ordering;
    // Answers the model list and the preflight probe, then reads every
    // completion request and closes without a word.
    let server = crate::scripted::scripted(|req, c| {
        if !req.is_trace() {
            return crate::scripted::normal(req, c);
        }
        crate::scripted::After::Close
    });
    let url = server.url.clone();
    let posts = server.requests.clone();
    let path = temp_file("w.jsonl", &row(40, &[3], &[10], 0.0, 3));
    let s = run(
        &Config::new(path.to_str().unwrap(), &url)
            .unwrap()
            .model("m")
            .tokenizer("data/tokenizer.json")
            .max_retries(1)
            .duration(Duration::from_millis(1500)),
        &Hooks::default(),
    )
    .unwrap();
    assert_eq!(s.completed_requests, 0);
    assert!(s.failed_requests >= 2, "{s:?}");
    assert_eq!(
        s.reconnects, 0,
        "no request ever succeeded, so no pooled connection"
    );
    // One attempt and one retry per trace, no more (the trace in flight at
    // the deadline may have sent one or two). Two requests were the preflight.
    let sent = posts.load(Ordering::SeqCst) as u64 - 2;
    assert!(
        (2 * s.failed_requests..=2 * s.failed_requests + 2).contains(&sent),
        "{sent} completion requests for {} failed traces",
        s.failed_requests
    );
}

#[test]
fn ctrl_c_before_the_clock_starts_stops_the_run_there() {
    let path = temp_file("w.jsonl", &row(40, &[3], &[10], 0.0, 3));
    let (sim, rx) = fast_sim(fast());
    let hooks = Hooks::default();
    hooks.interrupt.trigger();
    let e = run(&config(&path, &sim.url()), &hooks).unwrap_err();
    assert_eq!(e.exit_code(), 130);
    // Only the preflight probe reached the server; no trace started.
    assert!(drain(&rx).is_empty());
}

#[test]
fn a_kept_alive_connection_idle_past_the_timeout_is_not_cut_by_an_old_deadline() {
    // Each request's deadline (--timeout 1 s) is watched by the deadline
    // thread; the 1.5 s tool call that follows leaves the connection idle
    // past it. The ended request's deadline must not shut the connection:
    // the next turn reuses it, no reconnect, no failure.
    let (sim, rx) = fast_sim(fast());
    let wl = temp_file("idle.jsonl", &row(16, &[4], &[8], 1.5, 4));
    let cfg = config(&wl, &sim.url())
        .timeout(Duration::from_secs(1))
        .duration(Duration::from_millis(2500));
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert!(s.completed_requests >= 1, "{s:?}");
    assert_eq!(s.reconnects, 0, "{s:?}");
    // The preflight's own connection, and the slot's one.
    assert_eq!(
        sim.connections(),
        2,
        "the slot's connection was cut and opened again"
    );
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    assert!(drain(&rx).len() >= 3);
}

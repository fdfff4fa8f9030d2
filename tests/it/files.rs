//! Results files, `trie report` / `trie compare`, the preflight, faults,
//! interrupts and secrets, through the real binary where exit codes matter.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use trie::Config;
use trie::exec::run::{Hooks, run};

use crate::util::{SimChild, fast, fast_sim, row, signal, temp_file, trie_bin, trie_run, wait_for};

/// A workload of short multi-turn traces.
fn small_workload() -> std::path::PathBuf {
    let rows = [
        row(120, &[8, 5], &[30, 12], 0.01, 6),
        row(60, &[4], &[20], 0.0, 9),
        row(200, &[], &[], 0.0, 7),
    ];
    temp_file("w.jsonl", &rows.join("\n"))
}

/// Check `v` against the JSON Schema subset the results schema uses;
/// returns every violation with its path.
fn validate(schema: &Value, root: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        return validate(&root["$defs"][name], root, v, at, errors);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|s| {
            let mut e = Vec::new();
            validate(s, root, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches no anyOf branch"));
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type at {at}"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !ok {
            errors.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in {e:?}"));
    }
    if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && x < min
    {
        errors.push(format!("{at}: {x} < {min}"));
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                errors.push(format!("{at}: missing {req}"));
            }
        }
        for (k, x) in obj {
            let sub = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => validate(s, root, x, &sub, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{sub}: not in the schema"))
                }
                (None, Some(s)) if s.is_object() => validate(s, root, x, &sub, errors),
                _ => {}
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(items, root, x, &format!("{at}[{i}]"), errors);
        }
    }
}

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string("data/results.schema.json").unwrap()).unwrap()
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let s = schema();
    let mut errors = Vec::new();
    validate(&s, &s, doc, "$", &mut errors);
    errors
}

/// Every property name in the schema (recursively).
fn schema_fields(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(p) = o.get("properties").and_then(Value::as_object) {
                out.extend(p.keys().cloned());
            }
            o.values().for_each(|x| schema_fields(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| schema_fields(x, out)),
        _ => {}
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn the_results_files_are_complete_and_match_the_schema() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let (out, csv, events, metrics) = (
        dir.join("r.json"),
        dir.join("r.csv"),
        dir.join("e.jsonl"),
        dir.join("m.jsonl"),
    );
    let (sim, _rx) = fast_sim(fast());
    let cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrency(3)
        .num_gpus(2)
        .duration(Duration::from_millis(1500))
        .output(&out)
        .csv(&csv)
        .events(&events)
        .output_metrics(&metrics);
    let s = run(&cfg, &Hooks::default()).unwrap();
    assert!(s.completed_requests >= 3, "{s:?}");

    let doc = read_json(&out);
    let errors = schema_errors(&doc);
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema is strict: a field it does not describe is caught.
    let mut extra = doc.clone();
    extra["summary"]["traces"][0]["surprise_s"] = 1.into();
    assert!(schema_errors(&extra)[0].contains("surprise_s: not in the schema"));
    // README documents every field of the schema.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut fields = Vec::new();
    schema_fields(&schema(), &mut fields);
    let undocumented: Vec<_> = fields
        .iter()
        .filter(|f| !readme.contains(&format!("`{f}`")))
        .collect();
    assert!(undocumented.is_empty(), "README lacks {undocumented:?}");

    // The document holds what the run returned.
    let back: trie::output::results::Results = serde_json::from_value(doc.clone()).unwrap();
    assert!(
        back.summary == s,
        "the summary survives the round trip exactly"
    );
    // The records read back reproduce every figure of the run exactly.
    let records = back.records.clone().expect("records are written");
    assert_eq!(records.requests.len() as u64, s.http_requests);
    assert_eq!(records.traces.len() as u64, s.started_traces);
    let again = trie::record::records::summarize(&back.summary, &records, back.summary.wall_time_s);
    assert!(again == s, "summarize(records) reproduces the run");
    assert!(back.clone().summarize() == s);
    // Figures come from the records, not the stored summary: a record
    // changed by hand changes what trie report prints.
    let mut edited = back.clone();
    edited.records.as_mut().unwrap().requests[0].latency_s += 1000.0;
    assert_ne!(
        edited.summarize().per_request.latency_s.unwrap().max,
        s.per_request.latency_s.unwrap().max
    );
    assert_eq!(back.config.concurrency, Some(3));
    assert_eq!(back.config.workload_fnv1a.len(), 16);
    assert_eq!(back.deadline.cancelled_traces, s.cancelled_traces);
    for (k, v) in trie::output::report::complete_pairs(&s) {
        match back.figures[&k] {
            Some(x) => assert!(
                (x - v.parse::<f64>().unwrap()).abs() < 0.01,
                "{k}: {x} vs {v}"
            ),
            None => assert_eq!(v, "None", "{k}"),
        }
    }
    assert_eq!(s.traces.len() as u64, s.completed_requests);

    // CSV: a header and one row per completed trace, in trace order.
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], trie::output::results::CSV_HEADER);
    assert_eq!(lines.len() - 1, s.traces.len());
    for (line, t) in lines[1..].iter().zip(&s.traces) {
        assert!(line.starts_with(&format!("{},{},{},", t.trace_id, t.template, t.slot)));
    }

    // Output metrics: the Python version's rows.
    let rows = jsonl(&metrics);
    assert_eq!(rows.len(), s.traces.len());
    for (r, t) in rows.iter().zip(&s.traces) {
        assert_eq!(r["request_id"], t.trace_id.as_str());
        assert_eq!(
            r["output_tokens_per_trace"].as_u64(),
            Some(t.output_tokens_per_trace)
        );
        assert_eq!(
            r["output_tokens_per_turn"].as_array().unwrap().len(),
            t.output_tokens_per_turn.len()
        );
    }

    // Events: one line per request attempt, consistent with the summary.
    let ev = jsonl(&events);
    let ok: Vec<&Value> = ev.iter().filter(|e| e["status"] == "ok").collect();
    assert_eq!(ok.len() as u64, s.http_requests);
    let cancelled = ev.iter().filter(|e| e["status"] == "cancelled").count() as u64;
    assert_eq!(cancelled, s.cancelled_requests);
    for e in &ok {
        let (start, first, end) = (
            e["start_us"].as_u64().unwrap(),
            e["first_chunk_us"].as_u64().unwrap(),
            e["end_us"].as_u64().unwrap(),
        );
        assert!(start <= first && first <= end, "{e}");
        assert_eq!(e["prompt_tokens"], e["expected_prompt_tokens"]);
        assert_eq!(e["body_fnv1a"].as_str().unwrap().len(), 16);
    }
    // A completed trace's events carry its output tokens, turn by turn.
    let t = &s.traces[0];
    let turns: Vec<u64> = ok
        .iter()
        .filter(|e| e["trace_id"] == t.trace_id.as_str())
        .map(|e| e["completion_tokens"].as_u64().unwrap())
        .collect();
    assert_eq!(turns, t.output_tokens_per_turn);
}

/// trace id → body hashes in turn order, for traces that completed.
fn bodies(events: &Path, completed: usize) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in jsonl(events) {
        if e["status"] == "ok" {
            let id = e["trace_id"].as_str().unwrap().to_string();
            let seq: usize = id.strip_prefix("trace-").unwrap().parse().unwrap();
            if seq < completed {
                m.entry(id)
                    .or_default()
                    .push(e["body_fnv1a"].as_str().unwrap().to_string());
            }
        }
    }
    m
}

#[test]
fn the_same_seed_sends_the_same_bodies_per_trace() {
    let wl = small_workload();
    let run_with = |seed: u64, name: &str| {
        let events = wl.with_file_name(name);
        let (sim, _rx) = fast_sim(fast());
        let s = Config::new(wl.to_str().unwrap(), &sim.url())
            .unwrap()
            .concurrency(4)
            .seed(seed)
            .duration(Duration::from_millis(800))
            .events(&events)
            .run()
            .unwrap();
        (s, events)
    };
    let (a, ea) = run_with(7, "a.jsonl");
    let (b, eb) = run_with(7, "b.jsonl");
    let (c, ec) = run_with(8, "c.jsonl");
    let n = 6;
    assert!(a.completed_requests >= n as u64 && b.completed_requests >= n as u64);
    assert!(c.completed_requests >= n as u64);
    let (ba, bb, bc) = (bodies(&ea, n), bodies(&eb, n), bodies(&ec, n));
    assert_eq!(ba.len(), n);
    assert_eq!(ba, bb, "same seed, same bodies, whatever the scheduling");
    for (id, hashes) in &ba {
        assert_ne!(hashes[0], bc[id][0], "{id}: another seed, other text");
    }
}

#[test]
fn report_prints_the_tables_of_the_run_and_compare_shows_changes() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let wl = small_workload();
    let sim = SimChild::start(&["--decode-tps", "2000", "--prefill-tps", "0"]);
    let mut outs = Vec::new();
    for (name, conc) in [("a.json", "1"), ("b.json", "4")] {
        let out = dir.join(name);
        let (code, stdout, stderr) = trie_run(&[
            "--workload",
            wl.to_str().unwrap(),
            "--endpoint",
            &sim.url,
            "--concurrency",
            conc,
            "--duration",
            "1",
            "--output",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let (code, report, _) = trie_run(&["report", out.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert_eq!(report, stdout, "report reprints the run's tables");
        assert!(report.contains("Per-trace metrics") && report.contains("Steady State"));
        outs.push(out);
    }
    let (code, text, stderr) = trie_run(&[
        "compare",
        outs[0].to_str().unwrap(),
        outs[1].to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let a = trie::output::results::Results::read(&outs[0]).unwrap();
    let b = trie::output::results::Results::read(&outs[1]).unwrap();
    let (x, y) = (
        a.figures["trace_per_s"].unwrap(),
        b.figures["trace_per_s"].unwrap(),
    );
    let line = text
        .lines()
        .find(|l| l.contains("│ trace_per_s "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("({:+.1}%)", 100.0 * (y - x) / x)),
        "{line} for {x} -> {y}"
    );
    // Bad files: exit 2 with the file named.
    let junk = temp_file("junk.json", "{\"a\": 1}");
    let (code, _, err) = trie_run(&["report", junk.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("junk.json") && err.contains("not a trie results file"),
        "{err}"
    );
    let (code, _, err) = trie_run(&["compare", outs[0].to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("two or more"), "{err}");
}

#[test]
fn every_sim_fault_is_counted_and_the_files_are_written() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let out = dir.join("r.json");
    let events = dir.join("e.jsonl");
    let sim = SimChild::start(&[
        "--decode-tps",
        "2000",
        "--prefill-tps",
        "0",
        "--seed",
        "3",
        "--fault-status-rate",
        "0.08",
        "--fault-reset-rate",
        "0.08",
        "--fault-malformed-rate",
        "0.08",
        "--fault-stall-rate",
        "0.08",
        "--fault-stall-secs",
        "5",
        "--fault-no-usage-rate",
        "0.08",
    ]);
    let (code, stdout, stderr) = trie_run(&[
        "--workload",
        small_workload().to_str().unwrap(),
        "--endpoint",
        &sim.url,
        "--concurrency",
        "8",
        "--duration",
        "3",
        "--timeout",
        "0.5",
        "--max-retries",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let r = trie::output::results::Results::read(&out).unwrap();
    let s = &r.summary;
    assert!(s.completed_requests > 0);
    // The sim's reset fault closes the connection mid-stream (FIN, not RST):
    // the client sees the stream end early, a `truncated` failure.
    for kind in ["http_503", "truncated", "malformed", "timeout"] {
        let f = s
            .failures
            .get(kind)
            .unwrap_or_else(|| panic!("{kind} missing: {:?}", s.failures));
        assert!(f.traces + f.retried_attempts > 0, "{kind}");
        assert!(
            stdout.contains(&format!("│ {kind} ")),
            "Failures table lacks {kind}:\n{stdout}"
        );
    }
    assert!(stdout.contains("Failures"));
    assert!(s.requests_without_usage > 0, "missing usage counted");
    // The event log names each failure kind too.
    let ev = jsonl(&events);
    for kind in ["http_503", "truncated", "malformed", "timeout"] {
        assert!(ev.iter().any(|e| e["failure"] == kind), "{kind}");
    }
    let failed_lines = ev.iter().filter(|e| e["status"] == "failed").count() as u64;
    assert_eq!(failed_lines, s.failed_requests);
}

#[test]
fn a_server_killed_mid_run_leaves_a_finished_run_and_its_files() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let out = dir.join("r.json");
    let mut sim = SimChild::start(&["--decode-tps", "400", "--prefill-tps", "0"]);
    let child = trie_bin()
        .args([
            "--workload",
            small_workload().to_str().unwrap(),
            "--endpoint",
            &sim.url,
            "--concurrency",
            "4",
            "--duration",
            "3",
            "--max-retries",
            "1",
            "--output",
            out.to_str().unwrap(),
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    sim.child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = trie::output::results::Results::read(&out).unwrap().summary;
    assert!(s.completed_requests > 0, "traces finished before the kill");
    assert!(s.failed_requests > 0, "traces failed after it");
    let kinds: Vec<&String> = s.failures.keys().collect();
    assert!(
        kinds
            .iter()
            .all(|k| ["connect", "reset", "truncated"].contains(&k.as_str())),
        "{kinds:?}"
    );
    assert!(stdout.contains("Failures"), "{stdout}");
}

/// A 60 s run with an event log, returned once 10 events are in the file:
/// each line is flushed as written, so they show while the run goes on.
fn long_run(url: &str, events: &Path, extra: &[&str]) -> std::process::Child {
    let child = trie_bin()
        .args(["--workload", small_workload().to_str().unwrap()])
        .args([
            "--endpoint",
            url,
            "--concurrency",
            "4",
            "--duration",
            "60",
            "-q",
        ])
        .args(["--events", events.to_str().unwrap()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(events)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert!(
        wait_for(20.0, || lines() >= 10),
        "events appear during the run"
    );
    child
}

#[test]
fn ctrl_c_and_sigterm_keep_everything_measured() {
    for sig in ["INT", "TERM"] {
        let dir = temp_file("x", "").parent().unwrap().to_path_buf();
        let out = dir.join("r.json");
        let events = dir.join("e.jsonl");
        let sim = SimChild::start(&["--decode-tps", "1000", "--prefill-tps", "0"]);
        let child = long_run(&sim.url, &events, &["--output", out.to_str().unwrap()]);
        signal(child.id(), sig);
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(130), "{sig}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("Per-trace metrics"), "{stdout}");
        let r = trie::output::results::Results::read(&out).unwrap();
        assert!(r.deadline.interrupted && r.summary.interrupted);
        assert!(r.deadline.stopped_at_s < 30.0);
        assert!(r.summary.completed_requests > 0);
        let ok = jsonl(&events)
            .iter()
            .filter(|e| e["status"] == "ok")
            .count() as u64;
        assert_eq!(ok, r.summary.http_requests);
    }
}

#[test]
fn a_killed_run_keeps_its_event_log_to_the_last_line() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let events = dir.join("e.jsonl");
    let sim = SimChild::start(&["--decode-tps", "1000", "--prefill-tps", "0"]);
    let mut child = long_run(&sim.url, &events, &[]);
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.ends_with('\n'), "no torn last line");
    assert!(jsonl(&events).len() >= 10);
}

/// trie on `wl` against a port nothing listens on, with `extra` flags.
fn against_nobody(wl: &str, extra: &[&str]) -> (i32, String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--workload", wl, "--endpoint", &url];
    args.extend(["--model", "m", "--tokenizer", "data/tokenizer.json"]);
    args.extend(extra);
    trie_run(&args)
}

#[test]
fn preflight_stops_unreachable_servers_and_unknown_models() {
    let wl = small_workload();
    let wl = wl.to_str().unwrap();
    // Nothing listens on this port.
    let (code, _, err) = against_nobody(wl, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("is the server up?"),
        "{err}"
    );
    let sim = SimChild::start(&[]);
    let (code, _, err) = trie_run(&[
        "--workload",
        wl,
        "--endpoint",
        &sim.url,
        "--model",
        "nope",
        "--tokenizer",
        "data/tokenizer.json",
    ]);
    // Not listed: a warning naming what is, and the probe decides (the sim
    // serves only its own name).
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("model nope is not among the models") && err.contains("(trie-sim)"),
        "{err}"
    );
    assert!(
        err.contains("preflight request failed (http_404)") && err.contains("`nope`"),
        "{err}"
    );
}

#[test]
fn the_event_log_is_created_only_once_every_input_is_known() {
    let wl = small_workload();
    let wl = wl.to_str().unwrap();
    // A run refused in its preflight leaves an old log as it was.
    let old = temp_file("old-events.jsonl", "{\"old\":1}\n");
    let (code, _, err) = against_nobody(wl, &["--events", old.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "{\"old\":1}\n");

    // The tokenizer named by the served model (found in the Hub cache only
    // after the preflight) is an input too: --events over it is refused.
    let cache = temp_file("x", "").parent().unwrap().join("hub");
    let snap = cache.join("models--acme--tiny/snapshots/abc");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--acme--tiny/refs")).unwrap();
    std::fs::write(cache.join("models--acme--tiny/refs/main"), "abc").unwrap();
    let tok = snap.join("tokenizer.json");
    let bytes = std::fs::read("data/tokenizer.json").unwrap();
    std::fs::write(&tok, &bytes).unwrap();
    let sim = SimChild::start(&["--model", "acme/tiny"]);
    let out = trie_bin()
        .env("HF_HUB_CACHE", &cache)
        .args(["--workload", wl, "--endpoint", &sim.url, "--duration", "2"])
        .args(["--events", tok.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--events") && err.contains("is the tokenizer"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&tok).unwrap(),
        bytes,
        "the tokenizer is intact"
    );
}

#[test]
fn preflight_warns_about_servers_that_fall_short() {
    let wl = small_workload();
    for (flags, warning) in [
        (&["--no-stream"][..], "does not stream"),
        (&["--no-cached-tokens"][..], "no cached_tokens"),
        (&["--eos-after", "2"][..], "ignore ignore_eos"),
        (
            &["--bos", "0"][..],
            "counted 16 prompt tokens where trie sent 17",
        ),
    ] {
        let mut args = vec!["--decode-tps", "0", "--prefill-tps", "0"];
        args.extend_from_slice(flags);
        let sim = SimChild::start(&args);
        let (code, _, err) = trie_run(&[
            "--workload",
            wl.to_str().unwrap(),
            "--endpoint",
            &sim.url,
            "--duration",
            "0.3",
            "-q",
        ]);
        assert_eq!(code, 0, "{flags:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("preflight:"))
            .unwrap_or_else(|| panic!("{flags:?}: no preflight warning in {err}"));
        assert!(
            line.starts_with("[warn") && line.contains(warning),
            "{flags:?}: {line}"
        );
    }
}

#[test]
fn secrets_never_reach_logs_or_files() {
    const KEY: &str = "sk-SECRET-9f8e7d";
    const HF: &str = "hf_SECRET_token_42";
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let files: Vec<_> = ["r.json", "r.csv", "e.jsonl", "m.jsonl"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let (sim, rx) = fast_sim(fast());
    for style in ["flag", "word", "env"] {
        let mut cmd = trie_bin();
        // Every level, and the wire-dump modules asked for by name too.
        cmd.env("RUST_LOG", "trace,ureq_proto::util=trace,ureq=trace")
            .env("HF_TOKEN", HF);
        let wl = small_workload();
        cmd.args([
            "--workload",
            wl.to_str().unwrap(),
            "--endpoint",
            &sim.url(),
            "--concurrency",
            "2",
            "--duration",
            "0.5",
            "-q",
        ]);
        match style {
            "flag" => cmd.args(["--api-key", KEY]),
            "word" => cmd.arg(format!("api_key={KEY}")),
            _ => cmd.env("OPENAI_API_KEY", KEY),
        };
        for (flag, f) in ["--output", "--csv", "--events", "--output-metrics"]
            .iter()
            .zip(&files)
        {
            cmd.args([flag, f.to_str().unwrap()]);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
        all += &String::from_utf8_lossy(&out.stderr);
        assert!(all.contains("[trace    ]"), "trace records were logged");
        for f in &files {
            all += &std::fs::read_to_string(f).unwrap();
        }
        assert!(
            !all.contains(KEY) && !all.contains("SECRET"),
            "{style}: a secret leaked"
        );
        assert!(read_json(&files[0])["config"]["api_key_set"] == true);
    }
    // ... while the server did receive it, on every request.
    let recorded: Vec<_> = rx.try_iter().collect();
    assert!(!recorded.is_empty());
    for r in &recorded {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
    }
    // A key in the endpoint URL is refused without being echoed.
    let (code, _, err) = trie_run(&[
        "--workload",
        "x.jsonl",
        "--endpoint",
        "http://u:sk-SECRET@127.0.0.1:1",
    ]);
    assert_eq!(code, 2);
    assert!(
        !err.contains("SECRET") && err.contains("credentials"),
        "{err}"
    );
}

#[test]
fn a_run_where_no_trace_completes_exits_1() {
    // 1 token/s: no trace of the workload can finish in half a second.
    let sim = SimChild::start(&["--decode-tps", "1", "--prefill-tps", "0"]);
    let (code, stdout, err) = trie_run(&[
        "--workload",
        small_workload().to_str().unwrap(),
        "--endpoint",
        &sim.url,
        "--duration",
        "0.5",
        "-q",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("completed_requests=0"), "{err}");
    assert!(
        stdout.contains("completed=0/0"),
        "the tables are still printed: {stdout}"
    );
}

/// `mkfifo path`.
fn fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Read a FIFO to its end on another thread.
fn read_fifo(path: &Path) -> std::thread::JoinHandle<String> {
    let path = path.to_path_buf();
    std::thread::spawn(move || std::fs::read_to_string(path).unwrap())
}

#[test]
fn special_files_symlinks_and_descriptors_are_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::io::FromRawFd;
    use std::os::unix::process::CommandExt;
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let (link, target) = (dir.join("link.json"), dir.join("target.json"));
    std::os::unix::fs::symlink(&target, &link).unwrap(); // dangling until written
    let pipe_path = dir.join("metrics.fifo");
    fifo(&pipe_path);
    let metrics = read_fifo(&pipe_path);
    // Descriptor 3 of the run is the write end of a pipe (as `3>(...)`).
    let mut fds = [0; 2];
    // SAFETY: a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    let events = std::thread::spawn(move || {
        let mut s = String::new();
        // SAFETY: this thread owns the read end.
        let mut f = unsafe { std::fs::File::from_raw_fd(read_end) };
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        s
    });
    let (sim, _rx) = fast_sim(fast());
    let mut cmd = trie_bin();
    cmd.args([
        "--workload",
        small_workload().to_str().unwrap(),
        "--endpoint",
        &sim.url(),
        "--duration",
        "1",
        "-q",
        "--output",
        link.to_str().unwrap(),
        "--csv",
        "/proc/self/fd/1",
        "--output-metrics",
        pipe_path.to_str().unwrap(),
        "--events",
        "/dev/fd/3",
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::dup2(write_end, 3);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    // SAFETY: the parent's copy of the write end, so the reader sees EOF.
    unsafe { libc::close(write_end) };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The symlink stayed a symlink; its target holds the document.
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let s = trie::output::results::Results::read(&target)
        .unwrap()
        .summary;
    assert!(s.completed_requests > 0);
    // The FIFO stayed a FIFO, and its reader got one row per completed trace.
    assert!(std::fs::metadata(&pipe_path).unwrap().file_type().is_fifo());
    assert_eq!(
        metrics.join().unwrap().lines().count() as u64,
        s.completed_requests
    );
    // The CSV went to stdout, alone (the tables went to stderr): a CSV
    // reader of stdout sees a header and one row per trace.
    assert!(
        stdout.starts_with(trie::output::results::CSV_HEADER),
        "{stdout}"
    );
    assert!(
        stdout.lines().skip(1).all(|l| l.starts_with("trace-")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Per-trace metrics"));
    // The event log went down descriptor 3.
    let lines = events.join().unwrap();
    let ok = lines
        .lines()
        .filter(|l| l.contains("\"status\":\"ok\""))
        .count();
    assert_eq!(ok as u64, s.http_requests);
}

#[test]
fn a_closed_or_full_stdout_exits_1_and_keeps_the_files() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let (sim, _rx) = fast_sim(fast());
    let wl = small_workload();
    let args = |out: &Path| -> Vec<String> {
        [
            "--workload",
            wl.to_str().unwrap(),
            "--endpoint",
            &sim.url(),
            "--duration",
            "0.5",
            "-q",
            "--output",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // stdout on a full device.
    let out = dir.join("full.json");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = trie_bin().args(args(&out)).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        trie::output::results::Results::read(&out)
            .unwrap()
            .summary
            .completed_requests
            > 0
    );
    // stdout a pipe whose reader is gone (`| true`).
    let out = dir.join("closed.json");
    let mut child = trie_bin()
        .args(args(&out))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(results_ok(&out));
    // The event log on a full device: exit 1, the error names it.
    let out = dir.join("events-full.json");
    let mut a = args(&out);
    a.extend(["--events".to_string(), "/dev/full".to_string()]);
    let o = trie_bin().args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--events /dev/full: write failed"), "{err}");
    assert!(results_ok(&out));
}

fn results_ok(p: &Path) -> bool {
    trie::output::results::Results::read(p).is_ok()
}

#[test]
fn a_full_disk_never_leaves_a_torn_event_line() {
    use std::os::unix::process::CommandExt;
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let events = dir.join("e.jsonl");
    let (sim, _rx) = fast_sim(fast());
    let mut cmd = trie_bin();
    cmd.args([
        "--workload",
        small_workload().to_str().unwrap(),
        "--endpoint",
        &sim.url(),
        "--duration",
        "1",
        "-q",
        "--events",
        events.to_str().unwrap(),
    ]);
    // A disk that is full after 3,000 bytes: writes past it fail (EFBIG),
    // the one that crosses it only partly succeeds.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 3000,
                rlim_max: 3000,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--events") && err.contains("write failed"),
        "{err}"
    );
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.len() <= 3000 && text.len() > 500, "{}", text.len());
    assert!(text.ends_with('\n'), "a torn last line: {text}");
    assert!(jsonl(&events).iter().all(|e| e["status"].is_string()));
}

#[test]
fn a_fifo_without_a_reader_is_waited_for_until_one_signal() {
    let _cpu = crate::util::cpu_exclusive();
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let pipe_path = dir.join("nobody.fifo");
    fifo(&pipe_path);
    let server = crate::scripted::scripted(crate::scripted::normal);
    let child = trie_bin()
        .args([
            "--workload",
            small_workload().to_str().unwrap(),
            "--endpoint",
            &server.url,
            "--model",
            "m",
            "--tokenizer",
            "data/tokenizer.json",
            "--output",
            pipe_path.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = std::time::Instant::now();
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(1), "exit after {took:?}");
    assert!(err.contains("waiting for a reader"), "{err}");
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent"
    );
}

#[test]
fn the_open_file_limit_is_raised_or_the_run_refused() {
    let _cpu = crate::util::cpu_exclusive();
    use std::os::unix::process::CommandExt;
    let sim = SimChild::instant(&[]);
    let run_with_load = |soft: u64, hard: Option<u64>, load: &[&str]| {
        let mut cmd = trie_bin();
        cmd.args([
            "--workload",
            small_workload().to_str().unwrap(),
            "--endpoint",
            &sim.url,
            "--duration",
            "1.5",
            "-q",
        ]);
        cmd.args(load);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = soft;
                if let Some(h) = hard {
                    lim.rlim_max = h;
                }
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    let run_with = |soft, hard| run_with_load(soft, hard, &["--concurrency", "600"]);
    // `ulimit -n 256`: raised to the hard limit, and no failure of trie's own
    // making is blamed on the server.
    let o = run_with(256, None);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!out.contains("Failures"), "{out}");
    assert!(err.contains("failed_requests=0"), "{err}");
    // `ulimit -Hn 256`: refused before anything is sent.
    let o = run_with(256, Some(256));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--concurrency 600 needs about 664 open files") && err.contains("ulimit -Hn"),
        "{err}"
    );
    // An open loop at a low rate never comes near its default
    // --max-inflight 4096: a warning, and the run goes on.
    let o = run_with_load(256, Some(256), &["--arrival-rate", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--max-inflight 4096 needs about") && err.contains("fail as `client`"),
        "{err}"
    );
}

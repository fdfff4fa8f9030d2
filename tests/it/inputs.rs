//! Bad input, table-driven: every case exits 2 with a message naming the
//! place and the fix, and not one connection reaches the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::{row, temp_file, trie_run};

/// A listener that counts the connections it receives.
fn trap() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    (url, n)
}

#[test]
fn malformed_inputs_exit_2_and_send_nothing() {
    let good = row(100, &[5], &[10], 0.0, 5);
    let file = |name: &str, text: &str| temp_file(name, text).to_str().unwrap().to_string();
    let good_wl = file("good.jsonl", &good);
    let wl_row = |json: &str| file("w.jsonl", &format!("{good}\n{json}\n"));
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let loop_path = dir.join("loop.jsonl");
    let _ = std::fs::remove_file(&loop_path);
    std::os::unix::fs::symlink(&loop_path, &loop_path).unwrap();
    let bad_utf8 = dir.join("latin1.jsonl");
    std::fs::write(&bad_utf8, b"{\"num_turns\": 0 \xff}\n").unwrap();
    let empty_dir = dir.join("no-tokenizer");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let bad_tok = file("tokenizer.json", "{\"not\": \"a tokenizer\"");
    // Inputs a careless output flag could destroy: copies, so that a
    // failing check (on older code) harms nothing of the repository's.
    let wl_copy = file("copy.jsonl", &good);
    let tok_copy = file(
        "tokenizer.json",
        &std::fs::read_to_string("data/tokenizer.json").unwrap(),
    );
    let hard_link = dir.join("hard-link.jsonl");
    let _ = std::fs::remove_file(&hard_link);
    std::fs::hard_link(&wl_copy, &hard_link).unwrap();
    let sym_link = dir.join("sym-link.jsonl");
    let _ = std::fs::remove_file(&sym_link);
    std::os::unix::fs::symlink(&wl_copy, &sym_link).unwrap();
    let out_dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let out = |name: &str| out_dir.join(name).to_str().unwrap().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();

    // (what, args before the common ones, expected message parts)
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "row missing a field",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":0,"assistant_response_length":[],"tool_call_output_length":[],"tool_call_latency":[],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "input_prompt_length"],
        ),
        (
            "field of the wrong type",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":0,"input_prompt_length":"100","assistant_response_length":[],"tool_call_output_length":[],"tool_call_latency":[],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "input_prompt_length"],
        ),
        (
            "negative length",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[-5],"tool_call_output_length":[1],"tool_call_latency":[0.0],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "assistant_response_length"],
        ),
        (
            "negative latency",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[5],"tool_call_output_length":[1],"tool_call_latency":[-1.0],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "tool_call_latency"],
        ),
        (
            "NaN latency",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":1,"input_prompt_length":100,"assistant_response_length":[5],"tool_call_output_length":[1],"tool_call_latency":[NaN],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:"],
        ),
        (
            "fractional turns",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":1.5,"input_prompt_length":100,"assistant_response_length":[5],"tool_call_output_length":[1],"tool_call_latency":[0.0],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "num_turns"],
        ),
        (
            "list length mismatch",
            vec![
                "--workload".into(),
                wl_row(
                    r#"{"num_turns":2,"input_prompt_length":100,"assistant_response_length":[5],"tool_call_output_length":[1,2],"tool_call_latency":[0.0,0.0],"final_assistant_response_length":3}"#,
                ),
            ],
            vec![":2:", "num_turns"],
        ),
        (
            "bad JSON",
            vec!["--workload".into(), wl_row(r#"{"num_turns": 1,"#)],
            vec![":2:"],
        ),
        (
            "empty file",
            vec!["--workload".into(), file("empty.jsonl", "")],
            vec!["empty.jsonl", "no trace"],
        ),
        (
            "directory",
            vec!["--workload".into(), dir.to_str().unwrap().into()],
            vec!["is a directory"],
        ),
        (
            "unreadable file (symlink loop)",
            vec!["--workload".into(), loop_path.to_str().unwrap().into()],
            vec!["loop.jsonl", "cannot read it"],
        ),
        (
            "not UTF-8",
            vec!["--workload".into(), bad_utf8.to_str().unwrap().into()],
            vec!["latin1.jsonl", "UTF-8"],
        ),
        (
            "missing workload file",
            vec!["--workload".into(), "/nonexistent/w.jsonl".into()],
            vec!["/nonexistent/w.jsonl", "no such file"],
        ),
        (
            "unknown flag",
            vec!["--bogus".into(), "1".into()],
            vec!["unknown flag --bogus", "trie --help"],
        ),
        (
            "missing value",
            vec!["--concurrency".into()],
            vec!["--concurrency needs a value"],
        ),
        (
            "concurrency 0",
            vec!["--concurrency".into(), "0".into()],
            vec!["--concurrency must be at least 1"],
        ),
        (
            "negative duration",
            vec!["--duration".into(), "-1".into()],
            vec!["--duration", ">= 0"],
        ),
        (
            "num-gpus 0",
            vec!["--num-gpus".into(), "0".into()],
            vec!["--num-gpus must be at least 1"],
        ),
        (
            "timeout not a number",
            vec!["--timeout".into(), "soon".into()],
            vec!["--timeout: 'soon'"],
        ),
        (
            "negative seed",
            vec!["--seed".into(), "-1".into()],
            vec!["--seed: '-1'"],
        ),
        (
            "conflicting loads",
            vec![
                "--concurrency".into(),
                "4".into(),
                "--arrival-rate".into(),
                "2".into(),
            ],
            vec!["exclude each other"],
        ),
        (
            "open-loop flag without a rate",
            vec!["--arrival".into(), "poisson".into()],
            vec!["need --arrival-rate"],
        ),
        (
            "zero in-flight limit",
            vec![
                "--arrival-rate".into(),
                "2".into(),
                "--max-inflight".into(),
                "0".into(),
            ],
            vec!["--max-inflight must be at least 1"],
        ),
        (
            "bad stream word",
            vec!["stream=maybe".into()],
            vec!["stream: 'maybe'"],
        ),
        (
            "unknown word",
            vec!["concurrancy=4".into()],
            vec!["unknown setting 'concurrancy='", "known:"],
        ),
        (
            "URL with another scheme",
            vec!["--endpoint".into(), "ftp://127.0.0.1:21".into()],
            vec!["scheme must be http or https"],
        ),
        (
            "URL without scheme",
            vec!["--endpoint".into(), "127.0.0.1:8000".into()],
            vec!["is not a URL"],
        ),
        (
            "URL port out of range",
            vec!["--endpoint".into(), "http://127.0.0.1:99999".into()],
            vec!["not a port number"],
        ),
        (
            "URL without host",
            vec!["--endpoint".into(), "http://".into()],
            vec!["no valid host"],
        ),
        (
            "empty output path (an unset variable)",
            vec!["--output".into(), "".into()],
            vec!["--output is empty"],
        ),
        (
            "empty model",
            vec!["--model".into(), "".into()],
            vec!["--model is empty"],
        ),
        (
            "API key from a file with a newline",
            vec!["--api-key".into(), "sk-from-a-file-0123\n".into()],
            vec!["--api-key has a character", "position 20"],
        ),
        (
            "chat completions route",
            vec![
                "--endpoint".into(),
                "http://127.0.0.1:9/v1/chat/completions".into(),
            ],
            vec!["chat completions route", "pass the API base", "--api chat"],
        ),
        (
            "tokenizer file missing",
            vec!["--tokenizer".into(), "/nonexistent/tokenizer.json".into()],
            vec!["/nonexistent/tokenizer.json"],
        ),
        (
            "tokenizer not JSON",
            vec!["--tokenizer".into(), bad_tok.clone()],
            vec!["not a valid tokenizer.json"],
        ),
        (
            "tokenizer directory without tokenizer.json",
            vec!["--tokenizer".into(), empty_dir.to_str().unwrap().into()],
            vec!["no-tokenizer", "tokenizer.json"],
        ),
        (
            "output in a missing directory",
            vec!["--output".into(), "/nonexistent/dir/r.json".into()],
            vec!["--output", "does not exist"],
        ),
        (
            "events path is a directory",
            vec!["--events".into(), dir.to_str().unwrap().into()],
            vec!["--events", "is a directory"],
        ),
        (
            "two outputs, one file",
            vec![
                "--output".into(),
                "r.json".into(),
                "--csv".into(),
                "r.json".into(),
            ],
            vec!["are the same file"],
        ),
        (
            "the same file through ./",
            s(&["--output", &out("r.json"), "--csv", &out("./r.json")]),
            vec!["are the same file"],
        ),
        (
            "output over the workload",
            s(&["--workload", &wl_copy, "--output", &wl_copy]),
            vec!["is the workload", "would overwrite it"],
        ),
        (
            "event log over the tokenizer",
            s(&["--tokenizer", &tok_copy, "--events", &tok_copy]),
            vec!["--events", "is the tokenizer"],
        ),
        (
            "output over a hard link of the workload",
            s(&["--workload", &wl_copy, "--csv", hard_link.to_str().unwrap()]),
            vec!["--csv", "is the workload"],
        ),
        (
            "output over a symlink to the workload",
            s(&[
                "--workload",
                &wl_copy,
                "--output-metrics",
                sym_link.to_str().unwrap(),
            ]),
            vec!["--output-metrics", "is the workload"],
        ),
        (
            "output where no file can be created",
            s(&["--output", "/proc/r.json"]),
            vec!["--output /proc/r.json", "cannot create files in /proc"],
        ),
        (
            "csv where no file can be created",
            s(&["--csv", "/proc/sys/r.csv"]),
            vec!["--csv", "cannot create files in /proc/sys"],
        ),
        (
            "tool latency 1e19",
            s(&["--workload", &wl_row(&good.replace("[0.0]", "[1e19]"))]),
            vec![
                ":2:",
                "tool_call_latency[0]",
                "too large: at most 1000000 seconds",
            ],
        ),
        (
            "tool latency 1e308",
            s(&["--workload", &wl_row(&good.replace("[0.0]", "[1e308]"))]),
            vec![":2:", "tool_call_latency[0]", "too large"],
        ),
        (
            "a prompt of a billion tokens",
            s(&[
                "--workload",
                &wl_row(&good.replace(":100,", ":1000000000,")),
            ]),
            vec![
                ":2:",
                "input_prompt_length 1000000000 is too large: at most 2097152",
            ],
        ),
        (
            "arrival rate 1e-300",
            s(&["--arrival-rate", "1e-300"]),
            vec!["--arrival-rate", "out of range"],
        ),
        (
            "duration 1e19",
            s(&["--duration", "1e19"]),
            vec!["--duration", "too large: at most 1000000 seconds"],
        ),
        (
            "timeout 1e30",
            s(&["--timeout", "1e30"]),
            vec!["--timeout", "too large"],
        ),
        (
            "progress interval 1e19",
            s(&["--progress-interval", "1e19"]),
            vec!["--progress-interval", "too large"],
        ),
        (
            "progress interval that floods",
            s(&["--progress-interval", "0.01"]),
            vec!["--progress-interval must be at least 0.1 seconds"],
        ),
        (
            "concurrency of twenty digits",
            s(&["--concurrency", "99999999999999999999"]),
            vec!["--concurrency", "too large: at most 65536"],
        ),
        (
            "endpoint with another flag inside",
            s(&["--endpoint", "http://127.0.0.1:1 --model m"]),
            vec!["--endpoint", "contains spaces"],
        ),
        (
            "SSE line cap below 1 KiB",
            s(&["--max-line-bytes", "10"]),
            vec!["--max-line-bytes must be at least 1024"],
        ),
    ];
    assert!(cases.len() >= 25);
    let (url, connections) = trap();
    for (what, args, expected) in &cases {
        // The common flags come after the case's own, so the case's win
        // where it sets the same one (the last value counts).
        let mut all: Vec<String> = vec![
            "--workload".into(),
            good_wl.clone(),
            "--endpoint".into(),
            url.clone(),
            "--model".into(),
            "m".into(),
            "--tokenizer".into(),
            "data/tokenizer.json".into(),
        ];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = trie_run(&refs);
        assert_eq!(code, 2, "{what}: exit {code}\n{stderr}");
        assert!(stdout.is_empty(), "{what}: printed {stdout}");
        let msg = stderr.lines().last().unwrap_or("");
        assert!(msg.starts_with("error: "), "{what}: {stderr}");
        for part in expected {
            assert!(msg.contains(part), "{what}: {part:?} not in {msg:?}");
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "{what}: reached the server"
        );
    }
    // Nothing an output check refused was touched.
    assert_eq!(std::fs::read_to_string(&wl_copy).unwrap(), good);
    assert!(
        std::fs::symlink_metadata(&sym_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(trie::text::tokenizer::Tokenizer::from_file(std::path::Path::new(&tok_copy)).is_ok());
    // The sim's flags are bounded too.
    let (code, _, err) = trie_run(&["sim", "--fault-stall-secs", "1e19"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--fault-stall-secs") && err.contains("too large"),
        "{err}"
    );
    // The trap does count: a good command line reaches it (a byte-order mark
    // before the first row is accepted).
    let bom_wl = file("bom.jsonl", &format!("\u{feff}{good}\n"));
    let (code, _, _) = trie_run(&[
        "--workload",
        &bom_wl,
        "--endpoint",
        &url,
        "--model",
        "m",
        "--tokenizer",
        "data/tokenizer.json",
    ]);
    assert_eq!(code, 1);
    assert!(connections.load(Ordering::SeqCst) > 0);
}

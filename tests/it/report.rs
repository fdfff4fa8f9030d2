//! Golden tests of what trie prints: the tables of a run and `trie compare`,
//! byte for byte (`TRIE_UPDATE_GOLDEN=1` rewrites the files after a change
//! meant to alter them), and the width every table must fit.

use std::collections::BTreeMap;

use trie::output::report::{FigureMap, MAX_WIDTH, compare, tables};
use trie::record::metrics::{Rates, Stats};
use trie::record::summary::{ArrivalStats, FailureCount, PerRequest, PerTrace, Summary};

fn golden(name: &str, actual: &str) {
    let path = format!("tests/it/golden/{name}");
    if std::env::var_os("TRIE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} differs (TRIE_UPDATE_GOLDEN=1 rewrites it):\n{actual}"
    );
    for line in actual.lines() {
        assert!(
            line.chars().count() <= MAX_WIDTH,
            "{name}: a line of {} columns:\n{line}",
            line.chars().count()
        );
    }
}

fn stats(base: f64) -> Option<Stats> {
    Stats::of((1..=20).map(|i| base * i as f64))
}

fn rates(x: f64) -> Rates {
    Rates {
        prompt_tok_per_s: 40.0 * x,
        cached_prompt_tok_per_s: 30.0 * x,
        uncached_prompt_tok_per_s: 10.0 * x,
        completion_tok_per_s: x,
    }
}

/// A run with every kind of figure: large and small numbers, absent ones,
/// the per-GPU column, failures with long messages.
fn summary() -> Summary {
    let mut failures = BTreeMap::new();
    failures.insert(
        "http_503".to_string(),
        FailureCount {
            traces: 3,
            retried_attempts: 41,
            examples: vec!["HTTP 503: {\"error\":{\"message\":\"the engine is overloaded, try again later; queue depth 4096 exceeds the configured limit\"}}".into()],
        },
    );
    failures.insert(
        "bad_usage".to_string(),
        FailureCount {
            traces: 1,
            retried_attempts: 0,
            examples: vec![
                "the server reported 18446744073709551615 completion_tokens for max_tokens 64"
                    .into(),
            ],
        },
    );
    Summary {
        stream: true,
        num_gpus: Some(8),
        completed_requests: 1234,
        failed_requests: 4,
        trace_per_s: 0.6856,
        wall_time_s: 1800.0,
        per_trace: PerTrace {
            latency_s: stats(611.1),
            ttft_s: stats(0.0123),
            ttfat_s: stats(45.6),
            decode_tps: stats(7.89),
            decode_tpot_ms: stats(0.61),
            itl_ms: None,
            cache_hit_rate_pct: stats(4.9),
            eligible_cache_hit_rate_pct: None,
            output_tokens_per_turn: stats(12.5),
            output_tokens_per_trace: stats(104_857.6),
        },
        http_requests: 9876,
        per_request: PerRequest {
            ttft_s: stats(0.0042),
            itl_ms: stats(12.34),
            decode_tps: stats(81.0),
            latency_s: stats(2.5),
            prompt_tokens: stats(131_072.0),
            cached_tokens: None,
            completion_tokens: stats(512.0),
        },
        overall: Some(rates(15_250.4)),
        last_30s_window: None,
        steady_state: Some(rates(16_686.62)),
        steady_state_per_gpu: Some(rates(16_686.62).per(8.0)),
        failures,
        arrival: Some(ArrivalStats {
            late_s_p50: None,
            late_s_p99: None,
            waited_for_limit: 0,
        }),
        ..Summary::default()
    }
}

#[test]
fn the_tables_of_a_run() {
    golden("tables.txt", &tables(&summary()));
    // Nothing completed: absent figures print as –, never 0.000.
    let empty = Summary {
        stream: true,
        overall: Some(Rates::default()),
        ..Summary::default()
    };
    golden("tables-empty.txt", &tables(&empty));
}

#[test]
fn trie_compare_side_by_side() {
    let a: FigureMap = [
        ("completed_requests", Some(100.0)),
        ("trace_per_s", Some(0.5)),
        ("steady_state_completion_tok_per_s", Some(1500.25)),
        ("ttft_s_p50", Some(0.25)),
        ("ttft_s_p99", None),
        ("itl_ms_p50", None),
        ("prompt_token_mismatches", Some(0.0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut b = a.clone();
    b.insert("completed_requests".into(), Some(120.0));
    b.insert("trace_per_s".into(), Some(0.6));
    b.insert("ttft_s_p50".into(), None);
    b.insert("ttft_s_p99".into(), Some(0.75));
    b.insert("prompt_token_mismatches".into(), Some(3.0));
    let text = compare(&[
        ("vllm.json".into(), &a, None),
        ("sglang.json".into(), &b, None),
    ]);
    // itl_ms_p50 is absent from both runs: its row is left out.
    assert!(!text.contains("itl_ms_p50"));
    golden("compare.txt", &text);
}

#[test]
fn compare_marks_differences_within_the_trials_noise() {
    use trie::output::report::IntervalMap;
    use trie::record::stats::Interval;
    let means = |tput: f64, ttft: f64| -> FigureMap {
        [("trace_per_s", Some(tput)), ("ttft_s_p50", Some(ttft))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    let ivs = |tput: &[f64], ttft: &[f64]| -> IntervalMap {
        [("trace_per_s", tput), ("ttft_s_p50", ttft)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Interval::of(v, 0.95)))
            .collect()
    };
    // Throughput 1.0 vs 2.0 with tight trials: significant. TTFT 0.5 vs
    // 0.6 with wide ones: within the noise.
    let (fa, ia) = (means(1.0, 0.5), ivs(&[0.99, 1.0, 1.01], &[0.3, 0.5, 0.7]));
    let (fb, ib) = (means(2.0, 0.6), ivs(&[1.99, 2.0, 2.01], &[0.4, 0.6, 0.8]));
    let text = compare(&[("a".into(), &fa, Some(&ia)), ("b".into(), &fb, Some(&ib))]);
    let line = |name: &str| text.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(
        line("trace_per_s").contains("(+100.0%)") && !line("trace_per_s").contains("n.s."),
        "{text}"
    );
    assert!(line("ttft_s_p50").contains("(+20.0%) n.s."), "{text}");
    // Single runs carry no intervals: no marks.
    let plain = compare(&[("a".into(), &fa, None), ("b".into(), &fb, None)]);
    assert!(!plain.contains("n.s."));
}

#[test]
fn counts_among_requests_are_absent_when_no_request_completed() {
    let value = |s: &Summary, name: &str| {
        trie::output::report::figures(s)
            .into_iter()
            .find(|f| f.name == name)
            .unwrap()
            .value
    };
    let none = Summary::default();
    for name in [
        "prompt_token_mismatches",
        "requests_without_usage",
        "short_completions",
    ] {
        assert_eq!(value(&none, name), None, "{name}");
        assert_eq!(value(&summary(), name), Some(0.0), "{name}");
    }
    assert_eq!(value(&none, "failed_requests"), Some(0.0));
}

#[test]
fn the_readme_usage_block_is_the_help_text() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("## Usage\n\n```text\n").expect("a Usage block") + 18;
    let end = start + readme[start..].find("```\n").unwrap();
    let help = trie::cli::help();
    assert!(
        readme[start..end] == help,
        "README's usage block differs from trie --help; paste the output of trie --help"
    );
    // Every flag of the table is in the help, with its Python word.
    for f in trie::cli::FLAGS {
        assert!(help.contains(f.long), "{}", f.long);
        if let Some(py) = f.py {
            assert!(help.contains(&format!(" {py}=")), "{py}");
        }
    }
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    // Module graphs from `crate::` paths outside tests, at two levels: the
    // top-level modules (the folders and the flat primitives), and every
    // file (`exec::run`, `config`). Neither may have a cycle.
    use std::collections::{BTreeMap, BTreeSet};
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let folders: BTreeSet<String> = std::fs::read_dir("src")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    // `a::b::c` → the file it names: `a::b` inside a folder `a`, else `a`.
    let node = |path: &[&str]| -> String {
        match path {
            [a, b, ..] if folders.contains(*a) && *a != "sim" => format!("{a}::{b}"),
            [a, ..] => a.to_string(),
            [] => String::new(),
        }
    };
    let top = |n: &str| n.split("::").next().unwrap().to_string();
    let mut all = Vec::new();
    files(std::path::Path::new("src"), &mut all);
    let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &all {
        let rel: Vec<String> = f
            .strip_prefix("src")
            .unwrap()
            .iter()
            .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
            .filter(|c| c != "mod")
            .collect();
        let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
        let me = node(&rel);
        if me == "lib" || me == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = by_file.entry(me.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let path: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            let dep = node(&parts);
            if !dep.is_empty() && dep != me {
                deps.insert(dep);
            }
        }
    }
    let mut by_top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in &by_file {
        let t = by_top.entry(top(m)).or_default();
        t.extend(deps.iter().map(|d| top(d)).filter(|d| *d != top(m)));
    }
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    for g in [&by_file, &by_top] {
        let mut done = BTreeSet::new();
        for m in g.keys() {
            if let Some(c) = visit(m, g, &mut Vec::new(), &mut done) {
                panic!("import cycle: {}", c.join(" -> "));
            }
        }
    }
    assert!(by_file.len() > 30 && by_top.len() > 10, "{by_file:?}");
    assert!(
        by_file["exec::drive"].contains("output::sweep"),
        "{by_file:?}"
    );
}

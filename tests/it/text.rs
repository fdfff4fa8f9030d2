//! `--text words|random-tokens|corpus[:FILE]` against in-process sims:
//! every mode exact to the token in both APIs, and bad corpora refused
//! before anything is sent.

use std::time::Duration;

use trie::exec::run::{Hooks, run};
use trie::sim::Recorded;
use trie::text::content::TextMode;
use trie::text::tokenizer::Tokenizer;
use trie::{Api, Config};

use crate::util::{fast, fast_sim, row, temp_file, trie_run};

/// The first prompt (completions) or first user message (chat) of trace 0.
fn first_text(rx: &crossbeam_channel::Receiver<Recorded>) -> String {
    let r = rx
        .try_iter()
        .find(|r| r.routing_key.as_deref() == Some("trace-0"))
        .expect("trace 0 was sent");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    match body["prompt"].as_str() {
        Some(p) => p.to_string(),
        None => body["messages"][0]["content"].as_str().unwrap().to_string(),
    }
}

#[test]
fn every_text_mode_is_exact_in_both_apis() {
    let tok = Tokenizer::from_file(std::path::Path::new("data/tokenizer.json")).unwrap();
    let corpus = temp_file(
        "corpus.txt",
        &"Zebras quietly gather near the old mill; \"why?\" asked nobody.\n".repeat(40),
    );
    let wl = temp_file("w.jsonl", &row(700, &[12, 9], &[250, 80], 0.0, 15));
    for api in [Api::Completions, Api::Chat] {
        for mode in [
            TextMode::Words,
            TextMode::RandomTokens,
            TextMode::Corpus(None),
            TextMode::Corpus(Some(corpus.clone())),
        ] {
            let (sim, rx) = fast_sim(fast());
            let s = run(
                &Config::new(wl.to_str().unwrap(), &sim.url())
                    .unwrap()
                    .model("trie-sim")
                    .tokenizer("data/tokenizer.json")
                    .api(api)
                    .text(mode.clone())
                    .concurrency(2)
                    .duration(Duration::from_millis(700)),
                &Hooks::default(),
            )
            .unwrap();
            let what = format!("{} {}", api.name(), mode.name());
            assert!(s.completed_requests >= 2, "{what}: {s:?}");
            assert_eq!(s.prompt_token_mismatches, 0, "{what}");
            assert!(s.failures.is_empty(), "{what}: {:?}", s.failures);
            let text = first_text(&rx);
            // Completions: BOS is the server's; chat: all 700 are content.
            let want = if api == Api::Chat { 700 } else { 699 };
            assert_eq!(tok.count(&text), want, "{what}");
            let words = text.bytes().all(|b| b == b' ' || b.is_ascii_lowercase());
            assert_eq!(words, mode == TextMode::Words, "{what}: {text:.200}");
            if let TextMode::Corpus(Some(_)) = mode {
                assert!(
                    text.contains("Zebras quietly gather"),
                    "{what}: {text:.300}"
                );
            }
        }
    }
}

#[test]
fn bad_text_modes_and_corpora_are_refused_before_anything_is_sent() {
    let wl = temp_file("w.jsonl", &row(100, &[], &[], 0.0, 10));
    let w = wl.to_str().unwrap();
    let small = temp_file("small.txt", "too little text");
    let binary = temp_file("bin.txt", "");
    std::fs::write(
        &binary,
        [b'a'; 2000]
            .iter()
            .chain(&[0xff, 0xfe])
            .copied()
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let corpus_arg = |p: &std::path::Path| format!("corpus:{}", p.display());
    let fifo = small.with_file_name("fifo.txt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let cases = [
        (
            vec!["--text".to_string(), "lorem".into()],
            "is not a text mode".to_string(),
        ),
        (
            vec!["--text".into(), "corpus:/nonexistent/c.txt".into()],
            "cannot read it".into(),
        ),
        (
            vec!["--text".into(), corpus_arg(&small)],
            "fewer than the 1024".into(),
        ),
        (
            vec!["--text".into(), corpus_arg(&binary)],
            "not UTF-8 text (invalid byte at offset 2000)".into(),
        ),
    ];
    for (args, needle) in cases {
        // A URL nothing listens on: had anything been sent, the error
        // would be a connection refused.
        let mut all = vec![
            "--workload",
            w,
            "--endpoint",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--tokenizer",
            "data/tokenizer.json",
        ];
        all.extend(args.iter().map(String::as_str));
        let (code, _out, err) = trie_run(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert!(err.contains(&needle), "{all:?}: {err}");
    }
    // The corpus is an input: no output may overwrite it.
    let corpus = temp_file("keep.txt", &"Some natural text here. ".repeat(100));
    let (code, _out, err) = trie_run(&[
        "--workload",
        w,
        "--endpoint",
        "sim",
        "--text",
        &corpus_arg(&corpus),
        "--output",
        corpus.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the corpus"), "{err}");
    assert!(
        std::fs::read_to_string(&corpus)
            .unwrap()
            .starts_with("Some natural")
    );
}

#[test]
fn the_text_pools_cut_exactly_for_a_production_tokenizer_too() {
    let path = std::path::Path::new("../shared/real-server/deepseek-v4/tokenizer.json");
    let Ok(tok) = Tokenizer::from_file(path) else {
        eprintln!("skipped: no DeepSeek-V4 tokenizer in ../shared/real-server");
        return;
    };
    let synth = trie::text::prompt::Synth::new(&tok).unwrap();
    for mode in [TextMode::RandomTokens, TextMode::Corpus(None)] {
        let content = trie::text::content::Content::new(&mode, &tok, &synth, None);
        assert!(
            matches!(content, trie::text::content::Content::Pool(_)),
            "{}",
            mode.name()
        );
        for (key, n) in [(1u64, 5usize), (2, 77), (3, 1000), (4, 20_000)] {
            let text = content.segment(&synth, key, n);
            assert_eq!(tok.count(&text), n, "{} key {key}", mode.name());
        }
    }
}

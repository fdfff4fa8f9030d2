//! Dataset aliases and tokenizers downloaded from `HF_ENDPOINT` (a local
//! server here), atomically into their caches.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use crossbeam_channel::Receiver;
use trie::stop::Stop;

use crate::util::{row, temp_file};

/// Serve `files` (path → body; others 404) on 127.0.0.1 with `commit` as
/// `X-Repo-Commit`; hands back each path asked.
fn hub(files: Vec<(String, Vec<u8>)>, commit: &'static str) -> (String, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let _ = tx.send(path.clone());
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Repo-Commit: {commit}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(head.as_bytes()).unwrap();
                    stream.write_all(body).unwrap();
                }
                None => stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .unwrap(),
            }
        }
    });
    (url, rx)
}

#[test]
fn aliases_and_tokenizers_download_once_into_their_caches() {
    let wl = row(30, &[2], &[3], 0.0, 4);
    let tokenizer = std::fs::read("data/tokenizer.json").unwrap();
    let (url, asked) = hub(
        vec![
            (
                "/datasets/lightseekorg/trie-dataset/resolve/main/code_qa_8k.jsonl".into(),
                wl.clone().into_bytes(),
            ),
            (
                "/acme/tiny/resolve/main/tokenizer.json".into(),
                tokenizer.clone(),
            ),
        ],
        "abc1234",
    );
    let cache = temp_file("x", "").parent().unwrap().to_path_buf();
    // SAFETY: only these tests read these variables; set before any use here.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &url);
        std::env::set_var("TRIE_DATASET_CACHE", cache.join("datasets"));
        std::env::set_var("HF_HUB_CACHE", cache.join("hub"));
    }
    let path = trie::input::workload::resolve("qa", &Stop::new()).unwrap();
    assert_eq!(path, cache.join("datasets/code_qa_8k.jsonl"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), wl);
    assert_eq!(
        trie::input::workload::resolve("qa", &Stop::new()).unwrap(),
        path,
        "second use reads the cache"
    );
    assert_eq!(
        trie::input::workload::resolve("my.jsonl", &Stop::new()).unwrap(),
        std::path::PathBuf::from("my.jsonl")
    );

    let tok = trie::text::tokenizer::resolve("acme/tiny", &Stop::new()).unwrap();
    assert_eq!(
        tok,
        cache.join("hub/models--acme--tiny/snapshots/abc1234/tokenizer.json")
    );
    assert_eq!(std::fs::read(&tok).unwrap(), tokenizer);
    assert_eq!(
        trie::text::tokenizer::resolve("acme/tiny", &Stop::new()).unwrap(),
        tok,
        "found in the Hub cache"
    );

    let e = trie::text::tokenizer::resolve("acme/missing", &Stop::new()).unwrap_err();
    assert!(
        e.to_string().contains("HTTP 404") && e.exit_code() == 2,
        "{e}"
    );
    assert!(
        !cache
            .join("hub/models--acme--missing/snapshots/abc1234")
            .exists(),
        "no partial file"
    );
    let e = trie::input::workload::resolve("office", &Stop::new()).unwrap_err();
    assert!(e.to_string().contains("download failed"), "{e}");
    assert!(
        std::fs::read_dir(cache.join("datasets")).unwrap().count() == 1,
        "no partial file left behind"
    );
    let asked: Vec<String> = asked.try_iter().collect();
    assert_eq!(asked.len(), 4, "{asked:?}");

    // A hub whose commit header is a path cannot make trie write outside
    // its cache: the header is ignored.
    let (url, _) = hub(
        vec![(
            "/acme/evil/resolve/main/tokenizer.json".into(),
            tokenizer.clone(),
        )],
        "../../../../escaped",
    );
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_ENDPOINT", &url) };
    let tok = trie::text::tokenizer::resolve("acme/evil", &Stop::new()).unwrap();
    assert_eq!(
        tok,
        cache.join("hub/models--acme--evil/snapshots/main/tokenizer.json")
    );
    assert!(!cache.join("escaped").exists() && !cache.parent().unwrap().join("escaped").exists());
}

#[test]
fn tokenizer_paths_and_directories() {
    let dir = temp_file(
        "tokenizer.json",
        &std::fs::read_to_string("data/tokenizer.json").unwrap(),
    );
    let d = dir.parent().unwrap();
    assert_eq!(
        trie::text::tokenizer::resolve(d.to_str().unwrap(), &Stop::new()).unwrap(),
        dir
    );
    let empty = temp_file("other.txt", "").parent().unwrap().to_path_buf();
    let e = trie::text::tokenizer::resolve(empty.to_str().unwrap(), &Stop::new()).unwrap_err();
    assert!(e.to_string().contains("has no tokenizer.json"), "{e}");
    let e = trie::text::tokenizer::resolve("not-a-hub-id", &Stop::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("not a file, not a directory, and not a Hub id"),
        "{e}"
    );
    let bad = temp_file("tokenizer.json", "{\"not\": \"a tokenizer\"}");
    let Err(e) = trie::text::tokenizer::Tokenizer::from_file(&bad) else {
        panic!("loaded a bad tokenizer")
    };
    assert!(
        e.to_string().contains("not a valid tokenizer.json") && e.exit_code() == 2,
        "{e}"
    );
}

//! Finding and loading the client-side tokenizer (`tokenizer.json`, the Hugging
//! Face format) that must match the server's.
//!
//! `--tokenizer` may be a file, a directory holding `tokenizer.json`, or a Hub
//! model id `ORG/NAME`: looked up in the local Hub cache (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`) and otherwise downloaded from
//! `HF_ENDPOINT` (with `HF_TOKEN`) into that cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, select};

use crate::error::{Error, Result};
use crate::input::hub;
use crate::stop::Stop;

/// A loaded tokenizer; counting never adds special tokens (the server adds BOS).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was loaded from (for the run configuration and messages).
    pub source: String,
    /// FNV-1a of the tokenizer.json bytes, as hex.
    pub content_hash: String,
}

impl Tokenizer {
    /// Load a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::usage(format!(
                "tokenizer {}: cannot read it ({e}); pass --tokenizer with a tokenizer.json file, a directory holding one, or a Hub id ORG/NAME",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Load a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Tokenizer> {
        // Our own threads are the parallelism; rayon inside encode would only
        // compete with them.
        tokenizers::utils::parallelism::set_parallelism(false);
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            Error::usage(format!(
                "tokenizer {source}: not a valid tokenizer.json ({e}); pass --tokenizer with the tokenizer.json of the served model"
            ))
        })?;
        Ok(Tokenizer {
            inner: for_counting(inner),
            source: source.to_string(),
            content_hash: crate::input::workload::fnv1a_hex(bytes),
        })
    }

    /// The text of one added token that is not marked special (such as
    /// DeepSeek's `<｜Assistant｜>`), if the tokenizer has any. Engines differ
    /// on these: Hugging Face tokenizers (vLLM, SGLang) match them in prompt
    /// text as one token, llama.cpp may read them as plain text.
    pub fn plain_added_token(&self) -> Option<String> {
        self.inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| !t.special && !t.content.trim().is_empty())
            .map(|t| t.content)
            .min()
    }

    /// The same tokenizer reading non-special added tokens as plain text (as
    /// llama.cpp does for some vocabularies). `None` when there are none.
    pub fn with_added_tokens_as_text(&self) -> Option<Tokenizer> {
        self.plain_added_token()?;
        let mut json: serde_json::Value =
            serde_json::from_str(&self.inner.to_string(false).ok()?).ok()?;
        json["added_tokens"]
            .as_array_mut()?
            .retain(|t| t["special"].as_bool().unwrap_or(true));
        let inner = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).ok()?;
        Some(Tokenizer {
            inner: for_counting(inner),
            source: format!("{} (added tokens as text)", self.source),
            content_hash: self.content_hash.clone(),
        })
    }

    /// The same tokenizer keeping up to `words` merged words per thread
    /// that uses it: only for the few [`Workers`] threads.
    fn with_word_cache(&self, words: usize) -> Tokenizer {
        let mut inner = self.inner.clone();
        let mut model = inner.get_model().clone();
        model.resize_cache(words);
        inner.with_model(model);
        Tokenizer {
            inner,
            source: self.source.clone(),
            content_hash: self.content_hash.clone(),
        }
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.inner.encode_fast(text, false) {
            Ok(enc) => enc.get_ids().to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Number of tokens of `text`, without special tokens: the tokenizer's
    /// own pipeline (added tokens, normalizer, pre-tokenizer, model), only
    /// without building an `Encoding` (a string, offsets and five vectors
    /// per token), which was most of a count's cost.
    pub fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        self.pipeline_count(text)
            .unwrap_or_else(|| self.encode(text).len())
    }

    fn pipeline_count(&self, text: &str) -> Option<usize> {
        use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizer};
        let t = &self.inner;
        let mut pieces = t
            .get_added_vocabulary()
            .extract_and_normalize(t.get_normalizer(), text);
        if let Some(p) = t.get_pre_tokenizer() {
            p.pre_tokenize(&mut pieces).ok()?;
        }
        let model = t.get_model();
        pieces.tokenize(|n| model.tokenize(n.get())).ok()?;
        Some(
            pieces
                .get_splits(OffsetReferential::Original, OffsetType::None)
                .iter()
                .map(|(_, _, tokens)| tokens.as_ref().map_or(0, |t| t.len()))
                .sum(),
        )
    }

    /// Text of a sequence of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// The byte offsets (start, end) of each token of `text`.
    pub fn token_offsets(&self, text: &str) -> Vec<(usize, usize)> {
        match self.inner.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            Err(_) => Vec::new(),
        }
    }

    /// Ids of the added tokens (special or not).
    pub fn added_ids(&self) -> Vec<u32> {
        self.inner.get_added_tokens_decoder().into_keys().collect()
    }

    /// Text of one token id (empty for unknown ids).
    pub fn decode_one(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_default()
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> u32 {
        self.inner.get_vocab_size(true) as u32
    }
}

/// Words each [`Workers`] thread keeps merged (tokenizers' default): a
/// few MB per thread, bounded, on a handful of threads.
const WORKER_WORDS: usize = 10_000;

/// `t` as trie counts with it: without the truncation or padding its
/// tokenizer.json may set (for training: a count is of the whole text,
/// never cut or padded), and without its BPE word cache. tokenizers keeps
/// that cache per thread (10,000 words in each): with one thread per slot
/// (and per connection of the sim) it grew a 256-slot run by 136 MB in
/// five minutes, for a speed-up of counting of about a quarter; only the
/// few [`Workers`] threads get one.
fn for_counting(mut t: tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    t.with_padding(None);
    // Clearing truncation cannot fail (only a bad stride can).
    let _ = t.with_truncation(None);
    let mut model = t.get_model().clone();
    model.resize_cache(0);
    t.with_model(model);
    t
}

/// Tokenizer work during a run, done on a few threads of its own (one per
/// core) instead of the hundreds of slot (or sim connection) threads. glibc
/// keeps a cache of freed small blocks per thread, and tokenizing makes many:
/// spread over 256 slot threads they grew a run's memory by tens of MB over
/// minutes. Waiting here also lets a slot walk away at once when its run
/// stops, whatever is being counted.
///
/// Dropped, the workers end once their current job is done, and are joined;
/// a worker still counting after [`JOIN_GRACE`] (a million-token reply takes
/// seconds) is left to end on its own, since a stopped run must end at once.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    /// Dropped to end the workers.
    close: Option<Sender<()>>,
    stop: Option<Stop>,
    threads: Vec<JoinHandle<()>>,
    /// Disconnected once every worker has ended.
    ended: Receiver<()>,
}

/// How long a dropped [`Workers`] waits for its threads.
pub const JOIN_GRACE: Duration = Duration::from_millis(200);

/// Texts and the token count of each.
pub type TextsCounted = (Vec<String>, Vec<usize>);

/// A count's id, its texts and their counts (`Err`: the tokenizer panicked).
type Counted = (u64, Vec<String>, std::result::Result<Vec<usize>, String>);

enum Job {
    /// Count each text; `id` and the texts come back with the counts.
    Count {
        id: u64,
        texts: Vec<String>,
        back: Sender<Counted>,
    },
    /// The ids of a text.
    Encode {
        text: String,
        back: Sender<Vec<u32>>,
    },
}

impl Workers {
    /// Start one worker per core (at most 16) on `tok`. Once `stop` is set,
    /// jobs not yet begun are dropped.
    pub fn start(tok: Arc<Tokenizer>, stop: Option<Stop>) -> Result<Workers> {
        // A word cache here, where the threads are few, and nowhere else.
        let tok = Arc::new(tok.with_word_cache(WORKER_WORDS));
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 16);
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let (alive, ended) = crossbeam_channel::bounded::<()>(0);
        let (close, closed) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tok, rx, stop, alive) = (tok.clone(), rx.clone(), stop.clone(), alive.clone());
            let closed = closed.clone();
            let t = std::thread::Builder::new()
                .name(format!("tokenizer-{i}"))
                .spawn(move || {
                    work(&tok, &rx, &closed, stop.as_ref());
                    drop(alive);
                })
                .map_err(|e| Error::run(format!("cannot start a tokenizer thread: {e}")))?;
            threads.push(t);
        }
        Ok(Workers {
            jobs: Some(jobs),
            close: Some(close),
            stop,
            threads,
            ended,
        })
    }

    /// A counter for one thread's use.
    pub fn counter(&self) -> Counter {
        let (back, rx) = crossbeam_channel::unbounded();
        Counter {
            jobs: self.jobs.clone(),
            back,
            rx,
            next: std::cell::Cell::new(0),
        }
    }

    /// The ids of `text` (without special tokens); none once the stop is set.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let (back, rx) = crossbeam_channel::bounded(1);
        let job = Job::Encode {
            text: text.to_string(),
            back,
        };
        if !matches!(self.jobs.as_ref().map(|j| j.send(job)), Some(Ok(()))) {
            return Vec::new();
        }
        let never = crossbeam_channel::never();
        let stopped = self.stop.as_ref().map_or(&never, Stop::receiver);
        select! {
            recv(rx) -> ids => ids.unwrap_or_default(),
            recv(stopped) -> _ => Vec::new(),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs.take();
        self.close.take();
        let deadline = Instant::now() + JOIN_GRACE;
        if let Err(RecvTimeoutError::Disconnected) = self.ended.recv_deadline(deadline) {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        } else {
            log::debug!("a tokenizer worker is still counting; not waiting for it");
        }
    }
}

fn work(tok: &Tokenizer, jobs: &Receiver<Job>, closed: &Receiver<()>, stop: Option<&Stop>) {
    loop {
        // Ends when the Workers are dropped, whatever Counters remain.
        let job = select! {
            recv(jobs) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(closed) -> _ => return,
        };
        if stop.is_some_and(Stop::is_set) {
            continue;
        }
        match job {
            Job::Count { id, texts, back } => {
                let counts = guarded(|| texts.iter().map(|t| tok.count(t)).collect());
                let _ = back.send((id, texts, counts));
            }
            Job::Encode { text, back } => {
                let _ = back.send(guarded(|| tok.encode(&text)).unwrap_or_default());
            }
        }
    }
}

/// `f()`, or the message of its panic (a bug in tokenizers or trie): the
/// worker lives on.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        format!(
            "the tokenizer panicked: {}",
            crate::error::panic_message(&p)
        )
    })
}

/// One thread's way to the [`Workers`].
pub struct Counter {
    jobs: Option<Sender<Job>>,
    back: Sender<Counted>,
    rx: Receiver<Counted>,
    next: std::cell::Cell<u64>,
}

impl Counter {
    /// `texts` back with the token count of each; `Ok(None)` when `stop` is
    /// set first (the counting may go on, and its result is then ignored);
    /// `Err` when the tokenizer panicked.
    pub fn count(
        &self,
        texts: Vec<String>,
        stop: &Stop,
    ) -> std::result::Result<Option<TextsCounted>, String> {
        if stop.is_set() {
            return Ok(None);
        }
        let id = self.next.get();
        self.next.set(id + 1);
        let job = Job::Count {
            id,
            texts,
            back: self.back.clone(),
        };
        if !matches!(self.jobs.as_ref().map(|j| j.send(job)), Some(Ok(()))) {
            return Ok(None);
        }
        loop {
            select! {
                recv(self.rx) -> r => match r {
                    Ok((got, texts, counts)) if got == id => return counts.map(|c| Some((texts, c))),
                    Ok(_) => continue, // the answer to a count given up on
                    Err(_) => return Ok(None),
                },
                recv(stop.receiver()) -> _ => return Ok(None),
            }
        }
    }
}

/// The local Hub cache directory.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("hub");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

/// Is `spec` shaped like a Hub model id (`ORG/NAME`)?
fn is_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    ok(org) && ok(name)
}

/// Resolve `--tokenizer` to a `tokenizer.json` path, downloading it if
/// needed (`stop` breaks the download off).
pub fn resolve(spec: &str, stop: &Stop) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        let file = path.join("tokenizer.json");
        if file.is_file() {
            return Ok(file);
        }
        return Err(Error::usage(format!(
            "tokenizer directory {spec} has no tokenizer.json; pass --tokenizer with the file itself or a directory that holds one"
        )));
    }
    if !is_hub_id(spec) {
        return Err(Error::usage(format!(
            "tokenizer '{spec}' not found: it is not a file, not a directory, and not a Hub id ORG/NAME; pass --tokenizer PATH|DIR|ORG/NAME"
        )));
    }
    let (org, name) = spec.split_once('/').expect("checked by is_hub_id");
    let repo_dir = hub_cache_dir().join(format!("models--{org}--{name}"));
    if let Some(found) = cached_snapshot(&repo_dir) {
        return Ok(found);
    }
    let url = format!(
        "{}/{org}/{name}/resolve/main/tokenizer.json",
        hub::endpoint()
    );
    let staging = repo_dir.join("snapshots/.trie-download/tokenizer.json");
    let token = std::env::var("HF_TOKEN").ok();
    let got = hub::download(&url, &staging, token.as_deref(), stop).map_err(|e| {
        if stop.is_set() {
            return Error::Interrupted;
        }
        Error::usage(format!(
            "tokenizer '{spec}' is not in the local Hub cache ({}) and could not be downloaded: {e}; pass --tokenizer with a local tokenizer.json",
            repo_dir.display()
        ))
    })?;
    let rev = got.commit.unwrap_or_else(|| "main".to_string());
    let final_dir = repo_dir.join("snapshots").join(&rev);
    std::fs::create_dir_all(&final_dir)
        .and_then(|_| std::fs::rename(&staging, final_dir.join("tokenizer.json")))
        .and_then(|_| std::fs::create_dir_all(repo_dir.join("refs")))
        .and_then(|_| std::fs::write(repo_dir.join("refs/main"), &rev))
        .map_err(|e| {
            Error::run(format!(
                "cannot store tokenizer in {}: {e}",
                final_dir.display()
            ))
        })?;
    Ok(final_dir.join("tokenizer.json"))
}

/// A snapshot's tokenizer.json in a Hub cache repo directory: the one `refs/main`
/// names, else any snapshot that has one.
fn cached_snapshot(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if let Some(rev) = std::fs::read_to_string(repo_dir.join("refs/main"))
        .ok()
        .filter(|r| hub::is_commit(r.trim()) || r.trim() == "main")
    {
        let file = snapshots.join(rev.trim()).join("tokenizer.json");
        if file.is_file() {
            return Some(file);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path().join("tokenizer.json"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled tokenizer with `content` as an added, not special, token.
    fn bundled_with_added(content: &str) -> Tokenizer {
        let mut json: serde_json::Value =
            serde_json::from_slice(crate::sim::BUNDLED_TOKENIZER).unwrap();
        json["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": 8192, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": true, "special": false
            }));
        Tokenizer::from_bytes(json.to_string().as_bytes(), content).unwrap()
    }

    #[test]
    fn added_tokens_can_be_read_as_plain_text() {
        let tok = bundled_with_added("<|tool|>");
        assert_eq!(tok.plain_added_token().as_deref(), Some("<|tool|>"));
        let text = "hello<|tool|>world";
        let plain = tok.with_added_tokens_as_text().unwrap();
        // One token as an added token; several as plain text, the same as
        // the tokenizer without it counts.
        let bundled = Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "b").unwrap();
        assert_eq!(
            tok.count(text),
            bundled.count("hello") + 1 + bundled.count("world")
        );
        assert_eq!(plain.count(text), bundled.count(text));
        assert!(plain.count(text) > tok.count(text));
        // Special added tokens stay tokens; without plain ones there is no variant.
        assert_eq!(plain.count("<|endoftext|>"), 1);
        assert!(bundled.with_added_tokens_as_text().is_none());
    }

    #[test]
    fn workers_count_and_encode_and_give_way_to_a_stop() {
        let tok = Arc::new(Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "b").unwrap());
        let workers = Workers::start(tok.clone(), None).unwrap();
        let counter = workers.counter();
        let stop = Stop::new();
        let texts = vec![
            " hello world".to_string(),
            String::new(),
            "a b c".to_string(),
        ];
        let want: Vec<usize> = texts.iter().map(|t| tok.count(t)).collect();
        assert_eq!(counter.count(texts.clone(), &stop), Ok(Some((texts, want))));
        assert_eq!(workers.encode(" hello world"), tok.encode(" hello world"));
        stop.trigger();
        assert_eq!(counter.count(vec!["x".into()], &stop), Ok(None));
        // A counter kept past its workers does not keep them alive.
        let begin = std::time::Instant::now();
        drop(workers);
        assert!(begin.elapsed() < JOIN_GRACE, "{:?}", begin.elapsed());
        assert_eq!(counter.count(vec!["x".into()], &Stop::new()), Ok(None));
        let e = guarded(|| -> usize { panic!("boom") }).unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("deepseek-ai/DeepSeek-V3"));
        assert!(is_hub_id("org/name.v2"));
        assert!(!is_hub_id("trie-sim"));
        assert!(!is_hub_id("./x/y"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
    }

    /// Texts that exercise a tokenizer: words, digits, punctuation, runs of
    /// spaces and newlines, non-Latin scripts, emoji, special-token text.
    const TEXTS: &[&str] = &[
        " hello world",
        "hello  world\n\n  tabs\tand\r\nlines ",
        "1234567890 3.14159 -42 1e10 0x1F",
        "don't won't it's 'quoted' \"double\" (paren) [bracket] {brace} a,b;c:d",
        "naïve café résumé Ελληνικά Русский 中文字符 日本語 한국어 العربية",
        "emoji 😀🎉👩‍💻 and symbols ∑∫√ ™ ©",
        "<|endoftext|> between <|im_start|>user\nhi<|im_end|>",
        "<｜begin▁of▁sentence｜>DeepSeek <｜User｜>q<｜Assistant｜>a<｜end▁of▁sentence｜>",
        "    fn main() {\n        println!(\"{}\", x);\n    }\n",
        "",
        " ",
        "a",
    ];

    /// Counting by the pipeline gives what encoding gives.
    fn counts_agree(tok: &Tokenizer) {
        let long: String = TEXTS.concat().repeat(7);
        for text in TEXTS.iter().copied().chain([long.as_str()]) {
            assert_eq!(
                tok.count(text),
                tok.encode(text).len(),
                "{} on {text:?}",
                tok.source
            );
            assert!(tok.pipeline_count(text).is_some());
        }
    }

    #[test]
    fn the_pipeline_count_is_the_encoded_length() {
        counts_agree(&Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "bundled").unwrap());
        counts_agree(&bundled_with_added("<|im_start|>"));
        // The real DeepSeek-V4 tokenizer when the kit is there.
        let kit = std::env::var_os("TRIE_REAL_SERVER_KIT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared/real-server"));
        let deepseek = kit.join("deepseek-v4/tokenizer.json");
        if deepseek.exists() {
            counts_agree(&Tokenizer::from_file(&deepseek).unwrap());
        }
    }

    #[test]
    fn a_tokenizer_json_that_truncates_or_pads_does_not_cut_counts() {
        let mut json: serde_json::Value =
            serde_json::from_slice(crate::sim::BUNDLED_TOKENIZER).unwrap();
        json["truncation"] = serde_json::json!({
            "direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0
        });
        json["padding"] = serde_json::json!({
            "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"
        });
        let capped = Tokenizer::from_bytes(json.to_string().as_bytes(), "capped").unwrap();
        let bundled = Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "bundled").unwrap();
        let text = " the quick brown fox jumps over the lazy dog";
        assert!(bundled.count(text) > 4);
        assert_eq!(capped.count(text), bundled.count(text));
        assert_eq!(capped.encode(text), bundled.encode(text));
    }
}

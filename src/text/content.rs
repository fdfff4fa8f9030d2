//! What synthetic segments say (`--text`): one-token words (the default),
//! random vocabulary tokens decoded (what the Python version sends), or
//! windows of natural text. The text changes what a GPU server does
//! (speculative decoding's acceptance, MoE routing, sampling cost), so the
//! user chooses it; every mode is exact to the token and a pure function of
//! the segment's key.
//!
//! Exactness for text that does not split into one-token words, without
//! counting anything while a run makes its traces: the mode's text (a
//! corpus, or 65,536 random vocabulary tokens decoded) is a [`Pool`], cut
//! once at load wherever a space comes before a letter (byte-level BPE
//! pre-tokenizers always split there) and each chunk's tokens counted in
//! the text's own context; a cut that a token crosses is dropped, and the
//! cutting is proven on windows before it is used. A segment of n tokens is
//!
//! ```text
//! " a b" + chunks + words + " c d"
//! ```
//!
//! two synthetic words on each side (so that nothing before it can merge
//! with it, and the chat counting finds its interior,
//! [`crate::text::conversation`]), as many chunks from a start drawn by its
//! key as fit, and words for what they leave, each exactly one token. A
//! text that cannot be cut exactly for the tokenizer sends words instead,
//! with a warning. Never best effort.

use std::path::Path;

use crate::error::{Error, Result};
use crate::text::prompt::{Rng, Synth};
use crate::text::tokenizer::Tokenizer;

/// The text mode (`--text`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TextMode {
    /// One-token words.
    #[default]
    Words,
    /// Random vocabulary tokens, decoded.
    RandomTokens,
    /// Windows of natural text: the file, or the bundled one.
    Corpus(Option<std::path::PathBuf>),
}

impl TextMode {
    /// Parse `words`, `random-tokens`, `corpus` or `corpus:FILE`.
    pub fn parse(v: &str) -> Option<TextMode> {
        match v {
            "words" => Some(TextMode::Words),
            "random-tokens" => Some(TextMode::RandomTokens),
            "corpus" => Some(TextMode::Corpus(None)),
            _ => v
                .strip_prefix("corpus:")
                .filter(|f| !f.is_empty())
                .map(|f| TextMode::Corpus(Some(f.into()))),
        }
    }

    /// The name `--text` takes.
    pub fn name(&self) -> String {
        match self {
            TextMode::Words => "words".into(),
            TextMode::RandomTokens => "random-tokens".into(),
            TextMode::Corpus(None) => "corpus".into(),
            TextMode::Corpus(Some(f)) => format!("corpus:{}", f.display()),
        }
    }
}

/// The bundled natural text: the first chapters of Jules Verne's *Around
/// the World in Eighty Days* (public domain), from Project Gutenberg.
pub const BUNDLED_CORPUS: &str = include_str!("../../data/corpus.txt");

/// Most bytes of a corpus file.
const MAX_CORPUS_BYTES: u64 = 256 << 20;

/// Fewest bytes a corpus must have.
const MIN_CORPUS_BYTES: usize = 1024;

/// Tokens of the frame around a middle (two words on each side).
const FRAME: usize = 4;

/// What segments say, and what makes them.
pub enum Content {
    /// One-token words.
    Words,
    /// Windows of a pool of text cut into chunks of known token counts:
    /// random vocabulary tokens decoded, or a corpus.
    Pool(Pool),
}

/// A text cut where its tokenizer always splits (before a space and a
/// letter), each chunk's tokens counted once, in the text's own context:
/// any run of chunks is exactly the sum of their tokens, wherever it is
/// put after a word.
pub struct Pool {
    text: String,
    /// Chunk i is `text[starts[i]..starts[i + 1]]` (the last ends the text).
    starts: Vec<usize>,
    tokens: Vec<u32>,
}

impl Pool {
    /// `text` cut into chunks counted by `tok`; `None` when it has no
    /// place to cut, or when a run of its chunks does not count as their
    /// sum (a tokenizer that merges across a space and a letter).
    pub fn new(text: &str, tok: &Tokenizer, synth: &Synth) -> Option<Pool> {
        // Where a space comes before a letter.
        let cuts = |text: &str| -> Vec<usize> {
            (0..text.len().saturating_sub(1))
                .filter(|&i| {
                    text.as_bytes()[i] == b' '
                        && text[i + 1..]
                            .chars()
                            .next()
                            .is_some_and(char::is_alphabetic)
                })
                .collect()
        };
        let first = *cuts(text).first()?;
        let text = &text[first..];
        let mut starts = cuts(text);
        // Tokens that cross a cut (the tokenizer merged there): no cut.
        let offsets = tok.token_offsets(text);
        let mut crossed = vec![false; starts.len()];
        for &(s, e) in &offsets {
            let at = starts.partition_point(|&c| c <= s);
            if at < starts.len() && e > starts[at] {
                crossed[at] = true;
            }
        }
        let mut kept = crossed.iter().map(|c| !c);
        starts.retain(|_| kept.next().unwrap_or(false));
        if starts.first() != Some(&0) {
            return None;
        }
        let mut tokens = vec![0u32; starts.len()];
        for &(s, _) in &offsets {
            let at = starts.partition_point(|&c| c <= s);
            if at > 0 {
                tokens[at - 1] += 1;
            }
        }
        let pool = Pool {
            text: text.to_string(),
            starts,
            tokens,
        };
        // Proven on windows behind a word, as segments put them.
        for key in 0..32u64 {
            let mut out = String::new();
            let n = pool.window(key, 1 + (key as usize * 37) % 400, &mut out);
            let framed = format!("{}{out}", synth.word(0));
            if tok.count(&framed) != 1 + n {
                return None;
            }
        }
        Some(pool)
    }

    fn chunk(&self, i: usize) -> &str {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.text.len());
        &self.text[self.starts[i]..end]
    }

    /// Append chunks from a start drawn with `key`, wrapping around, as
    /// many as fit in `tokens`; how many tokens they are.
    fn window(&self, key: u64, tokens: usize, out: &mut String) -> usize {
        let mut i = Rng::new(key ^ 0x706f_6f6c).below(self.starts.len());
        let mut got = 0;
        while got + self.tokens[i] as usize <= tokens {
            out.push_str(self.chunk(i));
            got += self.tokens[i] as usize;
            i = (i + 1) % self.starts.len();
            if self.tokens[i] == 0 {
                break;
            }
        }
        got
    }
}

/// Tokens drawn for the random-token pool.
const RANDOM_POOL_TOKENS: usize = 65_536;

impl Content {
    /// The content of `mode` for `tokenizer`; `corpus` is what
    /// [`read_corpus`] read for it, before anything was sent. A pool that
    /// cannot be cut exactly for this tokenizer falls back to words, with
    /// a warning.
    pub fn new(
        mode: &TextMode,
        tokenizer: &Tokenizer,
        synth: &Synth,
        corpus: Option<String>,
    ) -> Content {
        let text = match mode {
            TextMode::Words => return Content::Words,
            TextMode::RandomTokens => {
                let added = tokenizer.added_ids();
                let ids: Vec<u32> = (0..tokenizer.vocab_size())
                    .filter(|id| !added.contains(id))
                    .collect();
                if ids.is_empty() {
                    String::new()
                } else {
                    let mut rng = Rng::new(0x7261_6e64_6f6d);
                    let drawn: Vec<u32> = (0..RANDOM_POOL_TOKENS)
                        .map(|_| ids[rng.below(ids.len())])
                        .collect();
                    tokenizer.decode(&drawn)
                }
            }
            TextMode::Corpus(_) => corpus.unwrap_or_else(|| BUNDLED_CORPUS.to_string()),
        };
        match Pool::new(&text, tokenizer, synth) {
            Some(pool) => Content::Pool(pool),
            None => {
                log::warn!(
                    "--text {}: its text cannot be cut into exact pieces for tokenizer {} (no space before a letter, or merges across one); sending words",
                    mode.name(),
                    tokenizer.source
                );
                Content::Words
            }
        }
    }

    /// `n` tokens of text for `key`: exactly `n`, a pure function of `key`.
    pub fn segment(&self, synth: &Synth, key: u64, n: usize) -> String {
        let pool = match self {
            Content::Pool(pool) if n > FRAME => pool,
            _ => return synth.text(key, n),
        };
        let mut rng = Rng::new(key);
        let mut word = || synth.word(rng.below(synth.len()));
        let mut text = String::with_capacity(n * 6);
        text.push_str(word());
        text.push_str(word());
        let tail = [word(), word()];
        let want = n - FRAME;
        let got = pool.window(key, want, &mut text);
        // What the chunks leave: words, each exactly one token.
        synth.write(key ^ 0x7061_6464, want - got, &mut text);
        text.push_str(tail[0]);
        text.push_str(tail[1]);
        text
    }
}

/// The corpus `mode` names, read and checked (`None`: no file).
pub fn read_corpus(mode: &TextMode) -> Result<Option<String>> {
    match mode {
        TextMode::Corpus(Some(path)) => corpus_file(path).map(Some),
        _ => Ok(None),
    }
}

/// A corpus file: UTF-8 text of at least [`MIN_CORPUS_BYTES`].
fn corpus_file(path: &Path) -> Result<String> {
    let text = crate::input::read_text_file(path, MAX_CORPUS_BYTES).map_err(|e| {
        Error::usage(format!(
            "--text corpus:{}: {e}; pass a UTF-8 text file",
            path.display()
        ))
    })?;
    if text.trim().len() < MIN_CORPUS_BYTES {
        return Err(Error::usage(format!(
            "--text corpus:{}: {} bytes of text, fewer than the {MIN_CORPUS_BYTES} a corpus needs",
            path.display(),
            text.trim().len()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Tokenizer {
        Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "bundled").unwrap()
    }

    #[test]
    fn every_mode_is_exact_and_a_pure_function_of_the_key() {
        let tok = tok();
        let synth = Synth::new(&tok).unwrap();
        for mode in [
            TextMode::Words,
            TextMode::RandomTokens,
            TextMode::Corpus(None),
        ] {
            let content = Content::new(&mode, &tok, &synth, None);
            assert_eq!(matches!(content, Content::Pool(_)), mode != TextMode::Words);
            for (key, n) in
                (0..40u64).map(|k| (k, [0, 1, 4, 5, 6, 17, 100, 1000, 60_000][k as usize % 9]))
            {
                let text = content.segment(&synth, key, n);
                assert_eq!(tok.count(&text), n, "{mode:?} key {key} n {n}");
                assert_eq!(content.segment(&synth, key, n), text);
            }
            // Behind anything, and behind each other, still additive:
            // framed by words.
            let a = content.segment(&synth, 99, 300);
            let b = content.segment(&synth, 98, 200);
            for glue in ["", "x", "é.", " \n", "12", "Hello"] {
                let whole = format!("{glue}{a}{b}");
                assert_eq!(
                    tok.count(&whole),
                    tok.count(glue) + 500,
                    "{mode:?} glue {glue:?}"
                );
            }
        }
    }

    #[test]
    fn a_corpus_of_any_script_or_without_spaces_is_cut_on_character_boundaries() {
        let tok = tok();
        let synth = Synth::new(&tok).unwrap();
        let spaced = "é中文🙂 ça va? 日本語のテキスト。 Ünïcode wörds ".repeat(200);
        let content = Content::new(&TextMode::Corpus(None), &tok, &synth, Some(spaced));
        assert!(matches!(content, Content::Pool(_)));
        for key in 0..50 {
            let s = content.segment(&synth, key, 60);
            assert_eq!(tok.count(&s), 60, "key {key}");
        }
        // No place to cut: words, not a failure.
        let unspaced = "漢字ばかりで空白のない文章".repeat(300);
        let content = Content::new(&TextMode::Corpus(None), &tok, &synth, Some(unspaced));
        assert!(matches!(content, Content::Words));
    }

    #[test]
    fn the_modes_say_different_things() {
        let tok = tok();
        let synth = Synth::new(&tok).unwrap();
        let say = |mode: TextMode| Content::new(&mode, &tok, &synth, None).segment(&synth, 3, 200);
        let words = say(TextMode::Words);
        let random = say(TextMode::RandomTokens);
        let corpus = say(TextMode::Corpus(None));
        assert!(words.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
        assert!(!random.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
        // Natural text: capitals and punctuation of the novel.
        assert!(
            corpus.contains(|c: char| c.is_ascii_uppercase()),
            "{corpus}"
        );
        assert!(corpus.contains(['.', ',']), "{corpus}");
    }

    #[test]
    fn text_modes_parse_and_corpus_files_are_checked() {
        assert_eq!(TextMode::parse("words"), Some(TextMode::Words));
        assert_eq!(TextMode::parse("corpus"), Some(TextMode::Corpus(None)));
        assert_eq!(
            TextMode::parse("corpus:/a/b.txt"),
            Some(TextMode::Corpus(Some("/a/b.txt".into())))
        );
        assert_eq!(TextMode::parse("corpus:"), None);
        assert_eq!(TextMode::parse("lorem"), None);
        let err = read_corpus(&TextMode::Corpus(Some("/nonexistent".into())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }
}

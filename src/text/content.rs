//! What synthetic segments say (`--text`): one-token words (the default),
//! random vocabulary tokens decoded (what the Python version sends), or
//! windows of natural text. The text changes what a GPU server does
//! (speculative decoding's acceptance, MoE routing, sampling cost), so the
//! user chooses it; every mode is exact to the token and a pure function of
//! the segment's key.
//!
//! Exactness for text that does not split into one-token words: a segment
//! of n tokens is framed by two synthetic words on each side,
//!
//! ```text
//! " a b" + middle + " c d"
//! ```
//!
//! so that what comes before it in a context cannot merge with it (a word
//! after anything splits: proven for the tokenizer by [`Synth`]; what
//! follows is counted together with the last word, as after any segment),
//! and so that the chat counting finds its interior
//! ([`crate::text::conversation`]). The middle is sized to make
//! the whole exactly n tokens in a few counts; when no length hits n (a
//! merge jumps over it), the longest middle below n is padded with words,
//! each exactly one token more; should even that miss, the segment is
//! words. Never best effort.

use std::path::Path;
use std::sync::Arc;

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

/// Counts tried to size a middle before padding it with words.
const TRIES: usize = 8;

/// What segments say, and what makes them.
pub enum Content {
    /// One-token words.
    Words,
    /// Random tokens of the vocabulary (added tokens left out), decoded.
    RandomTokens {
        /// The tokenizer that decodes them.
        tokenizer: Arc<Tokenizer>,
        /// The ids drawn from.
        ids: Vec<u32>,
    },
    /// Windows of a text.
    Corpus {
        /// The text (whitespace runs kept).
        text: String,
    },
}

impl Content {
    /// The content of `mode` for `tokenizer`; `corpus` is what
    /// [`read_corpus`] read for it, before anything was sent.
    pub fn new(mode: &TextMode, tokenizer: Arc<Tokenizer>, corpus: Option<String>) -> Content {
        match mode {
            TextMode::Words => Content::Words,
            TextMode::RandomTokens => {
                let added = tokenizer.added_ids();
                let ids: Vec<u32> = (0..tokenizer.vocab_size())
                    .filter(|id| !added.contains(id))
                    .collect();
                Content::RandomTokens { tokenizer, ids }
            }
            TextMode::Corpus(_) => Content::Corpus {
                text: corpus.unwrap_or_else(|| BUNDLED_CORPUS.to_string()),
            },
        }
    }

    /// `n` tokens of text for `key`, counted with `count` (`None` when a
    /// count was given up: the run stopped). Exactly `n` tokens.
    pub fn segment(
        &self,
        synth: &Synth,
        key: u64,
        n: usize,
        count: &mut dyn FnMut(&str) -> Option<usize>,
    ) -> Option<String> {
        let nothing_to_draw = matches!(self, Content::RandomTokens { ids, .. } if ids.is_empty());
        if matches!(self, Content::Words) || nothing_to_draw || n <= FRAME {
            return Some(synth.text(key, n));
        }
        let mut rng = Rng::new(key);
        let mut word = || synth.word(rng.below(synth.len())).to_string();
        let (head, tail) = (word() + &word(), word() + &word());
        let frame = |middle: &str| format!("{head}{middle}{tail}");
        let want = n - FRAME;
        // The best middle so far whose frame is at most n tokens.
        let mut below: Option<(String, usize)> = None;
        let mut size = want;
        for _ in 0..TRIES {
            let middle = self.middle(key, size);
            let got = count(&frame(&middle))?;
            if got == n {
                return Some(frame(&middle));
            }
            if got < n && below.as_ref().is_none_or(|(_, b)| got > *b) {
                below = Some((middle, got));
            }
            // Each token more or less in the frame is about one in the middle.
            size = (size as i64 + n as i64 - got as i64).max(0) as usize;
        }
        // Pad the best middle below n with words: each is exactly one token.
        let (middle, got) = below.unwrap_or_else(|| (String::new(), FRAME));
        let mut padded = middle;
        synth.write(key ^ 0x7061_6464, n - got, &mut padded);
        let text = frame(&padded);
        if count(&text)? == n {
            return Some(text);
        }
        Some(synth.text(key, n))
    }

    /// About `tokens` tokens of the mode's text for `key` (the same prefix
    /// for every size, so sizing converges).
    fn middle(&self, key: u64, tokens: usize) -> String {
        match self {
            Content::Words => String::new(),
            Content::RandomTokens { tokenizer, ids } => {
                let mut rng = Rng::new(key ^ 0x7261_6e64);
                let drawn: Vec<u32> = (0..tokens).map(|_| ids[rng.below(ids.len())]).collect();
                tokenizer.decode(&drawn)
            }
            Content::Corpus { text } => {
                // A window from a word start, wrapping around; natural
                // text is about four bytes per token, trimmed on a char
                // boundary.
                let mut start = Rng::new(key ^ 0x636f_7270).below(text.len());
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                // From the next word when there is one, else from here.
                let start = text[start..].find(' ').map_or(start, |i| start + i);
                let bytes = tokens * 4;
                let mut out = String::with_capacity(bytes + 4);
                let mut at = start;
                while out.len() < bytes {
                    let take = (bytes - out.len()).min(text.len() - at);
                    let mut end = at + take;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    if end == at {
                        // A character wider than what is left to take.
                        break;
                    }
                    out.push_str(&text[at..end]);
                    at = if end >= text.len() { 0 } else { end };
                }
                out
            }
        }
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

    fn tok() -> Arc<Tokenizer> {
        Arc::new(Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "bundled").unwrap())
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
            let content = Content::new(&mode, tok.clone(), None);
            let mut counts = 0;
            let mut count = |t: &str| {
                counts += 1;
                Some(tok.count(t))
            };
            for (key, n) in
                (0..40u64).map(|k| (k, [0, 1, 4, 5, 6, 17, 100, 1000, 5000][k as usize % 9]))
            {
                let text = content.segment(&synth, key, n, &mut count).unwrap();
                assert_eq!(tok.count(&text), n, "{mode:?} key {key} n {n}");
                assert_eq!(content.segment(&synth, key, n, &mut count).unwrap(), text);
            }
            // Behind anything, and behind each other, still additive:
            // framed by words.
            let a = content.segment(&synth, 99, 300, &mut count).unwrap();
            let b = content.segment(&synth, 98, 200, &mut count).unwrap();
            for glue in ["", "x", "é.", " \n", "12", "Hello"] {
                let whole = format!("{glue}{a}{b}");
                assert_eq!(
                    tok.count(&whole),
                    tok.count(glue) + 500,
                    "{mode:?} glue {glue:?}"
                );
            }
            if mode != TextMode::Words {
                // A handful of counts per segment, not a search.
                assert!(counts < 40 * 2 * 5 + 60, "{mode:?}: {counts} counts");
            }
        }
    }

    #[test]
    fn a_corpus_of_any_script_or_without_spaces_is_cut_on_character_boundaries() {
        let tok = tok();
        let synth = Synth::new(&tok).unwrap();
        let mut count = |t: &str| Some(tok.count(t));
        for text in [
            "é中文🙂 ça va? 日本語のテキスト。".repeat(200),
            "漢字ばかりで空白のない文章".repeat(300),
        ] {
            let content = Content::Corpus { text };
            for key in 0..50 {
                let s = content.segment(&synth, key, 60, &mut count).unwrap();
                assert_eq!(tok.count(&s), 60, "key {key}");
            }
        }
    }

    #[test]
    fn the_modes_say_different_things() {
        let tok = tok();
        let synth = Synth::new(&tok).unwrap();
        let mut count = |t: &str| Some(tok.count(t));
        let say = |mode: TextMode, count: &mut dyn FnMut(&str) -> Option<usize>| {
            Content::new(&mode, tok.clone(), None)
                .segment(&synth, 3, 200, count)
                .unwrap()
        };
        let words = say(TextMode::Words, &mut count);
        let random = say(TextMode::RandomTokens, &mut count);
        let corpus = say(TextMode::Corpus(None), &mut count);
        assert!(words.bytes().all(|b| b == b' ' || b.is_ascii_lowercase()));
        assert_ne!(random, words);
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

//! Synthetic text of an exact token count, as a pure function of
//! (seed, trace sequence number, segment).
//!
//! At load we pick the *words* of the tokenizer: vocabulary entries whose text is
//! a space followed by 2–11 ASCII lowercase letters, that encode back to exactly
//! themselves alone and after another word. Byte-level BPE pre-tokenizers (GPT-2,
//! Llama 3, DeepSeek, Qwen) always split before " letters", so any concatenation
//! of words encodes to one token per word. [`Synth::new`] proves that property on
//! random texts behind awkward prefixes and refuses a tokenizer that breaks it,
//! so every segment re-tokenizes to exactly the requested count, and generation
//! is a random index plus a memcpy per token (no tokenizer call).

use crate::error::{Error, Result};
use crate::text::tokenizer::Tokenizer;

/// SplitMix64: tiny, fast, and good enough to pick words.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream depends only on `key`.
    pub fn new(key: u64) -> Rng {
        Rng(key)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The SplitMix64 finalizer: a good 64-bit mixing function.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one synthetic segment: segment 0 is a trace's first prompt,
/// segment `i + 1` the output of its tool call `i`.
pub fn segment_key(seed: u64, trace_seq: u64, segment: u32) -> u64 {
    mix(mix(seed ^ 0x7472_6965_0000_0001)
        ^ mix(trace_seq.wrapping_add(0x5151))
        ^ (segment as u64) << 1)
}

/// The key of shared prefix `group`'s text: the same in every trace.
pub fn prefix_key(seed: u64, group: u32) -> u64 {
    mix(mix(seed ^ 0x7072_6566_6978_0000) ^ mix(group as u64 ^ 0x9e37))
}

/// The shared prefixes of a run (`--shared-prefix`, `--prefix-groups`,
/// `--prefix-zipf`): which one each trace starts with, and the texts made
/// so far (random-token or natural text takes tokenizer counts to make;
/// kept up to [`PREFIX_CACHE_BYTES`]).
#[derive(Debug)]
pub struct Prefixes {
    /// Tokens of each prefix.
    pub tokens: u64,
    groups: u32,
    /// Zipf: the cumulative probability of groups `0..=i`.
    cdf: Option<Vec<f64>>,
    /// Texts made, by group, and their bytes in all.
    made: parking_lot::Mutex<(
        std::collections::HashMap<u32, std::sync::Arc<String>>,
        usize,
    )>,
}

/// Most bytes of prefix text kept for reuse; beyond, a prefix is made again
/// for each trace.
pub const PREFIX_CACHE_BYTES: usize = 64 << 20;

impl Prefixes {
    /// `groups` prefixes of `tokens` tokens, taken round robin or, with
    /// `zipf`, drawn with P(group k) ∝ (k + 1)^-zipf.
    pub fn new(tokens: u64, groups: u32, zipf: Option<f64>) -> Prefixes {
        let cdf = zipf.map(|s| {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (1..=groups.max(1))
                .map(|k| {
                    acc += (k as f64).powf(-s);
                    acc
                })
                .collect();
            cdf.iter_mut().for_each(|c| *c /= acc);
            cdf
        });
        Prefixes {
            tokens,
            groups: groups.max(1),
            cdf,
            made: Default::default(),
        }
    }

    /// The text of `group`'s prefix: kept from an earlier trace, or made by
    /// `make` (and kept while the cache has room).
    pub fn text(&self, group: u32, make: impl FnOnce() -> String) -> std::sync::Arc<String> {
        if let Some(t) = self.made.lock().0.get(&group) {
            return t.clone();
        }
        let text = std::sync::Arc::new(make());
        let mut made = self.made.lock();
        if made.1 + text.len() <= PREFIX_CACHE_BYTES {
            made.1 += text.len();
            made.0.insert(group, text.clone());
        }
        text
    }

    /// The group of trace `seq`: its sequence number modulo the groups,
    /// or its Zipf draw, a pure function of (seed, seq).
    pub fn group(&self, seed: u64, seq: u64) -> u32 {
        match &self.cdf {
            None => (seq % self.groups as u64) as u32,
            Some(cdf) => {
                let u = Rng::new(mix(seed ^ 0x7a69_7066) ^ mix(seq)).unit();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1) as u32
            }
        }
    }
}

/// The word list of one tokenizer and the generator over it.
pub struct Synth {
    bytes: Vec<u8>,
    /// Start offset of word i is `starts[i]`, end is `starts[i + 1]`.
    starts: Vec<u32>,
    ids: Vec<u32>,
    /// Bytes of the vocabulary's longest token (bounds what a reply of n
    /// tokens can be).
    longest: usize,
}

/// Prefixes a synthetic segment may follow in a real context: text the model
/// returned, ending in anything.
const AWKWARD_PREFIXES: &[&str] = &[
    "", "a", "Z", "1", "12345", ".", "'", "\"", " ", "  ", "\n", "\n\n", "\t", "é", "中文", "}",
    "#", "\u{a0}",
];

impl Synth {
    /// Find the words of `tok` and prove exact additivity, or explain why this
    /// tokenizer cannot be synthesized exactly.
    pub fn new(tok: &Tokenizer) -> Result<Synth> {
        let mut synth = Synth {
            bytes: Vec::new(),
            starts: vec![0],
            ids: Vec::new(),
            longest: 0,
        };
        let anchor = tok.encode("a");
        for id in 0..tok.vocab_size() {
            let text = tok.decode_one(id);
            let b = text.as_bytes();
            synth.longest = synth.longest.max(b.len());
            if b.len() < 3
                || b.len() > 12
                || b[0] != b' '
                || !b[1..].iter().all(u8::is_ascii_lowercase)
            {
                continue;
            }
            if tok.encode(&text) != [id] {
                continue;
            }
            let after = tok.encode(&format!("a{text}"));
            if after.len() != anchor.len() + 1
                || after[..anchor.len()] != anchor[..]
                || after[anchor.len()] != id
            {
                continue;
            }
            synth.bytes.extend_from_slice(b);
            synth.starts.push(synth.bytes.len() as u32);
            synth.ids.push(id);
        }
        if synth.ids.len() < 16 {
            return Err(Error::usage(format!(
                "tokenizer {}: only {} single-token words (\" word\") in its vocabulary; trie needs a byte-level BPE tokenizer (GPT-2, Llama 3, Qwen, DeepSeek style) to synthesize exact prompts",
                tok.source,
                synth.ids.len()
            )));
        }
        synth.prove_additive(tok)?;
        Ok(synth)
    }

    /// Check, on random texts behind every awkward prefix, that a text of n
    /// words encodes to exactly n tokens after its prefix.
    fn prove_additive(&self, tok: &Tokenizer) -> Result<()> {
        let mut text = String::new();
        for (i, prefix) in AWKWARD_PREFIXES.iter().enumerate() {
            let n = 300 + 97 * i;
            text.clear();
            self.write(0xADD1_7173 + i as u64, n, &mut text);
            let base = tok.count(prefix);
            let got = tok.count(&format!("{prefix}{text}"));
            if got != base + n {
                return Err(Error::usage(format!(
                    "tokenizer {}: {n} synthetic words after {prefix:?} encode to {} tokens, not {n}; this tokenizer does not split words the way trie needs to synthesize exact prompts",
                    tok.source,
                    got - base.min(got)
                )));
            }
        }
        Ok(())
    }

    /// Bytes of the vocabulary's longest token.
    pub fn longest_token_bytes(&self) -> usize {
        self.longest
    }

    /// Number of words available.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true for a constructed `Synth` (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Text of word `i` (a space and letters).
    #[inline]
    pub fn word(&self, i: usize) -> &str {
        let (s, e) = (self.starts[i] as usize, self.starts[i + 1] as usize);
        // SAFETY: words are ASCII by construction (checked in `new`).
        unsafe { std::str::from_utf8_unchecked(&self.bytes[s..e]) }
    }

    /// Token id of word `i`.
    #[inline]
    pub fn id(&self, i: usize) -> u32 {
        self.ids[i]
    }

    /// Append `n` tokens of text for `key` to `out`: the same bytes every time.
    pub fn write(&self, key: u64, n: usize, out: &mut String) {
        let mut rng = Rng::new(key);
        out.reserve(n * 8);
        for _ in 0..n {
            out.push_str(self.word(rng.below(self.ids.len())));
        }
    }

    /// `n` tokens of text for `key` as a new string.
    pub fn text(&self, key: u64, n: usize) -> String {
        let mut s = String::new();
        self.write(key, n, &mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_groups_go_round_robin_or_follow_zipf() {
        let p = Prefixes::new(10, 3, None);
        let groups: Vec<u32> = (0..7).map(|seq| p.group(1, seq)).collect();
        assert_eq!(groups, [0, 1, 2, 0, 1, 2, 0]);
        // Zipf with s = 1 over 4 groups: P = 12/25, 6/25, 4/25, 3/25.
        let z = Prefixes::new(10, 4, Some(1.0));
        let mut seen = [0u32; 4];
        for seq in 0..100_000 {
            seen[z.group(7, seq) as usize] += 1;
        }
        for (k, want) in [12.0, 6.0, 4.0, 3.0].iter().enumerate() {
            let got = seen[k] as f64 / 100_000.0;
            assert!((got - want / 25.0).abs() < 0.01, "group {k}: {got}");
        }
        // A pure function of (seed, seq).
        assert_eq!(z.group(7, 42), z.group(7, 42));
        let differ = (0..100).filter(|&s| z.group(7, s) != z.group(8, s)).count();
        assert!(differ > 20, "{differ}");
    }
}

//! The fast path of chunk parsing: a small, strict scanner for the chunk
//! nearly every streamed token comes in — one `text_completion` choice
//! with its text and finish reason, or one chat choice whose `delta`
//! carries `content` or reasoning — nothing else that trie reads.
//!
//! Why: at 10k chunks/s every chunk wakes a thread whose caches are cold,
//! and serde's generated code for the full chunk shape cost about as much
//! CPU as the socket read (benches/harness.rs). This scanner is a few
//! hundred bytes of code.
//!
//! It is exact by construction: it answers only when the chunk is valid
//! JSON that it read completely, and declines (`None`) everything else —
//! usage, timings or error objects, whole chat messages, several choices, an
//! unexpected type, a duplicate key, too deep nesting, a malformed byte —
//! which then goes through serde (`sse::parse_chunk`), the one authority
//! on errors. A test holds the two to the same answers on mutated chunks.

use std::borrow::Cow;

/// What the scanner read of a chunk.
#[derive(Debug, PartialEq)]
pub struct Scanned<'a> {
    /// `choices` has an element.
    pub has_choice: bool,
    /// Its `text` (empty when absent or null), else its delta's `content`.
    pub text: Cow<'a, str>,
    /// Its delta's `reasoning_content`, else `reasoning`.
    pub reasoning: Cow<'a, str>,
    /// Its `finish_reason`.
    pub finish_reason: Option<Cow<'a, str>>,
    /// It has a `delta` and no `text`.
    pub chat_shaped: bool,
}

/// A chat delta's `content` and reasoning.
type Delta<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// Nesting deeper than this is declined (serde's limit is 128).
const MAX_DEPTH: usize = 64;

/// Scan one chunk's JSON; `None` declines it (serde decides).
pub fn scan(data: &[u8]) -> Option<Scanned<'_>> {
    // Valid UTF-8 throughout, so every string slice below is a `str`.
    std::str::from_utf8(data).ok()?;
    let mut s = Scanner { b: data, i: 0 };
    let mut out = Scanned {
        has_choice: false,
        text: Cow::Borrowed(""),
        reasoning: Cow::Borrowed(""),
        finish_reason: None,
        chat_shaped: false,
    };
    let mut seen = [false; 4];
    s.object(|s, key| {
        match field(key, &["choices", "usage", "timings", "error"], &mut seen)? {
            None => s.skip(0),
            Some(0) => {
                if s.null() {
                    return Some(());
                }
                s.choices(&mut out)
            }
            // Present and not null: serde reads it.
            Some(_) => s.null().then_some(()),
        }
    })?;
    s.ws();
    (s.i == s.b.len()).then_some(out)
}

/// Which of `names` `key` is (`Some(None)`: none of them); `None` when it
/// came before (serde refuses a duplicate field, so the scanner declines).
fn field(key: &str, names: &[&str], seen: &mut [bool]) -> Option<Option<usize>> {
    match names.iter().position(|n| *n == key) {
        Some(i) if std::mem::replace(&mut seen[i], true) => None,
        found => Some(found),
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `null` when it is next (consumed).
    fn null(&mut self) -> bool {
        self.peek();
        let yes = self.b[self.i..].starts_with(b"null");
        if yes {
            self.i += 4;
        }
        yes
    }

    /// An object, each key handed to `field`, which reads its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, &key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `choices`: no element, or one element whose `index` is 0 or absent,
    /// without a whole `message`.
    fn choices(&mut self, out: &mut Scanned<'a>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        let mut seen = [false; 5];
        let (mut text, mut delta) = (None, None);
        self.object(|s, key| {
            match field(
                key,
                &["index", "text", "finish_reason", "delta", "message"],
                &mut seen,
            )? {
                None => s.skip(0),
                // null or 0: serde's choice 0 (another index is declined).
                Some(0) => {
                    if s.null() {
                        return Some(());
                    }
                    let start = s.i;
                    s.number()?;
                    (&s.b[start..s.i] == b"0").then_some(())
                }
                Some(1) => {
                    if !s.null() {
                        text = Some(s.string()?);
                    }
                    Some(())
                }
                Some(2) => {
                    if !s.null() {
                        out.finish_reason = Some(s.string()?);
                    }
                    Some(())
                }
                Some(3) => {
                    if !s.null() {
                        delta = Some(s.delta()?);
                    }
                    Some(())
                }
                // A whole chat message: serde reads it.
                _ => None,
            }
        })?;
        out.has_choice = true;
        out.chat_shaped = text.is_none() && delta.is_some();
        let (content, reasoning) = delta.unwrap_or_default();
        if let Some(t) = text.or(content) {
            out.text = t;
        }
        if let Some(r) = reasoning {
            out.reasoning = r;
        }
        // Exactly one element.
        self.eat(b']')
    }

    /// A chat `delta` object: its `content`, and its `reasoning_content`
    /// else `reasoning` (each a string or null; other fields skipped).
    fn delta(&mut self) -> Option<Delta<'a>> {
        let mut seen = [false; 4];
        let mut found: [Option<Cow<'a, str>>; 3] = [None, None, None];
        self.object(|s, key| {
            match field(
                key,
                &["content", "reasoning_content", "reasoning", "tool_calls"],
                &mut seen,
            )? {
                None => s.skip(1),
                // Tool calls (tokens without text): serde reads them.
                Some(3) => s.null().then_some(()),
                Some(i) => {
                    if !s.null() {
                        found[i] = Some(s.string()?);
                    }
                    Some(())
                }
            }
        })?;
        let [content, reasoning_content, reasoning] = found;
        Some((content, reasoning_content.or(reasoning)))
    }

    /// A string (the opening quote next), borrowed unless it has escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    let s = std::str::from_utf8(&self.b[start..self.i]).ok()?;
                    self.i += 1;
                    return Some(Cow::Borrowed(s));
                }
                b'\\' => break,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        let mut owned = String::from(std::str::from_utf8(&self.b[start..self.i]).ok()?);
        loop {
            let run = self.i;
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            owned.push_str(std::str::from_utf8(&self.b[run..self.i]).ok()?);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Owned(owned));
                }
                b'\\' => {
                    self.i += 1;
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    owned.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => return None,
                    });
                }
                _ => return None,
            }
        }
    }

    /// The character of a `\u` escape (its `XXXX` next), pairing surrogates.
    fn unicode(&mut self) -> Option<char> {
        let hi = self.hex4()?;
        if !(0xD800..0xE000).contains(&hi) {
            return char::from_u32(hi);
        }
        // A lone or reversed surrogate: serde decides.
        if hi >= 0xDC00 || !self.b[self.i..].starts_with(b"\\u") {
            return None;
        }
        self.i += 2;
        let lo = self.hex4()?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        self.i += 4;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }

    /// A JSON number: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        self.peek();
        let digits = |s: &mut Self| {
            let start = s.i;
            while s.b.get(s.i).is_some_and(u8::is_ascii_digit) {
                s.i += 1;
            }
            (s.i > start).then_some(())
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => digits(self)?,
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            digits(self)?;
        }
        Some(())
    }

    /// Skip any value, `depth` levels deep.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' | b'f' | b'n' => {
                let rest = &self.b[self.i..];
                let word: &[u8] = [&b"true"[..], b"false", b"null"]
                    .into_iter()
                    .find(|w| rest.starts_with(w))?;
                self.i += word.len();
                Some(())
            }
            _ => self.number(),
        }
    }
}

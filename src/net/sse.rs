//! Server-sent events of an OpenAI-compatible completion stream, parsed without
//! I/O: one [`Stream`] is fed raw lines with the time each was read, and knows
//! the text, the token-carrying chunks, the usage and whether the stream ended
//! properly. Non-streaming bodies go through [`parse_chunk`] too.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Server-reported token usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens as the server tokenized them (BOS included).
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`; `None` when the server sent none.
    pub cached_tokens: Option<u64>,
}

/// llama.cpp's own `timings` object, when the server sends one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerTimings {
    /// Prompt tokens reused from the slot's cache.
    #[serde(default)]
    pub cache_n: u64,
    /// Prompt tokens processed.
    #[serde(default)]
    pub prompt_n: u64,
    /// Time spent on the prompt, ms.
    #[serde(default)]
    pub prompt_ms: f64,
    /// Tokens generated.
    #[serde(default)]
    pub predicted_n: u64,
    /// Time spent generating, ms.
    #[serde(default)]
    pub predicted_ms: f64,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<RawDetails>,
}

#[derive(Deserialize)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct RawChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// A streamed chat choice.
    #[serde(default, borrow)]
    delta: Option<RawMessage<'a>>,
    /// A whole (not streamed) chat choice.
    #[serde(default, borrow)]
    message: Option<RawMessage<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

/// What trie reads of a chat `delta` or `message`: the answer, and the
/// reasoning as DeepSeek (`reasoning_content`) or vLLM's newer parsers
/// and gpt-oss (`reasoning`) send it; the first of the two when both come.
#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    /// Tool calls being generated (their arguments are tokens too).
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

/// Choice 0 of `choices`: the element whose `index` is 0 (or, when the
/// elements carry no index, the first); the others are skipped. No `Vec`
/// per chunk on the timed path.
struct ChoiceZero<'a>(Option<RawChoice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for ChoiceZero<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = ChoiceZero<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut chosen: Option<RawChoice<'a>> = None;
                while let Some(c) = seq.next_element::<RawChoice<'a>>()? {
                    let better = match (&chosen, c.index) {
                        (Some(RawChoice { index: Some(0), .. }), _) => false,
                        (_, Some(0)) => true,
                        (None, None) => true,
                        _ => false,
                    };
                    if better {
                        chosen = Some(c);
                    }
                }
                Ok(ChoiceZero(chosen))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawChunk<'a> {
    #[serde(default, borrow)]
    choices: Option<ChoiceZero<'a>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    timings: Option<ServerTimings>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// One parsed chunk (or a whole non-streaming body).
#[derive(Debug, Default, PartialEq)]
pub struct Chunk<'a> {
    /// Whether the chunk carries a choice (what TTFT waits for).
    pub has_choice: bool,
    /// The first choice's text (a chat choice's `content`).
    pub text: Cow<'a, str>,
    /// The first choice's reasoning text (chat: `reasoning_content` or
    /// `reasoning`).
    pub reasoning: Cow<'a, str>,
    /// The first choice's finish reason.
    pub finish_reason: Option<Cow<'a, str>>,
    /// Usage, when this chunk carries it.
    pub usage: Option<Usage>,
    /// llama.cpp timings, when this chunk carries them.
    pub timings: Option<ServerTimings>,
    /// The choice is chat-shaped (`delta`, no `text`).
    pub chat_shaped: bool,
    /// A chat choice generating tool calls (tokens without text).
    pub tool_call: bool,
}

/// Parse one JSON chunk: the common token chunk through the small scanner
/// of [`crate::net::scan`], anything else through serde.
pub fn parse_chunk(data: &[u8]) -> Result<Chunk<'_>, String> {
    if let Some(s) = crate::net::scan::scan(data) {
        return Ok(Chunk {
            has_choice: s.has_choice,
            text: s.text,
            reasoning: s.reasoning,
            finish_reason: s.finish_reason,
            chat_shaped: s.chat_shaped,
            ..Chunk::default()
        });
    }
    parse_chunk_serde(data)
}

/// [`parse_chunk`] by serde alone.
pub fn parse_chunk_serde(data: &[u8]) -> Result<Chunk<'_>, String> {
    let raw: RawChunk =
        serde_json::from_slice(data).map_err(|e| format!("malformed chunk: {e}"))?;
    if let Some(err) = raw.error {
        // Whole: secrets are removed before the message is shortened.
        return Err(format!("server error in stream: {err}"));
    }
    let mut chunk = Chunk {
        // Usage without both counts is no usage.
        usage: raw.usage.and_then(|u| {
            Some(Usage {
                prompt_tokens: u.prompt_tokens?,
                completion_tokens: u.completion_tokens?,
                cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            })
        }),
        timings: raw.timings,
        ..Chunk::default()
    };
    if let Some(first) = raw.choices.and_then(|c| c.0) {
        chunk.has_choice = true;
        let chat = first.delta.or(first.message);
        chunk.chat_shaped = first.text.is_none() && chat.is_some();
        let (content, reasoning) = match chat {
            Some(m) => {
                chunk.tool_call = m.tool_calls.is_some();
                (m.content, m.reasoning_content.or(m.reasoning))
            }
            None => (None, None),
        };
        chunk.text = first.text.or(content).unwrap_or_default();
        chunk.reasoning = reasoning.unwrap_or_default();
        chunk.finish_reason = first.finish_reason;
    }
    Ok(chunk)
}

#[derive(Deserialize)]
struct RawEmbeddings {
    #[serde(default)]
    data: Option<Vec<RawEmbedding>>,
    #[serde(default)]
    usage: Option<RawUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawEmbedding {
    /// The vector (floats, or base64 text): skimmed, never built.
    #[allow(dead_code)]
    embedding: serde::de::IgnoredAny,
}

/// An embeddings response: how many embeddings it holds, and its usage
/// (`prompt_tokens`; no completion tokens).
pub fn parse_embeddings(data: &[u8]) -> Result<(u64, Option<Usage>), String> {
    let raw: RawEmbeddings =
        serde_json::from_slice(data).map_err(|e| format!("malformed embeddings response: {e}"))?;
    if let Some(err) = raw.error {
        return Err(format!("server error: {err}"));
    }
    let data = raw
        .data
        .ok_or_else(|| "an embeddings response without data".to_string())?;
    let usage = raw.usage.and_then(|u| {
        Some(Usage {
            prompt_tokens: u.prompt_tokens?,
            completion_tokens: u.completion_tokens.unwrap_or(0),
            cached_tokens: None,
        })
    });
    Ok((data.len() as u64, usage))
}

/// What one SSE line is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A `data:` payload (JSON).
    Data(&'a [u8]),
    /// `data: [DONE]`.
    Done,
    /// Blank lines, comments, `event:`/`id:` fields.
    Other,
}

/// Classify one raw line (with or without its line ending).
pub fn classify(line: &[u8]) -> Line<'_> {
    let line = trim_eol(line);
    let Some(rest) = line.strip_prefix(b"data:") else {
        return Line::Other;
    };
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    if rest == b"[DONE]" {
        Line::Done
    } else {
        Line::Data(rest)
    }
}

fn trim_eol(mut line: &[u8]) -> &[u8] {
    while let [head @ .., b'\n' | b'\r'] = line {
        line = head;
    }
    line
}

/// Why a stream is not a good response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// A chunk that is not the JSON we expect, or an error object.
    Malformed(String),
    /// The stream ended before `[DONE]` / a finish reason.
    Truncated,
    /// The stream ended properly without a single choice chunk.
    NoChoices,
}

/// A token-carrying chunk: when it was read and where its text ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkMark {
    /// Time since the request was sent.
    pub at: Duration,
    /// Byte offset in [`Stream::text`] where this chunk's text ends.
    pub text_end: usize,
    /// Byte offset in [`Stream::reasoning`] where its reasoning ends.
    pub reasoning_end: usize,
}

/// The state of one streamed response, fed line by line.
#[derive(Debug, Default)]
pub struct Stream {
    /// Concatenated text of all choices (chat: the answer, `content`).
    pub text: String,
    /// Concatenated reasoning text (chat reasoning deltas).
    pub reasoning: String,
    /// Token-carrying chunks, in order.
    pub chunks: Vec<ChunkMark>,
    /// When the first choice chunk arrived that is not chat-shaped (a
    /// chat choice without a token, such as the role-only first delta, is
    /// no first token).
    pub first_choice: Option<Duration>,
    /// When the first choice chunk with text arrived (an empty one carries
    /// no token).
    pub first_text: Option<Duration>,
    /// When `[DONE]` arrived.
    pub done_at: Option<Duration>,
    /// When the last `data:` line arrived.
    pub last_data_at: Option<Duration>,
    /// A chat-shaped choice (`delta`) was seen.
    pub chat_shaped: bool,
    /// Usage, wherever in the stream it came.
    pub usage: Option<Usage>,
    /// llama.cpp timings, when sent.
    pub timings: Option<ServerTimings>,
    /// A finish reason was seen.
    pub finished: bool,
    /// `[DONE]` was seen.
    pub done: bool,
}

impl Stream {
    /// Feed one line read at `at` (time since the request was sent).
    pub fn feed(&mut self, line: &[u8], at: Duration) -> Result<(), StreamError> {
        let data = match classify(line) {
            Line::Other => return Ok(()),
            Line::Done => {
                self.done = true;
                self.done_at = Some(at);
                return Ok(());
            }
            Line::Data(d) => d,
        };
        self.last_data_at = Some(at);
        let chunk = parse_chunk(data).map_err(StreamError::Malformed)?;
        self.chat_shaped |= chunk.chat_shaped;
        if chunk.has_choice {
            if !chunk.chat_shaped {
                self.first_choice.get_or_insert(at);
            }
            // Reasoning and tool-call tokens are tokens: they count for
            // TTFT, ITL and decode speed as answer tokens do.
            if !chunk.text.is_empty() || !chunk.reasoning.is_empty() || chunk.tool_call {
                self.first_text.get_or_insert(at);
                self.text.push_str(&chunk.text);
                self.reasoning.push_str(&chunk.reasoning);
                self.chunks.push(ChunkMark {
                    at,
                    text_end: self.text.len(),
                    reasoning_end: self.reasoning.len(),
                });
            }
            if chunk.finish_reason.is_some() {
                self.finished = true;
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if chunk.timings.is_some() {
            self.timings = chunk.timings;
        }
        Ok(())
    }

    /// Time to the first token: the first choice chunk with text (the first
    /// choice chunk when no chunk had text).
    pub fn ttft(&self) -> Option<Duration> {
        self.first_text.or(self.first_choice)
    }

    /// Whether the answer is whole: `[DONE]` or a finish reason was seen.
    pub fn complete(&self) -> bool {
        self.done || self.finished
    }

    /// Check the stream at its end (EOF).
    pub fn finish(&self) -> Result<(), StreamError> {
        if !self.complete() {
            return Err(StreamError::Truncated);
        }
        if self.first_choice.is_none() && self.first_text.is_none() && !self.chat_shaped {
            return Err(StreamError::NoChoices);
        }
        Ok(())
    }
}

/// Text of chunk `i` of `chunks` marking the concatenated `text` and
/// `reasoning`: its reasoning, then its answer text.
pub fn chunk_text(text: &str, reasoning: &str, chunks: &[ChunkMark], i: usize) -> String {
    let prev = if i == 0 {
        ChunkMark::default()
    } else {
        chunks[i - 1]
    };
    let mut t = String::from(&reasoning[prev.reasoning_end..chunks[i].reasoning_end]);
    t.push_str(&text[prev.text_end..chunks[i].text_end]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/llama-server-stream.sse");

    fn feed_all(body: &[u8]) -> (Stream, Result<(), StreamError>) {
        let mut s = Stream::default();
        for (i, line) in body.split_inclusive(|&b| b == b'\n').enumerate() {
            if let Err(e) = s.feed(line, Duration::from_millis(i as u64)) {
                return (s, Err(e));
            }
        }
        let r = s.finish();
        (s, r)
    }

    #[test]
    fn an_empty_first_chunk_is_not_the_first_token() {
        let body = b"data: {\"choices\":[{\"index\":0,\"text\":\"\"}]}\n\ndata: {\"choices\":[{\"index\":0,\"text\":\" a\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n";
        let (s, r) = feed_all(body);
        assert_eq!(r, Ok(()));
        assert_eq!(s.first_choice, Some(Duration::from_millis(0)));
        assert_eq!(s.ttft(), Some(Duration::from_millis(2)));
        // No text at all: the first choice chunk.
        let (s, _) = feed_all(
            b"data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n",
        );
        assert_eq!(s.ttft(), Some(Duration::from_millis(0)));
    }

    #[test]
    fn llama_server_fixture() {
        let (s, r) = feed_all(FIXTURE);
        assert_eq!(r, Ok(()));
        assert_eq!(s.text, " Distval :fixy");
        assert_eq!(s.chunks.len(), 5);
        assert_eq!(chunk_text(&s.text, &s.reasoning, &s.chunks, 2), " :");
        assert_eq!(s.first_choice, Some(Duration::from_millis(0)));
        assert_eq!(s.ttft(), Some(Duration::from_millis(0)));
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: 18,
                completion_tokens: 5,
                cached_tokens: Some(1)
            })
        );
        let t = s.timings.unwrap();
        assert_eq!((t.cache_n, t.prompt_n, t.predicted_n), (1, 17, 5));
        assert!(s.done && s.finished);
    }

    #[test]
    fn vllm_style_usage_chunk_and_truncation() {
        let body = b"data: {\"choices\":[{\"text\":\" a\",\"finish_reason\":null}]}\n\n\
data: {\"choices\":[{\"text\":\" b\",\"finish_reason\":\"length\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n\
data: [DONE]\n\n";
        let (s, r) = feed_all(body);
        assert_eq!(r, Ok(()));
        assert_eq!(
            s.usage,
            Some(Usage {
                prompt_tokens: 7,
                completion_tokens: 2,
                cached_tokens: None
            })
        );
        let cut = &body[..60];
        let (_, r) = feed_all(&cut[..cut.iter().rposition(|&b| b == b'\n').unwrap() + 1]);
        assert_eq!(r, Err(StreamError::Truncated));
    }

    #[test]
    fn malformed_and_error_chunks() {
        let (_, r) = feed_all(b"data: {\"choices\": [\n");
        assert!(matches!(r, Err(StreamError::Malformed(_))));
        let (_, r) = feed_all(b"data: {\"error\":{\"message\":\"boom\"}}\n");
        assert!(matches!(r, Err(StreamError::Malformed(m)) if m.contains("boom")));
        let (_, r) = feed_all(b": keep-alive\n\ndata: [DONE]\n");
        assert_eq!(r, Err(StreamError::NoChoices));
    }

    #[test]
    fn a_chat_choice_without_a_token_is_no_first_token() {
        let ms = Duration::from_millis;
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        let stop = br#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        let tool = br#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"x"}}]},"finish_reason":null}]}"#;
        // Role, then nothing: a whole answer of no tokens, no TTFT.
        let mut s = Stream::default();
        s.feed(role, ms(1)).unwrap();
        s.feed(stop, ms(300)).unwrap();
        s.feed(b"data: [DONE]", ms(301)).unwrap();
        assert_eq!(s.finish(), Ok(()));
        assert_eq!(s.ttft(), None);
        // Role, then tool-call tokens: the first of them is the first token.
        let mut s = Stream::default();
        s.feed(role, ms(1)).unwrap();
        s.feed(tool, ms(300)).unwrap();
        s.feed(tool, ms(310)).unwrap();
        s.feed(stop, ms(320)).unwrap();
        assert_eq!(s.ttft(), Some(ms(300)));
        assert_eq!(s.chunks.len(), 2);
        assert!(s.text.is_empty());
    }

    #[test]
    fn embeddings_responses_are_counted_not_built() {
        let ok = br#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,-2e-3],"index":0},{"embedding":"AAAA","index":1}],"model":"m","usage":{"prompt_tokens":34,"total_tokens":34}}"#;
        let (n, usage) = parse_embeddings(ok).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 34,
                completion_tokens: 0,
                cached_tokens: None
            })
        );
        assert!(parse_embeddings(br#"{"data":[{"index":0}]}"#).is_err());
        assert!(
            parse_embeddings(br#"{"object":"list"}"#)
                .unwrap_err()
                .contains("without data")
        );
        assert!(
            parse_embeddings(br#"{"error":{"message":"no"}}"#)
                .unwrap_err()
                .contains("no")
        );
        assert_eq!(parse_embeddings(br#"{"data":[]}"#).unwrap(), (0, None));
    }

    #[test]
    fn classify_lines() {
        assert_eq!(classify(b"data: [DONE]\r\n"), Line::Done);
        assert_eq!(classify(b"data:{}\n"), Line::Data(b"{}"));
        assert_eq!(classify(b"event: x\n"), Line::Other);
    }

    /// Chunks as engines send them, and shapes the scanner must decline.
    const SHAPES: &[&str] = &[
        r#"{"id":"cmpl-0","object":"text_completion","created":1795552825,"model":"trie-sim","choices":[{"index":0,"text":" cop","logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"a\n\"b\"\\ \u00e9\ud83d\ude00 \/ \t","logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"text":"a"},{"index":1,"text":"b"}]}"#,
        r#"{"choices":[{"index":1,"text":"b"}]}"#,
        r#"{"error":{"message":"boom","code":500}}"#,
        r#"{"choices":[{"text":"x","index":0,"finish_reason":"stop"}],"timings":{"cache_n":1,"prompt_n":2,"prompt_ms":1.5,"predicted_n":3,"predicted_ms":2e1}}"#,
        r#" { "choices" : [ { "text" : null , "index" : null , "x" : [1, -2.5e-3, true, false, {"y": [[]]}] } ] } "#,
        r#"{"choices":null,"error":null,"timings":null}"#,
        r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm","content":null},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"reasoning":"a","reasoning_content":"b","tool_calls":[{"x":1}]},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}"#,
    ];

    /// Where the scanner answers, serde gives the same chunk.
    fn agrees(data: &[u8]) -> bool {
        let Some(fast) = crate::net::scan::scan(data) else {
            return false;
        };
        let slow = parse_chunk_serde(data).unwrap_or_else(|e| {
            panic!(
                "scanner read {:?}, serde refused: {e}",
                String::from_utf8_lossy(data)
            )
        });
        assert_eq!(
            (
                fast.has_choice,
                &fast.text,
                &fast.reasoning,
                &fast.finish_reason,
                fast.chat_shaped
            ),
            (
                slow.has_choice,
                &slow.text,
                &slow.reasoning,
                &slow.finish_reason,
                slow.chat_shaped
            ),
            "{:?}",
            String::from_utf8_lossy(data)
        );
        assert!(slow.usage.is_none() && slow.timings.is_none() && !slow.tool_call);
        true
    }

    #[test]
    fn the_scanner_reads_token_chunks_as_serde_does_and_declines_the_rest() {
        let fixture = FIXTURE
            .split(|&b| b == b'\n')
            .filter_map(|l| match classify(l) {
                Line::Data(d) => Some(d),
                _ => None,
            });
        let mut read = 0;
        for data in fixture.clone() {
            // Token chunks go the fast way; the usage chunk to serde.
            let token = !data.windows(7).any(|w| w == b"\"usage\"");
            assert_eq!(agrees(data), token, "{}", String::from_utf8_lossy(data));
            read += 1;
        }
        assert!(read >= 6);
        let answered: Vec<bool> = SHAPES.iter().map(|s| agrees(s.as_bytes())).collect();
        assert_eq!(
            answered,
            [
                true, true, false, true, false, false, false, false, true, true, true, true, false,
                false, false
            ]
        );
        // Mutations of every shape: deleted, repeated and replaced bytes,
        // cut ends. Whatever the scanner answers, serde must answer alike.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let bytes = b"\"\\{}[],:0-9e.ntuflrsbE+ \x01\xc3\xa9";
        let (mut tried, mut answered) = (0, 0);
        for shape in SHAPES.iter().map(|s| s.as_bytes()).chain(fixture) {
            for _ in 0..3000 {
                let mut m = shape.to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(m.len());
                    match next(4) {
                        0 => drop(m.remove(at)),
                        1 => m.insert(at, m[at]),
                        2 => m[at] = bytes[next(bytes.len())],
                        _ => m.truncate(at),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                tried += 1;
                answered += usize::from(agrees(&m));
            }
        }
        // The mutations reach both sides of the line.
        assert!(
            answered > tried / 20 && answered < tried / 2,
            "{answered} of {tried}"
        );
    }
}

//! A trace's growing chat conversation and the exact token count of its
//! rendered prompt, without tokenizing the whole prompt for every request.
//!
//! The prompt of a chat request is the model's chat template rendered over
//! the messages ([`crate::text::chat`]). Re-tokenizing all of it for every
//! turn costs O(context) per request, O(turns × context) per trace. Instead,
//! the rendering is cut into pieces at word boundaries *inside* the
//! synthetic segments: between two synthetic words (a letter, then a space
//! and a letter) every byte-level BPE pre-tokenizer splits, and
//! [`crate::text::prompt::Synth`] proved at load that the tokenizer does, so
//!
//! ```text
//! count(rendering) = Σ count(glue piece) + Σ (words of each segment − 2)
//! ```
//!
//! where a glue piece is everything between two segments' interiors (the
//! last word of one segment, the template's text, a reply, the template
//! again, the first word of the next segment), and a segment's interior is
//! its words but the first and the last (which a template's `trim` may
//! change). Glue pieces equal to the previous rendering's at the same
//! position keep their count; only new ones are tokenized: per turn, about
//! the reply and the template's text around it. Nothing here is an
//! estimate: a segment whose interior is not found verbatim in the
//! rendering stays in the glue and is tokenized whole.

use std::collections::BTreeMap;

use crate::text::chat::{ChatTemplate, Message};

/// How the prompt tokens of a chat request are known.
pub enum Counting {
    /// trie renders the model's template and tokenizes the rendering (see
    /// the module docs); the server adds `bos` tokens to it (llama.cpp
    /// adds a BOS the rendering does not start with, vLLM adds none).
    Template {
        /// The template.
        template: Box<ChatTemplate>,
        /// Its further variables (`--chat-template-kwargs`).
        extra: BTreeMap<String, serde_json::Value>,
        /// Tokens the server adds to the rendering.
        bos: u64,
    },
    /// No template trie renders as the server does: the template's tokens
    /// as the preflight measured them on the server.
    Calibrated(Calibration),
}

impl Counting {
    /// What the run's results record of it.
    pub fn describe(&self) -> String {
        match self {
            Counting::Template { template, bos, .. } => format!(
                "exact: the template {} rendered by trie, {bos} token(s) added by the server",
                template.source
            ),
            Counting::Calibrated(c) => format!(
                "calibrated from the server's counts: {} template tokens before the first answer, {} per turn, {} around a system prompt",
                c.first, c.per_turn, c.system
            ),
        }
    }
}

/// The template's tokens around a conversation, measured on the server:
/// a prompt is its content's tokens (each message counted alone) and
/// `first`, `system` when it opens with a system message, and `per_turn`
/// for each assistant reply and the user message after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calibration {
    /// Around the first user message, with the assistant's header (and
    /// the BOS the server adds).
    pub first: i64,
    /// Around a system message.
    pub system: i64,
    /// Around each reply and the user message after it.
    pub per_turn: i64,
}

/// One message and, when its content is synthetic words, how many.
struct Part {
    message: Message,
    words: Option<u64>,
}

/// A conversation growing turn by turn, with what its last count knew.
#[derive(Default)]
pub struct Conversation {
    parts: Vec<Part>,
    /// The glue pieces of the last rendering counted, with their counts.
    counted: Vec<(String, u64)>,
}

/// A rendering cut into pieces: what must still be tokenized.
pub struct Plan {
    /// Each glue piece, and its count when the last rendering had it.
    pieces: Vec<(String, Option<u64>)>,
    /// Tokens of the segments' interiors.
    interior: u64,
}

impl Plan {
    /// The pieces whose count is not known yet, to be tokenized (in this
    /// order) and handed to [`Conversation::settle`].
    pub fn to_count(&self) -> Vec<String> {
        self.pieces
            .iter()
            .filter(|(_, known)| known.is_none())
            .map(|(text, _)| text.clone())
            .collect()
    }
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Conversation {
        Conversation::default()
    }

    /// Append a message of `role` whose content is `words` synthetic words
    /// (one token each, from [`crate::text::prompt::Synth`]).
    pub fn push_synthetic(&mut self, role: &str, content: &str, words: u64) {
        self.parts.push(Part {
            message: Message::new(role, content),
            words: Some(words),
        });
    }

    /// Append a message of any text (a reply).
    pub fn push_text(&mut self, role: &str, content: &str) {
        self.parts.push(Part {
            message: Message::new(role, content),
            words: None,
        });
    }

    /// The messages so far.
    pub fn messages(&self) -> Vec<Message> {
        self.parts.iter().map(|p| p.message.clone()).collect()
    }

    /// Render the conversation with the assistant's header after it and cut
    /// the rendering into pieces; `Err`: the template refused it.
    pub fn plan(
        &self,
        template: &ChatTemplate,
        extra: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Plan, String> {
        let rendered = template.render(&self.messages(), true, extra)?;
        let mut glue = Vec::new();
        let mut interior = 0;
        // Where the current glue piece starts, and where to search on.
        let mut from = 0;
        for part in &self.parts {
            let Some(words) = part.words.filter(|&w| w >= 3) else {
                continue;
            };
            let Some((inner, inner_words)) = interior_of(&part.message.content, words) else {
                continue;
            };
            let Some(at) = find_interior(&rendered, from, inner) else {
                continue;
            };
            glue.push(&rendered[from..at]);
            interior += inner_words;
            from = at + inner.len();
        }
        glue.push(&rendered[from..]);
        let pieces = glue
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let known = self
                    .counted
                    .get(i)
                    .filter(|(old, _)| old == text)
                    .map(|(_, n)| *n);
                (text.to_string(), known)
            })
            .collect();
        Ok(Plan { pieces, interior })
    }

    /// The rendering's token count, given the counts of
    /// [`Plan::to_count`]'s texts; remembered for the next plan. `None`
    /// when `counts` does not fit the plan.
    pub fn settle(&mut self, plan: Plan, counts: &[usize]) -> Option<u64> {
        let mut counts = counts.iter();
        let mut total = plan.interior;
        let mut counted = Vec::with_capacity(plan.pieces.len());
        for (text, known) in plan.pieces {
            let n = match known {
                Some(n) => n,
                None => *counts.next()? as u64,
            };
            total += n;
            counted.push((text, n));
        }
        if counts.next().is_some() {
            return None;
        }
        self.counted = counted;
        Some(total)
    }
}

/// The interior of a synthetic content of `words` words (` w1 w2 … wn`):
/// ` w2 … w(n-1)`, and its word count.
fn interior_of(content: &str, words: u64) -> Option<(&str, u64)> {
    let second = content.get(1..)?.find(' ')? + 1;
    let last = content.rfind(' ')?;
    (second < last).then(|| (&content[second..last], words - 2))
}

/// Where `inner` stands in `rendered` at or after `from`, between a letter
/// (the end of the segment's first word) and a space and a letter (the
/// start of its last).
fn find_interior(rendered: &str, from: usize, inner: &str) -> Option<usize> {
    let mut start = from;
    loop {
        let at = start + rendered.get(start..)?.find(inner)?;
        let end = at + inner.len();
        let bytes = rendered.as_bytes();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(end..end + 2);
        if before.is_some_and(|b| b.is_ascii_alphabetic())
            && after.is_some_and(|a| a[0] == b' ' && a[1].is_ascii_alphabetic())
        {
            return Some(at);
        }
        start = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::prompt::Synth;
    use crate::text::tokenizer::Tokenizer;

    fn tokenizer() -> Tokenizer {
        Tokenizer::from_bytes(crate::sim::BUNDLED_TOKENIZER, "bundled").unwrap()
    }

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    /// The incremental count equals the count of the whole rendering, turn
    /// after turn, whatever the replies are, and only new text is counted.
    #[test]
    fn the_count_is_the_whole_renderings_and_only_new_text_is_tokenized() {
        let tok = tokenizer();
        let synth = Synth::new(&tok).unwrap();
        let template = ChatTemplate::new(CHATML, "test", BTreeMap::new()).unwrap();
        let extra = BTreeMap::new();
        let mut conv = Conversation::new();
        conv.push_synthetic("system", &synth.text(1, 40), 40);
        conv.push_synthetic("user", &synth.text(2, 300), 300);
        let replies = [
            " plain words back",
            "no leading space, then:punctuation!",
            &synth.text(3, 2),
            "\n\nlines\tand tabs  ",
            "ends in letters",
            "",
        ];
        let mut counted_bytes = Vec::new();
        for (turn, reply) in replies.iter().enumerate() {
            let plan = conv.plan(&template, &extra).unwrap();
            let texts = plan.to_count();
            counted_bytes.push(texts.iter().map(String::len).sum::<usize>());
            let counts: Vec<usize> = texts.iter().map(|t| tok.count(t)).collect();
            let got = conv.settle(plan, &counts).unwrap();
            let whole = template.render(&conv.messages(), true, &extra).unwrap();
            assert_eq!(got, tok.count(&whole) as u64, "turn {turn}: {whole:?}");
            conv.push_text("assistant", reply);
            let n = 5 + 97 * turn as u64;
            conv.push_synthetic("user", &synth.text(10 + turn as u64, n as usize), n);
        }
        // After the first rendering, each count tokenizes the new turn's
        // text, not the context: far less than the 300-word prompt.
        let prompt_bytes = synth.text(2, 300).len();
        assert!(
            counted_bytes[1..].iter().all(|&b| b < prompt_bytes / 2),
            "{counted_bytes:?}"
        );
    }

    #[test]
    fn a_segment_not_found_verbatim_is_counted_whole() {
        let tok = tokenizer();
        let synth = Synth::new(&tok).unwrap();
        // A template that changes the content: no interior is found.
        let upper = "{% for m in messages %}[{{ m.role }}]{{ m.content | upper }}\n{% endfor %}";
        let template = ChatTemplate::new(upper, "test", BTreeMap::new()).unwrap();
        let mut conv = Conversation::new();
        conv.push_synthetic("user", &synth.text(5, 50), 50);
        let plan = conv.plan(&template, &BTreeMap::new()).unwrap();
        assert_eq!(plan.interior, 0);
        let texts = plan.to_count();
        let counts: Vec<usize> = texts.iter().map(|t| tok.count(t)).collect();
        let whole = template
            .render(&conv.messages(), true, &BTreeMap::new())
            .unwrap();
        assert_eq!(conv.settle(plan, &counts), Some(tok.count(&whole) as u64));
        // Counts that do not fit the plan are refused.
        let plan = conv.plan(&template, &BTreeMap::new()).unwrap();
        assert_eq!(conv.settle(plan, &[1, 2, 3]), None);
    }

    #[test]
    fn interiors() {
        assert_eq!(interior_of(" a b c d", 4), Some((" b c", 2)));
        assert_eq!(interior_of(" a b", 2), None);
        assert_eq!(find_interior("x a b c d", 0, " b c"), Some(3));
        // Not between a letter and " letter": not the segment.
        assert_eq!(find_interior("x  b c d", 0, " b c"), None);
    }
}

//! Secrets (the API key, `HF_TOKEN`) are registered here once, and every
//! piece of text trie stores or prints that did not come from trie itself
//! (server error bodies, transport errors, served model names) and every log
//! record passes through [`clean`], which replaces them. A server that echoes
//! the `Authorization` header back cannot make trie print or store it.

use std::borrow::Cow;

use parking_lot::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shorter keys are placeholders (`EMPTY`, `x`), not secrets: replacing
/// them would mangle every number and name trie prints.
pub const MIN_SECRET_CHARS: usize = 8;

/// Register a secret (and its JSON-escaped form): from now on [`clean`]
/// removes it. Strings under [`MIN_SECRET_CHARS`] are ignored. Secrets are
/// never unregistered.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    let escaped = escaped
        .get(1..escaped.len().saturating_sub(1))
        .unwrap_or("")
        .to_string();
    let mut all = SECRETS.write();
    for s in [secret.to_string(), escaped] {
        if !s.is_empty() && !all.contains(&s) {
            all.push(s);
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by [`REDACTED`], and every
/// character that would steer a terminal (escape sequences, carriage
/// return, backspace, bidirectional overrides; not newline or tab) written
/// as `\u{..}`: a server's words are printed, never obeyed.
pub fn clean(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read();
    let has_secret = secrets.iter().any(|s| text.contains(head(s)));
    if !has_secret && !text.chars().any(steers) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(head(s)) {
            out = remove(&out, s);
        }
    }
    if out.chars().any(steers) {
        let mut escaped = String::with_capacity(out.len() + 16);
        for c in out.chars() {
            if steers(c) {
                escaped.push_str(&format!("\\u{{{:x}}}", c as u32));
            } else {
                escaped.push(c);
            }
        }
        out = escaped;
    }
    Cow::Owned(out)
}

/// The part of a secret whose echo gives it away: all of a short one, the
/// first half (at least [`MIN_SECRET_CHARS`]) of a long one, which servers
/// and proxies echo cut short (`sk-abc123...`).
fn head(secret: &str) -> &str {
    let chars = secret.chars().count();
    let keep = (chars.div_ceil(2)).max(MIN_SECRET_CHARS).min(chars);
    match secret.char_indices().nth(keep) {
        Some((at, _)) => &secret[..at],
        None => secret,
    }
}

/// `text` with every occurrence of `secret`'s head, and as much of the rest
/// of `secret` as follows it, replaced by [`REDACTED`].
fn remove(text: &str, secret: &str) -> String {
    let head = head(secret);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(head) {
        out.push_str(&rest[..at]);
        out.push_str(REDACTED);
        // The longest run of the secret that starts here.
        let after = &rest[at..];
        let same = after
            .char_indices()
            .zip(secret.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, c), _)| i + c.len_utf8());
        rest = &after[same.max(head.len())..];
    }
    out.push_str(rest);
    out
}

/// A name from outside trie (a served model's) made fit for one line of a
/// log or a table: secrets removed, every control character escaped,
/// newlines and tabs too, so it can never start a line of its own.
pub fn name(s: &str) -> String {
    clean(s).replace('\n', "\\n").replace('\t', "\\t")
}

/// Text from outside trie made fit for a report: secrets removed, its first
/// line, at most 300 characters.
pub fn one_line(s: &str) -> String {
    const KEEP: usize = 300;
    let first = s.lines().next().unwrap_or("");
    // Cleaned before it is cut (a secret across the cut is still found),
    // but only as far as a secret could reach: a 16 MiB error line costs
    // no more than a short one.
    let reach = KEEP
        + SECRETS
            .read()
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
    let head = match first.char_indices().nth(reach) {
        Some((at, _)) => &first[..at],
        None => first,
    };
    clean(head).chars().take(KEEP).collect()
}

/// A character a terminal acts on rather than shows.
fn steers(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_replaced_wherever_they_appear() {
        register("sk-unit-\"quoted\"-7");
        register("");
        register("EMPTY");
        assert_eq!(clean("EMPTY 1 x"), "EMPTY 1 x");
        let echoed = r#"{"error":"bad key Bearer sk-unit-\"quoted\"-7"}"#;
        assert_eq!(clean(echoed), r#"{"error":"bad key Bearer <redacted>"}"#);
        assert_eq!(
            clean("key sk-unit-\"quoted\"-7 twice sk-unit-\"quoted\"-7"),
            "key <redacted> twice <redacted>"
        );
        assert!(matches!(clean("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            clean("a\x1b]0;PWNED\x07\x1b[2J\r\u{202e}b\nc\td"),
            "a\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J\\u{d}\\u{202e}b\nc\td"
        );
        // Echoed cut short, as proxies do: half the key or more gives it
        // away; less (a last-four hint) does not.
        register("sk-SECRETKEY1234567890abcdef");
        assert_eq!(
            clean("key=sk-SECRETKEY1234567890abc... invalid"),
            "key=<redacted>... invalid"
        );
        assert_eq!(clean("key sk-SECRETKEY12 x"), "key <redacted> x");
        assert_eq!(clean("key sk-SECRETKE x"), "key sk-SECRETKE x");
        assert_eq!(clean("ends in ...cdef"), "ends in ...cdef");
        // A served model's name never starts a line of its own.
        assert_eq!(
            name("evil\x1b]0\nfake line\t"),
            "evil\\u{1b}]0\\nfake line\\t"
        );
    }
}

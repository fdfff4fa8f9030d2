//! Chat templates: a conversation rendered to the prompt text the model's
//! own template makes of it, as Hugging Face's `apply_chat_template` does
//! (and vLLM and SGLang with it), so that trie can count a chat request's
//! prompt tokens exactly.
//!
//! The template comes from beside the tokenizer: `chat_template.jinja`, else
//! `chat_template` in `tokenizer_config.json` (a string, or a list of named
//! templates of which `default` is used). It runs on minijinja with
//! Hugging Face's settings (blocks trimmed, loop controls) and helpers
//! (`raise_exception`, `strftime_now`, a Python-style `tojson`, Python's
//! string and dict methods); `{% generation %}` blocks (Hugging Face's
//! assistant-mask extension) render their content.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::error::{Error, Result};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where it came from (for messages).
    pub source: String,
    /// Special tokens the template may use (`bos_token`, `eos_token`, …).
    tokens: BTreeMap<String, String>,
}

/// Instructions a template may run for one rendering: a real template
/// takes thousands per message; a template that loops without end stops
/// here (an error) instead of holding its slot (or the preflight) forever.
pub const RENDER_FUEL: u64 = 200_000_000;

/// Bytes a rendering may have beyond four times its messages' content.
pub const RENDER_BYTES: usize = 16 << 20;

/// A rendering's output, refused past its limit.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    /// The limit was reached.
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.full = true;
            return Err(std::io::Error::other("the rendering is too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The name of the one template in the environment.
const NAME: &str = "chat";

impl ChatTemplate {
    /// The template beside `tokenizer_json` (see the module docs), with the
    /// special tokens of `tokenizer_config.json`; `None` when there is none.
    pub fn beside(tokenizer_json: &Path) -> Result<Option<ChatTemplate>> {
        let (config_path, config, tokens) = config_beside(tokenizer_json)?;
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let jinja = dir.join("chat_template.jinja");
        if let Ok(source) = std::fs::read_to_string(&jinja) {
            return ChatTemplate::new(&source, &jinja.display().to_string(), tokens).map(Some);
        }
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str()),
            _ => None,
        };
        source
            .map(|s| ChatTemplate::new(s, &config_path.display().to_string(), tokens))
            .transpose()
    }

    /// The template in the file `path` (`--chat-template`), with the
    /// special tokens of the `tokenizer_config.json` beside
    /// `tokenizer_json`, when there is one.
    pub fn from_file(path: &Path, tokenizer_json: Option<&Path>) -> Result<ChatTemplate> {
        let source = crate::input::read_text_file(path, 1 << 20).map_err(|e| {
            Error::usage(format!(
                "--chat-template {}: {e}; pass a Jinja chat template file",
                path.display()
            ))
        })?;
        let tokens = match tokenizer_json {
            Some(t) => config_beside(t)?.2,
            None => BTreeMap::new(),
        };
        ChatTemplate::new(&source, &path.display().to_string(), tokens)
    }

    /// Compile `source` (from `origin`, for messages) with the special
    /// `tokens` it may use.
    pub fn new(
        source: &str,
        origin: &str,
        tokens: BTreeMap<String, String>,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| {
            strftime(&format, now_utc())
        });
        env.add_filter("tojson", tojson);
        // Python's Jinja: `none is iterable` is false (minijinja says true,
        // and templates then take the length of `tools` when there are none).
        env.add_test("iterable", |v: Value| {
            !v.is_none() && !v.is_undefined() && v.try_iter().is_ok()
        });
        env.add_template_owned(NAME, generation_blocks(source))
            .map_err(|e| {
                Error::usage(format!(
                    "chat template {origin}: cannot be compiled ({e}); pass a tokenizer whose chat template is valid Jinja"
                ))
            })?;
        Ok(ChatTemplate {
            env,
            source: origin.to_string(),
            tokens,
        })
    }

    /// The prompt text of `messages`, with the assistant's header after them
    /// when `add_generation_prompt`; `extra` are further variables (such as
    /// `enable_thinking`). `Err`: the template refused the conversation (its
    /// own `raise_exception`, or an error while rendering).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &BTreeMap<String, serde_json::Value>,
    ) -> std::result::Result<String, String> {
        let mut ctx: BTreeMap<String, Value> = self
            .tokens
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        // As Hugging Face passes them when there are none.
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        for (k, v) in extra {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        let template = self.env.get_template(NAME).map_err(|e| e.to_string())?;
        let limit = RENDER_BYTES
            + messages
                .iter()
                .map(|m| m.content.len().saturating_mul(4))
                .fold(0usize, usize::saturating_add);
        let mut out = Capped {
            out: Vec::new(),
            limit,
            full: false,
        };
        let rendered = template.render_captured_to(ctx, &mut out);
        rendered.map_err(|e| {
            let detail = if out.full {
                format!("the rendering is larger than {limit} bytes")
            } else {
                e.detail()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            };
            format!(
                "the chat template {} refused the conversation: {detail}",
                self.source
            )
        })?;
        String::from_utf8(out.out).map_err(|_| {
            format!(
                "the chat template {} rendered bytes that are not UTF-8",
                self.source
            )
        })
    }
}

/// The `tokenizer_config.json` beside `tokenizer_json`: its path, its
/// content (`null` when there is none) and its special tokens.
fn config_beside(
    tokenizer_json: &Path,
) -> Result<(
    std::path::PathBuf,
    serde_json::Value,
    BTreeMap<String, String>,
)> {
    let dir = tokenizer_json.parent().unwrap_or(Path::new("."));
    let config_path = dir.join("tokenizer_config.json");
    let config: serde_json::Value = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!(
                "{}: not valid JSON ({e}); fix or remove it",
                config_path.display()
            ))
        })?,
        Err(_) => serde_json::Value::Null,
    };
    let tokens = ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|k| {
            let v = &config[*k];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            Some((k.to_string(), text.to_string()))
        })
        .collect();
    Ok((config_path, config, tokens))
}

/// `{% generation %}` … `{% endgeneration %}` (Hugging Face's marker of the
/// assistant's tokens) as `{% if true %}` … `{% endif %}`, whitespace
/// control kept.
fn generation_blocks(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let Some(end) = tag.find("%}").map(|e| e + 2) else {
            break;
        };
        let inner = &tag[2..end - 2];
        let word = inner.trim_matches(|c| c == '-' || c == '+').trim();
        let replaced = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replaced {
            Some(word) => {
                let lead = if inner.starts_with('-') { "-" } else { "" };
                let trail = if inner.ends_with('-') { "-" } else { "" };
                out.push_str(&format!("{{%{lead} {word} {trail}%}}"));
            }
            None => out.push_str(&tag[..end]),
        }
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, as
/// Hugging Face's `tojson`: `", "` and `": "` between items on one line.
fn tojson(value: Value, indent: Option<usize>) -> std::result::Result<Value, minijinja::Error> {
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let (sep, colon) = if indent.is_some() {
        (",", ": ")
    } else {
        (", ", ": ")
    };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(colon);
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Now, as (year, month 1-12, day 1-31, hour, minute, second, weekday 0 =
/// Monday, day of the year 1-366), in UTC.
type Civil = (i64, u32, u32, u32, u32, u32, u32, u32);

fn now_utc() -> Civil {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    civil(secs)
}

/// The UTC calendar time of `secs` since 1970 (Howard Hinnant's
/// days-to-civil).
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
    let yday = before + day + u32::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7) as u32;
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
        weekday,
        yday,
    )
}

/// Python's `strftime` for the directives templates use; others are kept
/// as written.
fn strftime(format: &str, t: Civil) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let (year, month, day, hour, minute, second, weekday, yday) = t;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let month_name = MONTHS[month as usize - 1];
        let day_name = DAYS[weekday as usize];
        match d {
            'Y' => out.push_str(&year.to_string()),
            'y' => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            'm' => out.push_str(&format!("{month:02}")),
            'd' => out.push_str(&format!("{day:02}")),
            'e' => out.push_str(&format!("{day:2}")),
            'j' => out.push_str(&format!("{yday:03}")),
            'B' => out.push_str(month_name),
            'b' | 'h' => out.push_str(&month_name[..3]),
            'A' => out.push_str(day_name),
            'a' => out.push_str(&day_name[..3]),
            'H' => out.push_str(&format!("{hour:02}")),
            'I' => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'M' => out.push_str(&format!("{minute:02}")),
            'S' => out.push_str(&format!("{second:02}")),
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
            "chatml",
            BTreeMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn a_template_that_loops_or_swells_is_stopped_not_run_forever() {
        let msgs = [Message::new("user", " hi")];
        let extra = BTreeMap::new();
        let looping = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
            "loop",
            BTreeMap::new(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = looping.render(&msgs, true, &extra).unwrap_err();
        assert!(e.contains("fuel"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        let swelling = ChatTemplate::new(
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "swell",
            BTreeMap::new(),
        )
        .unwrap();
        let e = swelling.render(&msgs, true, &extra).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_conversation_renders_as_the_template_says() {
        let out = chatml()
            .render(
                &[Message::new("user", "hi"), Message::new("assistant", "yo")],
                true,
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn hugging_face_helpers_behave_as_in_python() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% generation -%}\n{{ messages[0].content.strip() | tojson }}{%- endgeneration %}|{{ {'a': [1, 2], 'b': none} | tojson }}|{{ strftime_now('%Y') | length }}{% if tools is none %}|none{% endif %}{% if tools is iterable %}|iterable{% endif %}{% if [] is iterable and 'ab' is iterable %}|lists{% endif %}",
            "t",
            [("bos_token".to_string(), "<s>".to_string())].into(),
        )
        .unwrap();
        let out = t
            .render(
                &[Message::new("user", "  é \"q\" ")],
                false,
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(
            out,
            "<s>\"é \\\"q\\\"\"|{\"a\": [1, 2], \"b\": null}|4|none|lists"
        );
        let refuse = ChatTemplate::new(
            "{{ raise_exception('System role not supported') }}",
            "r",
            BTreeMap::new(),
        )
        .unwrap();
        let err = refuse.render(&[], false, &BTreeMap::new()).unwrap_err();
        assert!(err.contains("System role not supported"), "{err}");
        assert!(ChatTemplate::new("{% if %}", "bad", BTreeMap::new()).is_err());
    }

    #[test]
    fn the_template_beside_a_tokenizer_is_found_as_hugging_face_ships_it() {
        let dir = std::env::temp_dir().join(format!("trie-chat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokenizer = dir.join("tokenizer.json");
        let one = [Message::new("user", "hi")];
        let render =
            |t: Option<ChatTemplate>| t.unwrap().render(&one, false, &BTreeMap::new()).unwrap();
        assert!(ChatTemplate::beside(&tokenizer).unwrap().is_none());
        // A named list in tokenizer_config.json: `default` is used; a
        // special token may be an object with its content.
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<s>"}, "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        assert_eq!(render(ChatTemplate::beside(&tokenizer).unwrap()), "<s>hi");
        // chat_template.jinja beside it comes first.
        std::fs::write(
            dir.join("chat_template.jinja"),
            "[{{ messages[0].content }}]",
        )
        .unwrap();
        assert_eq!(render(ChatTemplate::beside(&tokenizer).unwrap()), "[hi]");
        std::fs::write(dir.join("tokenizer_config.json"), "{not json").unwrap();
        assert!(ChatTemplate::beside(&tokenizer).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_are_python_strftime_in_utc() {
        // 2026-11-24 21:30:05 UTC, a Tuesday, day 328.
        let t = civil(1_795_555_805);
        assert_eq!(t, (2026, 11, 24, 21, 30, 5, 1, 328));
        assert_eq!(
            strftime("%d %b %Y|%Y-%m-%d|%A %B %e|%I%p %j %%", t),
            "24 Nov 2026|2026-11-24|Tuesday November 24|09PM 328 %"
        );
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0, 3, 1));
        let leap = civil(951_782_400);
        assert_eq!((leap.0, leap.1, leap.2, leap.7), (2000, 2, 29, 60));
    }
}

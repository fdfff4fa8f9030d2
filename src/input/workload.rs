//! Workload files: JSONL trace templates, their validation (file:line, field,
//! what was expected), and the dataset aliases downloaded from the hub.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::hub;
use crate::limits::{self, MAX_CONTEXT_TOKENS};
use crate::stop::Stop;

/// One trace template: a row of the workload file.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Tokens in the initial user prompt.
    pub input_prompt_length: u32,
    /// Tokens the model generates on each tool-use turn.
    pub assistant_response_length: Vec<u32>,
    /// Tokens of tool output appended after each turn.
    pub tool_call_output_length: Vec<u32>,
    /// Seconds the simulated tool takes after each turn.
    pub tool_call_latency: Vec<f64>,
    /// Tokens of the final answer.
    pub final_assistant_response_length: u32,
    /// Context tokens before each request (so accounting is O(1) a request).
    context_before: Vec<u64>,
}

/// Workload accounting of one request (SPEC §5): what the template says is new,
/// cached and generated, independent of what the server reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnTokens {
    /// Prompt tokens new on this request (input prompt, or the last tool output).
    pub new_prompt: u64,
    /// Prompt tokens already in the context before this request's new part.
    pub cached_prompt: u64,
    /// Tokens the request generates.
    pub completion: u64,
}

impl Trace {
    /// Tool-use turns.
    pub fn num_turns(&self) -> usize {
        self.assistant_response_length.len()
    }

    /// Requests the trace issues: one per turn plus the final one.
    pub fn num_requests(&self) -> usize {
        self.num_turns() + 1
    }

    /// `max_tokens` of request `i` (`i == num_turns` is the final request).
    pub fn max_tokens(&self, i: usize) -> u32 {
        self.assistant_response_length
            .get(i)
            .copied()
            .unwrap_or(self.final_assistant_response_length)
    }

    /// Workload accounting of request `i` (`i` ≤ `num_turns`; beyond it,
    /// the final request's).
    pub fn turn_tokens(&self, i: usize) -> TurnTokens {
        let i = i.min(self.num_turns());
        let new_prompt = match i {
            0 => self.input_prompt_length as u64,
            _ => self
                .tool_call_output_length
                .get(i - 1)
                .map_or(0, |&n| n as u64),
        };
        let context_before = self.context_before.get(i).copied().unwrap_or_default();
        TurnTokens {
            new_prompt,
            cached_prompt: context_before.saturating_sub(new_prompt),
            completion: self.max_tokens(i) as u64,
        }
    }
}

/// A loaded workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The file it came from.
    pub path: PathBuf,
    /// FNV-1a 64-bit hash of the file's bytes, in hex.
    pub content_hash: String,
    /// The trace templates, in file order.
    pub traces: Vec<Trace>,
}

/// Dataset aliases: name → file in the hub dataset `lightseekorg/trie-dataset`.
pub const ALIASES: &[(&str, &str)] = &[
    ("agentic", "agentic_coding_8k.jsonl"),
    ("qa", "code_qa_8k.jsonl"),
    ("office", "office_work_8k.jsonl"),
];

/// The dataset cache directory: `TRIE_DATASET_CACHE`, else `/tmp/trie-dataset`.
pub fn dataset_cache() -> PathBuf {
    std::env::var_os("TRIE_DATASET_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/trie-dataset"))
}

/// Resolve `--workload`: an alias (downloaded once into the cache; `stop`
/// breaks the download off) or a path.
pub fn resolve(spec: &str, stop: &Stop) -> Result<PathBuf> {
    let Some((_, file)) = ALIASES.iter().find(|(a, _)| *a == spec) else {
        return Ok(PathBuf::from(spec));
    };
    let dest = dataset_cache().join(file);
    if dest.is_file() {
        return Ok(dest);
    }
    let url = format!(
        "{}/datasets/lightseekorg/trie-dataset/resolve/main/{file}",
        hub::endpoint()
    );
    let token = std::env::var("HF_TOKEN").ok();
    log::info!("downloading workload {spec} from {url}");
    hub::download(&url, &dest, token.as_deref(), stop).map_err(|e| {
        if stop.is_set() {
            return Error::Interrupted;
        }
        Error::usage(format!(
            "workload alias '{spec}': download failed: {e}; set HF_ENDPOINT to a reachable hub or pass a local JSONL path"
        ))
    })?;
    Ok(dest)
}

/// Read and validate a workload file.
pub fn load(path: &Path, stop: &Stop) -> Result<Workload> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(Error::usage(format!(
            "workload {shown} is a directory; pass a JSONL file or an alias (agentic, qa, office)"
        )));
    }
    let bytes = read_bounded(path, stop)?.map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_string()
        } else {
            format!("cannot read it: {e}")
        };
        Error::usage(format!(
            "workload {shown}: {why}; pass a JSONL file or an alias (agentic, qa, office)"
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::usage(format!(
            "workload {shown}: not UTF-8 text ({e}); a workload is JSONL"
        ))
    })?;
    // A byte-order mark (some editors write one) is not part of the first row.
    let text_rows = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let traces = parse(&shown, text_rows)?;
    Ok(Workload {
        path: path.to_path_buf(),
        content_hash: fnv1a_hex(text.as_bytes()),
        traces,
    })
}

/// FNV-1a 64-bit of `bytes`: stable across builds and platforms, so hashes
/// in result files and event logs compare between runs.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continue FNV-1a state `h` over `bytes` (hashing a buffer as it grows).
pub fn fnv1a_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv1a`] as 16 hex digits.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

/// Parse JSONL text; `name` prefixes every message (`name:line: ...`).
pub fn parse(name: &str, text: &str) -> Result<Vec<Trace>> {
    let mut traces = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        traces.push(parse_row(&at, line).map_err(Error::Usage)?);
    }
    if traces.is_empty() {
        return Err(Error::usage(format!(
            "workload {name}: no traces (the file is empty); a workload has one JSON object per line"
        )));
    }
    Ok(traces)
}

fn parse_row(at: &str, line: &str) -> std::result::Result<Trace, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        let hint = if line.contains("NaN") || line.contains("Infinity") {
            " (NaN and Infinity are not valid JSON numbers)"
        } else {
            ""
        };
        format!("{at}: not valid JSON: {e}{hint}; each line must be one JSON object")
    })?;
    let Value::Object(obj) = &value else {
        return Err(format!(
            "{at}: expected a JSON object, got {}",
            short(&value)
        ));
    };
    let field = |name: &str| -> std::result::Result<&Value, String> {
        obj.get(name)
            .ok_or_else(|| format!("{at}: missing field {name}"))
    };
    let tokens = |name: &str, v: &Value| -> std::result::Result<u32, String> {
        count(
            at,
            name,
            v,
            MAX_CONTEXT_TOKENS,
            "tokens in a trace's context",
        )
        .map(|n| n as u32)
    };
    let num_turns = count(
        at,
        "num_turns",
        field("num_turns")?,
        limits::MAX_TURNS as u64,
        "turns",
    )? as usize;
    let input_prompt_length = tokens("input_prompt_length", field("input_prompt_length")?)?;
    let final_len = tokens(
        "final_assistant_response_length",
        field("final_assistant_response_length")?,
    )?;
    let list = |name: &str| -> std::result::Result<&Vec<Value>, String> {
        match field(name)? {
            Value::Array(items) if items.len() == num_turns => Ok(items),
            Value::Array(items) => Err(format!(
                "{at}: {name} has {} entries, num_turns is {num_turns}",
                items.len()
            )),
            other => Err(format!(
                "{at}: {name} must be a list of {num_turns} numbers, got {}",
                short(other)
            )),
        }
    };
    let ints = |name: &str| -> std::result::Result<Vec<u32>, String> {
        list(name)?
            .iter()
            .enumerate()
            .map(|(j, v)| tokens(&format!("{name}[{j}]"), v))
            .collect()
    };
    let assistant_response_length = ints("assistant_response_length")?;
    let tool_call_output_length = ints("tool_call_output_length")?;
    let tool_call_latency = list("tool_call_latency")?
        .iter()
        .enumerate()
        .map(|(j, v)| match v.as_f64() {
            Some(x) if x.is_finite() && x > limits::MAX_SECONDS => Err(format!(
                "{at}: tool_call_latency[{j}] {x} is too large: at most {} seconds",
                limits::MAX_SECONDS
            )),
            Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
            _ => Err(format!(
                "{at}: tool_call_latency[{j}] must be a finite number of seconds >= 0, got {}",
                short(v)
            )),
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    let context: u64 = [input_prompt_length, final_len]
        .iter()
        .chain(&assistant_response_length)
        .chain(&tool_call_output_length)
        .map(|&n| n as u64)
        .sum();
    if context > MAX_CONTEXT_TOKENS {
        return Err(format!(
            "{at}: the trace's context would reach {context} tokens, too large: at most {MAX_CONTEXT_TOKENS}"
        ));
    }
    let context_before = std::iter::once(input_prompt_length as u64)
        .chain(
            assistant_response_length
                .iter()
                .zip(&tool_call_output_length)
                .scan(input_prompt_length as u64, |c, (&a, &t)| {
                    *c += a as u64 + t as u64;
                    Some(*c)
                }),
        )
        .collect();
    Ok(Trace {
        input_prompt_length,
        assistant_response_length,
        tool_call_output_length,
        tool_call_latency,
        final_assistant_response_length: final_len,
        context_before,
    })
}

/// The bytes of `path`, at most [`limits::MAX_DOWNLOAD_BYTES`], read on a
/// thread of their own so that `stop` ends the wait at once (a FIFO without
/// a writer, a silent pipe); the reader is then left to the process's end.
fn read_bounded(path: &Path, stop: &Stop) -> Result<std::io::Result<Vec<u8>>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let owned = path.to_path_buf();
    let max = limits::MAX_DOWNLOAD_BYTES;
    let reader = std::thread::Builder::new()
        .name("workload-reader".into())
        .spawn(move || {
            let read = std::fs::File::open(&owned).and_then(|f| {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, max + 1), &mut bytes)?;
                if bytes.len() as u64 > max {
                    return Err(std::io::Error::other(format!(
                        "larger than {max} bytes, too large"
                    )));
                }
                Ok(bytes)
            });
            let _ = tx.send(read);
        })
        .map_err(|e| Error::run(format!("cannot start a thread: {e}")))?;
    crossbeam_channel::select! {
        recv(rx) -> r => {
            let _ = reader.join();
            Ok(r.unwrap_or_else(|_| Err(std::io::Error::other("the reader failed"))))
        }
        recv(stop.receiver()) -> _ => Err(Error::Interrupted),
    }
}

/// A count: a non-negative integer (an integral float such as `100.0` too)
/// of at most `max` (`unit` names what the maximum counts).
fn count(
    at: &str,
    name: &str,
    v: &Value,
    max: u64,
    unit: &str,
) -> std::result::Result<u64, String> {
    let n = v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0 && x.fract() == 0.0)
            .map(|x| x.min(u64::MAX as f64) as u64)
    });
    match n {
        Some(n) if n > max => Err(format!(
            "{at}: {name} {n} is too large: at most {max} {unit}"
        )),
        Some(n) => Ok(n),
        None => Err(format!(
            "{at}: {name} must be a non-negative integer, got {}",
            short(v)
        )),
    }
}

/// A value for an error message, cut to 40 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"{"num_turns": 2, "input_prompt_length": 32, "assistant_response_length": [16, 20], "tool_call_output_length": [8, 12], "tool_call_latency": [0.0, 0.5], "final_assistant_response_length": 64, "extra": 1}"#;

    #[test]
    fn parses_row_and_skips_blank_lines() {
        let t = parse("w.jsonl", &format!("\n{ROW}\n  \n")).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].num_requests(), 3);
        assert_eq!(t[0].max_tokens(1), 20);
        assert_eq!(t[0].max_tokens(2), 64);
    }

    #[test]
    fn turn_accounting_follows_spec() {
        let t = &parse("w", ROW).unwrap()[0];
        assert_eq!(
            t.turn_tokens(0),
            TurnTokens {
                new_prompt: 32,
                cached_prompt: 0,
                completion: 16
            }
        );
        assert_eq!(
            t.turn_tokens(1),
            TurnTokens {
                new_prompt: 8,
                cached_prompt: 32 + 16,
                completion: 20
            }
        );
        assert_eq!(
            t.turn_tokens(2),
            TurnTokens {
                new_prompt: 12,
                cached_prompt: 32 + 16 + 8 + 20,
                completion: 64
            }
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = ROW.replace("[0.0, 0.5]", "[0.0]");
        let e = parse("w.jsonl", &format!("{ROW}\n{bad}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.jsonl:2: tool_call_latency has 1 entries, num_turns is 2"
        );
        let e = parse("w.jsonl", &ROW.replace("[16, 20]", "[16, -3]"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.jsonl:1: assistant_response_length[1] must be a non-negative integer, got -3"
        );
        let e = parse("w.jsonl", &ROW.replace("32,", "1000000000,"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "w.jsonl:1: input_prompt_length 1000000000 is too large: at most 2097152 tokens in a trace's context"
        );
        let e = parse("w.jsonl", &ROW.replace("[16, 20]", "[2000000, 200000]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("context would reach 2200116 tokens"), "{e}");
        let e = parse("w.jsonl", &ROW.replace("[0.0, 0.5]", "[0.0, 1e19]"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w.jsonl:1: tool_call_latency[1]") && e.contains("too large"));
        // Integral floats, as Python's json writes them, are counts too.
        let t = parse(
            "w",
            &ROW.replace(
                "\"input_prompt_length\": 32",
                "\"input_prompt_length\": 32.0",
            ),
        )
        .unwrap();
        assert_eq!(t[0].input_prompt_length, 32);
    }
}

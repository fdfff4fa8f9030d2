//! The preflight, before the clock starts: `GET /v1/models` (the model is
//! served, or the one served is picked), then one tiny completion that shows
//! whether the server streams, honours `ignore_eos`, reports usage and
//! `cached_tokens`, and counts the prompt as trie does. Unreachable servers,
//! unknown models and failing completions stop the run (exit 1); the rest are
//! warnings, because a run can still measure something.

use crate::error::{Error, Result};
use crate::exec::slot::{Body, SERVER_BOS, embeddings_body};
use crate::net::client::{self, Client, Expect, Failure, FailureKind, Reply};
use crate::stop::Stop;
use std::collections::BTreeMap;

use crate::text::chat::{ChatTemplate, Message};
use crate::text::conversation::{Calibration, Counting};
use crate::text::prompt::{Synth, segment_key};
use crate::text::tokenizer::Tokenizer;

/// Synthetic prompt tokens of the probe (plus the server's BOS).
pub const PROBE_PROMPT_TOKENS: u64 = 16;

/// Completion tokens the probe asks for with `ignore_eos`: more than one, so
/// a server that stops early shows it.
pub const PROBE_MAX_TOKENS: u32 = 4;

/// The error of a preflight step that failed: interrupted when `stop` is
/// set, else a run error built by `describe`.
fn failed(stop: &Stop, describe: impl FnOnce() -> String) -> Error {
    if stop.is_set() {
        Error::Interrupted
    } else {
        Error::run(describe())
    }
}

/// Ask `GET {endpoint}/models` for the model names served. `Ok(None)` when
/// the server has no such route (404).
pub fn served_models(client: &Client, endpoint: &str, stop: &Stop) -> Result<Option<Vec<String>>> {
    let url = format!("{endpoint}/models");
    let (status, text) = client.get(&url).map_err(|f| {
        failed(stop, || {
            if !matches!(f.kind, FailureKind::Http(_)) && speaks_plain_http(endpoint) {
                return format!(
                    "TLS handshake failed with {endpoint} ({}): the server speaks plain HTTP there; use http://",
                    f.message
                );
            }
            let hint = match f.kind {
                FailureKind::Http(_) => "",
                FailureKind::Timeout => "; is the server up? (--connect-timeout)",
                _ => "; is the server up?",
            };
            format!("cannot reach {url}: {}{hint}", f.message)
        })
    })?;
    match status {
        200 => {}
        404 => return Ok(None),
        401 | 403 => {
            return Err(Error::run(format!(
                "GET {url}: HTTP {status}: {}; pass the right key with --api-key or OPENAI_API_KEY",
                crate::redact::one_line(&text)
            )));
        }
        _ => {
            return Err(Error::run(format!(
                "GET {url}: HTTP {status}: {}",
                crate::redact::one_line(&text)
            )));
        }
    }
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::run(format!(
            "GET {url}: not an OpenAI model list ({e}): {}; is --endpoint the server's API base?",
            crate::redact::one_line(&text)
        ))
    })?;
    Ok(Some(
        body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    ))
}

/// Whether an `https://` endpoint's port answers plain HTTP (the usual
/// cause of a failed TLS handshake).
fn speaks_plain_http(endpoint: &str) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let Some(rest) = endpoint.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:443")
    } else {
        authority.to_string()
    };
    let wait = std::time::Duration::from_secs(1);
    let Some(addr) = with_port.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, wait) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(wait));
    let mut head = [0u8; 5];
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && tcp.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

/// The model to request: `wanted` (when the server does not list it, a
/// warning names what it lists, and the probe completion decides), else the
/// one model it serves.
pub fn choose_model(
    client: &Client,
    endpoint: &str,
    wanted: Option<&str>,
    stop: &Stop,
) -> Result<String> {
    let served = served_models(client, endpoint, stop)?;
    let shown = |list: &[String]| {
        list.iter()
            .map(|m| crate::redact::one_line(m))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, served) {
        (Some(w), None) => {
            log::warn!("{endpoint}/models is not served (404); cannot check that model {w} exists");
            Ok(w.to_string())
        }
        (None, None) => Err(Error::run(format!(
            "{endpoint}/models is not served (404), so the model cannot be discovered; pass --model"
        ))),
        (Some(w), Some(list)) => {
            if !list.is_empty() && !list.iter().any(|m| m == w) {
                log::warn!(
                    "model {w} is not among the models {endpoint}/models lists ({}); some servers serve any name (llama-server lists its file), so the probe completion decides",
                    shown(&list)
                );
            }
            Ok(w.to_string())
        }
        (None, Some(list)) => match list.as_slice() {
            [one] => {
                log::info!(
                    "{}",
                    crate::output::report::event_line(
                        "using served model",
                        &[("model".into(), one.clone())]
                    )
                );
                Ok(one.clone())
            }
            [] => Err(Error::run(format!(
                "{endpoint}/models lists no model; pass --model"
            ))),
            many => Err(Error::usage(format!(
                "{endpoint} serves several models ({}); pass --model",
                shown(many)
            ))),
        },
    }
}

/// The routing key of the probe request.
pub const PROBE_ROUTING_KEY: &str = "trie-preflight";

/// What the probe found out.
pub struct Probe {
    /// The tokenizer that counts replies as the server will.
    pub tokenizer: Tokenizer,
    /// The server reads non-special added-token text as plain text.
    pub added_tokens_as_text: bool,
    /// Shortcomings already warned about (not warned again during the run).
    pub warned: Warned,
}

/// Warnings given once per run: by the preflight, or at their first
/// occurrence during the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warned {
    /// Fewer completion tokens than asked for (the server ignores `ignore_eos`).
    pub short: bool,
    /// Chat-shaped choices on `/v1/completions`.
    pub chat_shaped: bool,
}

/// Send the probe completion (retried like any request, with backoffs that
/// `stop` cuts short); an error when it fails, warnings logged. The probe's
/// prompt is synthetic words followed by one of the tokenizer's non-special
/// added tokens (if it has any): the server's count says whether it reads
/// such text as one token (Hugging Face tokenizers) or as plain text
/// (llama.cpp, for some vocabularies). Model output can contain that text
/// and is sent back in later prompts, so the tokenizer returned is the one
/// that counts replies as the server will.
pub fn probe(
    client: &Client,
    synth: &Synth,
    tok: Tokenizer,
    seed: u64,
    model_json: &str,
    max_retries: u32,
    stop: &Stop,
) -> Result<Probe> {
    let mut text = synth.text(segment_key(seed, u64::MAX, 0), PROBE_PROMPT_TOKENS as usize);
    let added = tok.plain_added_token();
    let plain = added.as_ref().and_then(|_| tok.with_added_tokens_as_text());
    let mut body = Body::new(model_json, client.streaming());
    body.push_synthetic(&text);
    if let (Some(added), Some(_)) = (&added, &plain) {
        body.push_text(added);
        text.push_str(added);
    }
    let expected = |t: &Tokenizer| SERVER_BOS + t.count(&text) as u64;
    body.finish(PROBE_MAX_TOKENS);
    let expect = Expect::new(PROBE_MAX_TOKENS as u64, synth.longest_token_bytes());
    let reply = send_probe(client, body.bytes(), expect, max_retries, stop)?;
    let counted = reply.usage.map(|u| u.prompt_tokens);
    let (tok, as_text) = match plain {
        Some(p) if counted != Some(expected(&tok)) && counted == Some(expected(&p)) => {
            log::info!(
                "preflight: the server reads added-token text such as {:?} as plain text; trie counts replies the same way",
                added.unwrap_or_default()
            );
            (p, true)
        }
        _ => (tok, false),
    };
    for w in findings(&reply, client.streaming(), Some(expected(&tok))) {
        log::warn!("preflight: {w}");
    }
    Ok(Probe {
        warned: Warned {
            short: reply
                .usage
                .is_some_and(|u| u.completion_tokens < PROBE_MAX_TOKENS as u64),
            chat_shaped: reply.chat_shaped,
        },
        tokenizer: tok,
        added_tokens_as_text: as_text,
    })
}

/// Send one probe request (retried like any request, with backoffs that
/// `stop` cuts short).
fn send_probe(
    client: &Client,
    body: &[u8],
    expect: Expect,
    max_retries: u32,
    stop: &Stop,
) -> Result<Reply> {
    let mut attempt = 0;
    let mut reconnected = false;
    loop {
        let mut sent = std::time::Instant::now();
        match client.complete(body, PROBE_ROUTING_KEY, expect, &mut sent) {
            // A kept-alive connection the server closed after the last
            // probe (llama-server closes after every stream): again at once
            // on a new one, as a slot does.
            Err(f) if f.stale && !reconnected && !stop.is_set() => reconnected = true,
            Err(f) if f.kind.retryable() && attempt < max_retries && !stop.is_set() => {
                log::warn!("preflight: {}; retrying", f.message);
                if !stop.sleep(client::backoff(attempt)) {
                    return Err(Error::Interrupted);
                }
                attempt += 1;
            }
            r => break r,
        }
    }
    .map_err(|f| failed(stop, || probe_failure(&f)))
}

/// The embeddings probe: one input of synthetic words; the server's count
/// says how many tokens it adds to each input (a BOS, a CLS and SEP, an
/// EOS), so that each input can be the length asked for as the server
/// counts it. An error when it fails or sends no usage.
pub fn probe_embeddings(
    client: &Client,
    synth: &Synth,
    tok: &Tokenizer,
    seed: u64,
    model_json: &str,
    max_retries: u32,
    stop: &Stop,
) -> Result<u64> {
    let text = synth.text(segment_key(seed, u64::MAX, 0), PROBE_PROMPT_TOKENS as usize);
    let body = embeddings_body(model_json, std::slice::from_ref(&text));
    let reply = send_probe(client, &body, Expect::embeddings(1), max_retries, stop)?;
    let Some(u) = reply.usage else {
        return Err(Error::run(
            "preflight: the server's embeddings response has no usage, and trie needs its prompt counts; is --endpoint an OpenAI embeddings API?",
        ));
    };
    let content = tok.count(&text) as u64;
    let added = u.prompt_tokens.checked_sub(content).filter(|&a| a <= 4).ok_or_else(|| {
        Error::run(format!(
            "preflight: the server counted {} tokens for an embeddings input of {content}: the tokenizer (--tokenizer) is not the served model's",
            u.prompt_tokens
        ))
    })?;
    log::info!(
        "preflight: the server adds {added} token(s) to every embeddings input; each input is sized to count as asked"
    );
    Ok(added)
}

/// What the chat probe found out (`--api chat`).
pub struct ChatProbe {
    /// What the completion probe finds out.
    pub probe: Probe,
    /// How chat prompts are counted.
    pub counting: Counting,
}

/// The chat probe: two conversations sent to the chat route — a user
/// message, then the same with a reply and another user message after it.
/// The server's prompt counts of both, against trie's rendering of them
/// with `template`, say whether trie renders as the server does and how
/// many tokens (a BOS) the server adds; the user messages end in one of
/// the tokenizer's non-special added tokens, as the completion probe's
/// prompt does. When there is no template, it cannot be rendered, or the
/// server's counts differ otherwise, the template's tokens are calibrated
/// from the server's counts (said in a warning).
#[allow(clippy::too_many_arguments)]
pub fn probe_chat(
    client: &Client,
    synth: &Synth,
    tok: Tokenizer,
    template: Option<ChatTemplate>,
    extra: &BTreeMap<String, serde_json::Value>,
    fields: &str,
    seed: u64,
    model_json: &str,
    with_system: bool,
    max_retries: u32,
    stop: &Stop,
) -> Result<ChatProbe> {
    let added = tok.plain_added_token();
    let plain = added.as_ref().and_then(|_| tok.with_added_tokens_as_text());
    let words = |k: u32, n: usize| synth.text(segment_key(seed, u64::MAX, k), n);
    let answer = words(1, PROBE_MAX_TOKENS as usize);
    let system = words(2, PROBE_PROMPT_TOKENS as usize);
    // A user message alone; with an answer and another user message; with
    // a shared prefix, a system message before the user's.
    let shaped = |user: &str| -> Vec<Vec<Message>> {
        let short = vec![Message::new("user", user)];
        let mut long = short.clone();
        long.push(Message::new("assistant", &answer));
        long.push(Message::new("user", user));
        let mut all = vec![short.clone(), long];
        if with_system {
            all.push([vec![Message::new("system", &system)], short].concat());
        }
        all
    };
    let user_words = words(0, PROBE_PROMPT_TOKENS as usize);
    let user = match (&added, &plain) {
        (Some(added), Some(_)) => format!("{user_words}{added}"),
        _ => user_words.clone(),
    };
    let conversations = shaped(&user);
    // Each conversation sent; the server's prompt count of it.
    let send = |conversation: &[Message]| -> Result<Reply> {
        let mut body = Body::chat(
            model_json,
            client.streaming(),
            fields,
            &conversation[0].role,
        );
        for (i, m) in conversation.iter().enumerate() {
            if i > 0 {
                body.message(&m.role);
            }
            body.push_text(&m.content);
        }
        body.finish(PROBE_MAX_TOKENS);
        // The body's size bounds what a server may count.
        let expect = Expect::new(PROBE_MAX_TOKENS as u64, synth.longest_token_bytes())
            .prompt_bytes(body.bytes().len() as u64);
        let reply = send_probe(client, body.bytes(), expect, max_retries, stop)?;
        // One answer without usage may be a server's hiccup: once more.
        if reply.usage.is_none() {
            return send_probe(client, body.bytes(), expect, max_retries, stop);
        }
        Ok(reply)
    };
    let mut served = Vec::new();
    let mut first_reply = None;
    for conversation in &conversations {
        let reply = send(conversation)?;
        served.push(reply.usage.map(|u| u.prompt_tokens));
        first_reply.get_or_insert(reply);
    }
    // Chat-shaped, as asked.
    let reply = Reply {
        chat_shaped: false,
        ..first_reply.unwrap_or_default()
    };
    let warned = Warned {
        short: reply
            .usage
            .is_some_and(|u| u.completion_tokens < PROBE_MAX_TOKENS as u64),
        chat_shaped: false,
    };
    // trie's count of each conversation with `t` and the variables `vars`,
    // when the template renders.
    let rendered = |t: &Tokenizer, vars: &BTreeMap<String, serde_json::Value>| {
        let template = template.as_ref()?;
        conversations
            .iter()
            .map(|c| {
                let text = template.render(c, true, vars).ok()?;
                Some(t.count(&text) as u64)
            })
            .collect::<Option<Vec<u64>>>()
    };
    // The server adds `bos` (0 or 1) to every rendering alike.
    let fits = |counts: &Option<Vec<u64>>| -> Option<u64> {
        let c = counts.as_ref()?;
        let bos = served[0]?.checked_sub(c[0])?;
        let all = served
            .iter()
            .zip(c)
            .all(|(s, c)| s.and_then(|s| s.checked_sub(*c)) == Some(bos));
        (bos <= 1 && all).then_some(bos)
    };
    let mine = rendered(&tok, extra);
    // Each way to count: the variables (the user's first, then theirs with
    // those engines set themselves) and the tokenizer (as it is, then
    // reading non-special added tokens as text), the first that fits.
    let found = template_variables(extra)
        .into_iter()
        .enumerate()
        .find_map(|(i, vars)| {
            if let Some(bos) = fits(&rendered(&tok, &vars)) {
                return Some((i, vars, false, bos));
            }
            let p = plain.as_ref()?;
            fits(&rendered(p, &vars)).map(|bos| (i, vars, true, bos))
        });
    let (tok, as_text_found, found) = match found {
        Some((i, vars, as_text, bos)) => {
            if as_text {
                log::info!(
                    "preflight: the server reads added-token text such as {:?} as plain text; trie counts the same way",
                    added.clone().unwrap_or_default()
                );
            }
            if i > 0 {
                log::info!(
                    "preflight: the server renders the chat template with the variables {} (the engine sets them itself); trie renders with them too",
                    serde_json::Value::Object(vars.clone().into_iter().collect())
                );
            }
            let tok = if as_text { plain.unwrap_or(tok) } else { tok };
            (tok, as_text, Some((vars, bos)))
        }
        None => (tok, false, None),
    };
    for w in findings(&reply, client.streaming(), None) {
        log::warn!("preflight: {w}");
    }
    let counting = match (found, template) {
        (Some((vars, bos)), Some(template)) => {
            log::info!(
                "preflight: chat prompts counted exactly with the template {} (the server adds {bos} token{} to it)",
                template.source,
                if bos == 1 { "" } else { "s" }
            );
            Counting::Template {
                template: Box::new(template),
                extra: vars,
                bos,
            }
        }
        (_, template) => {
            // Calibrated on conversations of words alone: the probes'
            // added token (which the run's messages do not carry) may be
            // one token or several to this server.
            let words_only = shaped(&user_words);
            let counted: Vec<Option<u64>> = if words_only == conversations {
                served.clone()
            } else {
                words_only
                    .iter()
                    .map(|c| Ok(send(c)?.usage.map(|u| u.prompt_tokens)))
                    .collect::<Result<_>>()?
            };
            let no_usage = || {
                Error::run(
                    "preflight: the server sent no usage for chat requests, and trie needs its prompt counts to count the chat template's tokens; is --endpoint an OpenAI chat API?",
                )
            };
            let (a, b) = (
                counted[0].ok_or_else(no_usage)?,
                counted[1].ok_or_else(no_usage)?,
            );
            let c = match counted.get(2) {
                Some(c) => Some(c.ok_or_else(no_usage)?),
                None => None,
            };
            let count = |m: &Message| tok.count(&m.content) as i64;
            let (u, r) = (count(&words_only[0][0]), count(&words_only[1][1]));
            // The counts are bounded by the bodies' sizes (checked as usage).
            let calibration = Calibration {
                first: a as i64 - u,
                system: c.map_or(0, |c| c as i64 - a as i64 - count(&words_only[2][0])),
                per_turn: b as i64 - a as i64 - u - r,
            };
            if calibration.first < 0 || calibration.per_turn < 0 || calibration.system < 0 {
                return Err(Error::run(format!(
                    "preflight: the server counted {a} and {b} prompt tokens for chat messages of {u}, and {u} + {r} + {u} tokens: fewer than their content, so the chat template's tokens cannot be calibrated; is --tokenizer the served model's?"
                )));
            }
            let shown = |n: Option<u64>| n.map_or("no".to_string(), |n| n.to_string());
            let why = match (&template, &mine) {
                (None, _) => {
                    "no chat template was found beside the tokenizer (pass --chat-template FILE)"
                        .to_string()
                }
                (Some(t), None) => format!(
                    "the chat template {} cannot render trie's conversation ({})",
                    t.source,
                    conversations
                        .iter()
                        .find_map(|c| t.render(c, true, extra).err())
                        .unwrap_or_default()
                ),
                (Some(t), Some(c)) => format!(
                    "the server counted {} and {} prompt tokens where trie's rendering with the chat template {} has {} and {}: the server renders differently (pass the template it uses with --chat-template, its variables with --chat-template-kwargs)",
                    shown(served[0]),
                    shown(served[1]),
                    t.source,
                    c[0],
                    c[1]
                ),
            };
            log::warn!(
                "preflight: {why}; chat prompts are counted from the server's own counts instead ({} template tokens before the first answer, {} per turn), which may be off by a few tokens",
                calibration.first,
                calibration.per_turn
            );
            Counting::Calibrated(calibration)
        }
    };
    Ok(ChatProbe {
        probe: Probe {
            tokenizer: tok,
            added_tokens_as_text: as_text_found,
            warned,
        },
        counting,
    })
}

/// Variables engines pass to chat templates of their own accord (llama.cpp
/// sets thinking on for formats it knows), tried in this order after the
/// user's when trie's rendering does not match the server's counts.
const ENGINE_VARIABLES: &[&[(&str, bool)]] = &[
    &[("enable_thinking", true)],
    &[("enable_thinking", false)],
    &[("thinking", true)],
    &[("thinking", true), ("drop_thinking", false)],
    &[("thinking", false)],
];

/// The variables to try rendering with: `--chat-template-kwargs` alone,
/// then with each of [`ENGINE_VARIABLES`] under them (the user's win).
fn template_variables(
    user: &BTreeMap<String, serde_json::Value>,
) -> Vec<BTreeMap<String, serde_json::Value>> {
    let mut out = vec![user.clone()];
    for set in ENGINE_VARIABLES {
        let mut vars = user.clone();
        for (k, v) in *set {
            vars.entry(k.to_string())
                .or_insert(serde_json::Value::Bool(*v));
        }
        if !out.contains(&vars) {
            out.push(vars);
        }
    }
    out
}

/// The message of a failed probe, with a hint for its kind.
fn probe_failure(f: &Failure) -> String {
    let hint = match f.kind {
        FailureKind::Connect if f.message.contains("TLS") => "",
        FailureKind::Connect => "is the server up?",
        FailureKind::Timeout => {
            "the server did not answer within --connect-timeout (raise it for a slow first request)"
        }
        FailureKind::Http(401 | 403) => "pass the right key with --api-key",
        FailureKind::Http(404) => {
            "does the server serve the route --api asks for (/v1/completions, /v1/chat/completions, /v1/embeddings), and is --model right?"
        }
        FailureKind::Http(400 | 422) => {
            "the server refused a plain request of this --api; is --model right, and does the model serve it (llama-server: --embeddings and a --pooling for embeddings)?"
        }
        FailureKind::Http(s) if (300..400).contains(&s) => "",
        FailureKind::Http(204) => "the server answered without content",
        FailureKind::Reset => "the connection broke: is it an HTTP server, and healthy?",
        FailureKind::Truncated => "the answer ended early; is the server healthy?",
        FailureKind::Client => "",
        _ => "the server's answer is not an OpenAI completion",
    };
    let sep = if hint.is_empty() { "" } else { "; " };
    format!(
        "preflight request failed ({}): {}{sep}{hint}",
        f.kind.name(),
        f.message
    )
}

/// The warning for a completion shorter than asked for with `ignore_eos`.
pub fn short_completion(got: u64, asked: u64) -> String {
    format!(
        "the server returned {got} of the {asked} tokens asked for with ignore_eos: it seems to ignore ignore_eos, so completions will be shorter than the workload's"
    )
}

/// What the probe's reply says about the server, as warnings; `expected` is
/// the prompt count trie meant to send (`None`: the chat probe, which
/// judges the counts itself).
pub fn findings(reply: &Reply, stream: bool, expected: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    if reply.chat_shaped {
        out.push(
            "the server answers /v1/completions with chat-shaped choices (delta): it renders a chat template around every prompt, so prompt counts will be off; is --endpoint an OpenAI completions API? (for chat, pass --api chat)"
                .to_string(),
        );
    }
    if stream && !reply.streamed {
        out.push(
            "the server answered a stream request with one JSON body: it does not stream, so TTFT, TTFAT, decode speed and ITL will be missing (or pass --no-stream)"
                .to_string(),
        );
    }
    let Some(u) = reply.usage else {
        out.push(
            "the server sent no usage: completion tokens fall back to max_tokens and cache hit rates will be absent"
                .to_string(),
        );
        return out;
    };
    if u.completion_tokens < PROBE_MAX_TOKENS as u64 {
        out.push(short_completion(
            u.completion_tokens,
            PROBE_MAX_TOKENS as u64,
        ));
    }
    if u.cached_tokens.is_none() {
        out.push(
            "the server reports no cached_tokens (usage.prompt_tokens_details): cache hit rates will be absent (vLLM: --enable-prompt-tokens-details)"
                .to_string(),
        );
    }
    if let Some(expected) = expected.filter(|&e| e != u.prompt_tokens) {
        out.push(format!(
            "the server counted {} prompt tokens where trie sent {expected}: the tokenizer (--tokenizer) may not be the served model's, so prompt lengths will be off",
            u.prompt_tokens
        ));
    }
    out
}

/// Empty the engine's prefix cache where it offers a way: vLLM's (and the
/// sim's) `POST /reset_prefix_cache`, SGLang's `POST /flush_cache`, or
/// llama.cpp's `POST /slots/ID?action=erase` for every slot `GET /slots`
/// lists, tried in that order at the endpoint's root (without `/v1`).
/// Returns what worked, or why nothing did.
pub fn reset_cache(client: &Client, endpoint: &str) -> std::result::Result<String, String> {
    let root = endpoint.trim_end_matches('/').trim_end_matches("/v1");
    let ok = |r: &std::result::Result<(u16, String), crate::net::client::Failure>| {
        matches!(r, Ok((200..=299, _)))
    };
    let mut tried = Vec::new();
    for (engine, path) in [("vLLM", "/reset_prefix_cache"), ("SGLang", "/flush_cache")] {
        let r = client.post_empty(&format!("{root}{path}"));
        if ok(&r) {
            return Ok(format!("POST {path} ({engine})"));
        }
        tried.push(match r {
            Ok((status, _)) => format!("POST {path}: {status}"),
            Err(f) => format!("POST {path}: {}", f.message),
        });
    }
    match client.get(&format!("{root}/slots")) {
        Ok((200, body)) => {
            let ids: Vec<u64> = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.as_array()
                        .map(|a| a.iter().filter_map(|s| s["id"].as_u64()).collect())
                })
                .unwrap_or_default();
            if ids.is_empty() {
                tried.push("GET /slots: no slot ids".to_string());
            } else {
                let erased = ids
                    .iter()
                    .filter(|id| ok(&client.post_empty(&format!("{root}/slots/{id}?action=erase"))))
                    .count();
                if erased == ids.len() {
                    return Ok(format!(
                        "POST /slots/ID?action=erase for {erased} slots (llama.cpp)"
                    ));
                }
                tried.push(format!(
                    "POST /slots/ID?action=erase: {erased} of {} slots",
                    ids.len()
                ));
            }
        }
        Ok((status, _)) => tried.push(format!("GET /slots: {status}")),
        Err(f) => tried.push(format!("GET /slots: {}", f.message)),
    }
    Err(crate::redact::one_line(&tried.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::sse::Usage;

    #[test]
    fn template_variables_start_with_the_users_and_never_override_them() {
        let user: BTreeMap<String, serde_json::Value> =
            [("thinking".to_string(), serde_json::Value::Bool(false))].into();
        let vars = template_variables(&user);
        assert_eq!(vars[0], user);
        // Every candidate keeps the user's value.
        assert!(vars.iter().all(|v| v["thinking"] == false));
        assert!(
            vars.iter()
                .any(|v| v.get("enable_thinking") == Some(&true.into()))
        );
        // No candidate twice.
        for (i, v) in vars.iter().enumerate() {
            assert!(!vars[..i].contains(v));
        }
        assert_eq!(
            template_variables(&BTreeMap::new()).len(),
            1 + ENGINE_VARIABLES.len()
        );
    }

    #[test]
    fn findings_name_each_shortcoming() {
        let good = Reply {
            streamed: true,
            usage: Some(Usage {
                prompt_tokens: 17,
                completion_tokens: 4,
                cached_tokens: Some(0),
            }),
            ..Reply::default()
        };
        assert!(findings(&good, true, Some(17)).is_empty());
        let bad = Reply {
            streamed: false,
            usage: Some(Usage {
                prompt_tokens: 18,
                completion_tokens: 1,
                cached_tokens: None,
            }),
            ..Reply::default()
        };
        let f = findings(&bad, true, Some(17)).join("\n");
        for needle in [
            "does not stream",
            "ignore ignore_eos",
            "no cached_tokens",
            "counted 18 prompt tokens where trie sent 17",
        ] {
            assert!(f.contains(needle), "{needle} missing in {f}");
        }
        assert!(findings(&Reply::default(), false, Some(17))[0].contains("no usage"));
        let chat = Reply {
            chat_shaped: true,
            ..Reply::default()
        };
        assert!(findings(&chat, false, Some(17))[0].contains("chat-shaped"));
    }
}

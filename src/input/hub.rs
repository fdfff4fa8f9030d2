//! Downloads from a Hugging Face hub (`HF_ENDPOINT`): workload aliases and
//! tokenizers. Every download lands in a temporary sibling first and is renamed
//! into place, so a broken transfer never looks like a cached file.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::stop::Stop;

/// The hub base URL: `HF_ENDPOINT`, else `https://huggingface.co`, without a
/// trailing slash.
pub fn endpoint() -> String {
    let base = std::env::var("HF_ENDPOINT").unwrap_or_default();
    let base = if base.trim().is_empty() {
        "https://huggingface.co".to_string()
    } else {
        base
    };
    base.trim().trim_end_matches('/').to_string()
}

/// Outcome of a successful download.
pub struct Downloaded {
    /// The `X-Repo-Commit` header, when the hub sent a commit id (hex, 7 to
    /// 64 digits: anything else, such as a path, is ignored).
    pub commit: Option<String>,
}

/// Whether `rev` is a commit id, safe as a directory name.
pub fn is_commit(rev: &str) -> bool {
    (7..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Download `url` to `dest` atomically (temporary sibling + rename), sending
/// `bearer` as an `Authorization` header when given; `stop` breaks it off.
/// The error message never contains the token.
pub fn download(
    url: &str,
    dest: &Path,
    bearer: Option<&str>,
    stop: &Stop,
) -> Result<Downloaded, String> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(1800)))
        .build();
    let agent: ureq::Agent = config.into();
    stop.watch(&agent);
    let mut req = agent.get(url);
    if let Some(token) = bearer.filter(|t| !t.is_empty()) {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let hint = match status {
            401 | 403 => " (set HF_TOKEN for gated or private repositories)",
            404 => " (check the name)",
            _ => "",
        };
        return Err(format!("GET {url}: HTTP {status}{hint}"));
    }
    let commit = resp
        .headers()
        .get("x-repo-commit")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_commit(v))
        .map(str::to_string);
    let tmp = dest.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        // Never through a link planted at the temporary name (as files.rs
        // writes results): a stale one is removed, the file made anew.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let max = crate::limits::MAX_DOWNLOAD_BYTES;
        let mut reader = resp.body_mut().with_config().limit(max + 1).reader();
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n as u64;
            if got > max {
                return Err(std::io::Error::other(format!(
                    "larger than {max} bytes, too large"
                )));
            }
            std::io::Write::write_all(&mut file, &buf[..n])?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("GET {url}: {e}"));
    }
    Ok(Downloaded { commit })
}

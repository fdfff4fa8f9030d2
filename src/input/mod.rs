//! Where the traffic comes from: the workload file (and its dataset aliases) and Hub downloads.

pub mod hub;
pub mod workload;

/// The text of a small input file (a chat template, a corpus): a regular
/// file (a FIFO or a device would block or never end), at most
/// `max_bytes`, UTF-8. `Err`: what is wrong with it, for a message that
/// names the flag.
pub fn read_text_file(path: &std::path::Path, max_bytes: u64) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it ({e})"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    if meta.len() > max_bytes {
        return Err(format!(
            "{} bytes, more than the {max_bytes} allowed",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it ({e})"))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

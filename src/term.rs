//! The one printer of the process: log records, the live progress line and
//! the tables all go through here, so a warning never tears the progress
//! line (it is cleared, the record printed, the line drawn again) and a
//! closed or full stdout or stderr is an error to report, never a panic.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use parking_lot::Mutex;

/// The progress line currently drawn on a terminal's stderr, if any.
static SHOWN: Mutex<Option<String>> = Mutex::new(None);

/// Whether stderr is a terminal (the progress line is redrawn in place).
pub fn stderr_is_tty() -> bool {
    static TTY: OnceLock<bool> = OnceLock::new();
    *TTY.get_or_init(|| std::io::stderr().is_terminal())
}

/// Columns of the terminal on stderr, when it is one.
fn width() -> Option<usize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize struct; fd 2 may be anything, and
    // the call fails harmlessly when it is not a terminal.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

fn write_stderr(bytes: &[u8]) {
    // Nowhere left to report a failing stderr: the write is dropped.
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes).and_then(|_| err.flush());
}

/// `text` cut to fit a line of the terminal.
fn fit(text: &str) -> &str {
    let Some(w) = width() else { return text };
    match text.char_indices().nth(w.saturating_sub(1)) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Print one whole line on stderr (a log record or a message).
pub fn line(text: &str) {
    let shown = SHOWN.lock();
    write_stderr(compose(shown.as_deref().map(fit), text).as_bytes());
}

/// The bytes that print line `text` while progress line `shown` (if any)
/// is on the terminal: the progress line cleared, the text, the progress
/// line drawn again below it.
fn compose(shown: Option<&str>, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    if shown.is_some() {
        out.push_str("\r\x1b[2K");
    }
    out.push_str(text);
    out.push('\n');
    out.push_str(shown.unwrap_or(""));
    out
}

/// Show the live progress line: redrawn in place on a terminal, else one
/// `progress ...` line each time.
pub fn progress(text: &str) {
    let mut shown = SHOWN.lock();
    if stderr_is_tty() {
        write_stderr(format!("\r\x1b[2K{}", fit(text)).as_bytes());
        *shown = Some(text.to_string());
    } else {
        write_stderr(format!("progress {text}\n").as_bytes());
    }
}

/// End the progress line (a newline after it on a terminal).
pub fn end_progress() {
    if SHOWN.lock().take().is_some() {
        write_stderr(b"\n");
    }
}

/// Write `text` to stdout and flush; the error when stdout is closed or full.
pub fn stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_never_tears_the_progress_line() {
        assert_eq!(compose(None, "[warn     ] x"), "[warn     ] x\n");
        assert_eq!(
            compose(Some("12/60s completed=3"), "[warn     ] x"),
            "\r\x1b[2K[warn     ] x\n12/60s completed=3"
        );
    }
}

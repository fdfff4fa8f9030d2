//! The bounds of every duration, rate, count and length trie accepts, in one
//! place (README, "Limits", lists them). Values beyond them are refused with
//! an error naming the flag or file:line (exit 2) instead of overflowing a
//! clock or an allocation mid-run. Also the process's open-file limit,
//! raised at start to what the run needs.

use std::time::Duration;

/// Longest duration anywhere (`--duration`, `--timeout`, `--connect-timeout`,
/// `--progress-interval`, a workload's `tool_call_latency`, the sim's
/// `--fault-stall-secs`): 1,000,000 s, about 11.6 days.
pub const MAX_SECONDS: f64 = 1_000_000.0;

/// Shortest `--progress-interval`: faster would flood stderr.
pub const MIN_PROGRESS_INTERVAL_S: f64 = 0.1;

/// Most slots (`--concurrency`) or traces in flight (`--max-inflight`).
pub const MAX_SLOTS: usize = 65_536;

/// Most retries per request.
pub const MAX_RETRIES: u32 = 100;

/// Slowest and fastest open-loop arrival rate, traces/s.
pub const ARRIVAL_RATE: (f64, f64) = (1e-6, 1e6);

/// Most tokens in one trace's context (its prompt, every answer and tool
/// output, and the final answer): 2,097,152.
pub const MAX_CONTEXT_TOKENS: u64 = 1 << 21;

/// Most tool-use turns in one trace.
pub const MAX_TURNS: usize = 100_000;

/// Default, smallest and largest cap on one SSE line (and on a non-streamed
/// body): 16 MiB, 1 KiB, 1 GiB.
pub const MAX_LINE_BYTES: (usize, usize, usize) = (16 << 20, 1 << 10, 1 << 30);

/// Bytes of reply text one completion token may take at most, times the
/// tokenizer's longest token (a token of partial UTF-8 can come back as
/// several replacement characters).
pub const TEXT_BYTES_PER_TOKEN_BYTE: usize = 4;

/// A duration of `secs` seconds, clamped to `0..=MAX_SECONDS` (NaN is 0):
/// for durations trie computes, so a conversion never panics.
pub fn seconds(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs.min(MAX_SECONDS))
    }
}

/// Open files a run of `slots` slots needs: one connection per slot, three
/// descriptors per connection of an in-process sim, and room for files,
/// the resolver and stdio.
pub fn files_needed(slots: usize, in_process_sim: bool) -> u64 {
    let per_slot = if in_process_sim { 4 } else { 1 };
    64 + (slots as u64) * per_slot
}

/// Raise the soft open-file limit to the hard limit when it is below
/// `needed`; an error (with the fix) when even the hard limit is below.
/// `what` names the cause (`--concurrency 1000`).
pub fn ensure_open_files(needed: u64, what: &str) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // cannot tell: let the run find out
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        return Err(format!(
            "{what} needs about {needed} open files, but this process may open at most {} (ulimit -Hn); lower it or raise the limit",
            lim.rlim_max
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "{what} needs about {needed} open files, but the limit is {} and could not be raised ({}); run `ulimit -n {needed}` first",
            lim.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    log::debug!(
        "raised the open-file limit from {} to {}",
        lim.rlim_cur,
        lim.rlim_max
    );
    Ok(())
}

/// Tune glibc's allocator for one thread per slot: at most two arenas (the
/// default, eight per core, spreads memory freed by hundreds of threads
/// over heaps none of them reuses), and a fixed mmap threshold of 128 KiB
/// (glibc raises it after each large free, after which request bodies and
/// prompts of every size are carved from, and fragment, those heaps). Every
/// large buffer then goes back to the system when freed (README,
/// Performance, has the soak's figures). No effect outside glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_durations_never_overflow() {
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(-3.0), Duration::ZERO);
        assert_eq!(seconds(1e300), Duration::from_secs_f64(MAX_SECONDS));
        assert_eq!(seconds(f64::INFINITY), Duration::from_secs_f64(MAX_SECONDS));
        assert_eq!(seconds(0.25), Duration::from_millis(250));
    }
}

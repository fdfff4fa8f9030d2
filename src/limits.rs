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

/// Most tokens of a shared prefix (`--shared-prefix`).
pub const MAX_PREFIX_TOKENS: u64 = 1 << 20;

/// Most distinct shared prefixes (`--prefix-groups`).
pub const MAX_PREFIX_GROUPS: u64 = 100_000;

/// Largest Zipf exponent of `--prefix-zipf`.
pub const MAX_ZIPF: f64 = 10.0;

/// Most inputs in one embeddings request (`--embed-batch`).
pub const MAX_EMBED_BATCH: u64 = 4096;

/// Most tool-use turns in one trace.
pub const MAX_TURNS: usize = 100_000;

/// Default, smallest and largest cap on one SSE line (and on a non-streamed
/// body): 16 MiB, 1 KiB, 1 GiB.
pub const MAX_LINE_BYTES: (usize, usize, usize) = (16 << 20, 1 << 10, 1 << 30);

/// Largest workload file, and largest download from a hub: 1 GiB.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// Most GPUs (`--num-gpus`).
pub const MAX_GPUS: u64 = 1_000_000;

/// Most trials per load point.
pub const MAX_TRIALS: u32 = 1000;

/// Most load points in one sweep.
pub const MAX_POINTS: usize = 1000;

/// Most points one capacity search probes (each with its trials).
pub const MAX_PROBES: usize = 64;

/// Most BOS tokens the sim counts (`trie sim --bos`).
pub const MAX_SIM_BOS: u64 = 16;

/// Largest sim block size, running sequences and tokens per chunk (`trie
/// sim --block-size`, `--max-running`, `--tokens-per-chunk`).
pub const MAX_SIM_COUNT: u64 = 1 << 20;

/// Largest sim KV capacity, tokens (`trie sim --kv-tokens`).
pub const MAX_SIM_KV_TOKENS: u64 = 1 << 40;

/// Latest sim `--eos-after`, tokens.
pub const MAX_SIM_EOS_AFTER: u64 = 1 << 32;

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

/// Raise the soft open-file limit towards `needed` (as far as the hard
/// limit allows); an error (with the fix) when it stays below. `what` names
/// the cause (`--concurrency 1000`).
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
    let raised = libc::rlimit {
        rlim_cur: needed.min(lim.rlim_max),
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
        raised.rlim_cur
    );
    if lim.rlim_max < needed {
        return Err(format!(
            "{what} needs about {needed} open files, but this process may open at most {} (ulimit -Hn); lower it or raise the limit",
            lim.rlim_max
        ));
    }
    Ok(())
}

/// glibc tunable trie runs with: no per-thread cache of freed blocks.
const TCACHE_OFF: &str = "glibc.malloc.tcache_count=0";

/// Set (to the user's own `GLIBC_TUNABLES`, after a `+`, or to `-` when
/// there was none) in the environment of trie's second start.
const USER_TUNABLES: &str = "TRIE_USER_GLIBC_TUNABLES";

/// Tune glibc's allocator for one thread per slot; for the binary's `main`
/// (it may start trie again). No effect outside glibc.
///
/// # Safety
///
/// No other thread may run yet: it changes the process's environment.
///
/// - No per-thread cache of freed blocks (tcache). glibc keeps up to seven
///   freed blocks of each of 64 sizes per thread; hundreds of slot threads
///   fill theirs slowly, and a 256-slot soak grew by 1.5 MB a minute for
///   half an hour. The cache is set only by `GLIBC_TUNABLES` at process
///   start, so trie starts itself again (same pid, arguments and streams)
///   with it added; the user's own value is put back for child processes,
///   and a user's own `tcache_count` is respected.
/// - At most two arenas (the default, eight per core, spreads memory freed
///   by hundreds of threads over heaps none of them reuses), and a fixed
///   mmap threshold of 128 KiB (glibc raises it after each large free, after
///   which request bodies of every size are carved from, and fragment, the
///   heaps): every large buffer goes back to the system when freed.
///
/// README (Performance, soak) has the figures.
pub unsafe fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        match std::env::var_os(USER_TUNABLES) {
            Some(user) => {
                // The second start: the environment back as the user had it.
                let user = user.to_string_lossy().into_owned();
                // SAFETY: no other thread runs yet (see the contract above).
                unsafe {
                    match user.strip_prefix('+') {
                        Some(v) => std::env::set_var("GLIBC_TUNABLES", v),
                        None => std::env::remove_var("GLIBC_TUNABLES"),
                    }
                    std::env::remove_var(USER_TUNABLES);
                }
            }
            None => {
                // A value that is not UTF-8 is the user's own business: left
                // alone (treated as the user's own setting): no restart.
                let raw = std::env::var_os("GLIBC_TUNABLES");
                let user = raw.as_ref().and_then(|v| v.to_str()).map(str::to_string);
                let own =
                    raw.is_some() && user.as_deref().is_none_or(|u| u.contains("tcache_count"));
                if let (false, Ok(exe)) = (own, std::env::current_exe()) {
                    let (tunables, saved) = match &user {
                        Some(u) => (format!("{u}:{TCACHE_OFF}"), format!("+{u}")),
                        None => (TCACHE_OFF.to_string(), "-".to_string()),
                    };
                    let mut args = std::env::args_os();
                    let mut again = std::process::Command::new(exe);
                    if let Some(arg0) = args.next() {
                        again.arg0(arg0);
                    }
                    // Returns only when the exec failed: run untuned then.
                    let _ = again
                        .args(args)
                        .env("GLIBC_TUNABLES", tunables)
                        .env(USER_TUNABLES, saved)
                        .exec();
                }
            }
        }
        // SAFETY: mallopt only sets allocator parameters.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        }
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

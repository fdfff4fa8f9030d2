//! Timing accuracy: trie's request path (the client every slot uses) against
//! `trie sim` with a fixed emission schedule: prefill at 20,000 tok/s of a
//! 200-token prompt (TTFT 10 ms), then one token every 10 ms (100 tok/s),
//! one token per chunk. Reports the error of measured TTFT and inter-chunk
//! intervals versus that schedule (p50 / p99 of the absolute error, and the
//! signed median), at concurrency 1 and 256. Each point runs twice: through
//! trie's client, and through a bare reader (plain TcpStream, a timestamp
//! per line, nothing else) that sees the same sim; the difference is what
//! trie's request path adds. Threads start staggered over the first second
//! so that requests are not all in phase.
//!
//! cargo bench --bench timing [-- SECONDS]
//!
//! Target: p99 error < 1 ms at concurrency 256.

#[path = "support/mod.rs"]
mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{SimChild, machine, pct};
use trie::exec::slot::Body;
use trie::net::client::{Expect, Http};
use trie::stop::Stop;
use trie::text::prompt::{Synth, segment_key};
use trie::text::tokenizer::Tokenizer;

const PROMPT: usize = 199; // + BOS = 200 tokens
const PREFILL_TPS: f64 = 20_000.0;
const DECODE_TPS: f64 = 20.0;
const MAX_TOKENS: u32 = 20;

fn main() {
    let secs = support::seconds_arg(8.0);
    let tok = Tokenizer::from_file(std::path::Path::new("data/tokenizer.json")).unwrap();
    let synth = Synth::new(&tok).unwrap();
    let sim = SimChild::start(&[
        "--prefill-tps",
        &PREFILL_TPS.to_string(),
        "--decode-tps",
        &DECODE_TPS.to_string(),
        "--max-running",
        "4096",
    ]);
    let want_ttft_ms = 1000.0 * (PROMPT + 1) as f64 / PREFILL_TPS;
    let want_itl_ms = 1000.0 / DECODE_TPS;
    println!("machine: {}", machine());
    println!(
        "schedule: TTFT {want_ttft_ms} ms, then a chunk every {want_itl_ms} ms; {secs} s per point"
    );
    println!(
        "{:>6} {:>6} {:>8} {:>9} {:>14} {:>14} {:>16} {:>9} {:>14} {:>14} {:>16}",
        "conc",
        "reader",
        "requests",
        "TTFT n",
        "TTFT |err| p50",
        "TTFT |err| p99",
        "TTFT err median",
        "ITL n",
        "ITL |err| p50",
        "ITL |err| p99",
        "ITL err median"
    );
    let addr = support::host_port(&sim.url);
    for (conc, bare) in [(1usize, false), (1, true), (256, false), (256, true)] {
        let http = Http::new(
            &sim.url,
            None,
            true,
            Duration::from_secs(60),
            Duration::from_secs(10),
            1 << 24,
        );
        let stop = Stop::new();
        let ttft_err = Mutex::new(Vec::new());
        let itl_err = Mutex::new(Vec::new());
        let requests = std::sync::atomic::AtomicU64::new(0);
        let begin = Instant::now();
        let end = begin + Duration::from_secs_f64(secs);
        std::thread::scope(|s| {
            for t in 0..conc {
                let (http, stop, synth, ttft_err, itl_err, requests, addr) =
                    (&http, &stop, &synth, &ttft_err, &itl_err, &requests, &addr);
                s.spawn(move || {
                    // Each thread its own client, as each slot of a run.
                    let client = http.client(stop);
                    std::thread::sleep(Duration::from_secs_f64(t as f64 / conc as f64));
                    let (mut tt, mut it) = (Vec::new(), Vec::new());
                    let mut n = 0u64;
                    while Instant::now() < end {
                        // A fresh prompt each time: nothing cached, full prefill.
                        let mut body = Body::new("\"trie-sim\"", true);
                        let key = segment_key(conc as u64 + 2 * bare as u64, t as u64, n as u32);
                        body.push_synthetic(&synth.text(key, PROMPT));
                        body.finish(MAX_TOKENS);
                        n += 1;
                        let at: Vec<Duration> = if bare {
                            support::raw_stream(addr, body.bytes())
                        } else {
                            let mut sent = Instant::now();
                            let reply = client
                                .complete(
                                    body.bytes(),
                                    "bench",
                                    Expect::new(MAX_TOKENS as u64, 64),
                                    &mut sent,
                                )
                                .expect("request");
                            reply.chunks.iter().map(|c| c.at).collect()
                        };
                        requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                        tt.push(ms(at[0]) - want_ttft_ms);
                        for w in at.windows(2) {
                            it.push(ms(w[1] - w[0]) - want_itl_ms);
                        }
                    }
                    ttft_err.lock().unwrap().extend(tt);
                    itl_err.lock().unwrap().extend(it);
                });
            }
        });
        let stats = |v: Vec<f64>| {
            let mut abs: Vec<f64> = v.iter().map(|x| x.abs()).collect();
            abs.sort_by(f64::total_cmp);
            let mut signed = v;
            signed.sort_by(f64::total_cmp);
            (
                abs.len(),
                pct(&abs, 50.0),
                pct(&abs, 99.0),
                pct(&signed, 50.0),
            )
        };
        let (tn, t50, t99, tmed) = stats(ttft_err.into_inner().unwrap());
        let (inn, i50, i99, imed) = stats(itl_err.into_inner().unwrap());
        println!(
            "{:>6} {:>6} {:>8} {tn:>9} {:>11.3} ms {:>11.3} ms {:>+13.3} ms {inn:>9} {:>11.3} ms {:>11.3} ms {:>+13.3} ms",
            conc,
            if bare { "bare" } else { "trie" },
            requests.into_inner(),
            t50,
            t99,
            tmed,
            i50,
            i99,
            imed
        );
    }
}

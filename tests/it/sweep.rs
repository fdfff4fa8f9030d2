//! Sweeps, trials, SLOs and the capacity search against in-process sims.

use std::collections::HashSet;
use std::time::Duration;

use trie::config::{Config, Search};
use trie::exec::run::Hooks;
use trie::sim::SimConfig;

use crate::util::{fast, fast_sim, row, temp_file, trie_run};

fn small_workload() -> std::path::PathBuf {
    let rows = [
        row(40, &[8], &[16], 0.0, 8),
        row(60, &[6, 6], &[12, 12], 0.0, 6),
    ];
    temp_file("w.jsonl", &rows.join("\n"))
}

#[test]
fn a_sweep_of_three_points_by_two_trials_writes_one_document_a_csv_and_plots() {
    let (sim, rx) = fast_sim(fast());
    let out = temp_file("x", "").with_file_name("sweep.json");
    let csv = out.with_file_name("sweep.csv");
    let events = out.with_file_name("events.jsonl");
    let plots = out.with_file_name("plots");
    let cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrencies(&[1, 2, 3])
        .trials(2)
        .num_gpus(2)
        .duration(Duration::from_millis(700))
        .slo("latency_s:p90<=5,req.ttft_s:p99<=2,output_tokens_per_trace:min>=1")
        .unwrap()
        .output(&out)
        .csv(&csv)
        .events(&events)
        .plot(&plots);
    assert!(cfg.is_sweep());
    let done = trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    assert!(done.file_errors.is_empty(), "{:?}", done.file_errors);
    let doc = &done.doc;
    assert_eq!(doc.runs.len(), 6);
    assert_eq!(doc.points.len(), 3);
    let pairs: Vec<(usize, u32, Option<usize>)> = doc
        .runs
        .iter()
        .map(|r| (r.point, r.trial, r.load.concurrency))
        .collect();
    assert_eq!(
        pairs,
        [
            (0, 0, Some(1)),
            (0, 1, Some(1)),
            (1, 0, Some(2)),
            (1, 1, Some(2)),
            (2, 0, Some(3)),
            (2, 1, Some(3))
        ]
    );
    for r in &doc.runs {
        assert!(r.results.summary.completed_requests > 0, "{}", r.point);
        assert_eq!(r.results.config.concurrency, r.load.concurrency);
        assert!(r.slo.as_ref().unwrap().pass, "{:?}", r.slo);
    }
    for p in &doc.points {
        assert_eq!(p.trials, 2);
        assert_eq!(p.pass, Some(true), "{p:?}");
        let tput = p.figures["trace_per_s"].unwrap();
        assert!(tput.half_width.is_some() && tput.n == 2);
        assert!(p.goodput_trace_per_s.unwrap().mean > 0.0);
    }

    // One document holding the six runs, read back to the same points.
    let back = match trie::output::document::Document::read(&out).unwrap() {
        trie::output::document::Document::Sweep(d) => d,
        trie::output::document::Document::Run(_) => panic!("a sweep reads back as a sweep"),
    };
    assert_eq!(back.runs.len(), 6);
    assert!(back.points == doc.points, "figures again from the records");
    let report = trie::output::document::report_file(&out).unwrap();
    assert!(
        report.contains("Sweep of 3 points x 2 trials (6 runs)"),
        "{report}"
    );
    assert!(
        report.contains("concurrency 3") && report.contains("±"),
        "{report}"
    );

    // A CSV of one row per point x trial.
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[0].starts_with("point,trial,concurrency,arrival_rate,completed_requests"));
    assert!(lines[6].starts_with("2,1,3,,"));
    assert!(lines[1..].iter().all(|l| l.contains(",true,")), "{text}");

    // The event log tags each line with its point and trial.
    let ev: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tags: HashSet<(u64, u64)> = ev
        .iter()
        .map(|e| (e["point"].as_u64().unwrap(), e["trial"].as_u64().unwrap()))
        .collect();
    assert_eq!(tags.len(), 6);

    // The plots.
    for name in ["throughput", "ttft", "ttfat", "latency", "pareto", "curves"] {
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{name}"
        );
    }
    let html = std::fs::read_to_string(plots.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 6);
    assert!(
        !html.contains("http://") || !html.contains("src=\"http"),
        "nothing fetched"
    );
    assert!(html.contains("SLO p90≤5"), "SLO lines drawn");

    // No run sent a prompt another run had sent: every started trace's
    // prompts have their own prefix, and no first request hit the cache.
    let recorded: Vec<_> = rx.try_iter().collect();
    let prefixes: HashSet<String> = recorded
        .iter()
        .filter_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let p = v["prompt"].as_str()?;
            (p.len() >= 120).then(|| p[..120].to_string())
        })
        .collect();
    let started: u64 = doc
        .runs
        .iter()
        .map(|r| r.results.summary.started_traces)
        .sum();
    // A trace started at the deadline may be cut off before its first
    // request reaches the server: those send no prefix at all. A repeated
    // prompt would make the count fall far below (396 of 1612 before the
    // fix).
    let cut_off: u64 = doc
        .runs
        .iter()
        .map(|r| r.results.summary.cancelled_traces)
        .sum();
    let n = prefixes.len() as u64;
    assert!(
        n <= started && n + cut_off >= started,
        "one prompt prefix per trace of the sweep: {n} prefixes, {started} started, {cut_off} cut off"
    );
    for r in &doc.runs[1..] {
        let first_turns = r
            .results
            .records
            .as_ref()
            .unwrap()
            .requests
            .iter()
            .filter(|q| q.turn == 0);
        for q in first_turns {
            assert_eq!(
                q.usage.unwrap().cached_tokens,
                Some(0),
                "run {} {}: {q:?}",
                r.point,
                r.trial
            );
        }
    }
}

#[test]
fn the_capacity_search_finds_the_simulated_boundary() {
    // Past the knee of 4 every sequence decodes at 2000 x 4 / running
    // tok/s: with every slot decoding, concurrency C gives 8000 / C tok/s
    // each. The SLO decode_tps:mean >= 8000 / 8.5 passes C <= 8 and fails
    // C >= 9 (941 tok/s against 1000 at 8 and 889 at 9).
    let (sim, _rx) = fast_sim(SimConfig {
        prefill_tps: 0.0,
        decode_tps: 2000.0,
        batch_knee: Some(4),
        tokens_per_chunk: 4,
        ..SimConfig::default()
    });
    let wl = temp_file("one.jsonl", &row(16, &[], &[], 0.0, 200));
    let mut cfg = Config::new(wl.to_str().unwrap(), &sim.url())
        .unwrap()
        .duration(Duration::from_millis(1500))
        .num_gpus(2)
        .slo(&format!("decode_tps:mean>={}", 8000.0 / 8.5))
        .unwrap();
    cfg.sweep.search = Some(Search {
        max_concurrency: 64,
        ..Search::default()
    });
    let done = trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    let cap = done.doc.capacity.clone().unwrap();
    let probes: Vec<(f64, bool)> = cap
        .probes
        .iter()
        .map(|p| (p.load.value(), p.pass))
        .collect();
    assert!(cap.complete, "{probes:?}");
    assert!(probes.len() <= 12, "{probes:?}");
    let c = cap.capacity.unwrap();
    assert!((7.0..=9.0).contains(&c), "capacity {c}: {probes:?}");
    assert_eq!(cap.capacity_per_gpu, Some(c / 2.0));
    assert_eq!(cap.lowest_failing, Some(c + 1.0), "{probes:?}");
    let tables = trie::output::sweep::tables(&done.doc);
    assert!(
        tables.contains(&format!(
            "Capacity: {c} agents in flight = {:.2} per GPU",
            c / 2.0
        )),
        "{tables}"
    );
}

/// A browser, when one is installed (`TRIE_REQUIRE_CHROMIUM=1`: it must be).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("TRIE_REQUIRE_CHROMIUM").is_none(),
            "TRIE_REQUIRE_CHROMIUM is set but no chromium runs"
        );
        eprintln!("no chromium: the screenshot test is skipped");
    }
    found
}

#[test]
fn the_html_report_renders_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let (sim, _rx) = fast_sim(fast());
    let plots = temp_file("x", "").with_file_name("shot");
    let cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrencies(&[1, 2])
        .duration(Duration::from_millis(500))
        .slo("latency_s:p90<=5")
        .unwrap()
        .plot(&plots);
    trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    let html = plots.join("report.html");
    let png = plots.join("shot.png");
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--window-size=1400,1800",
        ])
        .arg(format!(
            "--user-data-dir={}",
            plots.join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // The PNG's size: 1400 x 1800 as asked.
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1400, 1800));
    // Charts and tables compress worse than a blank page (a blank
    // 1400x1800 white PNG is a few kB).
    assert!(bytes.len() > 40_000, "{} bytes: blank page?", bytes.len());
}

#[test]
fn warmups_are_discarded_and_the_cache_is_reset_before_each_run() {
    let (sim, rx) = fast_sim(fast());
    let events = temp_file("x", "").with_file_name("ev.jsonl");
    let mut cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrencies(&[1, 2])
        .duration(Duration::from_millis(400))
        .events(&events);
    cfg.sweep.warmup = Some(Duration::from_millis(300));
    cfg.sweep.cooldown = Some(Duration::from_millis(50));
    cfg.sweep.reset_cache = true;
    let done = trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    for r in &done.doc.runs {
        assert_eq!(
            r.cache_reset.as_deref(),
            Some("POST /reset_prefix_cache (vLLM)")
        );
        assert_eq!(r.cache_reset_error, None);
    }
    // The warm-ups' requests reached the server but none is in the log or
    // the runs' counts.
    let logged = std::fs::read_to_string(&events).unwrap().lines().count() as u64;
    let counted: u64 = done
        .doc
        .runs
        .iter()
        .map(|r| r.results.summary.http_requests + r.results.summary.cancelled_requests)
        .sum();
    let sent = rx.try_iter().count() as u64;
    assert!(logged <= counted + 2, "{logged} logged, {counted} counted");
    assert!(
        sent > counted + 4,
        "warm-ups sent requests too: {sent} vs {counted}"
    );
    assert_eq!(done.doc.plan.warmup_s, Some(0.3));
}

#[test]
fn a_reset_names_every_way_that_failed_and_the_sim_resets() {
    let (sim, _rx) = fast_sim(fast());
    // The sim answers 404 for SGLang's and llama.cpp's endpoints; only
    // vLLM's works. Point a sweep at a path prefix the sim does not serve.
    let mut cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrencies(&[1, 2])
        .duration(Duration::from_millis(300));
    cfg.sweep.reset_cache = true;
    let client = trie::net::client::Http::new(
        &format!("{}/nowhere/v1", sim.url().trim_end_matches("/v1")),
        None,
        true,
        Duration::from_secs(5),
        Duration::from_secs(5),
        1 << 20,
    )
    .preflight_client(&trie::stop::Stop::new());
    let e = trie::exec::preflight::reset_cache(
        &client,
        &format!("{}/nowhere/v1", sim.url().trim_end_matches("/v1")),
    )
    .unwrap_err();
    assert!(e.contains("POST /reset_prefix_cache: 404"), "{e}");
    assert!(
        e.contains("POST /flush_cache: 404") && e.contains("GET /slots: 404"),
        "{e}"
    );
    let done = trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    assert!(done.doc.runs.iter().all(|r| r.cache_reset.is_some()));
}

#[test]
fn slos_warmups_and_resets_make_one_point_a_sweep_and_a_plain_run_stays_a_run() {
    let parse = |extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> =
            ["--workload", "data/qa.jsonl", "--endpoint", "sim"]
                .iter()
                .map(Into::into)
                .collect();
        args.extend(extra.iter().map(Into::into));
        match trie::cli::parse(args).unwrap().0 {
            trie::cli::Command::Run(c) => c,
            other => panic!("{other:?}"),
        }
    };
    assert!(!parse(&[]).is_sweep());
    assert!(!parse(&["--concurrency", "8"]).is_sweep());
    assert!(!parse(&["concurrency=8"]).is_sweep());
    for extra in [
        &["--slo", "ttfat_s:p90<=8"][..],
        &["--warmup", "5"],
        &["--cooldown", "5"],
        &["--reset-cache"],
        &["--concurrency", "1,2"],
        &["concurrency=1,2"],
        &["--trials", "2"],
    ] {
        assert!(parse(extra).is_sweep(), "{extra:?}");
    }
    // Capacity-only flags need `trie capacity`.
    let e = trie::cli::parse(
        [
            "--workload",
            "data/qa.jsonl",
            "--endpoint",
            "sim",
            "--max-concurrency",
            "8",
        ]
        .iter()
        .map(Into::into)
        .collect(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("--max-concurrency is a flag of trie capacity"),
        "{e}"
    );
}

#[test]
fn an_open_loop_search_records_each_probe_as_open_loop() {
    let (sim, _rx) = fast_sim(fast());
    let mut cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .duration(Duration::from_millis(400))
        .slo("latency_s:p90<=5")
        .unwrap();
    cfg.sweep.search = Some(Search {
        max_arrival_rate: Some(8.0),
        precision_pct: 50.0,
        ..Search::default()
    });
    let done = trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    let cap = done.doc.capacity.unwrap();
    assert_eq!(cap.searched, "arrival_rate");
    assert!(!done.doc.runs.is_empty());
    for r in &done.doc.runs {
        let c = &r.results.config;
        assert_eq!(c.load, "open");
        assert_eq!((c.concurrency, c.arrival_rate), (None, r.load.arrival_rate));
        assert_eq!(c.max_inflight, Some(trie::config::DEFAULT_MAX_INFLIGHT));
        assert_eq!(c.arrival.as_deref(), Some("constant"));
    }
}

#[test]
fn bad_plot_dirs_and_search_starts_are_refused_before_anything_is_sent() {
    let (sim, rx) = fast_sim(fast());
    let wl = small_workload();
    let wl = wl.to_str().unwrap();
    let url = sim.url();
    let (code, _, err) = trie_run(&["--workload", wl, "--endpoint", &url, "--plot", wl, "-q"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--plot") && err.contains("not a directory"),
        "{err}"
    );
    let (code, _, err) = trie_run(&[
        "capacity",
        "--workload",
        wl,
        "--endpoint",
        &url,
        "--slo",
        "latency_s:p90<=5",
        "--concurrency",
        "3",
        "--max-concurrency",
        "2",
        "-q",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--concurrency 3 (where the search starts) is above --max-concurrency 2"),
        "{err}"
    );
    // The charts would overwrite the results document.
    let dir = temp_file("x", "").with_file_name("charts");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.html");
    let (code, _, err) = trie_run(&[
        "--workload",
        wl,
        "--endpoint",
        &url,
        "--plot",
        dir.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("would overwrite --output"), "{err}");
    // A capacity search's start must fit its loop.
    for (args, says) in [
        (&["--arrival-rate", "2"][..], "needs --max-arrival-rate"),
        (
            &["--concurrency", "4", "--max-arrival-rate", "8"][..],
            "pass one of them",
        ),
    ] {
        let mut a = vec![
            "capacity",
            "--workload",
            wl,
            "--endpoint",
            &url,
            "--slo",
            "latency_s:p90<=5",
            "-q",
        ];
        a.extend_from_slice(args);
        let (code, _, err) = trie_run(&a);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(rx.try_iter().count(), 0, "nothing was sent");
}

#[test]
fn sweep_documents_that_cannot_be_true_are_refused() {
    let (sim, _rx) = fast_sim(fast());
    let out = temp_file("x", "").with_file_name("doc.json");
    let cfg = Config::new(small_workload().to_str().unwrap(), &sim.url())
        .unwrap()
        .concurrencies(&[1, 2])
        .duration(Duration::from_millis(300))
        .output(&out);
    trie::exec::drive::run(&cfg, &Hooks::default()).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let check = |edit: &dyn Fn(&mut serde_json::Value), says: &str| {
        let mut d = doc.clone();
        edit(&mut d);
        let p = out.with_file_name("edited.json");
        std::fs::write(&p, d.to_string()).unwrap();
        let e = trie::output::document::report_file(&p)
            .and_then(|_| trie::output::document::compare_files(&[p.clone(), p.clone()]))
            .unwrap_err();
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert_eq!(e.exit_code(), 2);
    };
    check(
        &|d| d["plan"]["confidence"] = 5.0.into(),
        "plan.confidence 5 is not between 0 and 1",
    );
    check(
        &|d| d["runs"][1]["point"] = 999.into(),
        "a run of point 999 but the plan has 2 loads",
    );
    check(
        &|d| {
            d["runs"] = serde_json::json!([]);
            d["points"] = serde_json::json!([]);
        },
        "a sweep without a finished run",
    );
    // The unedited document reads.
    assert!(
        trie::output::document::report_file(&out)
            .unwrap()
            .contains("Sweep of 2 points")
    );
}

//! Running a sweep or a capacity search: prepare once, then for each point
//! and trial an optional warm-up, an optional cache reset, the measured run,
//! an optional cool-down; the results document and its files are written
//! again after every run, so an interrupted sweep keeps every finished run.

use std::time::SystemTime;

use crate::config::{Config, LoadModel};
use crate::error::Result;
use crate::exec::run::{Hooks, Prepared, RunId, execute, prepare};
use crate::exec::search::Bisection;
use crate::output::results::{SCHEMA_VERSION, host_name, rfc3339};
use crate::output::sweep::{Capacity, Load, PASS_RULE, Plan, Probe, SweepResults, SweepRun};
use crate::record::slo;

/// A finished (or interrupted) sweep and the files it could not write.
pub struct Outcome {
    /// The document.
    pub doc: SweepResults,
    /// Result files that could not be written.
    pub file_errors: Vec<String>,
}

/// Run the sweep or capacity search `cfg` describes.
pub fn run(cfg: &Config, hooks: &Hooks) -> Result<Outcome> {
    let mut prepared = prepare(cfg, &hooks.interrupt)?;
    let started = SystemTime::now();
    let sw = &cfg.sweep;
    let points = cfg.points();
    let mut doc = SweepResults {
        schema_version: SCHEMA_VERSION,
        kind: if sw.search.is_some() {
            "capacity"
        } else {
            "sweep"
        }
        .to_string(),
        trie_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: rfc3339(started),
        host: host_name(),
        config: prepared.run_config().clone(),
        plan: Plan {
            loads: if sw.search.is_some() {
                Vec::new()
            } else {
                points.iter().map(Load::of).collect()
            },
            trials: sw.trials,
            warmup_s: sw.warmup.map(|d| d.as_secs_f64()),
            cooldown_s: sw.cooldown.map(|d| d.as_secs_f64()),
            reset_cache: sw.reset_cache,
            confidence: sw.confidence,
            slo: sw.slo.iter().map(|s| s.text.clone()).collect(),
        },
        points: Vec::new(),
        capacity: None,
        interrupted: false,
        error: None,
        runs: Vec::new(),
    };
    let mut file_errors = Vec::new();
    // One client for every cache reset of the sweep.
    let reset_client = sw
        .reset_cache
        .then(|| prepared.http().preflight_client(&hooks.interrupt));
    let mut sweep = Sweeper {
        cfg,
        hooks,
        prepared: &mut prepared,
        reset_client,
        started: std::time::Instant::now(),
        runs_done: 0,
    };
    // An error of trie's own (a thread that cannot start) ends the sweep
    // after its files are written.
    let mut failed = None;
    match sw.search {
        None => {
            'points: for (i, load) in points.iter().enumerate() {
                for trial in 0..sw.trials {
                    let label = format!(
                        "point {}/{} ({}) trial {}/{}{} · ",
                        i + 1,
                        points.len(),
                        Load::of(load).label(),
                        trial + 1,
                        sw.trials,
                        sweep.time_left(points.len() * sw.trials as usize),
                    );
                    match sweep.one(&mut doc, i, trial, *load, label, &mut file_errors) {
                        Ok(true) => {}
                        Ok(false) => break 'points,
                        Err(e) => {
                            failed = Some(e);
                            break 'points;
                        }
                    }
                }
            }
        }
        Some(search) => {
            let (whole, start, max) = match (search.max_arrival_rate, cfg.load) {
                (Some(max), LoadModel::Open { rate, .. }) => (false, rate, max),
                (Some(max), LoadModel::Closed { .. }) => (false, 1.0f64.min(max), max),
                (None, LoadModel::Closed { concurrency }) => {
                    (true, concurrency as f64, search.max_concurrency as f64)
                }
                (None, LoadModel::Open { .. }) => (true, 1.0, search.max_concurrency as f64),
            };
            let precision = if whole || search.precision_pct > 0.0 {
                search.precision_pct
            } else {
                5.0
            };
            // Below the start: concurrency down to 1, rates down to a
            // sixteenth of where they started.
            let min = if whole { 1.0 } else { start / 16.0 };
            let mut b = Bisection::new(whole, start, min, max, precision);
            let mut probes = Vec::new();
            let mut complete = true;
            while let Some(x) = b.next() {
                if probes.len() >= crate::limits::MAX_PROBES {
                    complete = false;
                    break;
                }
                let load = match (whole, cfg.load) {
                    (true, _) => LoadModel::Closed {
                        concurrency: x as usize,
                    },
                    (
                        false,
                        LoadModel::Open {
                            arrival,
                            max_inflight,
                            ..
                        },
                    ) => LoadModel::Open {
                        rate: x,
                        arrival,
                        max_inflight,
                    },
                    (false, LoadModel::Closed { .. }) => LoadModel::Open {
                        rate: x,
                        arrival: crate::config::Arrival::Constant,
                        max_inflight: crate::config::DEFAULT_MAX_INFLIGHT,
                    },
                };
                let point = probes.len();
                doc.plan.loads.push(Load::of(&load));
                let mut finished = true;
                for trial in 0..sw.trials {
                    let label = format!(
                        "probe {} ({}) trial {}/{} · ",
                        point + 1,
                        Load::of(&load).label(),
                        trial + 1,
                        sw.trials
                    );
                    match sweep.one(&mut doc, point, trial, load, label, &mut file_errors) {
                        Ok(true) => {}
                        Ok(false) => {
                            finished = false;
                            break;
                        }
                        Err(e) => {
                            failed = Some(e);
                            finished = false;
                            break;
                        }
                    }
                }
                if !finished {
                    complete = false;
                    break;
                }
                let pass = doc
                    .points
                    .iter()
                    .find(|p| p.point == point)
                    .and_then(|p| p.pass)
                    .unwrap_or(false);
                log::info!(
                    "capacity probe {}: {} {}",
                    point + 1,
                    Load::of(&load).label(),
                    if pass { "passes" } else { "fails" }
                );
                b.record(x, pass);
                probes.push(Probe {
                    load: Load::of(&load),
                    point,
                    pass,
                });
                doc.capacity = Some(capacity(&b, &probes, cfg, false));
                sweep.write(&doc, false, &mut file_errors);
            }
            doc.capacity = Some(capacity(&b, &probes, cfg, complete));
        }
    }
    doc.interrupted = hooks.interrupt.is_set();
    doc.error = failed
        .as_ref()
        .map(|e| crate::redact::one_line(&e.to_string()));
    sweep.write(&doc, true, &mut file_errors);
    drop(sweep);
    prepared.close();
    match failed {
        Some(e) => {
            for f in &file_errors {
                log::error!("{f}");
            }
            Err(e)
        }
        None => Ok(Outcome { doc, file_errors }),
    }
}

fn capacity(b: &Bisection, probes: &[Probe], cfg: &Config, complete: bool) -> Capacity {
    let cap = b.capacity();
    Capacity {
        searched: if b.whole {
            "concurrency"
        } else {
            "arrival_rate"
        }
        .to_string(),
        capacity: cap,
        capacity_per_gpu: cap.zip(cfg.num_gpus).map(|(c, n)| c / n as f64),
        num_gpus: cfg.num_gpus,
        lowest_failing: b.fail,
        at_bound: b.at_bound(),
        complete,
        rule: PASS_RULE.to_string(),
        probes: probes.to_vec(),
    }
}

struct Sweeper<'a> {
    cfg: &'a Config,
    hooks: &'a Hooks,
    prepared: &'a mut Prepared,
    reset_client: Option<crate::net::client::Client>,
    started: std::time::Instant,
    runs_done: usize,
}

impl Sweeper<'_> {
    /// `, ~12m left` for the whole sweep of `total` runs, from the pace so far
    /// (or the plan before the first run ends).
    fn time_left(&self, total: usize) -> String {
        let sw = &self.cfg.sweep;
        let planned =
            self.cfg.duration + sw.warmup.unwrap_or_default() + sw.cooldown.unwrap_or_default();
        let per_run = if self.runs_done > 0 {
            self.started.elapsed() / self.runs_done as u32
        } else {
            planned
        };
        let left = per_run.as_secs_f64() * total.saturating_sub(self.runs_done) as f64;
        format!(", sweep ~{} left", short_duration(left))
    }

    /// One trial of one point; `false` when the sweep was interrupted.
    fn one(
        &mut self,
        doc: &mut SweepResults,
        point: usize,
        trial: u32,
        load: LoadModel,
        label: String,
        file_errors: &mut Vec<String>,
    ) -> Result<bool> {
        let sw = &self.cfg.sweep;
        let stop = &self.hooks.interrupt;
        if stop.is_set() {
            return Ok(false);
        }
        // The pause goes between runs, not after the last one.
        if let Some(c) = sw.cooldown.filter(|_| self.runs_done > 0) {
            // Interruptible: Ctrl+C ends the pause at once.
            let _ = stop.receiver().recv_timeout(c);
            if stop.is_set() {
                return Ok(false);
            }
        }
        let point_cfg = self.cfg.at(load);
        if let Some(w) = sw.warmup {
            let mut warm = point_cfg.clone();
            warm.duration = w;
            let id = RunId {
                point,
                trial,
                warmup: true,
                in_sweep: true,
                label: format!("warm-up of {label}"),
            };
            execute(&warm, self.prepared, self.hooks, &id)?;
            if stop.is_set() {
                return Ok(false);
            }
        }
        let (cache_reset, cache_reset_error) = if let Some(client) = &self.reset_client {
            match crate::exec::preflight::reset_cache(client, self.prepared.endpoint()) {
                Ok(how) => {
                    log::info!("prefix cache reset: {how}");
                    (Some(how), None)
                }
                Err(why) => {
                    log::warn!(
                        "--reset-cache: the engine offers no way that worked ({why}); the run starts with what the cache holds"
                    );
                    (None, Some(why))
                }
            }
        } else {
            (None, None)
        };
        let id = RunId {
            point,
            trial,
            warmup: false,
            in_sweep: true,
            label,
        };
        let results = execute(&point_cfg, self.prepared, self.hooks, &id)?;
        let slo = (!sw.slo.is_empty()).then(|| {
            let records = results.records.as_ref();
            slo::judge(
                &sw.slo,
                &results.summary.traces,
                records.map_or(&[][..], |r| &r.requests[..]),
                results.summary.wall_time_s,
            )
        });
        log::info!(
            "{}",
            crate::output::report::event_line(
                "point complete",
                &point_pairs(point, trial, &load, &results, slo.as_ref())
            )
        );
        doc.runs.push(SweepRun {
            point,
            trial,
            load: Load::of(&load),
            cache_reset,
            cache_reset_error,
            slo,
            results,
        });
        doc.update_points(&sw.slo);
        self.runs_done += 1;
        doc.interrupted = stop.is_set();
        self.write(doc, false, file_errors);
        Ok(!stop.is_set())
    }

    /// Write every file of the sweep so far (special files only when `last`).
    fn write(&mut self, doc: &SweepResults, last: bool, errors: &mut Vec<String>) {
        let written = self.prepared.write(
            &|flag| match flag {
                "--output" => Some(doc.to_json()),
                "--csv" => Some(crate::output::sweep::csv(doc)),
                "--output-metrics" => Some(crate::output::sweep::output_metrics(doc)),
                _ => None,
            },
            last,
        );
        let mut written = written;
        if let Some(dir) = &self.cfg.sweep.plot {
            written.extend(crate::output::plot::write_sweep(dir, doc));
        }
        // Reported once, at the end; a failing write along the way warns.
        if last {
            errors.extend(self.prepared.take_event_log_error());
            errors.extend(written);
        } else {
            for e in written {
                log::warn!("{e}");
            }
        }
    }
}

/// The `point complete` line's pairs.
fn point_pairs(
    point: usize,
    trial: u32,
    load: &LoadModel,
    r: &crate::output::results::Results,
    slo: Option<&slo::SloReport>,
) -> Vec<(String, String)> {
    let l = Load::of(load);
    let mut v = vec![
        ("point".to_string(), point.to_string()),
        ("trial".to_string(), trial.to_string()),
    ];
    if let Some(c) = l.concurrency {
        v.push(("concurrency".into(), c.to_string()));
    }
    if let Some(a) = l.arrival_rate {
        v.push(("arrival_rate".into(), a.to_string()));
    }
    let fig = |name: &str| {
        r.figures
            .get(name)
            .copied()
            .flatten()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "None".into())
    };
    for name in [
        "completed_requests",
        "trace_per_s",
        "steady_state_completion_tok_per_s",
        "ttfat_s_p90",
        "decode_tps_mean",
    ] {
        v.push((name.to_string(), fig(name)));
    }
    if let Some(s) = slo {
        v.push(("slo_pass".into(), s.pass.to_string()));
    }
    v
}

/// `1h05m`, `12m`, `45s`.
pub fn short_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

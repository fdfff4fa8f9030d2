//! One benchmark run, start to summary: everything that can fail on bad input
//! is checked before the clock starts; then a feeder hands trace jobs to slots
//! over a crossbeam channel, the aggregator thread folds their events, and the
//! deadline (or an interrupt) stops the feeder and cancels requests in flight.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};

use crate::aggregator::Aggregator;
use crate::client::{self, Client};
use crate::config::{Arrival, Config, Endpoint, LoadModel};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::preflight;
use crate::prompt::{Rng, Synth, mix};
use crate::report;
use crate::results::{self, EventLog, Results, RunConfig};
use crate::sim::{BUNDLED_TOKENIZER, SIM_MODEL, Sim, SimConfig};
use crate::slot::{Job, SlotContext, run_slot};
use crate::summary::Summary;
use crate::tokenizer::{self, Tokenizer};
use crate::workload::{self, Workload};

/// Ways in from outside the run.
#[derive(Default)]
pub struct Hooks {
    /// A message (or disconnect) here stops the run as the deadline would (Ctrl+C).
    pub interrupt: Option<Receiver<()>>,
    /// Print the live progress line on stderr.
    pub progress: bool,
}

/// Run the benchmark described by `cfg`.
pub fn run(cfg: &Config, hooks: &Hooks) -> Result<Summary> {
    cfg.validate()?;
    let path = workload::resolve(&cfg.workload)?;
    let workload = Arc::new(workload::load(&path)?);

    // Load the tokenizer now when its name is known, so a bad one stops the
    // run before anything is sent.
    let load_tokenizer = |model: &str| -> Result<Tokenizer> {
        match &cfg.tokenizer {
            None if cfg.endpoint == Endpoint::Sim || model == SIM_MODEL => {
                Tokenizer::from_bytes(BUNDLED_TOKENIZER, "bundled data/tokenizer.json")
            }
            spec => Tokenizer::from_file(&tokenizer::resolve(spec.as_deref().unwrap_or(model))?),
        }
    };
    let early_tok = match (&cfg.tokenizer, &cfg.model, &cfg.endpoint) {
        (None, None, Endpoint::Url(_)) => None,
        (_, model, _) => Some(load_tokenizer(model.as_deref().unwrap_or(""))?),
    };

    // Created (truncated) only now that the input is known good, and before
    // anything is sent: a path it cannot create is an input error.
    let event_log = cfg
        .files
        .events
        .as_deref()
        .map(EventLog::create)
        .transpose()?;

    // The endpoint: a URL, or the simulated engine in-process.
    let sim = match cfg.endpoint {
        Endpoint::Sim => {
            let sim_cfg = SimConfig {
                port: 0,
                tokenizer: cfg.tokenizer.clone().map(Into::into),
                ..SimConfig::default()
            };
            Some(Sim::start(sim_cfg)?)
        }
        Endpoint::Url(_) => None,
    };
    let endpoint = match (&cfg.endpoint, &sim) {
        (Endpoint::Url(u), _) => u.clone(),
        (Endpoint::Sim, Some(s)) => s.url(),
        (Endpoint::Sim, None) => unreachable!("sim started above"),
    };
    let agent = client::agent(cfg.max_slots() + 4, cfg.timeout);
    let api_key = cfg.api_key.as_ref().map(|k| k.expose());
    let model = preflight::choose_model(&agent, &endpoint, api_key, cfg.model.as_deref())?;
    let tok = match early_tok {
        Some(t) => t,
        None => load_tokenizer(&model)?,
    };
    let synth = Synth::new(&tok)?;
    let model_json = serde_json::Value::from(model.as_str()).to_string();
    let client = Client::new(agent, &endpoint, api_key, cfg.stream);
    // The tokenizer that counts replies as the server will (see the probe).
    let (tok, added_tokens_as_text) =
        preflight::probe(&client, &synth, tok, cfg.seed, &model_json, cfg.max_retries)?;
    if hooks
        .interrupt
        .as_ref()
        .is_some_and(|i| i.try_recv().is_ok())
    {
        return Err(Error::Interrupted);
    }
    let run_config = RunConfig::new(
        cfg,
        &endpoint,
        &model,
        &workload.path,
        &workload.content_hash,
        &tok,
        added_tokens_as_text,
    );

    let mut summary = Summary {
        model: model.clone(),
        endpoint: endpoint.clone(),
        workload: workload.path.display().to_string(),
        workload_templates: workload.traces.len(),
        duration_s: cfg.duration.as_secs_f64(),
        num_gpus: cfg.num_gpus,
        seed: cfg.seed,
        stream: cfg.stream,
        ..Summary::default()
    };
    match cfg.load {
        LoadModel::Closed { concurrency } => summary.concurrency = Some(concurrency),
        LoadModel::Open { rate, .. } => summary.arrival_rate = Some(rate),
    }
    log::info!(
        "{}",
        report::event_line("starting benchmark", &report::start_pairs(&summary))
    );

    let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
    let started = SystemTime::now();
    let epoch = Instant::now();
    let aggregator = {
        let workload = workload.clone();
        let duration = cfg.duration;
        let progress = hooks.progress;
        let interval = cfg.progress_interval;
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || {
                aggregate(
                    workload, events_rx, event_log, epoch, duration, progress, interval,
                )
            })
            .map_err(|e| Error::run(format!("cannot spawn the aggregator: {e}")))?
    };

    let stop = AtomicBool::new(false);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(0);
    let ctx = SlotContext {
        client: &client,
        workload: &workload,
        synth: &synth,
        tokenizer: &tok,
        model_json,
        seed: cfg.seed,
        max_retries: cfg.max_retries,
        stop: &stop,
        stop_rx: stop_rx.clone(),
        epoch,
        events: events_tx,
        hash_bodies: cfg.files.events.is_some(),
    };
    let (interrupted, stopped_at) = std::thread::scope(|s| {
        let ctx = &ctx;
        match cfg.load {
            LoadModel::Closed { concurrency } => {
                for slot in 0..concurrency {
                    let jobs = jobs_rx.clone();
                    s.spawn(move || run_slot(slot, ctx, &jobs));
                }
                let stop_rx = stop_rx.clone();
                let n = workload.traces.len();
                s.spawn(move || feed_closed(n, jobs_tx, stop_rx));
            }
            LoadModel::Open {
                rate,
                arrival,
                max_inflight,
            } => {
                let stop_rx = stop_rx.clone();
                let n = workload.traces.len();
                let seed = cfg.seed;
                let jobs_rx = jobs_rx.clone();
                s.spawn(move || {
                    let mut workers = 0usize;
                    let mut spawn_worker = || {
                        let jobs = jobs_rx.clone();
                        let slot = workers;
                        workers += 1;
                        s.spawn(move || run_slot(slot, ctx, &jobs));
                        workers < max_inflight
                    };
                    feed_open(
                        n,
                        rate,
                        arrival,
                        seed,
                        epoch,
                        jobs_tx,
                        stop_rx,
                        &ctx.events,
                        &mut spawn_worker,
                    )
                });
            }
        }
        // Wait for the deadline or an interrupt, then stop everything at once.
        let deadline = crossbeam_channel::at(epoch + cfg.duration);
        let never = crossbeam_channel::never();
        let interrupt = hooks.interrupt.as_ref().unwrap_or(&never);
        let interrupted = select! {
            recv(deadline) -> _ => false,
            recv(interrupt) -> _ => true,
        };
        stop.store(true, Ordering::SeqCst);
        drop(stop_tx);
        client.shutdown();
        (interrupted, epoch.elapsed())
    });
    let wall = epoch.elapsed();
    drop(ctx);
    let agg = aggregator
        .join()
        .map_err(|_| Error::run("the aggregator thread panicked"))?;
    if let Some(sim) = sim {
        sim.stop();
    }
    summary.interrupted = interrupted;
    if interrupted {
        log::warn!("benchmark interrupted");
    }
    let summary = agg.finish(summary, wall);
    log::info!(
        "{}",
        report::event_line("benchmark complete", &report::complete_pairs(&summary))
    );
    let results = Results::new(started, run_config, stopped_at.as_secs_f64(), summary);
    let errors = results::write_files(cfg, &results);
    let mut summary = results.summary;
    summary.file_errors = errors;
    Ok(summary)
}

/// Closed loop: hand templates out in order, cycling, whenever a slot is free.
fn feed_closed(n: usize, jobs: Sender<Job>, stop: Receiver<()>) {
    for seq in 0u64.. {
        let job = Job {
            seq,
            template: (seq % n as u64) as usize,
            due: None,
        };
        select! {
            send(jobs, job) -> r => if r.is_err() { return },
            recv(stop) -> _ => return,
        }
    }
}

/// Open loop: start traces on schedule; add a worker when none is free (up to
/// the in-flight limit; `spawn_worker` says whether more may be added).
#[allow(clippy::too_many_arguments)]
fn feed_open(
    n: usize,
    rate: f64,
    arrival: Arrival,
    seed: u64,
    epoch: Instant,
    jobs: Sender<Job>,
    stop: Receiver<()>,
    events: &Sender<Event>,
    spawn_worker: &mut dyn FnMut() -> bool,
) {
    let mut rng = Rng::new(mix(seed ^ 0x0a22_17a1));
    let mut due = epoch;
    let mut can_grow = true;
    for seq in 0u64.. {
        if !matches!(
            stop.recv_deadline(due),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        ) {
            return;
        }
        let job = Job {
            seq,
            template: (seq % n as u64) as usize,
            due: Some(due),
        };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(job)) => {
                if can_grow {
                    can_grow = spawn_worker();
                } else {
                    let _ = events.send(Event::WaitedForLimit);
                }
                select! {
                    send(jobs, job) -> r => if r.is_err() { return },
                    recv(stop) -> _ => return,
                }
            }
        }
        let gap = match arrival {
            Arrival::Constant => 1.0 / rate,
            Arrival::Poisson => -(1.0 - rng.unit()).ln() / rate,
        };
        due += Duration::from_secs_f64(gap);
    }
}

/// The aggregator thread: fold events until every sender is gone, printing
/// progress along the way.
fn aggregate(
    workload: Arc<Workload>,
    events: Receiver<Event>,
    mut event_log: Option<EventLog>,
    epoch: Instant,
    duration: Duration,
    progress: bool,
    interval: Option<Duration>,
) -> Aggregator {
    let mut agg = Aggregator::new(workload);
    let tty = std::io::stderr().is_terminal();
    let tick = if tty {
        Duration::from_secs(1)
    } else {
        interval.unwrap_or(Duration::from_secs(30))
    };
    let mut next_tick = epoch + tick;
    let mut next_info = interval.map(|i| epoch + i);
    loop {
        match events.recv_deadline(next_tick.min(next_info.unwrap_or(next_tick))) {
            Ok(ev) => {
                if let Some(log) = event_log.as_mut() {
                    log.write(&ev);
                }
                agg.handle(ev)
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if let Some(at) = next_info.filter(|at| now >= *at) {
            let remaining = duration.saturating_sub(now - epoch).as_secs_f64();
            if tty && progress {
                eprint!("\r\x1b[2K");
            }
            log::info!(
                "{}",
                report::event_line(
                    "benchmark progress",
                    &[("remaining_s".into(), format!("{remaining:.0}"))]
                )
            );
            next_info = Some(at + interval.unwrap_or(duration));
        }
        if now >= next_tick {
            if progress {
                let line = agg.progress(now - epoch, duration);
                if tty {
                    eprint!("\r\x1b[2K{line}")
                } else {
                    eprintln!("progress {line}")
                }
            }
            next_tick = now + tick;
        }
    }
    if progress && tty {
        eprintln!();
    }
    agg
}

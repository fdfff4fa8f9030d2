//! One benchmark run, start to summary: everything that can fail on bad input
//! is checked before the clock starts; then a feeder hands trace jobs to slots
//! over a crossbeam channel, the aggregator thread folds their events, and the
//! deadline (or an interrupt) stops the feeder and cancels requests in flight.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};

use crate::aggregator::Aggregator;
use crate::client::{self, Client};
use crate::config::{Arrival, Config, Endpoint, LoadModel};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::prompt::{Rng, Synth, mix};
use crate::report;
use crate::sim::{BUNDLED_TOKENIZER, Sim, SimConfig};
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

/// Ask `GET {endpoint}/models` for the model names served.
pub fn served_models(
    agent: &ureq::Agent,
    endpoint: &str,
    api_key: Option<&str>,
) -> Result<Vec<String>> {
    let url = format!("{endpoint}/models");
    let mut req = agent.get(&url);
    if let Some(k) = api_key.filter(|k| !k.is_empty()) {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req
        .call()
        .map_err(|e| Error::run(format!("cannot reach {url}: {e}; is the server up?")))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(|e| {
        Error::run(format!(
            "GET {url}: HTTP {status}: cannot read the body: {e}"
        ))
    })?;
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::run(format!(
            "GET {url}: HTTP {status}, not an OpenAI model list ({e}): {}",
            client::one_line(&text)
        ))
    })?;
    if status != 200 {
        return Err(Error::run(format!(
            "GET {url}: HTTP {status}: {}",
            client::one_line(&body.to_string())
        )));
    }
    Ok(body["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Run the benchmark described by `cfg`.
pub fn run(cfg: &Config, hooks: &Hooks) -> Result<Summary> {
    cfg.validate()?;
    let path = workload::resolve(&cfg.workload)?;
    let workload = Arc::new(workload::load(&path)?);

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
    let api_key = cfg.api_key.as_deref();
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => {
            let models = served_models(&agent, &endpoint, api_key)?;
            match models.as_slice() {
                [one] => {
                    log::info!(
                        "{}",
                        report::event_line("using served model", &[("model".into(), one.clone())])
                    );
                    one.clone()
                }
                [] => {
                    return Err(Error::run(format!(
                        "{endpoint}/models lists no model; pass --model"
                    )));
                }
                many => {
                    return Err(Error::usage(format!(
                        "{endpoint} serves several models ({}); pass --model",
                        many.join(", ")
                    )));
                }
            }
        }
    };
    let tok = match (&cfg.tokenizer, &cfg.endpoint) {
        (None, Endpoint::Sim) => {
            Tokenizer::from_bytes(BUNDLED_TOKENIZER, "bundled data/tokenizer.json")?
        }
        (spec, _) => Tokenizer::from_file(&tokenizer::resolve(spec.as_deref().unwrap_or(&model))?)?,
    };
    let synth = Synth::new(&tok)?;

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

    let client = Client::new(agent, &endpoint, api_key, cfg.stream);
    let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
    let epoch = Instant::now();
    let aggregator = {
        let workload = workload.clone();
        let duration = cfg.duration;
        let progress = hooks.progress;
        let interval = cfg.progress_interval;
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || aggregate(workload, events_rx, epoch, duration, progress, interval))
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
        model_json: serde_json::Value::from(model.as_str()).to_string(),
        seed: cfg.seed,
        max_retries: cfg.max_retries,
        stop: &stop,
        stop_rx: stop_rx.clone(),
        epoch,
        events: events_tx,
    };
    let interrupted = std::thread::scope(|s| {
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
        interrupted
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
            Ok(ev) => agg.handle(ev),
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

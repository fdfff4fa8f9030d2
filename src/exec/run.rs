//! One benchmark run, start to summary, in two steps. [`prepare`]: everything
//! that can fail on bad input is checked before anything is sent (flags,
//! workload, tokenizer, output paths, the open-file limit), the sim started,
//! the preflight run. [`execute`]: a feeder hands trace jobs to slots over a
//! crossbeam channel, the aggregator thread folds their events, and the
//! deadline (or an interrupt) stops the feeder and cancels requests in
//! flight. Every file is written on every way out of a started run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};

use crate::config::{Api, Arrival, Config, Endpoint, LoadModel};
use crate::error::panic_message;
use crate::error::{Error, Result};
use crate::exec::aggregator::Aggregator;
use crate::exec::preflight;
use crate::exec::slot::{ChatRequests, EmbedJob, Job, SlotContext, TraceHook, run_slot};
use crate::input::workload;
use crate::limits;
use crate::net::client::Http;
use crate::output::files::{EventLog, Input, Outputs};
use crate::output::report;
use crate::output::results::{Results, RunConfig};
use crate::record::event::Event;
use crate::record::summary::Summary;
use crate::sim::{BUNDLED_CHAT_TEMPLATE, BUNDLED_TOKENIZER, SIM_MODEL, Sim, SimConfig};
use crate::stop::Stop;
use crate::term;
use crate::text::chat::ChatTemplate;
use crate::text::content::Content;
use crate::text::prompt::{Prefixes, Rng, Synth, mix};
use crate::text::tokenizer::{self, Tokenizer, Workers};

/// Ways in from outside the run.
#[derive(Default)]
pub struct Hooks {
    /// Set by Ctrl+C / SIGTERM: stops the run in whatever phase it is
    /// (before the clock: [`Error::Interrupted`]; after: as the deadline
    /// would, keeping what finished).
    pub interrupt: Stop,
    /// Print the live progress line on stderr.
    pub progress: bool,
    /// Called at the start of every trace, inside the slot's panic guard
    /// (a test seam).
    pub on_trace: Option<Arc<TraceHook>>,
}

/// `Err(Interrupted)` once `stop` is set.
fn check(stop: &Stop) -> Result<()> {
    if stop.is_set() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

impl Config {
    /// Run the benchmark (see [`run`]). Defined here, not in [`crate::config`],
    /// so that the configuration does not depend on the run.
    pub fn run(&self) -> Result<Summary> {
        run(self, &Hooks::default())
    }
}

/// Run the benchmark described by `cfg` (one load point): [`prepare`],
/// [`execute`], then the files.
pub fn run(cfg: &Config, hooks: &Hooks) -> Result<Summary> {
    let mut prepared = prepare(cfg, &hooks.interrupt)?;
    let results = execute(cfg, &mut prepared, hooks, &RunId::default())?;
    let mut errors = prepared.take_event_log_error();
    errors.extend(prepared.write(
        &|flag| match flag {
            "--output" => Some(results.to_json()),
            "--csv" => Some(crate::output::results::csv(&results.summary)),
            "--output-metrics" => Some(crate::output::results::output_metrics(&results.summary)),
            _ => None,
        },
        true,
    ));
    if let Some(dir) = &cfg.sweep.plot {
        errors.extend(crate::output::plot::write_run(dir, &results));
    }
    prepared.close();
    let mut summary = results.summary;
    summary.file_errors = errors;
    Ok(summary)
}

/// Which run of a sweep this is. The default is a single run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunId {
    /// Load point, from 0.
    pub point: usize,
    /// Trial of the point, from 0.
    pub trial: u32,
    /// A warm-up run (measured, then discarded).
    pub warmup: bool,
    /// Part of a sweep: event log lines carry `point` and `trial`.
    pub in_sweep: bool,
    /// Said before the progress line (`point 3/6 trial 2/3 …`).
    pub label: String,
}

impl RunId {
    /// The key of this run's synthetic text: the seed itself for the first
    /// measured run (a single run sends what it always sent), a fresh key
    /// for every other, so no run sends a prompt another run of the sweep
    /// left in the prefix cache.
    pub fn text_seed(&self, seed: u64) -> u64 {
        if self.point == 0 && self.trial == 0 && !self.warmup {
            seed
        } else {
            mix(seed
                ^ mix(0x7377_6565_7000_0000
                    ^ ((self.point as u64) << 33)
                    ^ ((self.trial as u64) << 1)
                    ^ self.warmup as u64))
        }
    }
}

/// Everything a run needs that does not change from one load point to the
/// next: made once, before anything is measured.
pub struct Prepared {
    workload: Arc<workload::Workload>,
    outputs: Outputs,
    event_log: Option<EventLog>,
    /// The in-process sim, stopped when this is dropped.
    sim: Option<Sim>,
    endpoint: String,
    http: Http,
    model: String,
    model_json: String,
    tokenizer: Arc<Tokenizer>,
    synth: Synth,
    /// Chat requests (`--api chat`).
    chat: Option<ChatRequests>,
    /// The shared prefixes (`--shared-prefix`).
    prefixes: Option<Prefixes>,
    /// What synthetic text says (`--text`).
    content: Content,
    /// Embeddings: tokens the server adds to every input.
    embed_added: u64,
    warned: preflight::Warned,
    run_config: RunConfig,
    event_log_error: Option<String>,
}

impl Prepared {
    /// Write the files `render` gives for each output flag (`None`: not
    /// this one). Regular files are replaced atomically every time; special
    /// files (FIFOs, stdout) only when `last`. Returns the errors.
    pub fn write(&mut self, render: &dyn Fn(&str) -> Option<String>, last: bool) -> Vec<String> {
        self.outputs.write(render, last)
    }

    /// The event log's write error, once.
    pub fn take_event_log_error(&mut self) -> Vec<String> {
        self.event_log_error.take().into_iter().collect()
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The HTTP clients' settings.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The record of the configuration.
    pub fn run_config(&self) -> &RunConfig {
        &self.run_config
    }

    /// Stop the sim, if one runs.
    pub fn close(self) {
        if let Some(sim) = self.sim {
            sim.stop();
        }
    }
}

/// Validate `cfg`, resolve and load the workload and tokenizer, check every
/// output against the inputs, raise the open-file limit, start the sim,
/// run the preflight: everything that can fail on bad input or a bad
/// server, before anything is measured. `stop` ends it at once.
pub fn prepare(cfg: &Config, stop: &Stop) -> Result<Prepared> {
    cfg.validate()?;
    if let Some(key) = &cfg.api_key {
        crate::redact::register(key.expose());
    }
    if let Ok(token) = std::env::var("HF_TOKEN") {
        crate::redact::register(&token);
    }

    // Inputs, then outputs checked against them, before anything is sent.
    let path = workload::resolve(&cfg.workload, stop)?;
    let workload = Arc::new(workload::load(&path, stop)?);
    let mut inputs = vec![Input::new("the workload", &path)];
    if let Some(t) = &cfg.chat.template {
        inputs.push(Input::new("the chat template", t));
    }
    if let crate::text::content::TextMode::Corpus(Some(f)) = &cfg.text {
        inputs.push(Input::new("the corpus", f));
    }
    let corpus = crate::text::content::read_corpus(&cfg.text)?;
    // A template given on the command line must compile and render a
    // conversation of the run's shape before anything is sent.
    if let (Api::Chat, Some(file)) = (cfg.api, &cfg.chat.template) {
        let template = ChatTemplate::from_file(file, None)?;
        let extra = cfg.chat.kwargs.clone().into_iter().collect();
        let mut trial = vec![
            crate::text::chat::Message::new("user", " a b c"),
            crate::text::chat::Message::new("assistant", " d e"),
            crate::text::chat::Message::new("user", " f g h"),
        ];
        if cfg.prefix.is_some() {
            trial.insert(0, crate::text::chat::Message::new("system", " i j k"));
        }
        template.render(&trial, true, &extra).map_err(|e| {
            Error::usage(format!(
                "--chat-template {}: {e}; trie sends {}, then assistant and user messages in turn: pass a template that renders them",
                file.display(),
                if cfg.prefix.is_some() { "a system and a user message" } else { "a user message" }
            ))
        })?;
    }
    // The tokenizer, and the file it came from (`None`: the bundled one).
    let load_tokenizer = |model: &str| -> Result<(Tokenizer, Option<PathBuf>)> {
        match &cfg.tokenizer {
            None if cfg.endpoint == Endpoint::Sim || model == SIM_MODEL => Ok((
                Tokenizer::from_bytes(BUNDLED_TOKENIZER, "bundled data/tokenizer.json")?,
                None,
            )),
            spec => {
                let p = tokenizer::resolve(spec.as_deref().unwrap_or(model), stop)?;
                Ok((Tokenizer::from_file(&p)?, Some(p)))
            }
        }
    };
    let tokenizer_input = |p: &Option<PathBuf>| p.as_ref().map(|p| Input::new("the tokenizer", p));
    let early_tok = match (&cfg.tokenizer, &cfg.model, &cfg.endpoint) {
        (None, None, Endpoint::Url(_)) => None,
        (_, model, _) => {
            let (tok, path) = load_tokenizer(model.as_deref().unwrap_or(""))?;
            inputs.extend(tokenizer_input(&path));
            Some((tok, path))
        }
    };
    // The chat template, compiled before anything is sent.
    let chat_template = |tokenizer_path: &Option<PathBuf>| -> Result<Option<ChatTemplate>> {
        if cfg.api != Api::Chat {
            return Ok(None);
        }
        match (&cfg.chat.template, tokenizer_path) {
            (Some(file), p) => ChatTemplate::from_file(file, p.as_deref()).map(Some),
            (None, Some(p)) => ChatTemplate::beside(p),
            (None, None) => ChatTemplate::new(
                BUNDLED_CHAT_TEMPLATE,
                "bundled data/chat_template.jinja",
                Default::default(),
            )
            .map(Some),
        }
    };
    let early_template = match &early_tok {
        Some((_, path)) => Some(chat_template(path)?),
        None => None,
    };
    let mut outputs = Outputs::prepare(&cfg.files, &inputs, stop)?;
    if let Some(dir) = &cfg.sweep.plot {
        crate::output::files::plot_dir("--plot", dir, &cfg.files)?;
    }
    let load_flag = match (cfg.sweep.search, cfg.load) {
        (Some(s), _) if s.max_arrival_rate.is_none() => {
            format!("--max-concurrency {}", s.max_concurrency)
        }
        (Some(_), LoadModel::Closed { .. }) => format!(
            "an open-loop search's {} traces in flight",
            crate::config::DEFAULT_MAX_INFLIGHT
        ),
        (_, LoadModel::Closed { .. }) => format!("--concurrency {}", cfg.max_slots()),
        (_, LoadModel::Open { max_inflight, .. }) => format!("--max-inflight {max_inflight}"),
    };
    let enough = limits::ensure_open_files(
        limits::files_needed(cfg.max_slots(), cfg.endpoint == Endpoint::Sim),
        &load_flag,
    );
    let open_loop = matches!(cfg.load, LoadModel::Open { .. })
        || cfg
            .sweep
            .search
            .is_some_and(|s| s.max_arrival_rate.is_some());
    match enough {
        Ok(()) => {}
        // The open loop reaches --max-inflight only when the server falls
        // far behind: a request beyond the limit then fails as `client`.
        Err(e) if open_loop => log::warn!("{e}; requests beyond it will fail as `client`"),
        Err(e) => return Err(Error::Usage(e)),
    }
    check(stop)?;

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
    let http = Http::new(
        &endpoint,
        cfg.api_key.as_ref().map(|k| k.expose()),
        cfg.stream,
        cfg.timeout,
        cfg.connect_timeout,
        cfg.max_line_bytes,
    )
    .route(cfg.api.route());
    let preflight_client = http.preflight_client(stop);
    let model = preflight::choose_model(&preflight_client, &endpoint, cfg.model.as_deref(), stop)?;
    let (tok, template) = match (early_tok, early_template) {
        (Some((t, _)), Some(template)) => (t, template),
        _ => {
            let (tok, path) = load_tokenizer(&model)?;
            outputs.check_inputs(&tokenizer_input(&path).into_iter().collect::<Vec<_>>())?;
            let template = chat_template(&path)?;
            (tok, template)
        }
    };
    let synth = Synth::new(&tok)?;
    check(stop)?;
    let model_json = serde_json::Value::from(model.as_str()).to_string();
    // The tokenizer that counts replies as the server will (see the probe).
    let mut embed_added = 0;
    let (probe, chat) = match cfg.api {
        Api::Embeddings => {
            embed_added = preflight::probe_embeddings(
                &preflight_client,
                &synth,
                &tok,
                cfg.seed,
                &model_json,
                cfg.max_retries,
                stop,
            )?;
            if let Some(t) = cfg.embed.tokens.filter(|&t| (t as u64) < embed_added) {
                return Err(Error::usage(format!(
                    "--embed-tokens {t} is fewer than the {embed_added} tokens the server adds to every input; pass at least {embed_added}"
                )));
            }
            let probe = preflight::Probe {
                tokenizer: tok,
                added_tokens_as_text: false,
                warned: Default::default(),
            };
            (probe, None)
        }
        Api::Completions => (
            preflight::probe(
                &preflight_client,
                &synth,
                tok,
                cfg.seed,
                &model_json,
                cfg.max_retries,
                stop,
            )?,
            None,
        ),
        Api::Chat => {
            let fields = if cfg.chat.kwargs.is_empty() {
                String::new()
            } else {
                format!(
                    r#""chat_template_kwargs":{},"#,
                    serde_json::Value::Object(cfg.chat.kwargs.clone())
                )
            };
            let extra = cfg.chat.kwargs.clone().into_iter().collect();
            let p = preflight::probe_chat(
                &preflight_client,
                &synth,
                tok,
                template,
                &extra,
                &fields,
                cfg.seed,
                &model_json,
                cfg.prefix.is_some(),
                cfg.max_retries,
                stop,
            )?;
            let chat = ChatRequests {
                counting: p.counting,
                fields,
            };
            (p.probe, Some(chat))
        }
    };
    drop(preflight_client);
    check(stop)?;
    // Created (truncated) only now, once every input is known and checked:
    // a run refused before its clock starts leaves an old log as it was.
    let event_log = outputs.event_log()?;
    let tok = Arc::new(probe.tokenizer);
    let content = Content::new(&cfg.text, &tok, &synth, corpus);
    let mut run_config = RunConfig::new(
        cfg,
        &endpoint,
        &model,
        &workload.path,
        &workload.content_hash,
        &tok,
        probe.added_tokens_as_text,
    );
    run_config.chat_counting = chat.as_ref().map(|c| c.counting.describe());

    Ok(Prepared {
        workload,
        outputs,
        event_log,
        sim,
        endpoint,
        http,
        model,
        model_json,
        tokenizer: tok,
        content,
        embed_added,
        synth,
        chat,
        prefixes: cfg
            .prefix
            .map(|p| Prefixes::new(p.tokens as u64, p.groups, p.zipf)),
        warned: probe.warned,
        run_config,
        event_log_error: None,
    })
}

/// Execute one load point of `prepared` (as `cfg` describes it): the feeder,
/// the slots and the aggregator, from the clock's start to the results of
/// the run (written by the caller).
pub fn execute(
    cfg: &Config,
    prepared: &mut Prepared,
    hooks: &Hooks,
    id: &RunId,
) -> Result<Results> {
    cfg.validate()?;
    // A warm-up is not logged.
    let event_log = if id.warmup {
        None
    } else {
        prepared.event_log.take().map(|mut log| {
            log.tag = id.in_sweep.then_some((id.point, id.trial));
            log
        })
    };
    let Prepared {
        workload,
        endpoint,
        http,
        model,
        model_json,
        tokenizer: tok,
        synth,
        warned,
        ..
    } = &*prepared;
    let (workload, warned) = (workload.clone(), *warned);
    let stop = &hooks.interrupt;
    let mut summary = Summary {
        model: crate::redact::name(model),
        endpoint: endpoint.clone(),
        workload: workload.path.display().to_string(),
        workload_templates: workload.traces.len(),
        duration_s: cfg.duration.as_secs_f64(),
        num_gpus: cfg.num_gpus,
        seed: cfg.seed,
        stream: cfg.stream,
        api: cfg.api,
        shared_prefix_tokens: cfg.prefix.map(|p| p.tokens as u64),
        embed_batch: (cfg.api == Api::Embeddings).then_some(cfg.embed.batch),
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

    // The run's own stop: set at the deadline, or by the interrupt.
    let run_stop = Stop::new();
    stop.forward_to(&run_stop);
    let tokenizer = Workers::start(tok.clone(), Some(run_stop.clone()))?;
    let (events_tx, events_rx) = crossbeam_channel::unbounded::<Event>();
    let started = SystemTime::now();
    let epoch = Instant::now();
    let aggregator = {
        let workload = workload.clone();
        let duration = cfg.duration;
        let progress = hooks.progress.then(|| id.label.clone());
        let interval = cfg.progress_interval;
        let agg = Aggregator::new(workload, warned)
            .with_prefix(cfg.prefix.map_or(0, |p| p.tokens as u64))
            .with_embeddings(cfg.api == Api::Embeddings);
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || {
                aggregate(
                    agg, events_rx, event_log, epoch, duration, progress, interval,
                )
            })
            .map_err(|e| Error::run(format!("cannot start the aggregator thread: {e}")))?
    };

    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(0);
    let ctx = SlotContext {
        http,
        workload: &workload,
        synth,
        tokenizer: &tokenizer,
        model_json: model_json.clone(),
        seed: id.text_seed(cfg.seed),
        max_retries: cfg.max_retries,
        stop: &run_stop,
        epoch,
        events: events_tx,
        hash_bodies: cfg.files.events.is_some(),
        on_trace: hooks.on_trace.as_deref(),
        chat: prepared.chat.as_ref(),
        prefixes: prepared.prefixes.as_ref(),
        content: &prepared.content,
        embed: (cfg.api == Api::Embeddings).then_some(EmbedJob {
            tokens: cfg.embed.tokens,
            batch: cfg.embed.batch,
            added: prepared.embed_added,
        }),
    };
    let executed = std::thread::scope(|s| -> Result<Duration> {
        let ctx = &ctx;
        let spawn_slot = move |slot: usize, jobs: Receiver<Job>| {
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn_scoped(s, move || run_slot(slot, ctx, &jobs))
        };
        match cfg.load {
            LoadModel::Closed { concurrency } => {
                for slot in 0..concurrency {
                    if let Err(e) = spawn_slot(slot, jobs_rx.clone()) {
                        run_stop.trigger();
                        return Err(Error::run(format!(
                            "cannot start slot thread {} of {concurrency}: {e}; lower --concurrency or raise the thread limit (ulimit -u)",
                            slot + 1
                        )));
                    }
                }
                let stop_rx = run_stop.receiver().clone();
                let n = workload.traces.len();
                s.spawn(move || guarded("feeder", || feed_closed(n, jobs_tx, stop_rx)));
            }
            LoadModel::Open {
                rate,
                arrival,
                max_inflight,
            } => {
                let stop_rx = run_stop.receiver().clone();
                let n = workload.traces.len();
                let seed = cfg.seed;
                let jobs_rx = jobs_rx.clone();
                s.spawn(move || {
                    let mut workers = 0usize;
                    let mut spawn_worker = || match spawn_slot(workers, jobs_rx.clone()) {
                        Ok(_) => {
                            workers += 1;
                            workers < max_inflight
                        }
                        Err(e) => {
                            log::warn!(
                                "cannot start more than {workers} workers ({e}): later arrivals wait for a free one"
                            );
                            false
                        }
                    };
                    guarded("feeder", || {
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
                    })
                });
            }
        }
        // Wait for the deadline or an interrupt, then stop everything at once.
        let deadline = crossbeam_channel::at(epoch + cfg.duration);
        select! {
            recv(deadline) -> _ => {},
            recv(run_stop.receiver()) -> _ => {},
        }
        run_stop.trigger();
        Ok(epoch.elapsed())
    });
    drop(ctx);
    drop(tokenizer);
    let (agg, event_log) = aggregator
        .join()
        .map_err(|_| Error::run("the aggregator thread panicked"))?;
    if let Some(mut log) = event_log {
        if prepared.event_log_error.is_none() {
            prepared.event_log_error = log.error().map(str::to_string);
        }
        log.tag = None;
        prepared.event_log = Some(log);
    }
    // The measured window ends at the stop: work the slots finish after it
    // (counting a long reply) does not stretch it.
    let stopped_at = executed?;
    let interrupted = stop.is_set();
    summary.interrupted = interrupted;
    if interrupted {
        log::warn!("benchmark interrupted");
    }
    let records = agg.into_records();
    let summary = catch_unwind(AssertUnwindSafe(|| {
        crate::record::records::summarize(&summary, &records, stopped_at.as_secs_f64())
    }))
    .unwrap_or_else(|panic| {
        // Still a run: its settings, its records and this error go into the files.
        let message = format!(
            "internal error (a bug in trie) summarizing the run: {}",
            panic_message(&panic)
        );
        log::error!("{message}");
        let mut s = summary;
        s.failures
            .entry(crate::net::client::FailureKind::Internal.name())
            .or_default()
            .examples
            .push(message);
        s
    });
    log::info!(
        "{}",
        report::event_line("benchmark complete", &report::complete_pairs(&summary))
    );
    let mut run_config = prepared.run_config.clone();
    run_config.set_load(&cfg.load);
    Ok(Results::new(
        started,
        run_config,
        stopped_at.as_secs_f64(),
        summary,
        records,
    ))
}

/// Run `f` (a feeder); a panic in it is logged, and the run goes on
/// without new traces until the deadline.
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        log::error!(
            "internal error (a bug in trie) in the {what}: {}; no new traces start",
            panic_message(&panic)
        );
    }
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
        // Past the longest duration trie allows, no arrival is due any more.
        match due.checked_add(limits::seconds(gap)) {
            Some(next) => due = next,
            None => return,
        }
    }
}

/// How long the aggregator lets events gather after a wake-up.
const GATHER: Duration = Duration::from_millis(5);

/// Log and fold one event; a panic is an internal error, not the run's end.
fn fold(agg: &mut Aggregator, event_log: &mut Option<EventLog>, ev: Event) {
    let handled = catch_unwind(AssertUnwindSafe(|| {
        if let Some(log) = event_log.as_mut() {
            log.write(&ev);
        }
        agg.handle(ev)
    }));
    if let Err(panic) = handled {
        let message = format!(
            "internal error (a bug in trie) in the aggregator: {}",
            panic_message(&panic)
        );
        log::error!("{message}");
        agg.internal_error(message);
    }
}

/// The aggregator thread: fold events until every sender is gone, printing
/// progress along the way. Also returns the event log's write error.
fn aggregate(
    mut agg: Aggregator,
    events: Receiver<Event>,
    mut event_log: Option<EventLog>,
    epoch: Instant,
    duration: Duration,
    progress: Option<String>,
    interval: Option<Duration>,
) -> (Aggregator, Option<EventLog>) {
    let tick = if term::stderr_is_tty() {
        Duration::from_secs(1)
    } else {
        interval.unwrap_or(Duration::from_secs(30))
    };
    let mut next_tick = epoch + tick;
    let mut next_info = interval.map(|i| epoch + i);

    loop {
        match events.recv_deadline(next_tick.min(next_info.unwrap_or(next_tick))) {
            Ok(ev) => {
                fold(&mut agg, &mut event_log, ev);
                // Let events gather: a slot's send to an aggregator that
                // is not waiting on the channel wakes no one, so the
                // aggregator wakes at most every GATHER, not per request.
                std::thread::sleep(GATHER);
                for ev in events.try_iter() {
                    fold(&mut agg, &mut event_log, ev);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if let Some(at) = next_info.filter(|at| now >= *at) {
            let remaining = duration.saturating_sub(now - epoch).as_secs_f64();
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
            if let Some(label) = &progress {
                let line = catch_unwind(AssertUnwindSafe(|| agg.progress(now - epoch, duration)));
                term::progress(&format!("{label}{}", line.unwrap_or_default()));
            }
            next_tick = now + tick;
        }
    }
    term::end_progress();
    (agg, event_log)
}

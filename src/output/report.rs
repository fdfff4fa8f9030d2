//! Rendering of a [`Summary`], pure: the per-trace and workload tables, the
//! failures table, and the `key=value` figures of the `benchmark complete` line
//! (named as the Python version names them).

use prettytable::{Cell, Row, Table, format};

use crate::record::metrics::{Rates, Stats};
use crate::record::summary::Summary;

/// `event` padded like structlog's console renderer, then `key=value` words.
pub fn event_line(event: &str, pairs: &[(String, String)]) -> String {
    let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{event:<30} {}", kv.join(" "))
        .trim_end()
        .to_string()
}

/// The `starting benchmark` figures.
pub fn start_pairs(s: &Summary) -> Vec<(String, String)> {
    let mut v = Vec::new();
    if let Some(c) = s.concurrency {
        v.push(("concurrency".into(), c.to_string()));
    }
    if let Some(r) = s.arrival_rate {
        v.push(("arrival_rate".into(), r.to_string()));
    }
    v.push(("duration".into(), format!("{:.1}", s.duration_s)));
    v.push(("model".into(), s.model.clone()));
    v.push((
        "num_gpus".into(),
        s.num_gpus
            .map(|n| n.to_string())
            .unwrap_or_else(|| "None".into()),
    ));
    v.push((
        "workload_templates".into(),
        s.workload_templates.to_string(),
    ));
    v
}

/// Per-trace rows: (title, key prefix, stats, decimals, streaming only).
type TraceRow<'a> = (&'static str, &'static str, Option<&'a Stats>, usize, bool);

fn per_trace_rows(s: &Summary) -> Vec<TraceRow<'_>> {
    let p = &s.per_trace;
    vec![
        ("Latency (s)", "latency_s", p.latency_s.as_ref(), 3, false),
        ("TTFT (s)", "ttft_s", p.ttft_s.as_ref(), 3, true),
        ("TTFAT (s)", "ttfat_s", p.ttfat_s.as_ref(), 3, true),
        (
            "Decode TPS (tok/s)",
            "decode_tps",
            p.decode_tps.as_ref(),
            2,
            true,
        ),
        (
            "Decode TPOT (ms/tok)",
            "decode_tpot_ms",
            p.decode_tpot_ms.as_ref(),
            2,
            true,
        ),
        ("ITL (ms)", "itl_ms", p.itl_ms.as_ref(), 2, true),
        (
            "Cache hit rate (%)",
            "cache_hit_rate_pct",
            p.cache_hit_rate_pct.as_ref(),
            1,
            false,
        ),
        (
            "Eligible cache hit rate (%)",
            "eligible_cache_hit_rate_pct",
            p.eligible_cache_hit_rate_pct.as_ref(),
            1,
            false,
        ),
        (
            "Output tokens/turn",
            "output_tokens_per_turn",
            p.output_tokens_per_turn.as_ref(),
            1,
            false,
        ),
        (
            "Output tokens/trace",
            "output_tokens_per_trace",
            p.output_tokens_per_trace.as_ref(),
            1,
            false,
        ),
    ]
}

/// Per-request rows, keyed `req_…` in the figures.
fn per_request_rows(s: &Summary) -> Vec<TraceRow<'_>> {
    let p = &s.per_request;
    vec![
        ("TTFT (s)", "req_ttft_s", p.ttft_s.as_ref(), 3, true),
        ("ITL (ms)", "req_itl_ms", p.itl_ms.as_ref(), 2, true),
        (
            "Decode TPS (tok/s)",
            "req_decode_tps",
            p.decode_tps.as_ref(),
            2,
            true,
        ),
        (
            "Latency (s)",
            "req_latency_s",
            p.latency_s.as_ref(),
            3,
            false,
        ),
        (
            "Prompt tokens",
            "req_prompt_tokens",
            p.prompt_tokens.as_ref(),
            1,
            false,
        ),
        (
            "Cached tokens",
            "req_cached_tokens",
            p.cached_tokens.as_ref(),
            1,
            false,
        ),
        (
            "Completion tokens",
            "req_completion_tokens",
            p.completion_tokens.as_ref(),
            1,
            false,
        ),
    ]
}

/// A workload rate row: (title, key suffix, getter).
type RateRow = (&'static str, &'static str, fn(&Rates) -> f64);

const RATE_ROWS: [RateRow; 4] = [
    ("total prompt tok/s", "prompt_tok_per_s", |r| {
        r.prompt_tok_per_s
    }),
    ("cached prompt tok/s", "cached_prompt_tok_per_s", |r| {
        r.cached_prompt_tok_per_s
    }),
    ("uncached prompt tok/s", "uncached_prompt_tok_per_s", |r| {
        r.uncached_prompt_tok_per_s
    }),
    ("completion tok/s", "completion_tok_per_s", |r| {
        r.completion_tok_per_s
    }),
];

fn rate_columns(s: &Summary) -> Vec<(&'static str, &'static str, Option<Rates>)> {
    let mut cols = vec![
        ("Overall", "", s.overall),
        ("Last 30s Window", "last_30s_window_", s.last_30s_window),
        ("Steady State", "steady_state_", s.steady_state),
    ];
    if s.num_gpus.is_some() {
        cols.push((
            "Steady State / GPU",
            "steady_state_per_gpu_",
            s.steady_state_per_gpu,
        ));
    }
    cols
}

/// What an absent figure looks like in a table.
pub const ABSENT: &str = "–";

/// `x` with `decimals` decimals, fewer when needed to fit `MAX_CELL`
/// characters (tables stay within [`MAX_WIDTH`] columns); absent is `–`.
pub(crate) fn cell(x: Option<f64>, decimals: usize) -> String {
    // Not a number (a sum past f64's range in a hand-edited file) is no figure.
    let Some(x) = x.filter(|x| x.is_finite()) else {
        return ABSENT.to_string();
    };
    for d in (0..=decimals).rev() {
        let t = format!("{x:.d$}");
        if t.chars().count() <= MAX_CELL {
            return t;
        }
    }
    format!("{x:.2e}")
}

/// Widest number cell.
const MAX_CELL: usize = 9;

/// Widest line of the tables (columns of a terminal).
pub const MAX_WIDTH: usize = 120;

/// One named figure of a run, with the decimals it is printed with.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Name, as in the `benchmark complete` line and the results file.
    pub name: String,
    /// Value (`None`: not measured, such as a statistic without values).
    pub value: Option<f64>,
    /// Decimals when printed (0 for counts).
    pub decimals: usize,
}

/// Every figure of the `benchmark complete` line, in its order.
pub fn figures(s: &Summary) -> Vec<Figure> {
    let mut v = Vec::new();
    let mut push = |name: String, value: Option<f64>, decimals: usize| {
        v.push(Figure {
            name,
            value,
            decimals,
        })
    };
    let count = |n: u64| Some(n as f64);
    push("completed_requests".into(), count(s.completed_requests), 0);
    push("failed_requests".into(), count(s.failed_requests), 0);
    push("cancelled_traces".into(), count(s.cancelled_traces), 0);
    push("http_requests".into(), count(s.http_requests), 0);
    push("wall_time_s".into(), Some(s.wall_time_s), 2);
    push("trace_per_s".into(), Some(s.trace_per_s), 4);
    for (_, prefix, rates) in rate_columns(s) {
        for (_, suffix, get) in RATE_ROWS {
            push(format!("{prefix}{suffix}"), rates.as_ref().map(get), 2);
        }
    }
    for (_, key, stats, decimals, streaming_only) in
        per_trace_rows(s).into_iter().chain(per_request_rows(s))
    {
        if streaming_only && !s.stream {
            continue;
        }
        for (i, row) in Stats::ROWS.iter().enumerate() {
            push(
                format!("{key}_{row}"),
                stats.map(|st| st.rows()[i].1),
                decimals.max(3),
            );
        }
    }
    // Counts among completed requests: absent when none completed (0
    // mismatches of nothing would read as a perfect tokenizer match).
    let of_requests = |n: u64| (s.http_requests > 0).then_some(n as f64);
    push(
        "prompt_token_mismatches".into(),
        of_requests(s.prompt_token_mismatches),
        0,
    );
    if s.api == crate::net::client::Api::Chat {
        push(
            "template_tokens_per_request".into(),
            s.template_tokens_per_request,
            1,
        );
        push(
            "template_tokens_total".into(),
            s.template_tokens_total.map(|t| t as f64),
            0,
        );
    }
    if s.embed_batch.is_some() {
        push("embed_requests_per_s".into(), s.embed_requests_per_s, 2);
        push("embed_inputs_per_s".into(), s.embed_inputs_per_s, 2);
        push(
            "embed_input_tokens_per_s".into(),
            s.embed_input_tokens_per_s,
            2,
        );
    }
    if s.shared_prefix_tokens.is_some() {
        push(
            "prefix_cache_hit_rate_pct".into(),
            s.prefix_cache_hit_rate_pct,
            2,
        );
    }
    push(
        "requests_without_usage".into(),
        of_requests(s.requests_without_usage),
        0,
    );
    push(
        "short_completions".into(),
        of_requests(s.short_completions),
        0,
    );
    for (kind, c) in &s.failures {
        push(format!("failures_{kind}"), count(c.traces), 0);
        push(format!("retries_{kind}"), count(c.retried_attempts), 0);
    }
    if let Some(a) = &s.arrival {
        push("arrival_late_s_p50".into(), a.late_s_p50, 4);
        push("arrival_late_s_p99".into(), a.late_s_p99, 4);
        push(
            "arrival_waited_for_limit".into(),
            count(a.waited_for_limit),
            0,
        );
    }
    v
}

/// Every figure by name, as the results document keeps them.
pub fn figure_map(s: &Summary) -> FigureMap {
    figures(s).into_iter().map(|f| (f.name, f.value)).collect()
}

/// The `benchmark complete` line's `key=value` pairs (an absent figure is
/// `None`, as the Python version prints absent values).
pub fn complete_pairs(s: &Summary) -> Vec<(String, String)> {
    figures(s)
        .into_iter()
        .map(|fig| {
            let d = fig.decimals;
            let text = fig
                .value
                .map(|x| format!("{x:.d$}"))
                .unwrap_or_else(|| "None".to_string());
            (fig.name, text)
        })
        .collect()
}

/// A table in trie's style; the titles of the columns in `left` are
/// left-aligned, the others right-aligned (over numbers).
pub(crate) fn table(titles: Vec<String>, left: &[usize]) -> Table {
    use format::{LinePosition, LineSeparator};
    let mut t = Table::new();
    t.set_format(
        format::FormatBuilder::new()
            .column_separator('│')
            .borders('│')
            .separators(&[LinePosition::Top], LineSeparator::new('─', '┬', '┌', '┐'))
            .separators(
                &[LinePosition::Title],
                LineSeparator::new('─', '┼', '├', '┤'),
            )
            .separators(
                &[LinePosition::Bottom],
                LineSeparator::new('─', '┴', '└', '┘'),
            )
            .padding(1, 1)
            .build(),
    );
    t.set_titles(Row::new(
        titles
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if left.contains(&i) {
                    Cell::new(s)
                } else {
                    right(s)
                }
            })
            .collect(),
    ));
    t
}

/// A table of `rows`, a statistic per column.
fn stats_table(s: &Summary, rows: Vec<TraceRow<'_>>) -> String {
    let mut t = table(
        std::iter::once("Metric".to_string())
            .chain(Stats::ROWS.iter().map(|r| r.to_string()))
            .collect(),
        &[0],
    );
    for (title, _, stats, decimals, streaming_only) in rows {
        let mut cells = vec![Cell::new(title)];
        for i in 0..Stats::ROWS.len() {
            let x = stats
                .filter(|_| s.stream || !streaming_only)
                .map(|st| st.rows()[i].1);
            cells.push(right(&cell(x, decimals)));
        }
        t.add_row(Row::new(cells));
    }
    t.to_string()
}

pub(crate) fn right(text: &str) -> Cell {
    Cell::new_align(text, format::Alignment::RIGHT)
}

/// The per-trace table, the workload table and (if any) the failures
/// table, each at most [`MAX_WIDTH`] columns wide.
pub fn tables(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str("Per-trace metrics\n");
    out.push_str(&stats_table(s, per_trace_rows(s)));
    // Results files before schema 3 have none: no table of dashes for them.
    if s.per_request != crate::record::summary::PerRequest::default() {
        out.push_str(&format!(
            "\nPer-request metrics ({} completed requests, of finished and unfinished traces)\n",
            s.http_requests
        ));
        out.push_str(&stats_table(s, per_request_rows(s)));
    }
    if let (Some(mean), Some(total)) = (s.template_tokens_per_request, s.template_tokens_total) {
        out.push_str(&format!(
            "Chat template: {mean:.1} tokens per request on top of the workload's, {total} in all\n"
        ));
    }
    if let Some(batch) = s.embed_batch {
        let show = |x: Option<f64>| x.map_or(ABSENT.to_string(), |x| format!("{x:.2}"));
        out.push_str(&format!(
            "Embeddings: {} requests/s of {batch} input{}, {} inputs/s, {} input tokens/s\n",
            show(s.embed_requests_per_s),
            if batch == 1 { "" } else { "s" },
            show(s.embed_inputs_per_s),
            show(s.embed_input_tokens_per_s)
        ));
    }
    if let Some(tokens) = s.shared_prefix_tokens {
        out.push_str(&format!(
            "Shared prefix: {tokens} tokens, cache hit rate {} % (first requests whose prefix another request had cached)\n",
            s.prefix_cache_hit_rate_pct
                .map_or(ABSENT.to_string(), |p| format!("{p:.2}"))
        ));
    }

    let total = s.completed_requests + s.failed_requests;
    out.push_str(&format!(
        "\nWorkload metrics\ncompleted={}/{}  trace/s={:.2}\n",
        s.completed_requests, total, s.trace_per_s
    ));
    let rcols = rate_columns(s);
    let mut t = table(
        std::iter::once("Metric".to_string())
            .chain(rcols.iter().map(|c| c.0.to_string()))
            .collect(),
        &[0],
    );
    for (title, _, get) in RATE_ROWS {
        let mut cells = vec![Cell::new(title)];
        for (_, _, rates) in &rcols {
            cells.push(right(&cell(rates.as_ref().map(get), 2)));
        }
        t.add_row(Row::new(cells));
    }
    out.push_str(&t.to_string());

    if !s.failures.is_empty() {
        let titles = ["Kind", "Failed traces", "Retried attempts", "Example"];
        let kind_w = s
            .failures
            .keys()
            .map(|k| k.chars().count())
            .chain([titles[0].len()])
            .max()
            .unwrap_or(4);
        // Borders and padding: 5 separators and 2 spaces per column.
        let example_w = MAX_WIDTH
            .saturating_sub(5 + 8 + kind_w + titles[1].len() + titles[2].len())
            .max(titles[3].len());
        let mut t = table(titles.iter().map(|t| t.to_string()).collect(), &[0, 3]);
        for (kind, c) in &s.failures {
            let example = c.examples.first().map(String::as_str).unwrap_or("");
            let example = if example.chars().count() > example_w {
                let cut: String = example.chars().take(example_w - 1).collect();
                format!("{cut}…")
            } else {
                example.to_string()
            };
            t.add_row(Row::new(vec![
                Cell::new(kind),
                right(&c.traces.to_string()),
                right(&c.retried_attempts.to_string()),
                Cell::new(&example),
            ]));
        }
        out.push_str("\nFailures\n");
        out.push_str(&t.to_string());
    }
    out
}

/// The figures `trie compare` shows, in order.
pub const HEADLINE: &[&str] = &[
    "completed_requests",
    "failed_requests",
    "trace_per_s",
    "steady_state_completion_tok_per_s",
    "steady_state_prompt_tok_per_s",
    "steady_state_uncached_prompt_tok_per_s",
    "completion_tok_per_s",
    "prompt_tok_per_s",
    "latency_s_p50",
    "latency_s_p99",
    "ttft_s_p50",
    "ttft_s_p99",
    "ttfat_s_p50",
    "ttfat_s_p99",
    "decode_tps_mean",
    "decode_tpot_ms_p50",
    "itl_ms_p50",
    "itl_ms_p99",
    "cache_hit_rate_pct_mean",
    "eligible_cache_hit_rate_pct_mean",
    "prompt_token_mismatches",
];

/// `value (+x.y%)` relative to `base`; absent values are `–` and have no
/// change.
fn relative(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b != 0.0 => format!("{} ({:+.1}%)", short(v), 100.0 * (v - b) / b),
        (Some(v), Some(_)) => format!("{} (n/a)", short(v)),
        (Some(v), None) => short(v),
        (None, _) => ABSENT.to_string(),
    }
}

fn short(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// A run's figures by name, as `trie compare` reads them.
pub type FigureMap = std::collections::BTreeMap<String, Option<f64>>;

/// Figures over trials by name (a sweep point's).
pub type IntervalMap = std::collections::BTreeMap<String, Option<crate::record::stats::Interval>>;

/// `trie compare`: the headline figures of each run side by side, each
/// after the first with its change relative to the first; a figure absent
/// from every run is left out. A column with intervals over trials (a
/// sweep point) marks a change whose interval overlaps the first column's
/// `n.s.`: not significant at their confidence.
pub fn compare(runs: &[(String, &FigureMap, Option<&IntervalMap>)]) -> String {
    let mut t = table(
        std::iter::once("Metric".to_string())
            .chain(runs.iter().map(|(name, _, _)| name.clone()))
            .collect(),
        &[0],
    );
    for name in HEADLINE {
        let value = |f: &FigureMap| f.get(*name).copied().flatten().filter(|x| x.is_finite());
        if runs.iter().all(|(_, f, _)| value(f).is_none()) {
            continue;
        }
        let interval = |i: Option<&IntervalMap>| i.and_then(|m| m.get(*name).copied().flatten());
        let (base, base_iv) = match runs.first() {
            Some((_, f, i)) => (value(f), interval(*i)),
            None => (None, None),
        };
        let mut cells = vec![Cell::new(name)];
        for (i, (_, f, ivs)) in runs.iter().enumerate() {
            let v = value(f);
            let mut text = if i == 0 {
                v.map(short).unwrap_or_else(|| ABSENT.into())
            } else {
                relative(v, base)
            };
            if i > 0
                && v.is_some()
                && let (Some(a), Some(b)) = (base_iv, interval(*ivs))
                && a.half_width.is_some()
                && b.half_width.is_some()
                && a.overlaps(&b)
                && v != base
            {
                text.push_str(" n.s.");
            }
            cells.push(right(&text));
        }
        t.add_row(Row::new(cells));
    }
    t.to_string()
}

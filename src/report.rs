//! Rendering of a [`Summary`], pure: the per-trace and workload tables, the
//! failures table, and the `key=value` figures of the `benchmark complete` line
//! (named as the Python version names them).

use prettytable::{Cell, Row, Table, format};

use crate::metrics::{Rates, Stats};
use crate::summary::Summary;

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

/// Per-trace columns: (title, key prefix, stats, decimals, streaming only).
fn per_trace_columns(s: &Summary) -> Vec<(&'static str, &'static str, &Stats, usize, bool)> {
    let p = &s.per_trace;
    vec![
        ("Latency (s)", "latency_s", &p.latency_s, 3, false),
        ("TTFT (s)", "ttft_s", &p.ttft_s, 3, true),
        ("TTFAT (s)", "ttfat_s", &p.ttfat_s, 3, true),
        ("Decode TPS (tok/s)", "decode_tps", &p.decode_tps, 2, true),
        (
            "Decode TPOT (ms/tok)",
            "decode_tpot_ms",
            &p.decode_tpot_ms,
            2,
            true,
        ),
        ("ITL (ms)", "itl_ms", &p.itl_ms, 2, true),
        (
            "Cache hit rate (%)",
            "cache_hit_rate_pct",
            &p.cache_hit_rate_pct,
            1,
            false,
        ),
        (
            "Eligible cache hit rate (%)",
            "eligible_cache_hit_rate_pct",
            &p.eligible_cache_hit_rate_pct,
            1,
            false,
        ),
        (
            "Output tokens/turn",
            "output_tokens_per_turn",
            &p.output_tokens_per_turn,
            1,
            false,
        ),
        (
            "Output tokens/trace",
            "output_tokens_per_trace",
            &p.output_tokens_per_trace,
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

fn rate_columns(s: &Summary) -> Vec<(&'static str, &'static str, Rates)> {
    let mut cols = vec![
        ("Overall", "", s.overall),
        ("Last 30s Window", "last_30s_window_", s.last_30s_window),
        ("Steady State", "steady_state_", s.steady_state),
    ];
    if let Some(g) = s.steady_state_per_gpu {
        cols.push(("Steady State / GPU", "steady_state_per_gpu_", g));
    }
    cols
}

fn f(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

/// One named figure of a run, with the decimals it is printed with.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Name, as in the `benchmark complete` line and the results file.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Decimals when printed (0 for counts).
    pub decimals: usize,
}

/// Every figure of the `benchmark complete` line, in its order.
pub fn figures(s: &Summary) -> Vec<Figure> {
    let mut v = Vec::new();
    let mut push = |name: String, value: f64, decimals: usize| {
        v.push(Figure {
            name,
            value,
            decimals,
        })
    };
    let count = |n: u64| n as f64;
    push("completed_requests".into(), count(s.completed_requests), 0);
    push("failed_requests".into(), count(s.failed_requests), 0);
    push("cancelled_traces".into(), count(s.cancelled_traces), 0);
    push("http_requests".into(), count(s.http_requests), 0);
    push("wall_time_s".into(), s.wall_time_s, 2);
    push("trace_per_s".into(), s.trace_per_s, 4);
    for (_, prefix, rates) in rate_columns(s) {
        for (_, suffix, get) in RATE_ROWS {
            push(format!("{prefix}{suffix}"), get(&rates), 2);
        }
    }
    for (_, key, stats, decimals, streaming_only) in per_trace_columns(s) {
        if streaming_only && !s.stream {
            continue;
        }
        for (row, x) in stats.rows() {
            push(format!("{key}_{row}"), x, decimals.max(3));
        }
    }
    push(
        "prompt_token_mismatches".into(),
        count(s.prompt_token_mismatches),
        0,
    );
    push(
        "requests_without_usage".into(),
        count(s.requests_without_usage),
        0,
    );
    push("short_completions".into(), count(s.short_completions), 0);
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

/// The `benchmark complete` line's `key=value` pairs.
pub fn complete_pairs(s: &Summary) -> Vec<(String, String)> {
    figures(s)
        .into_iter()
        .map(|fig| (fig.name, f(fig.value, fig.decimals)))
        .collect()
}

fn table(titles: Vec<String>) -> Table {
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
    t.set_titles(Row::new(titles.iter().map(|s| Cell::new(s)).collect()));
    t
}

/// The per-trace table, the workload table and (if any) the failures table.
pub fn tables(s: &Summary) -> String {
    let mut out = String::new();
    let cols = per_trace_columns(s);
    let mut t = table(
        std::iter::once("Metric".to_string())
            .chain(cols.iter().map(|c| c.0.to_string()))
            .collect(),
    );
    for i in 0..7 {
        let name = Stats::default().rows()[i].0;
        let mut cells = vec![Cell::new(name)];
        for (_, _, stats, decimals, streaming_only) in &cols {
            let text = if *streaming_only && !s.stream {
                "-".to_string()
            } else {
                f(stats.rows()[i].1, *decimals)
            };
            cells.push(Cell::new_align(&text, format::Alignment::RIGHT));
        }
        t.add_row(Row::new(cells));
    }
    out.push_str("Per-trace metrics\n");
    out.push_str(&t.to_string());

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
    );
    for (title, _, get) in RATE_ROWS {
        let mut cells = vec![Cell::new(title)];
        for (_, _, rates) in &rcols {
            cells.push(Cell::new_align(&f(get(rates), 2), format::Alignment::RIGHT));
        }
        t.add_row(Row::new(cells));
    }
    out.push_str(&t.to_string());

    if !s.failures.is_empty() {
        let mut t = table(vec![
            "Kind".into(),
            "Failed traces".into(),
            "Retried attempts".into(),
            "Example".into(),
        ]);
        for (kind, c) in &s.failures {
            t.add_row(Row::new(vec![
                Cell::new(kind),
                Cell::new_align(&c.traces.to_string(), format::Alignment::RIGHT),
                Cell::new_align(&c.retried_attempts.to_string(), format::Alignment::RIGHT),
                Cell::new(
                    &c.examples
                        .first()
                        .map(|e| e.chars().take(80).collect::<String>())
                        .unwrap_or_default(),
                ),
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

/// `value (+x.y%)` relative to `base`; `n/a` when either is missing.
fn relative(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b != 0.0 => format!("{} ({:+.1}%)", short(v), 100.0 * (v - b) / b),
        (Some(v), Some(_)) => format!("{} (n/a)", short(v)),
        (Some(v), None) => short(v),
        (None, _) => "-".to_string(),
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

/// `trie compare`: the headline figures of each run side by side, each
/// after the first with its change relative to the first.
pub fn compare(runs: &[(String, &std::collections::BTreeMap<String, f64>)]) -> String {
    let mut t = table(
        std::iter::once("Metric".to_string())
            .chain(runs.iter().map(|(name, _)| name.clone()))
            .collect(),
    );
    for name in HEADLINE {
        let base = runs.first().and_then(|(_, f)| f.get(*name).copied());
        if runs.iter().all(|(_, f)| !f.contains_key(*name)) {
            continue;
        }
        let mut cells = vec![Cell::new(name)];
        for (i, (_, f)) in runs.iter().enumerate() {
            let v = f.get(*name).copied();
            let text = if i == 0 {
                v.map(short).unwrap_or_else(|| "-".into())
            } else {
                relative(v, base)
            };
            cells.push(Cell::new_align(&text, format::Alignment::RIGHT));
        }
        t.add_row(Row::new(cells));
    }
    t.to_string()
}

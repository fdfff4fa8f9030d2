//! Charts drawn by trie itself: SVG line charts (pure rendering) and one
//! self-contained HTML report (inline SVG and CSS; nothing is fetched, it
//! opens offline). For a sweep: throughput (total and per GPU) against
//! load, TTFT / TTFAT / latency p50 and p99 against load with the SLO
//! thresholds drawn across, and per-agent decode speed against throughput
//! per GPU (the Pareto view); for a run: its token curve and TTFT over time.
//!
//! Hand-written rather than a chart crate: the charts are a few lines on
//! linear axes, and the Rust chart crates need a font backend (bundled
//! fonts or system font lookup) to lay out text, which would weigh more
//! than this file and make a static binary depend on fonts.

use std::fmt::Write as _;
use std::path::Path;

use crate::output::results::Results;
use crate::output::sweep::SweepResults;

/// One line (or scatter) of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Draw markers only, no line.
    pub scatter: bool,
    /// A label beside each point (the Pareto view's loads), when given.
    pub labels: Vec<String>,
}

/// A horizontal reference line (an SLO threshold).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// Its y value.
    pub y: f64,
    /// Its label.
    pub label: String,
}

/// A chart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    /// File stem and anchor (`throughput`).
    pub name: String,
    /// Title above the chart.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The data.
    pub series: Vec<Series>,
    /// SLO thresholds drawn across.
    pub thresholds: Vec<Threshold>,
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Line colours (colour-blind safe, Okabe–Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Escape text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About `n` round tick values covering `[lo, hi]`.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut v = Vec::new();
    let mut x = first;
    while x <= hi + step * 1e-9 && v.len() < 50 {
        v.push(if x.abs() < step * 1e-9 { 0.0 } else { x });
        x += step;
    }
    v
}

fn label(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x.abs() >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}").trim_end_matches('0').to_string()
    }
}

/// The chart as an SVG document.
pub fn svg(c: &Chart) -> String {
    let pts = c
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for t in &c.thresholds {
        y1 = y1.max(t.y);
        y0 = y0.min(t.y);
    }
    // Nothing to draw, or a range no axis can show (values near f64::MAX).
    let empty = x0 > x1 || !(x1 - x0).is_finite() || !(y1 - y0).is_finite();
    if empty {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let y1 = y1 * 1.05;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="12" role="img" aria-label="{t}"><rect width="{W}" height="{H}" fill="#fff"/><text x="{cx}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{t}</text>"##,
        t = escape(&c.title),
        cx = W / 2.0
    );
    for t in ticks(y0, y1, 5) {
        let y = sy(t);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            label(t)
        );
    }
    for t in ticks(x0, x1, 6) {
        let x = sx(t);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            label(t)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        H - 10.0,
        escape(&c.x_label),
        TOP + ph / 2.0,
        escape(&c.y_label)
    );
    if empty {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    for t in &c.thresholds {
        let y = sy(t.y);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c00" stroke-dasharray="6 4" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" fill="#c00" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT + pw - 4.0,
            y - 4.0,
            escape(&t.label)
        );
    }
    for (i, series) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if !series.scatter && pts.len() > 1 {
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
                path.join(" ")
            );
        }
        for (&(x, y), l) in series.points.iter().zip(&series.labels) {
            if x.is_finite() && y.is_finite() {
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#333">{}</text>"##,
                    sx(x) + 5.0,
                    sy(y) - 5.0,
                    escape(l)
                );
            }
        }
        if series.scatter || pts.len() <= 64 {
            for &(x, y) in &pts {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{colour}"/>"##,
                    sx(x),
                    sy(y),
                    if series.scatter { 2.0 } else { 3.0 }
                );
            }
        }
        let ly = TOP + 14.0 + 18.0 * i as f64;
        let lx = LEFT + pw + 10.0;
        let _ = write!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            ly - 6.0,
            lx + 20.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The value of figure `name` at each point (its mean over the trials).
fn by_point(doc: &SweepResults, name: &str, scale: f64) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = doc
        .points
        .iter()
        .filter_map(|p| {
            let y = p.figures.get(name).copied().flatten()?.mean;
            Some((p.load.value(), y * scale))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// SLO thresholds of `metric` (per-trace, or `req.` when `per_request`).
fn thresholds(doc: &SweepResults, metric: &str, per_request: bool) -> Vec<Threshold> {
    doc.plan
        .slo
        .iter()
        .filter_map(|text| crate::record::slo::parse(text).ok()?.into_iter().next())
        .filter(|s| s.metric == metric && s.per_request == per_request)
        .map(|s| Threshold {
            y: s.value,
            label: format!("SLO {}", s.text.split_once(':').map_or("", |x| x.1))
                .replace("<=", "≤")
                .replace(">=", "≥"),
        })
        .collect()
}

/// The charts of a sweep.
pub fn sweep_charts(doc: &SweepResults) -> Vec<Chart> {
    let x_label = if doc.points.iter().any(|p| p.load.concurrency.is_some()) {
        "concurrency (agents in flight)"
    } else {
        "arrival rate (traces/s)"
    };
    let gpus = doc.config.num_gpus;
    let mut throughput = vec![Series {
        name: "total".into(),
        points: by_point(doc, "steady_state_completion_tok_per_s", 1.0),
        scatter: false,
        labels: Vec::new(),
    }];
    if let Some(n) = gpus.filter(|n| *n > 1) {
        throughput.push(Series {
            name: format!("per GPU (÷{n})"),
            points: by_point(doc, "steady_state_completion_tok_per_s", 1.0 / n as f64),
            scatter: false,
            labels: Vec::new(),
        });
    }
    let mut charts = vec![Chart {
        name: "throughput".into(),
        title: "Throughput".into(),
        x_label: x_label.into(),
        y_label: "steady-state completion tok/s".into(),
        series: throughput,
        thresholds: Vec::new(),
    }];
    for (key, title) in [
        ("ttft_s", "TTFT"),
        ("ttfat_s", "Time to first answer token"),
        ("latency_s", "Trace latency"),
    ] {
        // Per-trace charts carry per-trace thresholds only (req.latency_s
        // is a request's, far below a trace's).
        let th = thresholds(doc, key, false);
        charts.push(Chart {
            name: key.trim_end_matches("_s").into(),
            title: format!("{title} (per trace)"),
            x_label: x_label.into(),
            y_label: "seconds".into(),
            series: ["p50", "p90", "p99"]
                .iter()
                .map(|q| Series {
                    name: q.to_string(),
                    points: by_point(doc, &format!("{key}_{q}"), 1.0),
                    scatter: false,
                    labels: Vec::new(),
                })
                .collect(),
            thresholds: th,
        });
    }
    // Pareto: what each agent sees against what each GPU delivers.
    let per_gpu = 1.0 / gpus.unwrap_or(1) as f64;
    // In load order: the path the engine takes as load grows.
    let mut by_load: Vec<&crate::output::sweep::PointSummary> = doc.points.iter().collect();
    by_load.sort_by(|a, b| a.load.value().total_cmp(&b.load.value()));
    let (pareto, pareto_labels): (Vec<(f64, f64)>, Vec<String>) = by_load
        .iter()
        .filter_map(|p| {
            let tput = p
                .figures
                .get("steady_state_completion_tok_per_s")
                .copied()
                .flatten()?
                .mean;
            let speed = p.figures.get("decode_tps_mean").copied().flatten()?.mean;
            Some(((tput * per_gpu, speed), label(p.load.value())))
        })
        .unzip();
    charts.push(Chart {
        name: "pareto".into(),
        title: "Per-agent decode speed vs throughput".into(),
        x_label: if gpus.is_some() {
            "completion tok/s per GPU"
        } else {
            "completion tok/s"
        }
        .into(),
        y_label: "decode tok/s per agent (mean)".into(),
        series: vec![Series {
            name: "load points".into(),
            points: pareto,
            scatter: false,
            labels: pareto_labels,
        }],
        thresholds: thresholds(doc, "decode_tps", false),
    });
    // Each point's token curve (its first trial).
    let curves = doc
        .runs
        .iter()
        .filter(|r| r.trial == 0)
        .map(|r| Series {
            name: r.load.label(),
            points: thin(
                r.results
                    .summary
                    .curve
                    .iter()
                    .map(|c| (c.t_s, c.completion as f64))
                    .collect(),
            ),
            scatter: false,
            labels: Vec::new(),
        })
        .collect();
    charts.push(Chart {
        name: "curves".into(),
        title: "Completion tokens over time (trial 1 of each point)".into(),
        x_label: "seconds since the run started".into(),
        y_label: "cumulative completion tokens".into(),
        series: curves,
        thresholds: Vec::new(),
    });
    charts
}

/// At most 500 points of a long curve (every k-th, and the last).
fn thin(v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let k = v.len().div_ceil(500).max(1);
    let last = v.last().copied();
    let mut out: Vec<(f64, f64)> = v.into_iter().step_by(k).collect();
    if let Some(l) = last
        && out.last() != Some(&l)
    {
        out.push(l);
    }
    out
}

/// The charts of one run: its token curve and TTFT over time.
pub fn run_charts(r: &Results) -> Vec<Chart> {
    let c = &r.summary.curve;
    let curve = |name: &str, f: &dyn Fn(&crate::record::metrics::CurvePoint) -> u64| Series {
        name: name.into(),
        points: thin(c.iter().map(|p| (p.t_s, f(p) as f64)).collect()),
        scatter: false,
        labels: Vec::new(),
    };
    let ttft: Vec<(f64, f64)> = r
        .records
        .iter()
        .flat_map(|rec| rec.requests.iter())
        .filter_map(|q| Some((q.start_s, q.ttft_s?)))
        .collect();
    vec![
        Chart {
            name: "tokens".into(),
            title: "Token curve".into(),
            x_label: "seconds since the run started".into(),
            y_label: "cumulative tokens".into(),
            series: vec![
                curve("prompt", &|p| p.prompt),
                curve("cached prompt", &|p| p.cached),
                curve("uncached prompt", &|p| p.uncached),
                curve("completion", &|p| p.completion),
            ],
            thresholds: Vec::new(),
        },
        Chart {
            name: "ttft_over_time".into(),
            title: "TTFT of each request over time".into(),
            x_label: "send time, seconds since the run started".into(),
            y_label: "TTFT (s)".into(),
            series: vec![Series {
                name: "request".into(),
                points: thin(ttft),
                scatter: true,
                labels: Vec::new(),
            }],
            thresholds: Vec::new(),
        },
    ]
}

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.pass{color:#070;font-weight:bold}.fail{color:#b00;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #ddd}.note{color:#555;font-size:13px}";

fn cell(x: Option<crate::record::stats::Interval>, d: usize) -> String {
    escape(&crate::record::stats::Interval::cell(x, d, true))
}

/// The HTML report of a sweep: its table and every chart, inline.
pub fn sweep_html(doc: &SweepResults) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>trie {kind}: {model}</title><style>{CSS}</style></head><body><h1>trie {kind} — {model}</h1><p class=\"note\">{endpoint} · workload {workload} · {n} runs · started {at} · trie {v}{interrupted}</p>",
        kind = escape(&doc.kind),
        model = escape(&doc.config.model),
        endpoint = escape(&doc.config.endpoint),
        workload = escape(&doc.config.workload),
        n = doc.runs.len(),
        at = escape(&doc.started_at),
        v = escape(&doc.trie_version),
        interrupted = if doc.interrupted {
            " · <b>interrupted</b>"
        } else {
            ""
        },
    );
    if let Some(c) = &doc.capacity {
        let _ = write!(
            h,
            "<h2>Capacity</h2><p><b>{}</b> ({}){}{}</p><p class=\"note\">{}</p>",
            c.capacity.map(label).unwrap_or_else(|| "none".into()),
            escape(&c.searched),
            c.capacity_per_gpu
                .map(|x| format!(" · <b>{x:.2}</b> per GPU"))
                .unwrap_or_default(),
            if c.at_bound {
                " · at the search's bound"
            } else {
                ""
            },
            escape(&c.rule)
        );
    }
    if !doc.plan.slo.is_empty() {
        let _ = write!(
            h,
            "<p>SLO: <code>{}</code></p>",
            escape(&doc.plan.slo.join(", "))
        );
    }
    h.push_str("<h2>Points</h2><table><tr><th>point</th><th>load</th><th>trials</th><th>completion tok/s (steady)</th><th>trace/s</th><th>TTFAT p90 (s)</th><th>decode tok/s</th><th>goodput trace/s</th><th>SLO</th></tr>");
    for p in &doc.points {
        let f = |n: &str| p.figures.get(n).copied().flatten();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.point + 1,
            escape(&p.load.label()),
            p.trials,
            cell(f("steady_state_completion_tok_per_s"), 1),
            cell(f("trace_per_s"), 3),
            cell(f("ttfat_s_p90"), 3),
            cell(f("decode_tps_mean"), 1),
            cell(p.goodput_trace_per_s, 3),
            match p.pass {
                Some(true) => "<span class=\"pass\">pass</span>",
                Some(false) => "<span class=\"fail\">fail</span>",
                None => "–",
            }
        );
    }
    h.push_str("</table><h2>Charts</h2><div class=\"charts\">");
    for c in sweep_charts(doc) {
        h.push_str(&svg(&c));
    }
    h.push_str("</div></body></html>\n");
    h
}

/// The HTML report of one run.
pub fn run_html(r: &Results) -> String {
    let s = &r.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>trie run: {m}</title><style>{CSS}</style></head><body><h1>trie run — {m}</h1><p class=\"note\">{e} · workload {w} · started {at} · trie {v}</p><pre>{t}</pre><h2>Charts</h2><div class=\"charts\">",
        m = escape(&s.model),
        e = escape(&s.endpoint),
        w = escape(&s.workload),
        at = escape(&r.started_at),
        v = escape(&r.trie_version),
        t = escape(&crate::output::report::tables(s)),
    );
    for c in run_charts(r) {
        h.push_str(&svg(&c));
    }
    h.push_str("</div></body></html>\n");
    h
}

/// Write `files` (name, content) into `dir`, created if missing; the errors.
fn write_all(dir: &Path, render: impl FnOnce() -> Vec<(String, String)>) -> Vec<String> {
    // A bug drawing a chart (a panic) costs the charts, not the run's files.
    let files = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)) {
        Ok(files) => files,
        Err(panic) => {
            return vec![format!(
                "charts: internal error (a bug in trie) drawing them: {}",
                crate::error::panic_message(&panic)
            )];
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return vec![format!("charts: cannot create {} ({e})", dir.display())];
    }
    files
        .into_iter()
        .filter_map(|(name, text)| {
            let p = dir.join(&name);
            crate::output::files::write_atomic(&p, text.as_bytes())
                .err()
                .map(|e| format!("charts: cannot write {} ({e})", p.display()))
        })
        .collect()
}

/// Write a sweep's SVG charts and `report.html` into `dir`.
pub fn write_sweep(dir: &Path, doc: &SweepResults) -> Vec<String> {
    write_all(dir, || {
        let mut files = svg_files(&sweep_charts(doc));
        files.push(("report.html".into(), sweep_html(doc)));
        files
    })
}

/// Write a run's SVG charts and `report.html` into `dir`.
pub fn write_run(dir: &Path, r: &Results) -> Vec<String> {
    write_all(dir, || {
        let mut files = svg_files(&run_charts(r));
        files.push(("report.html".into(), run_html(r)));
        files
    })
}

/// Each chart as (`NAME.svg`, its SVG).
fn svg_files(charts: &[Chart]) -> Vec<(String, String)> {
    charts
        .iter()
        .map(|c| (format!("{}.svg", c.name), svg(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 1.0, 4), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(ticks(3.0, 3.0, 5), vec![3.0]);
        let t = ticks(1.0, 1000.0, 6);
        assert!(t.first().unwrap() >= &1.0 && t.last().unwrap() <= &1000.0 && t.len() <= 8);
    }

    #[test]
    fn a_chart_draws_its_series_thresholds_and_escapes_text() {
        let c = Chart {
            name: "x".into(),
            title: "A <b> & \"c\"".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s1".into(),
                points: vec![(1.0, 1.0), (2.0, 4.0), (4.0, f64::NAN), (8.0, 2.0)],
                scatter: false,
                labels: Vec::new(),
            }],
            thresholds: vec![Threshold {
                y: 3.0,
                label: "SLO p90≤3".into(),
            }],
        };
        let s = svg(&c);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.contains("A &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(!s.contains("<b>"));
        assert_eq!(s.matches("<polyline").count(), 1);
        assert_eq!(s.matches("<circle").count(), 3, "the NaN point is left out");
        assert!(s.contains("SLO p90≤3") && s.contains("stroke-dasharray"));
        assert!(!s.contains("NaN"));
        // x from 1 to 8 maps onto the plot's width: the first point on the left edge.
        assert!(s.contains(&format!("points=\"{LEFT:.1},")));
        let empty = svg(&Chart::default());
        assert!(empty.contains("no data"));
    }
}

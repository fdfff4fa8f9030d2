//! Service-level objectives, pure: the `--slo` grammar, each condition's
//! measured value and verdict for one run, the share of traces meeting every
//! per-trace condition, and goodput.
//!
//! Grammar: comma-separated conditions `METRIC:STAT<=VALUE` or
//! `METRIC:STAT>=VALUE`. METRIC is a per-trace column (`ttft_s`, `ttfat_s`,
//! `latency_s`, `decode_tps`, `decode_tpot_ms`, `itl_ms`,
//! `cache_hit_rate_pct`, `eligible_cache_hit_rate_pct`,
//! `output_tokens_per_trace`) or a per-request one prefixed `req.`
//! (`req.ttft_s`, `req.itl_ms`, `req.decode_tps`, `req.latency_s`,
//! `req.prompt_tokens`, `req.cached_tokens`, `req.completion_tokens`); STAT
//! is `mean`, `min`, `max` or `pNN` (any percentile, `p99.9` too, numpy's
//! linear method). A condition without a value (nothing measured) fails.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::metrics::percentile;
use crate::record::records::RequestRow;
use crate::record::summary::TraceRecord;

/// Per-trace metrics `--slo` accepts.
pub const TRACE_METRICS: &[&str] = &[
    "ttft_s",
    "ttfat_s",
    "latency_s",
    "decode_tps",
    "decode_tpot_ms",
    "itl_ms",
    "cache_hit_rate_pct",
    "eligible_cache_hit_rate_pct",
    "output_tokens_per_trace",
];

/// Per-request metrics `--slo` accepts (after `req.`).
pub const REQUEST_METRICS: &[&str] = &[
    "ttft_s",
    "itl_ms",
    "decode_tps",
    "latency_s",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
];

/// A statistic over a population.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Percentile in [0, 100] (`min` is 0, `max` is 100).
    Percentile(f64),
}

/// Which side of the threshold passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `<=`: at most.
    #[serde(rename = "<=")]
    AtMost,
    /// `>=`: at least.
    #[serde(rename = ">=")]
    AtLeast,
}

impl Op {
    /// Whether `value` is on the passing side of `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::AtMost => value <= threshold,
            Op::AtLeast => value >= threshold,
        }
    }
}

/// One condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// As written (`ttfat_s:p90<=8`).
    pub text: String,
    /// The metric's column name (without `req.`).
    pub metric: String,
    /// Over requests (`req.`) rather than traces.
    pub per_request: bool,
    /// The statistic.
    pub stat: Stat,
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub value: f64,
}

/// Parse `--slo`'s value.
pub fn parse(text: &str) -> Result<Vec<Slo>> {
    let bad = |part: &str, why: &str| {
        Error::usage(format!(
            "--slo '{part}': {why}; write METRIC:STAT<=VALUE or METRIC:STAT>=VALUE, e.g. ttfat_s:p90<=8,decode_tps:p10>=20,req.ttft_s:p99<=2"
        ))
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(text, "an empty condition"));
        }
        let (lhs, op, rhs) = if let Some((l, r)) = part.split_once("<=") {
            (l, Op::AtMost, r)
        } else if let Some((l, r)) = part.split_once(">=") {
            (l, Op::AtLeast, r)
        } else {
            return Err(bad(part, "no <= or >="));
        };
        let (metric, stat) = lhs
            .trim()
            .split_once(':')
            .ok_or_else(|| bad(part, "no :STAT after the metric"))?;
        let (per_request, metric) = match metric.strip_prefix("req.") {
            Some(m) => (true, m),
            None => (false, metric),
        };
        let known = if per_request {
            REQUEST_METRICS
        } else {
            TRACE_METRICS
        };
        if !known.contains(&metric) {
            return Err(bad(
                part,
                &format!(
                    "unknown {} metric '{metric}' (known: {})",
                    if per_request {
                        "per-request"
                    } else {
                        "per-trace"
                    },
                    known.join(", ")
                ),
            ));
        }
        let stat = match stat {
            "mean" => Stat::Mean,
            "min" => Stat::Percentile(0.0),
            "max" => Stat::Percentile(100.0),
            p => match p.strip_prefix('p').and_then(|q| q.parse::<f64>().ok()) {
                Some(q) if (0.0..=100.0).contains(&q) => Stat::Percentile(q),
                _ => return Err(bad(part, &format!("'{p}' is not mean, min, max or pNN"))),
            },
        };
        let value: f64 = rhs
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| bad(part, &format!("'{}' is not a number", rhs.trim())))?;
        out.push(Slo {
            text: part.to_string(),
            metric: metric.to_string(),
            per_request,
            stat,
            op,
            value,
        });
    }
    Ok(out)
}

/// A per-trace column by name.
pub fn trace_value(t: &TraceRecord, metric: &str) -> Option<f64> {
    match metric {
        "ttft_s" => t.ttft_s,
        "ttfat_s" => t.ttfat_s,
        "latency_s" => Some(t.latency_s),
        "decode_tps" => t.decode_tps,
        "decode_tpot_ms" => t.decode_tpot_ms,
        "itl_ms" => t.itl_ms,
        "cache_hit_rate_pct" => t.cache_hit_rate_pct,
        "eligible_cache_hit_rate_pct" => t.eligible_cache_hit_rate_pct,
        "output_tokens_per_trace" => Some(t.output_tokens_per_trace as f64),
        _ => None,
    }
}

/// A per-request column by name.
pub fn request_value(r: &RequestRow, metric: &str) -> Option<f64> {
    match metric {
        "ttft_s" => r.ttft_s,
        "itl_ms" => r.itl_ms(),
        "decode_tps" => r.decode_tps(),
        "latency_s" => Some(r.latency_s),
        "prompt_tokens" => Some(r.prompt_tokens() as f64),
        "cached_tokens" => r.reported_cached().map(|c| c as f64),
        "completion_tokens" => Some(r.completion_tokens() as f64),
        _ => None,
    }
}

/// `stat` of `values` (`None` without values).
pub fn statistic(mut values: Vec<f64>, stat: Stat) -> Option<f64> {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return None;
    }
    Some(match stat {
        Stat::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Stat::Percentile(q) => {
            values.sort_by(f64::total_cmp);
            percentile(&values, q)
        }
    })
}

/// One condition's outcome in one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The condition as written.
    pub slo: String,
    /// Its measured value (`null`: nothing measured, which fails).
    pub value: Option<f64>,
    /// Whether it holds.
    pub pass: bool,
}

/// Every condition of one run, and goodput.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloReport {
    /// One verdict per condition, in order.
    pub verdicts: Vec<Verdict>,
    /// Every condition holds.
    pub pass: bool,
    /// Completed traces each of whose own values meets every per-trace
    /// condition, percent of completed traces (`null`: none completed).
    pub traces_meeting_pct: Option<f64>,
    /// Those traces per second of the measured window.
    pub goodput_trace_per_s: Option<f64>,
    /// Their completion tokens per second of the measured window.
    pub goodput_completion_tok_per_s: Option<f64>,
}

/// The value of `slo` in a run of `traces` and `requests`.
pub fn measure(slo: &Slo, traces: &[TraceRecord], requests: &[RequestRow]) -> Option<f64> {
    let values: Vec<f64> = if slo.per_request {
        requests
            .iter()
            .filter_map(|r| request_value(r, &slo.metric))
            .collect()
    } else {
        traces
            .iter()
            .filter_map(|t| trace_value(t, &slo.metric))
            .collect()
    };
    statistic(values, slo.stat)
}

/// Judge `slos` on one run (`wall_s`: its measured window).
pub fn judge(
    slos: &[Slo],
    traces: &[TraceRecord],
    requests: &[RequestRow],
    wall_s: f64,
) -> SloReport {
    let verdicts: Vec<Verdict> = slos
        .iter()
        .map(|s| {
            let value = measure(s, traces, requests);
            Verdict {
                slo: s.text.clone(),
                value,
                pass: value.is_some_and(|v| s.op.holds(v, s.value)),
            }
        })
        .collect();
    let meets = |t: &TraceRecord| {
        slos.iter()
            .filter(|s| !s.per_request)
            .all(|s| trace_value(t, &s.metric).is_some_and(|v| s.op.holds(v, s.value)))
    };
    let good: Vec<&TraceRecord> = traces.iter().filter(|t| meets(t)).collect();
    let per_s = |x: f64| (wall_s > 0.0).then(|| x / wall_s);
    SloReport {
        pass: verdicts.iter().all(|v| v.pass),
        verdicts,
        traces_meeting_pct: (!traces.is_empty())
            .then(|| 100.0 * good.len() as f64 / traces.len() as f64),
        goodput_trace_per_s: per_s(good.len() as f64),
        goodput_completion_tok_per_s: per_s(
            good.iter()
                .map(|t| t.output_tokens_per_trace as f64)
                .sum::<f64>()
                + 0.0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::sse::Usage;

    fn trace(ttfat: f64, decode: Option<f64>, out: u64) -> TraceRecord {
        TraceRecord {
            ttfat_s: Some(ttfat),
            decode_tps: decode,
            output_tokens_per_trace: out,
            latency_s: ttfat * 2.0,
            ..TraceRecord::default()
        }
    }

    #[test]
    fn the_grammar() {
        let s = parse("ttfat_s:p90<=8, decode_tps:p10>=20,req.ttft_s:p99.9<=2,latency_s:mean<=30,itl_ms:max<=50").unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(
            (s[0].metric.as_str(), s[0].stat, s[0].op, s[0].value),
            ("ttfat_s", Stat::Percentile(90.0), Op::AtMost, 8.0)
        );
        assert_eq!(
            (s[1].op, s[1].value, s[1].text.as_str()),
            (Op::AtLeast, 20.0, "decode_tps:p10>=20")
        );
        assert!(s[2].per_request && s[2].stat == Stat::Percentile(99.9));
        assert_eq!(s[3].stat, Stat::Mean);
        assert_eq!(s[4].stat, Stat::Percentile(100.0));
        for (bad, says) in [
            ("ttfat_s:p90<8", "no <= or >="),
            ("ttfat_s<=8", "no :STAT"),
            ("speed:p90<=8", "unknown per-trace metric 'speed'"),
            ("req.ttfat_s:p90<=8", "unknown per-request metric 'ttfat_s'"),
            ("ttfat_s:p101<=8", "'p101' is not mean"),
            ("ttfat_s:median<=8", "'median' is not mean"),
            ("ttfat_s:p90<=fast", "'fast' is not a number"),
            ("ttfat_s:p90<=inf", "'inf' is not a number"),
            ("ttfat_s:p90<=8,", "an empty condition"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("METRIC:STAT<=VALUE"), "{e}");
        }
    }

    #[test]
    fn verdicts_and_goodput_on_fixed_vectors() {
        // ttfat 1..=10 s; decode 40 for the first five, 10 for the rest, and
        // one trace without decode speed (fails every decode condition).
        let mut traces: Vec<TraceRecord> = (1..=10)
            .map(|i| trace(i as f64, Some(if i <= 5 { 40.0 } else { 10.0 }), 100))
            .collect();
        traces[9].decode_tps = None;
        let reqs = vec![
            RequestRow {
                ttft_s: Some(0.5),
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    cached_tokens: None,
                }),
                ..RequestRow::default()
            },
            RequestRow {
                ttft_s: Some(1.5),
                ..RequestRow::default()
            },
        ];
        let slos = parse(
            "ttfat_s:p90<=9.5,decode_tps:p10>=20,req.ttft_s:p50<=1,req.cached_tokens:mean<=5",
        )
        .unwrap();
        let r = judge(&slos, &traces, &reqs, 20.0);
        // numpy.percentile(range(1, 11), 90) = 9.1
        assert!((r.verdicts[0].value.unwrap() - 9.1).abs() < 1e-12);
        assert!(r.verdicts[0].pass);
        // decode values: 40 x5, 10 x4 → p10 = 10
        assert_eq!(r.verdicts[1].value, Some(10.0));
        assert!(!r.verdicts[1].pass);
        assert_eq!(r.verdicts[2].value, Some(1.0));
        assert!(r.verdicts[2].pass, "at the threshold passes");
        assert_eq!(r.verdicts[3].value, None, "no cached tokens reported");
        assert!(!r.verdicts[3].pass, "a missing value fails");
        assert!(!r.pass);
        // Traces meeting both per-trace conditions: ttfat <= 9.5 and decode
        // >= 20 → traces 1..=5.
        assert_eq!(r.traces_meeting_pct, Some(50.0));
        assert_eq!(r.goodput_trace_per_s, Some(0.25));
        assert_eq!(r.goodput_completion_tok_per_s, Some(25.0));
        // No completed trace: no share, zero goodput over a real window.
        let none = judge(&slos, &[], &[], 20.0);
        assert_eq!(none.traces_meeting_pct, None);
        assert_eq!(none.goodput_trace_per_s, Some(0.0));
        assert!(none.verdicts.iter().all(|v| v.value.is_none() && !v.pass));
    }
}

//! Metric math, pure: percentiles (numpy's linear method), summary rows,
//! token-curve slopes, decode speed and inter-token latency.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Percentile `q` in [0, 100] of sorted `v` by linear interpolation between
/// closest ranks (numpy's default). `NaN` for an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = q / 100.0 * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// The rows of the per-trace table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Stats {
    /// Summary of `values` (NaNs ignored); `None` when there are none: an
    /// absent statistic, never zeros.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
        })
    }

    /// The row names, in table order.
    pub const ROWS: [&'static str; 7] = ["mean", "min", "p50", "p90", "p95", "p99", "max"];

    /// The rows with their names, in table order.
    pub fn rows(&self) -> [(&'static str, f64); 7] {
        [
            ("mean", self.mean),
            ("min", self.min),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p95", self.p95),
            ("p99", self.p99),
            ("max", self.max),
        ]
    }
}

/// One point of the cumulative token curve (workload accounting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Cumulative prompt tokens.
    pub prompt: u64,
    /// Cumulative cached prompt tokens.
    pub cached: u64,
    /// Cumulative uncached prompt tokens.
    pub uncached: u64,
    /// Cumulative completion tokens.
    pub completion: u64,
}

/// Token rates, tok/s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Total prompt tok/s.
    pub prompt_tok_per_s: f64,
    /// Cached prompt tok/s.
    pub cached_prompt_tok_per_s: f64,
    /// Uncached prompt tok/s.
    pub uncached_prompt_tok_per_s: f64,
    /// Completion tok/s.
    pub completion_tok_per_s: f64,
}

impl Rates {
    /// The rates from point `a` to point `b` over `dt` seconds (> 0).
    pub fn between(a: &CurvePoint, b: &CurvePoint, dt: f64) -> Rates {
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
        Rates {
            prompt_tok_per_s: per_s(a.prompt, b.prompt),
            cached_prompt_tok_per_s: per_s(a.cached, b.cached),
            uncached_prompt_tok_per_s: per_s(a.uncached, b.uncached),
            completion_tok_per_s: per_s(a.completion, b.completion),
        }
    }

    /// Every rate divided by `n`.
    pub fn per(&self, n: f64) -> Rates {
        Rates {
            prompt_tok_per_s: self.prompt_tok_per_s / n,
            cached_prompt_tok_per_s: self.cached_prompt_tok_per_s / n,
            uncached_prompt_tok_per_s: self.uncached_prompt_tok_per_s / n,
            completion_tok_per_s: self.completion_tok_per_s / n,
        }
    }
}

/// Totals over the wall time (`None` for a wall time of 0).
pub fn overall(totals: &CurvePoint, wall_s: f64) -> Option<Rates> {
    (wall_s > 0.0).then(|| Rates::between(&CurvePoint::default(), totals, wall_s))
}

/// Slope from the first point at or after `from_s` to the last point;
/// `None` when fewer than two points, or no time, lie between.
pub fn slope_from(points: &[CurvePoint], from_s: f64) -> Option<Rates> {
    let last = points.last()?;
    let first = points.iter().find(|p| p.t_s >= from_s)?;
    let dt = last.t_s - first.t_s;
    (dt > 0.0).then(|| Rates::between(first, last, dt))
}

/// `Last 30s Window`: slope over the last `window_s` of the curve.
pub fn last_window(points: &[CurvePoint], window_s: f64) -> Option<Rates> {
    slope_from(points, points.last()?.t_s - window_s)
}

/// `Steady State`: slope after the first 20 % of the curve's time.
pub fn steady_state(points: &[CurvePoint]) -> Option<Rates> {
    slope_from(points, 0.2 * points.last()?.t_s)
}

/// Decode tokens/s of one request: (completion − 1) / (latency − TTFT);
/// `None` (undefined) without streaming, with one token or less, or with no
/// time between the first chunk and the end.
pub fn decode_tps(completion_tokens: u64, latency_s: f64, ttft_s: Option<f64>) -> Option<f64> {
    let decode = latency_s - ttft_s?;
    (completion_tokens > 1 && decode > 0.0).then(|| (completion_tokens - 1) as f64 / decode)
}

/// Observed inter-token intervals of one stream: chunk `i > 0` carrying `k`
/// tokens spreads its gap to chunk `i − 1` over `k` intervals. Returns the sum
/// and the number of intervals.
pub fn itl(chunk_times: &[Duration], tokens_per_chunk: &[u64]) -> (Duration, u64) {
    let mut n = 0;
    for (i, k) in tokens_per_chunk.iter().enumerate().skip(1) {
        if i < chunk_times.len() {
            n += k.max(&1);
        }
    }
    let sum = match (chunk_times.first(), chunk_times.last()) {
        (Some(a), Some(b)) if chunk_times.len() > 1 => b.saturating_sub(*a),
        _ => Duration::ZERO,
    };
    (sum, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 95, 99]) = 3, 7.6, 8.8, 9.76
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        for (q, want) in [
            (50.0, 3.0),
            (90.0, 7.6),
            (95.0, 8.8),
            (99.0, 9.76),
            (0.0, 1.0),
            (100.0, 10.0),
        ] {
            assert!((percentile(&v, q) - want).abs() < 1e-12, "q={q}");
        }
        // numpy.percentile([0.5, 2.5], 90) = 2.3
        assert!((percentile(&[0.5, 2.5], 90.0) - 2.3).abs() < 1e-12);
        let s = Stats::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.mean, s.min, s.p50, s.max), (2.0, 1.0, 2.0, 3.0));
        // No values: absent, not zeros.
        assert_eq!(Stats::of([]), None);
        assert_eq!(Stats::of([f64::NAN]), None);
    }

    fn pt(t: f64, c: u64) -> CurvePoint {
        CurvePoint {
            t_s: t,
            prompt: 10 * c,
            cached: 8 * c,
            uncached: 2 * c,
            completion: c,
        }
    }

    #[test]
    fn slopes_on_fixed_curve() {
        // completion = 0 until t=10, then +100/s to t=100.
        let mut pts = vec![pt(1.0, 0), pt(5.0, 0)];
        pts.extend(
            (10..=100)
                .step_by(10)
                .map(|t| pt(t as f64, (t as u64 - 10) * 100)),
        );
        let steady = steady_state(&pts).unwrap(); // from the first point at or after 20 s
        assert!((steady.completion_tok_per_s - 100.0).abs() < 1e-9);
        assert!((steady.prompt_tok_per_s - 1000.0).abs() < 1e-9);
        let last = last_window(&pts, 30.0).unwrap(); // from 70 s to 100 s
        assert!((last.completion_tok_per_s - 100.0).abs() < 1e-9);
        let all = overall(pts.last().unwrap(), 120.0).unwrap();
        assert!((all.completion_tok_per_s - 9000.0 / 120.0).abs() < 1e-9);
        // One point, or none: no slope.
        assert_eq!(slope_from(&pts[..1], 0.0), None);
        assert_eq!(steady_state(&[]), None);
        assert_eq!(
            overall(&CurvePoint::default(), 10.0),
            Some(Rates::default())
        );
    }

    #[test]
    fn decode_and_itl() {
        let ms = Duration::from_millis;
        assert_eq!(decode_tps(11, 1.1, Some(0.1)), Some(10.0));
        assert_eq!(decode_tps(1, 1.1, Some(0.1)), None);
        assert_eq!(decode_tps(11, 0.1, Some(0.1)), None);
        assert_eq!(decode_tps(11, 1.1, None), None);
        // chunks at 0, 10, 40 ms carrying 1, 1, 3 tokens: 4 intervals over 40 ms
        assert_eq!(itl(&[ms(0), ms(10), ms(40)], &[1, 1, 3]), (ms(40), 4));
        assert_eq!(itl(&[ms(5)], &[1]), (Duration::ZERO, 0));
    }
}

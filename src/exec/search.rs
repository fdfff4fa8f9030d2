//! The capacity search, pure: which load to probe next, given the verdicts
//! so far. Exponential bracketing from the start (doubling while points
//! pass, halving down to `min` while they fail), then bisection between the
//! highest passing and the lowest failing load, until they are adjacent
//! (closed loop: ±1 concurrency) or within `precision_pct` percent of the
//! passing value.

use serde::{Deserialize, Serialize};

/// The search state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bisection {
    /// Loads are whole numbers (concurrency), not rates.
    pub whole: bool,
    /// The first load probed.
    pub start: f64,
    /// The lowest load probed (when the start fails).
    pub min: f64,
    /// The highest load probed.
    pub max: f64,
    /// Stop when the bracket is within this percent of the passing value.
    pub precision_pct: f64,
    /// Highest load that passed.
    pub pass: Option<f64>,
    /// Lowest load that failed.
    pub fail: Option<f64>,
}

impl Bisection {
    /// A search from `start` up to `max`.
    pub fn new(whole: bool, start: f64, min: f64, max: f64, precision_pct: f64) -> Bisection {
        Bisection {
            whole,
            start: start.min(max),
            min: min.min(start),
            max,
            precision_pct,
            pass: None,
            fail: None,
        }
    }

    /// The load to probe next; `None` when the search is over.
    pub fn next(&self) -> Option<f64> {
        match (self.pass, self.fail) {
            // Nothing yet: the start.
            (None, None) => Some(self.start),
            // Everything so far failed: halve, down to the minimum.
            (None, Some(f)) => {
                let next = if self.whole {
                    (f / 2.0).floor().max(self.min)
                } else {
                    f / 2.0
                };
                (next < f && next >= self.min).then_some(next)
            }
            // Everything so far passed: double, up to the bound.
            (Some(p), None) => (p < self.max).then(|| {
                let next = (p * 2.0).min(self.max);
                if self.whole { next.round() } else { next }
            }),
            (Some(p), Some(f)) => {
                let gap = f - p;
                let close = if self.whole {
                    gap <= 1.0 || gap <= p * self.precision_pct / 100.0
                } else {
                    gap <= p * self.precision_pct.max(1e-9) / 100.0
                };
                if close {
                    return None;
                }
                let mid = (p + f) / 2.0;
                Some(if self.whole { mid.floor() } else { mid })
            }
        }
    }

    /// Record the verdict of a probe at `load`.
    pub fn record(&mut self, load: f64, passed: bool) {
        if passed {
            self.pass = Some(self.pass.map_or(load, |p| p.max(load)));
        } else {
            self.fail = Some(self.fail.map_or(load, |f| f.min(load)));
        }
    }

    /// The answer: the highest passing load (`None`: none passed).
    pub fn capacity(&self) -> Option<f64> {
        self.pass
    }

    /// The answer is the search's bound (the true capacity may be higher).
    pub fn at_bound(&self) -> bool {
        self.pass == Some(self.max) && self.fail.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a search against a boundary: loads up to `boundary` pass.
    fn search(mut b: Bisection, passes: impl Fn(f64) -> bool) -> (Option<f64>, Vec<f64>) {
        let mut probes = Vec::new();
        while let Some(x) = b.next() {
            assert!(!probes.contains(&x), "probed {x} twice: {probes:?}");
            probes.push(x);
            b.record(x, passes(x));
            assert!(probes.len() <= 64);
        }
        (b.capacity(), probes)
    }

    #[test]
    fn finds_every_boundary_to_one_in_two_probes_per_doubling() {
        for boundary in 1..=1000u32 {
            let (cap, probes) = search(Bisection::new(true, 1.0, 1.0, 1024.0, 0.0), |x| {
                x <= boundary as f64
            });
            assert_eq!(cap, Some(boundary as f64), "{boundary}: {probes:?}");
            // k + 1 doublings to pass 2^k <= boundary, one failing probe,
            // then k halvings of the bracket.
            let k = boundary.ilog2() as usize;
            let most = 2 * k + 2;
            assert!(probes.len() <= most, "{boundary}: {} probes", probes.len());
            if boundary <= 32 {
                assert!(probes.len() <= 12, "{boundary}: {probes:?}");
            }
        }
        // 20: 1 2 4 8 16 32, then 24 20 22 21.
        let (_, probes) = search(Bisection::new(true, 1.0, 1.0, 1024.0, 0.0), |x| x <= 20.0);
        assert_eq!(
            probes,
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 24.0, 20.0, 22.0, 21.0]
        );
    }

    #[test]
    fn bounds_precision_and_open_loop() {
        // Nothing passes.
        assert_eq!(
            search(Bisection::new(true, 1.0, 1.0, 64.0, 0.0), |_| false),
            (None, vec![1.0])
        );
        // Everything passes: the bound, flagged.
        let mut b = Bisection::new(true, 1.0, 1.0, 48.0, 0.0);
        while let Some(x) = b.next() {
            b.record(x, true);
        }
        assert_eq!((b.capacity(), b.at_bound()), (Some(48.0), true));
        // 10 % precision stops early at large values.
        let (cap, probes) = search(Bisection::new(true, 1.0, 1.0, 4096.0, 10.0), |x| x <= 700.0);
        let cap = cap.unwrap();
        assert!((700.0 / 1.1..=700.0).contains(&cap), "{cap}");
        assert!(probes.len() <= 15, "{probes:?}");
        // Open loop: rates to 5 %.
        let (cap, _) = search(Bisection::new(false, 0.5, 0.5 / 16.0, 100.0, 5.0), |x| {
            x <= 7.3
        });
        let cap = cap.unwrap();
        assert!((7.3 / 1.05..=7.3).contains(&cap), "{cap}");
    }

    #[test]
    fn a_start_that_fails_searches_below_it() {
        // Starting at 32 with a boundary at 5: 32 fails, 16, 8 fail, 4
        // passes, then 6 fails, 5 passes.
        let (cap, probes) = search(Bisection::new(true, 32.0, 1.0, 1024.0, 0.0), |x| x <= 5.0);
        assert_eq!(cap, Some(5.0));
        assert_eq!(probes, [32.0, 16.0, 8.0, 4.0, 6.0, 5.0]);
        // Nothing passes: down to the minimum, then none.
        let (cap, probes) = search(Bisection::new(true, 8.0, 1.0, 1024.0, 0.0), |_| false);
        assert_eq!((cap, probes), (None, vec![8.0, 4.0, 2.0, 1.0]));
        // Rates halve down to their minimum.
        let (cap, probes) = search(Bisection::new(false, 4.0, 0.25, 64.0, 5.0), |_| false);
        assert_eq!((cap, probes), (None, vec![4.0, 2.0, 1.0, 0.5, 0.25]));
    }
}

//! Statistics over repeated runs (trials), pure: mean, sample standard
//! deviation, the Student-t confidence interval of the mean and the
//! coefficient of variation; the t quantile comes from the regularized
//! incomplete beta function (no table, any degrees of freedom).

use serde::{Deserialize, Serialize};

/// A figure over trials.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Trials that had the figure.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (`null` with one trial).
    pub sd: Option<f64>,
    /// Half-width of the confidence interval of the mean: t(1 − α/2, n − 1)
    /// · sd / √n (`null` with one trial).
    pub half_width: Option<f64>,
    /// Coefficient of variation, sd / |mean|, percent (`null` with one trial
    /// or a zero mean).
    pub cv_pct: Option<f64>,
}

impl Interval {
    /// The interval of `values` (NaNs ignored) at `confidence` (0.95 for
    /// 95 %); `None` without values.
    pub fn of(values: &[f64], confidence: f64) -> Option<Interval> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n == 0 {
            return None;
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        let half_width = sd
            .map(|sd| t_quantile(0.5 + confidence / 2.0, (n - 1) as f64) * sd / (n as f64).sqrt());
        // Values near f64's limits overflow the sums: no figure.
        if !mean.is_finite() || sd.is_some_and(|s| !s.is_finite()) {
            return None;
        }
        Some(Interval {
            n,
            mean,
            sd,
            half_width,
            cv_pct: sd.filter(|_| mean != 0.0).map(|sd| 100.0 * sd / mean.abs()),
        })
    }

    /// Lower bound (the mean itself with one trial).
    pub fn low(&self) -> f64 {
        self.mean - self.half_width.unwrap_or(0.0)
    }

    /// Upper bound (the mean itself with one trial).
    pub fn high(&self) -> f64 {
        self.mean + self.half_width.unwrap_or(0.0)
    }

    /// Whether the two intervals overlap: a difference between them is not
    /// significant at their confidence. Single trials (no interval) never
    /// prove a difference either.
    pub fn overlaps(&self, other: &Interval) -> bool {
        if self.half_width.is_none() || other.half_width.is_none() {
            return true;
        }
        self.low() <= other.high() && other.low() <= self.high()
    }

    /// `mean ± half-width (cv x %)`, or the mean alone with one trial;
    /// without the cv when `cv` is false (narrow tables).
    pub fn show(&self, decimals: usize, cv: bool) -> String {
        match (self.half_width, self.cv_pct.filter(|_| cv)) {
            (Some(h), Some(cv)) => {
                format!("{:.decimals$} ± {h:.decimals$} (cv {cv:.1}%)", self.mean)
            }
            (Some(h), None) => format!("{:.decimals$} ± {h:.decimals$}", self.mean),
            _ => format!("{:.decimals$}", self.mean),
        }
    }

    /// [`Interval::show`] of `i`, or the absent mark `–`.
    pub fn cell(i: Option<Interval>, decimals: usize, cv: bool) -> String {
        i.map_or_else(|| "–".to_string(), |i| i.show(decimals, cv))
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { 1.0 - tail } else { tail }
}

/// The `p` quantile of Student's t with `df` degrees of freedom (p in
/// (0, 1)), by bisection on [`t_cdf`].
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_cdf(hi, df) < p && hi < 1e12 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        // scipy.stats.t.ppf(0.975, df) and t.ppf(0.95, df).
        for (p, df, want) in [
            (0.975, 1.0, 12.706_204_736),
            (0.975, 2.0, 4.302_652_730),
            (0.975, 4.0, 2.776_445_105),
            (0.975, 9.0, 2.262_157_163),
            (0.975, 30.0, 2.042_272_456),
            (0.95, 5.0, 2.015_048_373),
            (0.995, 3.0, 5.840_909_310),
            (0.975, 1000.0, 1.962_339_095),
        ] {
            let got = t_quantile(p, df);
            assert!(
                (got - want).abs() < 1e-6,
                "t({p}, {df}) = {got}, want {want}"
            );
        }
        assert!((t_quantile(0.025, 4.0) + 2.776_445_105).abs() < 1e-6);
    }

    #[test]
    fn intervals_over_fixed_vectors() {
        // mean 12, sd 2 (sample), n 4: half-width 3.182446305 * 2 / 2.
        let i = Interval::of(&[10.0, 12.0, 14.0, 12.0], 0.95).unwrap();
        assert_eq!(i.n, 4);
        assert_eq!(i.mean, 12.0);
        assert!((i.sd.unwrap() - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let want = 3.182_446_305 * (8.0f64 / 3.0).sqrt() / 2.0;
        assert!((i.half_width.unwrap() - want).abs() < 1e-6);
        assert!((i.cv_pct.unwrap() - 100.0 * (8.0f64 / 3.0).sqrt() / 12.0).abs() < 1e-9);
        assert_eq!(i.show(1, true), format!("12.0 ± {want:.1} (cv 13.6%)"));
        assert_eq!(i.show(1, false), format!("12.0 ± {want:.1}"));
        assert_eq!(Interval::cell(None, 1, true), "–");
        // One trial: the mean, no interval; none: absent.
        let one = Interval::of(&[5.0], 0.95).unwrap();
        assert_eq!(
            (one.sd, one.half_width, one.low(), one.high()),
            (None, None, 5.0, 5.0)
        );
        assert_eq!(Interval::of(&[], 0.95), None);
        assert_eq!(Interval::of(&[f64::NAN], 0.95), None);
        // Overlap decides significance.
        let a = Interval::of(&[10.0, 11.0, 12.0], 0.95).unwrap();
        let b = Interval::of(&[20.0, 21.0, 22.0], 0.95).unwrap();
        let c = Interval::of(&[11.0, 13.0, 15.0], 0.95).unwrap();
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c));
        assert!(one.overlaps(&b), "one trial proves no difference");
    }
}

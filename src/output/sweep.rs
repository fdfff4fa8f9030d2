//! Many runs from one command: load lists × trials, SLO verdicts per point
//! over its trials, the capacity search, and the one results document that
//! holds them all. The document types and their math are pure;
//! the `drive` module runs them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::LoadModel;
use crate::output::results::{Results, RunConfig};
use crate::record::slo::{Op, Slo, SloReport};
use crate::record::stats::Interval;

/// One load point: a concurrency or an arrival rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Closed loop: slots.
    pub concurrency: Option<usize>,
    /// Open loop: traces/s.
    pub arrival_rate: Option<f64>,
}

impl Load {
    /// The point of `load`.
    pub fn of(load: &LoadModel) -> Load {
        match *load {
            LoadModel::Closed { concurrency } => Load {
                concurrency: Some(concurrency),
                arrival_rate: None,
            },
            LoadModel::Open { rate, .. } => Load {
                concurrency: None,
                arrival_rate: Some(rate),
            },
        }
    }

    /// The load as one number (concurrency, or traces/s).
    pub fn value(&self) -> f64 {
        self.concurrency
            .map(|c| c as f64)
            .or(self.arrival_rate)
            .unwrap_or(0.0)
    }

    /// `concurrency 8` / `rate 2.5/s`.
    pub fn label(&self) -> String {
        match (self.concurrency, self.arrival_rate) {
            (Some(c), _) => format!("concurrency {c}"),
            (None, Some(r)) => format!("rate {r}/s"),
            (None, None) => "–".to_string(),
        }
    }
}

/// What the sweep was asked to do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The load points in order (a capacity search: the ones it probed).
    pub loads: Vec<Load>,
    /// Runs of each point.
    pub trials: u32,
    /// Warm-up before each run, seconds (`null`: none).
    pub warmup_s: Option<f64>,
    /// Pause after each run, seconds (`null`: none).
    pub cooldown_s: Option<f64>,
    /// The engine's prefix cache was reset before each run.
    pub reset_cache: bool,
    /// Confidence of the intervals over trials (0.95: 95 %).
    pub confidence: f64,
    /// The `--slo` conditions, as written.
    pub slo: Vec<String>,
}

/// One measured run of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    /// Load point, from 0.
    pub point: usize,
    /// Trial, from 0.
    pub trial: u32,
    /// Its load.
    pub load: Load,
    /// How the prefix cache was reset before it (`null`: not asked, or no
    /// way worked; see `cache_reset_error`).
    pub cache_reset: Option<String>,
    /// Why no reset worked.
    pub cache_reset_error: Option<String>,
    /// The SLO verdicts of this run (`null`: no `--slo`).
    pub slo: Option<SloReport>,
    /// The run's full results document.
    pub results: Results,
}

/// One condition over a point's trials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloOverTrials {
    /// The condition as written.
    pub slo: String,
    /// Its value over the trials (`null`: some trial had none).
    pub value: Option<Interval>,
    /// The one-sided confidence bound the rule compares with the threshold
    /// (the mean with one trial; `null` without a value).
    #[serde(default)]
    pub bound: Option<f64>,
    /// The pass rule (see [`judge_point`]).
    pub pass: bool,
}

/// One load point over its trials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointSummary {
    /// Load point, from 0.
    pub point: usize,
    /// Its load.
    pub load: Load,
    /// Trials measured.
    pub trials: usize,
    /// Every figure of the runs' `figures`, over the trials (`null`: no
    /// trial measured it).
    pub figures: BTreeMap<String, Option<Interval>>,
    /// Each condition over the trials.
    pub slo: Vec<SloOverTrials>,
    /// Every condition passes (`null`: no `--slo`).
    pub pass: Option<bool>,
    /// Share of traces meeting every per-trace condition, percent.
    pub traces_meeting_pct: Option<Interval>,
    /// Goodput: traces/s meeting every per-trace condition.
    pub goodput_trace_per_s: Option<Interval>,
    /// Goodput: their completion tokens/s.
    pub goodput_completion_tok_per_s: Option<Interval>,
}

/// One probe of the capacity search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The load probed.
    pub load: Load,
    /// Its point (in `points` and `runs`).
    pub point: usize,
    /// Whether it met every SLO.
    pub pass: bool,
}

/// The capacity search's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// `concurrency` or `arrival_rate`.
    pub searched: String,
    /// The most load meeting every SLO (`null`: even the first probe failed,
    /// or the search was interrupted before one passed).
    pub capacity: Option<f64>,
    /// `capacity / num_gpus`: agents (or traces/s) per GPU at the target.
    pub capacity_per_gpu: Option<f64>,
    /// GPUs behind the endpoint.
    pub num_gpus: Option<u32>,
    /// The lowest load that failed (`null`: none failed).
    pub lowest_failing: Option<f64>,
    /// The answer is the search's upper bound: the real capacity may be higher.
    pub at_bound: bool,
    /// The search finished (not interrupted).
    pub complete: bool,
    /// The pass rule, in words.
    pub rule: String,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
}

/// The pass rule, in words.
pub const PASS_RULE: &str = "a point passes when every condition holds for the one-sided confidence bound of its mean over the trials: for <= the upper bound mean + t(confidence, n-1) * sd / sqrt(n) is at most the threshold, for >= the lower bound mean - t(confidence, n-1) * sd / sqrt(n) is at least it; with one trial, the measured value itself; a trial without the value fails the condition; interrupted runs do not count";

/// The results document of a sweep or capacity search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepResults {
    /// [`crate::output::results::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `sweep` or `capacity`.
    pub kind: String,
    /// Version of trie that wrote it.
    pub trie_version: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// Host name.
    pub host: String,
    /// The configuration of the first run (every run's own is in its
    /// results).
    pub config: RunConfig,
    /// What was asked.
    pub plan: Plan,
    /// Per point, over its trials.
    pub points: Vec<PointSummary>,
    /// The capacity search (`kind: capacity`).
    pub capacity: Option<Capacity>,
    /// Stopped by Ctrl+C / SIGTERM: the finished runs are all here.
    pub interrupted: bool,
    /// Ended early by an error of trie's own (`null`: it did not).
    #[serde(default)]
    pub error: Option<String>,
    /// Every measured run, in order.
    pub runs: Vec<SweepRun>,
}

/// Judge `slos` over the trials of one point (each trial's report, in
/// order) by [`PASS_RULE`].
pub fn judge_point(slos: &[Slo], reports: &[&SloReport], confidence: f64) -> Vec<SloOverTrials> {
    slos.iter()
        .enumerate()
        .map(|(i, s)| {
            let values: Option<Vec<f64>> = reports
                .iter()
                .map(|r| r.verdicts.get(i).and_then(|v| v.value))
                .collect();
            let value = values
                .filter(|v| !v.is_empty())
                .and_then(|v| Interval::of(&v, confidence))
                .filter(|iv| iv.n == reports.len());
            // One-sided: the condition fails on one side only.
            let margin = |iv: &Interval| match (iv.n, iv.sd) {
                (n, Some(sd)) if n > 1 => {
                    crate::record::stats::t_quantile(confidence, (n - 1) as f64) * sd
                        / (n as f64).sqrt()
                }
                _ => 0.0,
            };
            let bound = value.map(|iv| match s.op {
                Op::AtMost => iv.mean + margin(&iv),
                Op::AtLeast => iv.mean - margin(&iv),
            });
            let pass = bound.is_some_and(|b| s.op.holds(b, s.value));
            SloOverTrials {
                slo: s.text.clone(),
                value,
                bound,
                pass,
            }
        })
        .collect()
}

impl SweepResults {
    /// The summary of point `point` from its runs.
    pub fn summarize_point(&self, point: usize, slos: &[Slo]) -> Option<PointSummary> {
        // A run cut short by Ctrl+C is kept in `runs` but is not a trial.
        let runs: Vec<&SweepRun> = self
            .runs
            .iter()
            .filter(|r| r.point == point && !r.results.deadline.interrupted)
            .collect();
        let first = runs.first()?;
        let confidence = self.plan.confidence;
        let mut names: Vec<&String> = runs.iter().flat_map(|r| r.results.figures.keys()).collect();
        names.sort();
        names.dedup();
        let figures = names
            .into_iter()
            .map(|name| {
                // A failure kind a trial did not see counts 0 there.
                let zero_when_missing =
                    name.starts_with("failures_") || name.starts_with("retries_");
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| match r.results.figures.get(name) {
                        Some(v) => *v,
                        None if zero_when_missing => Some(0.0),
                        None => None,
                    })
                    .collect();
                (name.clone(), Interval::of(&v, confidence))
            })
            .collect();
        let reports: Vec<&SloReport> = runs.iter().filter_map(|r| r.slo.as_ref()).collect();
        let over = |f: &dyn Fn(&SloReport) -> Option<f64>| {
            let v: Vec<f64> = reports.iter().filter_map(|r| f(r)).collect();
            Interval::of(&v, confidence)
        };
        let slo = if slos.is_empty() {
            Vec::new()
        } else {
            judge_point(slos, &reports, confidence)
        };
        Some(PointSummary {
            point,
            load: first.load,
            trials: runs.len(),
            figures,
            pass: (!slos.is_empty()).then(|| slo.iter().all(|s| s.pass)),
            slo,
            traces_meeting_pct: over(&|r| r.traces_meeting_pct),
            goodput_trace_per_s: over(&|r| r.goodput_trace_per_s),
            goodput_completion_tok_per_s: over(&|r| r.goodput_completion_tok_per_s),
        })
    }

    /// Recompute every point's summary from the runs.
    pub fn update_points(&mut self, slos: &[Slo]) {
        let mut points: Vec<usize> = self.runs.iter().map(|r| r.point).collect();
        points.sort_unstable();
        points.dedup();
        self.points = points
            .into_iter()
            .filter_map(|p| self.summarize_point(p, slos))
            .collect();
    }

    /// The document as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// The tables of a sweep: one row per point (figures as `mean ± half-width
/// (cv)` over its trials), the SLO conditions per point, and the capacity.
pub fn tables(doc: &SweepResults) -> String {
    use crate::output::report::{right, table};
    use prettytable::{Cell, Row};
    let show = |i: Option<Interval>, d: usize| Interval::cell(i, d, true);
    // Without the cv, to fit the SLO table in 120 columns.
    let brief = |i: Option<Interval>, d: usize| Interval::cell(i, d, false);
    let verdict = |p: Option<bool>| match p {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => crate::output::report::ABSENT,
    };
    let mut out = format!(
        "{} of {} points x {} trials ({} runs{}), intervals at {}% confidence\n",
        if doc.kind == "capacity" {
            "Capacity search"
        } else {
            "Sweep"
        },
        doc.points.len(),
        doc.plan.trials,
        doc.runs.len(),
        if doc.interrupted { ", interrupted" } else { "" },
        100.0 * doc.plan.confidence
    );
    let mut t = table(
        [
            "Point",
            "Load",
            "Trials",
            "Steady completion tok/s",
            "TTFAT p90 (s)",
            "Decode tok/s (mean)",
            "SLO",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        &[0, 1],
    );
    for p in &doc.points {
        let f = |n: &str| p.figures.get(n).copied().flatten();
        t.add_row(Row::new(vec![
            Cell::new(&(p.point + 1).to_string()),
            Cell::new(&p.load.label()),
            right(&p.trials.to_string()),
            right(&show(f("steady_state_completion_tok_per_s"), 1)),
            right(&show(f("ttfat_s_p90"), 3)),
            right(&show(f("decode_tps_mean"), 1)),
            right(verdict(p.pass)),
        ]));
    }
    out.push_str(&t.to_string());
    if !doc.plan.slo.is_empty() {
        let mut t = table(
            [
                "Point",
                "Condition",
                "Value",
                "Bound",
                "Verdict",
                "Goodput trace/s",
                "Traces meeting (%)",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            &[0, 1],
        );
        for p in &doc.points {
            for (i, s) in p.slo.iter().enumerate() {
                let first = i == 0;
                t.add_row(Row::new(vec![
                    Cell::new(&if first {
                        (p.point + 1).to_string()
                    } else {
                        String::new()
                    }),
                    Cell::new(&s.slo),
                    right(&brief(s.value, 3)),
                    right(&crate::output::report::cell(s.bound, 3)),
                    right(verdict(Some(s.pass))),
                    right(&if first {
                        brief(p.goodput_trace_per_s, 3)
                    } else {
                        String::new()
                    }),
                    right(&if first {
                        brief(p.traces_meeting_pct, 1)
                    } else {
                        String::new()
                    }),
                ]));
            }
        }
        out.push_str(&format!(
            "\nSLO conditions (value: mean ± the two-sided half-width; the verdict compares the one-sided {}% bound)\n",
            100.0 * doc.plan.confidence
        ));
        out.push_str(&t.to_string());
    }
    if let Some(c) = &doc.capacity {
        let unit = if c.searched == "concurrency" {
            "agents in flight"
        } else {
            "traces/s"
        };
        out.push_str(&match c.capacity {
            Some(x) => format!(
                "\nCapacity: {x} {unit}{}{}{}\n",
                c.capacity_per_gpu
                    .map(|g| format!(" = {g:.2} per GPU ({} GPUs)", c.num_gpus.unwrap_or(0)))
                    .unwrap_or_default(),
                match c.lowest_failing {
                    Some(f) => format!("; {f} fails"),
                    None => String::new(),
                },
                match (c.at_bound, c.searched.as_str()) {
                    (false, _) => "",
                    (true, "concurrency") => " (the search's bound: raise --max-concurrency)",
                    (true, _) => " (the search's bound: raise --max-arrival-rate)",
                },
            ),
            None => "\nCapacity: none: the lowest load probed fails the SLOs\n".to_string(),
        });
        out.push_str(&format!(
            "{} probes{}\n",
            c.probes.len(),
            if c.complete {
                ""
            } else {
                "; the search did not finish"
            }
        ));
    }
    out
}

/// The columns of the sweep CSV after `point,trial,concurrency,arrival_rate`.
pub const CSV_FIGURES: &[&str] = crate::output::report::HEADLINE;

/// The sweep CSV: one row per point × trial, the headline figures and the
/// SLO outcome (empty cells: not measured).
pub fn csv(doc: &SweepResults) -> String {
    let mut out = String::from("point,trial,concurrency,arrival_rate");
    for f in CSV_FIGURES {
        out.push(',');
        out.push_str(f);
    }
    out.push_str(
        ",slo_pass,traces_meeting_pct,goodput_trace_per_s,goodput_completion_tok_per_s,interrupted\n",
    );
    let num = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
    for r in &doc.runs {
        let mut row = vec![
            r.point.to_string(),
            r.trial.to_string(),
            r.load
                .concurrency
                .map(|c| c.to_string())
                .unwrap_or_default(),
            num(r.load.arrival_rate),
        ];
        for f in CSV_FIGURES {
            row.push(num(r.results.figures.get(*f).copied().flatten()));
        }
        let slo = r.slo.as_ref();
        row.push(slo.map(|s| s.pass.to_string()).unwrap_or_default());
        row.push(num(slo.and_then(|s| s.traces_meeting_pct)));
        row.push(num(slo.and_then(|s| s.goodput_trace_per_s)));
        row.push(num(slo.and_then(|s| s.goodput_completion_tok_per_s)));
        // A run cut short: kept, but not a trial of its point.
        row.push(r.results.deadline.interrupted.to_string());
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// `--output-metrics` of a sweep: every run's rows, each with its
/// `point` and `trial`.
pub fn output_metrics(doc: &SweepResults) -> String {
    doc.runs
        .iter()
        .map(|r| {
            crate::output::results::output_metrics_tagged(
                &r.results.summary,
                Some((r.point, r.trial)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::slo::{Verdict, parse};

    fn report(values: &[Option<f64>]) -> SloReport {
        SloReport {
            verdicts: values
                .iter()
                .map(|v| Verdict {
                    slo: String::new(),
                    value: *v,
                    pass: false,
                })
                .collect(),
            pass: false,
            traces_meeting_pct: None,
            goodput_trace_per_s: None,
            goodput_completion_tok_per_s: None,
        }
    }

    #[test]
    fn the_pass_rule_uses_the_interval_bound_on_the_conditions_side() {
        let slos = parse("ttfat_s:p90<=10,decode_tps:mean>=20").unwrap();
        // ttfat 8, 9, 10 (mean 9, sd 1; one-sided 95 %: t(0.95, 2) =
        // 2.92 / √3 = 1.69): the upper bound 10.69 > 10 fails though every
        // trial passed; decode 30, 31, 29: lower bound 28.3 >= 20 passes.
        let a = report(&[Some(8.0), Some(30.0)]);
        let b = report(&[Some(9.0), Some(31.0)]);
        let c = report(&[Some(10.0), Some(29.0)]);
        let v = judge_point(&slos, &[&a, &b, &c], 0.95);
        assert!(!v[0].pass);
        assert!((v[0].value.unwrap().high() - (9.0 + 4.302_652_73 / 3f64.sqrt())).abs() < 1e-6);
        // At the one-sided bound 9 + 2.92/√3 = 10.686: a threshold of 10.7
        // passes, which the two-sided bound (11.48) would fail.
        let loose = parse("ttfat_s:p90<=10.7").unwrap();
        assert!(judge_point(&loose, &[&a, &b, &c], 0.95)[0].pass);
        assert!(v[1].pass);
        // One trial: the value itself.
        let v = judge_point(&slos, &[&c], 0.95);
        assert!(v[0].pass && v[1].pass);
        // A trial without the value fails the condition.
        let d = report(&[None, Some(30.0)]);
        let v = judge_point(&slos, &[&a, &d], 0.95);
        assert!(!v[0].pass && v[0].value.is_none());
        assert!(v[1].pass);
    }

    fn run(trial: u32, interrupted: bool, failures: &[(&str, u64)], tput: f64) -> SweepRun {
        let mut s = crate::record::summary::Summary {
            trace_per_s: tput,
            interrupted,
            ..Default::default()
        };
        for (k, n) in failures {
            s.failures.insert(
                k.to_string(),
                crate::record::summary::FailureCount {
                    traces: *n,
                    ..Default::default()
                },
            );
        }
        SweepRun {
            point: 0,
            trial,
            load: Load {
                concurrency: Some(4),
                arrival_rate: None,
            },
            cache_reset: None,
            cache_reset_error: None,
            slo: None,
            results: Results::new(
                std::time::SystemTime::now(),
                RunConfig::default(),
                1.0,
                s,
                crate::record::records::Records::default(),
            ),
        }
    }

    #[test]
    fn a_point_counts_whole_trials_and_missing_failures_as_zero() {
        let doc = SweepResults {
            schema_version: 4,
            kind: "sweep".into(),
            trie_version: String::new(),
            started_at: String::new(),
            host: String::new(),
            config: RunConfig::default(),
            plan: Plan {
                confidence: 0.95,
                ..Plan::default()
            },
            points: Vec::new(),
            capacity: None,
            interrupted: true,
            error: None,
            runs: vec![
                run(0, false, &[("http_503", 4)], 2.0),
                run(1, false, &[], 4.0),
                // Cut short by Ctrl+C: kept, not a trial.
                run(2, true, &[("reset", 9)], 100.0),
            ],
        };
        let p = doc.summarize_point(0, &[]).unwrap();
        assert_eq!(p.trials, 2);
        assert_eq!(p.figures["trace_per_s"].unwrap().mean, 3.0);
        // 4 failures in one trial, none in the other: 2 per trial.
        assert_eq!(p.figures["failures_http_503"].unwrap().mean, 2.0);
        assert!(!p.figures.contains_key("failures_reset"));
        assert_eq!(p.pass, None);
    }
}

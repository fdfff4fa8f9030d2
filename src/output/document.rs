//! Reading results documents back — a run's or a sweep's — for `trie
//! report`, `trie compare` and `trie plot`. Figures are computed again from
//! the raw records where the document has them.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::output::report::{self, FigureMap, IntervalMap};
use crate::output::results::{Results, parse_document, read_document};
use crate::output::sweep::SweepResults;

/// A results document.
pub enum Document {
    /// One run (`trie --output`).
    Run(Box<Results>),
    /// A sweep or capacity search.
    Sweep(Box<SweepResults>),
}

impl Document {
    /// Read `path`; errors name the file and the fix.
    pub fn read(path: &Path) -> Result<Document> {
        let value = read_document(path)?;
        if value
            .get("kind")
            .is_some_and(|k| k == "sweep" || k == "capacity")
        {
            let mut doc: SweepResults = parse_document(path, value)?;
            check_sweep(path, &doc)?;
            let slos: Vec<crate::record::slo::Slo> = doc
                .plan
                .slo
                .iter()
                .filter_map(|t| crate::record::slo::parse(t).ok())
                .flatten()
                .collect();
            // The figures and verdicts of every run, again from its records.
            for r in &mut doc.runs {
                let summary = r.results.summarize();
                r.results.figures = report::figure_map(&summary);
                if let (false, Some(records)) = (slos.is_empty(), &r.results.records) {
                    r.slo = Some(crate::record::slo::judge(
                        &slos,
                        &summary.traces,
                        &records.requests,
                        summary.wall_time_s,
                    ));
                }
                r.results.summary = summary;
            }
            doc.update_points(&slos);
            Ok(Document::Sweep(Box::new(doc)))
        } else {
            Ok(Document::Run(Box::new(parse_document(path, value)?)))
        }
    }
}

/// Refuse a sweep document whose plan cannot describe its runs (edited by
/// hand, or not written by trie).
fn check_sweep(path: &Path, doc: &SweepResults) -> Result<()> {
    let bad = |why: String| {
        Err(crate::error::Error::usage(format!(
            "{}: not a valid trie sweep document ({why}); pass a file written by trie --output",
            path.display()
        )))
    };
    let c = doc.plan.confidence;
    if !(c > 0.0 && c < 1.0) {
        return bad(format!("plan.confidence {c} is not between 0 and 1"));
    }
    if let Some(r) = doc.runs.iter().find(|r| r.point >= doc.plan.loads.len()) {
        return bad(format!(
            "a run of point {} but the plan has {} loads",
            r.point,
            doc.plan.loads.len()
        ));
    }
    if let Some(cap) = &doc.capacity {
        let ok = |x: Option<f64>| x.is_none_or(|x| x.is_finite() && x >= 0.0);
        if !ok(cap.capacity) || !ok(cap.capacity_per_gpu) || !ok(cap.lowest_failing) {
            return bad("capacity figures are not finite non-negative numbers".into());
        }
        if cap.num_gpus == Some(0) {
            return bad("capacity.num_gpus is 0".into());
        }
        if cap.searched != "concurrency" && cap.searched != "arrival_rate" {
            return bad(format!(
                "capacity.searched '{}' is not concurrency or arrival_rate",
                crate::redact::name(&cap.searched)
            ));
        }
    }
    Ok(())
}

/// `trie report FILE`: the tables the run (or sweep) printed.
pub fn report_file(path: &Path) -> Result<String> {
    Ok(match Document::read(path)? {
        Document::Run(r) => report::tables(&r.summarize()) + "\n",
        Document::Sweep(doc) => crate::output::sweep::tables(&doc),
    })
}

/// `trie compare A B ...`: runs side by side; a sweep gives one column per
/// point (its means, with intervals for the significance marks).
pub fn compare_files(paths: &[PathBuf]) -> Result<String> {
    let mut columns: Vec<(String, FigureMap, Option<IntervalMap>)> = Vec::new();
    for p in paths {
        let shown = p.display().to_string();
        match Document::read(p)? {
            Document::Run(r) => columns.push((shown, report::figure_map(&r.summarize()), None)),
            Document::Sweep(doc) => {
                if doc.points.is_empty() {
                    return Err(crate::error::Error::usage(format!(
                        "{shown}: a sweep without a finished run (interrupted before its first ended): nothing to compare"
                    )));
                }
                for point in &doc.points {
                    let means: FigureMap = point
                        .figures
                        .iter()
                        .map(|(k, v)| (k.clone(), v.map(|i| i.mean)))
                        .collect();
                    columns.push((
                        format!("{shown} {}", point.load.label()),
                        means,
                        Some(point.figures.clone()),
                    ));
                }
            }
        }
    }
    let runs: Vec<_> = columns
        .iter()
        .map(|(n, f, i)| (n.clone(), f, i.as_ref()))
        .collect();
    Ok(report::compare(&runs))
}

/// `trie plot FILE DIR`: draw the charts of a run or sweep into `dir`;
/// returns what was written.
pub fn plot_file(path: &Path, dir: &Path) -> Result<String> {
    let doc = Document::read(path)?;
    crate::output::files::plot_dir("trie plot: the directory", dir, &Default::default())?;
    let errors = match doc {
        Document::Run(r) => crate::output::plot::write_run(dir, &r),
        Document::Sweep(doc) => crate::output::plot::write_sweep(dir, &doc),
    };
    if errors.is_empty() {
        Ok(format!("wrote {}\n", dir.join("report.html").display()))
    } else {
        Err(crate::error::Error::run(errors.join("; ")))
    }
}

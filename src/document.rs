//! Reading results documents back — a run's or a sweep's — for `trie
//! report`, `trie compare` and `trie plot`. Figures are computed again from
//! the raw records where the document has them.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::report::{self, FigureMap, IntervalMap};
use crate::results::{Results, parse_document, read_document};
use crate::sweep::SweepResults;

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
            let slos: Vec<crate::slo::Slo> = doc
                .plan
                .slo
                .iter()
                .filter_map(|t| crate::slo::parse(t).ok())
                .flatten()
                .collect();
            // The figures and verdicts of every run, again from its records.
            for r in &mut doc.runs {
                let summary = r.results.clone().summarize();
                r.results.figures = figure_map(&summary);
                if let (false, Some(records)) = (slos.is_empty(), &r.results.records) {
                    r.slo = Some(crate::slo::judge(
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

fn figure_map(s: &crate::summary::Summary) -> FigureMap {
    report::figures(s)
        .into_iter()
        .map(|f| (f.name, f.value))
        .collect()
}

/// `trie report FILE`: the tables the run (or sweep) printed.
pub fn report_file(path: &Path) -> Result<String> {
    Ok(match Document::read(path)? {
        Document::Run(r) => report::tables(&r.summarize()) + "\n",
        Document::Sweep(doc) => crate::sweep::tables(&doc),
    })
}

/// `trie compare A B ...`: runs side by side; a sweep gives one column per
/// point (its means, with intervals for the significance marks).
pub fn compare_files(paths: &[PathBuf]) -> Result<String> {
    let mut columns: Vec<(String, FigureMap, Option<IntervalMap>)> = Vec::new();
    for p in paths {
        let shown = p.display().to_string();
        match Document::read(p)? {
            Document::Run(r) => columns.push((shown, figure_map(&r.summarize()), None)),
            Document::Sweep(doc) => {
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
    let errors = match Document::read(path)? {
        Document::Run(r) => crate::plot::write_run(dir, &r),
        Document::Sweep(doc) => crate::plot::write_sweep(dir, &doc),
    };
    if errors.is_empty() {
        Ok(format!("wrote {}\n", dir.join("report.html").display()))
    } else {
        Err(crate::error::Error::run(errors.join("; ")))
    }
}

//! Diagnostics for people (miette's graphical report, source attached here) and for tools
//! (the normative JSON shape of language.md section 3).

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, NamedSource, Report};
use pexc_compiler::source::SourceMap;
use pexc_compiler::Problem;
use serde_json::{json, Value};

/// How to draw human diagnostics.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
    pub width: usize,
}

impl Style {
    /// No colours, fixed width: what snapshots and pipes get.
    pub fn plain() -> Self {
        Style {
            color: false,
            width: 100,
        }
    }
}

/// One diagnostic, rendered with its source.
pub fn human(problem: &Problem, sources: &SourceMap, style: Style) -> String {
    let file = sources.get(problem.file);
    let report = Report::new(problem.error.clone())
        .with_source_code(NamedSource::new(&file.name, file.text.clone()));
    let theme = if style.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(style.width)
        .with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = format!("{}: {}\n", problem.code(), problem.error);
    }
    out
}

/// One diagnostic as the normative JSON object.
pub fn json(problem: &Problem, sources: &SourceMap) -> Value {
    let file = sources.get(problem.file);
    let (line, column) = problem
        .primary()
        .map_or((1, 1), |s| file.line_col(s.offset()));
    let labels: Vec<Value> = problem
        .error
        .labels()
        .map(|ls| {
            ls.map(|l| {
                let (line, column) = file.line_col(l.offset());
                json!({ "message": l.label().unwrap_or(""), "line": line, "column": column })
            })
            .collect()
        })
        .unwrap_or_default();
    json!({
        "severity": if problem.is_error() { "error" } else { "warning" },
        "code": problem.code(),
        "message": problem.error.to_string(),
        "file": file.name,
        "line": line,
        "column": column,
        "labels": labels,
        "help": problem.error.help().map(|h| h.to_string()),
    })
}

//! pexc's front end: parse -> resolve -> check -> stage DAG, with no burn dependency so
//! that `pexc check` builds and runs fast. Later phases (lowering, cost, fmt) consume
//! `Checked`.

pub mod check;
pub mod diagnostic;
pub mod fmt;
pub mod graph;
pub mod lower;
pub mod resolve;
pub mod source;
pub mod syntax;

use std::io;
use std::path::Path;

pub use check::Checked;
pub use diagnostic::{Error, Problem, Problems};
pub use resolve::{FsLoader, Loader, MemLoader};

/// The result of checking one file: the checked program (when it loaded) and every
/// diagnostic, errors and warnings, in the order found.
pub struct Outcome {
    pub checked: Checked,
    pub problems: Problems,
}

impl Outcome {
    pub fn has_errors(&self) -> bool {
        self.problems.has_errors()
    }

    pub fn sources(&self) -> &source::SourceMap {
        &self.checked.loaded.sources
    }
}

/// Loads, parses and checks the file at `path`, shown in diagnostics as `display`.
/// An unreadable root file is an `io::Error`; every other problem is a diagnostic.
pub fn check_file(path: &Path, display: &str, loader: &dyn Loader) -> io::Result<Outcome> {
    check_file_with(path, display, loader, &[])
}

/// As `check_file`, with `--set path=value` overrides applied. Each override becomes a
/// source file of its own (named `--set`), so that its diagnostics point into it.
pub fn check_file_with(
    path: &Path,
    display: &str,
    loader: &dyn Loader,
    sets: &[String],
) -> io::Result<Outcome> {
    let mut problems = Problems::default();
    let mut loaded = resolve::load(path, display, loader, &mut problems)?;
    let mut overrides = Vec::new();
    for (i, text) in sets.iter().enumerate() {
        let file = loaded.sources.add(source::SourceFile::new(
            "--set".into(),
            source::Origin::Set(i),
            text.clone(),
        ));
        match check::set::Override::parse(file, text) {
            Ok(o) => overrides.push(o),
            Err(e) => problems.push(file, *e),
        }
    }
    let checked = check::check_with(loaded, overrides, &mut problems);
    Ok(Outcome { checked, problems })
}

/// Checks source text held in memory, as if it were the file `name`.
pub fn check_source(name: &str, text: &[u8]) -> Outcome {
    let mut loader = MemLoader::default();
    loader.files.insert(name.into(), text.to_vec());
    check_file(Path::new(name), name, &loader).expect("the in-memory root exists")
}

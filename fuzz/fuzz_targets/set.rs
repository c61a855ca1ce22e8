//! A valid experiment with arbitrary `--set` overrides (the input split at NUL bytes):
//! what `pexc plan --set` and `pexc run --set` parse from the command line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pexc_compiler::{check_file_with, lower, MemLoader, Problems};

const EXPERIMENT: &str = include_str!("../../tests/runs/micro.pex");

fuzz_target!(|data: &[u8]| {
    let sets: Vec<String> = data
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let mut loader = MemLoader::default();
    loader.files.insert("micro.pex".into(), EXPERIMENT.as_bytes().to_vec());
    let Ok(outcome) = check_file_with(Path::new("micro.pex"), "micro.pex", &loader, &sets) else {
        return;
    };
    if !outcome.has_errors() {
        let mut problems = Problems::default();
        let _ = lower::lower(&outcome.checked, &mut problems);
    }
});

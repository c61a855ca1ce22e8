//! Arbitrary bytes as an experiment file: parse, resolve, check and, when that finds no
//! error, lower to a plan. Nothing may panic, overflow the stack or loop; every
//! diagnostic's span lies inside its file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pexc_compiler::{check_source, lower, Problems};

fuzz_target!(|data: &[u8]| {
    let outcome = check_source("fuzz.pex", data);
    for p in &outcome.problems.list {
        let len = outcome.sources().get(p.file).text.len();
        if let Some(span) = p.primary() {
            assert!(span.offset() + span.len() <= len, "span past the end");
        }
    }
    if !outcome.has_errors() {
        let mut problems = Problems::default();
        let _ = lower::lower(&outcome.checked, &mut problems);
    }
});

//! Every experiment in the library checks clean: no errors, no warnings.

use std::path::Path;

use pexc::render::{human, Style};
use pexc_compiler::{check_file, FsLoader};

#[test]
fn every_experiment_checks_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["experiments/pe", "experiments/tiny"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("the experiment library exists")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pex") {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let outcome = check_file(Path::new(&rel), &rel, &FsLoader).expect("readable");
            let report: String = outcome
                .problems
                .list
                .iter()
                .map(|p| human(p, outcome.sources(), Style::plain()))
                .collect();
            assert!(
                outcome.problems.list.is_empty(),
                "{rel} has diagnostics:\n{report}"
            );
            assert!(
                !outcome.checked.stages.is_empty() || rel.ends_with("common.pex"),
                "{rel} declares no stage"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} experiment files");
}

#[test]
fn tiny_core_has_progressive_resolution_and_mask_regularisation() {
    let rel = "experiments/tiny/core.pex";
    let outcome = check_file(Path::new(rel), rel, &FsLoader).expect("readable");
    let stage = &outcome.checked.stages[0];
    assert!(stage.phases.len() >= 3, "at least 3 phases");
    let res: Vec<i64> = (0..stage.phases.len())
        .filter_map(|i| {
            stage
                .field_in(Some(i), "resolution")
                .and_then(|f| f.value.as_int())
        })
        .collect();
    assert!(
        res.windows(2).all(|w| w[0] < w[1]),
        "resolutions go up: {res:?}"
    );
    let loss = stage
        .field("loss")
        .or_else(|| stage.phases[0].fields.iter().find(|f| f.name == "loss"))
        .expect("a loss");
    let text = format!("{:?}", loss.value.value);
    assert!(
        text.contains("mask_regularization"),
        "mask regularisation is on"
    );
}

//! The invalid-file corpus: every file under tests/invalid/ declares the diagnostics it must
//! produce (`// expect: CODE @ LINE`, or `@ FILE:LINE` for another file), exactly; the
//! rendered human output is snapshot-tested so that a reviewer reads the source and the
//! diagnostic side by side.

use std::path::Path;

use pexc::render::{human, json, Style};
use pexc_compiler::{check_file, check_source, FsLoader, Outcome};

/// Paths relative to the package root, as users type them, so snapshots hold no absolute paths.
fn relative(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn check(path: &Path) -> Outcome {
    let rel = relative(path);
    check_file(Path::new(&rel), &rel, &FsLoader).expect("corpus files are readable")
}

/// (code, file, line) of every diagnostic.
fn found(outcome: &Outcome) -> Vec<(String, String, usize)> {
    let mut out: Vec<(String, String, usize)> = outcome
        .problems
        .list
        .iter()
        .map(|p| {
            let file = outcome.sources().get(p.file);
            let line = p.primary().map_or(1, |s| file.line_col(s.offset()).0);
            (p.code(), file.name.clone(), line)
        })
        .collect();
    out.sort();
    out
}

fn expected(path: &Path, text: &str) -> Vec<(String, String, usize)> {
    let rel = relative(path);
    let mut out: Vec<(String, String, usize)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("// expect: "))
        .map(|e| {
            let (code, at) = e.split_once(" @ ").expect("expect lines are `CODE @ LINE`");
            let (file, line) = match at.rsplit_once(':') {
                Some((f, l)) => (f.to_string(), l),
                None => (rel.clone(), at),
            };
            (
                code.to_string(),
                file,
                line.trim().parse().expect("a line number"),
            )
        })
        .collect();
    out.sort();
    out
}

fn rendered(outcome: &Outcome) -> String {
    outcome
        .problems
        .list
        .iter()
        .map(|p| human(p, outcome.sources(), Style::plain()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn invalid_corpus() {
    let mut files = 0;
    insta::glob!("invalid/*.pex", |path| {
        files += 1;
        let bytes = std::fs::read(path).expect("readable");
        let text = String::from_utf8_lossy(&bytes);
        let outcome = check(path);
        let want = expected(path, &text);
        assert!(
            !want.is_empty(),
            "{} declares no `// expect:` line",
            path.display()
        );
        assert_eq!(found(&outcome), want, "diagnostics of {}", path.display());
        insta::assert_snapshot!(rendered(&outcome));
    });
    assert!(files >= 40, "the corpus has {files} files");
}

#[test]
fn json_shape_of_a_few() {
    for name in [
        "many_errors",
        "stage_cycle",
        "syntax_end",
        "import_cycle",
        "warn_unused",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/invalid/{name}.pex"));
        let outcome = check(&path);
        let diags: Vec<serde_json::Value> = outcome
            .problems
            .list
            .iter()
            .map(|p| json(p, outcome.sources()))
            .collect();
        let doc = serde_json::json!({ "diagnostics": diags });
        insta::assert_snapshot!(
            format!("json_{name}"),
            serde_json::to_string_pretty(&doc).expect("serialisable")
        );
    }
}

#[test]
fn a_zero_byte_file_is_an_empty_experiment() {
    let outcome = check_source("empty.pex", b"");
    let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
    assert_eq!(codes, ["pex::warn::empty_file"]);
    assert!(!outcome.has_errors());
}

/// A 1 MB file of valid definitions with one syntax error on its last line: the error is
/// found, at the right line, and rendered with its context.
#[test]
fn a_one_megabyte_file_with_an_error_at_the_end() {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(&format!(
            "model m{i} = vit(patch: 16, width: 64, depth: 2, heads: 2, out: 32) with {{ depth: {} }}\n",
            i % 12 + 1
        ));
        i += 1;
    }
    let lines = text.lines().count();
    text.push_str("let broken = (1, 2\n");
    let outcome = check_source("big.pex", text.as_bytes());
    let found = found(&outcome);
    assert_eq!(
        found,
        [("pex::syntax".to_string(), "big.pex".to_string(), lines + 1)]
    );
    insta::assert_snapshot!(rendered(&outcome));
}

#[test]
fn non_utf8_is_a_diagnostic_at_the_first_bad_byte() {
    let outcome = check_source("latin1.pex", b"let a = 1\nlet caf\xe9 = 2\n");
    let found = found(&outcome);
    assert_eq!(
        found,
        [("pex::syntax::utf8".to_string(), "latin1.pex".to_string(), 2)]
    );
    let span = outcome.problems.list[0].primary().expect("a span");
    assert_eq!(span.offset(), 17);
}

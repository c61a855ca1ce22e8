//! `pexc fmt`: the layout is idempotent, keeps the program (the AST, spans aside) and every
//! comment, on every .pex file of the repository and on those files with a comment after
//! every token; reviewed snapshots of a messy file; the command's exit codes and file
//! handling.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pest::Parser;
use pexc_compiler::fmt::{comments, erase_spans, format_bytes, format_source, FmtError};
use pexc_compiler::syntax::ast::Module;
use pexc_compiler::syntax::parse::{PexParser, Rule};
use pexc_compiler::syntax::parse_module;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every .pex file of the repository that parses, with its path relative to the root.
fn corpus() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in [
        "experiments/pe",
        "experiments/tiny",
        "tests/valid",
        "tests/invalid",
        "tests/invalid/modules",
        "tests/fmt",
        "stdlib/std",
    ] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pex") {
                continue;
            }
            let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
            // The syntax-error files of tests/invalid have nothing to format.
            let Ok(text) = String::from_utf8(std::fs::read(&path).expect("readable")) else {
                continue;
            };
            if parse_module(&text).is_ok() {
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

fn parsed(name: &str, text: &str) -> Module {
    let mut module = parse_module(text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    erase_spans(&mut module);
    module
}

fn format(name: &str, text: &str) -> String {
    format_source(name, text).unwrap_or_else(|e| panic!("{name} does not format: {e}"))
}

/// Formatting is idempotent and keeps the program; `in_order`: the comments stay in their
/// order (a comment moved out of an expression may otherwise pass another).
fn assert_round_trip(name: &str, text: &str, in_order: bool) -> String {
    let once = format(name, text);
    let twice = format(name, &once);
    assert_eq!(once, twice, "formatting {name} twice changes it");
    assert_eq!(
        parsed(name, text),
        parsed(name, &once),
        "formatting {name} changes the program"
    );
    let (mut before, mut after) = (comments(text), comments(&once));
    if !in_order {
        before.sort_unstable();
        after.sort_unstable();
    }
    assert_eq!(before, after, "formatting {name} changes the comments");
    for line in once.lines() {
        assert_eq!(line, line.trim_end(), "trailing whitespace in {name}");
    }
    once
}

#[test]
fn every_file_of_the_repository_round_trips() {
    let corpus = corpus();
    assert!(corpus.len() >= 50, "the corpus has {} files", corpus.len());
    for (name, text) in &corpus {
        assert_round_trip(name, text, true);
    }
}

/// The positions right after every token of a file.
fn token_ends(text: &str) -> Vec<usize> {
    let pairs = PexParser::parse(Rule::file, text).expect("the corpus parses");
    let mut ends: Vec<usize> = pairs
        .flatten()
        .filter(|p| p.clone().into_inner().next().is_none())
        .map(|p| p.as_span().end())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// The hardest case for comment placement: a comment after every token of every file,
/// inside calls, between a name and its `(`, after `-`, between `with` and `{`... Each
/// must survive, the result must be the same program, and a second pass must change nothing.
#[test]
fn a_comment_after_every_token_survives() {
    for (name, text) in corpus() {
        let mut noisy = text.clone();
        for (i, end) in token_ends(&text).into_iter().rev().enumerate() {
            noisy.insert_str(end, &format!(" // c{i}\n"));
        }
        assert_eq!(parsed(&name, &text), parsed(&name, &noisy), "{name}");
        let once = assert_round_trip(&name, &noisy, false);
        assert_eq!(parsed(&name, &text), parsed(&name, &once), "{name}");
    }
}

/// Removing every line break that the grammar does not need (all but those ending
/// comments) gives the same canonical layout, blank lines aside (the source decides those).
#[test]
fn a_file_squeezed_onto_few_lines_formats_the_same() {
    let text = std::fs::read_to_string(root().join("tests/valid/minimal.pex")).expect("readable");
    let squeezed: String = text
        .lines()
        .map(|l| {
            if l.contains("//") {
                format!("{l}\n")
            } else {
                format!("{}   ", l.trim())
            }
        })
        .collect();
    let without_blank_lines = |s: String| -> Vec<String> {
        s.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        without_blank_lines(format("minimal.pex", &squeezed)),
        without_blank_lines(format("minimal.pex", &text)),
        "squeezed:\n{squeezed}"
    );
}

#[test]
fn messy_file() {
    let text = std::fs::read_to_string(root().join("tests/fmt/messy.pex")).expect("readable");
    let formatted = assert_round_trip("messy.pex", &text, true);
    insta::assert_snapshot!("messy", formatted);
}

#[test]
fn an_experiment_in_canonical_form() {
    let text =
        std::fs::read_to_string(root().join("experiments/tiny/pipeline.pex")).expect("readable");
    insta::assert_snapshot!("tiny_pipeline", format("pipeline.pex", &text));
}

// ---------------------------------------------------------------- single rules

#[test]
fn literals_are_kept_as_written() {
    let src = "let a = [2K, 32Ki, 1_000, 5.4B, 2e-3, 0.50, 99999999999999999999, \"a\\\"b\\n\"]\n";
    assert_eq!(format("t.pex", src), src);
}

#[test]
fn operators_are_spaced_and_fractions_tight() {
    assert_eq!(
        format("t.pex", "let a = x+0.5*y/z - 1 / 16 +(1/w)*-2"),
        "let a = x + 0.5 * y / z - 1/16 + (1 / w) * -2\n"
    );
}

#[test]
fn a_one_tuple_keeps_its_comma() {
    assert_eq!(
        format("t.pex", "let a = (1,)\nlet b = (1)"),
        "let a = (1,)\nlet b = (1)\n"
    );
}

#[test]
fn outer_brackets_break_first() {
    let src = "let a = f(first: [alpha(x: 1), beta(y: 2)], second: gamma(z: 3), third: delta(w: 4), fourth: 50000000)";
    assert_eq!(
        format("t.pex", src),
        "let a = f(\n    first: [alpha(x: 1), beta(y: 2)],\n    second: gamma(z: 3),\n    \
         third: delta(w: 4),\n    fourth: 50000000,\n)\n"
    );
}

#[test]
fn a_call_that_fits_is_joined() {
    assert_eq!(
        format("t.pex", "model m = vit(\n  patch: 8,\n  width: 64,\n)\n"),
        "model m = vit(patch: 8, width: 64)\n"
    );
}

#[test]
fn exactly_one_hundred_columns_fit() {
    let name = "n".repeat(100 - "let a = f()".len());
    let src = format!("let a = f({name})\n");
    assert_eq!(src.trim_end().chars().count(), 100);
    assert_eq!(format("t.pex", &src), src);
    let src = format!("let a = f({name}x)\n");
    assert_eq!(
        format("t.pex", &src),
        format!("let a = f(\n    {name}x,\n)\n")
    );
}

#[test]
fn a_long_sum_breaks_before_its_operators() {
    let src = "stage s { loss: clip(max_logit_scale: 100) + 0.5 * mask_regularization(fraction: 1/16, ratio: 0.4) - 0.1 * siglip() }";
    assert_eq!(
        format("t.pex", src),
        "stage s {\n    loss: clip(max_logit_scale: 100)\n        \
         + 0.5 * mask_regularization(fraction: 1/16, ratio: 0.4)\n        - 0.1 * siglip()\n}\n"
    );
}

#[test]
fn phases_stay_on_one_line_only_when_they_were_and_fit() {
    let src = "stage s {\n    phase a { resolution: 32, steps: 10 }\n    phase b {\n        steps: 10\n    }\n}\n";
    assert_eq!(format("t.pex", src), src);
    let long = format!(
        "stage s {{ phase a {{ data: {}, steps: 10 }} }}",
        "d".repeat(90)
    );
    assert_eq!(
        format("t.pex", &long),
        format!(
            "stage s {{\n    phase a {{\n        data: {}\n        steps: 10\n    }}\n}}\n",
            "d".repeat(90)
        )
    );
}

#[test]
fn blank_lines_are_kept_at_most_one() {
    assert_eq!(
        format("t.pex", "\n\nlet a = 1\n\n\n\nlet b = 2\nlet c = 3\n\n\n"),
        "let a = 1\n\nlet b = 2\nlet c = 3\n"
    );
    assert_eq!(
        format("t.pex", "stage s {\n\n    steps: 1\n\n\n    seed: 2\n\n}\n"),
        "stage s {\n    steps: 1\n\n    seed: 2\n}\n"
    );
}

#[test]
fn crlf_and_tabs_become_canonical() {
    assert_eq!(
        format(
            "t.pex",
            "// c\r\nlet a = 1\t// d\r\nstage s {\r\n\tsteps: 1\r\n}\r\n"
        ),
        "// c\nlet a = 1 // d\nstage s {\n    steps: 1\n}\n"
    );
}

#[test]
fn an_empty_file_stays_empty() {
    assert_eq!(format("t.pex", ""), "");
    assert_eq!(format("t.pex", "\n\n  \n"), "");
    assert_eq!(
        format("t.pex", "// only\n\n\n// comments"),
        "// only\n\n// comments\n"
    );
}

#[test]
fn a_moved_comment_does_not_take_over_a_doc_comment() {
    let src = "// lead\n/// doc\nmodel m = // inside\n    vit(patch: 8)\n";
    let out = format("t.pex", src);
    assert_eq!(
        out,
        "// lead\n// inside\n/// doc\nmodel m = vit(patch: 8)\n"
    );
    let src = "model m = /// inside\n    vit(patch: 8)\n";
    assert_eq!(
        format("t.pex", src),
        "/// inside\n\nmodel m = vit(patch: 8)\n"
    );
}

#[test]
fn syntax_errors_are_the_checkers_diagnostics() {
    let Err(FmtError::Invalid { sources, problems }) =
        format_source("bad.pex", "stage s { steps: }\n")
    else {
        panic!("a syntax error formats")
    };
    assert_eq!(problems.list.len(), 1);
    assert_eq!(problems.list[0].code(), "pex::syntax");
    assert_eq!(sources.get(problems.list[0].file).name, "bad.pex");
    let Err(FmtError::Invalid { problems, .. }) = format_bytes("bad.pex", b"let caf\xe9 = 1\n")
    else {
        panic!("bytes that are not UTF-8 format")
    };
    assert_eq!(problems.list[0].code(), "pex::syntax::utf8");
}

// ---------------------------------------------------------------- the command

fn pexc(args: &[&str], dir: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pexc"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pexc runs");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("a stdin pipe");
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .expect("stdin written");
    }
    child.wait_with_output().expect("pexc exits")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test, under cargo's scratch directory for integration tests.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fmt-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

const MESSY: &str = "let a=1 // one\nstage s{steps:1}\n";
const CANONICAL: &str = "let a = 1 // one\nstage s {\n    steps: 1\n}\n";

#[test]
fn cli_rewrites_files_in_place() {
    let dir = scratch("in_place");
    std::fs::write(dir.join("a.pex"), MESSY).expect("written");
    std::fs::write(dir.join("b.pex"), CANONICAL).expect("written");
    let o = pexc(&["fmt", "a.pex", "b.pex"], &dir, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", stderr(&o));
    for name in ["a.pex", "b.pex"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).expect("read"),
            CANONICAL
        );
    }
    // No temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("listable")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.pex", "b.pex"]);
}

#[test]
fn cli_check_reports_and_changes_nothing() {
    let dir = scratch("check");
    std::fs::write(dir.join("messy.pex"), MESSY).expect("written");
    std::fs::write(dir.join("clean.pex"), CANONICAL).expect("written");
    let o = pexc(&["fmt", "--check", "clean.pex"], &dir, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stderr.is_empty());
    let o = pexc(&["fmt", "--check", "messy.pex", "clean.pex"], &dir, None);
    assert_eq!(code(&o), 1);
    assert_eq!(stderr(&o), "messy.pex: not formatted\n");
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.join("messy.pex")).expect("read"),
        MESSY
    );
}

#[test]
fn cli_formats_stdin_to_stdout() {
    let dir = scratch("stdin");
    let o = pexc(&["fmt", "-"], &dir, Some(MESSY));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), CANONICAL);
    let o = pexc(&["fmt", "--check", "-"], &dir, Some(MESSY));
    assert_eq!(code(&o), 1);
    assert!(o.stdout.is_empty());
    assert_eq!(stderr(&o), "<stdin>: not formatted\n");
    let o = pexc(&["fmt", "--check", "-"], &dir, Some(CANONICAL));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn cli_missing_file_exits_two_and_still_formats_the_others() {
    let dir = scratch("missing");
    std::fs::write(dir.join("a.pex"), MESSY).expect("written");
    let o = pexc(&["fmt", "nope.pex", "a.pex"], &dir, None);
    assert_eq!(code(&o), 2);
    assert_eq!(stderr(&o), "pexc: cannot read `nope.pex`: no such file\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("a.pex")).expect("read"),
        CANONICAL
    );
    let o = pexc(&["fmt", "."], &dir, None);
    assert_eq!(code(&o), 2);
    assert_eq!(stderr(&o), "pexc: cannot read `.`: is a directory\n");
    assert_eq!(
        code(&pexc(&["fmt"], &dir, None)),
        2,
        "no file is a usage error"
    );
}

#[test]
fn cli_syntax_error_exits_one_and_leaves_the_file() {
    let dir = scratch("syntax");
    let broken = "stage s {\n    steps: \n}\n";
    std::fs::write(dir.join("bad.pex"), broken).expect("written");
    let o = pexc(&["fmt", "bad.pex"], &dir, None);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("pex::syntax"), "{err}");
    assert!(err.contains("bad.pex:3:1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("bad.pex")).expect("read"),
        broken
    );
    let o = pexc(&["fmt", "--check", "bad.pex"], &dir, None);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("pex::syntax"));
}

#[cfg(unix)]
#[test]
fn cli_keeps_permissions_and_symbolic_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("links");
    std::fs::write(dir.join("real.pex"), MESSY).expect("written");
    std::fs::set_permissions(dir.join("real.pex"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    std::os::unix::fs::symlink("real.pex", dir.join("link.pex")).expect("symlink");
    let o = pexc(&["fmt", "link.pex"], &dir, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let link = std::fs::symlink_metadata(dir.join("link.pex")).expect("stat");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(dir.join("real.pex")).expect("read"),
        CANONICAL
    );
    let mode = std::fs::metadata(dir.join("real.pex"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

//! The `pexc` binary as users run it: exit codes 0/1/2, JSON on stdout, human diagnostics on
//! stderr, one-line I/O errors without backtraces.

use std::path::Path;
use std::process::{Command, Output};

fn pexc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pexc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("pexc runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_clean_file_exits_zero_silently() {
    let o = pexc(&["check", "tests/valid/minimal.pex"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(o.stderr.is_empty());
}

#[test]
fn errors_exit_one_with_rendered_diagnostics_on_stderr() {
    let o = pexc(&["check", "tests/invalid/resolution_not_divisible.pex"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("pex::resolution::not_divisible"), "{err}");
    assert!(
        err.contains("tests/invalid/resolution_not_divisible.pex:15:29"),
        "{err}"
    );
    assert!(err.contains("nearest valid resolutions: 56 or 64"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn json_goes_to_stdout_in_the_normative_shape() {
    let o = pexc(&[
        "check",
        "--format",
        "json",
        "tests/invalid/many_errors.pex",
        "tests/valid/minimal.pex",
    ]);
    assert_eq!(code(&o), 1);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let diags = doc["diagnostics"].as_array().expect("a diagnostics array");
    assert_eq!(diags.len(), 5);
    for d in diags {
        for key in [
            "severity", "code", "message", "file", "line", "column", "labels", "help",
        ] {
            assert!(d.get(key).is_some(), "missing {key} in {d}");
        }
        assert!(d["line"].as_u64().is_some_and(|l| l >= 1));
        assert!(d["column"].as_u64().is_some_and(|c| c >= 1));
        for l in d["labels"].as_array().expect("labels") {
            assert!(l["message"].is_string() && l["line"].is_u64() && l["column"].is_u64());
        }
    }
    assert_eq!(diags[0]["severity"], "error");
    assert_eq!(diags[4]["severity"], "warning");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn clean_json_is_an_empty_list() {
    let o = pexc(&["check", "--format", "json", "tests/valid/minimal.pex"]);
    assert_eq!(code(&o), 0);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    assert_eq!(doc, serde_json::json!({ "diagnostics": [] }));
}

#[test]
fn warnings_fail_only_with_deny_warnings() {
    let o = pexc(&["check", "tests/invalid/warn_unused.pex"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("pex::warn::unused"));
    let o = pexc(&["check", "--deny-warnings", "tests/invalid/warn_unused.pex"]);
    assert_eq!(code(&o), 1);
}

fn assert_io_error(o: &Output, fragment: &str) {
    assert_eq!(code(o), 2, "{}", stderr(o));
    let err = stderr(o);
    assert!(err.contains(fragment), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn a_missing_file_exits_two_with_one_line() {
    let o = pexc(&["check", "tests/no_such_file.pex"]);
    assert_io_error(
        &o,
        "pexc: cannot read `tests/no_such_file.pex`: no such file",
    );
    assert_eq!(stderr(&o).lines().count(), 1);
}

#[test]
fn a_directory_exits_two() {
    let o = pexc(&["check", "tests"]);
    assert_io_error(&o, "is a directory");
}

#[test]
fn one_unreadable_file_among_several_still_checks_the_others() {
    let o = pexc(&[
        "check",
        "tests/no_such_file.pex",
        "tests/invalid/warn_unused.pex",
    ]);
    assert_io_error(&o, "no such file");
    assert!(stderr(&o).contains("pex::warn::unused"));
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(code(&pexc(&["check"])), 2);
    assert_eq!(
        code(&pexc(&[
            "check",
            "--format",
            "yaml",
            "tests/valid/minimal.pex"
        ])),
        2
    );
    assert_eq!(
        code(&pexc(&["check", "--frobnicate", "tests/valid/minimal.pex"])),
        2
    );
    assert_eq!(code(&pexc(&["frobnicate"])), 2);
}

#[test]
fn paths_are_checked_only_when_asked() {
    let o = pexc(&["check", "tests/valid/paths.pex"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = pexc(&[
        "check",
        "--check-paths",
        "--format",
        "json",
        "tests/valid/paths.pex",
    ]);
    assert_eq!(code(&o), 1);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let diags = doc["diagnostics"].as_array().expect("array");
    // The weights file exists (it is a sibling file); the image root does not.
    let missing: Vec<(&str, u64)> = diags
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or(""),
                d["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(missing, [("pex::path::missing", 6)]);
}

/// Every command that reads an experiment: a missing file, a directory, a path through a
/// file (unreadable whoever runs it, root included) and a bad `--set` exit 2 with a
/// one-line message and no backtrace, even with RUST_BACKTRACE set.
#[test]
fn every_command_exits_two_on_io_and_usage_errors_without_a_backtrace() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pexc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("pexc runs")
    };
    let out = std::env::temp_dir().join(format!("pexc-cli-io-{}", std::process::id()));
    let out = out.to_string_lossy().into_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["plan"],
        vec!["graph"],
        vec!["explain"],
        vec!["fmt", "--check"],
        vec!["run", "--out", &out, "--backend", "cpu"],
    ];
    let files = [
        ("tests/no_such_file.pex", "no such file"),
        ("tests", "is a directory"),
        ("tests/valid/minimal.pex/inner.pex", "cannot read"),
    ];
    let mut cases = 0;
    for cmd in &commands {
        for (file, fragment) in files {
            let mut args = cmd.clone();
            args.push(file);
            let o = run(&args);
            assert_io_error(&o, fragment);
            assert!(stderr(&o).contains(file), "{args:?}: {}", stderr(&o));
            assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
            cases += 1;
        }
    }
    // A bad `--set` on the commands that take one.
    for cmd in [vec!["plan"], vec!["explain"], vec!["run", "--out", &out]] {
        for set in [
            "core.batch",
            "core.batch=((",
            "nowhere.x=1",
            "core.batch=\"many\"",
        ] {
            let mut args = cmd.clone();
            args.extend(["tests/runs/micro.pex", "--set", set]);
            let o = run(&args);
            assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                !err.contains("panicked") && !err.contains("backtrace"),
                "{err}"
            );
            assert!(!err.is_empty());
            cases += 1;
        }
    }
    assert_eq!(cases, 30);
    assert!(!Path::new(&out).exists(), "run created nothing");
}

#[test]
fn a_file_that_never_ends_is_refused_by_size_not_read_forever() {
    if !Path::new("/dev/zero").exists() {
        return;
    }
    let o = pexc(&["check", "/dev/zero"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pex::syntax::file_size"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn importing_a_directory_or_a_missing_file_is_a_diagnostic() {
    let d = std::env::temp_dir().join(format!("pexc-cli-import-{}", std::process::id()));
    std::fs::create_dir_all(d.join("lib.pex")).expect("dir");
    std::fs::write(
        d.join("root.pex"),
        "use \"lib.pex\"::{x}\nuse \"gone.pex\"::{y}\n",
    )
    .expect("write");
    let root = d.join("root.pex");
    let o = pexc(&["check", "--format", "json", &root.to_string_lossy()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let codes: Vec<&str> = doc["diagnostics"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(codes.contains(&"pex::import::unreadable"), "{codes:?}");
    assert!(codes.contains(&"pex::import::missing_file"), "{codes:?}");
    let _ = std::fs::remove_dir_all(&d);
}

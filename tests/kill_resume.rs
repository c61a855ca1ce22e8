//! Crash safety (issue 6, item 1): `pexc run` killed with SIGKILL at chosen moments (in
//! a phase, between phases, at the boundary between two stages, while evaluating, while
//! exporting) always resumes with `--resume` to the final metrics, evaluation and exports
//! of an uninterrupted run with the same seed, bit for bit (CPU backend).
//!
//! The fixture (tests/runs/two_stage.pex) has two stages, the second starting from the
//! first (`init: a`), two phases each. `cargo test` tries a few kill points; the full
//! campaign of at least 20 is
//!
//! ```sh
//! cargo test --release --test kill_resume -- --ignored --nocapture
//! ```
//!
//! (`PEXC_KILL_POINTS=N` asks for N timed kill points besides the 8 at events.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/two_stage.pex")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pexc-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn command(out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pexc"));
    c.arg("run")
        .arg(fixture())
        .arg("--out")
        .arg(out)
        .args(["--backend", "cpu", "--checkpoint-every", "2"])
        .env_remove("PEXC_FAULTS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

/// Everything of a finished run that must not depend on interruptions: the metrics
/// without timings, the evaluation, the exported weights and the stage records.
#[derive(Debug, PartialEq)]
struct Outcome {
    metrics: Vec<String>,
    eval: Value,
    export: Vec<u8>,
    records: Vec<String>,
}

fn outcome(dir: &Path) -> Outcome {
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("a whole JSON line");
            if let Some(o) = v.as_object_mut() {
                o.remove("samples_per_s");
            }
            v.to_string()
        })
        .collect();
    let eval =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).expect("eval.json"))
            .expect("json");
    // The records without `data`: what the data screening met is counted by the process
    // that met it (a resumed run does not meet again what the killed one did).
    let records = ["a", "b"]
        .iter()
        .map(|s| {
            let text =
                std::fs::read_to_string(dir.join(format!("stages/{s}.json"))).expect("record");
            let mut v: Value = serde_json::from_str(&text).expect("json");
            if let Some(o) = v.as_object_mut() {
                o.remove("data");
            }
            v.to_string()
        })
        .collect();
    Outcome {
        metrics,
        eval,
        export: std::fs::read(dir.join("exports/two_vision.safetensors")).expect("export"),
        records,
    }
}

/// When to kill.
#[derive(Clone, Debug)]
enum When {
    /// This long after the start.
    After(Duration),
    /// As soon as this file (relative to the run directory) exists.
    Exists(&'static str),
    /// As soon as metrics.jsonl holds a line of this stage and phase.
    Phase(&'static str, &'static str),
}

fn reached(dir: &Path, when: &When, started: Instant) -> bool {
    match when {
        When::After(t) => started.elapsed() >= *t,
        When::Exists(rel) => dir.join(rel).exists(),
        When::Phase(stage, phase) => std::fs::read_to_string(dir.join("metrics.jsonl"))
            .map(|s| s.contains(&format!("\"stage\":\"{stage}\",\"phase\":\"{phase}\"")))
            .unwrap_or(false),
    }
}

/// Starts a run, kills it with SIGKILL when `when` is reached; `true` when it was killed
/// (not finished first).
fn kill_at(dir: &Path, when: &When) -> bool {
    let mut child: Child = command(dir, false).spawn().expect("pexc starts");
    let started = Instant::now();
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if reached(dir, when, started) || started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The reference run, and how long it took.
fn reference() -> (PathBuf, Outcome, Duration) {
    let dir = fresh_dir("reference");
    let t = Instant::now();
    let out = command(&dir, false).output().expect("pexc runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = outcome(&dir);
    (dir, o, took)
}

/// Kills a run at each point, resumes it, and compares with the reference. Returns how
/// many kills happened (a point past the end of the run is not a kill).
fn campaign(points: &[When]) -> usize {
    let (ref_dir, want, took) = reference();
    eprintln!("reference run: {:.1}s", took.as_secs_f64());
    let mut killed = 0;
    for (k, when) in points.iter().enumerate() {
        let dir = fresh_dir(&format!("point{k}"));
        let was_killed = kill_at(&dir, when);
        let lines =
            std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |s| s.lines().count());
        let out = command(&dir, true).output().expect("pexc runs");
        assert!(
            out.status.success(),
            "kill point {k} ({when:?}): resume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = outcome(&dir);
        let at = format!("kill point {k} ({when:?}, {lines} metric lines before the kill)");
        assert_eq!(got.metrics.len(), want.metrics.len(), "{at}: metric lines");
        for (g, w) in got.metrics.iter().zip(&want.metrics) {
            assert_eq!(g, w, "{at}");
        }
        assert_eq!(got.eval, want.eval, "{at}: eval.json");
        assert!(
            got.export == want.export,
            "{at}: the exported weights differ"
        );
        assert_eq!(got.records, want.records, "{at}: stage records");
        // No partial file of the killed writer survives the resume.
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("dir").flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".tmp-"), "left over: {}", e.path().display());
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        if was_killed {
            killed += 1;
        }
        eprintln!(
            "kill point {k:2} {:<40} {} after {lines:2} metric lines; resumed: identical",
            format!("{when:?}"),
            if was_killed { "killed" } else { "finished" },
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&ref_dir);
    killed
}

/// Kill points at events: the boundaries of phases and stages, evaluation, export.
fn event_points() -> Vec<When> {
    vec![
        When::Exists("plan.json"),
        When::Exists("checkpoints/a/step-00000002.safetensors"),
        When::Phase("a", "r24"),
        When::Exists("stages/a.json"),
        When::Phase("b", "r24"),
        When::Phase("b", "r32"),
        When::Exists("eval.json"),
        When::Exists("exports/two_vision.safetensors"),
    ]
}

#[test]
fn killed_at_a_phase_boundary_a_stage_boundary_and_mid_stage_it_resumes_identically() {
    let points = [
        When::Phase("a", "r24"),
        When::Exists("stages/a.json"),
        When::Phase("b", "r32"),
    ];
    let killed = campaign(&points);
    assert!(
        killed >= 2,
        "only {killed} of 3 runs were killed before they ended"
    );
}

#[test]
#[ignore = "the full campaign: a few minutes; run with --ignored"]
fn killed_at_twenty_four_points_it_always_resumes_identically() {
    let timed: u32 = std::env::var("PEXC_KILL_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    // The length of an uninterrupted run, measured once, spread over `timed` points with
    // a fixed jitter so that they fall at no regular place within a step.
    let (dir, _, took) = reference();
    let _ = std::fs::remove_dir_all(dir);
    let mut points = event_points();
    for i in 0..timed {
        let jitter = ((i * 7919) % 97) as f64 / 97.0;
        let frac = (f64::from(i) + jitter) / f64::from(timed);
        points.push(When::After(took.mul_f64(frac)));
    }
    let n = points.len();
    let killed = campaign(&points);
    eprintln!("{killed} of {n} kill points hit a running pexc; every one resumed identically");
    assert!(killed >= 20, "only {killed} kills; the campaign needs 20");
}

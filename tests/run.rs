//! `pexc run` end to end on a micro experiment: the run directory of language.md section
//! 4, determinism, reuse of unchanged stages, and resumption after a SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn pexc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pexc"))
}

fn micro() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/micro.pex")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pexc-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(out: &Path, extra: &[&str]) -> std::process::Output {
    pexc()
        .arg("run")
        .arg(micro())
        .arg("--out")
        .arg(out)
        .args(["--backend", "cpu"])
        .args(extra)
        .output()
        .expect("pexc runs")
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The values a rerun must reproduce: everything but timings.
fn losses(m: &[Value]) -> Vec<(String, u64, String)> {
    m.iter()
        .map(|v| {
            (
                v["phase"].as_str().unwrap_or("").to_string(),
                v["step"].as_u64().unwrap_or(0),
                format!(
                    "{} {} {} {}",
                    v["loss"], v["clip"], v["mask_regularization"], v["lr"]
                ),
            )
        })
        .collect()
}

#[test]
fn a_run_writes_the_run_directory_and_is_deterministic() {
    let a = fresh_dir("a");
    let out = run(&a, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "plan.json",
        "metrics.jsonl",
        "eval.json",
        "report.md",
        "exports/micro_vision.safetensors",
    ] {
        assert!(a.join(f).is_file(), "{f} is missing");
    }
    assert!(a.join("sources").is_dir());
    let ckpts: Vec<_> = std::fs::read_dir(a.join("checkpoints/core"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!ckpts.is_empty());
    // plan.json has the normative plan keys.
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["stages"][0]["name"], "core");
    assert!(plan["train_flops"].as_f64().unwrap() > 0.0);
    // One metrics line per step, with the normative fields.
    let m = metrics(&a);
    assert_eq!(m.len(), 10);
    for key in [
        "stage",
        "phase",
        "step",
        "loss",
        "clip",
        "mask_regularization",
        "lr",
        "samples_per_s",
    ] {
        assert!(m.iter().all(|v| !v[key].is_null()), "metrics lack `{key}`");
    }
    assert_eq!(m[0]["phase"], "r16");
    assert_eq!(m[9]["phase"], "r24");
    assert_eq!(m[9]["step"], 10);
    // Warmup: lr rises from 0, then cosine falls to near 0 at the end.
    let lr: Vec<f64> = m.iter().map(|v| v["lr"].as_f64().unwrap()).collect();
    assert!(lr[0] < lr[2] && lr[9] < lr[3], "{lr:?}");
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("eval.json")).unwrap()).unwrap();
    assert!(eval["core"]["zero_shot_top1"].is_number(), "{eval}");
    assert!(eval["core"]["image_to_text_r1"].is_number(), "{eval}");

    // The same seed gives the same metrics, bit for bit.
    let b = fresh_dir("b");
    let out = run(&b, &[]);
    assert!(out.status.success());
    assert_eq!(losses(&metrics(&a)), losses(&metrics(&b)));

    // A second run into the same directory reuses the unchanged stage...
    let out = run(&a, &[]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reused core"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(metrics(&a).len(), 10);
    // ...and reruns it when its plan changes.
    let out = run(&a, &["--set", "core.r24.steps=3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("trained core"));
    assert_eq!(metrics(&a).len(), 8);
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_run_killed_mid_stage_resumes_to_the_same_final_metrics() {
    let whole = fresh_dir("whole");
    let out = run(&whole, &["--checkpoint-every", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = losses(&metrics(&whole));

    let cut = fresh_dir("cut");
    let mut child = pexc()
        .arg("run")
        .arg(micro())
        .arg("--out")
        .arg(&cut)
        .args(["--backend", "cpu", "--checkpoint-every", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pexc starts");
    // Kill it (SIGKILL: no handler runs) once it has written a checkpoint past step 2.
    let started = Instant::now();
    loop {
        let has = std::fs::read_dir(cut.join("checkpoints/core"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("step-0000000"))
            })
            .unwrap_or(false);
        let done = child.try_wait().ok().flatten().is_some();
        if has || done || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let steps_done = metrics_len(&cut);
    assert!(
        steps_done < 10,
        "the run finished before it could be killed"
    );
    let out = run(&cut, &["--checkpoint-every", "2", "--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = losses(&metrics(&cut));
    assert_eq!(got, want, "killed after {steps_done} metric lines");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
}

fn metrics_len(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |s| s.lines().count())
}

#[test]
fn an_unknown_backend_or_missing_gpu_is_an_error_not_a_panic() {
    let d = fresh_dir("cuda");
    let out = pexc()
        .arg("run")
        .arg(micro())
        .arg("--out")
        .arg(&d)
        .args(["--backend", "cuda"])
        .output()
        .expect("pexc runs");
    if out.status.success() {
        return; // a machine with a GPU and a CUDA build
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.to_lowercase().contains("cuda"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_model_with_weights_starts_from_the_official_checkpoint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/from_fixture.pex");
    let d = fresh_dir("weights");
    let out = pexc()
        .arg("run")
        .arg(&root)
        .arg("--out")
        .arg(&d)
        .args(["--backend", "cpu"])
        .output()
        .expect("pexc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same file read as a deeper tower does not fit: the error names the missing key.
    let out = pexc()
        .arg("run")
        .arg(&root)
        .arg("--out")
        .arg(&d)
        .args(["--backend", "cpu", "--set", "vision.depth=4"])
        .output()
        .expect("pexc runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("transformer.resblocks.3"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn what_the_runtime_does_not_do_is_refused_before_training() {
    let d = fresh_dir("bf16");
    let out = run(&d, &["--set", "core.precision=bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("precision: bf16") && err.contains("not supported"),
        "{err}"
    );
    assert!(!d.join("metrics.jsonl").exists(), "nothing trained");
    let _ = std::fs::remove_dir_all(&d);
}

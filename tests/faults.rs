//! Faults injected into `pexc run` (issue 6): a loss or gradient that goes non-finite, a
//! disk that fills while a checkpoint is written, a second run into a directory in use, a
//! plan that needs more memory than allowed, bad data, untrusted checkpoint files and
//! paths that do not exist or are the wrong kind. Each test makes the fault happen and
//! checks what the user gets: a message naming where, an exit code, and a run directory
//! from which `--resume` still reaches the uninterrupted result.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn pexc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pexc"));
    c.env("NO_COLOR", "1").env_remove("PEXC_FAULTS");
    c
}

fn micro() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/micro.pex")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pexc-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `pexc run FILE --out OUT --backend cpu EXTRA...` with `PEXC_FAULTS=faults`.
fn run_file(file: &Path, out: &Path, faults: Option<&str>, extra: &[&str]) -> Output {
    let mut c = pexc();
    c.arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .args(["--backend", "cpu"])
        .args(extra);
    if let Some(f) = faults {
        c.env("PEXC_FAULTS", f);
    }
    c.output().expect("pexc runs")
}

fn run(out: &Path, faults: Option<&str>, extra: &[&str]) -> Output {
    run_file(&micro(), out, faults, extra)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// What a rerun must reproduce: everything but timings.
fn losses(m: &[Value]) -> Vec<String> {
    m.iter()
        .map(|v| {
            format!(
                "{} {} {} {} {} {} {}",
                v["stage"], v["phase"], v["step"], v["loss"], v["clip"], v["lr"], v["grad_norm"]
            )
        })
        .collect()
}

fn checkpoints(dir: &Path, stage: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints").join(stage))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A safetensors file whose header and tensors are whole.
fn loads(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 8 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let Some(header) = bytes.get(8..8 + n) else {
        return false;
    };
    let Ok(h) = serde_json::from_slice::<Value>(header) else {
        return false;
    };
    let end = h
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, t)| t["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0) as usize;
    bytes.len() == 8 + n + end
}

fn no_panic(o: &Output) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

// ------------------------------------------------------------------ numerical faults

#[test]
fn a_nan_loss_stops_naming_stage_phase_step_and_term_and_keeps_the_checkpoint() {
    let d = fresh_dir("nan");
    let o = run(
        &d,
        Some("nan_loss@7:mask_regularization"),
        &["--checkpoint-every", "2"],
    );
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage `core`, phase `r24`, step 7: the loss is NaN (the term `mask_regularization` went bad)"),
        "{err}"
    );
    assert!(
        err.contains("the last good checkpoint, step 6, is kept"),
        "{err}"
    );
    assert!(err.contains("skip_nonfinite"), "{err}");
    // Steps 1-6 are recorded, the good checkpoints are whole, and the stage is not done.
    assert_eq!(metrics(&d).len(), 6);
    let kept = checkpoints(&d, "core");
    assert_eq!(
        kept,
        ["step-00000005.safetensors", "step-00000006.safetensors"]
    );
    for k in &kept {
        assert!(loads(&d.join("checkpoints/core").join(k)), "{k}");
    }
    assert!(!d.join("stages/core.json").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_infinite_gradient_stops_the_stage_with_the_loss_terms() {
    let d = fresh_dir("inf");
    let o = run(&d, Some("inf_grad@3"), &[]);
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage `core`, phase `r16`, step 3: the gradient norm is inf"),
        "{err}"
    );
    assert!(err.contains("`clip`"), "{err}");
    assert!(
        err.contains("there is no checkpoint of this stage yet"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_real_divergence_is_caught_without_injection() {
    // A learning rate of 1e30: the weights overflow after the first updates.
    let d = fresh_dir("diverge");
    let o = run(
        &d,
        None,
        &["--set", "core.optimizer=adamw(lr: 1e30, weight_decay: 0.0)"],
    );
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("stage `core`, phase `r16`, step "), "{err}");
    assert!(
        err.contains("went bad") || err.contains("the gradient norm is"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn skip_nonfinite_skips_a_bounded_number_of_bad_steps() {
    let whole = fresh_dir("skip-whole");
    let o = run(&whole, None, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    // One bad step within a budget of one: skipped, counted, reported.
    let d = fresh_dir("skip");
    let o = run(&d, Some("nan_loss@3"), &["--set", "core.skip_nonfinite=1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o)
            .contains("note: stage `core`: 1 step(s) with a non-finite loss or gradient skipped"),
        "{}",
        stdout(&o)
    );
    let m = metrics(&d);
    assert_eq!(m.len(), 10);
    assert!(m[2]["skipped"]
        .as_str()
        .is_some_and(|s| s.contains("the loss is NaN (the term `clip` went bad)")));
    assert!(m[2]["loss"].is_null());
    // The steps before it are those of a run without the fault; the step after it
    // differs (one update fewer).
    let want = metrics(&whole);
    assert_eq!(losses(&m[..2]), losses(&want[..2]));
    assert_ne!(losses(&m[3..4]), losses(&want[3..4]));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("stages/core.json")).expect("record"))
            .expect("json");
    assert_eq!(record["skipped_steps"], 1);

    // Two bad steps with a budget of one: the second stops the stage.
    let d2 = fresh_dir("skip2");
    let o = run(
        &d2,
        Some("nan_loss@3,inf_grad@8"),
        &["--set", "core.skip_nonfinite=1"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("step 8: the gradient norm is inf"), "{err}");
    assert!(
        err.contains("1 such steps were already skipped (`skip_nonfinite: 1`)"),
        "{err}"
    );
    for x in [whole, d, d2] {
        let _ = std::fs::remove_dir_all(x);
    }
}

// ------------------------------------------------------------------ disk full

#[test]
fn a_full_disk_while_checkpointing_keeps_the_previous_checkpoint_and_resumes() {
    let whole = fresh_dir("disk-whole");
    let o = run(&whole, None, &["--checkpoint-every", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let d = fresh_dir("disk");
    let o = run(
        &d,
        Some("write_fail@step-00000006"),
        &["--checkpoint-every", "2"],
    );
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("step-00000006.safetensors"), "{err}");
    assert!(err.contains("no space left on device"), "{err}");
    // The previous checkpoints are whole; no partial file is left.
    let kept = checkpoints(&d, "core");
    // Steps 4 and 5 (the end of phase r16): the newest two before the failed one.
    assert_eq!(
        kept,
        ["step-00000004.safetensors", "step-00000005.safetensors"]
    );
    for k in &kept {
        assert!(loads(&d.join("checkpoints/core").join(k)), "{k}");
    }
    // `--resume` continues from step 5 to the uninterrupted result.
    let o = run(&d, None, &["--checkpoint-every", "2", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&metrics(&d)), losses(&metrics(&whole)));
    assert_eq!(
        std::fs::read(d.join("exports/micro_vision.safetensors")).expect("export"),
        std::fs::read(whole.join("exports/micro_vision.safetensors")).expect("export"),
    );
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&whole);
}

#[test]
fn a_bad_fault_spec_is_refused() {
    let d = fresh_dir("spec");
    let o = run(&d, Some("explode@3"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("PEXC_FAULTS: `explode@3` is not a fault"));
    let _ = std::fs::remove_dir_all(&d);
}

// ------------------------------------------------------------------ concurrency

#[test]
fn a_second_run_into_a_directory_in_use_refuses_and_a_killed_one_leaves_no_lock() {
    let d = fresh_dir("lock");
    // A long first run, so that it is surely still running when the second starts.
    let mut first = pexc()
        .arg("run")
        .arg(micro())
        .arg("--out")
        .arg(&d)
        .args(["--backend", "cpu", "--set", "core.r24.steps=100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pexc starts");
    // Wait until it holds the lock (it writes plan.json after taking it).
    let started = Instant::now();
    while !d.join("plan.json").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = run(&d, None, &[]);
    let still_running = first.try_wait().ok().flatten().is_none();
    let _ = first.kill(); // SIGKILL: the lock is never released by the process itself
    let _ = first.wait();
    assert!(still_running, "the first run ended early");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "is in use by another pexc run (pid {})",
            first.id()
        )),
        "{err}"
    );
    assert!(d.join(".lock").exists(), "the lock file stays");
    // The killed owner's lock does not hold: the next run proceeds (and, its plan being
    // another, does not resume from the killed run's checkpoints).
    let o = run(&d, None, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&d);
}

// ------------------------------------------------------------------ resources

#[test]
fn a_plan_that_needs_more_memory_than_allowed_is_refused_before_training() {
    let d = fresh_dir("mem");
    let o = run(&d, None, &["--max-memory", "1MiB"]);
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage `core`, phase `r16` needs an estimated")
            && err.contains("more than the limit of --max-memory (1.00 MiB)")
            && err.contains("micro-batch of 16"),
        "{err}"
    );
    assert!(!d.join("metrics.jsonl").exists(), "nothing trained");
    // Without a limit: the machine's memory. A batch of 2^40 needs more than any has.
    let o = run(&d, None, &["--set", "core.batch=1099511627776"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("more than the memory available on this machine"),
        "{err}"
    );
    // A bad size is a usage error.
    let o = run(&d, None, &["--max-memory", "lots"]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&d);
}

// ------------------------------------------------------------------ bad data

/// An image_text folder of 40 captioned images, 6 of them bad: a cut PNG, bytes that are
/// no image, a line without caption, an empty caption, a caption longer than the context
/// and an image file that is not there. Returns the experiment file.
fn bad_data_experiment(dir: &Path, on_bad: &str) -> PathBuf {
    let root = dir.join("images");
    std::fs::create_dir_all(&root).expect("dir");
    let png = |colour: [u8; 3]| {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            if (4..12).contains(&x) && (4..12).contains(&y) {
                image::Rgb(colour)
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    };
    let mut lines = Vec::new();
    for i in 0..40 {
        let (word, colour) = if i % 2 == 0 {
            ("red", [220, 20, 20])
        } else {
            ("blue", [20, 20, 220])
        };
        let name = format!("{i:02}.png");
        let mut bytes = png(colour);
        match i {
            3 => bytes.truncate(bytes.len() / 2),
            8 => bytes = b"this is not an image".to_vec(),
            _ => {}
        }
        std::fs::write(root.join(&name), bytes).expect("write");
        lines.push(match i {
            5 => format!("{{\"image\": \"{name}\"}}"),
            6 => format!("{{\"image\": \"{name}\", \"text\": \"  \"}}"),
            11 => format!(
                "{{\"image\": \"{name}\", \"text\": \"a {word} square {}\"}}",
                "with a very long story about it ".repeat(4)
            ),
            14 => "{\"image\": \"missing.png\", \"text\": \"a red square\"}".to_string(),
            _ => format!("{{\"image\": \"{name}\", \"text\": \"a {word} square\"}}"),
        });
    }
    std::fs::write(root.join("captions.jsonl"), lines.join("\n")).expect("write");
    let file = dir.join("bad_data.pex");
    std::fs::write(
        &file,
        format!(
            r#"model vision = vit(patch: 8, width: 32, depth: 1, heads: 2, mlp: 64, pos: [abs],
                   cls: true, pool: attention(heads: 2), out: 16, image: 16)
model text = clip_text(context: 16, width: 32, depth: 1, heads: 2, vocab: 300, out: 16)
data pairs = image_text(root: "images", captions: "captions.jsonl", on_bad: "{on_bad}")
stage core {{
    train:     [vision, text]
    data:      pairs
    optimizer: adamw(lr: 1e-3, weight_decay: 0.0)
    batch:     8
    loss:      clip(max_logit_scale: 100)
    resolution: 16
    steps:     6
}}
"#
        ),
    )
    .expect("write");
    file
}

#[test]
fn bad_samples_are_skipped_counted_and_named_with_on_bad_skip() {
    let d = fresh_dir("bad-skip");
    let file = bad_data_experiment(&d, "skip");
    let out = d.join("run");
    let o = run_file(&file, &out, None, &[]);
    no_panic(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let note = text
        .lines()
        .find(|l| l.contains("note: stage `core`: data:"))
        .unwrap_or_else(|| panic!("no data note in {text}"));
    // Two lines left out at open; the cut, undecodable, long-captioned and missing images
    // when the samples that name them are loaded.
    assert!(note.contains("6 bad samples skipped"), "{note}");
    for name in ["captions.jsonl:6", "captions.jsonl:7", "03.png", "08.png"] {
        assert!(note.contains(name), "{name} in {note}");
    }
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("stages/core.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(record["data"]["skipped"], 6, "{record}");
    assert_eq!(record["data"]["first"].as_array().map(Vec::len), Some(5));
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains("6 bad samples skipped"), "{report}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_samples_are_an_error_naming_the_file_by_default() {
    let d = fresh_dir("bad-error");
    let file = bad_data_experiment(&d, "error");
    let out = d.join("run");
    let o = run_file(&file, &out, None, &[]);
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("captions.jsonl:6"), "{err}");
    // Without the lines that lack a caption, the first bad image stops the run.
    let captions = d.join("images/captions.jsonl");
    let text = std::fs::read_to_string(&captions).expect("read");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"text\": \"a"))
        .collect();
    std::fs::write(&captions, kept.join("\n")).expect("write");
    let o = run_file(&file, &out, None, &[]);
    no_panic(&o);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(".png")
            && (err.contains("decode") || err.contains("context") || err.contains("cannot read")),
        "{err}"
    );
    // A value that is neither: a diagnostic at its span.
    let bad = d.join("bad_value.pex");
    let src = std::fs::read_to_string(&file)
        .expect("read")
        .replace("on_bad: \"error\"", "on_bad: \"ignore\"");
    std::fs::write(&bad, src).expect("write");
    let o = pexc().arg("check").arg(&bad).output().expect("runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pex::value::out_of_range") && err.contains(r#""error" or "skip""#),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

// ------------------------------------------------------------------ untrusted files

/// A pickle that, unpickled by Python, runs `os.system(command)` (protocol 2: GLOBAL,
/// BINUNICODE, TUPLE1, REDUCE), inside a dict as a state dict would be.
fn evil_pickle(command: &str) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}', b'X'];
    p.extend_from_slice(&6u32.to_le_bytes());
    p.extend_from_slice(b"weight");
    p.extend_from_slice(b"cos\nsystem\n");
    p.push(b'X');
    p.extend_from_slice(&(command.len() as u32).to_le_bytes());
    p.extend_from_slice(command.as_bytes());
    p.extend_from_slice(&[0x85, b'R', b's', b'.']);
    p
}

/// A zip archive of stored (uncompressed) members, as `torch.save` writes them.
fn zip_stored(members: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let local = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0; 8]); // comment, disk, internal attributes
                h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(local(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend(local(0x0201_4b50, true));
    }
    let start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn a_malicious_pt_file_is_refused_and_its_code_never_runs() {
    let d = fresh_dir("evil");
    std::fs::create_dir_all(&d).expect("dir");
    let marker = d.join("pwned");
    let command = format!("touch {}", marker.display());
    let pickle = evil_pickle(&command);
    // Both layouts torch.save has used: a bare pickle, and a zip with archive/data.pkl.
    std::fs::write(d.join("evil_plain.pt"), &pickle).expect("write");
    std::fs::write(
        d.join("evil_zip.pt"),
        zip_stored(&[("archive/data.pkl", &pickle), ("archive/version", b"3\n")]),
    )
    .expect("write");
    for name in ["evil_plain.pt", "evil_zip.pt"] {
        let file = d.join(format!("{name}.pex"));
        let src = std::fs::read_to_string(micro())
            .expect("micro")
            .replace("image: 16)", &format!("image: 16, weights: \"{name}\")"));
        std::fs::write(&file, src).expect("write");
        let o = run_file(&file, &d.join("run"), None, &[]);
        no_panic(&o);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(name), "{err}");
        assert!(!marker.exists(), "{name}: the pickled os.system ran");
        assert!(!d.join("run/metrics.jsonl").exists(), "nothing trained");
    }
    // The same pickle is what Python would run: the test's bytes are the attack.
    assert!(pickle.windows(11).any(|w| w == b"cos\nsystem\n"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_paths_and_paths_of_the_wrong_kind_are_diagnostics_before_running() {
    let d = fresh_dir("paths");
    std::fs::create_dir_all(d.join("a_directory")).expect("dir");
    std::fs::write(d.join("a_file.jsonl"), "").expect("write");
    let cases = [
        (
            r#"image_text(root: "nowhere", captions: "c.jsonl")"#,
            "pex::path::missing",
            "`nowhere` does not exist",
        ),
        (
            r#"image_text(root: "a_file.jsonl", captions: "c.jsonl")"#,
            "pex::path::wrong_kind",
            "is a file, not a directory",
        ),
        (
            r#"webdataset(shards: "a_directory")"#,
            "pex::path::wrong_kind",
            "is a directory, not a file",
        ),
    ];
    for (data, code, message) in cases {
        let file = d.join("paths.pex");
        let src = std::fs::read_to_string(micro())
            .expect("micro")
            .replace("synthetic_shapes(count: 120, seed: 3, classes: 4)", data);
        std::fs::write(&file, src).expect("write");
        let o = run_file(&file, &d.join("run"), None, &[]);
        no_panic(&o);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{data}: {err}");
        assert!(err.contains(code) && err.contains(message), "{data}: {err}");
        assert!(err.contains("paths.pex:"), "at its span: {err}");
        assert!(!d.join("run").exists(), "nothing ran");
    }
    // Weights that are a directory.
    let file = d.join("weights.pex");
    let src = std::fs::read_to_string(micro())
        .expect("micro")
        .replace("image: 16)", "image: 16, weights: \"a_directory\")");
    std::fs::write(&file, src).expect("write");
    let o = run_file(&file, &d.join("run"), None, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("pex::path::wrong_kind"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

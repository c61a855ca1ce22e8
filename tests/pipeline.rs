//! The whole PE pipeline at test size (tests/runs/pipeline_small.pex): every stage kind
//! runs in DAG order, the data engine writes a `video_text` dataset the video stage reads,
//! every evaluation lands in eval.json and the report, and a change to the captioner's
//! stage reruns what depends on it and reuses the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/pipeline_small.pex")
}

fn run(out: &Path, extra: &[&str]) -> (String, Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_pexc"))
        .arg("run")
        .arg(fixture())
        .arg("--out")
        .arg(out)
        .args(["--backend", "cpu"])
        .args(extra)
        .output()
        .expect("pexc runs");
    // Progress on stderr, the summary on stdout.
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(o.status.success(), "pexc run failed:\n{err}");
    let eval = std::fs::read_to_string(out.join("eval.json")).expect("eval.json");
    (err, serde_json::from_str(&eval).expect("eval.json is JSON"))
}

/// The stage names of the summary's "trained ..., reused ..." line.
fn summary(stderr: &str) -> (Vec<String>, Vec<String>) {
    let line = stderr
        .lines()
        .find(|l| l.contains(": trained "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let after = &line[line.find(": trained ").unwrap() + 10..];
    let (trained, reused) = after.split_once(", reused ").expect("reused part");
    let names = |s: &str| -> Vec<String> {
        s.split(", ")
            .map(str::trim)
            .filter(|n| !n.is_empty() && *n != "none")
            .map(String::from)
            .collect()
    };
    (names(trained), names(reused))
}

#[test]
fn the_whole_pipeline_runs_and_a_changed_captioner_reruns_only_what_depends_on_it() {
    let out = std::env::temp_dir().join(format!("pexc-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (err, eval) = run(&out, &[]);
    let (trained, reused) = summary(&err);
    assert_eq!(
        trained,
        ["core", "distill", "lang", "engine", "video", "spatial"],
        "{err}"
    );
    assert!(reused.is_empty());

    // Contrastive stages: zero-shot and retrieval; every trained tower: a probe per block.
    for s in ["core", "distill", "video"] {
        assert!(eval[s]["zero_shot_top1"].is_number(), "{s}: {}", eval[s]);
    }
    for (s, depth) in [
        ("core", 3),
        ("distill", 2),
        ("lang", 2),
        ("video", 3),
        ("spatial", 3),
    ] {
        let l = &eval[s]["layers"];
        assert_eq!(
            l["blocks"].as_array().map(Vec::len),
            Some(depth),
            "{s}: {l}"
        );
        for key in ["classification_top1", "dense_miou"] {
            for v in l[key].as_array().expect(key) {
                let v = v.as_f64().expect("a score");
                assert!((0.0..=1.0).contains(&v), "{s} {key} {v}");
            }
        }
        assert!(out.join(format!("plots/{s}_layers.svg")).exists());
    }
    // The language stage answers questions; the video stage is scored on held-out clips,
    // beside the image-only model it started from.
    assert!(eval["lang"]["questions"]["mean_accuracy"].is_number());
    let v = &eval["video"]["video"];
    assert_eq!(v["frames"], 4);
    assert!(
        v["zero_shot_top1"].is_number() && v["core_zero_shot_top1"].is_number(),
        "{v}"
    );
    // The same predictions by kind of motion, and the paired test against the start model
    // over the same clips: every clip is right by both, one, or neither.
    assert_eq!(v["kinds"]["names"].as_array().map(Vec::len), Some(4), "{v}");
    let t = &v["against_core"];
    let right = |k: &str| t[k].as_u64().expect(k);
    let clips = v["clips"].as_u64().unwrap_or(0);
    let top1 = |k: &str| (v[k].as_f64().unwrap_or(-1.0) * clips as f64).round() as u64;
    assert_eq!(
        right("only_this") + right("both"),
        top1("zero_shot_top1"),
        "{t}"
    );
    assert_eq!(
        right("only_base") + right("both"),
        top1("core_zero_shot_top1"),
        "{t}"
    );
    let p = t["p_value"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&p), "{t}");

    // The data engine's dataset: one folder of PNG frames and one JSONL line per training
    // clip (27 of 30), each line its folder, a caption and the captioner's answers on the
    // first, middle and last frame.
    assert_eq!(eval["engine"]["captions"]["clips"], 27);
    let root = out.join("data/engine/captions");
    let jsonl = std::fs::read_to_string(root.join("captions.jsonl")).expect("captions.jsonl");
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 27);
    for l in &lines {
        let folder = root.join(l["video"].as_str().expect("video"));
        let mut frames: Vec<_> = std::fs::read_dir(&folder)
            .expect("clip folder")
            .flatten()
            .map(|e| e.path())
            .collect();
        frames.sort();
        assert_eq!(frames.len(), 4, "{}", folder.display());
        let png = std::fs::read(&frames[0]).expect("frame");
        assert_eq!(&png[1..4], b"PNG");
        assert!(
            l["text"].as_str().is_some_and(|t| t.starts_with("a ")),
            "{l}"
        );
        let answers = l["answers"].as_array().expect("answers");
        assert_eq!(
            answers
                .iter()
                .map(|a| a["frame"].as_u64())
                .collect::<Vec<_>>(),
            [Some(0), Some(2), Some(3)]
        );
        for k in ["shape", "colour", "position", "size"] {
            assert!(answers[0][k].is_string(), "{l}");
        }
    }
    for e in ["small", "clip_vision", "pe_spatial"] {
        assert!(out.join(format!("exports/{e}.safetensors")).exists(), "{e}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for s in [
        "Layer-wise probes",
        "Video zero-shot",
        "Question answering",
        "Captioned 27 clips",
    ] {
        assert!(report.contains(s), "{s} missing from the report");
    }

    // Unchanged: everything reused.
    let (err, _) = run(&out, &[]);
    let (trained, reused) = summary(&err);
    assert!(trained.is_empty(), "{err}");
    assert_eq!(reused.len(), 6);

    // A different language stage: a different captioner. It, the engine, the video stage
    // (which reads the engine's captions) and the spatial stage after it rerun; core and
    // distill are reused.
    let (err, eval2) = run(&out, &["--set", "lang.seed=9"]);
    let (trained, reused) = summary(&err);
    assert_eq!(trained, ["lang", "engine", "video", "spatial"], "{err}");
    assert_eq!(reused, ["core", "distill"]);
    assert_eq!(eval2["core"], eval["core"]);
    let _ = std::fs::remove_dir_all(&out);
}

//! `pexc plan`, `graph`, `explain` and `--set`, as users run them: snapshots of what they
//! read for every experiment, the cost model against the paper's claim (computed here by
//! an independent closed form), the lr schedule, content hashes, and every `--set` error.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The plan JSON of a file, with overrides.
fn plan(file: &str, sets: &[&str]) -> Value {
    let mut args = vec!["plan", "--format", "json", file];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let o = pexc(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("the plan is JSON")
}

fn stage<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

/// Every experiment file that has stages, as a relative path.
fn experiments() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["experiments/pe", "experiments/tiny"] {
        for e in std::fs::read_dir(root.join(dir))
            .expect("library")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pex") && name != "common.pex" {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out.sort();
    out
}

fn suffix(file: &str) -> String {
    file.trim_start_matches("experiments/")
        .trim_end_matches(".pex")
        .replace('/', "_")
}

#[test]
fn plan_of_every_experiment_as_json_and_table() {
    let files = experiments();
    assert!(files.len() >= 12, "{files:?}");
    for file in files {
        let json = pexc(&["plan", "--format", "json", &file]);
        assert_eq!(code(&json), 0, "{file}: {}", stderr(&json));
        let doc: Value = serde_json::from_slice(&json.stdout).expect("JSON");
        // The normative shape (language.md section 3).
        assert!(doc["train_flops"].is_f64(), "{file}");
        for s in doc["stages"].as_array().expect("stages") {
            assert!(s["name"].is_string() && s["after"].is_array() && s["train_flops"].is_f64());
            for p in s["phases"].as_array().expect("phases") {
                for key in [
                    "resolution",
                    "batch",
                    "steps",
                    "samples",
                    "tokens_per_image",
                ] {
                    assert!(p[key].is_u64(), "{file}: {key} of {p}");
                }
                assert!(p["train_flops"].is_f64() && p["name"].is_string());
            }
        }
        let table = pexc(&["plan", &file]);
        assert_eq!(code(&table), 0, "{file}: {}", stderr(&table));
        insta::with_settings!({ snapshot_suffix => suffix(&file), prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("plan_json", stdout(&json));
            insta::assert_snapshot!("plan_table", stdout(&table));
        });
    }
}

#[test]
fn graph_and_explain_of_the_pipelines() {
    for file in [
        "experiments/tiny/pipeline.pex",
        "experiments/pe/pipeline.pex",
    ] {
        let dot = pexc(&["graph", file]);
        let mermaid = pexc(&["graph", "--format", "mermaid", file]);
        let explain = pexc(&["explain", file]);
        for o in [&dot, &mermaid, &explain] {
            assert_eq!(code(o), 0, "{}", stderr(o));
        }
        insta::with_settings!({ snapshot_suffix => suffix(file), prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("graph_dot", stdout(&dot));
            insta::assert_snapshot!("graph_mermaid", stdout(&mermaid));
            insta::assert_snapshot!("explain", stdout(&explain));
        });
    }
}

#[test]
fn explain_one_path_says_where_each_value_came_from() {
    let file = "experiments/tiny/pipeline.pex";
    let o = pexc(&["explain", file, "core.r48.batch"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "core.r48.batch = 32   # inherited from stage `core`: experiments/tiny/pipeline.pex:100"
    );
    // A default of the catalogue, a `with` update, a preset and a `--set`.
    let o = pexc(&["explain", file, "student.ln_post"]);
    assert!(stdout(&o).contains("default of `vit` (called at experiments/tiny/common.pex:21)"));
    let o = pexc(&["explain", file, "student.width"]);
    assert!(stdout(&o).contains("`with` at experiments/tiny/pipeline.pex:78"));
    let o = pexc(&["explain", "experiments/pe/core_g14.pex", "vision.depth"]);
    assert!(
        stdout(&o).contains("vision.depth = 50   # preset at std/pe.pex:"),
        "{}",
        stdout(&o)
    );
    let o = pexc(&["explain", file, "vision.depth", "--set", "vision.depth=6"]);
    assert_eq!(
        stdout(&o).trim(),
        "vision.depth = 6   # --set vision.depth=6"
    );
    // An unknown path is a usage error with a suggestion.
    let o = pexc(&["explain", file, "core.r48.bach"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("did you mean `core.r48.batch`?"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------- the cost model

/// Forward FLOPs of a ViT on one image, written as "2 x (matrix parameters touched per
/// token) x tokens + attention scores", independently of the code under test.
fn vit_forward(a: &Value, res: f64) -> f64 {
    let f = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{k} in {a}"));
    let (p, w, d, m) = (f("patch"), f("width"), f("depth"), f("mlp"));
    let cls = if a["cls"] == true { 1.0 } else { 0.0 };
    let patches = (res / p).floor().powi(2);
    let t = patches + cls;
    let block_matrices = 4.0 * w * w + 2.0 * w * m; // qkv + out, two MLP matrices
    let attention = 2.0 * 2.0 * t * t * w; // QK^T and AV, 2 FLOPs each
    let mut flops = 2.0 * patches * (3.0 * p * p) * w + d * (2.0 * t * block_matrices + attention);
    if a["pool"]["ctor"] == "attention" {
        // One query: q and out projections and the MLP once, k and v for every token.
        flops += 2.0 * (2.0 * w * w + 2.0 * w * m) + 2.0 * t * 2.0 * w * w + 2.0 * 2.0 * t * w;
    }
    if let Some(out) = a["out"].as_f64() {
        flops += 2.0 * w * out;
    }
    flops
}

fn text_forward(a: &Value) -> f64 {
    let f = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{k} in {a}"));
    let (c, w, d, m) = (f("context"), f("width"), f("depth"), f("mlp"));
    d * (2.0 * c * (4.0 * w * w + 2.0 * w * m) + 4.0 * c * c * w) + 2.0 * w * f("out")
}

/// Training FLOPs of a CLIP stage by the closed form: 3 x forward x samples per phase.
fn clip_stage_flops(s: &Value) -> f64 {
    let models = s["models"].as_array().expect("models");
    let vision = &models
        .iter()
        .find(|m| m["role"] == "vision")
        .expect("vision")["config"]["args"];
    let text = &models.iter().find(|m| m["role"] == "text").expect("text")["config"]["args"];
    s["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| {
            let res = p["resolution"].as_f64().expect("resolution");
            let samples = p["samples"].as_f64().expect("samples");
            3.0 * samples * (vit_forward(vision, res) + text_forward(text))
        })
        .sum()
}

#[test]
fn progressive_resolution_costs_about_half_of_fixed_224_on_l14() {
    let plan = plan("experiments/pe/core_l14_ablation.pex", &[]);
    let baseline = stage(&plan, "baseline");
    let progressive = stage(&plan, "progressive");
    let ladder = stage(&plan, "ladder336");
    for s in [baseline, progressive, ladder] {
        let ours = s["train_flops"].as_f64().expect("flops");
        let closed = clip_stage_flops(s);
        assert!(
            ((ours - closed) / closed).abs() < 1e-9,
            "{}: plan {ours:e} vs closed form {closed:e}",
            s["name"]
        );
    }
    let ratio = |a: &Value, b: &Value| {
        a["train_flops"].as_f64().expect("flops") / b["train_flops"].as_f64().expect("flops")
    };
    // The paper: 98/154/224 at 4B samples each "halves training FLOPs" of 12B at 224.
    let r = ratio(progressive, baseline);
    assert!(
        (0.50..=0.62).contains(&r),
        "98/154/224 costs {r:.3} of fixed 224"
    );
    eprintln!("98/154/224 (4B each) / 224 (12B): {r:.4}");
    eprintln!(
        "98/154/224/336 (10B/8B/4B/2B) / 224 (12B): {:.4}",
        ratio(ladder, baseline)
    );
}

#[test]
fn g14_memory_estimate_follows_its_parameter_count() {
    let plan = plan("experiments/pe/core_g14.pex", &[]);
    let core = stage(&plan, "core");
    let vision = core["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["role"] == "vision")
        .expect("vision");
    let params = vision["params"].as_f64().expect("params");
    // pe-reference.md: G/14 has 1.88B parameters.
    assert!((params / 1.88e9 - 1.0).abs() < 0.01, "{params}");
    let r448 = core["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["resolution"] == 448)
        .expect("a 448 phase");
    let mem = &r448["memory"];
    let all = mem["params"].as_f64().expect("params");
    let trainable = mem["trainable"].as_f64().expect("trainable");
    assert_eq!(all, trainable, "core trains everything");
    assert_eq!(mem["fp32"]["params"].as_f64(), Some(4.0 * all));
    assert_eq!(mem["fp32"]["grads"].as_f64(), Some(4.0 * trainable));
    assert_eq!(mem["fp32"]["optimizer"].as_f64(), Some(8.0 * trainable));
    let act32 = mem["fp32"]["activations_per_sample"].as_f64().expect("act");
    let act16 = mem["bf16"]["activations_per_sample"].as_f64().expect("act");
    assert_eq!(act32, 2.0 * act16);
    // 1025 tokens of width 1536 through 50 blocks: far more than one copy of the tokens.
    assert!(act32 > 4.0 * 50.0 * 1025.0 * 1536.0);
    eprintln!(
        "G/14 at 448: params {all:e} ({} GiB fp32), activations per image {:.2} GiB fp32",
        4.0 * all / (1u64 << 30) as f64,
        act32 / (1u64 << 30) as f64
    );
}

// ---------------------------------------------------------------- steps and schedules

#[test]
fn samples_become_steps_rounding_up_and_the_plan_says_so() {
    let plan = plan("experiments/tiny/core.pex", &["core.r32.samples=1000"]);
    let r32 = &stage(&plan, "core")["phases"][0];
    assert_eq!(r32["steps"], 32);
    assert_eq!(r32["samples"], 1024);
    assert_eq!(
        r32["work"],
        "1000 samples / batch 32, rounded up: 1024 samples"
    );
    // The next phase starts where this one ends.
    assert_eq!(stage(&plan, "core")["phases"][1]["first_step"], 32);
}

#[test]
fn stage_lr_spans_the_stage_and_phase_lr_restarts_at_the_phase() {
    let plan = plan("experiments/tiny/pipeline.pex", &[]);
    let core = stage(&plan, "core");
    let r48 = &core["phases"][1];
    assert_eq!(r48["first_step"], 560);
    let segs = r48["lr"].as_array().expect("segments");
    assert_eq!(segs.len(), 1, "only the cosine overlaps r48: {segs:?}");
    assert_eq!(segs[0]["shape"], "cosine");
    assert_eq!(
        (segs[0]["start"].as_u64(), segs[0]["end"].as_u64()),
        (Some(30), Some(1260))
    );
    assert_eq!(segs[0]["from"].as_f64(), Some(2e-3));
    let lang = stage(&plan, "lang");
    let full = &lang["phases"][1];
    let segs = full["lr"].as_array().expect("segments");
    let spans: Vec<(u64, u64, &str)> = segs
        .iter()
        .map(|s| {
            (
                s["start"].as_u64().unwrap_or(0),
                s["end"].as_u64().unwrap_or(0),
                s["shape"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(spans, vec![(60, 80, "warmup"), (80, 460, "cosine")]);
    assert_eq!(
        segs[1]["from"].as_f64(),
        Some(1e-3),
        "the full phase's own peak"
    );
}

#[test]
fn a_changed_stage_changes_its_hash_and_every_hash_downstream() {
    let a = plan("experiments/tiny/pipeline.pex", &[]);
    let again = plan("experiments/tiny/pipeline.pex", &[]);
    let b = plan("experiments/tiny/pipeline.pex", &["decoder.depth=3"]);
    let hash = |p: &Value, s: &str| stage(p, s)["hash"].as_str().expect("hash").to_string();
    for s in ["core", "distill", "lang", "engine", "video", "spatial"] {
        assert_eq!(hash(&a, s), hash(&again, s), "{s} is deterministic");
        assert_eq!(hash(&a, s).len(), 64);
    }
    // The decoder is lang's; the captioner uses it; video reads the captions; spatial
    // starts from video.
    for s in ["core", "distill"] {
        assert_eq!(
            hash(&a, s),
            hash(&b, s),
            "{s} does not depend on the decoder"
        );
    }
    for s in ["lang", "engine", "video", "spatial"] {
        assert_ne!(hash(&a, s), hash(&b, s), "{s} depends on the decoder");
    }
}

#[test]
fn set_overrides_change_the_plan_and_are_checked() {
    let l14 = plan(
        "experiments/pe/core_l14.pex",
        &["core.batch=32Ki", "core.r98.samples=1M"],
    );
    let core = &l14["stages"][0];
    assert_eq!(core["phases"][0]["batch"], 32768);
    assert_eq!(core["phases"][0]["steps"], 31); // ceil(1M / 32768)
                                                // A derived default follows the value it derives from: the text tower's mlp is the
                                                // default 4 x width; the vision tower's is written, and stays.
    let p = plan(
        "experiments/tiny/core.pex",
        &["text.width=128", "vision.width=192"],
    );
    let models = &stage(&p, "core")["models"];
    assert_eq!(models[1]["name"], "text");
    assert_eq!(models[1]["config"]["args"]["mlp"], 512);
    assert_eq!(models[0]["config"]["args"]["mlp"], 256);
}

// ---------------------------------------------------------------- --set errors

/// Runs `plan` with one bad override: exit 2, the code, and the rendered diagnostic.
fn bad_set(set: &str, code_expected: &str) -> String {
    let o = pexc(&["plan", "experiments/tiny/pipeline.pex", "--set", set]);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(err.contains(code_expected), "{err}");
    assert!(o.stdout.is_empty());
    err
}

macro_rules! set_error {
    ($name:ident, $set:expr, $code:expr) => {
        #[test]
        fn $name() {
            let err = bad_set($set, $code);
            insta::assert_snapshot!(err);
        }
    };
}

set_error!(set_without_equals, "core.batch", "pex::set::malformed");
set_error!(set_path_not_a_name, "core.2x=1", "pex::set::malformed");
set_error!(set_value_syntax_error, "core.batch=(64", "pex::syntax");
set_error!(set_unknown_name, "cor.batch=64", "pex::set::unknown_path");
set_error!(
    set_unknown_field_or_phase,
    "core.bach=64",
    "pex::set::unknown_path"
);
set_error!(
    set_unknown_argument,
    "vision.dpeth=3",
    "pex::set::unknown_path"
);
set_error!(
    set_wrong_type,
    "core.r32.steps=\"many\"",
    "pex::type::mismatch"
);
set_error!(
    set_out_of_range,
    "vision.depth=0",
    "pex::value::out_of_range"
);
set_error!(
    set_stage_only_field_in_phase,
    "core.r32.seed=3",
    "pex::phase::stage_only_field"
);
set_error!(
    set_into_a_number,
    "core.batch.size=3",
    "pex::set::unknown_path"
);
set_error!(set_a_whole_stage, "core=1", "pex::set::unknown_path");
set_error!(
    set_inside_an_absent_argument,
    "vision.layer_scale.init=1",
    "pex::set::unknown_path"
);
set_error!(
    set_unknown_name_in_value,
    "core.batch=bach",
    "pex::name::unknown"
);

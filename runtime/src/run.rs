//! `pexc run`: executes a plan stage by stage in DAG order into a run directory, reusing
//! stages whose content hash is unchanged, resuming interrupted ones, then evaluates and
//! writes the report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use pexc_compiler::lower::plan::{ModelInit, Plan, Role, StageKind, StagePlan};
use serde_json::{json, Value};

use crate::backend::{self, Choice, Resolved};
use crate::checkpoint::{self, Stored};
use crate::report;
use crate::rundir::{write_atomic, Lock, RunDir};
use crate::train::{self, StageOptions};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    pub backend: Choice,
    pub resume: bool,
    /// Run only this stage and what it needs.
    pub stage: Option<String>,
    /// A few steps per phase, to check that everything runs.
    pub smoke: bool,
    /// The sources to copy into the run directory: (name as shown, text).
    pub sources: Vec<(String, String)>,
    pub progress: bool,
    /// A checkpoint every this many steps (and at the end of every phase).
    pub checkpoint_every: u64,
    /// Refuse a plan whose memory estimate for a phase exceeds this many bytes (default:
    /// on the CPU, the machine's available memory).
    pub max_memory: Option<u64>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub backend: String,
    pub trained: Vec<String>,
    pub reused: Vec<String>,
    pub eval: Value,
    pub stopped: bool,
    /// What the user must know about a result: bad samples skipped, captions cut,
    /// non-finite steps skipped, by stage.
    pub notes: Vec<String>,
}

/// The stages to run: all, or `only` and everything it depends on, in plan order.
fn selected<'p>(plan: &'p Plan, only: Option<&str>) -> Result<Vec<&'p StagePlan>, String> {
    let Some(name) = only else {
        return Ok(plan.stages.iter().collect());
    };
    if plan.stage(name).is_none() {
        let names: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "--stage {name}: no such stage (stages: {})",
            names.join(", ")
        ));
    }
    let mut need = vec![name.to_string()];
    let mut i = 0;
    while i < need.len() {
        if let Some(s) = plan.stage(&need[i]) {
            for a in &s.after {
                if !need.contains(a) {
                    need.push(a.clone());
                }
            }
        }
        i += 1;
    }
    Ok(plan
        .stages
        .iter()
        .filter(|s| need.contains(&s.name))
        .collect())
}

/// Runs a plan.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<RunSummary, String> {
    crate::fault::check_env()?;
    crate::alloc::keep_freed_memory();
    let resolved = backend::resolve(opts.backend)?;
    if opts.progress {
        eprintln!("pexc: backend {}", resolved.name());
    }
    match resolved {
        Resolved::Cpu => run_with::<backend::CpuTrain>(plan, opts, &Default::default(), resolved),
        #[cfg(feature = "cuda")]
        Resolved::Cuda => run_with::<backend::CudaTrain>(plan, opts, &Default::default(), resolved),
        #[cfg(not(feature = "cuda"))]
        Resolved::Cuda => Err("this pexc was built without CUDA".into()),
    }
}

fn run_with<B: AutodiffBackend>(
    plan: &Plan,
    opts: &RunOptions,
    device: &B::Device,
    resolved: Resolved,
) -> Result<RunSummary, String> {
    let started = Instant::now();
    let dir = RunDir::create(&opts.out)
        .map_err(|e| format!("cannot create `{}`: {e}", opts.out.display()))?;
    let _lock = Lock::acquire(&dir)?;
    // What a killed run was writing when it died.
    let cleaned = crate::rundir::clean_temporaries(&dir);
    if cleaned > 0 && opts.progress {
        eprintln!("pexc: removed {cleaned} partial file(s) an interrupted run left");
    }
    let stages = selected(plan, opts.stage.as_deref())?;
    // Everything a stage cannot do fails before any training starts.
    for s in &stages {
        check_supported(s)?;
    }
    let limit = match (opts.max_memory, resolved) {
        (Some(b), _) => Some((b as f64, "the limit of --max-memory".to_string())),
        (None, Resolved::Cpu) => {
            available_memory().map(|b| (b, "the memory available on this machine".to_string()))
        }
        // The estimate is per device; without a limit, the GPU's own check applies.
        (None, _) => None,
    };
    if let Some((bytes, what)) = limit {
        check_memory(&stages, bytes, &what)?;
    }
    let plan_json = serde_json::to_string_pretty(plan).map_err(|e| e.to_string())?;
    write_atomic(&dir.path("plan.json"), plan_json.as_bytes())
        .map_err(|e| format!("plan.json: {e}"))?;
    for (name, text) in &opts.sources {
        let rel = name.trim_start_matches("./").replace("..", "_");
        write_atomic(&dir.path(&format!("sources/{rel}")), text.as_bytes())
            .map_err(|e| format!("sources: {e}"))?;
    }

    let mut summary = RunSummary {
        backend: resolved.name().into(),
        ..Default::default()
    };
    let mut eval: serde_json::Map<String, Value> = std::fs::read_to_string(dir.path("eval.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    for stage in stages {
        let record_path = dir.stage_record(&stage.name);
        let record: Option<Value> = std::fs::read_to_string(&record_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
        let reusable = !opts.smoke
            && record.as_ref().is_some_and(|r| {
                r["hash"] == stage.hash.as_str()
                    && r["checkpoint"]
                        .as_str()
                        .is_some_and(|p| dir.root.join(p).exists())
            });
        if reusable {
            if opts.progress {
                eprintln!(
                    "pexc: stage `{}` unchanged (hash {}): reused",
                    stage.name,
                    &stage.hash[..12]
                );
            }
            summary.reused.push(stage.name.clone());
            continue;
        }
        let _ = std::fs::remove_file(&record_path);
        let init = initial_weights(stage, plan, &dir)?;
        if stage.kind == StageKind::Caption {
            // The data engine: no training, a dataset written whole.
            let wrote = crate::caption::run_caption_stage::<B::InnerBackend>(
                stage,
                plan,
                &dir,
                &init,
                opts.progress,
                opts.smoke.then_some(16),
                &Default::default(),
            )?;
            eval.insert(stage.name.clone(), json!({"captions": wrote.clone()}));
            write_eval(&dir, &eval)?;
            let record = json!({
                "hash": stage.hash,
                "checkpoint": wrote["dataset"],
                "towers": {},
                "captions": wrote,
            });
            write_atomic(&record_path, record.to_string().as_bytes())
                .map_err(|err| format!("{}: {err}", record_path.display()))?;
            summary.trained.push(stage.name.clone());
            continue;
        }
        let sopts = StageOptions {
            resume: opts.resume,
            checkpoint_every: opts.checkpoint_every.max(1),
            max_steps_per_phase: opts.smoke.then_some(2),
            progress: opts.progress,
        };
        let trained = train::train_stage::<B>(stage, plan, &dir, &init, &sopts, device)
            .inspect_err(|_| {
                if opts.progress {
                    eprintln!(); // end the progress line
                }
            })?;
        if trained.stopped {
            summary.stopped = true;
            if opts.progress {
                eprintln!(
                    "pexc: stopped; `pexc run --resume` continues from {}",
                    trained.last_checkpoint.display()
                );
            }
            break;
        }
        // Evaluate on held-out data, export, and record the stage as done.
        let valid = trained.model.valid();
        let e = crate::eval::evaluate_stage(
            &valid,
            &trained.towers,
            stage,
            plan,
            &dir,
            &trained.bad,
            opts.smoke,
            device,
        )?;
        let mut stage_notes = Vec::new();
        if let Some(s) = trained.bad.summary() {
            stage_notes.push(format!("stage `{}`: data: {s}", stage.name));
        }
        if trained.skipped_steps > 0 {
            stage_notes.push(format!(
                "stage `{}`: {} step(s) with a non-finite loss or gradient skipped (`skip_nonfinite: {}`)",
                stage.name, trained.skipped_steps, stage.skip_nonfinite
            ));
        }
        for n in &stage_notes {
            if opts.progress {
                eprintln!("pexc: {n}");
            }
        }
        summary.notes.extend(stage_notes);
        eval.insert(stage.name.clone(), e);
        write_eval(&dir, &eval)?;
        for ex in &stage.exports {
            let tensors: Vec<(String, Stored)> = match trained.towers.part(&ex.model) {
                Some("vision") => checkpoint::collect(&valid.vision, ""),
                Some("text") => match &valid.text {
                    Some(t) => checkpoint::collect(t, ""),
                    None => continue,
                },
                _ => continue,
            };
            // In the official PE layout (language.md section 4), so that `weights:` and
            // the official code load it.
            crate::export::write(
                &dir.path(&format!("exports/{}.safetensors", ex.name)),
                &crate::export::tower(&tensors),
                json!({"stage": stage.name, "model": ex.model}),
            )?;
        }
        let rel = trained
            .last_checkpoint
            .strip_prefix(&dir.root)
            .unwrap_or(&trained.last_checkpoint)
            .to_string_lossy()
            .into_owned();
        let t = &trained.towers;
        let record = json!({
            "hash": stage.hash,
            "checkpoint": rel,
            "towers": {"vision": t.vision, "text": t.text, "proj": t.proj, "decoder": t.decoder},
            "data": trained.bad.to_json(),
            "skipped_steps": trained.skipped_steps,
        });
        write_atomic(&record_path, record.to_string().as_bytes())
            .map_err(|err| format!("{}: {err}", record_path.display()))?;
        summary.trained.push(stage.name.clone());
    }
    summary.eval = Value::Object(eval.clone());

    // The report, with plots.
    let metrics = dir.read_metrics();
    for st in &plan.stages {
        let (loss, lr) = report::series(&metrics, &st.name);
        if loss.iter().all(|(_, p)| p.is_empty()) {
            continue;
        }
        let _ = write_atomic(
            &dir.path(&format!("plots/{}_loss.svg", st.name)),
            report::svg_plot(&format!("{}: loss", st.name), "loss", &loss).as_bytes(),
        );
        let _ = write_atomic(
            &dir.path(&format!("plots/{}_lr.svg", st.name)),
            report::svg_plot(&format!("{}: learning rate", st.name), "lr", &lr).as_bytes(),
        );
    }
    let mut md = report::markdown(
        plan,
        &metrics,
        &Value::Object(eval),
        resolved.name(),
        started.elapsed().as_secs_f64(),
    );
    if !summary.notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in &summary.notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    write_atomic(&dir.path("report.md"), md.as_bytes()).map_err(|e| format!("report.md: {e}"))?;
    Ok(summary)
}

fn write_eval(dir: &RunDir, eval: &serde_json::Map<String, Value>) -> Result<(), String> {
    write_atomic(
        &dir.path("eval.json"),
        serde_json::to_string_pretty(&Value::Object(eval.clone()))
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|err| format!("eval.json: {err}"))
}

/// Bytes the kernel says can be allocated without swapping (`MemAvailable` of
/// /proc/meminfo); `None` where that is unknown.
pub fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Bytes as people read them: `1.50 GiB`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Refuses, before anything runs, a plan one of whose phases needs more memory (the
/// plan's estimate, at the phase's precision) than `limit` bytes.
pub fn check_memory(stages: &[&StagePlan], limit: f64, what: &str) -> Result<(), String> {
    for s in stages {
        for p in &s.phases {
            let m = if p.precision == "bf16" {
                &p.memory.bf16
            } else {
                &p.memory.fp32
            };
            if m.total > limit {
                return Err(format!(
                    "stage `{}`, phase `{}` needs an estimated {} ({} parameters, {} gradients, {} optimizer state, {} activations for a micro-batch of {}), more than {what} ({}); lower the batch or the resolution, or set --max-memory if the estimate is too cautious",
                    s.name,
                    p.name,
                    human_bytes(m.total),
                    human_bytes(m.params),
                    human_bytes(m.grads),
                    human_bytes(m.optimizer),
                    human_bytes(m.activations),
                    p.memory.micro_batch,
                    human_bytes(limit),
                ));
            }
        }
    }
    Ok(())
}

/// What this runtime cannot run yet is an error before anything starts.
fn check_supported(stage: &StagePlan) -> Result<(), String> {
    train::clip::towers(stage).map(|_| ())
}

/// The trained tensors of model `model` of the finished stage `from`, keyed by path
/// inside the model.
fn stage_model_tensors(
    plan: &Plan,
    dir: &RunDir,
    from: &str,
    model: &str,
) -> Result<HashMap<String, Stored>, String> {
    if plan.stage(from).is_none() {
        return Err(format!("stage `{from}` is not in the plan"));
    }
    let record: Value = std::fs::read_to_string(dir.stage_record(from))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(|| format!("stage `{from}` has not finished in this run directory"))?;
    let ckpt = record["checkpoint"].as_str().unwrap_or_default();
    let src_field = record["towers"]
        .as_object()
        .and_then(|t| t.iter().find(|(_, v)| v.as_str() == Some(model)))
        .map(|(k, _)| k.clone())
        .ok_or_else(|| format!("stage `{from}` did not train `{model}`"))?;
    let (tensors, _) = checkpoint::load(&dir.root.join(ckpt))?;
    let prefix = format!("{src_field}.");
    Ok(tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|r| (r.to_string(), v)))
        .collect())
}

/// The starting weights of the stage's towers that come from earlier stages, keyed by
/// path inside the tower.
fn initial_weights(
    stage: &StagePlan,
    plan: &Plan,
    dir: &RunDir,
) -> Result<HashMap<String, HashMap<String, Stored>>, String> {
    let mut out = HashMap::new();
    let mut wanted: Vec<(String, &pexc_compiler::lower::plan::ModelPlan)> = Vec::new();
    for m in &stage.models {
        let part = match m.role {
            Role::Vision => "vision",
            Role::Text => "text",
            Role::Projector => "proj",
            Role::Decoder => "decoder",
        };
        wanted.push((part.to_string(), m));
    }
    for t in &stage.teachers {
        for (i, m) in t.models.iter().enumerate() {
            wanted.push((train::teacher::weights_key(&t.name, i), m));
        }
    }
    for (key, m) in wanted {
        match &m.init {
            ModelInit::Random => {}
            ModelInit::Weights { path } => {
                // A checkpoint in the official PE layout (`.pt` or `.safetensors`): the
                // vision keys of a CLIP file or a vision-only file, or the text keys.
                use crate::model::official::{from_official, read_tensors, Tower};
                let tower = match m.role {
                    Role::Vision => Tower::Vision,
                    Role::Text => Tower::Text,
                    _ => {
                        return Err(format!(
                            "stage `{}`: `{}`: `weights` of a {:?} model are not supported by this runtime yet",
                            stage.name, m.name, m.role
                        ))
                    }
                };
                let tensors = read_tensors(std::path::Path::new(path))
                    .map_err(|e| format!("stage `{}`: `{}`: {e}", stage.name, m.name))?;
                out.insert(key, from_official(&tensors, tower));
            }
            ModelInit::Stage { stage: from, model } => {
                out.insert(key, stage_model_tensors(plan, dir, from, model)?);
            }
        }
    }
    Ok(out)
}

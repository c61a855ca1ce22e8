//! The training loop of a stage: phases in order (resolution and batch change, model and
//! optimizer state carry over), the plan's lr segments, global-norm clipping, metrics per
//! step, atomic checkpoints, resumption, a clean stop on Ctrl-C.

pub mod clip;
pub mod teacher;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{Ctor, DataPlan, PhasePlan, Plan, StagePlan};
use serde_json::json;

use crate::checkpoint::{self, Stored};
use crate::data::{self, Dataset, Split};
use crate::optim::{global_grad_norm, OptimConfig, Optimizer};
use crate::rng::SplitMix;
use crate::rundir::RunDir;
use crate::schedule::lr_at;
use clip::{Batch, ClipModel, DecoderBatch, Towers};

/// How a stage runs.
#[derive(Clone, Debug)]
pub struct StageOptions {
    /// Continue from the stage's last checkpoint when there is one.
    pub resume: bool,
    /// A checkpoint every this many steps (and at the end of every phase).
    pub checkpoint_every: u64,
    /// At most this many steps per phase (`--smoke`).
    pub max_steps_per_phase: Option<u64>,
    /// Progress on stderr.
    pub progress: bool,
}

/// Threads that load data ahead of the step, and how many batches they may hold.
const LOAD_WORKERS: usize = 1;
const LOAD_DEPTH: usize = 3;

/// Set by Ctrl-C: the loop checkpoints and stops at the next step boundary.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The result of a stage.
pub struct Trained<B: AutodiffBackend> {
    pub model: ClipModel<B>,
    pub towers: Towers,
    pub last_checkpoint: std::path::PathBuf,
    pub stopped: bool,
    /// The bad samples the stage's data met (skipped with `on_bad: "skip"`), and captions
    /// cut to the context.
    pub bad: Arc<data::BadLog>,
    /// Steps skipped for a non-finite loss or gradient (`skip_nonfinite`), resumed ones
    /// included.
    pub skipped_steps: u64,
}

/// Tokens for a batch of captions.
fn tokens<B: AutodiffBackend>(
    tok: &data::Tokenizer,
    texts: &[String],
    context: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let mut ids = Vec::with_capacity(texts.len() * context);
    for t in texts {
        ids.extend(tok.encode(t, context).0);
    }
    Tensor::from_data(TensorData::new(ids, [texts.len(), context]), device)
}

/// Images of a batch as one (n * frames, 3, r, r) tensor: a sample of stacked frames
/// (`data::FrameStack`) gives its frames in order.
pub fn images<B: burn::tensor::backend::Backend>(
    samples: &[data::Sample],
    frames: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let frames = frames.max(1);
    let (h, w) = samples
        .first()
        .map_or((0, 0), |s| (s.height / frames, s.width));
    let mut v = Vec::with_capacity(samples.len() * 3 * h * w * frames);
    for s in samples {
        v.extend_from_slice(&s.image);
    }
    Tensor::from_data(
        TensorData::new(v, [samples.len() * frames, 3, h, w]),
        device,
    )
}

/// The decoder's next-token batch of `texts`: input ids `[SOT, t1, ..]` of `context`
/// ids, the ids they predict (shifted by one), and weight 1 up to and with the end token.
pub fn decoder_batch<B: burn::tensor::backend::Backend>(
    tok: &data::Tokenizer,
    texts: &[String],
    context: usize,
    device: &B::Device,
) -> DecoderBatch<B> {
    let n = texts.len();
    let (mut input, mut target, mut weight) = (
        Vec::with_capacity(n * context),
        Vec::with_capacity(n * context),
        Vec::with_capacity(n * context),
    );
    for t in texts {
        let (row, eot) = tok.encode(t, context + 1);
        input.extend_from_slice(&row[..context]);
        target.extend_from_slice(&row[1..]);
        weight.extend((0..context).map(|j| if j < eot { 1f32 } else { 0.0 }));
    }
    DecoderBatch {
        input: Tensor::from_data(TensorData::new(input, [n, context]), device),
        target: Tensor::from_data(TensorData::new(target, [n, context]), device),
        weight: Tensor::from_data(TensorData::new(weight, [n, context]), device),
    }
}

/// The text a decoder learns from for the sample at stage position `pos`: its caption,
/// or (three times in four, where the data has them) one of its question/answer pairs as
/// "question answer" (PE-lang trains on captions and QA; the answers are what the data
/// engine's captioner needs).
pub fn decoder_text(
    ds: &dyn Dataset,
    idx: usize,
    caption: &str,
    seed: u64,
    pos: u64,
) -> Result<String, String> {
    let qa = ds.questions(idx).map_err(|e| e.to_string())?;
    let mut r = SplitMix::derive(seed, 0x9A, pos);
    if qa.is_empty() || r.below(4) == 0 {
        return Ok(caption.to_string());
    }
    let (q, a) = &qa[r.below(qa.len())];
    Ok(format!("{q} {a}"))
}

/// Removes from `grads` the gradients of `module`'s parameters (a model frozen in a
/// phase is not updated, nor counted in the gradient norm).
fn drop_grads<B: AutodiffBackend, M: burn::module::Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
) {
    use burn::module::{ModuleVisitor, Param};
    struct Drop<'a> {
        grads: &'a mut GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Drop<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = self.grads.remove::<B::InnerBackend, D>(param.id);
        }
    }
    module.visit(&mut Drop { grads });
}

/// The checkpoint file of `step`.
fn checkpoint_path(dir: &RunDir, stage: &str, step: u64) -> std::path::PathBuf {
    dir.checkpoints(stage)
        .join(format!("step-{step:08}.safetensors"))
}

/// The newest readable checkpoint of a stage written by the plan of content hash `hash`
/// (a checkpoint of the stage as it was before an edit is not a place to resume from).
pub fn latest_checkpoint(
    dir: &RunDir,
    stage: &str,
    hash: &str,
) -> Option<(std::path::PathBuf, u64)> {
    let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir.checkpoints(stage))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().rev().find_map(|(step, p)| {
        // A checkpoint that does not load (a crash while writing cannot leave one, but a
        // full disk elsewhere might) is skipped for the one before it.
        let (_, meta) = checkpoint::load(&p).ok()?;
        (meta["hash"] == hash).then_some((p, step))
    })
}

/// The sample index of a stage-global sample position: epochs of the training split,
/// each shuffled by the stage seed. The orders are kept by split length and epoch: the
/// phases of a stage may read data of different lengths (image cooldown, then clips).
type Orders = HashMap<(usize, u64), Vec<usize>>;

fn sample_at(pos: u64, len: usize, seed: u64, orders: &mut Orders) -> usize {
    let len = len.max(1);
    let epoch = pos / len as u64;
    let order = orders.entry((len, epoch)).or_insert_with(|| {
        let mut idx: Vec<usize> = (0..len).collect();
        SplitMix::derive(seed, 0xDA7A, epoch).shuffle(&mut idx);
        idx
    });
    order[(pos % len as u64) as usize]
}

/// Trains a contrastive stage. `init` gives the starting weights of the towers that start
/// from an earlier stage, by tower (`vision`, `text`), keyed by path inside the tower.
pub fn train_stage<B: AutodiffBackend>(
    stage: &StagePlan,
    plan: &Plan,
    dir: &RunDir,
    init: &HashMap<String, HashMap<String, Stored>>,
    opts: &StageOptions,
    device: &B::Device,
) -> Result<Trained<B>, String> {
    let mut towers = clip::towers(stage)?;
    // A tower an earlier stage trained with LayerScale keeps it.
    if let Some(v) = init.get("vision") {
        if checkpoint::has_layer_scale(v) && towers.vision_config.layer_scale.is_none() {
            towers.vision_config.layer_scale = Some(1.0);
        }
    }
    B::seed(device, stage.seed);
    let mut model: ClipModel<B> = ClipModel::new(&towers, stage, device);
    // Towers that start from an earlier stage or a file: tensors keyed by their path
    // inside the tower.
    let cannot = |name: &Option<String>, e: String| {
        format!(
            "stage `{}`: cannot initialise `{}`: {e}",
            stage.name,
            name.as_deref().unwrap_or("?")
        )
    };
    if let Some(t) = init.get("vision") {
        // A `layer_scale` regulariser adds LayerScale to a tower trained without it: its
        // factors start at the regulariser's value, the branch projections rescaled so
        // that the tower starts from the function it was trained to.
        let mut t = t.clone();
        if let Some(ls) = towers.vision_config.layer_scale {
            checkpoint::insert_layer_scale(&mut t, ls);
        }
        model.vision = checkpoint::assign_allowing(model.vision, &t, "", |k| k.contains(".ls_"))
            .map_err(|e| cannot(&Some(towers.vision.clone()), e))?;
    }
    if let Some(t) = init.get("text") {
        if let Some(m) = model.text.take() {
            let m = checkpoint::assign(m, t, "").map_err(|e| cannot(&towers.text, e))?;
            model.text = Some(m);
        }
    }

    if let Some(t) = init.get("proj") {
        if let Some(m) = model.proj.take() {
            let m = checkpoint::assign(m, t, "").map_err(|e| cannot(&towers.proj, e))?;
            model.proj = Some(m);
        }
    }

    if let Some(t) = init.get("decoder") {
        if let Some(m) = model.decoder.take() {
            let m = checkpoint::assign(m, t, "").map_err(|e| cannot(&towers.decoder, e))?;
            model.decoder = Some(m);
        }
    }

    let inner_device = device.clone();
    let teachers = teacher::build::<B::InnerBackend>(
        stage,
        plan,
        towers.vision_config.patch,
        init,
        &inner_device,
    )?;
    let base_drop_path = towers.vision_config.drop_path;
    let first_opt = stage
        .phases
        .first()
        .and_then(|p| p.optimizer.as_ref())
        .ok_or_else(|| format!("stage `{}` has no optimizer", stage.name))?;
    let mut optim: Optimizer<B> = Optimizer::new(OptimConfig::from_plan(first_opt)?);

    // Resume.
    let mut start_step = 0u64;
    if opts.resume {
        if let Some((path, step)) = latest_checkpoint(dir, &stage.name, &stage.hash) {
            let (tensors, _) = checkpoint::load(&path)?;
            model = checkpoint::assign(model, &tensors, "")
                .map_err(|e| format!("`{}`: {e}", path.display()))?;
            optim.state = checkpoint::restore_moments(&tensors, device);
            start_step = step;
            dir.truncate_metrics(&stage.name, step)
                .map_err(|e| format!("metrics.jsonl: {e}"))?;
        } else {
            dir.drop_stage_metrics(&stage.name)
                .map_err(|e| format!("metrics.jsonl: {e}"))?;
        }
    } else {
        dir.drop_stage_metrics(&stage.name)
            .map_err(|e| format!("metrics.jsonl: {e}"))?;
        let _ = std::fs::remove_dir_all(dir.checkpoints(&stage.name));
    }

    // Data: the training split, a tokenizer learned from its captions.
    let mut datasets: HashMap<String, Arc<dyn Dataset>> = HashMap::new();
    let mut last_checkpoint = checkpoint_path(dir, &stage.name, start_step);
    let tokenizer = stage_tokenizer(stage, &towers)?;
    let context = towers.text_config.as_ref().map(|t| t.context);
    let dec_context = towers.decoder_config.as_ref().map(|d| d.context);
    let bad_log = Arc::new(data::BadLog::default());
    // Non-finite steps skipped before a resume count against the budget too.
    let mut skipped_steps = dir
        .read_metrics()
        .iter()
        .filter(|m| m["stage"] == stage.name.as_str() && !m["skipped"].is_null())
        .count() as u64;

    let mut cursor = 0u64; // stage-global sample position
    let mut orders = Orders::new();
    let mut stopped = false;
    for phase in &stage.phases {
        let phase_steps = opts
            .max_steps_per_phase
            .map_or(phase.steps, |m| m.min(phase.steps));
        let end = phase.first_step + phase_steps;
        if end <= start_step {
            cursor += phase.steps * phase.batch;
            continue;
        }
        if let Some(o) = &phase.optimizer {
            optim.reconfigure(OptimConfig::from_plan(o)?);
        }
        let frames = phase.frames.unwrap_or(1).max(1) as usize;
        let ds = dataset(
            phase,
            dir,
            &mut datasets,
            &tokenizer,
            towers.context(),
            &bad_log,
        )?;
        // The phase's regularisers and what it trains.
        let drop_path = phase
            .regularize
            .iter()
            .find(|r| r.ctor == "drop_path")
            .and_then(|r| r.float("p"));
        match drop_path {
            Some(p) => model.set_drop_path(p),
            None => {
                for b in model.vision.transformer.resblocks.iter_mut() {
                    b.drop_path = base_drop_path;
                }
            }
        }
        let token_mask = phase
            .regularize
            .iter()
            .find(|r| r.ctor == "token_mask")
            .map(|r| {
                let (br, bc) = r.pair("block").unwrap_or((1.0, 1.0));
                (
                    r.float("ratio").unwrap_or(0.0),
                    (br.max(1.0) as usize, bc.max(1.0) as usize),
                )
            });
        let trained: Vec<&str> = phase.train.iter().filter_map(|m| towers.part(m)).collect();
        let next_token = phase.loss.iter().any(|l| l.term.ctor == "next_token");
        let batch = phase.batch as usize;
        let res = phase.resolution as usize;
        let copies = clip::masked_copies(&phase.loss, batch);
        let ratio = phase
            .loss
            .iter()
            .find(|l| l.term.ctor == "mask_regularization")
            .and_then(|l| l.term.float("ratio"))
            .unwrap_or(0.0);
        let grid = (
            res / towers.vision_config.patch.max(1),
            res / towers.vision_config.patch.max(1),
        );
        let patches = grid.0 * grid.1;
        let began = phase.first_step.max(start_step);
        cursor += (began - phase.first_step) * phase.batch;
        // Every step's samples and augmentation seeds are a function of the stage seed and
        // the sample position alone, so a resumed run loads what an uninterrupted one did;
        // a worker thread loads them ahead of the step.
        let requests: Vec<data::BatchRequest> = (0..end - began)
            .map(|k| {
                let base = cursor + k * phase.batch;
                let positions = base..base + phase.batch;
                data::BatchRequest {
                    indices: positions
                        .clone()
                        .map(|p| sample_at(p, ds.len(), stage.seed, &mut orders))
                        .collect(),
                    seeds: positions
                        .map(|p| SplitMix::derive(stage.seed, 0xA06, p).next_u64())
                        .collect(),
                    res,
                }
            })
            .collect();
        let step_indices: Vec<Vec<usize>> = requests.iter().map(|r| r.indices.clone()).collect();
        let mut loader = data::Prefetch::new(ds.clone(), LOAD_WORKERS, LOAD_DEPTH, requests);
        let t_phase = Instant::now();
        for step in began..end {
            if STOP.load(Ordering::SeqCst) {
                stopped = true;
                break;
            }
            let t0 = Instant::now();
            // Backend randomness (DropPath) from (seed, step): resumption stays exact.
            B::seed(device, SplitMix::derive(stage.seed, 0xB0B, step).next_u64());
            let samples = loader
                .next()
                .ok_or_else(|| format!("stage `{}`: the data loader stopped early", stage.name))?
                .map_err(|e| format!("stage `{}`, phase `{}`: {e}", stage.name, phase.name))?;
            let texts: Vec<String> = samples.iter().map(|s| s.text.clone()).collect();
            let mut mask_rng = SplitMix::derive(stage.seed, 0x3A5C, step);
            let inner_images = images::<B::InnerBackend>(&samples, frames, &inner_device);
            let nf = samples.len() * frames;
            let decoder = match dec_context.filter(|_| next_token) {
                Some(ctx) => {
                    let idx = &step_indices[(step - began) as usize];
                    let mut dec_texts = Vec::with_capacity(texts.len());
                    for (k, t) in texts.iter().enumerate() {
                        dec_texts.push(decoder_text(
                            ds.as_ref(),
                            idx[k],
                            t,
                            stage.seed,
                            cursor + k as u64,
                        )?);
                    }
                    Some(decoder_batch::<B>(&tokenizer, &dec_texts, ctx, device))
                }
                None => None,
            };
            cursor += batch as u64;
            let names: Vec<String> = if teachers.is_empty() {
                Vec::new()
            } else {
                step_indices[(step - began) as usize]
                    .iter()
                    .map(|&i| ds.name(i))
                    .collect()
            };
            let teacher_out = teacher::outputs(
                &teachers,
                &inner_images,
                &samples,
                &names,
                frames,
                &inner_device,
            )
            .map_err(|e| format!("stage `{}`, phase `{}`: {e}", stage.name, phase.name))?;
            let b = Batch {
                images: Tensor::from_inner(inner_images),
                frames,
                tokens: context.map(|c| tokens::<B>(&tokenizer, &texts, c, device)),
                masks: (copies > 0)
                    .then(|| clip::patch_masks::<B>(copies, patches, ratio, &mut mask_rng, device)),
                token_mask: token_mask.map(|(r, blk)| {
                    let mut rng = SplitMix::derive(stage.seed, 0x70CE, step);
                    let m = clip::block_masks(nf, grid, blk, r, &mut rng);
                    Tensor::from_data(TensorData::new(m, [nf, patches]), device)
                }),
                decoder,
                teachers: teacher::lift::<B>(teacher_out),
                vision_frozen: !trained.contains(&"vision"),
            };
            let step_no = step + 1;
            let mut out = clip::forward(&model, &b, &phase.loss);
            if let Some(term) = crate::fault::nan_loss(step_no) {
                inject_nan(&mut out, term.as_deref());
            }
            let loss_value = scalar(out.total.clone());
            let term_values: Vec<(String, f64)> = out
                .terms
                .iter()
                .map(|(n, t)| (n.clone(), scalar(t.clone())))
                .collect();
            let lr = lr_at(&phase.lr, step);
            // A non-finite loss or gradient: no update. The stage stops (its checkpoints
            // are kept), or within the `skip_nonfinite` budget the step is skipped.
            let mut bad: Option<String> = None;
            let mut norm = f64::NAN;
            if !loss_value.is_finite() {
                let which = term_values
                    .iter()
                    .find(|(_, v)| !v.is_finite())
                    .map_or("the total".to_string(), |(n, _)| format!("the term `{n}`"));
                bad = Some(format!("the loss is {loss_value} ({which} went bad)"));
            } else {
                let grads = out.total.backward();
                let mut gp = GradientsParams::from_grads(grads, &model);
                // Models a phase does not train keep their weights.
                if !trained.contains(&"vision") {
                    drop_grads(&model.vision, &mut gp);
                }
                if !trained.contains(&"text") {
                    drop_grads(&model.text, &mut gp);
                }
                if !trained.contains(&"proj") {
                    drop_grads(&model.proj, &mut gp);
                }
                if !trained.contains(&"decoder") {
                    drop_grads(&model.decoder, &mut gp);
                }
                norm = global_grad_norm(&model, &gp);
                if crate::fault::inf_grad(step_no) {
                    norm = f64::INFINITY;
                }
                if norm.is_finite() {
                    let scale = match phase.clip_grad {
                        Some(max) if norm > max => max / (norm + 1e-6),
                        _ => 1.0,
                    };
                    model = optim.step(lr, model, &mut gp, scale);
                } else {
                    let at = first_nonfinite_grad(&model, &gp)
                        .map_or(String::new(), |p| format!(", first at `{p}`"));
                    bad = Some(format!(
                        "the gradient norm is {norm}{at} (the loss {loss_value} is finite: {})",
                        term_values
                            .iter()
                            .map(|(n, v)| format!("`{n}` {v:.4}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            let dt = t0.elapsed().as_secs_f64();
            let line = match &bad {
                Some(why) => {
                    skipped_steps += 1;
                    let here = format!(
                        "stage `{}`, phase `{}`, step {step_no}: {why}",
                        stage.name, phase.name
                    );
                    if skipped_steps > stage.skip_nonfinite {
                        let kept = latest_checkpoint(dir, &stage.name, &stage.hash).map_or(
                            "there is no checkpoint of this stage yet".to_string(),
                            |(p, s)| {
                                format!(
                                    "the last good checkpoint, step {s}, is kept: {}",
                                    p.display()
                                )
                            },
                        );
                        let budget = if stage.skip_nonfinite == 0 {
                            "the stage field `skip_nonfinite: N` skips up to N such steps"
                                .to_string()
                        } else {
                            format!(
                                "{} such steps were already skipped (`skip_nonfinite: {}`)",
                                skipped_steps - 1,
                                stage.skip_nonfinite
                            )
                        };
                        return Err(format!("{here}; stopped; {kept}; {budget}"));
                    }
                    if opts.progress {
                        eprintln!(
                            "\npexc: {here}; step skipped ({skipped_steps} of at most {})",
                            stage.skip_nonfinite
                        );
                    }
                    json!({
                        "stage": stage.name,
                        "phase": phase.name,
                        "step": step_no,
                        "skipped": why,
                        "lr": lr,
                    })
                }
                None => {
                    let mut line = json!({
                        "stage": stage.name,
                        "phase": phase.name,
                        "step": step_no,
                        "loss": loss_value,
                    });
                    for (n, v) in &term_values {
                        line[n.as_str()] = json!(v);
                    }
                    line["lr"] = json!(lr);
                    line["samples_per_s"] = json!(batch as f64 / dt.max(1e-9));
                    line["grad_norm"] = json!(norm);
                    if model.text.is_some() {
                        line["logit_scale"] = json!(scalar(model.logit_scale.val().exp()));
                    }
                    line
                }
            };
            dir.append_metrics(&line)
                .map_err(|e| format!("metrics.jsonl: {e}"))?;
            if opts.progress {
                let done = step + 1 - phase.first_step;
                let rate = (done - (began - phase.first_step)) as f64
                    / t_phase.elapsed().as_secs_f64().max(1e-9);
                let eta = (end - step - 1) as f64 / rate.max(1e-9);
                eprint!(
                    "\r{} {} [{done}/{phase_steps}] loss {loss_value:.4}  {:.0} samples/s  ETA {eta:.0}s   ",
                    stage.name,
                    phase.name,
                    batch as f64 / dt.max(1e-9)
                );
                let _ = std::io::stderr().flush();
            }
            let at_end = step + 1 == end;
            if (step + 1) % opts.checkpoint_every.max(1) == 0 || at_end {
                last_checkpoint = save_checkpoint(dir, stage, phase, &model, &optim, step + 1)?;
            }
        }
        if opts.progress {
            eprintln!();
        }
        if stopped {
            break;
        }
        // The unrun steps of a `--smoke` phase still advance the data position.
        cursor += (phase.steps - phase_steps) * phase.batch;
    }
    if stopped {
        let step = last_step_done(dir, &stage.name);
        if let Some(s) = step {
            last_checkpoint = save_checkpoint(
                dir,
                stage,
                stage
                    .phases
                    .iter()
                    .rev()
                    .find(|p| p.first_step < s)
                    .unwrap_or(&stage.phases[0]),
                &model,
                &optim,
                s,
            )?;
        }
    }
    Ok(Trained {
        model,
        towers,
        last_checkpoint,
        stopped,
        bad: bad_log,
        skipped_steps,
    })
}

/// Makes loss term `term` (the first when `None`) and the total NaN: an injected fault.
fn inject_nan<B: AutodiffBackend>(out: &mut clip::StepLoss<B>, term: Option<&str>) {
    let k = term
        .and_then(|t| out.terms.iter().position(|(n, _)| n == t))
        .unwrap_or(0);
    if let Some((_, t)) = out.terms.get_mut(k) {
        *t = t.clone().mul_scalar(f32::NAN);
    }
    out.total = out.total.clone().mul_scalar(f32::NAN);
}

/// The path of the first parameter whose gradient holds a value that is not finite.
fn first_nonfinite_grad<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<String> {
    use burn::module::{ModuleVisitor, Param};
    struct Find<'a> {
        grads: &'a GradientsParams,
        path: Vec<String>,
        found: Option<String>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Find<'_> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _c: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.found.is_some() {
                return;
            }
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let values = g
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap_or_default();
                if values.iter().any(|v| !v.is_finite()) {
                    self.found = Some(self.path.join("."));
                }
            }
        }
    }
    let mut f = Find {
        grads,
        path: Vec::new(),
        found: None,
    };
    module.visit(&mut f);
    f.found
}

fn last_step_done(dir: &RunDir, stage: &str) -> Option<u64> {
    dir.read_metrics()
        .iter()
        .filter(|m| m["stage"] == stage)
        .filter_map(|m| m["step"].as_u64())
        .max()
}

fn save_checkpoint<B: AutodiffBackend>(
    dir: &RunDir,
    stage: &StagePlan,
    phase: &PhasePlan,
    model: &ClipModel<B>,
    optim: &Optimizer<B>,
    step: u64,
) -> Result<std::path::PathBuf, String> {
    let mut tensors = checkpoint::collect(&model.valid(), "");
    tensors.extend(checkpoint::collect_moments(&optim.state));
    let path = checkpoint_path(dir, &stage.name, step);
    checkpoint::save(
        &path,
        &tensors,
        &json!({"stage": stage.name, "phase": phase.name, "step": step, "hash": stage.hash}),
    )?;
    // Keep the newest two: a failure while writing the next leaves one good one.
    if let Ok(entries) = std::fs::read_dir(dir.checkpoints(&stage.name)) {
        let mut all: Vec<std::path::PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        all.sort();
        let n = all.len();
        for old in all.into_iter().take(n.saturating_sub(2)) {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(path)
}

fn scalar<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> f64 {
    use burn::tensor::ElementConversion;
    t.into_scalar().elem::<f32>() as f64
}

/// The `on_bad` rule of a data source: real sources have one (`"error"` by default),
/// generated ones none.
pub fn on_bad(ctor: &Ctor) -> Result<Option<data::OnBad>, String> {
    match ctor.ctor.as_str() {
        "image_text" | "webdataset" => data::OnBad::of(ctor).map(Some).map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// The dataset of a phase (opened once per stage and data source), seen through its
/// `on_bad` rule, with captions checked against the context.
fn dataset(
    phase: &PhasePlan,
    dir: &RunDir,
    cache: &mut HashMap<String, Arc<dyn Dataset>>,
    tokenizer: &data::Tokenizer,
    context: Option<usize>,
    log: &Arc<data::BadLog>,
) -> Result<Arc<dyn Dataset>, String> {
    let ctor = phase_source(phase, dir)?;
    let frames = phase.frames.unwrap_or(1).max(1) as usize;
    let key = format!(
        "{}/{frames}",
        serde_json::to_string(&ctor).unwrap_or_default()
    );
    if let Some(d) = cache.get(&key) {
        return Ok(d.clone());
    }
    let raw: Arc<dyn Dataset> = if phase.frames.is_some() {
        Arc::new(data::FrameStack {
            clips: data::open_video(&ctor, Split::Train).map_err(|e| e.to_string())?,
            frames,
        })
    } else {
        Arc::from(data::open(&ctor, Split::Train).map_err(|e| e.to_string())?)
    };
    let d: Arc<dyn Dataset> = Arc::new(data::Screened::new(
        raw,
        on_bad(&ctor)?,
        context.map(|c| (tokenizer.clone(), c)),
        log.clone(),
    ));
    if d.is_empty() {
        let skipped = log.summary().map_or(String::new(), |s| format!(" ({s})"));
        return Err(format!(
            "phase `{}`: the data has no training samples{skipped}",
            phase.name
        ));
    }
    cache.insert(key, d.clone());
    Ok(d)
}

/// The data source of a phase: its constructor, or for data an earlier stage wrote
/// (`engine.captions`) the `video_text` dataset that stage left in the run directory.
pub fn phase_source(phase: &PhasePlan, dir: &RunDir) -> Result<Ctor, String> {
    match &phase.data {
        Some(DataPlan::Source(c)) => Ok(c.clone()),
        Some(DataPlan::Stage { stage, dataset }) => {
            let root = crate::caption::dataset_dir(dir, stage, dataset);
            if !root.join(crate::caption::CAPTIONS).exists() {
                return Err(format!(
                    "phase `{}`: stage `{stage}` has not written `{stage}.{dataset}` in this run directory",
                    phase.name
                ));
            }
            Ok(crate::caption::video_text(&root))
        }
        None => Err(format!("phase `{}` has no data", phase.name)),
    }
}

/// The stage's tokenizer: the data's `tokenizer.json` when it names one, else a byte-level
/// BPE learned from the first phase's training captions (and, for a decoder, the data's
/// questions and answers), to the vocabulary of the stage's text models. A stage without
/// text models gets a bytes-only tokenizer it never uses.
pub fn stage_tokenizer(stage: &StagePlan, towers: &Towers) -> Result<data::Tokenizer, String> {
    let phase = stage
        .phases
        .first()
        .ok_or_else(|| format!("stage `{}` has no phases", stage.name))?;
    let Some(vocab) = towers.vocab() else {
        return Ok(data::Tokenizer::bytes_bpe(&[], 300));
    };
    match &phase.data {
        Some(DataPlan::Source(c)) if towers.decoder.is_some() => lang_tokenizer(c, vocab),
        Some(DataPlan::Source(c)) => tokenizer_for(c, vocab),
        _ => Err(format!(
            "stage `{}`: no data to learn a tokenizer from",
            stage.name
        )),
    }
}

/// A decoder's tokenizer: learned from the captions and the question/answer texts of the
/// data (or its `tokenizer.json`).
pub fn lang_tokenizer(ctor: &Ctor, vocab: usize) -> Result<data::Tokenizer, String> {
    if ctor.str("tokenizer").is_some() {
        return tokenizer_for(ctor, vocab);
    }
    let ds = data::open(ctor, Split::Train).map_err(|e| e.to_string())?;
    let n = ds.len().min(2000);
    let mut texts = Vec::with_capacity(2 * n);
    for i in 0..n {
        texts.push(ds.text(i).map_err(|e| e.to_string())?);
        for (q, a) in ds.questions(i).map_err(|e| e.to_string())? {
            texts.push(format!("{q} {a}"));
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(data::Tokenizer::bytes_bpe(&refs, vocab))
}

/// The tokenizer of a data source for a text tower of `vocab` ids.
pub fn tokenizer_for(ctor: &Ctor, vocab: usize) -> Result<data::Tokenizer, String> {
    let tok = if let Some(path) = ctor.str("tokenizer") {
        data::Tokenizer::from_hf_json(std::path::Path::new(path)).map_err(|e| e.to_string())?
    } else {
        let ds = data::open(ctor, Split::Train).map_err(|e| e.to_string())?;
        // Up to 2,000 captions: enough for the merges of a small vocabulary.
        let n = ds.len().min(2000);
        let mut captions = Vec::with_capacity(n);
        for i in 0..n {
            captions.push(ds.text(i).map_err(|e| e.to_string())?);
        }
        let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
        data::Tokenizer::bytes_bpe(&refs, vocab)
    };
    if tok.vocab_size() > vocab {
        return Err(format!(
            "the tokenizer has {} ids but the text tower's vocabulary is {vocab}",
            tok.vocab_size()
        ));
    }
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn sample_orders_follow_each_phases_data() {
        // A long first phase's data, then a shorter one's, both in epoch 0: every index
        // lies in its own split (it once reused the first's order and ran past the end).
        let mut orders = Orders::new();
        let first: Vec<usize> = (0..960)
            .map(|p| sample_at(p, 3600, 4, &mut orders))
            .collect();
        let second: Vec<usize> = (960..960 + 1946)
            .map(|p| sample_at(p, 1946, 4, &mut orders))
            .collect();
        assert!(first.iter().all(|&i| i < 3600));
        assert!(second.iter().all(|&i| i < 1946));
        // Within one epoch a split is a permutation: positions 1946..3892 of the second
        // data are each of its samples once.
        let mut epoch: Vec<usize> = (1946..2 * 1946)
            .map(|p| sample_at(p, 1946, 4, &mut orders))
            .collect();
        epoch.sort_unstable();
        assert_eq!(epoch, (0..1946).collect::<Vec<_>>());
    }

    #[test]
    fn decoder_batches_shift_by_one_and_weigh_the_caption_through_its_end() {
        let tok = data::Tokenizer::bytes_bpe(&["a red circle", "a blue square"], 300);
        let (row, eot) = tok.encode("a red circle", 9);
        let b = decoder_batch::<Flex>(&tok, &["a red circle".to_string()], 8, &Default::default());
        let ids = |t: Tensor<Flex, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let (input, target) = (ids(b.input), ids(b.target));
        let weight = b.weight.into_data().to_vec::<f32>().unwrap();
        assert_eq!(input, row[..8].to_vec());
        assert_eq!(target, row[1..9].to_vec());
        // Targets 1..=eot (the caption and its end token) count; padding does not.
        for (j, w) in weight.iter().enumerate() {
            assert_eq!(*w == 1.0, j < eot, "position {j}");
        }
        assert_eq!(target[eot - 1], row[eot]);
    }
}

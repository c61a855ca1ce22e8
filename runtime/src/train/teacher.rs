//! Teachers (pe-reference.md "Distillation", "Stage 4b"): frozen copies of earlier stages'
//! models, run without autodiff, and the mask-logit teacher of PE-spatial, which for
//! generated data derives SAM's point-prompt masks from the generator's own masks.

use std::collections::HashMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{DataPlan, Plan, Role, StagePlan, TeacherPlan};

use super::clip::TeacherOut;
use crate::checkpoint::{self, Stored};
use crate::data::{self, Sample};
use crate::model::{TextConfig, TextTransformer, VisionTransformer, VitConfig};

/// A teacher, on a backend without autodiff.
pub enum Teacher<B: Backend> {
    /// `frozen(stage)`: the stage's whole CLIP, with the tokenizer it was trained with.
    Clip {
        vision: VisionTransformer<B>,
        text: TextTransformer<B>,
        tokenizer: data::Tokenizer,
        context: usize,
    },
    /// `frozen(stage.model).layer(k)`: the tower's tokens after block `block` (0-based),
    /// before `ln_post`.
    Tower {
        vision: VisionTransformer<B>,
        block: usize,
    },
    /// `mask_logits(source: "synthetic", grid)`: one map per point prompt of the grid.
    MaskLogits { grid: (usize, usize), patch: usize },
}

/// The key of a teacher's `i`-th model in the stage's initial weights.
pub fn weights_key(teacher: &str, i: usize) -> String {
    format!("teacher.{teacher}.{i}")
}

/// Builds the stage's teachers from their weights (`init`, by `weights_key`).
pub fn build<B: Backend>(
    stage: &StagePlan,
    plan: &Plan,
    student_patch: usize,
    init: &HashMap<String, HashMap<String, Stored>>,
    device: &B::Device,
) -> Result<HashMap<String, Teacher<B>>, String> {
    let mut out = HashMap::new();
    for t in &stage.teachers {
        let teacher = match t.kind.as_str() {
            "mask_logits" => {
                let (r, c) = t
                    .args
                    .as_ref()
                    .and_then(|a| a.pair("grid"))
                    .unwrap_or((32.0, 32.0));
                Teacher::MaskLogits {
                    grid: (r.max(1.0) as usize, c.max(1.0) as usize),
                    patch: student_patch,
                }
            }
            _ => frozen(stage, plan, t, init, device)?,
        };
        out.insert(t.name.clone(), teacher);
    }
    Ok(out)
}

fn frozen<B: Backend>(
    stage: &StagePlan,
    plan: &Plan,
    t: &TeacherPlan,
    init: &HashMap<String, HashMap<String, Stored>>,
    device: &B::Device,
) -> Result<Teacher<B>, String> {
    let fail = |e: String| format!("stage `{}`, teacher `{}`: {e}", stage.name, t.name);
    let weights = |i: usize| {
        init.get(&weights_key(&t.name, i))
            .ok_or_else(|| fail(format!("no weights for `{}`", t.models[i].name)))
    };
    let vi = t
        .models
        .iter()
        .position(|m| m.role == Role::Vision)
        .ok_or_else(|| fail("a frozen teacher without a vision tower".into()))?;
    let mut vcfg = VitConfig::from_plan(&t.models[vi].config).map_err(fail)?;
    if checkpoint::has_layer_scale(weights(vi)?) && vcfg.layer_scale.is_none() {
        // Its stage added LayerScale (a `layer_scale` regulariser): the values load below.
        vcfg.layer_scale = Some(1.0);
    }
    if let Some(b) = t.block {
        // Only the blocks up to the tapped one run.
        vcfg.depth = (b as usize + 1).min(vcfg.depth);
    }
    let vision = checkpoint::assign(VisionTransformer::new(&vcfg, device), weights(vi)?, "")
        .map_err(fail)?;
    if let Some(b) = t.block {
        return Ok(Teacher::Tower {
            vision,
            block: b as usize,
        });
    }
    let Some(ti) = t.models.iter().position(|m| m.role == Role::Text) else {
        // A frozen tower without a tap: its last block.
        let block = vision.depth() - 1;
        return Ok(Teacher::Tower { vision, block });
    };
    let tcfg = TextConfig::from_plan(&t.models[ti].config).map_err(fail)?;
    let text =
        checkpoint::assign(TextTransformer::new(&tcfg, device), weights(ti)?, "").map_err(fail)?;
    // The tokenizer the teacher's stage trained with.
    let tokenizer = match &t.models[ti].init {
        pexc_compiler::lower::plan::ModelInit::Stage { stage: from, .. } => {
            let sp = plan
                .stage(from)
                .ok_or_else(|| fail(format!("stage `{from}` is not in the plan")))?;
            match sp.phases.first().and_then(|p| p.data.as_ref()) {
                Some(DataPlan::Source(c)) => super::tokenizer_for(c, tcfg.vocab).map_err(fail)?,
                _ => return Err(fail(format!("stage `{from}` has no data to tokenize"))),
            }
        }
        _ => match stage.phases.first().and_then(|p| p.data.as_ref()) {
            Some(DataPlan::Source(c)) => super::tokenizer_for(c, tcfg.vocab).map_err(fail)?,
            _ => return Err(fail("no data to learn a tokenizer from".into())),
        },
    };
    Ok(Teacher::Clip {
        vision,
        text,
        tokenizer,
        context: tcfg.context,
    })
}

/// Per-patch mask-logit features (n, patches, prompts) of generated samples, from their
/// masks; frames of a clip stack into separate rows.
pub fn mask_features<B: Backend>(
    samples: &[Sample],
    frames: usize,
    grid: (usize, usize),
    patch: usize,
    device: &B::Device,
) -> Result<Tensor<B, 3>, String> {
    let frames = frames.max(1);
    let mut values = Vec::new();
    let mut rows = 0;
    let mut per = 0;
    for s in samples {
        let Some(mask) = &s.mask else {
            return Err(
                "`mask_logits(source: \"synthetic\")` needs generated data with masks (synthetic_shapes, synthetic_video)"
                    .into(),
            );
        };
        let h = s.height / frames;
        for f in 0..frames {
            let m = &mask[f * h * s.width..(f + 1) * h * s.width];
            let v = data::mask_logits::patch_features(m, h, s.width, patch, grid);
            per = v.len();
            values.extend(v);
            rows += 1;
        }
    }
    let k = grid.0.max(1) * grid.1.max(1);
    let patches = per / k.max(1);
    Ok(Tensor::from_data(
        TensorData::new(values, [rows, patches, k]),
        device,
    ))
}

/// What every teacher gives for a batch: `images` (n * frames, 3, r, r) on the teacher's
/// backend, `samples` the batch's samples (captions, masks).
pub fn outputs<B: Backend>(
    teachers: &HashMap<String, Teacher<B>>,
    images: &Tensor<B, 4>,
    samples: &[Sample],
    frames: usize,
    device: &B::Device,
) -> Result<HashMap<String, TeacherOut<B>>, String> {
    let mut out = HashMap::new();
    let frames = frames.max(1);
    for (name, t) in teachers {
        let o = match t {
            Teacher::Clip {
                vision,
                text,
                tokenizer,
                context,
            } => {
                let img = vision
                    .encode(images.clone())
                    .ok_or_else(|| format!("teacher `{name}`: its vision tower does not pool"))?;
                let img = super::clip::frame_pool(img, frames);
                let mut ids = Vec::with_capacity(samples.len() * context);
                for s in samples {
                    ids.extend(tokenizer.encode(&s.text, *context).0);
                }
                let ids: Tensor<B, 2, Int> =
                    Tensor::from_data(TensorData::new(ids, [samples.len(), *context]), device);
                TeacherOut::Clip {
                    img,
                    txt: text.forward(ids),
                }
            }
            Teacher::Tower { vision, block } => TeacherOut::Tokens(vision.forward_features(
                images.clone(),
                Some(*block as i64),
                false,
            )),
            Teacher::MaskLogits { grid, patch } => {
                TeacherOut::PatchFeatures(mask_features(samples, frames, *grid, *patch, device)?)
            }
        };
        out.insert(name.clone(), o);
    }
    Ok(out)
}

/// Moves teacher outputs onto the autodiff backend, as constants.
pub fn lift<B: burn::tensor::backend::AutodiffBackend>(
    outs: HashMap<String, TeacherOut<B::InnerBackend>>,
) -> HashMap<String, TeacherOut<B>> {
    outs.into_iter()
        .map(|(k, v)| {
            let v = match v {
                TeacherOut::Clip { img, txt } => TeacherOut::Clip {
                    img: Tensor::from_inner(img),
                    txt: Tensor::from_inner(txt),
                },
                TeacherOut::Tokens(t) => TeacherOut::Tokens(Tensor::from_inner(t)),
                TeacherOut::PatchFeatures(t) => TeacherOut::PatchFeatures(Tensor::from_inner(t)),
            };
            (k, v)
        })
        .collect()
}

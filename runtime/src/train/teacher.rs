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
        vision: Box<VisionTransformer<B>>,
        text: Box<TextTransformer<B>>,
        tokenizer: data::Tokenizer,
        context: usize,
    },
    /// `frozen(stage.model).layer(k)`: the tower's tokens after block `block` (0-based),
    /// before `ln_post`.
    Tower {
        vision: Box<VisionTransformer<B>>,
        block: usize,
    },
    /// `mask_logits(source, grid)`: one map per point prompt of the grid, read from
    /// `dir` (one `<image stem>.safetensors` per image, tensor `logits` (prompts, h, w)),
    /// or derived from generated masks when the source is `"synthetic"` (`dir` None).
    MaskLogits {
        grid: (usize, usize),
        patch: usize,
        dir: Option<std::path::PathBuf>,
    },
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
                let source = t.args.as_ref().and_then(|a| a.str("source"));
                Teacher::MaskLogits {
                    grid: (r.max(1.0) as usize, c.max(1.0) as usize),
                    patch: student_patch,
                    dir: source
                        .filter(|s| *s != "synthetic")
                        .map(std::path::PathBuf::from),
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
            vision: Box::new(vision),
            block: b as usize,
        });
    }
    let Some(ti) = t.models.iter().position(|m| m.role == Role::Text) else {
        // A frozen tower without a tap: its last block.
        let block = vision.depth() - 1;
        return Ok(Teacher::Tower {
            vision: Box::new(vision),
            block,
        });
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
        vision: Box::new(vision),
        text: Box::new(text),
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

/// Per-patch features (n, patches, prompts) from mask-logit files: sample `k`'s file is
/// `dir/<stem of names[k]>.safetensors` with `logits` (prompts, h, w) at any size (PE runs
/// SAM at 1024 px), averaged over the cells of the student's (rows, cols) patch grid.
pub fn mask_features_from_files<B: Backend>(
    dir: &std::path::Path,
    names: &[String],
    grid: (usize, usize),
    device: &B::Device,
) -> Result<Tensor<B, 3>, String> {
    let (rows, cols) = (grid.0.max(1), grid.1.max(1));
    let mut values = Vec::new();
    let mut prompts = None;
    for name in names {
        let stem = std::path::Path::new(name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone());
        let path = dir.join(format!("{stem}.safetensors"));
        let (tensors, _) =
            checkpoint::load(&path).map_err(|e| format!("mask logits of `{name}`: {e}"))?;
        let t = tensors.get("logits").ok_or_else(|| {
            format!(
                "`{}` has no tensor `logits` (prompts, h, w)",
                path.display()
            )
        })?;
        let [k, h, w] = match t.shape[..] {
            [k, h, w] if h >= rows && w >= cols => [k, h, w],
            _ => {
                return Err(format!(
                    "`{}`: `logits` has shape {:?}; expected (prompts, h, w) with h >= {rows} and w >= {cols}",
                    path.display(),
                    t.shape
                ))
            }
        };
        if *prompts.get_or_insert(k) != k {
            return Err(format!(
                "`{}` has {k} mask maps, the batch's first file {}",
                path.display(),
                prompts.unwrap_or(0)
            ));
        }
        for r in 0..rows {
            let (y0, y1) = (r * h / rows, ((r + 1) * h / rows).max(r * h / rows + 1));
            for c in 0..cols {
                let (x0, x1) = (c * w / cols, ((c + 1) * w / cols).max(c * w / cols + 1));
                let area = ((y1 - y0) * (x1 - x0)) as f32;
                for p in 0..k {
                    let mut sum = 0f32;
                    for y in y0..y1 {
                        let row = &t.values[(p * h + y) * w..(p * h + y) * w + w];
                        sum += row[x0..x1].iter().sum::<f32>();
                    }
                    values.push(sum / area);
                }
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [names.len(), rows * cols, prompts.unwrap_or(0)]),
        device,
    ))
}

/// What every teacher gives for a batch: `images` (n * frames, 3, r, r) on the teacher's
/// backend, `samples` the batch's samples (captions, masks) and `names` what each is
/// (its file, for mask logits read from disk).
pub fn outputs<B: Backend>(
    teachers: &HashMap<String, Teacher<B>>,
    images: &Tensor<B, 4>,
    samples: &[Sample],
    names: &[String],
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
            Teacher::MaskLogits {
                grid,
                patch,
                dir: None,
            } => TeacherOut::PatchFeatures(mask_features(samples, frames, *grid, *patch, device)?),
            Teacher::MaskLogits {
                patch,
                dir: Some(dir),
                ..
            } => {
                if frames > 1 {
                    return Err(format!(
                        "teacher `{name}`: mask logits from files are per image, not for clips"
                    ));
                }
                let [_, _, h, w] = images.dims();
                let g = (h / patch.max(&1), w / patch.max(&1));
                TeacherOut::PatchFeatures(mask_features_from_files(dir, names, g, device)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn mask_logit_files_are_averaged_over_the_student_grid() {
        let dir = std::env::temp_dir().join(format!("pexc-mask-logits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two prompts on a 4 x 4 map: prompt 0 is the row index, prompt 1 the column.
        let mut values = Vec::new();
        for p in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    values.push(if p == 0 { y as f32 } else { x as f32 });
                }
            }
        }
        let logits = Stored {
            shape: vec![2, 4, 4],
            values,
        };
        checkpoint::save(
            &dir.join("img_7.safetensors"),
            &[("logits".to_string(), logits)],
            &serde_json::json!({}),
        )
        .unwrap();
        let names = vec!["photos/img_7.png".to_string()];
        let f =
            mask_features_from_files::<Flex>(&dir, &names, (2, 2), &Default::default()).unwrap();
        assert_eq!(f.dims(), [1, 4, 2]);
        // Cell (r, c) covers rows 2r..2r+2 and columns 2c..2c+2: means 2r + 0.5, 2c + 0.5.
        let v = f.into_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.5, 0.5, 0.5, 2.5, 2.5, 0.5, 2.5, 2.5]);
        // A missing file names the sample.
        let err = mask_features_from_files::<Flex>(
            &dir,
            &["other.png".to_string()],
            (2, 2),
            &Default::default(),
        )
        .unwrap_err();
        assert!(err.contains("other.png"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

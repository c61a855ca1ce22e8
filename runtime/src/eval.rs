//! Evaluation of a contrastive stage on held-out data: zero-shot classification (class
//! prompts embedded by the text tower; skipped with a note where the data has no classes)
//! and image->text / text->image retrieval recall@1.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{DataPlan, StagePlan};
use serde_json::{json, Value};

use crate::data::{self, Dataset, Split};
use crate::loss::normalize;
use crate::model::{TextTransformer, VisionTransformer};
use crate::rundir::RunDir;
use crate::train::clip::{ClipModel, Towers};

const BATCH: usize = 64;

fn embed_texts<B: Backend>(
    text: &TextTransformer<B>,
    tok: &data::Tokenizer,
    texts: &[String],
    context: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut parts = Vec::new();
    for chunk in texts.chunks(BATCH) {
        let mut ids = Vec::with_capacity(chunk.len() * context);
        for t in chunk {
            ids.extend(tok.encode(t, context).0);
        }
        let t: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(ids, [chunk.len(), context]), device);
        parts.push(normalize(text.forward(t)));
    }
    Tensor::cat(parts, 0)
}

/// Row-wise argmax of `a @ b^T`.
fn argmax_rows<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Vec<usize> {
    let sims = a.matmul(b.transpose());
    sims.argmax(1)
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap_or_default()
        .into_iter()
        .map(|x| x.max(0) as usize)
        .collect()
}

/// Evaluates `model` (a trained contrastive stage) on the held-out split of the data of
/// the stage's last phase, at that phase's resolution.
pub fn evaluate<B: Backend>(
    model: &ClipModel<B>,
    stage: &StagePlan,
    tok: &data::Tokenizer,
    context: usize,
    bad: &std::sync::Arc<data::BadLog>,
    device: &B::Device,
) -> Result<Value, String> {
    let Some(text) = &model.text else {
        return Ok(json!({"note": "no text tower"}));
    };
    // The last phase that reads a data source of images.
    let Some((phase, ctor)) = stage.phases.iter().rev().find_map(|p| match &p.data {
        Some(DataPlan::Source(c)) if p.frames.is_none() => Some((p, c)),
        _ => None,
    }) else {
        return Ok(json!({"note": "no image data of its own: not evaluated on images"}));
    };
    let raw: std::sync::Arc<dyn data::Dataset> =
        std::sync::Arc::from(data::open(ctor, Split::HeldOut).map_err(|e| e.to_string())?);
    // The same `on_bad` rule as training; a skipped held-out sample is left out.
    let ds = data::Screened::new(
        raw,
        crate::train::on_bad(ctor)?,
        Some((tok.clone(), context)),
        bad.clone(),
    );
    let n = ds.len();
    let res = phase.resolution as usize;
    let mut rng = data::Rng::new(0);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(s) = ds
            .get_good(i, res, &mut rng)
            .map_err(|e| format!("held-out data: {e}"))?
        {
            samples.push(s);
        }
    }
    if samples.is_empty() {
        return Ok(json!({"note": "no held-out data"}));
    }
    // Image embeddings.
    let mut parts = Vec::new();
    for chunk in samples.chunks(BATCH) {
        let mut v = Vec::with_capacity(chunk.len() * 3 * res * res);
        for s in chunk {
            v.extend_from_slice(&s.image);
        }
        let x: Tensor<B, 4> = Tensor::from_data(
            TensorData::new(v, [chunk.len(), 3, chunk[0].height, chunk[0].width]),
            device,
        );
        let out = model.vision.forward_masked(x, None);
        let pooled = match out.pooled {
            Some(p) => p,
            None => out.tokens.mean_dim(1).squeeze_dim::<2>(1),
        };
        parts.push(normalize(pooled));
    }
    let img = Tensor::cat(parts, 0);
    let captions: Vec<String> = samples.iter().map(|s| s.text.clone()).collect();
    let txt = embed_texts(text, tok, &captions, context, device);

    // Retrieval: a hit when the retrieved item is the pair's (or has the same caption:
    // generated captions repeat, and an identical caption is an equally right answer).
    let i2t = argmax_rows(img.clone(), txt.clone());
    let t2i = argmax_rows(txt, img.clone());
    let i2t_hits = i2t
        .iter()
        .enumerate()
        .filter(|(i, &j)| captions[*i] == captions[j])
        .count();
    let t2i_hits = t2i
        .iter()
        .enumerate()
        .filter(|(i, &j)| captions[*i] == captions[j])
        .count();

    let mut result = json!({
        "held_out": n,
        "resolution": res,
        "image_to_text_r1": i2t_hits as f64 / n as f64,
        "text_to_image_r1": t2i_hits as f64 / n as f64,
    });
    match ds.class_names() {
        Some(names) if !names.is_empty() => {
            // CLIP's prompt ensembling: each class is the normalised mean of its prompts'
            // normalised embeddings.
            let mut rows = Vec::with_capacity(names.len());
            for c in 0..names.len() {
                let ps = ds.prompts(c);
                let e = embed_texts(text, tok, &ps, context, device);
                rows.push(normalize(e.mean_dim(0)));
            }
            let classes = Tensor::cat(rows, 0);
            let prompts: Vec<Vec<String>> = (0..names.len()).map(|c| ds.prompts(c)).collect();
            let predicted = argmax_rows(img, classes);
            let labelled: Vec<(usize, usize)> = samples
                .iter()
                .zip(&predicted)
                .filter_map(|(s, &p)| s.label.map(|l| (l, p)))
                .collect();
            let correct = labelled.iter().filter(|(l, p)| l == p).count();
            result["zero_shot_top1"] = json!(correct as f64 / labelled.len().max(1) as f64);
            result["chance"] = json!(1.0 / names.len() as f64);
            result["classes"] = json!(names);
            result["prompts"] = json!(prompts);
        }
        _ => {
            result["zero_shot_top1"] = Value::Null;
            result["note"] = json!("the data has no class names: zero-shot classification skipped");
        }
    }
    Ok(result)
}

/// Embeddings (n, out) of clips: each frame embedded, the frames averaged (PE's video
/// embedding), normalised.
fn embed_clips<B: Backend>(
    vision: &VisionTransformer<B>,
    clips: &[data::Clip],
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut parts = Vec::new();
    for chunk in clips.chunks(8) {
        let frames = chunk.first().map_or(1, |c| c.frames.len().max(1));
        let samples: Vec<data::Sample> = chunk
            .iter()
            .flat_map(|c| c.frames.iter().cloned())
            .collect();
        let x = crate::train::images::<B>(&samples, 1, device);
        let out = vision.forward_masked(x, None);
        let pooled = match out.pooled {
            Some(p) => p,
            None => out.tokens.mean_dim(1).squeeze_dim::<2>(1),
        };
        parts.push(normalize(crate::train::clip::frame_pool(pooled, frames)));
    }
    Tensor::cat(parts, 0)
}

/// Zero-shot top-1 over the motion classes of held-out clips, frame-pooled.
#[allow(clippy::too_many_arguments)]
pub fn video_zero_shot<B: Backend>(
    vision: &VisionTransformer<B>,
    text: &TextTransformer<B>,
    tok: &data::Tokenizer,
    context: usize,
    clips_ctor: &pexc_compiler::lower::plan::Ctor,
    frames: usize,
    res: usize,
    limit: usize,
    device: &B::Device,
) -> Result<(Value, Vec<bool>), String> {
    let ds = data::open_video(clips_ctor, Split::HeldOut).map_err(|e| e.to_string())?;
    let Some(names) = ds.class_names() else {
        return Ok((json!({"note": "the clips have no classes"}), Vec::new()));
    };
    let n = ds.len().min(limit);
    let mut rng = data::Rng::new(0);
    let mut clips = Vec::with_capacity(n);
    for i in 0..n {
        clips.push(
            ds.get_clip(i, res, frames, &mut rng)
                .map_err(|e| format!("held-out clips: {e}"))?,
        );
    }
    if clips.is_empty() {
        return Ok((json!({"note": "no held-out clips"}), Vec::new()));
    }
    let emb = embed_clips(vision, &clips, device);
    let mut rows = Vec::with_capacity(names.len());
    for c in 0..names.len() {
        let e = embed_texts(text, tok, &ds.prompts(c), context, device);
        rows.push(normalize(e.mean_dim(0)));
    }
    let predicted = argmax_rows(emb, Tensor::cat(rows, 0));
    let labelled: Vec<(usize, usize)> = clips
        .iter()
        .zip(&predicted)
        .filter_map(|(c, &p)| c.label.map(|l| (l, p)))
        .collect();
    let correct = labelled.iter().filter(|(l, p)| l == p).count();
    // Per class: how many clips, how many right, and what the model said instead.
    let per_class: Vec<Value> = (0..names.len())
        .map(|c| {
            let of: Vec<usize> = labelled
                .iter()
                .filter(|(l, _)| *l == c)
                .map(|(_, p)| *p)
                .collect();
            let mut predicted = vec![0usize; names.len()];
            for &p in &of {
                if p < predicted.len() {
                    predicted[p] += 1;
                }
            }
            json!({"class": names[c], "clips": of.len(), "right": predicted[c], "predicted": predicted})
        })
        .collect();
    let mut out = json!({
        "clips": clips.len(),
        "frames": frames,
        "zero_shot_top1": correct as f64 / labelled.len().max(1) as f64,
        "chance": 1.0 / names.len() as f64,
        "classes": names,
        "per_class": per_class,
    });
    if let Some(groups) = ds.class_groups() {
        out["kinds"] = kind_scores(&groups, &labelled, names.len());
    }
    Ok((out, labelled.iter().map(|(l, p)| l == p).collect()))
}

/// McNemar's exact test of two models on the same clips: how many each gets right that
/// the other does not, and the two-sided p-value of that split under "equally good" (a
/// fair coin over the clips where they disagree).
fn paired_test(a: &[bool], b: &[bool]) -> Value {
    let only_a = a.iter().zip(b).filter(|&(&x, &y)| x && !y).count();
    let only_b = a.iter().zip(b).filter(|&(&x, &y)| !x && y).count();
    json!({
        "only_this": only_a,
        "only_base": only_b,
        "both": a.iter().zip(b).filter(|&(&x, &y)| x && y).count(),
        "p_value": binomial_two_sided(only_a.min(only_b), only_a + only_b),
    })
}

/// P(X <= k) + P(X >= n - k) for X ~ Binomial(n, 1/2), at most 1.
fn binomial_two_sided(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    // pmf(i) = C(n, i) / 2^n, built in logs so that n in the thousands stays finite.
    let mut log_c = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (log_c - n as f64 * std::f64::consts::LN_2).exp();
    }
    (2.0 * tail).min(1.0)
}

/// The same predictions scored by kind: right when the predicted class is of the label's
/// kind (what an order-free average of frames can tell), with the chance level of a
/// uniform guess among the classes on these labels.
fn kind_scores(
    groups: &[(String, Vec<usize>)],
    labelled: &[(usize, usize)],
    classes: usize,
) -> Value {
    let kind_of = |c: usize| groups.iter().position(|(_, g)| g.contains(&c));
    let same = |l: usize, p: usize| kind_of(l).is_some() && kind_of(l) == kind_of(p);
    let right = labelled.iter().filter(|&&(l, p)| same(l, p)).count();
    let chance: f64 = labelled
        .iter()
        .map(|&(l, _)| kind_of(l).map_or(0.0, |k| groups[k].1.len() as f64 / classes.max(1) as f64))
        .sum();
    let n = labelled.len().max(1) as f64;
    json!({
        "names": groups.iter().map(|(g, _)| g.clone()).collect::<Vec<_>>(),
        "top1": right as f64 / n,
        "chance": chance / n,
        "right": groups
            .iter()
            .map(|(_, g)| {
                let of: Vec<_> = labelled.iter().filter(|(l, _)| g.contains(l)).collect();
                json!({"clips": of.len(), "right": of.iter().filter(|&&&(l, p)| same(l, p)).count()})
            })
            .collect::<Vec<_>>(),
    })
}

/// Held-out samples of a synthetic image source, for probes and QA.
fn held_samples(
    ctor: &pexc_compiler::lower::plan::Ctor,
    split: Split,
    res: usize,
    limit: usize,
) -> Result<Vec<data::Sample>, String> {
    let ds = data::open(ctor, split).map_err(|e| e.to_string())?;
    let mut rng = data::Rng::new(0);
    (0..ds.len().min(limit))
        .map(|i| ds.get(i, res, &mut rng).map_err(|e| e.to_string()))
        .collect()
}

/// Everything a finished training stage is evaluated on: contrastive zero-shot and
/// retrieval (with a text tower), frame-pooled zero-shot on held-out clips for a stage
/// that trains on video (and, beside it, the model it started from), question answering
/// for a language stage, and the layer-wise probes of its vision tower.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_stage<B: Backend>(
    model: &ClipModel<B>,
    towers: &Towers,
    stage: &StagePlan,
    plan: &pexc_compiler::lower::plan::Plan,
    dir: &RunDir,
    bad: &std::sync::Arc<data::BadLog>,
    smoke: bool,
    device: &B::Device,
) -> Result<Value, String> {
    let tok = crate::train::stage_tokenizer(stage, towers)?;
    let mut out = match (&model.text, &towers.text_config) {
        (Some(_), Some(tc)) => evaluate(model, stage, &tok, tc.context, bad, device)?,
        _ => json!({}),
    };
    let res = stage.phases.last().map_or(64, |p| p.resolution as usize);
    let limit = if smoke { 40 } else { 400 };
    // Video: the held-out clips of the source the video phase's captions describe.
    if let (Some(text), Some(tc)) = (&model.text, &towers.text_config) {
        if let Some((p, ctor)) = video_source(stage, plan, dir) {
            let frames = p.frames.unwrap_or(1).max(1) as usize;
            let (mut v, right) = video_zero_shot(
                &model.vision,
                text,
                &tok,
                tc.context,
                &ctor,
                frames,
                p.resolution as usize,
                limit,
                device,
            )?;
            // The model the stage started from, on the same clips.
            if let Some(init) = &stage.init {
                if let Ok(base) = start_model::<B>(plan, dir, init, towers, stage, device) {
                    let (b, base_right) = video_zero_shot(
                        &base.vision,
                        base.text.as_ref().unwrap_or(text),
                        &tok,
                        tc.context,
                        &ctor,
                        frames,
                        p.resolution as usize,
                        limit,
                        device,
                    )?;
                    v[format!("{init}_zero_shot_top1")] = b["zero_shot_top1"].clone();
                    v[format!("{init}_per_class")] = b["per_class"].clone();
                    v[format!("{init}_kinds")] = b["kinds"].clone();
                    if right.len() == base_right.len() && !right.is_empty() {
                        v[format!("against_{init}")] = paired_test(&right, &base_right);
                    }
                }
            }
            out["video"] = v;
        }
    }
    // The image source of the stage, for QA and probes.
    let image_ctor = stage.phases.iter().rev().find_map(|p| match &p.data {
        Some(DataPlan::Source(c)) if p.frames.is_none() && c.ctor == "synthetic_shapes" => {
            Some(c.clone())
        }
        _ => None,
    });
    if let (Some(ctor), Some(dc)) = (&image_ctor, &towers.decoder_config) {
        let held = held_samples(ctor, Split::HeldOut, res, if smoke { 16 } else { 200 })?;
        out["questions"] =
            crate::caption::qa_accuracy(model, &tok, ctor, &held, dc.context, device)?;
    }
    if let Some(ctor) = &image_ctor {
        let train = held_samples(ctor, Split::Train, res, if smoke { 64 } else { 600 })?;
        let held = held_samples(ctor, Split::HeldOut, res, limit)?;
        let classes = data::open(ctor, Split::Train)
            .map_err(|e| e.to_string())?
            .class_names()
            .map_or(0, |c| c.len());
        let scores = crate::probe::layer_analysis(&model.vision, &train, &held, classes, device)?;
        let _ = crate::rundir::write_atomic(
            &dir.path(&format!("plots/{}_layers.svg", stage.name)),
            scores
                .svg(&format!("{}: probes by block", stage.name))
                .as_bytes(),
        );
        out["layers"] = scores.to_json();
    }
    Ok(out)
}

/// The phase that trains on clips and the clip source behind it (a data source, or the
/// source a caption stage captioned).
fn video_source(
    stage: &StagePlan,
    plan: &pexc_compiler::lower::plan::Plan,
    _dir: &RunDir,
) -> Option<(
    pexc_compiler::lower::plan::PhasePlan,
    pexc_compiler::lower::plan::Ctor,
)> {
    let p = stage.phases.iter().find(|p| p.frames.is_some())?;
    let ctor = match &p.data {
        Some(DataPlan::Source(c)) => c.clone(),
        Some(DataPlan::Stage { stage: s, .. }) => {
            let engine = plan.stage(s)?;
            match engine.phases.first()?.data.as_ref()? {
                DataPlan::Source(c) => c.clone(),
                _ => return None,
            }
        }
        None => return None,
    };
    Some((p.clone(), ctor))
}

/// The vision and text towers stage `from` finished with, built like this stage's.
fn start_model<B: Backend>(
    plan: &pexc_compiler::lower::plan::Plan,
    dir: &RunDir,
    from: &str,
    towers: &Towers,
    stage: &StagePlan,
    device: &B::Device,
) -> Result<ClipModel<B>, String> {
    let record: Value = std::fs::read_to_string(dir.stage_record(from))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(|| format!("stage `{from}` has no record"))?;
    let _ = plan;
    let ckpt = record["checkpoint"].as_str().unwrap_or_default();
    let (tensors, _) = crate::checkpoint::load(&dir.root.join(ckpt))?;
    let mut t = towers.clone();
    t.proj = None;
    t.decoder = None;
    t.proj_config = None;
    t.decoder_config = None;
    let part = |p: &str| -> std::collections::HashMap<String, crate::checkpoint::Stored> {
        let prefix = format!("{p}.");
        tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|r| (r.to_string(), v.clone())))
            .collect()
    };
    let vision = part("vision");
    if crate::checkpoint::has_layer_scale(&vision) && t.vision_config.layer_scale.is_none() {
        t.vision_config.layer_scale = Some(1.0);
    }
    let mut m: ClipModel<B> = ClipModel::new(&t, stage, device);
    m.vision = crate::checkpoint::assign_allowing(m.vision, &vision, "", |k| k.contains(".ls_"))?;
    if let Some(text) = m.text.take() {
        m.text = Some(crate::checkpoint::assign(text, &part("text"), "")?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_count_a_prediction_of_the_same_kind_as_right() {
        let groups = vec![
            ("sideways".to_string(), vec![0, 1]),
            ("colour".to_string(), vec![2]),
        ];
        // (label, predicted): right by class once, by kind three times.
        let labelled = [(0, 0), (0, 1), (1, 2), (2, 2), (2, 0), (1, 0)];
        let k = kind_scores(&groups, &labelled, 3);
        assert_eq!(k["top1"].as_f64(), Some(4.0 / 6.0));
        // Chance: 2/3 for the four sideways labels, 1/3 for the two colour ones.
        let chance = k["chance"].as_f64().unwrap_or(0.0);
        assert!((chance - (4.0 * 2.0 / 3.0 + 2.0 / 3.0) / 6.0).abs() < 1e-12);
        assert_eq!(k["right"][0]["clips"], 4);
        assert_eq!(k["right"][0]["right"], 3);
        assert_eq!(k["right"][1]["right"], 1);
    }

    #[test]
    fn the_paired_test_matches_hand_computed_binomial_tails() {
        // n = 4, k = 0: 2 * (1/16).
        assert!((binomial_two_sided(0, 4) - 0.125).abs() < 1e-12);
        // n = 10, k = 2: 2 * (1 + 10 + 45) / 1024.
        assert!((binomial_two_sided(2, 10) - 112.0 / 1024.0).abs() < 1e-12);
        // An even split is no evidence at all.
        assert_eq!(binomial_two_sided(5, 10), 1.0);
        assert_eq!(binomial_two_sided(0, 0), 1.0);
        let a = [true, true, true, false, true];
        let b = [false, false, true, false, false];
        let t = paired_test(&a, &b);
        assert_eq!(
            (
                t["only_this"].clone(),
                t["only_base"].clone(),
                t["both"].clone()
            ),
            (json!(3), json!(0), json!(1))
        );
        assert!((t["p_value"].as_f64().unwrap_or(0.0) - 0.25).abs() < 1e-12);
    }
}

//! Evaluation of a contrastive stage on held-out data: zero-shot classification (class
//! prompts embedded by the text tower; skipped with a note where the data has no classes)
//! and image->text / text->image retrieval recall@1.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{DataPlan, StagePlan};
use serde_json::{json, Value};

use crate::data::{self, Dataset, Split};
use crate::loss::normalize;
use crate::train::clip::ClipModel;

const BATCH: usize = 64;

fn embed_texts<B: Backend>(
    model: &ClipModel<B>,
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
        parts.push(normalize(model.text.forward(t)));
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
    let Some(phase) = stage.phases.last() else {
        return Ok(json!({"note": "no phases"}));
    };
    let Some(DataPlan::Source(ctor)) = &phase.data else {
        return Ok(json!({"note": "data written by another stage: not evaluated"}));
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
    let txt = embed_texts(model, tok, &captions, context, device);

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
                let e = embed_texts(model, tok, &ps, context, device);
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

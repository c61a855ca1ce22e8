//! Contrastive stages: a vision tower and a text tower trained with `clip` or `siglip`,
//! optionally with `mask_regularization` (PE-Core pretraining, image cooldown).

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{LossPlan, StagePlan};

use crate::loss;
use crate::model::{TextConfig, TextTransformer, VisionTransformer, VitConfig};

/// The trained state of a contrastive stage: both towers and the loss's own parameters.
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    pub vision: VisionTransformer<B>,
    pub text: TextTransformer<B>,
    /// ln of the logit scale (CLIP's learnable temperature), clamped when used.
    pub logit_scale: Param<Tensor<B, 1>>,
    /// SigLIP's logit bias (unused, and untouched, by `clip`).
    pub logit_bias: Param<Tensor<B, 1>>,
}

/// The names of the stage's two towers.
#[derive(Clone, Debug)]
pub struct Towers {
    pub vision: String,
    pub text: String,
    pub vision_config: VitConfig,
    pub text_config: TextConfig,
}

/// Whether this runtime can train the stage as a contrastive one; the reason when not.
pub fn towers(stage: &StagePlan) -> Result<Towers, String> {
    use pexc_compiler::lower::plan::Role;
    let unsupported = |what: String| {
        format!(
            "stage `{}`: {what} is not supported by this runtime yet (contrastive stages only: a vision and a text tower with clip/siglip and mask_regularization)",
            stage.name
        )
    };
    if !stage.teachers.is_empty() {
        return Err(unsupported("a stage with teachers".into()));
    }
    let vision: Vec<_> = stage
        .models
        .iter()
        .filter(|m| m.role == Role::Vision)
        .collect();
    let text: Vec<_> = stage
        .models
        .iter()
        .filter(|m| m.role == Role::Text)
        .collect();
    if vision.len() != 1 || text.len() != 1 || stage.models.len() != 2 {
        return Err(unsupported(format!(
            "a stage with models {}",
            stage
                .models
                .iter()
                .map(|m| format!("`{}`", m.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for p in &stage.phases {
        for l in &p.loss {
            if !matches!(
                l.term.ctor.as_str(),
                "clip" | "siglip" | "mask_regularization"
            ) {
                return Err(unsupported(format!("the loss `{}`", l.term.ctor)));
            }
        }
        if p.frames.is_some() {
            return Err(unsupported("video data".into()));
        }
        if !p.regularize.is_empty() {
            return Err(unsupported("`regularize`".into()));
        }
        // What the loop does not do is refused, not silently run another way.
        if p.precision != "fp32" {
            return Err(unsupported(format!(
                "`precision: {}` (this runtime trains in fp32)",
                p.precision
            )));
        }
        if p.accumulate > 1 {
            return Err(unsupported(format!(
                "gradient accumulation (`accumulate: {}`)",
                p.accumulate
            )));
        }
    }
    if stage.devices > 1 {
        return Err(unsupported(format!(
            "`devices: {}` (this runtime trains on one device)",
            stage.devices
        )));
    }
    Ok(Towers {
        vision: vision[0].name.clone(),
        text: text[0].name.clone(),
        vision_config: VitConfig::from_plan(&vision[0].config)?,
        text_config: TextConfig::from_plan(&text[0].config)?,
    })
}

impl<B: Backend> ClipModel<B> {
    pub fn new(t: &Towers, stage: &StagePlan, device: &B::Device) -> Self {
        // The scale's initial value and SigLIP's bias from the first phase's loss.
        let (mut init_scale, mut init_bias) = (1.0 / 0.07, -10.0);
        if let Some(p) = stage.phases.first() {
            for l in &p.loss {
                if let Some(s) = l.term.float("init_logit_scale") {
                    init_scale = s;
                }
                if let Some(b) = l.term.float("init_bias") {
                    init_bias = b;
                }
            }
        }
        ClipModel {
            vision: VisionTransformer::new(&t.vision_config, device),
            text: TextTransformer::new(&t.text_config, device),
            logit_scale: Param::from_tensor(Tensor::from_floats(
                [(init_scale as f32).ln()],
                device,
            )),
            logit_bias: Param::from_tensor(Tensor::from_floats([init_bias as f32], device)),
        }
    }
}

/// One batch, as tensors.
pub struct Batch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub tokens: Tensor<B, 2, Int>,
    /// Patch masks of the masked copies (copies, patches), when mask regularisation is on.
    pub masks: Option<Tensor<B, 2, Bool>>,
}

/// The loss of one step and each weighted term's value, by term name.
pub struct StepLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub terms: Vec<(String, Tensor<B, 1>)>,
}

/// The number of masked copies of a batch for `fraction` (exact: the checker requires it).
pub fn masked_copies(loss: &[LossPlan], batch: usize) -> usize {
    loss.iter()
        .find(|l| l.term.ctor == "mask_regularization")
        .and_then(|l| l.term.float("fraction"))
        .map_or(0, |f| (f * batch as f64).round() as usize)
}

/// The forward pass and loss of a contrastive step.
pub fn forward<B: AutodiffBackend>(
    model: &ClipModel<B>,
    batch: &Batch<B>,
    loss: &[LossPlan],
) -> StepLoss<B> {
    let [n, _, _, _] = batch.images.dims();
    let device = batch.images.device();
    // Masked copies ride in the same forward pass as the originals, after them; the
    // originals' pooled embeddings feed the contrastive loss, the copies' tokens only the
    // mask loss.
    let (images, mask, copies) = match &batch.masks {
        Some(m) => {
            let [k, patches] = m.dims();
            let copies = batch.images.clone().narrow(0, 0, k);
            let none = Tensor::<B, 2, Bool>::from_data(
                TensorData::new(vec![false; n * patches], [n, patches]),
                &device,
            );
            (
                Tensor::cat(vec![batch.images.clone(), copies], 0),
                Some(Tensor::cat(vec![none, m.clone()], 0)),
                k,
            )
        }
        None => (batch.images.clone(), None, 0),
    };
    // Mask regularisation compares the last block's tokens, before `ln_post`: after it,
    // every token can be made the same (a LayerNorm weight of zero leaves only its bias),
    // which satisfies the cosine target by collapsing the tower (measured: the CLIP loss
    // stuck at ln(batch) from step 16 with AdamW 1e-3).
    let taps: Vec<usize> = if copies > 0 {
        vec![model.vision.depth().saturating_sub(1)]
    } else {
        Vec::new()
    };
    let out = model.vision.forward_taps(images, mask, &taps);
    // `towers` admits only pooled towers; the token mean keeps this total regardless.
    let pooled = match out.pooled {
        Some(p) => p,
        None => out.tokens.clone().mean_dim(1).squeeze_dim::<2>(1),
    };
    let img = pooled.narrow(0, 0, n);
    let txt = model.text.forward(batch.tokens.clone());

    let mut terms = Vec::new();
    let mut total: Option<Tensor<B, 1>> = None;
    for l in loss {
        let value = match l.term.ctor.as_str() {
            "clip" => loss::clip(
                img.clone(),
                txt.clone(),
                model.logit_scale.val(),
                l.term.float("max_logit_scale").unwrap_or(100.0),
            ),
            "siglip" => loss::siglip(
                img.clone(),
                txt.clone(),
                model.logit_scale.val(),
                model.logit_bias.val(),
            ),
            "mask_regularization" if copies > 0 => {
                let tokens = out
                    .taps
                    .first()
                    .cloned()
                    .unwrap_or_else(|| out.tokens.clone());
                let masked = tokens.clone().narrow(0, n, copies);
                // The unmasked side is a fixed target: the gradients stay disjoint.
                let target = tokens.narrow(0, 0, copies).detach();
                let Some(m) = &batch.masks else { continue };
                // Weights over every token: the CLS token (when there is one) is not a
                // masked position.
                let mut weight = m.clone().float();
                let [_, t, _] = masked.dims();
                let [_, patches] = weight.dims();
                if t > patches {
                    weight = Tensor::cat(
                        vec![Tensor::zeros([copies, t - patches], &device), weight],
                        1,
                    );
                }
                loss::masked_token_cosine(masked, target, weight)
            }
            _ => continue,
        };
        let weighted = value.clone().mul_scalar(l.weight);
        total = Some(match total {
            Some(t) => t.add(weighted),
            None => weighted,
        });
        terms.push((l.term.ctor.clone(), value));
    }
    StepLoss {
        total: total.unwrap_or_else(|| Tensor::zeros([1], &device)),
        terms,
    }
}

/// Random patch masks: `ratio` of each copy's patches, exactly, chosen by `rng`.
pub fn patch_masks<B: Backend>(
    copies: usize,
    patches: usize,
    ratio: f64,
    rng: &mut crate::rng::SplitMix,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let masked = ((patches as f64) * ratio).round() as usize;
    let mut values = Vec::with_capacity(copies * patches);
    for _ in 0..copies {
        let mut idx: Vec<usize> = (0..patches).collect();
        rng.shuffle(&mut idx);
        let mut row = vec![false; patches];
        for &i in idx.iter().take(masked) {
            row[i] = true;
        }
        values.extend(row);
    }
    Tensor::from_data(TensorData::new(values, [copies, patches]), device)
}

//! The models of a training stage and the forward pass of one step, for every stage kind
//! of the PE pipeline: contrastive pretraining, cooldown and video finetuning (`clip`,
//! `siglip`, `mask_regularization`, frame pooling), distillation (`distill_kl` from a
//! frozen CLIP), language alignment (`next_token` through a projector and a decoder) and
//! spatial alignment (`token_cosine` to a frozen tower's block, `pairwise_similarity` to
//! mask logits).

use std::collections::HashMap;

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use pexc_compiler::lower::plan::{Arg, LossPlan, StagePlan};

use crate::loss;
use crate::model::{
    DecoderConfig, MlpProjector, ProjectorConfig, TextConfig, TextDecoder, TextTransformer,
    VisionTransformer, VitConfig,
};

/// The trained state of a stage: its vision tower, the text tower, projector and decoder
/// when it has them, and the contrastive loss's own parameters. Parameter paths are
/// `vision.*`, `text.*`, `proj.*`, `decoder.*`, `logit_scale`, `logit_bias`.
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    pub vision: VisionTransformer<B>,
    pub text: Option<TextTransformer<B>>,
    pub proj: Option<MlpProjector<B>>,
    pub decoder: Option<TextDecoder<B>>,
    /// ln of the logit scale (CLIP's learnable temperature), clamped when used.
    pub logit_scale: Param<Tensor<B, 1>>,
    /// SigLIP's logit bias (unused, and untouched, by `clip`).
    pub logit_bias: Param<Tensor<B, 1>>,
}

/// The stage's models by part, with their configurations.
#[derive(Clone, Debug)]
pub struct Towers {
    pub vision: String,
    pub text: Option<String>,
    pub proj: Option<String>,
    pub decoder: Option<String>,
    /// The vision tower as built: truncated after the projector's block, with the
    /// stage's `layer_scale` regulariser.
    pub vision_config: VitConfig,
    pub text_config: Option<TextConfig>,
    pub proj_config: Option<ProjectorConfig>,
    pub decoder_config: Option<DecoderConfig>,
    /// The vision block (0-based) the projector reads.
    pub proj_block: Option<usize>,
}

impl Towers {
    /// The part (`vision`, `text`, `proj`, `decoder`) that holds the stage's model `name`.
    pub fn part(&self, name: &str) -> Option<&'static str> {
        if self.vision == name {
            Some("vision")
        } else if self.text.as_deref() == Some(name) {
            Some("text")
        } else if self.proj.as_deref() == Some(name) {
            Some("proj")
        } else if self.decoder.as_deref() == Some(name) {
            Some("decoder")
        } else {
            None
        }
    }

    /// The context the stage's captions must fit: the text tower's, else the decoder's.
    pub fn context(&self) -> Option<usize> {
        self.text_config
            .as_ref()
            .map(|t| t.context)
            .or(self.decoder_config.as_ref().map(|d| d.context))
    }

    /// The vocabulary of the stage's tokenizer: the smallest of its text models'.
    pub fn vocab(&self) -> Option<usize> {
        let t = self.text_config.as_ref().map(|t| t.vocab);
        let d = self.decoder_config.as_ref().map(|d| d.vocab);
        match (t, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The loss terms this runtime trains.
const LOSSES: [&str; 7] = [
    "clip",
    "siglip",
    "mask_regularization",
    "distill_kl",
    "next_token",
    "token_cosine",
    "pairwise_similarity",
];

/// The stage's models and what the runtime can train of it; the reason when it cannot.
pub fn towers(stage: &StagePlan) -> Result<Towers, String> {
    use pexc_compiler::lower::plan::Role;
    let unsupported = |what: String| {
        format!(
            "stage `{}`: {what} is not supported by this runtime yet",
            stage.name
        )
    };
    let of = |role: Role| -> Vec<_> { stage.models.iter().filter(|m| m.role == role).collect() };
    let (vision, text, proj, decoder) = (
        of(Role::Vision),
        of(Role::Text),
        of(Role::Projector),
        of(Role::Decoder),
    );
    if vision.len() != 1 || text.len() > 1 || proj.len() > 1 || decoder.len() > 1 {
        return Err(unsupported(format!(
            "a stage with models {} (one vision tower, and at most one text tower, projector and decoder)",
            stage
                .models
                .iter()
                .map(|m| format!("`{}`", m.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for t in &stage.teachers {
        match t.kind.as_str() {
            "frozen" => {}
            "mask_logits" => {}
            other => return Err(unsupported(format!("a `{other}` teacher"))),
        }
    }
    let mut layer_scale: Option<Option<f64>> = None;
    for p in &stage.phases {
        for l in &p.loss {
            if !LOSSES.contains(&l.term.ctor.as_str()) {
                return Err(unsupported(format!("the loss `{}`", l.term.ctor)));
            }
            if l.term.ctor == "token_cosine" && l.term.bool("project") == Some(true) {
                return Err(unsupported(
                    "`token_cosine(project: true)` (a learned map between widths)".into(),
                ));
            }
            let needs_text = matches!(l.term.ctor.as_str(), "clip" | "siglip" | "distill_kl");
            if needs_text && text.is_empty() {
                return Err(format!(
                    "stage `{}`: the loss `{}` needs a text tower",
                    stage.name, l.term.ctor
                ));
            }
            if l.term.ctor == "next_token" && (proj.is_empty() || decoder.is_empty()) {
                return Err(format!(
                    "stage `{}`: `next_token` needs a projector and a decoder",
                    stage.name
                ));
            }
        }
        let ls = p
            .regularize
            .iter()
            .find(|r| r.ctor == "layer_scale")
            .and_then(|r| r.float("init"));
        match layer_scale {
            Some(prev) if prev != ls => {
                return Err(unsupported(
                    "`layer_scale` that differs between phases (it adds parameters to the tower)"
                        .into(),
                ))
            }
            _ => layer_scale = Some(ls),
        }
        for r in &p.regularize {
            if !matches!(r.ctor.as_str(), "layer_scale" | "drop_path" | "token_mask") {
                return Err(unsupported(format!("the regulariser `{}`", r.ctor)));
            }
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
    let mut vision_config = VitConfig::from_plan(&vision[0].config)?;
    if let Some(Some(init)) = layer_scale {
        if vision_config.layer_scale.is_none() {
            vision_config.layer_scale = Some(init);
        }
    }
    // The projector reads a block of the tower; the blocks after it are dropped (PE-lang
    // reads block 47 of 50 and drops 3).
    let proj_block = proj.first().map(|p| match p.config.arg("input") {
        Some(Arg::Tap(t)) => (t.block as usize).min(vision_config.depth.saturating_sub(1)),
        _ => vision_config.depth.saturating_sub(1),
    });
    if let Some(b) = proj_block {
        vision_config.depth = b + 1;
    }
    Ok(Towers {
        vision: vision[0].name.clone(),
        text: text.first().map(|m| m.name.clone()),
        proj: proj.first().map(|m| m.name.clone()),
        decoder: decoder.first().map(|m| m.name.clone()),
        text_config: text
            .first()
            .map(|m| TextConfig::from_plan(&m.config))
            .transpose()?,
        proj_config: proj
            .first()
            .map(|m| ProjectorConfig::from_plan(&m.config, vision_config.width))
            .transpose()?,
        decoder_config: decoder
            .first()
            .map(|m| DecoderConfig::from_plan(&m.config))
            .transpose()?,
        vision_config,
        proj_block,
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
            text: t
                .text_config
                .as_ref()
                .map(|c| TextTransformer::new(c, device)),
            proj: t.proj_config.as_ref().map(|c| MlpProjector::new(c, device)),
            decoder: t
                .decoder_config
                .as_ref()
                .map(|c| TextDecoder::new(c, device)),
            logit_scale: Param::from_tensor(Tensor::from_floats(
                [(init_scale as f32).ln()],
                device,
            )),
            logit_bias: Param::from_tensor(Tensor::from_floats([init_bias as f32], device)),
        }
    }

    /// Sets DropPath on the vision tower: rate `p` at the last block, rising linearly
    /// from 0 at the first (stochastic depth's usual schedule).
    pub fn set_drop_path(&mut self, p: f64) {
        let depth = self.vision.transformer.resblocks.len();
        for (i, b) in self.vision.transformer.resblocks.iter_mut().enumerate() {
            b.drop_path = if depth > 1 {
                p * i as f64 / (depth - 1) as f64
            } else {
                p
            };
        }
    }
}

/// The next-token targets of a batch: decoder input ids, the ids they predict, and which
/// of those count (up to and with the end token).
pub struct DecoderBatch<B: Backend> {
    pub input: Tensor<B, 2, Int>,
    pub target: Tensor<B, 2, Int>,
    pub weight: Tensor<B, 2>,
}

/// What a teacher gives for a batch (constants, computed without autodiff).
pub enum TeacherOut<B: Backend> {
    /// A frozen CLIP's normalised-or-not image and text embeddings (n, out).
    Clip {
        img: Tensor<B, 2>,
        txt: Tensor<B, 2>,
    },
    /// Tokens of a frozen tower's block (n, tokens, width), CLS first when it has one.
    Tokens(Tensor<B, 3>),
    /// Per-patch features (n, patches, k): mask logits averaged over each patch.
    PatchFeatures(Tensor<B, 3>),
}

/// One batch, as tensors.
pub struct Batch<B: Backend> {
    /// (n * frames, 3, r, r): clips are their frames in order.
    pub images: Tensor<B, 4>,
    /// Frames per sample (1 for images); per-frame embeddings are averaged.
    pub frames: usize,
    /// Text tower ids (n, context), for the contrastive and distillation losses.
    pub tokens: Option<Tensor<B, 2, Int>>,
    /// Patch masks of the masked copies (copies, patches), when mask regularisation is on.
    pub masks: Option<Tensor<B, 2, Bool>>,
    /// `token_mask` (n * frames, patches): the student's masked input patches.
    pub token_mask: Option<Tensor<B, 2, Bool>>,
    pub decoder: Option<DecoderBatch<B>>,
    /// By teacher name.
    pub teachers: HashMap<String, TeacherOut<B>>,
    /// The vision tower is frozen in this phase: its outputs are constants.
    pub vision_frozen: bool,
}

impl<B: Backend> Batch<B> {
    /// A contrastive batch of images and caption ids.
    pub fn contrastive(
        images: Tensor<B, 4>,
        tokens: Tensor<B, 2, Int>,
        masks: Option<Tensor<B, 2, Bool>>,
    ) -> Self {
        Batch {
            images,
            frames: 1,
            tokens: Some(tokens),
            masks,
            token_mask: None,
            decoder: None,
            teachers: HashMap::new(),
            vision_frozen: false,
        }
    }
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

/// The vision blocks (0-based) a step must keep: mask regularisation's last block, the
/// students' taps, the projector's block.
pub fn taps_needed(loss: &[LossPlan], depth: usize, proj_block: Option<usize>) -> Vec<usize> {
    let mut taps = Vec::new();
    let last = depth.saturating_sub(1);
    for l in loss {
        let t = match l.term.ctor.as_str() {
            "mask_regularization" => Some(last),
            "next_token" => proj_block,
            _ => match l.term.arg("student") {
                Some(Arg::Tap(t)) => Some((t.block as usize).min(last)),
                _ => None,
            },
        };
        if let Some(t) = t {
            if !taps.contains(&t) {
                taps.push(t);
            }
        }
    }
    taps
}

/// The name of a term's teacher.
pub fn teacher_of(l: &LossPlan) -> Option<&str> {
    match l.term.arg("teacher") {
        Some(Arg::Teacher { teacher }) => Some(teacher),
        _ => None,
    }
}

/// The forward pass and loss of a step.
pub fn forward<B: AutodiffBackend>(
    model: &ClipModel<B>,
    batch: &Batch<B>,
    loss: &[LossPlan],
) -> StepLoss<B> {
    let [nf, _, _, _] = batch.images.dims();
    let frames = batch.frames.max(1);
    let device = batch.images.device();
    // Masked copies ride in the same forward pass as the originals, after them; the
    // originals' pooled embeddings feed the contrastive loss, the copies' tokens only the
    // mask loss.
    let (images, mask, copies) = match &batch.masks {
        Some(m) => {
            let [k, patches] = m.dims();
            let copies = batch.images.clone().narrow(0, 0, k);
            let first = batch.token_mask.clone().unwrap_or_else(|| {
                Tensor::<B, 2, Bool>::from_data(
                    TensorData::new(vec![false; nf * patches], [nf, patches]),
                    &device,
                )
            });
            (
                Tensor::cat(vec![batch.images.clone(), copies], 0),
                Some(Tensor::cat(vec![first, m.clone()], 0)),
                k,
            )
        }
        None => (batch.images.clone(), batch.token_mask.clone(), 0),
    };
    // Mask regularisation compares the last block's tokens, before `ln_post`: after it,
    // every token can be made the same (a LayerNorm weight of zero leaves only its bias),
    // which satisfies the cosine target by collapsing the tower (measured: the CLIP loss
    // stuck at ln(batch) from step 16 with AdamW 1e-3).
    let proj_block = model.proj.as_ref().map(|_| model.vision.depth() - 1);
    let taps = taps_needed(loss, model.vision.depth(), proj_block);
    let out = model.vision.forward_taps(images, mask, &taps);
    let frozen = |t: Tensor<B, 3>| if batch.vision_frozen { t.detach() } else { t };
    let tap = |block: usize| -> Tensor<B, 3> {
        let t = taps
            .iter()
            .position(|&b| b == block)
            .and_then(|i| out.taps.get(i).cloned())
            .unwrap_or_else(|| out.tokens.clone());
        frozen(t)
    };
    let embedding_losses = loss
        .iter()
        .any(|l| matches!(l.term.ctor.as_str(), "clip" | "siglip" | "distill_kl"));
    // Per-frame embeddings averaged into one per clip (PE's video embedding).
    let img = embedding_losses.then(|| {
        let pooled = match out.pooled.clone() {
            Some(p) => p,
            None => out.tokens.clone().mean_dim(1).squeeze_dim::<2>(1),
        };
        let pooled = pooled.narrow(0, 0, nf);
        let pooled = if batch.vision_frozen {
            pooled.detach()
        } else {
            pooled
        };
        frame_pool(pooled, frames)
    });
    let txt = match (&model.text, &batch.tokens) {
        (Some(t), Some(ids)) if embedding_losses => Some(t.forward(ids.clone())),
        _ => None,
    };
    let patch_tokens = |t: Tensor<B, 3>| -> Tensor<B, 3> {
        if model.vision.has_cls() {
            let [b, k, w] = t.dims();
            t.slice([0..b, 1..k, 0..w])
        } else {
            t
        }
    };

    let mut terms = Vec::new();
    let mut total: Option<Tensor<B, 1>> = None;
    for l in loss {
        let teacher = teacher_of(l).and_then(|t| batch.teachers.get(t));
        let student = |l: &LossPlan| -> Tensor<B, 3> {
            match l.term.arg("student") {
                Some(Arg::Tap(t)) => tap(t.block as usize).narrow(0, 0, nf),
                _ => frozen(out.tokens.clone()).narrow(0, 0, nf),
            }
        };
        let value = match (l.term.ctor.as_str(), &img, &txt) {
            ("clip", Some(img), Some(txt)) => loss::clip(
                img.clone(),
                txt.clone(),
                model.logit_scale.val(),
                l.term.float("max_logit_scale").unwrap_or(100.0),
            ),
            ("siglip", Some(img), Some(txt)) => loss::siglip(
                img.clone(),
                txt.clone(),
                model.logit_scale.val(),
                model.logit_bias.val(),
            ),
            ("distill_kl", Some(img), Some(txt)) => {
                let Some(TeacherOut::Clip { img: ti, txt: tt }) = teacher else {
                    continue;
                };
                loss::distill_kl(
                    img.clone(),
                    txt.clone(),
                    model.logit_scale.val(),
                    100.0,
                    ti.clone(),
                    tt.clone(),
                    l.term.float("teacher_logit_scale").unwrap_or(200.0),
                )
            }
            ("mask_regularization", _, _) if copies > 0 => {
                let tokens = tap(model.vision.depth() - 1);
                let masked = tokens.clone().narrow(0, nf, copies);
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
            ("next_token", _, _) => {
                let (Some(proj), Some(dec), Some(d)) =
                    (&model.proj, &model.decoder, &batch.decoder)
                else {
                    continue;
                };
                let block = model.vision.depth() - 1;
                let prefix = proj.forward(tap(block).narrow(0, 0, nf));
                let logits = dec.forward(prefix, d.input.clone());
                loss::next_token(logits, d.target.clone(), d.weight.clone())
            }
            ("token_cosine", _, _) => {
                let Some(TeacherOut::Tokens(t)) = teacher else {
                    continue;
                };
                loss::token_cosine(student(l), t.clone())
            }
            ("pairwise_similarity", _, _) => {
                let temperature = l.term.float("temperature").unwrap_or(20.0);
                let target = match teacher {
                    Some(TeacherOut::PatchFeatures(f)) => f.clone(),
                    Some(TeacherOut::Tokens(t)) => {
                        let [_, k, _] = t.dims();
                        let [_, ks, _] = student(l).dims();
                        if k == ks && model.vision.has_cls() {
                            patch_tokens(t.clone())
                        } else {
                            t.clone()
                        }
                    }
                    _ => continue,
                };
                let sims = loss::sharpened_similarities(target, temperature);
                loss::pairwise_similarity(patch_tokens(student(l)), sims)
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

/// PE's video embedding: per-frame embeddings (n * frames, d), the frames of a clip
/// consecutive, averaged into one per clip (n, d).
pub fn frame_pool<B: Backend>(per_frame: Tensor<B, 2>, frames: usize) -> Tensor<B, 2> {
    let frames = frames.max(1);
    if frames == 1 {
        return per_frame;
    }
    let [nf, d] = per_frame.dims();
    let n = nf / frames;
    per_frame
        .reshape([n, frames, d])
        .mean_dim(1)
        .reshape([n, d])
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

/// `token_mask(ratio, block)` (PE-spatial: 0.75 in 2 x 2 blocks): for each of `n` images
/// of a (rows, cols) patch grid, `ratio` of the blocks of (br, bc) patches, exactly
/// (rounded), are masked; blocks at the grid's edge may be smaller.
pub fn block_masks(
    n: usize,
    grid: (usize, usize),
    block: (usize, usize),
    ratio: f64,
    rng: &mut crate::rng::SplitMix,
) -> Vec<bool> {
    let (rows, cols) = grid;
    let (br, bc) = (block.0.max(1), block.1.max(1));
    let (brows, bcols) = (rows.div_ceil(br), cols.div_ceil(bc));
    let blocks = brows * bcols;
    let masked = ((blocks as f64) * ratio).round() as usize;
    let mut out = Vec::with_capacity(n * rows * cols);
    for _ in 0..n {
        let mut idx: Vec<usize> = (0..blocks).collect();
        rng.shuffle(&mut idx);
        let mut chosen = vec![false; blocks];
        for &i in idx.iter().take(masked) {
            chosen[i] = true;
        }
        for r in 0..rows {
            for c in 0..cols {
                out.push(chosen[(r / br) * bcols + c / bc]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn inserted_layer_scale_keeps_the_pretrained_function() {
        use crate::checkpoint::{assign_allowing, collect, insert_layer_scale};
        use burn::backend::Flex;
        let dev = Default::default();
        let mut cfg = VitConfig {
            patch: 4,
            width: 16,
            depth: 2,
            heads: 2,
            mlp: 32,
            rope2d: true,
            abs: true,
            cls: true,
            pool: crate::model::Pool::Attention { heads: 2 },
            out: Some(8),
            image: 8,
            ln_post: true,
            layer_scale: None,
            drop_path: 0.0,
        };
        let plain = VisionTransformer::<Flex>::new(&cfg, &dev);
        let x = crate::model::layers::normal::<Flex, 4>([2, 3, 8, 8], 1.0, &dev);
        let want = plain
            .encode(x.clone())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let mut tensors: HashMap<String, crate::checkpoint::Stored> =
            collect(&plain, "").into_iter().collect();
        insert_layer_scale(&mut tensors, 0.1);
        cfg.layer_scale = Some(0.1);
        let scaled = assign_allowing(
            VisionTransformer::<Flex>::new(&cfg, &dev),
            &tensors,
            "",
            |k| k.contains(".ls_"),
        )
        .unwrap();
        let gamma = scaled.transformer.resblocks[0]
            .ls_1
            .as_ref()
            .unwrap()
            .gamma
            .val();
        assert!((gamma.into_data().to_vec::<f32>().unwrap()[0] - 0.1).abs() < 1e-7);
        let got = scaled
            .encode(x)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn frame_pool_averages_each_clips_consecutive_frames() {
        use burn::backend::Flex;
        let dev = Default::default();
        // Two clips of three frames, 2-d embeddings: clip 0 rows 0..3, clip 1 rows 3..6.
        let rows: Vec<f32> = vec![1., 0., 2., 0., 3., 0., 0., 10., 0., 20., 0., 60.];
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(rows, [6, 2]), &dev);
        let pooled = frame_pool(x, 3);
        assert_eq!(pooled.dims(), [2, 2]);
        let v = pooled.into_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![2.0, 0.0, 0.0, 30.0]);
    }

    #[test]
    fn block_masks_mask_whole_blocks_at_the_ratio() {
        let mut rng = SplitMix::new(3);
        let m = block_masks(5, (8, 8), (2, 2), 0.75, &mut rng);
        assert_eq!(m.len(), 5 * 64);
        for img in m.chunks(64) {
            // 12 of the 16 blocks, 4 patches each.
            assert_eq!(img.iter().filter(|&&b| b).count(), 48);
            for br in 0..4 {
                for bc in 0..4 {
                    let v = img[(2 * br) * 8 + 2 * bc];
                    for (dr, dc) in [(0, 1), (1, 0), (1, 1)] {
                        assert_eq!(img[(2 * br + dr) * 8 + 2 * bc + dc], v);
                    }
                }
            }
        }
    }
}

//! The PE vision transformer (pe-reference.md "Vision tower"; fixtures README
//! "Computation a reimplementation must match"): conv patch embedding without bias,
//! optional CLS prepended, learned absolute positions resized to the grid, 2D RoPE on
//! q and k, `ln_pre`, pre-LN blocks with optional LayerScale and DropPath, optional
//! `ln_post`, pooling, a projection without bias. Every block's output is a tap.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use super::attention_pool::AttentionPool;
use super::config::{Pool, VitConfig};
use super::layers::{normal, BlockSpec, LayerNorm, Transformer};
use super::posemb;
use super::rope2d::Rope;

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// (width, 3, patch, patch): a stride-`patch` convolution without bias.
    pub conv1: Conv1<B>,
    pub class_embedding: Option<Param<Tensor<B, 1>>>,
    /// (cls + g * g, width) for the pretraining grid g = image / patch.
    pub positional_embedding: Option<Param<Tensor<B, 2>>>,
    pub ln_pre: LayerNorm<B>,
    pub transformer: Transformer<B>,
    pub ln_post: Option<LayerNorm<B>>,
    pub attn_pool: Option<AttentionPool<B>>,
    /// (width, out), applied as `x @ proj`.
    pub proj: Option<Param<Tensor<B, 2>>>,
    pub patch: usize,
    pub heads: usize,
    pub rope2d: bool,
    pub pos_grid: usize,
    #[module(skip)]
    pub pool: PoolKind,
}

/// The patch embedding's weight (`conv1.weight`).
#[derive(Module, Debug)]
pub struct Conv1<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
}

/// The pooling, as a module constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Attention,
    Cls,
    Mean,
    None,
}

/// What a forward pass returns.
pub struct VisionOut<B: Backend> {
    /// The outputs of the requested blocks, in the order asked (before `ln_post`).
    pub taps: Vec<Tensor<B, 3>>,
    /// The final tokens, after `ln_post` when the tower has one (n, tokens, width).
    pub tokens: Tensor<B, 3>,
    /// The pooled and projected embedding, when the tower pools.
    pub pooled: Option<Tensor<B, 2>>,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn new(c: &VitConfig, device: &B::Device) -> Self {
        let w = c.width;
        let scale = (w as f64).powf(-0.5);
        let g = c.pos_grid();
        let cls = usize::from(c.cls);
        let spec = BlockSpec {
            width: w,
            heads: c.heads,
            mlp: c.mlp,
            depth: c.depth,
            layer_scale: c.layer_scale,
            drop_path: c.drop_path,
        };
        let fan_in = 3 * c.patch * c.patch;
        let pooled = c.pool != Pool::None;
        VisionTransformer {
            conv1: Conv1 {
                weight: Param::from_tensor(normal(
                    [w, 3, c.patch, c.patch],
                    (fan_in as f64).powf(-0.5),
                    device,
                )),
            },
            class_embedding: c
                .cls
                .then(|| Param::from_tensor(normal([w], scale, device))),
            positional_embedding: c
                .abs
                .then(|| Param::from_tensor(normal([cls + g * g, w], scale, device))),
            ln_pre: LayerNorm::new(w, device),
            transformer: Transformer::new(&spec, device),
            ln_post: c.ln_post.then(|| LayerNorm::new(w, device)),
            attn_pool: match c.pool {
                Pool::Attention { heads } => Some(AttentionPool::new(w, heads, device)),
                _ => None,
            },
            proj: c
                .out
                .filter(|_| pooled)
                .map(|o| Param::from_tensor(normal([w, o], scale, device))),
            patch: c.patch,
            heads: c.heads,
            rope2d: c.rope2d,
            pos_grid: g,
            pool: match c.pool {
                Pool::Attention { .. } => PoolKind::Attention,
                Pool::Cls => PoolKind::Cls,
                Pool::Mean => PoolKind::Mean,
                Pool::None => PoolKind::None,
            },
        }
    }

    pub fn width(&self) -> usize {
        self.conv1.weight.dims()[0]
    }

    pub fn depth(&self) -> usize {
        self.transformer.resblocks.len()
    }

    pub fn has_cls(&self) -> bool {
        self.class_embedding.is_some()
    }

    /// The patch grid (rows, cols) of an (h, w) image.
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        (h / self.patch, w / self.patch)
    }

    /// The raw patch embedding (n, width, rows, cols), as the official `conv1` output.
    pub fn patch_embed(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        let (rows, cols) = self.grid(h, w);
        let t = self.patch_tokens(x);
        t.swap_dims(1, 2).reshape([n, self.width(), rows, cols])
    }

    /// Patch tokens (n, rows * cols, width), row-major: the convolution as one matrix
    /// product over flattened (channel, ky, kx) patches.
    fn patch_tokens(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, h, w] = x.dims();
        let p = self.patch;
        let (rows, cols) = (h / p, w / p);
        // Pixels beyond a whole number of patches are dropped, as the strided conv does.
        let x = if rows * p != h || cols * p != w {
            x.slice([0..n, 0..c, 0..rows * p, 0..cols * p])
        } else {
            x
        };
        let patches = x
            .reshape([n, c, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * rows * cols, c * p * p]);
        let width = self.width();
        let kernel = self
            .conv1
            .weight
            .val()
            .reshape([width, c * p * p])
            .transpose();
        patches.matmul(kernel).reshape([n, rows * cols, width])
    }

    /// Tokens after CLS and positions, before `ln_pre`; `mask` (n, patches) replaces the
    /// marked patch embeddings by zeros (mask regularisation: the copy still sees where
    /// every token is, not what it held).
    pub fn embed(&self, x: Tensor<B, 4>, mask: Option<Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let [n, _, h, w] = x.dims();
        let (rows, cols) = self.grid(h, w);
        let width = self.width();
        let mut t = self.patch_tokens(x);
        if let Some(m) = mask {
            let keep = m.bool_not().float().unsqueeze_dim::<3>(2);
            t = t.mul(keep);
        }
        if let Some(cls) = &self.class_embedding {
            let c = cls.val().reshape([1, 1, width]).expand([n, 1, width]);
            t = Tensor::cat(vec![c, t], 1);
        }
        if let Some(table) = &self.positional_embedding {
            let pos = posemb::resized(table.val(), self.pos_grid, rows, cols, self.has_cls());
            t = t + pos.unsqueeze::<3>();
        }
        t
    }

    /// The RoPE tables of an (h, w) image, when the tower uses 2D RoPE.
    pub fn rope(&self, h: usize, w: usize, device: &B::Device) -> Option<Rope<B>> {
        let (rows, cols) = self.grid(h, w);
        self.rope2d.then(|| {
            Rope::new(
                self.width() / self.heads,
                self.heads,
                rows,
                cols,
                self.has_cls(),
                device,
            )
        })
    }

    /// The full forward pass with the block outputs of `taps` (0-based) kept.
    pub fn forward_taps(
        &self,
        x: Tensor<B, 4>,
        mask: Option<Tensor<B, 2, Bool>>,
        taps: &[usize],
    ) -> VisionOut<B> {
        let [_, _, h, w] = x.dims();
        let rope = self.rope(h, w, &x.device());
        let mut t = self.ln_pre.forward(self.embed(x, mask));
        let mut kept: Vec<(usize, Tensor<B, 3>)> = Vec::new();
        for (i, block) in self.transformer.resblocks.iter().enumerate() {
            t = block.forward(t, rope.as_ref(), false);
            if taps.contains(&i) {
                kept.push((i, t.clone()));
            }
        }
        let tokens = match &self.ln_post {
            Some(ln) => ln.forward(t),
            None => t,
        };
        let pooled = self.pool(tokens.clone());
        VisionOut {
            taps: taps
                .iter()
                .filter_map(|i| kept.iter().find(|(j, _)| j == i).map(|(_, t)| t.clone()))
                .collect(),
            tokens,
            pooled,
        }
    }

    /// The forward pass without taps; `mask` as in `embed`.
    pub fn forward_masked(
        &self,
        x: Tensor<B, 4>,
        mask: Option<Tensor<B, 2, Bool>>,
    ) -> VisionOut<B> {
        self.forward_taps(x, mask, &[])
    }

    /// The official `forward_features(norm, layer_idx)`: the tokens after block `layer`
    /// (0-based, inclusive; negative counts from the end; `None` = the last), CLS
    /// included, with `ln_post` only when `norm` (and only after the last block).
    pub fn forward_features(
        &self,
        x: Tensor<B, 4>,
        layer: Option<i64>,
        norm: bool,
    ) -> Tensor<B, 3> {
        let depth = self.depth() as i64;
        let last = match layer {
            None => depth - 1,
            Some(k) if k < 0 => depth + k,
            Some(k) => k,
        }
        .clamp(0, depth - 1) as usize;
        let [_, _, h, w] = x.dims();
        let rope = self.rope(h, w, &x.device());
        let mut t = self.ln_pre.forward(self.embed(x, None));
        for block in self.transformer.resblocks.iter().take(last + 1) {
            t = block.forward(t, rope.as_ref(), false);
        }
        match (&self.ln_post, norm) {
            (Some(ln), true) => ln.forward(t),
            _ => t,
        }
    }

    /// Pooling and projection of the final tokens; `None` for a token tower.
    pub fn pool(&self, tokens: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let [n, t, w] = tokens.dims();
        let pooled = match self.pool {
            PoolKind::Attention => self.attn_pool.as_ref()?.forward(tokens),
            PoolKind::Cls => tokens.slice([0..n, 0..1, 0..w]).reshape([n, w]),
            PoolKind::Mean => {
                let start = usize::from(self.has_cls()).min(t.saturating_sub(1));
                tokens
                    .slice([0..n, start..t, 0..w])
                    .mean_dim(1)
                    .reshape([n, w])
            }
            PoolKind::None => return None,
        };
        Some(match &self.proj {
            Some(p) => pooled.matmul(p.val()),
            None => pooled,
        })
    }

    /// The official `forward`: the pooled, projected embedding (unnormalised).
    pub fn encode(&self, x: Tensor<B, 4>) -> Option<Tensor<B, 2>> {
        self.forward_masked(x, None).pooled
    }
}

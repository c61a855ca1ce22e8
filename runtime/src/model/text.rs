//! The CLIP text transformer as PE uses it (pe-reference.md "Text towers"; fixtures
//! README "Text tower"): token plus learned position embeddings, causal pre-LN blocks,
//! `ln_final`, pooled at the end-of-text token (the row's largest id), projected by
//! `text_projection` without bias.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::config::TextConfig;
use super::layers::{normal, BlockSpec, LayerNorm, Transformer};

#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    pub token_embedding: Embedding<B>,
    /// (context, width)
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub transformer: Transformer<B>,
    pub ln_final: LayerNorm<B>,
    /// (width, out), applied as `x @ text_projection`.
    pub text_projection: Param<Tensor<B, 2>>,
}

impl<B: Backend> TextTransformer<B> {
    pub fn new(c: &TextConfig, device: &B::Device) -> Self {
        let spec = BlockSpec {
            width: c.width,
            heads: c.heads,
            mlp: c.mlp,
            depth: c.depth,
            layer_scale: None,
            drop_path: 0.0,
        };
        TextTransformer {
            token_embedding: EmbeddingConfig::new(c.vocab, c.width)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            positional_embedding: Param::from_tensor(normal([c.context, c.width], 0.01, device)),
            transformer: Transformer::new(&spec, device),
            ln_final: LayerNorm::new(c.width, device),
            text_projection: Param::from_tensor(normal(
                [c.width, c.out],
                (c.width as f64).powf(-0.5),
                device,
            )),
        }
    }

    pub fn context(&self) -> usize {
        self.positional_embedding.dims()[0]
    }

    /// Every token after `ln_final` (n, len, width).
    pub fn tokens(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, len] = ids.dims();
        let [ctx, width] = self.positional_embedding.dims();
        let len_used = len.min(ctx);
        let ids = if len_used < len {
            let [n, _] = ids.dims();
            ids.slice([0..n, 0..len_used])
        } else {
            ids
        };
        let pos = self
            .positional_embedding
            .val()
            .slice([0..len_used, 0..width])
            .unsqueeze::<3>();
        let mut x = self.token_embedding.forward(ids) + pos;
        for block in &self.transformer.resblocks {
            x = block.forward(x, None, true);
        }
        self.ln_final.forward(x)
    }

    /// The pooled tokens before the projection (n, width): each row's end-of-text token,
    /// at the argmax of its ids.
    pub fn pooled(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let eot = ids.clone().argmax(1); // (n, 1)
        let x = self.tokens(ids);
        let [n, len, w] = x.dims();
        let idx = eot
            .clamp(0, len as i64 - 1)
            .unsqueeze_dim::<3>(2)
            .expand([n, 1, w]);
        x.gather(1, idx).reshape([n, w])
    }

    /// The official `encode_text`: the projected end-of-text token (unnormalised).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.pooled(ids).matmul(self.text_projection.val())
    }
}

//! PE's attention pooling ("SigLIP style"): one learned probe query attends over all
//! tokens (CLS included), then `a + MLP(LN(a))`; no residual from the probe and no
//! LayerNorm before the attention (pe-reference.md, fixtures README "Attention pool").

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::layers::{normal, Attention, LayerNorm, Mlp};

#[derive(Module, Debug)]
pub struct AttentionPool<B: Backend> {
    /// (1, 1, width)
    pub probe: Param<Tensor<B, 3>>,
    pub attn: Attention<B>,
    pub layernorm: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> AttentionPool<B> {
    pub fn new(width: usize, heads: usize, device: &B::Device) -> Self {
        let std = (width as f64).powf(-0.5);
        AttentionPool {
            probe: Param::from_tensor(normal([1, 1, width], std, device)),
            attn: Attention::new(width, heads, std, std, device),
            layernorm: LayerNorm::new(width, device),
            mlp: Mlp::new(
                width,
                4 * width,
                (2.0 * width as f64).powf(-0.5),
                std,
                device,
            ),
        }
    }

    /// The attention output alone (n, width), before the MLP.
    pub fn attend(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, _, w] = x.dims();
        let q = self.probe.val().expand([n, 1, w]);
        self.attn.cross(q, x)
    }

    /// (n, tokens, width) -> (n, width)
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [n, _, w] = x.dims();
        let a = self.attend(x);
        let y = a.clone() + self.mlp.forward(self.layernorm.forward(a));
        y.reshape([n, w])
    }
}

//! The transformer parts shared by PE's vision and text towers, named as in the official
//! PE code (`ln_1`, `attn.in_proj_weight`, `mlp.c_fc`, `ls_1.gamma`...), so a parameter's
//! path is its official key. Weights are stored (in, out), burn's layout; the official
//! (out, in) matrices are transposed on load and export (`official.rs`).

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use super::kernels::{attention, attention_tokens, gelu, layer_norm};
use super::rope2d::Rope;

/// PE's LayerNorm epsilon.
pub const LN_EPS: f64 = 1e-5;

/// A normal-initialised tensor.
pub fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// LayerNorm over the last dimension with affine `weight` and `bias`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(width: usize, device: &B::Device) -> Self {
        LayerNorm {
            weight: Param::from_tensor(Tensor::ones([width], device)),
            bias: Param::from_tensor(Tensor::zeros([width], device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        layer_norm(x, self.weight.val(), self.bias.val(), LN_EPS)
    }
}

/// A linear layer with a normal-initialised weight and a zero bias.
pub fn linear<B: Backend>(input: usize, output: usize, std: f64, device: &B::Device) -> Linear<B> {
    LinearConfig::new(input, output)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
        .zero_bias()
}

/// `lin.forward(x)` with every leading dimension of `x` flattened into one: a (rows, in)
/// matrix times the weight. On a batched input burn's weight gradient is a batched matmul,
/// `[batch, in, out]` summed over the batch: batch times the memory to clear, copy and
/// sum, and a matmul whose inner dimension is one sequence instead of every token. Flat,
/// it is one matmul over all tokens. Same values either way.
pub fn linear_flat<B: Backend, const D: usize>(lin: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    if D <= 2 {
        return lin.forward(x);
    }
    let mut dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let y = lin.forward(x.reshape([rows, dims[D - 1]]));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

trait ZeroBias {
    fn zero_bias(self) -> Self;
}

impl<B: Backend> ZeroBias for Linear<B> {
    fn zero_bias(mut self) -> Self {
        if let Some(b) = self.bias.take() {
            self.bias = Some(Param::from_tensor(b.val().zeros_like()));
        }
        self
    }
}

/// `c_proj(gelu(c_fc(x)))`, exact (erf) GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub c_fc: Linear<B>,
    pub c_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(
        width: usize,
        hidden: usize,
        fc_std: f64,
        proj_std: f64,
        device: &B::Device,
    ) -> Self {
        Mlp {
            c_fc: linear(width, hidden, fc_std, device),
            c_proj: linear(hidden, width, proj_std, device),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear_flat(&self.c_proj, gelu(linear_flat(&self.c_fc, x)))
    }
}

/// Multi-head attention with one packed q/k/v projection (`in_proj_weight`, rows q, k, v
/// in the official layout), heads split contiguously, optional RoPE on q and k.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// (width, 3 * width): columns q, then k, then v.
    pub in_proj_weight: Param<Tensor<B, 2>>,
    pub in_proj_bias: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

/// (n, t, w) -> (n * t, w) @ weight + bias -> (n, t, out).
fn project<B: Backend>(x: Tensor<B, 3>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 3> {
    let [n, t, w] = x.dims();
    let out = weight.dims()[1];
    (x.reshape([n * t, w]).matmul(weight) + bias.unsqueeze::<2>()).reshape([n, t, out])
}

impl<B: Backend> Attention<B> {
    pub fn new(width: usize, heads: usize, in_std: f64, out_std: f64, device: &B::Device) -> Self {
        Attention {
            in_proj_weight: Param::from_tensor(normal([width, 3 * width], in_std, device)),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * width], device)),
            out_proj: linear(width, width, out_std, device),
            heads,
        }
    }

    fn width(&self) -> usize {
        self.in_proj_weight.dims()[0]
    }

    /// (n, t, w) -> (n, heads, t, head_dim)
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [n, t, w] = x.dims();
        x.reshape([n, t, self.heads, w / self.heads])
            .swap_dims(1, 2)
    }

    fn merge_heads(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, h, t, d] = x.dims();
        let merged = x.swap_dims(1, 2).reshape([n * t, h * d]);
        self.out_proj.forward(merged).reshape([n, t, h * d])
    }

    /// Self-attention over `x` (n, t, w); `causal` hides later tokens (the text tower).
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>, causal: bool) -> Tensor<B, 3> {
        let w = self.width();
        let (weight, bias) = (self.in_proj_weight.val(), self.in_proj_bias.val());
        // One projection per third of the packed weight. Slicing the (w, 3w) weight is
        // cheap, forward and backward; slicing a (n, t, 3w) activation makes q, k and v
        // strided views to copy, and its backward three zero-filled activations to add.
        let third = |i: usize| {
            project(
                x.clone(),
                weight.clone().slice([0..w, i * w..(i + 1) * w]),
                bias.clone().narrow(0, i * w, w),
            )
        };
        let (mut q, mut k) = (third(0), third(1));
        if let Some(r) = rope {
            q = r.apply_tokens(q);
            k = r.apply_tokens(k);
        }
        // Heads stay side by side (token-major) in and out: no split or merge to copy.
        let o = attention_tokens(q, k, third(2), self.heads, causal);
        linear_flat(&self.out_proj, o)
    }

    /// Cross-attention of queries `q` (n, tq, w) over `x` (n, t, w): the query is projected
    /// with the q third of the packed weight, keys and values with the k and v thirds
    /// (PyTorch's `nn.MultiheadAttention(q, x, x)`).
    pub fn cross(&self, q: Tensor<B, 3>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let w = self.width();
        let weight = self.in_proj_weight.val();
        let bias = self.in_proj_bias.val();
        let q = project(
            q,
            weight.clone().slice([0..w, 0..w]),
            bias.clone().narrow(0, 0, w),
        );
        let kv = project(x, weight.slice([0..w, w..3 * w]), bias.narrow(0, w, 2 * w));
        let [n, t, _] = kv.dims();
        let k = self.split_heads(kv.clone().slice([0..n, 0..t, 0..w]));
        let v = self.split_heads(kv.slice([0..n, 0..t, w..2 * w]));
        let o = attention(self.split_heads(q), k, v, false);
        self.merge_heads(o)
    }
}

/// LayerScale: a learned per-channel factor on a residual branch.
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.mul(self.gamma.val().unsqueeze::<3>())
    }
}

/// A pre-LN residual block: `x + ls_1(attn(ln_1(x)))`, then `x + ls_2(mlp(ln_2(x)))`, each
/// branch dropped per sample with probability `drop_path` while training.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln_1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub ls_1: Option<LayerScale<B>>,
    pub ln_2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ls_2: Option<LayerScale<B>>,
    pub drop_path: f64,
}

/// Block sizes and initialisation (OpenAI CLIP's: attention std w^-0.5, output
/// projections w^-0.5 (2 depth)^-0.5, MLP input (2w)^-0.5).
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    pub width: usize,
    pub heads: usize,
    pub mlp: usize,
    pub depth: usize,
    pub layer_scale: Option<f64>,
    pub drop_path: f64,
}

impl<B: Backend> Block<B> {
    pub fn new(s: &BlockSpec, device: &B::Device) -> Self {
        let w = s.width as f64;
        let attn_std = w.powf(-0.5);
        let proj_std = attn_std * (2.0 * s.depth as f64).powf(-0.5);
        let fc_std = (2.0 * w).powf(-0.5);
        let ls = |v: f64| LayerScale {
            gamma: Param::from_tensor(Tensor::full([s.width], v, device)),
        };
        Block {
            ln_1: LayerNorm::new(s.width, device),
            attn: Attention::new(s.width, s.heads, attn_std, proj_std, device),
            ls_1: s.layer_scale.map(ls),
            ln_2: LayerNorm::new(s.width, device),
            mlp: Mlp::new(s.width, s.mlp, fc_std, proj_std, device),
            ls_2: s.layer_scale.map(ls),
            drop_path: s.drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>, causal: bool) -> Tensor<B, 3> {
        let mut a = self
            .attn
            .forward(self.ln_1.forward(x.clone()), rope, causal);
        if let Some(ls) = &self.ls_1 {
            a = ls.forward(a);
        }
        let x = x + self.drop(a);
        let mut m = self.mlp.forward(self.ln_2.forward(x.clone()));
        if let Some(ls) = &self.ls_2 {
            m = ls.forward(m);
        }
        x + self.drop(m)
    }

    /// DropPath (stochastic depth): the whole branch of a sample is dropped with
    /// probability p and the kept ones scaled by 1 / (1 - p); only while training
    /// (an autodiff backend), identity at inference.
    fn drop(&self, branch: Tensor<B, 3>) -> Tensor<B, 3> {
        let p = self.drop_path;
        if p <= 0.0 || !B::ad_enabled(&branch.device()) {
            return branch;
        }
        let [n, _, _] = branch.dims();
        let keep = Tensor::<B, 3>::random(
            [n, 1, 1],
            Distribution::Bernoulli(1.0 - p),
            &branch.device(),
        );
        branch.mul(keep.div_scalar(1.0 - p))
    }
}

/// The stack of blocks (`transformer.resblocks.{i}` in the official keys).
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    pub resblocks: Vec<Block<B>>,
}

impl<B: Backend> Transformer<B> {
    pub fn new(s: &BlockSpec, device: &B::Device) -> Self {
        Transformer {
            resblocks: (0..s.depth).map(|_| Block::new(s, device)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuTrain;

    type B = CpuTrain;

    /// Flattening the tokens changes how burn computes the weight gradient, not what it is:
    /// the output and the gradients of weight, bias and input match the batched form.
    #[test]
    fn a_linear_layer_on_flattened_tokens_has_the_batched_values_and_gradients() {
        let device = Default::default();
        <B as Backend>::seed(&device, 3);
        let mut lin = linear::<B>(6, 5, 0.5, &device);
        lin.bias = Some(Param::from_tensor(normal([5], 0.5, &device)));
        let x = normal::<B, 3>([3, 4, 6], 1.0, &device).require_grad();
        let target = normal::<B, 3>([3, 4, 5], 1.0, &device);
        let run = |flat: bool| {
            let y = if flat {
                linear_flat(&lin, x.clone())
            } else {
                lin.forward(x.clone())
            };
            let grads = (y.clone() * target.clone()).sum().backward();
            let b = lin.bias.as_ref().map(|b| b.grad(&grads));
            (
                y.into_data().to_vec::<f32>().unwrap_or_default(),
                lin.weight
                    .grad(&grads)
                    .map(|g| g.into_data().to_vec::<f32>().unwrap_or_default()),
                b.flatten()
                    .map(|g| g.into_data().to_vec::<f32>().unwrap_or_default()),
                x.grad(&grads)
                    .map(|g| g.into_data().to_vec::<f32>().unwrap_or_default()),
            )
        };
        let (flat, batched) = (run(true), run(false));
        let close = |a: &[f32], b: &[f32]| {
            a.len() == b.len()
                && !a.is_empty()
                && a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5)
        };
        assert!(close(&flat.0, &batched.0), "outputs");
        for (name, f, b) in [
            ("weight", &flat.1, &batched.1),
            ("bias", &flat.2, &batched.2),
            ("input", &flat.3, &batched.3),
        ] {
            let (f, b) = (f.as_ref().expect(name), b.as_ref().expect(name));
            assert!(close(f, b), "{name} gradients differ");
        }
    }
}

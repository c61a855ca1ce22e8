//! PE-lang's language model (`text_decoder(..)` in the catalogue): a causal pre-LN
//! transformer decoder that reads projected image tokens, then text. Token embedding
//! (`tok_embeddings`), blocks `x + attn(ln_1(x))`, `x + mlp(ln_2(x))` with GELU MLPs,
//! grouped-query attention (`kv_heads` key/value heads, each shared by
//! `heads / kv_heads` query heads) with 1D RoPE on q and k (pairs `(x[2i], x[2i+1])`
//! rotated by `position * rope_theta^(-2i / head_dim)`, position = index in the whole
//! sequence, image tokens included), a final `norm` and an `output` head without bias.
//! The parameter count is the planner's (`cost::decoder_params`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_compiler::lower::plan::Ctor;

use super::kernels::attention;
use super::layers::{linear, linear_flat, LayerNorm, Mlp};

/// The decoder's sizes, read from the plan's `text_decoder(..)`.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention); `heads` when absent.
    pub kv_heads: usize,
    pub mlp: usize,
    pub vocab: usize,
    /// Text tokens, image tokens excluded.
    pub context: usize,
    pub rope_theta: f64,
}

fn positive(c: &Ctor, name: &str, default: Option<usize>) -> Result<usize, String> {
    match (c.int(name), default) {
        (Some(v), _) if v > 0 => Ok(v as usize),
        (Some(v), _) => Err(format!(
            "`{}`: `{name}` must be positive, found {v}",
            c.ctor
        )),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("`{}`: `{name}` is missing from the plan", c.ctor)),
    }
}

impl DecoderConfig {
    pub fn from_plan(c: &Ctor) -> Result<Self, String> {
        if c.ctor != "text_decoder" {
            return Err(format!("`{}` is not a text decoder", c.ctor));
        }
        let width = positive(c, "width", None)?;
        let heads = positive(c, "heads", None)?;
        let kv_heads = positive(c, "kv_heads", Some(heads))?;
        if !width.is_multiple_of(heads) {
            return Err(format!(
                "`text_decoder`: width {width} is not divisible by {heads} heads"
            ));
        }
        if !heads.is_multiple_of(kv_heads) {
            return Err(format!(
                "`text_decoder`: {heads} heads are not divisible by {kv_heads} key-value heads"
            ));
        }
        let head_dim = width / heads;
        if head_dim % 2 != 0 {
            return Err(format!(
                "`text_decoder`: RoPE needs an even head width (rotated pairs), found {head_dim}"
            ));
        }
        let rope_theta = match c.float("rope_theta") {
            None => 10000.0,
            Some(t) if t > 0.0 && t.is_finite() => t,
            Some(t) => {
                return Err(format!(
                    "`text_decoder`: `rope_theta` must be positive, found {t}"
                ))
            }
        };
        Ok(DecoderConfig {
            width,
            depth: positive(c, "depth", None)?,
            heads,
            kv_heads,
            mlp: positive(c, "mlp", Some(4 * width))?,
            vocab: positive(c, "vocab", Some(49408))?,
            context: positive(c, "context", None)?,
            rope_theta,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// 1D rotary position embedding tables for `tokens` positions, shaped to broadcast over
/// (n, heads, tokens, head_dim): channels 2i and 2i+1 both hold the angle
/// `position * theta^(-2i / head_dim)`.
#[derive(Clone, Debug)]
pub struct Rope1d<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rope1d<B> {
    pub fn new(head_dim: usize, tokens: usize, theta: f64, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-(2.0 * i as f64) / head_dim as f64))
            .collect();
        let mut cos = vec![0f32; tokens * head_dim];
        let mut sin = vec![0f32; tokens * head_dim];
        for t in 0..tokens {
            for (i, f) in inv_freq.iter().enumerate() {
                let a = t as f64 * f;
                let (c, s) = (a.cos() as f32, a.sin() as f32);
                let at = t * head_dim + 2 * i;
                cos[at] = c;
                cos[at + 1] = c;
                sin[at] = s;
                sin[at + 1] = s;
            }
        }
        let shape = [1, 1, tokens, head_dim];
        Rope1d {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Rotates q or k (n, heads, tokens, head_dim): each pair (a, b) becomes
    /// (a cos - b sin, b cos + a sin).
    pub fn apply(&self, t: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, h, tokens, d] = t.dims();
        let pairs = t.clone().reshape([n, h, tokens, d / 2, 2]);
        let a = pairs.clone().narrow(4, 0, 1);
        let b = pairs.narrow(4, 1, 1);
        // (a, b) -> (-b, a)
        let swapped = Tensor::cat(vec![b.neg(), a], 4).reshape([n, h, tokens, d]);
        t.mul(self.cos.clone()) + swapped.mul(self.sin.clone())
    }
}

/// Causal grouped-query self-attention with RoPE on q and k.
#[derive(Module, Debug)]
pub struct DecoderAttention<B: Backend> {
    /// (width, width)
    pub wq: Linear<B>,
    /// (width, kv_heads * head_dim)
    pub wk: Linear<B>,
    /// (width, kv_heads * head_dim)
    pub wv: Linear<B>,
    /// (width, width)
    pub wo: Linear<B>,
    pub heads: usize,
    pub kv_heads: usize,
}

impl<B: Backend> DecoderAttention<B> {
    /// (n, t, h * d) -> (n, h, t, d)
    fn split(x: Tensor<B, 3>, h: usize) -> Tensor<B, 4> {
        let [n, t, w] = x.dims();
        x.reshape([n, t, h, w / h]).swap_dims(1, 2)
    }

    /// Repeats each of the `kv_heads` heads `heads / kv_heads` times, contiguously:
    /// query head i reads key/value head i / (heads / kv_heads).
    /// (n, kv, t, d) -> (n, heads, t, d)
    fn expand(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let group = self.heads / self.kv_heads;
        if group == 1 {
            return x;
        }
        let [n, kv, t, d] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([n, kv, group, t, d])
            .reshape([n, kv * group, t, d])
    }

    /// (n, t, width) -> (n, t, width)
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope1d<B>) -> Tensor<B, 3> {
        let [n, t, w] = x.dims();
        let q = rope.apply(Self::split(linear_flat(&self.wq, x.clone()), self.heads));
        let k = rope.apply(Self::split(linear_flat(&self.wk, x.clone()), self.kv_heads));
        let v = Self::split(linear_flat(&self.wv, x), self.kv_heads);
        let o = attention(q, self.expand(k), self.expand(v), true);
        linear_flat(&self.wo, o.swap_dims(1, 2).reshape([n, t, w]))
    }
}

/// A pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    pub ln_1: LayerNorm<B>,
    pub attn: DecoderAttention<B>,
    pub ln_2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderBlock<B> {
    /// Initialisation as the CLIP blocks (`layers::Block`): q, k, v std w^-0.5, output
    /// projections w^-0.5 (2 depth)^-0.5, MLP input (2w)^-0.5, zero biases.
    pub fn new(c: &DecoderConfig, device: &B::Device) -> Self {
        let w = c.width as f64;
        let attn_std = w.powf(-0.5);
        let proj_std = attn_std * (2.0 * c.depth as f64).powf(-0.5);
        let fc_std = (2.0 * w).powf(-0.5);
        let kv = c.kv_heads * c.head_dim();
        DecoderBlock {
            ln_1: LayerNorm::new(c.width, device),
            attn: DecoderAttention {
                wq: linear(c.width, c.width, attn_std, device),
                wk: linear(c.width, kv, attn_std, device),
                wv: linear(c.width, kv, attn_std, device),
                wo: linear(c.width, c.width, proj_std, device),
                heads: c.heads,
                kv_heads: c.kv_heads,
            },
            ln_2: LayerNorm::new(c.width, device),
            mlp: Mlp::new(c.width, c.mlp, fc_std, proj_std, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope1d<B>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), rope);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct TextDecoder<B: Backend> {
    /// (vocab, width), normal std 0.02.
    pub tok_embeddings: Embedding<B>,
    pub layers: Vec<DecoderBlock<B>>,
    pub norm: LayerNorm<B>,
    /// (width, vocab), no bias.
    pub output: Linear<B>,
    pub head_dim: usize,
    pub rope_theta: f64,
}

impl<B: Backend> TextDecoder<B> {
    pub fn new(c: &DecoderConfig, device: &B::Device) -> Self {
        TextDecoder {
            tok_embeddings: EmbeddingConfig::new(c.vocab, c.width)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            layers: (0..c.depth).map(|_| DecoderBlock::new(c, device)).collect(),
            norm: LayerNorm::new(c.width, device),
            output: LinearConfig::new(c.width, c.vocab)
                .with_bias(false)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: (c.width as f64).powf(-0.5),
                })
                .init(device),
            head_dim: c.head_dim(),
            rope_theta: c.rope_theta,
        }
    }

    pub fn vocab(&self) -> usize {
        self.tok_embeddings.weight.dims()[0]
    }

    /// Next-token logits over the text.
    ///
    /// `prefix` (n, p, width): projected image tokens, placed before the text; `ids`
    /// (n, l): text token ids. The sequence [prefix; embed(ids)] (p + l tokens, RoPE
    /// positions 0..p+l) is run causally. Returns (n, l, vocab): row j is the output at
    /// sequence position p + j, having read the prefix and ids[..=j], i.e. the logits of
    /// the next token ids[j + 1] (the last row predicts the token after the text). No
    /// row predicts ids[0].
    pub fn forward(&self, prefix: Tensor<B, 3>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [n, p, _] = prefix.dims();
        let [_, l] = ids.dims();
        let text = self.tok_embeddings.forward(ids); // (n, l, w)
        let mut x = if p == 0 {
            text
        } else {
            Tensor::cat(vec![prefix, text], 1)
        };
        let [_, t, w] = x.dims();
        let rope = Rope1d::new(self.head_dim, t, self.rope_theta, &x.device());
        for block in &self.layers {
            x = block.forward(x, &rope);
        }
        let x = self.norm.forward(x.slice([0..n, p..t, 0..w])); // (n, l, w)
        debug_assert_eq!(x.dims()[1], l);
        linear_flat(&self.output, x)
    }

    /// Greedy decoding from `prefix` (n, p, width): each row starts from [start] and takes
    /// the argmax token at each step, stopping at `end` (not included) or after
    /// `max_tokens` generated ids. Re-runs `forward` on the whole sequence each step (no
    /// KV cache). Returns each row's generated ids, without `start`.
    pub fn generate(
        &self,
        prefix: Tensor<B, 3>,
        start: i64,
        end: i64,
        max_tokens: usize,
    ) -> Vec<Vec<i64>> {
        let [n, _, _] = prefix.dims();
        let device = prefix.device();
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); n];
        let mut done = vec![false; n];
        // Row-major (n, len): every row has the same length; finished rows are padded
        // with `end`, which no other row reads.
        let mut seq: Vec<i64> = vec![start; n];
        // Each step reads `len` ids per row and appends one.
        for len in 1..=max_tokens {
            if done.iter().all(|&d| d) {
                break;
            }
            let ids: Tensor<B, 2, Int> =
                Tensor::from_data(TensorData::new(seq.clone(), [n, len]), &device);
            let logits = self.forward(prefix.clone(), ids); // (n, len, vocab)
            let vocab = logits.dims()[2];
            let next: Vec<i64> = logits
                .slice([0..n, len - 1..len, 0..vocab])
                .reshape([n, vocab])
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .unwrap_or_else(|_| vec![end; n]);
            let mut grown = Vec::with_capacity(n * (len + 1));
            for r in 0..n {
                let id = next.get(r).copied().unwrap_or(end);
                if !done[r] {
                    if id == end {
                        done[r] = true;
                    } else {
                        out[r].push(id);
                    }
                }
                grown.extend_from_slice(&seq[r * len..(r + 1) * len]);
                grown.push(if done[r] { end } else { id });
            }
            seq = grown;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Param;
    use pexc_compiler::lower::cost;
    use pexc_compiler::lower::plan::Arg;

    type B = Flex;

    fn ctor(args: &[(&str, Arg)]) -> Ctor {
        Ctor {
            ctor: "text_decoder".into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// width 16, depth 2, heads 4, mlp 24, vocab 11, context 8, with optional kv_heads.
    fn tiny(kv_heads: Option<i64>) -> Ctor {
        let mut args = vec![
            ("width", Arg::Int(16)),
            ("depth", Arg::Int(2)),
            ("heads", Arg::Int(4)),
            ("mlp", Arg::Int(24)),
            ("vocab", Arg::Int(11)),
            ("context", Arg::Int(8)),
            ("rope_theta", Arg::Float(10000.0)),
        ];
        if let Some(k) = kv_heads {
            args.push(("kv_heads", Arg::Int(k)));
        }
        ctor(&args)
    }

    fn build(c: &Ctor) -> TextDecoder<B> {
        let cfg = DecoderConfig::from_plan(c).expect("valid config");
        TextDecoder::new(&cfg, &Default::default())
    }

    fn ids(rows: &[&[i64]]) -> Tensor<B, 2, Int> {
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(
            TensorData::new(flat, [rows.len(), rows[0].len()]),
            &Default::default(),
        )
    }

    fn prefix(n: usize, p: usize, w: usize, seed: f32) -> Tensor<B, 3> {
        let v: Vec<f32> = (0..n * p * w)
            .map(|i| (i as f32 * 0.37 + seed).sin())
            .collect();
        Tensor::from_data(TensorData::new(v, [n, p, w]), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    fn max_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn param_count_matches_the_planner() {
        for kv in [Some(2), None] {
            let c = tiny(kv);
            let m = build(&c);
            assert_eq!(
                m.num_params() as u64,
                cost::decoder_params(&c),
                "kv_heads {kv:?}"
            );
        }
    }

    #[test]
    fn from_plan_defaults_and_errors() {
        let c = ctor(&[
            ("width", Arg::Int(16)),
            ("depth", Arg::Int(1)),
            ("heads", Arg::Int(4)),
            ("vocab", Arg::Int(11)),
            ("context", Arg::Int(8)),
        ]);
        let cfg = DecoderConfig::from_plan(&c).unwrap();
        assert_eq!((cfg.kv_heads, cfg.mlp, cfg.rope_theta), (4, 64, 10000.0));
        let bad = |k: &str, v: i64| {
            let mut c = tiny(None);
            c.args.insert(k.to_string(), Arg::Int(v));
            DecoderConfig::from_plan(&c).unwrap_err()
        };
        assert!(bad("heads", 3).contains("not divisible"));
        assert!(bad("kv_heads", 3).contains("key-value heads"));
        assert!(bad("heads", 16).contains("even head width"));
        assert!(bad("depth", 0).contains("positive"));
        let mut no_ctx = tiny(None);
        no_ctx.args.shift_remove("context");
        assert!(DecoderConfig::from_plan(&no_ctx)
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn logits_are_causal() {
        let m = build(&tiny(Some(2)));
        let p = prefix(1, 3, 16, 0.0);
        let a = m.forward(p.clone(), ids(&[&[1, 2, 3, 4]]));
        let b = m.forward(p, ids(&[&[1, 2, 9, 4]]));
        assert_eq!(a.dims(), [1, 4, 11]);
        let rows = |t: Tensor<B, 3>, r: std::ops::Range<usize>| t.slice([0..1, r, 0..11]);
        assert!(max_diff(rows(a.clone(), 0..2), rows(b.clone(), 0..2)) < 1e-6);
        assert!(max_diff(rows(a.clone(), 2..3), rows(b.clone(), 2..3)) > 1e-4);
        assert!(max_diff(rows(a, 3..4), rows(b, 3..4)) > 1e-4);
    }

    #[test]
    fn the_prefix_matters() {
        let m = build(&tiny(None));
        let t = ids(&[&[5, 6]]);
        let a = m.forward(prefix(1, 2, 16, 0.0), t.clone());
        let b = m.forward(prefix(1, 2, 16, 1.0), t.clone());
        assert!(max_diff(a, b) > 1e-4);
        // Without a prefix the text alone is run.
        assert_eq!(m.forward(prefix(1, 0, 16, 0.0), t).dims(), [1, 2, 11]);
    }

    #[test]
    fn grouped_query_attention_equals_repeated_heads() {
        // One shared k/v head for 4 query heads == 4 k/v heads holding copies of it.
        let mut c = tiny(Some(1));
        c.args.insert("depth".into(), Arg::Int(1));
        let gqa = build(&c);
        let p = prefix(2, 3, 16, 0.5);
        let t = ids(&[&[1, 2, 3], &[4, 5, 6]]);
        // burn initialises parameters lazily and a clone of an uninitialised parameter
        // draws its own values: run once so that the clone copies the drawn weights.
        let want = gqa.forward(p.clone(), t.clone());
        let mut full = gqa.clone();
        let tile = |l: &Linear<B>| Linear {
            weight: Param::from_tensor(Tensor::cat(vec![l.weight.val(); 4], 1)),
            bias: l
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(Tensor::cat(vec![b.val(); 4], 0))),
        };
        let attn = &mut full.layers[0].attn;
        attn.wk = tile(&gqa.layers[0].attn.wk);
        attn.wv = tile(&gqa.layers[0].attn.wv);
        attn.kv_heads = 4;
        let d = max_diff(want, full.forward(p, t));
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn rope_scores_depend_only_on_the_offset() {
        let (d, tokens) = (8, 6);
        let rope = Rope1d::<B>::new(d, tokens, 10000.0, &Default::default());
        let row = |seed: f32| -> Vec<f32> { (0..d).map(|i| (i as f32 + seed).cos()).collect() };
        let same = |v: Vec<f32>| -> Tensor<B, 4> {
            let flat: Vec<f32> = (0..tokens).flat_map(|_| v.clone()).collect();
            Tensor::from_data(
                TensorData::new(flat, [1, 1, tokens, d]),
                &Default::default(),
            )
        };
        let q = values(rope.apply(same(row(0.3))));
        let k = values(rope.apply(same(row(1.7))));
        let dot = |m: usize, n: usize| -> f32 { (0..d).map(|i| q[m * d + i] * k[n * d + i]).sum() };
        for (m, n) in [(3, 1), (4, 2), (5, 3)] {
            assert!((dot(m, n) - dot(2, 0)).abs() < 1e-5);
        }
        for (m, n) in [(1, 3), (3, 5)] {
            assert!((dot(m, n) - dot(0, 2)).abs() < 1e-5);
        }
        // The rotation is not trivial, and position 0 is the identity.
        assert!((dot(2, 0) - dot(0, 0)).abs() > 1e-3);
        let q0 = row(0.3);
        assert!(q0.iter().zip(&q[..d]).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    /// A decoder whose final norm outputs ones and whose head picks `winner` always.
    fn always(winner: usize) -> TextDecoder<B> {
        let mut m = build(&tiny(Some(2)));
        let device = Default::default();
        m.norm.weight = Param::from_tensor(Tensor::zeros([16], &device));
        m.norm.bias = Param::from_tensor(Tensor::ones([16], &device));
        let mut w = vec![0f32; 16 * 11];
        for r in 0..16 {
            w[r * 11 + winner] = 1.0;
        }
        m.output.weight =
            Param::from_tensor(Tensor::from_data(TensorData::new(w, [16, 11]), &device));
        m
    }

    #[test]
    fn generate_stops_at_end() {
        let m = always(7);
        assert_eq!(
            m.generate(prefix(2, 3, 16, 0.0), 1, 7, 5),
            vec![Vec::<i64>::new(); 2]
        );
    }

    #[test]
    fn generate_respects_max_tokens() {
        let m = always(4);
        let p = prefix(2, 3, 16, 0.0);
        assert_eq!(m.generate(p.clone(), 1, 7, 3), vec![vec![4, 4, 4]; 2]);
        assert_eq!(m.generate(p, 1, 7, 0), vec![Vec::<i64>::new(); 2]);
    }
}

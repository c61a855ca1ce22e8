//! Scaled dot-product attention, `softmax(q kᵀ / √d [+ causal mask]) v`, as one autodiff
//! operation.
//!
//! burn's attention is its generic composition: the scores scaled, masked, and put through
//! a NaN-safe softmax of seven passes (max, clamp, subtract, exp, sum, clamp, divide),
//! each differentiated on its own in the backward. Here the two products and the backward's
//! four stay burn-flex's batched matmuls, while the softmax is one pass a row (scale, mask,
//! max, a vectorised exp, normalise) and its backward too, `ds = p (dp - Σ p dp) / √d`.
//! The probabilities are kept for the backward, as burn's composition keeps them.

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{AttentionModuleOptions, FloatTensorOps};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::gelu::exp_nonpositive;
use super::{
    by_backend, chunk_len, float, prim, simd, sum8, tensor, tracked3, values, AutodiffTensor,
};
use crate::backend::{Cpu, CpuTrain};

type Qkv<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

/// Attention of queries `q` (n, heads, tq, d) over keys `k` (n, heads, tk, d) and values
/// `v` (n, heads, tk, dv), scaled by 1/√d; `causal` hides key j from query i when
/// `j > i + tk - tq`.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Tensor<B, 4> {
    by_backend(
        (q, k, v),
        |(q, k, v): Qkv<CpuTrain>| match tracked(
            prim(q.clone()),
            prim(k.clone()),
            prim(v.clone()),
            causal,
        ) {
            Some(y) => float(y),
            None => composed(q, k, v, causal),
        },
        |(q, k, v): Qkv<Cpu>| match forward(
            &prim(q.clone()),
            &prim(k.clone()),
            &prim(v.clone()),
            causal,
        ) {
            Some((y, _)) => float(y),
            None => composed(q, k, v, causal),
        },
        |(q, k, v)| composed(q, k, v, causal),
    )
}

/// burn's own attention: the other backends' path, and the tests' reference.
pub(crate) fn composed<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Tensor<B, 4> {
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    burn::tensor::module::attention(q, k, v, None, None, options)
}

#[derive(Clone, Debug)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    probs: FlexTensor,
    scale: f32,
}

/// `None` when a tensor is not f32 or the shapes do not fit.
fn tracked(
    q: AutodiffTensor,
    k: AutodiffTensor,
    v: AutodiffTensor,
    causal: bool,
) -> Option<AutodiffTensor> {
    let (y, saved) = forward(&q.primitive, &k.primitive, &v.primitive, causal)?;
    Some(tracked3([&q, &k, &v], y, saved, backward))
}

/// Gradients of q, k and v for the output gradient `grad`.
fn backward(saved: &Saved, grad: &FlexTensor) -> [FlexTensor; 3] {
    let Saved {
        q,
        k,
        v,
        probs,
        scale,
    } = saved.clone();
    let dv = Cpu::float_matmul(Cpu::float_transpose(probs.clone()), grad.clone());
    let dp = Cpu::float_matmul(grad.clone(), Cpu::float_transpose(v));
    let ds = softmax_backward(&probs, &dp, scale);
    let dq = Cpu::float_matmul(ds.clone(), k);
    let dk = Cpu::float_matmul(Cpu::float_transpose(ds), q);
    [dq, dk, dv]
}

/// The output and what the backward needs; `None` when a tensor is not f32 or the shapes
/// do not fit.
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    causal: bool,
) -> Option<(FlexTensor, Saved)> {
    let (qs, ks, vs) = (q.layout().shape(), k.layout().shape(), v.layout().shape());
    let fits = qs.num_dims() == 4
        && ks.num_dims() == 4
        && vs.num_dims() == 4
        && qs[0] == ks[0]
        && qs[1] == ks[1]
        && qs[3] == ks[3]
        && ks[0] == vs[0]
        && ks[1] == vs[1]
        && ks[2] == vs[2];
    if !fits {
        return None;
    }
    let (tq, tk, d) = (qs[2], ks[2], qs[3]);
    let scale = 1.0 / (d.max(1) as f32).sqrt();
    let scores = Cpu::float_matmul(q.clone(), Cpu::float_transpose(k.clone()));
    let probs = softmax_forward(&scores, scale, causal.then_some((tq, tk)))?;
    let y = Cpu::float_matmul(probs.clone(), v.clone());
    let saved = Saved {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        probs,
        scale,
    };
    Some((y, saved))
}

/// Softmax of every row of `scores * scale`; with `causal = Some((tq, tk))`, row i of each
/// (tq, tk) matrix keeps only columns `j <= i + tk - tq` (a row with none left is zeros).
fn softmax_forward(
    scores: &FlexTensor,
    scale: f32,
    causal: Option<(usize, usize)>,
) -> Option<FlexTensor> {
    let xs = values(scores)?;
    let dims = scores.layout().shape();
    let tk = dims[dims.num_dims() - 1];
    let mut out = vec![0f32; xs.len()];
    if tk > 0 && !xs.is_empty() {
        let chunk = chunk_len(xs.len(), tk);
        out.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .enumerate()
            .for_each(|(c, (out, xs))| {
                simd(
                    #[inline(always)]
                    || {
                        let first = c * (chunk / tk);
                        for (r, (p, s)) in out
                            .chunks_exact_mut(tk)
                            .zip(xs.chunks_exact(tk))
                            .enumerate()
                        {
                            // Columns kept: all, or up to the causal boundary of this row.
                            let kept = match causal {
                                None => tk,
                                Some((tq, tk)) => {
                                    let i = (first + r) % tq.max(1);
                                    (i + 1 + tk).saturating_sub(tq).min(tk)
                                }
                            };
                            p.copy_from_slice(s);
                            softmax_row(p, kept, scale);
                        }
                    },
                )
            });
    }
    Some(tensor(out, scores))
}

/// Softmax of `row[..kept] * scale` in place; the rest of the row (hidden keys) is zero.
#[inline(always)]
pub(super) fn softmax_row(row: &mut [f32], kept: usize, scale: f32) {
    let kept = kept.min(row.len());
    let (seen, hidden) = row.split_at_mut(kept);
    hidden.iter_mut().for_each(|v| *v = 0.0);
    if seen.is_empty() {
        return;
    }
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
    for v in seen.iter_mut() {
        *v = exp_nonpositive(*v * scale - max);
    }
    let inv = 1.0 / sum8(seen, |v| v);
    seen.iter_mut().for_each(|v| *v *= inv);
}

/// The gradient of the scaled scores of one row in place: `row` holds the gradient of
/// the weights `p` and becomes `p (row - Σ p row) scale`.
#[inline(always)]
pub(super) fn softmax_backward_row(row: &mut [f32], p: &[f32], scale: f32) {
    let mut acc = [0f32; 8];
    for (rc, pc) in row.chunks_exact(8).zip(p.chunks_exact(8)) {
        for ((a, &g), &p) in acc.iter_mut().zip(rc).zip(pc) {
            *a += p * g;
        }
    }
    let done = row.len() - row.len() % 8;
    let tail: f32 = row[done..].iter().zip(&p[done..]).map(|(a, b)| a * b).sum();
    let dot = acc.iter().sum::<f32>() + tail;
    for (g, &p) in row.iter_mut().zip(p) {
        *g = p * (*g - dot) * scale;
    }
}

/// The gradient of the scaled scores: `p (dp - Σ_j p dp) scale`, a row at a time.
fn softmax_backward(probs: &FlexTensor, dp: &FlexTensor, scale: f32) -> FlexTensor {
    let (Some(ps), Some(gs)) = (values(probs), values(dp)) else {
        unreachable!("f32 tensors on the CPU backend")
    };
    let dims = probs.layout().shape();
    let tk = dims[dims.num_dims() - 1];
    let mut out = vec![0f32; ps.len()];
    if tk > 0 && !ps.is_empty() {
        let chunk = chunk_len(ps.len(), tk);
        out.par_chunks_mut(chunk)
            .zip(ps.par_chunks(chunk).zip(gs.par_chunks(chunk)))
            .for_each(|(out, (ps, gs))| {
                simd(
                    #[inline(always)]
                    || {
                        for ((o, p), g) in out
                            .chunks_exact_mut(tk)
                            .zip(ps.chunks_exact(tk))
                            .zip(gs.chunks_exact(tk))
                        {
                            o.copy_from_slice(g);
                            softmax_backward_row(o, p, scale);
                        }
                    },
                )
            });
    }
    tensor(out, probs)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, data, read};
    use super::*;
    use burn::tensor::TensorData;

    type Attn = fn(
        Tensor<CpuTrain, 4>,
        Tensor<CpuTrain, 4>,
        Tensor<CpuTrain, 4>,
        bool,
    ) -> Tensor<CpuTrain, 4>;

    /// Output and the gradients of q, k and v for a weighted sum of the output. q, k and v
    /// are made (n, t, heads, d) and viewed as (n, heads, t, d), as the model's heads are.
    fn run(f: Attn, [n, h, tq, tk, d]: [usize; 5], causal: bool) -> [Vec<f32>; 4] {
        let device = Default::default();
        let make = |t: usize, seed: u32| {
            Tensor::<CpuTrain, 4>::from_data(
                TensorData::new(data(n * t * h * d, seed, 1.5), [n, t, h, d]),
                &device,
            )
            .require_grad()
        };
        let (q, k, v) = (make(tq, 1), make(tk, 2), make(tk, 3));
        let view = |t: &Tensor<CpuTrain, 4>| t.clone().swap_dims(1, 2);
        let y = f(view(&q), view(&k), view(&v), causal);
        let probe = Tensor::<CpuTrain, 4>::from_data(
            TensorData::new(data(n * h * tq * d, 4, 1.0), [n, h, tq, d]),
            &device,
        );
        let grads = (y.clone() * probe).sum().backward();
        [
            read(Some(y.inner())),
            read(q.grad(&grads)),
            read(k.grad(&grads)),
            read(v.grad(&grads)),
        ]
    }

    /// Against burn's composed attention differentiated by its autodiff: self-attention
    /// large enough to split across threads, causal self-attention, and cross-attention of
    /// one query (the attention pool's shape).
    #[test]
    fn values_and_gradients_match_burns_attention() {
        for (shape, causal) in [
            ([4, 3, 65, 65, 16], false),
            ([3, 2, 16, 16, 8], true),
            ([5, 4, 1, 17, 8], false),
        ] {
            let ours = run(attention, shape, causal);
            let want = run(composed, shape, causal);
            assert_close(&ours, &want, 1e-5, &format!("{shape:?} causal {causal}"));
        }
    }

    /// One query over two keys by hand: scores (0, ln 3) after scaling give weights 1/4 and
    /// 3/4; causally the first query sees only the first key.
    #[test]
    fn weights_by_hand() {
        let device = Default::default();
        // q.k / sqrt(4) = ln 3 for the second key: q = (ln 3, 0, 0, 0) * 2, k2 = (1, 0, 0, 0).
        let q = Tensor::<Cpu, 4>::from_data(
            TensorData::new(
                vec![2.0 * 3f32.ln(), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                [1, 1, 2, 4],
            ),
            &device,
        );
        let k = Tensor::<Cpu, 4>::from_data(
            TensorData::new(
                vec![0.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                [1, 1, 2, 4],
            ),
            &device,
        );
        let v = Tensor::<Cpu, 4>::from_data(
            TensorData::new(vec![4.0f32, 0.0, 0.0, 8.0], [1, 1, 2, 2]),
            &device,
        );
        let y = attention(q.clone(), k.clone(), v.clone(), false)
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default();
        // Query 1: 1/4 (4, 0) + 3/4 (0, 8) = (1, 6); query 2 has score 0 for both: (2, 4).
        let want = [1.0f32, 6.0, 2.0, 4.0];
        assert!(
            y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{y:?}"
        );
        let y = attention(q, k, v, true)
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default();
        let want = [4.0f32, 0.0, 2.0, 4.0];
        assert!(
            y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{y:?}"
        );
    }
}

//! Multi-head self-attention on token-major activations: q, k and v as the projections give
//! them, (n, t, heads x d), and the output in the same layout for the output projection.
//!
//! Split into heads with burn's ops, (n, t, w) -> (n, heads, t, d) is a strided view, and
//! every product whose result must go back to token-major (the output forward, the three
//! input gradients backward) is copied once more to be made contiguous: about a tenth of a
//! CPU training step. Here each (sample, head) pair is one rayon task whose matrix products
//! call gemm on strided views of the token-major buffers, reading and writing them in
//! place: no head is ever copied out. The softmax and its backward are those of
//! `attention.rs`.

use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::attention::{softmax_backward_row, softmax_row};
use super::{by_backend, float, prim, simd, tensor, tracked3, values, AutodiffTensor};
use crate::backend::{Cpu, CpuTrain};

type Qkv<B> = (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>);

/// Self-attention of `heads` heads over q, k and v, each (n, t, heads x d), scaled by 1/√d;
/// `causal` hides later tokens. Returns (n, t, heads x d), heads side by side.
pub fn attention_tokens<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    let shape = q.dims();
    let fits =
        heads > 0 && shape[2].is_multiple_of(heads) && k.dims() == shape && v.dims() == shape;
    if !fits {
        return composed(q, k, v, heads, causal);
    }
    let g = Geometry {
        n: shape[0],
        t: shape[1],
        heads,
        d: shape[2] / heads,
        causal,
    };
    by_backend(
        (q, k, v),
        |(q, k, v): Qkv<CpuTrain>| match tracked(
            prim(q.clone()),
            prim(k.clone()),
            prim(v.clone()),
            g,
        ) {
            Some(y) => float(y),
            None => composed(q, k, v, heads, causal),
        },
        |(q, k, v): Qkv<Cpu>| match forward(&prim(q.clone()), &prim(k.clone()), &prim(v.clone()), g)
        {
            Some((y, _)) => float(y),
            None => composed(q, k, v, heads, causal),
        },
        |(q, k, v)| composed(q, k, v, heads, causal),
    )
}

/// Heads split and merged with burn's ops around the 4-D attention: the other backends'
/// path, and the tests' reference.
pub(crate) fn composed<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    causal: bool,
) -> Tensor<B, 3> {
    let [n, t, w] = q.dims();
    let split = |x: Tensor<B, 3>| {
        let [n, t, w] = x.dims();
        x.reshape([n, t, heads, w / heads]).swap_dims(1, 2)
    };
    let o = super::attention::composed(split(q), split(k), split(v), causal);
    o.swap_dims(1, 2).reshape([n, t, w])
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    t: usize,
    heads: usize,
    d: usize,
    causal: bool,
}

impl Geometry {
    fn width(&self) -> usize {
        self.heads * self.d
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d.max(1) as f32).sqrt()
    }

    /// Offset of head `h` of sample `b` in a token-major buffer.
    fn base(&self, pair: usize) -> usize {
        let (b, h) = (pair / self.heads, pair % self.heads);
        b * self.t * self.width() + h * self.d
    }

    /// Keys seen by query `i`.
    fn kept(&self, i: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            self.t
        }
    }
}

#[derive(Clone, Debug)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// (n, heads, t, t) attention weights.
    probs: Arc<[f32]>,
    geometry: Geometry,
}

fn tracked(
    q: AutodiffTensor,
    k: AutodiffTensor,
    v: AutodiffTensor,
    geometry: Geometry,
) -> Option<AutodiffTensor> {
    let (y, probs) = forward(&q.primitive, &k.primitive, &v.primitive, geometry)?;
    let saved = Saved {
        q: q.primitive.clone(),
        k: k.primitive.clone(),
        v: v.primitive.clone(),
        probs: probs.into(),
        geometry,
    };
    Some(tracked3([&q, &k, &v], y, saved, backward))
}

/// A pointer into a buffer that rayon tasks write in disjoint places.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: each task writes only the (sample, head) block its index names; no two tasks'
// blocks overlap, and the buffer outlives the parallel loop.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets come from `Geometry::base`, inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// `dst (m x n) = lhs (m x k) · rhs (k x n)`, each matrix a pointer with its row and column
/// strides.
///
/// # Safety
/// Every element the strides reach must lie in its buffer; `dst` must not overlap the
/// inputs or another thread's writes.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    [dst_rs, dst_cs]: [usize; 2],
    lhs: *const f32,
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: *const f32,
    [rhs_rs, rhs_cs]: [usize; 2],
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The output (n, t, w) and the attention weights; `None` when a tensor is not f32.
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    g: Geometry,
) -> Option<(FlexTensor, Vec<f32>)> {
    let (qs, ks, vs) = (values(q)?, values(k)?, values(v)?);
    let (t, d, w) = (g.t, g.d, g.width());
    let len = g.n * t * w;
    if qs.len() != len || ks.len() != len || vs.len() != len {
        return None;
    }
    let mut out = vec![0f32; len];
    let mut probs = vec![0f32; g.n * g.heads * t * t];
    if len > 0 {
        let o = Shared(out.as_mut_ptr());
        let scale = g.scale();
        probs
            .par_chunks_mut(t * t)
            .enumerate()
            .for_each(|(pair, p)| {
                let base = g.base(pair);
                // SAFETY: q and k blocks of t rows of d at row stride w lie inside their
                // buffers of n t w values; p is this task's own t x t block; the output
                // block of this (sample, head) is written by this task alone.
                unsafe {
                    let (q, k, v) = (
                        qs.as_ptr().add(base),
                        ks.as_ptr().add(base),
                        vs.as_ptr().add(base),
                    );
                    // Scores q kᵀ: kᵀ read through k's strides.
                    matmul([t, t, d], p.as_mut_ptr(), [t, 1], q, [w, 1], k, [1, w]);
                    simd(
                        #[inline(always)]
                        || {
                            for (i, row) in p.chunks_exact_mut(t).enumerate() {
                                softmax_row(row, g.kept(i), scale);
                            }
                        },
                    );
                    matmul([t, d, t], o.at(base), [w, 1], p.as_ptr(), [t, 1], v, [w, 1]);
                }
            });
    }
    Some((tensor(out, q), probs))
}

/// Gradients of q, k and v for the output gradient `grad`.
fn backward(saved: &Saved, grad: &FlexTensor) -> [FlexTensor; 3] {
    let Some(grads) = backward_values(saved, grad) else {
        unreachable!("f32 tensors on the CPU backend")
    };
    grads
}

/// `backward`, or `None` when a tensor is not f32.
fn backward_values(saved: &Saved, grad: &FlexTensor) -> Option<[FlexTensor; 3]> {
    let g = saved.geometry;
    let (qs, ks, vs, gs) = (
        values(&saved.q)?,
        values(&saved.k)?,
        values(&saved.v)?,
        values(grad)?,
    );
    let (t, d, w) = (g.t, g.d, g.width());
    let len = g.n * t * w;
    if gs.len() != len {
        return None;
    }
    let (mut dq, mut dk, mut dv) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    if len > 0 {
        let (pq, pk, pv) = (
            Shared(dq.as_mut_ptr()),
            Shared(dk.as_mut_ptr()),
            Shared(dv.as_mut_ptr()),
        );
        let scale = g.scale();
        saved.probs.par_chunks(t * t).enumerate().for_each_init(
            || vec![0f32; t * t],
            |ds, (pair, p)| {
                let base = g.base(pair);
                // SAFETY: as in `forward`; ds is this task's scratch, and the three
                // gradient blocks of this (sample, head) are written by this task alone.
                unsafe {
                    let (q, k, v, dy) = (
                        qs.as_ptr().add(base),
                        ks.as_ptr().add(base),
                        vs.as_ptr().add(base),
                        gs.as_ptr().add(base),
                    );
                    // dv = pᵀ dy
                    matmul(
                        [t, d, t],
                        pv.at(base),
                        [w, 1],
                        p.as_ptr(),
                        [1, t],
                        dy,
                        [w, 1],
                    );
                    // dp = dy vᵀ, then ds = p (dp - Σ p dp) scale, row by row.
                    matmul([t, t, d], ds.as_mut_ptr(), [t, 1], dy, [w, 1], v, [1, w]);
                    simd(
                        #[inline(always)]
                        || {
                            for (row, p) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                                softmax_backward_row(row, p, scale);
                            }
                        },
                    );
                    // dq = ds k, dk = dsᵀ q
                    matmul(
                        [t, d, t],
                        pq.at(base),
                        [w, 1],
                        ds.as_ptr(),
                        [t, 1],
                        k,
                        [w, 1],
                    );
                    matmul(
                        [t, d, t],
                        pk.at(base),
                        [w, 1],
                        ds.as_ptr(),
                        [1, t],
                        q,
                        [w, 1],
                    );
                }
            },
        );
    }
    Some([
        tensor(dq, &saved.q),
        tensor(dk, &saved.k),
        tensor(dv, &saved.v),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, data, read};
    use super::*;
    use burn::tensor::TensorData;

    type Attn = fn(
        Tensor<CpuTrain, 3>,
        Tensor<CpuTrain, 3>,
        Tensor<CpuTrain, 3>,
        usize,
        bool,
    ) -> Tensor<CpuTrain, 3>;

    /// Output and the gradients of q, k and v for a weighted sum of the output.
    fn run(f: Attn, [n, t, heads, d]: [usize; 4], causal: bool) -> [Vec<f32>; 4] {
        let device = Default::default();
        let w = heads * d;
        let make = |seed: u32| {
            Tensor::<CpuTrain, 3>::from_data(
                TensorData::new(data(n * t * w, seed, 1.5), [n, t, w]),
                &device,
            )
            .require_grad()
        };
        let (q, k, v) = (make(1), make(2), make(3));
        let y = f(q.clone(), k.clone(), v.clone(), heads, causal);
        let probe = Tensor::<CpuTrain, 3>::from_data(
            TensorData::new(data(n * t * w, 4, 1.0), [n, t, w]),
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

    /// Against burn's heads split, attention and merge, differentiated by its autodiff:
    /// the vision tower's shape (65 tokens, 3 heads), the text tower's causal one, and
    /// an odd one.
    #[test]
    fn values_and_gradients_match_burns_split_attention_and_merge() {
        for (shape, causal) in [
            ([4, 65, 3, 16], false),
            ([3, 16, 3, 8], true),
            ([2, 7, 5, 3], true),
            ([1, 1, 2, 4], false),
        ] {
            let ours = run(attention_tokens, shape, causal);
            let want = run(composed, shape, causal);
            assert_close(&ours, &want, 1e-5, &format!("{shape:?} causal {causal}"));
        }
    }
}

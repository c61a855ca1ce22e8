//! LayerNorm over the last dimension, `y = (x - mean) / sqrt(var + eps) * weight + bias`
//! (biased variance, as PyTorch's `nn.LayerNorm`).
//!
//! Composed from burn's ops it is nine passes over the activation forward and about twice
//! that backward, each on one thread. Here the forward is one pass a row (mean and
//! variance while the row is in cache), keeping each row's mean and reciprocal standard
//! deviation for the backward, which is one pass a row too:
//! `dx = rstd (g - mean(g) - x̂ mean(g x̂))` with `g = dy weight`, and the weight and bias
//! gradients summed over rows per thread, then across threads.

use std::sync::Arc;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{
    by_backend, chunk_len, float, prim, simd, sum8, tensor, tracked3, values, AutodiffTensor,
};
use crate::backend::{Cpu, CpuTrain};

/// LayerNorm of `x` over its last dimension with affine `weight` and `bias` (its width).
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let width = x.dims()[D - 1];
    if weight.dims()[0] != width || bias.dims()[0] != width {
        return composed(x, weight, bias, eps);
    }
    let eps32 = eps as f32;
    by_backend(
        (x, weight, bias),
        |(x, w, b): Args<CpuTrain, D>| match tracked(
            prim(x.clone()),
            prim(w.clone()),
            prim(b.clone()),
            eps32,
        ) {
            Some(y) => float(y),
            None => composed(x, w, b, eps),
        },
        |(x, w, b): Args<Cpu, D>| match forward(
            &prim(x.clone()),
            &prim(w.clone()),
            &prim(b.clone()),
            eps32,
        ) {
            Some((y, _)) => float(y),
            None => composed(x, w, b, eps),
        },
        |(x, w, b)| composed(x, w, b, eps),
    )
}

type Args<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>);

/// LayerNorm from burn's generic ops: the other backends' path, and the tests' reference.
pub(crate) fn composed<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let mean = x.clone().mean_dim(D - 1);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(D - 1);
    let normed = centred.div(var.add_scalar(eps).sqrt());
    normed.mul(weight.unsqueeze::<D>()) + bias.unsqueeze::<D>()
}

/// What the backward needs: the input, the weight, and each row's mean and reciprocal
/// standard deviation, interleaved.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
    stats: Arc<[f32]>,
}

/// `None` when a tensor is not f32.
fn tracked(
    x: AutodiffTensor,
    w: AutodiffTensor,
    b: AutodiffTensor,
    eps: f32,
) -> Option<AutodiffTensor> {
    let (y, stats) = forward(&x.primitive, &w.primitive, &b.primitive, eps)?;
    let saved = Saved {
        x: x.primitive.clone(),
        weight: w.primitive.clone(),
        stats: stats.into(),
    };
    Some(tracked3([&x, &w, &b], y, saved, backward))
}

/// The normalised output and the per-row statistics; `None` when a tensor is not f32.
fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    eps: f32,
) -> Option<(FlexTensor, Vec<f32>)> {
    let (xs, ws, bs) = (values(x)?, values(weight)?, values(bias)?);
    let width = ws.len();
    let rows = xs.len().checked_div(width).unwrap_or(0);
    let mut out = vec![0f32; xs.len()];
    let mut stats = vec![0f32; 2 * rows];
    if width > 0 {
        let chunk = chunk_len(xs.len(), width);
        let rows_per = chunk / width;
        out.par_chunks_mut(chunk)
            .zip(stats.par_chunks_mut(2 * rows_per))
            .zip(xs.par_chunks(chunk))
            .for_each(|((out, stats), xs)| {
                simd(
                    #[inline(always)]
                    || {
                        for ((y, s), x) in out
                            .chunks_exact_mut(width)
                            .zip(stats.chunks_exact_mut(2))
                            .zip(xs.chunks_exact(width))
                        {
                            let mean = sum8(x, |v| v) / width as f32;
                            let var = sum8(x, |v| (v - mean) * (v - mean)) / width as f32;
                            let rstd = 1.0 / (var + eps).sqrt();
                            for (((y, &x), &w), &b) in
                                y.iter_mut().zip(x).zip(ws.iter()).zip(bs.iter())
                            {
                                *y = (x - mean) * rstd * w + b;
                            }
                            s[0] = mean;
                            s[1] = rstd;
                        }
                    },
                )
            });
    }
    Some((tensor(out, x), stats))
}

/// A task's rows of the input gradient to write, and of the input, output gradient and
/// statistics to read.
type RowsOf<'a> = ((&'a mut [f32], &'a [f32]), (&'a [f32], &'a [f32]));

/// Gradients of the input, the weight and the bias for the output gradient `grad`.
fn backward(saved: &Saved, grad: &FlexTensor) -> [FlexTensor; 3] {
    let (Some(xs), Some(ws), Some(gs)) = (values(&saved.x), values(&saved.weight), values(grad))
    else {
        unreachable!("f32 tensors on the CPU backend")
    };
    let width = ws.len();
    let stats = &saved.stats;
    let mut dx = vec![0f32; xs.len()];
    let (mut dw, mut db) = (vec![0f32; width], vec![0f32; width]);
    if width > 0 && !xs.is_empty() {
        let chunk = chunk_len(xs.len(), width);
        let rows_per = chunk / width;
        let partial = |((dx, xs), (gs, stats)): RowsOf<'_>| {
            simd(
                #[inline(always)]
                || {
                    let (mut dw, mut db) = (vec![0f32; width], vec![0f32; width]);
                    let mut g = vec![0f32; width];
                    let mut xhat = vec![0f32; width];
                    for (((dx, x), dy), s) in dx
                        .chunks_exact_mut(width)
                        .zip(xs.chunks_exact(width))
                        .zip(gs.chunks_exact(width))
                        .zip(stats.chunks_exact(2))
                    {
                        let (mean, rstd) = (s[0], s[1]);
                        for ((((h, gi), &x), &dy), &w) in xhat
                            .iter_mut()
                            .zip(g.iter_mut())
                            .zip(x)
                            .zip(dy)
                            .zip(ws.iter())
                        {
                            *h = (x - mean) * rstd;
                            *gi = dy * w;
                        }
                        for (((dw, db), &dy), &h) in
                            dw.iter_mut().zip(db.iter_mut()).zip(dy).zip(&xhat)
                        {
                            *dw += dy * h;
                            *db += dy;
                        }
                        let mean_g = sum8(&g, |v| v) / width as f32;
                        let mut acc = [0f32; 8];
                        let mut pairs = g.chunks_exact(8).zip(xhat.chunks_exact(8));
                        for (gc, hc) in &mut pairs {
                            for ((a, &gi), &h) in acc.iter_mut().zip(gc).zip(hc) {
                                *a += gi * h;
                            }
                        }
                        let done = width - width % 8;
                        let tail: f32 = g[done..]
                            .iter()
                            .zip(&xhat[done..])
                            .map(|(a, b)| a * b)
                            .sum();
                        let mean_gh = (acc.iter().sum::<f32>() + tail) / width as f32;
                        for ((dx, &gi), &h) in dx.iter_mut().zip(&g).zip(&xhat) {
                            *dx = rstd * (gi - mean_g - h * mean_gh);
                        }
                    }
                    (dw, db)
                },
            )
        };
        let (pw, pb) = dx
            .par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .zip(gs.par_chunks(chunk).zip(stats.par_chunks(2 * rows_per)))
            .map(partial)
            .reduce(
                || (vec![0f32; width], vec![0f32; width]),
                |(mut aw, mut ab), (bw, bb)| {
                    aw.iter_mut().zip(&bw).for_each(|(a, b)| *a += b);
                    ab.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
                    (aw, ab)
                },
            );
        dw = pw;
        db = pb;
    }
    [
        tensor(dx, &saved.x),
        tensor(dw, &saved.weight),
        tensor(db, &saved.weight),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, data, read};
    use super::*;
    use burn::tensor::TensorData;

    fn grads_of(
        f: impl Fn(Tensor<CpuTrain, 3>, Tensor<CpuTrain, 1>, Tensor<CpuTrain, 1>) -> Tensor<CpuTrain, 3>,
        x: &TensorData,
        w: &TensorData,
        b: &TensorData,
        probe: &TensorData,
    ) -> [Vec<f32>; 4] {
        let device = Default::default();
        let x = Tensor::<CpuTrain, 3>::from_data(x.clone(), &device).require_grad();
        let w = Tensor::<CpuTrain, 1>::from_data(w.clone(), &device).require_grad();
        let b = Tensor::<CpuTrain, 1>::from_data(b.clone(), &device).require_grad();
        let probe = Tensor::<CpuTrain, 3>::from_data(probe.clone(), &device);
        let y = f(x.clone(), w.clone(), b.clone());
        let grads = (y.clone() * probe).sum().backward();
        [
            read(Some(y.inner())),
            read(x.grad(&grads)),
            read(w.grad(&grads)),
            read(b.grad(&grads)),
        ]
    }

    /// Deterministic values plus an offset, so that the mean matters.
    fn offset_data(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
        data(n, seed, scale)
            .into_iter()
            .map(|v| v + offset)
            .collect()
    }

    /// Values and all three gradients against the composed LayerNorm differentiated by
    /// burn's autodiff, on a batch large enough to be split across threads, with a width
    /// that is not a multiple of eight.
    #[test]
    fn values_and_gradients_match_the_composed_layer_norm() {
        let (n, t, w) = (6, 65, 52);
        let x = TensorData::new(offset_data(n * t * w, 1, 2.0, 0.7), [n, t, w]);
        let wt = TensorData::new(offset_data(w, 2, 0.5, 1.0), [w]);
        let bt = TensorData::new(offset_data(w, 3, 0.3, 0.0), [w]);
        let probe = TensorData::new(offset_data(n * t * w, 4, 1.0, 0.1), [n, t, w]);
        let ours = grads_of(|x, w, b| layer_norm(x, w, b, 1e-5), &x, &wt, &bt, &probe);
        let want = grads_of(|x, w, b| composed(x, w, b, 1e-5), &x, &wt, &bt, &probe);
        assert_close(&ours, &want, 2e-5, "layer norm");
    }

    /// A hand-computed row: x = (1, 2, 3, 6), mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5.
    #[test]
    fn a_row_by_hand() {
        let device = Default::default();
        let x = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![1f32, 2.0, 3.0, 6.0], [1, 4]),
            &device,
        );
        let w =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![1f32, 2.0, 1.0, 0.5], [4]), &device);
        let b =
            Tensor::<Cpu, 1>::from_data(TensorData::new(vec![0f32, 0.0, 1.0, -1.0], [4]), &device);
        let y = layer_norm(x, w, b, 0.0)
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default();
        let s = 3.5f32.sqrt();
        // (x - 3) / s times the weight, plus the bias.
        let want = [-2.0 / s, -2.0 / s, 1.0, 1.5 / s - 1.0];
        assert_eq!(y.len(), 4);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }
}

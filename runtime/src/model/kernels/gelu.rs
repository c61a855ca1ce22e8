//! The exact GELU, `x Φ(x) = x/2 (1 + erf(x/√2))` (PE's MLPs use `nn.GELU()`, the erf form).
//!
//! burn-flex computes it one element at a time with a scalar libm `erff`, on one thread,
//! forward and backward: 12 to 14% of a CPU training step. On the CPU backend this module
//! runs its own kernel instead, over contiguous f32 that the compiler vectorises, split
//! across rayon's threads, as a custom autodiff operation whose backward is
//! `Φ(x) + x φ(x)` from the same kernel (bench/train_step.rs: 688 -> 527 ms a step).
//! erf follows Abramowitz and Stegun 7.1.26 (|error| <= 1.5e-7, 4.1e-7 once in f32), its
//! `exp(-z²)` a range reduction and the degree-7 Taylor polynomial of `e^r` (relative
//! error below 1e-8). Other backends (CUDA) keep burn's GELU.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::ActivationOps;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{by_backend, chunk_len, float, prim, simd, tensor, values, AutodiffTensor};
use crate::backend::{Cpu, CpuTrain};

/// Exact GELU of `x`, elementwise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    by_backend(
        x,
        |x: Tensor<CpuTrain, D>| float::<CpuTrain, D>(gelu_tracked(prim(x))),
        |x: Tensor<Cpu, D>| float::<Cpu, D>(forward(prim(x))),
        burn::tensor::activation::gelu,
    )
}

/// The GELU as a node of burn's autodiff graph, keeping its input for the backward.
fn gelu_tracked(x: AutodiffTensor) -> AutodiffTensor {
    #[derive(Debug)]
    struct Gelu;

    impl Backward<Cpu, 1> for Gelu {
        type State = FlexTensor;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let input = ops.state;
            unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| backward(input, grad));
        }
    }

    match Gelu
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = forward(x.primitive.clone());
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

/// GELU of every element.
fn forward(x: FlexTensor) -> FlexTensor {
    let Some(xs) = values(&x) else {
        return Cpu::gelu(x);
    };
    let mut out = vec![0f32; xs.len()];
    let run = |(o, i): (&mut [f32], &[f32])| {
        simd(
            #[inline(always)]
            || {
                for (o, &x) in o.iter_mut().zip(i) {
                    *o = gelu_scalar(x);
                }
            },
        )
    };
    let chunk = chunk_len(xs.len(), 1);
    out.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .for_each(run);
    tensor(out, &x)
}

/// `grad` times the GELU's derivative at `x`.
fn backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let (Some(xs), Some(gs)) = (values(&x), values(&grad)) else {
        return Cpu::gelu_backward(x, grad);
    };
    if xs.len() != gs.len() {
        return Cpu::gelu_backward(x, grad);
    }
    let mut out = vec![0f32; xs.len()];
    let chunk = chunk_len(xs.len(), 1);
    out.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk)))
        .for_each(|(o, (xs, gs))| {
            simd(
                #[inline(always)]
                || {
                    for ((o, &x), &g) in o.iter_mut().zip(xs).zip(gs) {
                        *o = g * gelu_derivative(x);
                    }
                },
            )
        });
    tensor(out, &x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_scalar(x: f32) -> f32 {
    let (erf, _) = erf_and_gauss(x * FRAC_1_SQRT_2);
    0.5 * x * (1.0 + erf)
}

#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    let (erf, gauss) = erf_and_gauss(x * FRAC_1_SQRT_2);
    // Φ(x) + x φ(x), where exp(-z²) at z = x/√2 is exp(-x²/2).
    0.5 * (1.0 + erf) + x * FRAC_1_SQRT_2PI * gauss
}

/// `(erf(z), exp(-z²))`, branch-free so that loops over it vectorise. Abramowitz and Stegun
/// 7.1.26 for z >= 0, mirrored for z < 0.
#[inline(always)]
fn erf_and_gauss(z: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let a = z.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let gauss = exp_nonpositive(-a * a);
    let erf = 1.0 - poly * gauss;
    (erf.copysign(z), gauss)
}

/// `e^y` for `y <= 0`: `y = k ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by its Taylor
/// polynomial to degree 7, `2^k` written into the exponent bits. Below -87 (where e^y is
/// under f32's smallest normal) it returns e^-87.
#[inline(always)]
pub(super) fn exp_nonpositive(y: f32) -> f32 {
    // Adding and removing 1.5 x 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 in two parts: the first exact in few bits, so that k x LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let y = y.max(-87.0);
    let k = (y * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // k is in [-126, 0]: the exponent field k + 127 is in [1, 127].
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// erf in f64 from its Maclaurin series: exact to about 1e-12 for |z| <= 3.5.
    fn erf_series(z: f64) -> f64 {
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=87_000 {
            let y = -(i as f32) / 1000.0;
            let (ours, want) = (exp_nonpositive(y) as f64, (y as f64).exp());
            worst = worst.max((ours - want).abs() / want);
        }
        assert!(worst < 4e-7, "relative error {worst}");
    }

    #[test]
    fn erf_matches_its_series_within_the_bound_of_the_approximation() {
        let mut worst = 0f64;
        for i in -3500..=3500 {
            let z = i as f32 / 1000.0;
            let (erf, gauss) = erf_and_gauss(z);
            worst = worst.max((erf as f64 - erf_series(z as f64)).abs());
            // Of z² as f32 rounds it: e^-z² is as exact as that square allows.
            let g = (-((z * z) as f64)).exp();
            assert!((gauss as f64 - g).abs() <= 4e-7 * g, "exp(-z²) at {z}");
        }
        // 1.5e-7 for the formula, plus f32 rounding where 1 - poly e^-z² cancels (measured
        // 4.1e-7 at worst).
        assert!(worst < 5e-7, "|error| {worst}");
        // Odd, and saturated far out.
        assert_eq!(erf_and_gauss(0.0).0, 0.0);
        assert_eq!(erf_and_gauss(-1.25).0, -erf_and_gauss(1.25).0);
        assert!((erf_and_gauss(9.0).0 - 1.0).abs() < 1e-6);
        assert!((erf_and_gauss(-40.0).0 + 1.0).abs() < 1e-6);
    }

    fn flex(values: &[f32]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values.to_vec(), [values.len()]))
    }

    fn read(t: FlexTensor) -> Vec<f32> {
        t.as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default()
    }

    /// Against burn-flex's own exact GELU (libm's erf) and its derivative, over a range
    /// long enough to take the parallel path.
    #[test]
    fn gelu_and_its_derivative_match_burns_exact_gelu() {
        let xs: Vec<f32> = (0..100_000)
            .map(|i| (i as f32 - 50_000.0) / 5_000.0)
            .collect();
        let gs: Vec<f32> = xs.iter().map(|x| 1.0 + 0.1 * x).collect();
        let (ours, theirs) = (read(forward(flex(&xs))), read(Cpu::gelu(flex(&xs))));
        assert_eq!(ours.len(), xs.len());
        for ((x, a), b) in xs.iter().zip(&ours).zip(&theirs) {
            assert!(
                (a - b).abs() <= 2e-7 * (1.0 + x.abs()),
                "gelu({x}): {a} vs {b}"
            );
        }
        let ours = read(backward(flex(&xs), flex(&gs)));
        let theirs = read(Cpu::gelu_backward(flex(&xs), flex(&gs)));
        assert_eq!(ours.len(), xs.len());
        for ((x, a), b) in xs.iter().zip(&ours).zip(&theirs) {
            assert!(
                (a - b).abs() <= 4e-7 * (1.0 + x.abs()),
                "gelu'({x}): {a} vs {b}"
            );
        }
    }

    /// Through the public function, on the training backend: the gradient is the one the
    /// derivative gives, and a strided input reads the same as a contiguous one.
    #[test]
    fn gradients_on_the_training_backend_follow_the_derivative_on_a_strided_input() {
        let device = Default::default();
        let x = Tensor::<CpuTrain, 2>::from_data(
            TensorData::new(vec![-3.0f32, -1.0, -0.25, 0.0, 0.5, 2.0], [2, 3]),
            &device,
        )
        .require_grad();
        let y = gelu(x.clone().swap_dims(0, 1));
        let grads = y.clone().sum().backward();
        let g = x
            .grad(&grads)
            .map(|g| g.into_data().to_vec::<f32>().unwrap_or_default());
        let xs = [-3.0f32, -1.0, -0.25, 0.0, 0.5, 2.0];
        let want: Vec<f32> = xs.iter().map(|&x| gelu_derivative(x)).collect();
        let got = g.unwrap_or_default();
        assert_eq!(got.len(), 6);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // y is the transpose of gelu(x).
        let ys = y.into_data().to_vec::<f32>().unwrap_or_default();
        assert!((ys[1] - gelu_scalar(0.0)).abs() < 1e-7 && (ys[5] - gelu_scalar(2.0)).abs() < 1e-6);
    }
}

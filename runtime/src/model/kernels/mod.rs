//! Kernels of our own for the CPU backend where burn-flex's composition of generic ops
//! costs most of a training step: the exact GELU (burn-flex: a scalar libm `erff`, one
//! thread), LayerNorm (burn: nine passes forward, more backward), the softmax of attention
//! (seven passes forward) and self-attention on token-major activations (burn: heads split
//! and merged by copies). Each is one fused, vectorised pass over contiguous f32, split
//! across rayon's threads, registered with burn's autodiff as one operation with its own
//! backward. The public functions take any backend: on `CpuTrain` and `Cpu` they run these
//! kernels, on the others (CUDA) burn's own ops, with the same values. bench/train_step.rs
//! measures what each gained.

mod attention;
mod gelu;
mod heads;
mod layer_norm;

pub use attention::attention;
pub use gelu::gelu;
pub use heads::attention_tokens;
pub use layer_norm::layer_norm;

use std::any::Any;
use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

use crate::backend::{Cpu, CpuTrain};

/// A float tensor of the training backend with its autodiff node (burn does not export
/// the type by name).
type AutodiffTensor = burn::tensor::ops::FloatTensor<CpuTrain>;

/// `a` as a `T` when `A` is `T` (a type known here only as a generic parameter), else `a`
/// back.
fn cast<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    if let Some(t) = (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        match t.take() {
            Some(t) => return Ok(t),
            None => unreachable!("the slot was filled"),
        }
    }
    match slot {
        Some(a) => Err(a),
        None => unreachable!("the slot is untouched when A is not T"),
    }
}

/// `args` through `train` when the backend is `CpuTrain`, through `infer` when it is `Cpu`,
/// else through `other` (burn's own ops): one function whose backend is only a generic
/// parameter reaches the kernels. `train` and `infer` name their argument's type.
fn by_backend<A, At, Ac, R, Rt, Rc>(
    args: A,
    train: impl FnOnce(At) -> Rt,
    infer: impl FnOnce(Ac) -> Rc,
    other: impl FnOnce(A) -> R,
) -> R
where
    A: 'static,
    At: 'static,
    Ac: 'static,
    R: 'static,
    Rt: 'static,
    Rc: 'static,
{
    let args = match cast::<A, At>(args) {
        Ok(args) => {
            return cast(train(args)).unwrap_or_else(|_| unreachable!("R is Rt when A is At"))
        }
        Err(args) => args,
    };
    match cast::<A, Ac>(args) {
        Ok(args) => cast(infer(args)).unwrap_or_else(|_| unreachable!("R is Rc when A is Ac")),
        Err(args) => other(args),
    }
}

/// A tensor of the backend tensor `t`.
fn float<B: burn::tensor::backend::Backend, const D: usize>(
    t: B::FloatTensorPrimitive,
) -> burn::tensor::Tensor<B, D> {
    burn::tensor::Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(t))
}

/// The f32 values of `t` in logical order (borrowed when contiguous), or `None` for
/// another element type.
fn values(t: &FlexTensor) -> Option<Cow<'_, [f32]>> {
    match t.as_slice::<f32>() {
        Some(s) => Some(Cow::Borrowed(s)),
        // A strided view: one copy into a buffer of its own, handed over without another.
        None => t
            .to_contiguous()
            .into_data()
            .into_vec::<f32>()
            .ok()
            .map(Cow::Owned),
    }
}

/// The backend tensor inside `t`.
fn prim<B: burn::tensor::backend::Backend, const D: usize>(
    t: burn::tensor::Tensor<B, D>,
) -> B::FloatTensorPrimitive {
    t.into_primitive().tensor()
}

/// A contiguous tensor of `values` with the shape of `like`.
fn tensor(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

/// `output`, computed from three inputs, as one operation of burn's autodiff graph:
/// `backward` gives the inputs' gradients from `state` and the output's gradient.
fn tracked3<S>(
    inputs: [&AutodiffTensor; 3],
    output: FlexTensor,
    state: S,
    backward: fn(&S, &FlexTensor) -> [FlexTensor; 3],
) -> AutodiffTensor
where
    S: Clone + Send + std::fmt::Debug + 'static,
{
    #[derive(Debug)]
    struct Op<S> {
        backward: fn(&S, &FlexTensor) -> [FlexTensor; 3],
    }

    impl<S: Clone + Send + std::fmt::Debug + 'static> Backward<Cpu, 3> for Op<S> {
        type State = S;

        fn backward(self, ops: Ops<S, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<Cpu>(&ops.node);
            let input_grads = (self.backward)(&ops.state, &grad);
            for (node, g) in ops.parents.into_iter().zip(input_grads) {
                if let Some(node) = node {
                    grads.register::<Cpu>(node.id, g);
                }
            }
        }
    }

    let nodes = inputs.map(|t| t.node.clone());
    match (Op { backward })
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// Below this many elements one thread does it all.
const PARALLEL_MIN: usize = 1 << 14;

/// Elements per rayon task for `n` elements taken `unit` at a time (a row): all of it
/// when small, else an even split with a few tasks per thread, whole units each.
fn chunk_len(n: usize, unit: usize) -> usize {
    let unit = unit.max(1);
    if n < PARALLEL_MIN {
        return n.max(unit);
    }
    let tasks = rayon::current_num_threads().max(1) * 4;
    let units = n
        .div_ceil(unit)
        .div_ceil(tasks)
        .max((PARALLEL_MIN / 4).div_ceil(unit));
    units * unit
}

/// The sum of `xs` with eight accumulators, so that the loop vectorises.
#[inline(always)]
fn sum8(xs: &[f32], mut f: impl FnMut(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Runs `f` compiled for the widest x86 vector instructions this CPU has (AVX-512, else
/// AVX2 with FMA), so that the loops inside it vectorise at that width: the crate itself
/// is built for the x86-64 baseline (SSE2), a quarter of AVX-512's width. Only code inlined
/// into the wrappers below gets their instructions, so callers mark `f` itself
/// `#[inline(always)]` (without it LLVM left the larger closures at the baseline) and
/// what it calls `#[inline(always)]` too.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features `avx512` is compiled for.
            return unsafe { x86::avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// What the kernels' tests share: deterministic inputs, reading values back, and the
/// comparison against burn's composed ops.
#[cfg(test)]
mod testing {
    use burn::tensor::Tensor;

    use crate::backend::Cpu;

    /// `n` values spread over about [-scale, scale], deterministic in `seed`.
    pub(super) fn data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                scale * ((h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    /// The values of `t`, empty when there is none (a missing gradient).
    pub(super) fn read<const D: usize>(t: Option<Tensor<Cpu, D>>) -> Vec<f32> {
        t.and_then(|t| t.into_data().to_vec::<f32>().ok())
            .unwrap_or_default()
    }

    /// Every output of `ours` within `tolerance` times the largest magnitude (at least 1)
    /// of the same output in `want`, and none empty.
    pub(super) fn assert_close(ours: &[Vec<f32>], want: &[Vec<f32>], tolerance: f32, what: &str) {
        assert_eq!(ours.len(), want.len(), "{what}");
        for (i, (a, b)) in ours.iter().zip(want).enumerate() {
            assert!(!a.is_empty() && a.len() == b.len(), "{what}: output {i}");
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= tolerance * scale,
                "{what}: output {i}: error {worst} (scale {scale})"
            );
        }
    }
}

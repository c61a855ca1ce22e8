//! Training-step benchmark: `cargo bench --bench train_step`.
//!
//! Samples per second of one CLIP training step (forward, backward, global-norm clipping,
//! AdamW) of a fixed PE-style model in pexc on the CPU backend, and of the same model,
//! batch and optimizer in PyTorch (`bench/train_step.py`, 2 threads), printed side by
//! side with their ratio. Median of 20 timed steps after 3 warm-up steps.
//!
//! `PEXC_BENCH_PYTHON` names the Python to run the reference with (default `python3`);
//! without torch the PyTorch side is reported as missing. `RAYON_NUM_THREADS=2` keeps
//! pexc on the same two threads.
//!
//! Where pexc stands (2 cores, `RAYON_NUM_THREADS=2`, back-to-back medians; the machine's
//! load moves them by 5 to 10%, PyTorch's by more): 1485 ms a step at the start of the
//! 2026-12-04 sessions, then 1141 with linear layers on flattened tokens (burn's weight
//! gradient of a batched input is a batched matmul summed over the batch), 967 with the
//! RoPE tables as one broadcast row (burn-flex's SIMD path instead of its strided one), 858
//! with q, k and v projected by slices of the packed weight instead of slices of the
//! activation, 733 with burn-flex's AVX-512 matmul kernels (`x86-v4`); on the next
//! machine 688, then 527 with our own exact GELU, 488 with our own LayerNorm, 445 with our
//! own attention softmax, 419 with self-attention on token-major q, k, v (no heads split
//! or merged), about 382 with those kernels compiled for AVX-512 and about 360 with freed
//! memory kept in the heap (runtime/src/model/kernels/, runtime/src/alloc.rs): in six
//! back-to-back runs 351 to 363 ms (88 to 91 samples/s) against PyTorch 2.15's 312 to 323
//! ms, 0.89 to 0.91x (1.02 once, when PyTorch's step took 361 ms). The loss of the fixed
//! step is the same at every stage (0.0713).
//!
//! What is left (`perf record`): gemm is 69% of the step (about 250 ms for 41 GFLOP, 160
//! GFLOP/s, two thirds of these two Zen 4 cores' peak; its packing is 6 of those points),
//! already most of PyTorch's whole step. The rest: rayon's threads waiting on each other
//! (7%), our kernels (6%), memset and memmove (6%: zero-filled buffers that are then
//! overwritten, and burn-flex's copies), burn's remaining elementwise ops (residual and
//! bias adds, RoPE, the loss; 3%). Closing the gap means a faster gemm for these shapes
//! (k = 192 makes packing costly) or fewer of burn's buffers.

use std::process::Command;
use std::time::Instant;

use indexmap::IndexMap;
use pexc_compiler::lower::plan::{Arg, Ctor, LossPlan};
use pexc_runtime::backend::CpuTrain;
use pexc_runtime::burn::module::Param;
use pexc_runtime::burn::optim::GradientsParams;
use pexc_runtime::burn::tensor::{Int, Tensor, TensorData};
use pexc_runtime::model::{Pool, TextConfig, TextTransformer, VisionTransformer, VitConfig};
use pexc_runtime::optim::{global_grad_norm, OptimConfig, Optimizer, Rule};
use pexc_runtime::train::clip::{forward, Batch, ClipModel};

type B = CpuTrain;

// The configuration of bench/train_step.py.
const IMAGE: usize = 64;
const BATCH: usize = 32;
const CTX: usize = 16;
const VOCAB: usize = 1000;
const WARMUP: usize = 3;
const STEPS: usize = 20;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    pexc_runtime::alloc::keep_freed_memory();
    let device = Default::default();
    let vision = VitConfig {
        patch: 8,
        width: 192,
        depth: 6,
        heads: 3,
        mlp: 768,
        rope2d: true,
        abs: true,
        cls: true,
        pool: Pool::Attention { heads: 8 },
        out: Some(128),
        image: IMAGE,
        ln_post: true,
        layer_scale: None,
        drop_path: 0.0,
    };
    let text = TextConfig {
        context: CTX,
        width: 192,
        depth: 4,
        heads: 3,
        mlp: 768,
        vocab: VOCAB,
        out: 128,
    };
    <B as pexc_runtime::burn::tensor::backend::Backend>::seed(&device, 0);
    let mut model = ClipModel::<B> {
        vision: VisionTransformer::new(&vision, &device),
        text: Some(TextTransformer::new(&text, &device)),
        proj: None,
        decoder: None,
        logit_scale: Param::from_tensor(Tensor::from_floats([(1.0f32 / 0.07).ln()], &device)),
        logit_bias: Param::from_tensor(Tensor::from_floats([-10.0f32], &device)),
    };
    let params: usize = pexc_runtime::checkpoint::collect(&model, "")
        .iter()
        .filter(|(k, _)| k != "logit_bias")
        .map(|(_, s)| s.values.len())
        .sum();
    let mut optim = Optimizer::<B>::new(OptimConfig {
        rule: Rule::AdamW,
        betas: (0.9, 0.999),
        weight_decay: 0.05,
        eps: 1e-8,
    });
    let mut args = IndexMap::new();
    args.insert("max_logit_scale".to_string(), Arg::Float(100.0));
    let loss = vec![LossPlan {
        weight: 1.0,
        term: Ctor {
            ctor: "clip".into(),
            args,
        },
    }];
    // Fixed inputs, as the PyTorch side.
    let mut state = 1u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let pixels: Vec<f32> = (0..BATCH * 3 * IMAGE * IMAGE)
        .map(|_| next() * 2.0 - 1.0)
        .collect();
    let mut ids: Vec<i64> = (0..BATCH * CTX)
        .map(|_| 1 + (next() * (VOCAB - 3) as f32) as i64)
        .collect();
    for r in 0..BATCH {
        ids[r * CTX] = VOCAB as i64 - 2;
        ids[r * CTX + CTX - 1] = VOCAB as i64 - 1;
    }
    let mut times = Vec::new();
    // Where a step's time goes: forward (with the loss read back), backward, the global
    // gradient norm, the optimizer update.
    let mut parts: [Vec<f64>; 4] = Default::default();
    let mut last = 0.0;
    for s in 0..WARMUP + STEPS {
        let t0 = Instant::now();
        let batch = Batch::contrastive(
            Tensor::<B, 4>::from_data(
                TensorData::new(pixels.clone(), [BATCH, 3, IMAGE, IMAGE]),
                &device,
            ),
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [BATCH, CTX]), &device),
            None,
        );
        let out = forward(&model, &batch, &loss);
        last = out.total.clone().into_scalar();
        let t1 = Instant::now();
        let grads = out.total.backward();
        let mut gp = GradientsParams::from_grads(grads, &model);
        let t2 = Instant::now();
        let norm = global_grad_norm(&model, &gp);
        let scale = if norm > 1.0 { 1.0 / (norm + 1e-6) } else { 1.0 };
        let t3 = Instant::now();
        model = optim.step(1e-3, model, &mut gp, scale);
        // The update is lazy on some backends: reading one weight back waits for it.
        let _ = model.logit_scale.val().into_scalar();
        let t4 = Instant::now();
        let dt = t0.elapsed().as_secs_f64();
        if s >= WARMUP {
            times.push(dt);
            for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]
                .into_iter()
                .enumerate()
            {
                parts[k].push((b - a).as_secs_f64());
            }
        }
    }
    let step = median(times);
    let ours = BATCH as f64 / step;
    println!("one CLIP training step: ViT/8 64 px width 192 x 6 blocks, text 192 x 4, batch {BATCH}, AdamW");
    println!("  pexc (burn flex, CPU)   {params:>9} params  {ours:>7.1} samples/s  ({:.0} ms/step, loss {last:.4})", step * 1e3);
    let [f, b, n, o] = parts.map(median);
    println!(
        "    of which forward {:.0} ms, backward {:.0} ms, gradient norm {:.0} ms, optimizer {:.0} ms",
        f * 1e3,
        b * 1e3,
        n * 1e3,
        o * 1e3
    );
    let python = std::env::var("PEXC_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/train_step.py");
    match Command::new(&python)
        .args([script, "--threads", "2"])
        .output()
    {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            let theirs = v["samples_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:<22}  {:>9} params  {theirs:>7.1} samples/s  ({:.0} ms/step, loss {:.4})",
                v["framework"].as_str().unwrap_or("pytorch"),
                v["params"],
                v["median_step_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
                v["loss"].as_f64().unwrap_or(f64::NAN)
            );
            println!("  ratio pexc / pytorch: {:.2}", ours / theirs);
        }
        Ok(o) => println!(
            "  pytorch: the reference failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("  pytorch: cannot run `{python}`: {e}"),
    }
}

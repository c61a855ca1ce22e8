//! `pexc embed` throughput: `cargo bench --bench embed`.
//!
//! Images per second of `pexc_runtime::embed` on the CPU backend (what `pexc embed` runs),
//! for the tiny PE-Core tower of experiments/tiny (64 px, from a `pixels` tensor and from
//! a folder of PNG files, decoding and resizing included) and for PE-Core-B16 at 224 px
//! with random weights. Median of 3 timed passes after one warm-up pass.
//! `RAYON_NUM_THREADS=2` pins burn to two threads.

use std::path::Path;
use std::time::Instant;

use pexc_runtime::backend::Choice;
use pexc_runtime::embed::{embed, EmbedOptions, Inputs};
use pexc_runtime::model::{Pool, VitConfig};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn vit(
    patch: usize,
    width: usize,
    depth: usize,
    heads: usize,
    out: usize,
    image: usize,
) -> VitConfig {
    VitConfig {
        patch,
        width,
        depth,
        heads,
        mlp: 4 * width,
        rope2d: true,
        abs: true,
        cls: true,
        pool: Pool::Attention { heads: 8 },
        out: Some(out),
        image,
        ln_post: true,
        layer_scale: None,
        drop_path: 0.0,
    }
}

fn pixels(n: usize, side: usize) -> Inputs {
    // A deterministic pattern in [-1, 1]: the values do not change the work done.
    let values = (0..n * 3 * side * side)
        .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Inputs::Pixels {
        shape: vec![n, 3, side, side],
        values,
    }
}

fn opts(batch: usize) -> EmbedOptions {
    EmbedOptions {
        resolution: None,
        layer: None,
        normalize: false,
        video: false,
        frames: 8,
        batch,
        backend: Choice::Cpu,
        progress: false,
    }
}

fn time(name: &str, config: &VitConfig, inputs: &Inputs, batch: usize) {
    let n = inputs.len();
    let _ = embed(config, None, inputs, &opts(batch)).expect("warm-up");
    let rates: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            embed(config, None, inputs, &opts(batch)).expect("embed");
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "{name:<44} {:>9.1} images/s  ({n} images, batch {batch})",
        median(rates)
    );
}

fn write_pngs(dir: &Path, n: usize, side: u32) {
    std::fs::create_dir_all(dir).expect("dir");
    for i in 0..n {
        let mut img = image::RgbImage::new(side, side);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let v = |c: u32| ((x * 7 + y * 13 + c * 29 + i as u32 * 41) % 256) as u8;
            *p = image::Rgb([v(0), v(1), v(2)]);
        }
        img.save(dir.join(format!("{i:04}.png"))).expect("png");
    }
}

fn main() {
    println!(
        "pexc embed on {} (CPU, burn flex)",
        std::env::var("RAYON_NUM_THREADS").map_or("all cores".into(), |t| format!("{t} threads"))
    );
    let tiny = vit(8, 96, 4, 3, 64, 64);
    time(
        "tiny PE-Core tower, 64 px, pixels",
        &tiny,
        &pixels(512, 64),
        64,
    );
    let dir = std::env::temp_dir().join(format!("pexc-bench-embed-{}", std::process::id()));
    write_pngs(&dir, 512, 96);
    let files = pexc_runtime::embed::collect_inputs(&dir, false).expect("folder");
    time("tiny PE-Core tower, 96 px PNG -> 64 px", &tiny, &files, 64);
    let _ = std::fs::remove_dir_all(&dir);
    let b16 = vit(16, 768, 12, 12, 1024, 224);
    time(
        "PE-Core-B16 (random weights), 224 px, pixels",
        &b16,
        &pixels(32, 224),
        16,
    );
}

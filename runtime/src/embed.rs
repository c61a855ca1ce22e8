//! `pexc embed` (language.md section 3): inference with a declared vision tower and its
//! weights. Inputs are an image, a folder of images (squash-resized, normalised with
//! mean = std = 0.5, as PE's own transform), a `.safetensors` tensor `pixels` already
//! normalised (used at its own resolution), or, for video, folders of frames of which N
//! are sampled uniformly and whose per-frame embeddings are averaged (PE's video
//! embedding). Outputs are the pooled, projected `embeddings` or, for a 1-based block K,
//! the `features` of that block (CLS included, before `ln_post`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use pexc_data::image::RgbImage;
use pexc_data::video::frame_indices;
use serde_json::json;

use crate::backend::{self, Choice, Resolved};
use crate::checkpoint::{self, Stored};
use crate::model::official;
use crate::model::{VisionTransformer, VitConfig};

/// What to compute and how.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Images are resized to this side (default: the model's pretraining `image`).
    pub resolution: Option<usize>,
    /// `Some(k)`: the features of block k (1-based) instead of the embeddings.
    pub layer: Option<usize>,
    /// L2-normalise the embeddings.
    pub normalize: bool,
    /// The input is video: folders of frames.
    pub video: bool,
    /// Frames sampled per clip.
    pub frames: usize,
    /// Images (or clips) per forward pass.
    pub batch: usize,
    pub backend: Choice,
    /// A progress line on stderr.
    pub progress: bool,
}

/// The inputs, resolved from `--input`.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Normalised pixels (n, 3, h, w), or clips (n, t, 3, h, w) with `--video`.
    Pixels { shape: Vec<usize>, values: Vec<f32> },
    /// Image files, in order.
    Images(Vec<PathBuf>),
    /// Clips: each the frame files of one video, in order.
    Clips(Vec<Vec<PathBuf>>),
}

impl Inputs {
    /// How many items (images or clips) there are.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Pixels { shape, .. } => shape.first().copied().unwrap_or(0),
            Inputs::Images(v) => v.len(),
            Inputs::Clips(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names of the items, for the output's metadata.
    pub fn names(&self) -> Vec<String> {
        match self {
            Inputs::Pixels { .. } => Vec::new(),
            Inputs::Images(v) => v.iter().map(|p| p.display().to_string()).collect(),
            Inputs::Clips(v) => v
                .iter()
                .map(|frames| {
                    frames
                        .first()
                        .and_then(|f| f.parent())
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                })
                .collect(),
        }
    }
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the folder `{}`: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// Resolves `--input`: a `.safetensors` file with `pixels`, an image, a folder of images,
/// or (video) a folder of frames or a folder of such folders.
pub fn collect_inputs(path: &Path, video: bool) -> Result<Inputs, String> {
    if !path.exists() {
        return Err(format!(
            "--input `{}`: no such file or folder",
            path.display()
        ));
    }
    if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "safetensors" {
            return read_pixels(path, video);
        }
        if video {
            return Err(format!(
                "--input `{}`: with --video, give a folder of frames (or a folder of such folders) or a `.safetensors` file with `pixels` (n, frames, 3, h, w)",
                path.display()
            ));
        }
        if is_image(path) {
            return Ok(Inputs::Images(vec![path.to_path_buf()]));
        }
        return Err(format!(
            "--input `{}`: expected a PNG or JPEG image, a folder, or a `.safetensors` file with a `pixels` tensor",
            path.display()
        ));
    }
    let entries = sorted_entries(path)?;
    let images: Vec<PathBuf> = entries.iter().filter(|p| is_image(p)).cloned().collect();
    if video {
        if !images.is_empty() {
            return Ok(Inputs::Clips(vec![images]));
        }
        let mut clips = Vec::new();
        for dir in entries.iter().filter(|p| p.is_dir()) {
            let frames: Vec<PathBuf> = sorted_entries(dir)?
                .into_iter()
                .filter(|p| is_image(p))
                .collect();
            if frames.is_empty() {
                return Err(format!(
                    "--input: the clip folder `{}` holds no PNG or JPEG frames",
                    dir.display()
                ));
            }
            clips.push(frames);
        }
        if clips.is_empty() {
            return Err(format!(
                "--input `{}`: no frames (PNG or JPEG files) and no folders of frames",
                path.display()
            ));
        }
        return Ok(Inputs::Clips(clips));
    }
    if images.is_empty() {
        return Err(format!(
            "--input `{}`: the folder holds no PNG or JPEG images",
            path.display()
        ));
    }
    Ok(Inputs::Images(images))
}

fn read_pixels(path: &Path, video: bool) -> Result<Inputs, String> {
    let Some(p) = official::read_tensor(path, "pixels")? else {
        return Err(format!("`{}` has no tensor named `pixels`", path.display()));
    };
    let want = if video { 5 } else { 4 };
    let channels = if video {
        p.shape.get(2)
    } else {
        p.shape.get(1)
    };
    if p.shape.len() != want || channels != Some(&3) || p.shape.contains(&0) {
        return Err(format!(
            "`{}`: `pixels` is {:?}; expected {}",
            path.display(),
            p.shape,
            if video {
                "(n, frames, 3, h, w)"
            } else {
                "(n, 3, h, w)"
            }
        ));
    }
    Ok(Inputs::Pixels {
        shape: p.shape,
        values: p.values,
    })
}

/// What `embed` produced.
#[derive(Debug)]
pub struct Embedded {
    /// `embeddings` or `features`.
    pub name: &'static str,
    pub tensor: Stored,
    pub backend: &'static str,
    /// Images (or clips) per second, model and decoding included.
    pub per_second: f64,
    pub items: usize,
}

/// Runs the tower over the inputs.
pub fn embed(
    config: &VitConfig,
    weights: Option<&Path>,
    inputs: &Inputs,
    opts: &EmbedOptions,
) -> Result<Embedded, String> {
    crate::alloc::keep_freed_memory();
    let resolved = backend::resolve(opts.backend)?;
    match resolved {
        Resolved::Cpu => {
            embed_with::<backend::Cpu>(config, weights, inputs, opts, &Default::default(), resolved)
        }
        #[cfg(feature = "cuda")]
        Resolved::Cuda => embed_with::<backend::Cuda>(
            config,
            weights,
            inputs,
            opts,
            &Default::default(),
            resolved,
        ),
        #[cfg(not(feature = "cuda"))]
        Resolved::Cuda => Err("this pexc was built without CUDA".into()),
    }
}

/// The image side for file inputs, checked against the patch size.
fn resolution(config: &VitConfig, opts: &EmbedOptions) -> Result<usize, String> {
    let r = opts.resolution.unwrap_or(config.image);
    let p = config.patch;
    if r < p || !r.is_multiple_of(p) {
        let below = (r / p).max(1) * p;
        return Err(format!(
            "--resolution {r} is not a multiple of the patch size {p}: try {below} or {}",
            below + p
        ));
    }
    Ok(r)
}

/// Decodes and normalises images (in parallel on two threads: decoding a JPEG costs as
/// much as a tiny model's forward pass).
fn load_images(paths: &[&PathBuf], side: usize) -> Result<Vec<f32>, String> {
    let one = |p: &PathBuf| -> Result<Vec<f32>, String> {
        let img = RgbImage::open(p).map_err(|e| e.to_string())?;
        Ok(img.resize(side, side).normalised())
    };
    let half = paths.len().div_ceil(2);
    let (a, b) = paths.split_at(half.min(paths.len()));
    let (ra, rb) = std::thread::scope(|s| {
        let h = s.spawn(|| b.iter().map(|p| one(p)).collect::<Result<Vec<_>, _>>());
        let ra = a.iter().map(|p| one(p)).collect::<Result<Vec<_>, _>>();
        (
            ra,
            h.join()
                .unwrap_or_else(|_| Err("an image decoder thread failed".into())),
        )
    });
    let mut out = Vec::with_capacity(paths.len() * 3 * side * side);
    for v in ra?.into_iter().chain(rb?) {
        out.extend(v);
    }
    Ok(out)
}

fn embed_with<B: Backend>(
    config: &VitConfig,
    weights: Option<&Path>,
    inputs: &Inputs,
    opts: &EmbedOptions,
    device: &B::Device,
    resolved: Resolved,
) -> Result<Embedded, String> {
    if let Some(k) = opts.layer {
        if k == 0 || k > config.depth {
            return Err(format!(
                "--layer {k}: the model has blocks 1 to {} (1-based, as the paper numbers them)",
                config.depth
            ));
        }
    } else if config.pool == crate::model::Pool::None {
        return Err("the model does not pool (`pool: none`): it has no embedding; ask for the features of a block with --layer K".into());
    }
    if opts.video && opts.frames == 0 {
        return Err("--frames must be at least 1".into());
    }
    let model: VisionTransformer<B> = match weights {
        Some(w) => official::load_vision(config, w, device)?,
        None => VisionTransformer::new(config, device),
    };
    let total = inputs.len();
    if total == 0 {
        return Err("no inputs".into());
    }
    if let Inputs::Pixels { shape, .. } = inputs {
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        if h < config.patch || w < config.patch {
            return Err(format!(
                "`pixels` of {h} x {w} is smaller than one patch of {p} x {p}",
                p = config.patch
            ));
        }
    }
    let batch = opts.batch.max(1);
    let started = Instant::now();
    let mut values: Vec<f32> = Vec::new();
    let mut item_shape: Vec<usize> = Vec::new();
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        // (n * frames, 3, h, w) and the frames per item.
        let (pixels, frames): (Tensor<B, 4>, usize) = match inputs {
            Inputs::Pixels { shape, values } => {
                let per: usize = shape[1..].iter().product();
                let slice = values[done * per..(done + n) * per].to_vec();
                if opts.video {
                    let (t, h, w) = (shape[1], shape[3], shape[4]);
                    let idx = frame_indices(t, opts.frames);
                    let frame = 3 * h * w;
                    let mut picked = Vec::with_capacity(n * idx.len() * frame);
                    for i in 0..n {
                        for &f in &idx {
                            let at = i * per + f * frame;
                            picked.extend_from_slice(&slice[at..at + frame]);
                        }
                    }
                    let data = TensorData::new(picked, [n * idx.len(), 3, h, w]);
                    (Tensor::from_data(data, device), idx.len())
                } else {
                    let data = TensorData::new(slice, [n, 3, shape[2], shape[3]]);
                    (Tensor::from_data(data, device), 1)
                }
            }
            Inputs::Images(paths) => {
                let side = resolution(config, opts)?;
                let chunk: Vec<&PathBuf> = paths[done..done + n].iter().collect();
                let data = TensorData::new(load_images(&chunk, side)?, [n, 3, side, side]);
                (Tensor::from_data(data, device), 1)
            }
            Inputs::Clips(clips) => {
                let side = resolution(config, opts)?;
                let mut chunk: Vec<&PathBuf> = Vec::new();
                for clip in &clips[done..done + n] {
                    for f in frame_indices(clip.len(), opts.frames) {
                        chunk.push(&clip[f]);
                    }
                }
                // `frame_indices` repeats frames of a clip shorter than `frames`, so every
                // clip gives exactly `frames` of them.
                let data =
                    TensorData::new(load_images(&chunk, side)?, [chunk.len(), 3, side, side]);
                (Tensor::from_data(data, device), opts.frames)
            }
        };
        let out: Tensor<B, 3> = match opts.layer {
            Some(k) => {
                // (n * frames, tokens, width) -> (n, frames, tokens, width) for video.
                let f = model.forward_features(pixels, Some(k as i64 - 1), false);
                let [_, t, w] = f.dims();
                f.reshape([n, frames * t, w])
            }
            None => {
                let e = model
                    .encode(pixels)
                    .ok_or("the model has no pooled embedding")?;
                let [_, d] = e.dims();
                // PE's video embedding: the mean of the frames' embeddings.
                let e = e.reshape([n, frames, d]).mean_dim(1);
                if opts.normalize {
                    let norm = e.clone().square().sum_dim(2).sqrt().clamp_min(1e-12);
                    e.div(norm)
                } else {
                    e
                }
            }
        };
        let dims = out.dims();
        item_shape = match (opts.layer, opts.video) {
            (None, _) => vec![dims[2]],
            (Some(_), false) => vec![dims[1], dims[2]],
            (Some(_), true) => vec![frames, dims[1] / frames, dims[2]],
        };
        let data = out.into_data().convert::<f32>();
        values.extend(
            data.to_vec::<f32>()
                .map_err(|e| format!("cannot read the model's output: {e:?}"))?,
        );
        done += n;
        if opts.progress {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let what = if opts.video { "clips" } else { "images" };
            eprint!("\rpexc embed: {done}/{total} {what}, {rate:.1} {what}/s   ");
            let _ = std::io::stderr().flush();
        }
    }
    if opts.progress {
        eprintln!();
    }
    let mut shape = vec![total];
    shape.extend(item_shape);
    Ok(Embedded {
        name: if opts.layer.is_some() {
            "features"
        } else {
            "embeddings"
        },
        tensor: Stored { shape, values },
        backend: resolved.name(),
        per_second: total as f64 / started.elapsed().as_secs_f64().max(1e-9),
        items: total,
    })
}

/// Writes the result (atomically) with what produced it in the metadata.
pub fn write(out: &Path, e: &Embedded, meta: serde_json::Value) -> Result<(), String> {
    let meta = json!({ "embed": meta, "tensor": e.name, "shape": e.tensor.shape });
    checkpoint::save(out, &[(e.name.to_string(), e.tensor.clone())], &meta)
}

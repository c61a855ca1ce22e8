//! `pexc embed` and `pexc export`: inference with a declared model, and weights handed
//! back to PyTorch tools in the official PE layout.

use std::io::Write;
use std::path::PathBuf;

use pexc_compiler::syntax::ast::DefKind;
use pexc_compiler::{lower, Problems};
use pexc_runtime::backend::Choice;
use pexc_runtime::embed::{self, EmbedOptions};
use pexc_runtime::model::VitConfig;
use serde_json::json;

use crate::plan_cmd::{load_checked, report};
use crate::run_cmd::BackendArg;

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// The experiment file that declares the model.
    pub file: PathBuf,
    /// The model (a `vit`) to run, by its name in the file.
    pub model: String,
    /// An image, a folder of images, or a `.safetensors` file with a normalised `pixels`
    /// tensor (n, 3, h, w); with --video, a folder of frames or a folder of such folders.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the result (a `.safetensors` file).
    #[arg(long)]
    pub out: PathBuf,
    /// The features of this block (1-based, CLS included, before `ln_post`) instead of
    /// the pooled embedding.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub layer: Option<u64>,
    /// Images are squash-resized to this side (default: the model's `image`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub resolution: Option<u64>,
    /// L2-normalise the embeddings.
    #[arg(long)]
    pub normalize: bool,
    /// The input is video: N frames sampled uniformly per clip, embeddings averaged.
    #[arg(long)]
    pub video: bool,
    /// Frames per clip with --video.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: u64,
    /// Images (or clips) per forward pass.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// `auto` (CUDA when present, else the CPU), `cpu` or `cuda`.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Override a value: `--set vision.weights="ckpt.pt"` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The run directory.
    pub run: PathBuf,
    /// An export of the run (`export NAME = ..`), or a finished CLIP stage (both towers
    /// and the logit scale, as the released PE-Core files).
    pub name: String,
    /// `pe`: safetensors with the official PE keys and orientations.
    #[arg(long, value_enum, default_value_t = ExportFormat::Pe)]
    pub format: ExportFormat,
    /// The file to write (default: `exports/NAME.pe.safetensors` in the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Pe,
}

pub(crate) fn backend(b: BackendArg) -> Choice {
    match b {
        BackendArg::Auto => Choice::Auto,
        BackendArg::Cpu => Choice::Cpu,
        BackendArg::Cuda => Choice::Cuda,
    }
}

/// `pexc embed`: 0 done, 1 diagnostics or a failed run, 2 usage and I/O errors.
pub fn embed_command(args: &EmbedArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let outcome = match load_checked(&args.file, &args.sets, err) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let models: Vec<&str> = outcome
        .checked
        .defs
        .iter()
        .filter(|d| d.kind == DefKind::Model && d.file == outcome.checked.loaded.root)
        .map(|d| d.name.as_str())
        .collect();
    let Some(ctor) = lower::model_def(&outcome.checked, &args.model) else {
        let _ = writeln!(
            err,
            "pexc: `{}` declares no model `{}` (models: {})",
            args.file.display(),
            args.model,
            if models.is_empty() {
                "none".into()
            } else {
                models.join(", ")
            }
        );
        return 2;
    };
    if ctor.ctor != "vit" {
        let _ = writeln!(
            err,
            "pexc: `{}` is a `{}`; `pexc embed` runs a vision tower (`vit`)",
            args.model, ctor.ctor
        );
        return 2;
    }
    // The weights must exist and fit the declaration (embed reads them).
    let mut problems = Problems::default();
    crate::weights::check_weights(&outcome, &mut problems, true);
    if let Err(code) = report(&outcome, &problems, err) {
        return code;
    }
    let config = match VitConfig::from_plan(&ctor) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "pexc: {e}");
            return 1;
        }
    };
    let inputs = match embed::collect_inputs(&args.input, args.video) {
        Ok(i) => i,
        Err(e) => {
            let _ = writeln!(err, "pexc: {e}");
            return 2;
        }
    };
    let opts = EmbedOptions {
        resolution: args.resolution.map(|r| r as usize),
        layer: args.layer.map(|l| l as usize),
        normalize: args.normalize,
        video: args.video,
        frames: args.frames as usize,
        batch: args.batch as usize,
        backend: backend(args.backend),
        progress: true,
    };
    let weights = ctor.str("weights").map(PathBuf::from);
    let result = match embed::embed(&config, weights.as_deref(), &inputs, &opts) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "pexc: embed failed: {e}");
            return 1;
        }
    };
    let meta = json!({
        "file": args.file.display().to_string(),
        "model": args.model,
        "weights": weights.as_ref().map(|w| w.display().to_string()),
        "layer": args.layer,
        "normalize": args.normalize,
        "video": args.video,
        "frames": args.video.then_some(args.frames),
        "inputs": inputs.names(),
    });
    if let Err(e) = embed::write(&args.out, &result, meta) {
        let _ = writeln!(err, "pexc: {e}");
        return 2;
    }
    let _ = writeln!(
        out,
        "pexc: {} {:?} of {} {} on {} ({:.1}/s) -> {}",
        result.name,
        result.tensor.shape,
        result.items,
        if args.video { "clips" } else { "images" },
        result.backend,
        result.per_second,
        args.out.display()
    );
    0
}

/// `pexc export`: 0 done, 2 on a missing run, name or unwritable file.
pub fn export_command(args: &ExportArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let ExportFormat::Pe = args.format;
    match pexc_runtime::export::export_from_run(&args.run, &args.name, args.out.as_deref()) {
        Ok(path) => {
            let _ = writeln!(
                out,
                "pexc: `{}` in the official PE layout -> {}",
                args.name,
                path.display()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(err, "pexc: export: {e}");
            2
        }
    }
}

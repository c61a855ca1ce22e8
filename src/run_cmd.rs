//! `pexc run`: check, lower, and execute a plan with the burn runtime.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use pexc_compiler::source::Origin;
use pexc_runtime::run::{run, RunOptions};

use crate::plan_cmd::plan_of;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// The run directory (default: runs/<file stem>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `auto` (CUDA when present, else the CPU), `cpu` or `cuda`.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Continue an interrupted stage from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Run only this stage and the stages it needs.
    #[arg(long)]
    pub stage: Option<String>,
    /// Two steps per phase: check that everything runs.
    #[arg(long)]
    pub smoke: bool,
    /// A checkpoint every this many steps (and at the end of every phase).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Override a value: `--set core.batch=32K` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Refuse to start when a phase's memory estimate exceeds this (`512MiB`, `8GiB`,
    /// bytes); default on the CPU: the memory available on this machine.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
}

/// A size in bytes: a whole number with an optional unit (`B`, `KiB`, `MiB`, `GiB`,
/// `TiB`, or `K`/`M`/`G`/`T` for powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (such as 512MiB or 8GiB)"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "`{other}` is not a unit of size (B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a size this machine can have"));
    }
    Ok(bytes as u64)
}

/// `pexc run`: 0 done, 1 diagnostics or a failed run, 2 usage and I/O errors.
pub fn run_command(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (mut outcome, plan) = match plan_of(&args.file, &args.sets, err) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // `run` needs its data, weights and teacher sources: a missing one, or a file where
    // a directory belongs (or the reverse), is a diagnostic at its span.
    let before = outcome.problems.list.len();
    crate::cli::check_paths(&mut outcome);
    let style = crate::render::Style {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        width: 100,
    };
    let mut path_errors = 0;
    for p in &outcome.problems.list[before..] {
        let _ = write!(err, "{}", crate::render::human(p, outcome.sources(), style));
        path_errors += usize::from(p.is_error());
    }
    if path_errors > 0 {
        let _ = writeln!(
            err,
            "pexc: {path_errors} path error{}; nothing was run",
            if path_errors == 1 { "" } else { "s" }
        );
        return 1;
    }
    // Checkpoints named by `weights:` must fit their models before any work (that they
    // exist, `check_paths` has just said).
    let mut problems = pexc_compiler::Problems::default();
    crate::weights::check_weights(&outcome, &mut problems, false);
    if let Err(code) = crate::plan_cmd::report(&outcome, &problems, err) {
        return code;
    }
    let stem = args
        .file
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(stem));
    let sources = outcome
        .sources()
        .iter()
        .filter_map(|(_, f)| match &f.origin {
            Origin::Path(_) => Some((f.name.clone(), f.text.clone())),
            _ => None,
        })
        .collect();
    let opts = RunOptions {
        out: out_dir.clone(),
        backend: crate::embed_cmd::backend(args.backend),
        resume: args.resume,
        stage: args.stage.clone(),
        smoke: args.smoke,
        sources,
        progress: true,
        checkpoint_every: args.checkpoint_every,
        max_memory: args.max_memory,
    };
    // Ctrl-C: finish the step, write a checkpoint, stop.
    let _ = ctrlc::set_handler(|| {
        pexc_runtime::train::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    match run(&plan, &opts) {
        Ok(summary) => {
            let _ = writeln!(
                out,
                "pexc: run in {} ({}): trained {}, reused {}",
                out_dir.display(),
                summary.backend,
                list(&summary.trained),
                list(&summary.reused)
            );
            for (stage, e) in summary.eval.as_object().into_iter().flatten() {
                if let Some(z) = e["zero_shot_top1"].as_f64() {
                    let _ = writeln!(
                        out,
                        "  {stage}: zero-shot {:.1}% (chance {:.1}%), retrieval R@1 i->t {:.1}% t->i {:.1}%",
                        100.0 * z,
                        100.0 * e["chance"].as_f64().unwrap_or(0.0),
                        100.0 * e["image_to_text_r1"].as_f64().unwrap_or(0.0),
                        100.0 * e["text_to_image_r1"].as_f64().unwrap_or(0.0)
                    );
                }
            }
            for n in &summary.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            let _ = writeln!(out, "  report: {}", out_dir.join("report.md").display());
            if summary.stopped {
                1
            } else {
                0
            }
        }
        Err(e) => {
            let _ = writeln!(err, "pexc: run failed: {e}");
            1
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

//! The commands. Exit codes (language.md section 3): 0 ok, 1 diagnostics (or a failed
//! run), 2 usage and I/O errors.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use pexc_compiler::check::{Val, Value};
use pexc_compiler::source::{FileId, Origin};
use pexc_compiler::{check_file, Error, FsLoader, Outcome, Problem};
use pexc_stdlib::Ty;
use serde_json::json;

use crate::render::{self, Style};

#[derive(Parser, Debug)]
#[command(
    name = "pexc",
    version,
    about = "Check, plan and run .pex vision-encoder training pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check experiment files; report every diagnostic.
    Check(CheckArgs),
    /// The lowered plan: stages, phases, steps, tokens, FLOPs, memory.
    Plan(crate::plan_cmd::PlanArgs),
    /// The stage DAG, as Graphviz DOT or Mermaid.
    Graph(crate::plan_cmd::GraphArgs),
    /// Every resolved value (or the one at PATH) and where it came from.
    Explain(crate::plan_cmd::ExplainArgs),
    /// Format files canonically (in place; --check only reports).
    Fmt(crate::fmt_cmd::FmtArgs),
    /// Execute the plan: train stage by stage into a run directory.
    Run(crate::run_cmd::RunArgs),
    /// Embeddings or block features of images, folders or video with a declared model.
    Embed(crate::embed_cmd::EmbedArgs),
    /// A run's export (or a CLIP stage) as safetensors in the official PE layout.
    Export(crate::embed_cmd::ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The .pex files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// `human` (rendered, on stderr) or `json` (on stdout).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 1 when there are warnings.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Also require data, weights and teacher-source paths to exist.
    #[arg(long)]
    pub check_paths: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Check(args) => check(&args, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Plan(args) => {
            crate::plan_cmd::plan(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Graph(args) => {
            crate::plan_cmd::graph(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Explain(args) => {
            crate::plan_cmd::explain(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Fmt(args) => {
            crate::fmt_cmd::fmt(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Run(args) => {
            crate::run_cmd::run_command(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Embed(args) => {
            crate::embed_cmd::embed_command(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Export(args) => {
            crate::embed_cmd::export_command(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
    }
}

/// `pexc check`: writes JSON to `out`, human diagnostics and I/O errors to `err`.
pub fn check(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let style = Style {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        width: 100,
    };
    let mut io_failed = false;
    let mut json_diags = Vec::new();
    let (mut errors, mut warnings) = (0usize, 0usize);
    for path in &args.files {
        let display = path.display().to_string();
        let mut outcome = match check_file(path, &display, &FsLoader) {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(err, "pexc: cannot read `{display}`: {}", io_reason(&e));
                io_failed = true;
                continue;
            }
        };
        if args.check_paths {
            check_paths(&mut outcome);
        }
        // Checkpoints that exist are compared with their models (headers only).
        let mut weights = pexc_compiler::Problems::default();
        crate::weights::check_weights(&outcome, &mut weights, false);
        for p in weights.list {
            outcome.problems.list.push(p);
        }
        for p in &outcome.problems.list {
            if p.is_error() {
                errors += 1;
            } else {
                warnings += 1;
            }
            match args.format {
                Format::Json => json_diags.push(render::json(p, outcome.sources())),
                Format::Human => {
                    let _ = write!(err, "{}", render::human(p, outcome.sources(), style));
                }
            }
        }
    }
    if args.format == Format::Json {
        let _ = writeln!(out, "{}", json!({ "diagnostics": json_diags }));
    } else if errors + warnings > 0 {
        let _ = writeln!(
            err,
            "pexc: {}, {}",
            count(errors, "error"),
            count(warnings, "warning")
        );
    }
    if io_failed {
        2
    } else if errors > 0 || (args.deny_warnings && warnings > 0) {
        1
    } else {
        0
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `--check-paths`: every path-typed argument must name something that exists, relative
/// to the file that wrote it.
pub(crate) fn check_paths(outcome: &mut Outcome) {
    let mut found: Vec<(FileId, String, pexc_compiler::source::Span, bool)> = Vec::new();
    let checked = &outcome.checked;
    for d in &checked.defs {
        if let Some(v) = &d.value {
            collect_paths(v, &mut found);
        }
    }
    for s in &checked.stages {
        for f in s
            .fields
            .iter()
            .chain(s.phases.iter().flat_map(|p| p.fields.iter()))
        {
            collect_paths(&f.value, &mut found);
        }
        for b in s.teachers.iter() {
            collect_paths(&b.value, &mut found);
        }
    }
    found.sort_by_key(|(f, _, s, _)| (*f, s.start));
    found.dedup();
    let mut missing: Vec<PathBuf> = Vec::new();
    for (file, path, span, want_dir) in found {
        let Origin::Path(origin) = &checked.loaded.sources.get(file).origin else {
            continue;
        };
        let base = origin.parent().unwrap_or(Path::new(""));
        let resolved = base.join(first_shard(&path));
        // A file under a missing directory is the same mistake: report the directory once.
        if missing.iter().any(|m| resolved.starts_with(m)) {
            continue;
        }
        if !resolved.exists() {
            missing.push(resolved.clone());
            outcome.problems.push(
                file,
                Error::PathMissing {
                    path,
                    resolved: resolved.display().to_string(),
                    span: span.into(),
                },
            );
        } else if resolved.is_dir() != want_dir {
            let (expected, found, help) = if want_dir {
                (
                    "a directory",
                    "a file",
                    "this argument names a directory of data",
                )
            } else {
                ("a file", "a directory", "this argument names a file (a checkpoint, a captions JSONL, a shard, a tokenizer)")
            };
            outcome.problems.push(
                file,
                Error::PathWrongKind {
                    path,
                    resolved: resolved.display().to_string(),
                    expected: expected.into(),
                    found: found.into(),
                    help: help.into(),
                    span: span.into(),
                },
            );
        }
    }
}

/// The first file of a brace-range pattern: `a/{000..009}.tar` -> `a/000.tar`.
fn first_shard(pattern: &str) -> String {
    match (pattern.find('{'), pattern.find('}')) {
        (Some(a), Some(b)) if a < b => {
            let inner = &pattern[a + 1..b];
            let first = inner
                .split("..")
                .next()
                .unwrap_or(inner)
                .split(',')
                .next()
                .unwrap_or(inner);
            format!("{}{}{}", &pattern[..a], first, &pattern[b + 1..])
        }
        _ => pattern.to_string(),
    }
}

/// Every path argument: (file, path, span, whether it names a directory: a data `root`,
/// a mask-logits `source`).
fn collect_paths(v: &Val, out: &mut Vec<(FileId, String, pexc_compiler::source::Span, bool)>) {
    match &v.value {
        Value::Call(c) => {
            // `captions` is relative to `root` (language.md section 1).
            let root = match (c.ctor.name, c.arg("root").map(|v| &v.value)) {
                ("image_text" | "video_text", Some(Value::Str(r))) => Some(r.clone()),
                _ => None,
            };
            for (name, arg) in &c.args {
                let is_path = c.ctor.param(name).is_some_and(|p| p.ty == Ty::Path);
                match &arg.value {
                    // `mask_logits(source: "synthetic")` derives logits from generated masks.
                    Value::Str(s)
                        if is_path && !(c.ctor.name == "mask_logits" && s == "synthetic") =>
                    {
                        let path = match (&root, *name) {
                            (Some(r), "captions") => Path::new(r).join(s).display().to_string(),
                            _ => s.clone(),
                        };
                        let dir = matches!(*name, "root" | "source");
                        out.push((arg.file, path, arg.span, dir))
                    }
                    _ => collect_paths(arg, out),
                }
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            items.iter().for_each(|i| collect_paths(i, out))
        }
        Value::Loss(terms) => {
            for t in terms {
                let call = Val::new(
                    Value::Call(std::sync::Arc::new(t.term.clone())),
                    t.file,
                    t.span,
                );
                collect_paths(&call, out);
            }
        }
        _ => {}
    }
}

/// For tests: the problems of one file, as the CLI would see them.
pub fn problems_of(outcome: &Outcome) -> &[Problem] {
    &outcome.problems.list
}

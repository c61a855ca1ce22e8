//! `pexc plan`, `pexc graph` and `pexc explain`: a checked, lowered experiment shown as a
//! table or JSON, as a DAG, and value by value with where each value came from.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use pexc_compiler::lower::{self, plan::*};
use pexc_compiler::source::Origin;
use pexc_compiler::{check_file_with, FsLoader, Outcome, Problems};

use crate::explain;
use crate::render::{self, Style};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// `table` (readable, default) or `json` (the normative plan shape).
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
    /// Override a value: `--set core.batch=32K` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// `dot` (Graphviz, default) or `mermaid`.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// Show only this value and what is inside it: `core.r98.batch`, `vision.depth`.
    pub path: Option<String>,
    /// Override a value: `--set core.batch=32K` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
}

fn style() -> Style {
    Style {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        width: 100,
    }
}

/// Loads and checks a file with overrides; renders its diagnostics to `err`. `Err` is the
/// exit code: 2 for I/O and `--set` problems, 1 for errors in the sources.
pub fn load_checked(path: &Path, sets: &[String], err: &mut dyn Write) -> Result<Outcome, i32> {
    let display = path.display().to_string();
    let outcome = match check_file_with(path, &display, &FsLoader, sets) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(
                err,
                "pexc: cannot read `{display}`: {}",
                crate::cli::io_reason(&e)
            );
            return Err(2);
        }
    };
    report(&outcome, &outcome.problems, err)?;
    Ok(outcome)
}

/// Renders problems; `Err` with the exit code when any is an error.
pub(crate) fn report(
    outcome: &Outcome,
    problems: &Problems,
    err: &mut dyn Write,
) -> Result<(), i32> {
    let style = style();
    for p in &problems.list {
        let _ = write!(err, "{}", render::human(p, outcome.sources(), style));
    }
    if !problems.has_errors() {
        return Ok(());
    }
    let bad_set = problems
        .list
        .iter()
        .any(|p| p.is_error() && matches!(outcome.sources().get(p.file).origin, Origin::Set(_)));
    Err(if bad_set { 2 } else { 1 })
}

/// Checks and lowers; `Err` is the exit code.
pub fn plan_of(path: &Path, sets: &[String], err: &mut dyn Write) -> Result<(Outcome, Plan), i32> {
    let outcome = load_checked(path, sets, err)?;
    let mut problems = Problems::default();
    let plan = lower::lower(&outcome.checked, &mut problems);
    report(&outcome, &problems, err)?;
    Ok((outcome, plan))
}

/// `pexc plan`.
pub fn plan(args: &PlanArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (_, plan) = match plan_of(&args.file, &args.sets, err) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let text = match args.format {
        PlanFormat::Json => match serde_json::to_string_pretty(&plan) {
            Ok(s) => s + "\n",
            Err(e) => {
                let _ = writeln!(err, "pexc: cannot write the plan: {e}");
                return 2;
            }
        },
        PlanFormat::Table => table(&plan),
    };
    let _ = out.write_all(text.as_bytes());
    0
}

/// `pexc graph`.
pub fn graph(args: &GraphArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (_, plan) = match plan_of(&args.file, &[], err) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let text = match args.format {
        GraphFormat::Dot => dot(&plan),
        GraphFormat::Mermaid => mermaid(&plan),
    };
    let _ = out.write_all(text.as_bytes());
    0
}

/// `pexc explain`.
pub fn explain(args: &ExplainArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let outcome = match load_checked(&args.file, &args.sets, err) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let entries = explain::entries(&outcome.checked);
    let shown: Vec<&explain::Entry> = match &args.path {
        None => entries.iter().collect(),
        Some(p) => {
            let prefix = format!("{p}.");
            let hits: Vec<&explain::Entry> = entries
                .iter()
                .filter(|e| e.path == *p || e.path.starts_with(&prefix))
                .collect();
            if hits.is_empty() {
                let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
                let hint = pexc_compiler::check::suggest::did_you_mean(p, paths)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    err,
                    "pexc: no value at `{p}` in `{}`{hint}",
                    args.file.display()
                );
                return 2;
            }
            hits
        }
    };
    let _ = out.write_all(explain::render(&shown).as_bytes());
    0
}

// ---------------------------------------------------------------- units

/// FLOPs in SI units: `1.23 TFLOP`.
pub fn flops(x: f64) -> String {
    scaled(
        x,
        1000.0,
        &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
        "FLOP",
    )
}

/// Bytes in binary units: `1.5 GiB`.
pub fn bytes(x: f64) -> String {
    scaled(x, 1024.0, &["", "Ki", "Mi", "Gi", "Ti", "Pi"], "B")
}

fn scaled(mut x: f64, base: f64, prefixes: &[&str], unit: &str) -> String {
    let mut i = 0;
    while x >= base && i + 1 < prefixes.len() {
        x /= base;
        i += 1;
    }
    if i == 0 {
        format!("{x:.0} {unit}")
    } else if x >= 100.0 {
        format!("{x:.0} {}{unit}", prefixes[i])
    } else {
        format!("{x:.2} {}{unit}", prefixes[i])
    }
}

/// A count, short: `10,240`, `4.00B`.
pub fn count(n: u64) -> String {
    if n < 1_000_000 {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        return out;
    }
    let (x, suffix) = if n >= 1_000_000_000_000 {
        (n as f64 / 1e12, "T")
    } else if n >= 1_000_000_000 {
        (n as f64 / 1e9, "B")
    } else {
        (n as f64 / 1e6, "M")
    };
    format!("{x:.2}{suffix}")
}

// ---------------------------------------------------------------- table

/// The readable plan.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    let steps: u64 = plan.stages.iter().map(StagePlan::total_steps).sum();
    out.push_str(&format!(
        "plan of {}: {} stage{}, {} steps, {} training\n",
        plan.source,
        plan.stages.len(),
        if plan.stages.len() == 1 { "" } else { "s" },
        count(steps),
        flops(plan.train_flops)
    ));
    for s in &plan.stages {
        out.push('\n');
        let after = if s.after.is_empty() {
            String::new()
        } else {
            format!(", after {}", s.after.join(", "))
        };
        let kind = match s.kind {
            StageKind::Train => "train",
            StageKind::Caption => "caption",
        };
        out.push_str(&format!(
            "stage {} ({kind}{after}), hash {}\n",
            s.name,
            &s.hash[..12.min(s.hash.len())]
        ));
        let models: Vec<String> = s
            .models
            .iter()
            .map(|m| {
                let from = match &m.init {
                    ModelInit::Random => "random".to_string(),
                    ModelInit::Weights { path } => format!("weights {path}"),
                    ModelInit::Stage { stage, model } => format!("{stage}.{model}"),
                };
                format!("{} {} params from {from}", m.name, count(m.params))
            })
            .collect();
        if !models.is_empty() {
            out.push_str(&format!("  models: {}\n", models.join("; ")));
        }
        for t in &s.teachers {
            let what = match t.kind.as_str() {
                "frozen" => {
                    let names: Vec<&str> = t.models.iter().map(|m| m.name.as_str()).collect();
                    let at = t
                        .block
                        .map(|b| format!(" block {}", b + 1))
                        .unwrap_or_default();
                    format!("frozen {}{at}", names.join(" + "))
                }
                other => other.to_string(),
            };
            out.push_str(&format!("  teacher {}: {what}\n", t.name));
        }
        let header = [
            "phase",
            "res",
            "tokens",
            "batch",
            "steps",
            "samples",
            "train FLOPs",
            "mem fp32",
            "mem bf16",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for p in &s.phases {
            rows.push(vec![
                p.name.clone(),
                p.resolution.to_string(),
                p.tokens_per_image.to_string(),
                count(p.batch),
                count(p.steps),
                count(p.samples),
                flops(p.train_flops),
                bytes(p.memory.fp32.total),
                bytes(p.memory.bf16.total),
            ]);
        }
        if s.phases.len() > 1 {
            rows.push(vec![
                "total".into(),
                String::new(),
                String::new(),
                String::new(),
                count(s.total_steps()),
                count(s.phases.iter().map(|p| p.samples).sum()),
                flops(s.train_flops),
                String::new(),
                String::new(),
            ]);
        }
        out.push_str(&columns(&rows, "  "));
        for p in s.phases.iter().filter(|p| p.work.contains("rounded")) {
            out.push_str(&format!("  note: {}: {}\n", p.name, p.work));
        }
        for e in &s.exports {
            out.push_str(&format!("  export {} = {}\n", e.name, e.model));
        }
    }
    out
}

/// Left-aligned first column, right-aligned numbers.
fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (i, cell) in r.iter().enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            } else {
                line.push_str(&format!("  {cell:>w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- graph

/// Why stage `s` runs after `dep`: `init`, `models`, `teacher`, `data`.
fn edge_reasons(s: &StagePlan, dep: &str) -> Vec<&'static str> {
    let mut why = Vec::new();
    if s.init.as_deref() == Some(dep) {
        why.push("init");
    }
    let from_dep =
        |m: &ModelPlan| matches!(&m.init, ModelInit::Stage { stage, .. } if stage == dep);
    if s.init.as_deref() != Some(dep) && s.models.iter().any(from_dep) {
        why.push("models");
    }
    if s.teachers.iter().flat_map(|t| &t.models).any(from_dep) {
        why.push("teacher");
    }
    if s.phases
        .iter()
        .any(|p| matches!(&p.data, Some(DataPlan::Stage { stage, .. }) if stage == dep))
    {
        why.push("data");
    }
    why
}

fn phase_line(p: &PhasePlan) -> String {
    format!(
        "{}: {} px, {} steps x {}",
        p.name,
        p.resolution,
        count(p.steps),
        count(p.batch)
    )
}

/// Graphviz DOT.
pub fn dot(plan: &Plan) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out =
        String::from("digraph pex {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for s in &plan.stages {
        let mut lines = vec![format!("stage {}", s.name)];
        lines.extend(s.phases.iter().map(phase_line));
        lines.extend(
            s.exports
                .iter()
                .map(|e| format!("export {} = {}", e.name, e.model)),
        );
        lines.extend(s.writes.iter().map(|w| format!("writes {}.{w}", s.name)));
        let label: Vec<String> = lines.iter().map(|l| q(l)).collect();
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\\l\"];\n",
            q(&s.name),
            label.join("\\l")
        ));
    }
    for s in &plan.stages {
        for dep in &s.after {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                q(dep),
                q(&s.name),
                edge_reasons(s, dep).join(", ")
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let q = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for s in &plan.stages {
        let mut lines = vec![format!("<b>{}</b>", s.name)];
        lines.extend(s.phases.iter().map(phase_line));
        lines.extend(
            s.exports
                .iter()
                .map(|e| format!("export {} = {}", e.name, e.model)),
        );
        lines.extend(s.writes.iter().map(|w| format!("writes {}.{w}", s.name)));
        let label: Vec<String> = lines.iter().map(|l| q(l)).collect();
        // Prefixed ids: a stage may be named like a Mermaid keyword (`end`).
        out.push_str(&format!("  s_{}[\"{}\"]\n", s.name, label.join("<br/>")));
    }
    for s in &plan.stages {
        for dep in &s.after {
            out.push_str(&format!(
                "  s_{dep} -->|{}| s_{}\n",
                edge_reasons(s, dep).join(", "),
                s.name
            ));
        }
    }
    out
}

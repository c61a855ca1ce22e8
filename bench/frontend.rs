//! Front-end benchmark: `cargo bench --bench frontend`.
//!
//! 1. Wall time of `pexc check` on the whole experiment library, as a user runs it (the
//!    release binary, process start included), median of 20 runs; and the same work
//!    in-process, to separate start-up from checking.
//! 2. Throughput of parse + resolve + check on a large generated file, in MB/s.
//!
//! Targets (issue 2): under 50 ms for the library, at least 20 MB/s.
//!
//! How it gets there. pest's generated parser costs about 450 instructions a byte on this
//! file (every primitive an out-of-line call moving a `Box<ParserState>`, error tracking on
//! every rule, a line index of the whole input), more than the whole 20 MB/s budget of
//! about 280. So the grammar stays the single source of syntax but is compiled twice:
//! pest_derive as before, and compiler/build.rs into plain recursive descent over bytes
//! that writes the parse tree in preorder as it goes (compiler/src/syntax/fast.rs). The
//! generated parser reads every file; pest runs only on a file it refuses, to explain why
//! in words. tests/robustness.rs holds the two to the same trees on the whole corpus, its
//! files cut at every line, and mutated and random inputs. After the parser: the AST's
//! vectors sized from the tree (no growing), 32-bit spans (every node and checked value
//! carries them), and constructor calls shared between the values that use them instead
//! of deep-copied.
//!
//! Figures on this 2-core machine (medians; the machine's load moves them by 5 to 10%):
//!
//! |                                | pest, before | now    |
//! |--------------------------------|--------------|--------|
//! | parser alone                   | 448 ms       | 46 ms  |
//! | parse to the AST               | 607 ms       | 116 ms |
//! | parse + resolve + check        | 978 ms       | 319 ms |
//! | throughput                     | 8.6 MB/s     | 26.3 MB/s |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pexc_compiler::{check_file, check_source, FsLoader};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn library() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["experiments/pe", "experiments/tiny"] {
        for e in std::fs::read_dir(root.join(dir))
            .expect("the library exists")
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "pex") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// A realistic large experiment: many model, data and constant definitions and stages with
/// phases, teachers and losses, every definition used.
fn generated(target_bytes: usize) -> String {
    let mut s = String::from("use std::pe::{clip_text_l, metaclip_augment}\n\n");
    let mut i = 0;
    while s.len() < target_bytes {
        s.push_str(&format!(
            "/// Block {i}.\nlet warm{i} = {w}\nmodel v{i} = vit(patch: 14, width: 1024, depth: 24, heads: 16, mlp: 4096,\n    pos: [rope2d, abs], cls: true, pool: attention(heads: 8), out: 1024, image: 336)\n\
             model t{i} = clip_text_l with {{ depth: 12 }}\n\
             data d{i} = webdataset(shards: \"data/{{00000..00099}}.tar\", image: \"jpg\", text: \"txt\", augment: metaclip_augment)\n\n\
             stage s{i} {{\n    train: [v{i}, t{i}]\n    data: d{i}\n    optimizer: lamb(lr: 2e-3, betas: (0.9, 0.95), weight_decay: 0.05)\n\
             \x20   lr: [warmup(steps: warm{i}), cosine(final: 0.0)]\n    batch: 64Ki\n\
             \x20   loss: clip(max_logit_scale: 100) + 0.5 * mask_regularization(fraction: 1/16, ratio: 0.4)\n\
             \x20   phase r98 {{ resolution: 98, samples: 10B }}\n    phase r154 {{ resolution: 154, samples: 8B }}\n\
             \x20   phase r224 {{ resolution: 224, samples: 4B }}\n    phase r336 {{ resolution: 336, samples: 2B }}\n}}\n\n\
             stage p{i} {{\n    init: s{i}\n    teacher k{i} = frozen(s{i}.v{i}).layer(-4)\n    train: [v{i}]\n    data: d{i}\n\
             \x20   optimizer: lamb(lr: 5e-4, betas: (0.9, 0.95), weight_decay: 0.05)\n    batch: 12288\n    steps: 24K\n    resolution: 448\n\
             \x20   regularize: [drop_path(0.4), layer_scale(0.1), token_mask(ratio: 0.75, block: (2, 2))]\n\
             \x20   loss: token_cosine(student: v{i}.last, teacher: k{i})\n    export e{i} = v{i}\n}}\n\n",
            w = 1000 + i
        ));
        i += 1;
    }
    s
}

fn main() {
    let files = library();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rel: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect();
    let bytes: usize = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len() as usize))
        .sum();

    // 1a. The binary, as users run it.
    let bin = env!("CARGO_BIN_EXE_pexc");
    let mut runs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let status = Command::new(bin)
            .arg("check")
            .args(&rel)
            .current_dir(root)
            .status()
            .expect("pexc runs");
        runs.push(t.elapsed());
        assert!(status.success(), "the library checks clean");
    }
    println!(
        "pexc check on the library ({} files, {} KB): median {:.1} ms per run (20 runs, process start included)",
        files.len(),
        bytes / 1024,
        median(runs).as_secs_f64() * 1e3
    );

    // 1b. In-process.
    let mut runs = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        for (f, r) in files.iter().zip(&rel) {
            let o = check_file(f, r, &FsLoader).expect("readable");
            assert!(o.problems.list.is_empty());
        }
        runs.push(t.elapsed());
    }
    println!(
        "  in-process: median {:.2} ms per pass over the library (50 passes)",
        median(runs).as_secs_f64() * 1e3
    );

    // 1c. `pexc plan` on the largest experiment (issue 3: under 20 ms), as users run it,
    // and check + lowering in-process.
    let largest = rel
        .iter()
        .zip(&files)
        .max_by_key(|(_, f)| std::fs::metadata(f).map_or(0, |m| m.len()))
        .map(|(r, _)| r.clone())
        .expect("a library");
    let mut runs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["plan", &largest])
            .current_dir(root)
            .output()
            .expect("pexc runs");
        runs.push(t.elapsed());
        assert!(out.status.success(), "{largest} plans");
    }
    println!(
        "pexc plan {largest}: median {:.1} ms per run (20 runs, process start included)",
        median(runs).as_secs_f64() * 1e3
    );
    let mut runs = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let o = check_file(Path::new(&largest), &largest, &FsLoader).expect("readable");
        let mut problems = pexc_compiler::Problems::default();
        let plan = pexc_compiler::lower::lower(&o.checked, &mut problems);
        runs.push(t.elapsed());
        assert!(!plan.stages.is_empty() && problems.list.is_empty());
    }
    println!(
        "  in-process check + lowering: median {:.2} ms (50 runs)",
        median(runs).as_secs_f64() * 1e3
    );

    // 2. Throughput on a large file.
    let text = generated(8 << 20);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = check_source("generated.pex", text.as_bytes());
        runs.push(t.elapsed());
        assert!(
            o.problems.list.is_empty(),
            "the generated file is clean: {:?}",
            o.problems.list.first().map(|p| p.code())
        );
    }
    let m = median(runs);
    let mut parse_runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let module = pexc_compiler::syntax::parse_module(&text).expect("parses");
        parse_runs.push(t.elapsed());
        assert!(!module.items.is_empty());
    }
    let pm = median(parse_runs);
    {
        use pest::Parser;
        let mut runs = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let pairs = pexc_compiler::syntax::parse::PexParser::parse(
                pexc_compiler::syntax::parse::Rule::file,
                &text,
            )
            .expect("ok");
            runs.push(t.elapsed());
            drop(pairs);
        }
        println!(
            "  pest alone (used only to explain a refusal): {:.0} ms",
            median(runs).as_secs_f64() * 1e3
        );
    }
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let nodes = pexc_compiler::syntax::parse::generated_tree_len(&text).expect("parses");
        runs.push(t.elapsed());
        assert!(nodes > 0);
    }
    let g = median(runs);
    println!(
        "  the parser generated from the grammar alone: {:.0} ms, {:.0} MB/s",
        g.as_secs_f64() * 1e3,
        text.len() as f64 / 1e6 / g.as_secs_f64()
    );
    println!(
        "  of which parsing to the AST: median {:.0} ms, {:.1} MB/s",
        pm.as_secs_f64() * 1e3,
        text.len() as f64 / 1e6 / pm.as_secs_f64()
    );
    println!(
        "front end (parse + resolve + check) on a generated {:.1} MB file: median {:.0} ms, {:.1} MB/s",
        text.len() as f64 / 1e6,
        m.as_secs_f64() * 1e3,
        text.len() as f64 / 1e6 / m.as_secs_f64()
    );
}

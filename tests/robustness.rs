//! The front end never panics: not on arbitrary bytes, not on experiment files mutated at
//! random (bytes, tokens, lines), not on pathological nesting. Run more cases with
//! `PROPTEST_CASES=100000 cargo test --release --test robustness`.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};

use pexc_compiler::syntax::parse::parsers_agree;
use pexc_compiler::{check_file, check_source, Loader};
use proptest::prelude::*;

/// The root file from memory, everything it imports from disk.
struct Mutated {
    root: PathBuf,
    bytes: Vec<u8>,
}

impl Loader for Mutated {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        if path == self.root {
            Ok(self.bytes.clone())
        } else {
            pexc_compiler::FsLoader.read(path)
        }
    }
}

/// Every .pex file of the repository: the seeds of the mutations.
fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        "experiments/pe",
        "experiments/tiny",
        "tests/valid",
        "tests/invalid",
        "stdlib/std",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pex") {
                let bytes = std::fs::read(&p).expect("readable");
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Words and symbols of the language, to splice in.
const TOKENS: &[&str] = &[
    "stage",
    "phase",
    "teacher",
    "export",
    "model",
    "data",
    "let",
    "use",
    "with",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "::",
    "=",
    ".",
    "+",
    "-",
    "*",
    "/",
    "\"",
    "//",
    "///",
    "\n",
    " ",
    "0",
    "-1",
    "1/0",
    "0/0",
    "1e308",
    "1e-400",
    "99999999999999999999",
    "9223372036854775807",
    "2K",
    "32Ki",
    "5.4B",
    "1.0005K",
    "vit",
    "clip",
    "lamb",
    "frozen",
    "layer(0)",
    ".layer(-99)",
    ".last",
    "core",
    "vision",
    "text",
    "train",
    "resolution",
    "batch",
    "loss",
    "init",
    "true",
    "none",
    "cls",
    "std::pe",
    "\"x.pex\"",
    "é",
    "\u{0}",
    "\u{feff}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    InsertBytes { at: usize, bytes: Vec<u8> },
    InsertToken { at: usize, token: usize },
    Duplicate { at: usize, len: usize, to: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::InsertBytes { at, bytes }),
        (any::<usize>(), 0..TOKENS.len())
            .prop_map(|(at, token)| Mutation::InsertToken { at, token }),
        (any::<usize>(), 1usize..200, any::<usize>())
            .prop_map(|(at, len, to)| Mutation::Duplicate { at, len, to }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::InsertBytes { at, bytes: b } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::InsertToken { at, token } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, TOKENS[*token].bytes());
        }
        Mutation::Duplicate { at, len, to } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                let piece: Vec<u8> = bytes[at..end].to_vec();
                let to = to % (bytes.len() + 1);
                bytes.splice(to..to, piece);
            }
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<Vec<u8>> =
                bytes.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
            let k = lines.len();
            lines.swap(a % k, b % k);
            *bytes = lines.join(&b'\n');
        }
    }
}

/// 512 cases per property in `cargo test`; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = check_source("fuzz.pex", &bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            prop_assert_eq!(parsers_agree(text, false), Ok(()));
        }
    }

    #[test]
    fn arbitrary_token_soup_never_panics(tokens in proptest::collection::vec(0..TOKENS.len(), 0..200)) {
        let text: String = tokens.iter().map(|&t| TOKENS[t]).collect::<Vec<_>>().join(" ");
        let _ = check_source("soup.pex", text.as_bytes());
        prop_assert_eq!(parsers_agree(&text, false), Ok(()));
        prop_assert_eq!(parsers_agree(&text, true), Ok(()));
    }

    /// The parser generated from the grammar (compiler/build.rs) accepts exactly what pest
    /// accepts, with the same tree, on mutated experiments: spliced tokens, dropped and
    /// repeated lines, flipped bytes.
    #[test]
    fn the_fast_parser_agrees_with_pest(seed in any::<usize>(), mutations in proptest::collection::vec(mutation(), 0..6)) {
        let files = corpus();
        prop_assume!(!files.is_empty());
        let (_, original) = &files[seed % files.len()];
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(parsers_agree(&text, false), Ok(()));
    }

    /// The same for lone expressions (`--set` values): arbitrary short text and token soup.
    #[test]
    fn the_fast_parser_agrees_with_pest_on_expressions(
        raw in ".{0,40}",
        tokens in proptest::collection::vec(0..TOKENS.len(), 0..12),
    ) {
        prop_assert_eq!(parsers_agree(&raw, true), Ok(()));
        let text: String = tokens.iter().map(|&t| TOKENS[t]).collect();
        prop_assert_eq!(parsers_agree(&text, true), Ok(()));
    }

    #[test]
    fn mutated_experiments_never_panic(seed in any::<usize>(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let files = corpus();
        prop_assume!(!files.is_empty());
        let (path, original) = &files[seed % files.len()];
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let loader = Mutated { root: path.clone(), bytes };
        let display = path.display().to_string();
        let outcome = check_file(path, &display, &loader).expect("the root is in memory");
        // Whatever the input, every diagnostic points inside its file.
        for p in &outcome.problems.list {
            let len = outcome.sources().get(p.file).text.len();
            if let Some(span) = p.primary() {
                prop_assert!(span.offset() + span.len() <= len, "span {:?} past the end ({len}) for {}", span, p.code());
            }
        }
    }
}

/// Every file of the repository, as it is and cut short at every line: the same tree from
/// both parsers, or the same refusal.
#[test]
fn the_fast_parser_agrees_with_pest_on_the_corpus() {
    let files = corpus();
    assert!(files.len() > 40);
    let mut accepted = 0;
    for (path, bytes) in &files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        if pexc_compiler::syntax::parse_module(text).is_ok() {
            accepted += 1;
        }
        for (cut, _) in text.match_indices('\n').chain([(text.len(), "")]) {
            let prefix = &text[..cut];
            if let Err(e) = parsers_agree(prefix, false) {
                panic!("{} cut at byte {cut}: {e}", path.display());
            }
        }
    }
    // Most of the corpus is valid: the trees were compared, not only the refusals.
    assert!(accepted > 30, "{accepted}");
}

/// Nesting up to the limit parses, in both parsers, with every kind of bracket (each level
/// recurses through several generated rules).
#[test]
fn nesting_at_the_limit_parses() {
    let depth = pexc_compiler::syntax::MAX_NESTING;
    for (open, close) in [("(", ")"), ("[", "]"), ("f(", ")"), ("a with {b: ", "}")] {
        let text = format!("let x = {}1{}\n", open.repeat(depth), close.repeat(depth));
        assert!(
            pexc_compiler::syntax::parse_module(&text).is_ok(),
            "{open:?} x {depth}"
        );
        assert_eq!(parsers_agree(&text, false), Ok(()));
    }
}

#[test]
fn deep_nesting_is_a_diagnostic_not_a_stack_overflow() {
    for open in ["(", "[", "{", "f(", "a with {b: "] {
        let text = format!("let x = {}", open.repeat(100_000));
        let outcome = check_source("deep.pex", text.as_bytes());
        let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
        assert_eq!(codes, ["pex::syntax::nesting"], "for {open:?}");
    }
}

#[test]
fn long_operator_chains_are_a_diagnostic_not_a_stack_overflow() {
    // No brackets, so no nesting limit: a chain of operators nests as deep as it is long.
    for text in [
        format!("let x = 1{}\n", " + 1".repeat(20_000)),
        format!("let x = {}1\n", "-".repeat(20_000)),
        format!("let x = vision{}\n", ".last".repeat(20_000)),
        format!("let x = vision{}\n", " with {}".repeat(20_000)),
    ] {
        let outcome = check_source("chain.pex", text.as_bytes());
        let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
        assert_eq!(codes, ["pex::syntax::too_long"]);
    }
    // Up to the limit, long sums are fine.
    let text = format!("let x = 1{}\n", " + 1".repeat(200));
    assert!(check_source("sum.pex", text.as_bytes())
        .problems
        .list
        .is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// `--set` overrides as typed on a command line: arbitrary text, or a path and a value
    /// spliced from the language's tokens.
    #[test]
    fn arbitrary_overrides_never_panic(
        raw in proptest::collection::vec(".{0,40}", 0..4),
        spliced in proptest::collection::vec((0..TOKENS.len(), 0..TOKENS.len(), 0..TOKENS.len()), 0..4),
    ) {
        let mut sets = raw;
        for (a, b, c) in spliced {
            sets.push(format!("core.{}={}{}", TOKENS[a], TOKENS[b], TOKENS[c]));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/micro.pex");
        let outcome = pexc_compiler::check_file_with(&root, "micro.pex", &pexc_compiler::FsLoader, &sets)
            .expect("micro.pex is readable");
        if !outcome.has_errors() {
            let mut problems = pexc_compiler::Problems::default();
            let _ = pexc_compiler::lower::lower(&outcome.checked, &mut problems);
        }
    }
}

/// The inputs of the properties above, counted: a fixed, reproducible number of mutated
/// experiments and byte strings (4 x `PROPTEST_CASES`, default 2,048 each) through parse,
/// check and lowering, reported on stderr (`--nocapture`). proptest turns a panic into a
/// failure with the input that caused it.
#[test]
fn a_counted_run_of_inputs_reports_how_many_ran_and_none_panicked() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let n = cases() * 4;
    let files = corpus();
    assert!(!files.is_empty());
    let runner = |seed: u8| {
        TestRunner::new_with_rng(
            Config {
                cases: n,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
        )
    };
    let (mutated, planned, bytes_run) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    runner(1)
        .run(
            &(any::<usize>(), proptest::collection::vec(mutation(), 1..6)),
            |(seed, mutations)| {
                let (path, original) = &files[seed % files.len()];
                let mut bytes = original.clone();
                for m in &mutations {
                    apply(&mut bytes, m);
                }
                let loader = Mutated {
                    root: path.clone(),
                    bytes,
                };
                let display = path.display().to_string();
                let outcome = check_file(path, &display, &loader).expect("in memory");
                if !outcome.has_errors() {
                    let mut problems = pexc_compiler::Problems::default();
                    let _ = pexc_compiler::lower::lower(&outcome.checked, &mut problems);
                    planned.set(planned.get() + 1);
                }
                mutated.set(mutated.get() + 1);
                Ok(())
            },
        )
        .expect("no mutated experiment panics");
    runner(2)
        .run(&proptest::collection::vec(any::<u8>(), 0..4096), |bytes| {
            let _ = check_source("fuzz.pex", &bytes);
            bytes_run.set(bytes_run.get() + 1);
            Ok(())
        })
        .expect("no byte string panics");
    let (mutated, planned, bytes_run) = (mutated.get(), planned.get(), bytes_run.get());
    eprintln!(
        "front end: {mutated} mutated experiments ({planned} still valid, lowered to a plan) and {bytes_run} arbitrary byte strings checked; none panicked"
    );
    assert_eq!((mutated, bytes_run), (n, n));
}

#[test]
fn a_file_over_the_size_limit_is_a_diagnostic() {
    let big = vec![b' '; pexc_compiler::syntax::MAX_FILE_BYTES + 1];
    let outcome = check_source("big.pex", &big);
    let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
    assert_eq!(codes, ["pex::syntax::file_size"]);
    // Cut inside a multi-byte character: still the size, not the encoding.
    let mut big = "é"
        .repeat(pexc_compiler::syntax::MAX_FILE_BYTES / 2 + 1)
        .into_bytes();
    big.pop();
    let outcome = check_source("big.pex", &big);
    let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
    assert_eq!(codes, ["pex::syntax::file_size"]);
}

#[test]
fn deep_nesting_in_an_override_is_a_diagnostic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/micro.pex");
    for set in [
        format!("core.batch={}", "(".repeat(100_000)),
        format!("core.batch=1{}", " + 1".repeat(20_000)),
    ] {
        let outcome =
            pexc_compiler::check_file_with(&root, "micro.pex", &pexc_compiler::FsLoader, &[set])
                .expect("readable");
        assert!(outcome.has_errors());
        let codes: Vec<String> = outcome.problems.list.iter().map(|p| p.code()).collect();
        assert!(
            codes
                .iter()
                .all(|c| c == "pex::syntax::nesting" || c == "pex::syntax::too_long"),
            "{codes:?}"
        );
    }
}

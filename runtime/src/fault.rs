//! Injected faults, for the reliability tests: the faults a real run meets rarely (a loss
//! that turns NaN, a gradient that overflows, a disk that fills while a checkpoint is
//! written) made to happen at a chosen place, so that what the runtime does about them can
//! be tested. Set by the environment variable `PEXC_FAULTS`, a comma-separated list:
//!
//! - `nan_loss@STEP` or `nan_loss@STEP:TERM`: at stage-global step STEP (1-based, as in
//!   `metrics.jsonl`) of every stage, the loss term TERM (default: the first) is NaN;
//! - `inf_grad@STEP`: at step STEP the gradient norm is infinite;
//! - `write_fail@TEXT`: every atomic write of a run-directory file whose path contains
//!   TEXT fails with "no space left on device" after half of its bytes are written.
//!
//! Unset (the normal case) it costs one lookup per step. In-process tests add faults with
//! `inject`.

use std::sync::{Mutex, OnceLock};

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    NanLoss { step: u64, term: Option<String> },
    InfGrad { step: u64 },
    WriteFail { path_contains: String },
}

/// Parses a `PEXC_FAULTS` value; unknown entries are an error naming them.
pub fn parse(spec: &str) -> Result<Vec<Fault>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || {
            format!(
                "PEXC_FAULTS: `{item}` is not a fault (nan_loss@STEP[:TERM], inf_grad@STEP, write_fail@TEXT)"
            )
        };
        let (kind, arg) = item.split_once('@').ok_or_else(bad)?;
        match kind {
            "nan_loss" => {
                let (step, term) = match arg.split_once(':') {
                    Some((s, t)) => (s, Some(t.to_string())),
                    None => (arg, None),
                };
                out.push(Fault::NanLoss {
                    step: step.parse().map_err(|_| bad())?,
                    term,
                });
            }
            "inf_grad" => out.push(Fault::InfGrad {
                step: arg.parse().map_err(|_| bad())?,
            }),
            "write_fail" if !arg.is_empty() => out.push(Fault::WriteFail {
                path_contains: arg.to_string(),
            }),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn faults() -> &'static Mutex<Vec<Fault>> {
    static FAULTS: OnceLock<Mutex<Vec<Fault>>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let from_env = std::env::var("PEXC_FAULTS")
            .ok()
            .and_then(|s| parse(&s).ok())
            .unwrap_or_default();
        Mutex::new(from_env)
    })
}

/// Whether `PEXC_FAULTS` is set but does not parse: `pexc run` refuses to start then,
/// rather than run without the faults a test asked for.
pub fn check_env() -> Result<(), String> {
    match std::env::var("PEXC_FAULTS") {
        Ok(s) => parse(&s).map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// Adds a fault for the rest of the process (tests).
pub fn inject(f: Fault) {
    if let Ok(mut v) = faults().lock() {
        v.push(f);
    }
}

fn any(pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
    faults().lock().ok()?.iter().find(|f| pred(f)).cloned()
}

/// The term whose value is NaN at `step` (1-based), if a fault says so: `Some(None)` for
/// the first term.
pub fn nan_loss(step: u64) -> Option<Option<String>> {
    match any(|f| matches!(f, Fault::NanLoss { step: s, .. } if *s == step))? {
        Fault::NanLoss { term, .. } => Some(term),
        _ => None,
    }
}

/// Whether the gradient norm of `step` (1-based) is made infinite.
pub fn inf_grad(step: u64) -> bool {
    any(|f| matches!(f, Fault::InfGrad { step: s } if *s == step)).is_some()
}

/// Whether writing `path` fails.
pub fn write_fails(path: &std::path::Path) -> bool {
    let p = path.to_string_lossy();
    any(|f| matches!(f, Fault::WriteFail { path_contains } if p.contains(path_contains.as_str())))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_rejects_the_rest() {
        assert_eq!(
            parse("nan_loss@3, nan_loss@4:clip,inf_grad@7,write_fail@step-0006").unwrap(),
            vec![
                Fault::NanLoss {
                    step: 3,
                    term: None
                },
                Fault::NanLoss {
                    step: 4,
                    term: Some("clip".into())
                },
                Fault::InfGrad { step: 7 },
                Fault::WriteFail {
                    path_contains: "step-0006".into()
                },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        for bad in ["nan_loss", "nan_loss@x", "explode@3", "write_fail@"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}

//! `weights:` on a model, checked before anything runs: the checkpoint's keys and shapes
//! (read from its header, no tensor data) against the declared configuration. A
//! mismatch is a diagnostic at the `weights:` value naming the first differing keys and
//! the likely cause. Lives at the CLI layer because reading `.pt` headers needs the
//! runtime's pickle reader, and the compiler stays burn-free.

use std::path::{Path, PathBuf};

use pexc_compiler::check::{CallValue, Value};
use pexc_compiler::lower;
use pexc_compiler::source::{FileId, Origin, Span};
use pexc_compiler::syntax::ast::DefKind;
use pexc_compiler::{Error, Outcome, Problems};
use pexc_runtime::model::official::{
    compare_shapes, read_shapes, text_shapes, tower_shapes, vision_shapes, Tower,
};
use pexc_runtime::model::{TextConfig, VitConfig};

/// A model definition's `weights` argument: the model's name, the constructor call, the
/// path as written, the file it is relative to, and its span.
pub struct WeightsArg<'o> {
    pub model: String,
    pub call: &'o CallValue,
    pub written: String,
    pub resolved: PathBuf,
    pub file: FileId,
    pub span: Span,
}

/// Every model definition that names `weights`, in source order.
pub fn weights_args(outcome: &Outcome) -> Vec<WeightsArg<'_>> {
    let checked = &outcome.checked;
    let mut out = Vec::new();
    for d in &checked.defs {
        if d.kind != DefKind::Model {
            continue;
        }
        let Some(Value::Call(call)) = d.value.as_ref().map(|v| &v.value) else {
            continue;
        };
        let Some(arg) = call.arg("weights") else {
            continue;
        };
        let Value::Str(written) = &arg.value else {
            continue;
        };
        let base = match &checked.loaded.sources.get(arg.file).origin {
            Origin::Path(p) => p.parent().unwrap_or(Path::new("")).to_path_buf(),
            _ => PathBuf::new(),
        };
        out.push(WeightsArg {
            model: d.name.clone(),
            call,
            written: written.clone(),
            resolved: base.join(written),
            file: arg.file,
            span: arg.span,
        });
    }
    out
}

/// Checks every `weights:` file that exists against its model (`require`: a missing file
/// is an error too, as `run` and `embed` need it).
pub fn check_weights(outcome: &Outcome, problems: &mut Problems, require: bool) {
    let mut found = Vec::new();
    for w in weights_args(outcome) {
        if !w.resolved.is_file() {
            if require && !w.resolved.exists() {
                found.push((
                    w.file,
                    Error::PathMissing {
                        path: w.written.clone(),
                        resolved: w.resolved.display().to_string(),
                        span: w.span.into(),
                    },
                ));
            }
            continue;
        }
        let ctor = lower::call_ctor(&outcome.checked, w.call);
        let (expected, tower) = match ctor.ctor.as_str() {
            "vit" => match VitConfig::from_plan(&ctor) {
                Ok(c) => (vision_shapes(&c), Tower::Vision),
                Err(_) => continue,
            },
            "clip_text" => match TextConfig::from_plan(&ctor) {
                Ok(c) => (text_shapes(&c), Tower::Text),
                Err(_) => continue,
            },
            _ => continue,
        };
        let all = match read_shapes(&w.resolved) {
            Ok(s) => s,
            Err(reason) => {
                found.push((
                    w.file,
                    Error::WeightsUnreadable {
                        path: w.written.clone(),
                        reason,
                        span: w.span.into(),
                    },
                ));
                continue;
            }
        };
        if let Some(m) = compare_shapes(&expected, &tower_shapes(&all, tower), tower) {
            let more = m.count.saturating_sub(m.lines.len());
            let mut detail = format!(
                "{} key{} differ{}: {}",
                m.count,
                if m.count == 1 { "" } else { "s" },
                if m.count == 1 { "s" } else { "" },
                m.lines.join("; ")
            );
            if more > 0 {
                detail.push_str(&format!("; and {more} more"));
            }
            found.push((
                w.file,
                Error::WeightsMismatch {
                    path: w.written.clone(),
                    model: w.model.clone(),
                    detail,
                    help: format!("likely cause: {}", m.cause),
                    span: w.span.into(),
                },
            ));
        }
    }
    for (file, e) in found {
        problems.push(file, e);
    }
}

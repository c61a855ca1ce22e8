//! Exports in the official PE layout (fixtures README "Key layout"), so that the official
//! code loads pexc-trained weights with strict key matching: a tower alone (vision keys
//! unprefixed, as the released PE-Spatial / PE-Lang files; or the text keys), or a whole
//! CLIP (text keys at the top level, vision under `visual.`, a 0-dim `logit_scale`, as the
//! released PE-Core files). Matrices in the official orientation: `proj` and
//! `text_projection` as (in, out), every `Linear` weight and the packed `in_proj_weight`
//! as (out, in).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::checkpoint::{self, Stored};
use crate::model::official::to_official;
use crate::rundir::RunDir;

/// A tower's parameters (pexc paths, no prefix) in official keys and orientations.
pub fn tower(params: &[(String, Stored)]) -> Vec<(String, Stored)> {
    let mut v = to_official(params, "");
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A whole CLIP in the official layout from a stage checkpoint (`vision.*`, `text.*`,
/// `logit_scale`).
pub fn clip(ckpt: &HashMap<String, Stored>) -> Result<Vec<(String, Stored)>, String> {
    let part = |prefix: &str| -> Vec<(String, Stored)> {
        let mut v: Vec<(String, Stored)> = ckpt
            .iter()
            .filter_map(|(k, s)| Some((k.strip_prefix(prefix)?.to_string(), s.clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (vision, text) = (part("vision."), part("text."));
    if vision.is_empty() || text.is_empty() {
        return Err("the checkpoint does not hold both a vision and a text tower".into());
    }
    let scale = ckpt
        .get("logit_scale")
        .ok_or("the checkpoint has no `logit_scale`")?;
    let mut out = to_official(&vision, "visual.");
    out.extend(to_official(&text, ""));
    // The official parameter is 0-dimensional.
    out.push((
        "logit_scale".into(),
        Stored {
            shape: Vec::new(),
            values: scale.values.first().copied().into_iter().collect(),
        },
    ));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes tensors in the official layout (atomically), with what they are in the metadata.
pub fn write(path: &Path, tensors: &[(String, Stored)], meta: Value) -> Result<(), String> {
    let mut meta = meta;
    meta["layout"] = json!("pe");
    checkpoint::save(path, tensors, &meta)
}

/// `pexc export RUN_DIR NAME`: an export of the run (`exports/NAME.safetensors`), or a
/// finished CLIP stage as a whole official CLIP file. Returns the file written.
pub fn export_from_run(run: &Path, name: &str, out: Option<&Path>) -> Result<PathBuf, String> {
    if !run.is_dir() {
        return Err(format!("`{}` is not a run directory", run.display()));
    }
    let dir = RunDir {
        root: run.to_path_buf(),
    };
    let export_file = dir.path(&format!("exports/{name}.safetensors"));
    if export_file.is_file() {
        let (tensors, meta) = checkpoint::load(&export_file)?;
        let mut v: Vec<(String, Stored)> = tensors.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // Runs before the official layout wrote pexc's own orientation.
        let v = if meta["layout"] == "pe" { v } else { tower(&v) };
        let target = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path(&format!("exports/{name}.pe.safetensors")));
        write(&target, &v, meta)?;
        return Ok(target);
    }
    let record: Option<Value> = std::fs::read_to_string(dir.stage_record(name))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let Some(record) = record else {
        let mut known: Vec<String> = std::fs::read_dir(dir.path("exports"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".safetensors")
                    .filter(|s| !s.ends_with(".pe"))
                    .map(str::to_string)
            })
            .collect();
        known.sort();
        return Err(format!(
            "`{name}` is neither an export of `{}` ({}) nor a finished stage there",
            run.display(),
            if known.is_empty() {
                "it has none".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    let ckpt = record["checkpoint"]
        .as_str()
        .ok_or_else(|| format!("stage `{name}` has no checkpoint on record"))?;
    let (tensors, _) = checkpoint::load(&dir.root.join(ckpt))?;
    let v = clip(&tensors).map_err(|e| format!("stage `{name}`: {e}"))?;
    let target = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path(&format!("exports/{name}_clip.pe.safetensors")));
    write(&target, &v, json!({"stage": name, "model": "clip"}))?;
    Ok(target)
}

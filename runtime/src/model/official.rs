//! The official PE checkpoint layout (fixtures README "Key layout"): reading `.pt` state
//! dicts (burn-store's Rust pickle reader, which only rebuilds tensors and never runs
//! pickled code) and `.safetensors` files, and mapping their keys to pexc's modules and
//! back. pexc's parameter paths are the official keys; only the orientation of
//! `Linear`-style matrices differs ((out, in) there, (in, out) here).

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use safetensors::SafeTensors;

use super::config::{TextConfig, VitConfig};
use super::text::TextTransformer;
use super::vit::VisionTransformer;
use crate::checkpoint::{self, Stored};

/// Which tower of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tower {
    Vision,
    Text,
}

/// Whether an official key holds a (out, in) matrix that pexc stores transposed.
pub fn is_linear_weight(key: &str) -> bool {
    key.ends_with("in_proj_weight")
        || (key.ends_with(".weight")
            && (key.contains("out_proj") || key.contains("c_fc") || key.contains("c_proj")))
}

fn transposed(s: &Stored) -> Stored {
    let [r, c] = [s.shape[0], s.shape[1]];
    let mut values = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            values[j * r + i] = s.values[i * c + j];
        }
    }
    Stored {
        shape: vec![c, r],
        values,
    }
}

fn stored(name: &str, data: TensorData, path: &Path) -> Result<Stored, String> {
    if !data.dtype.is_float() {
        return Err(format!(
            "`{}`: tensor `{name}` is {:?}, expected floating point",
            path.display(),
            data.dtype
        ));
    }
    Ok(Stored::from_data(data))
}

/// A safetensors tensor of any float dtype, as f32.
fn from_view(
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
    path: &Path,
) -> Result<Stored, String> {
    let dtype = match view.dtype() {
        safetensors::Dtype::F32 => burn::tensor::DType::F32,
        safetensors::Dtype::F16 => burn::tensor::DType::F16,
        safetensors::Dtype::BF16 => burn::tensor::DType::BF16,
        safetensors::Dtype::F64 => burn::tensor::DType::F64,
        other => {
            return Err(format!(
                "`{}`: tensor `{name}` is {other:?}, expected floating point",
                path.display()
            ))
        }
    };
    let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
    stored(name, data, path)
}

/// One named tensor of a `.safetensors` file (any float dtype, as f32); the file's other
/// tensors, whatever their dtype, are not decoded.
pub fn read_tensor(path: &Path, name: &str) -> Result<Option<Stored>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a valid safetensors file: {e}", path.display()))?;
    match st.tensor(name) {
        Ok(view) => from_view(name, &view, path).map(Some),
        Err(_) => Ok(None),
    }
}

/// Every tensor of a `.pt` or `.safetensors` file, as f32, by key (a `module.` prefix,
/// as DDP writes it, removed).
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Stored>, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut out = HashMap::new();
    match ext {
        "safetensors" => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| {
                format!("`{}` is not a valid safetensors file: {e}", path.display())
            })?;
            for (name, view) in st.tensors() {
                out.insert(name.clone(), from_view(&name, &view, path)?);
            }
        }
        "pt" | "pth" | "bin" => {
            let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| {
                format!(
                    "cannot read `{}` as a PyTorch checkpoint: {e}",
                    path.display()
                )
            })?;
            for (name, snap) in reader.into_tensors() {
                let data = snap
                    .to_data()
                    .map_err(|e| format!("`{}`: tensor `{name}`: {e:?}", path.display()))?;
                out.insert(name.clone(), stored(&name, data, path)?);
            }
        }
        _ => {
            return Err(format!(
                "`{}`: expected a `.pt` or `.safetensors` checkpoint",
                path.display()
            ))
        }
    }
    if out.is_empty() {
        return Err(format!("`{}` holds no tensors", path.display()));
    }
    Ok(out
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect())
}

/// The tensors of one tower of an official checkpoint, keyed by pexc parameter path:
/// the vision tower is the `visual.`-prefixed keys of a full CLIP file or every key of a
/// vision-only file; the text tower the unprefixed keys of a CLIP file.
pub fn from_official(tensors: &HashMap<String, Stored>, tower: Tower) -> HashMap<String, Stored> {
    let clip = tensors.keys().any(|k| k.starts_with("visual."));
    tensors
        .iter()
        .filter_map(|(k, v)| {
            let key = match (tower, clip) {
                (Tower::Vision, true) => k.strip_prefix("visual.")?,
                (Tower::Vision, false) => k.as_str(),
                (Tower::Text, _) if k.starts_with("visual.") || k == "logit_scale" => return None,
                (Tower::Text, _) => k.as_str(),
            };
            let v = if is_linear_weight(key) && v.shape.len() == 2 {
                transposed(v)
            } else {
                v.clone()
            };
            Some((key.to_string(), v))
        })
        .collect()
}

/// pexc parameters of a tower in official keys and orientations (`prefix` is `visual.`
/// for the vision tower of a full CLIP file, empty otherwise).
pub fn to_official(tensors: &[(String, Stored)], prefix: &str) -> Vec<(String, Stored)> {
    tensors
        .iter()
        .map(|(k, v)| {
            let v = if is_linear_weight(k) && v.shape.len() == 2 {
                transposed(v)
            } else {
                v.clone()
            };
            (format!("{prefix}{k}"), v)
        })
        .collect()
}

/// Keys of `tensors` that the module does not have: an official file with extra keys for
/// this configuration (a pool the config lacks, more blocks) is a mismatch, not ignored.
fn unexpected<B: Backend, M: Module<B>>(
    module: &M,
    tensors: &HashMap<String, Stored>,
) -> Vec<String> {
    let have: std::collections::HashSet<String> = checkpoint::collect(module, "")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut extra: Vec<String> = tensors
        .keys()
        .filter(|k| !have.contains(*k))
        .cloned()
        .collect();
    extra.sort();
    extra
}

fn assign_exact<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, Stored>,
    path: &Path,
) -> Result<M, String> {
    let extra = unexpected(&module, tensors);
    let module = checkpoint::assign(module, tensors, "")
        .map_err(|e| format!("`{}` does not fit the declared model: {e}", path.display()))?;
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "`{}` does not fit the declared model: unexpected keys {}{}",
            path.display(),
            shown.join(", "),
            if extra.len() > 5 { ", ..." } else { "" }
        ));
    }
    Ok(module)
}

/// A vision tower built from `config` with the weights of an official checkpoint.
pub fn load_vision<B: Backend>(
    config: &VitConfig,
    path: &Path,
    device: &B::Device,
) -> Result<VisionTransformer<B>, String> {
    let tensors = from_official(&read_tensors(path)?, Tower::Vision);
    assign_exact(VisionTransformer::new(config, device), &tensors, path)
}

/// A text tower built from `config` with the weights of an official CLIP checkpoint.
pub fn load_text<B: Backend>(
    config: &TextConfig,
    path: &Path,
    device: &B::Device,
) -> Result<TextTransformer<B>, String> {
    let tensors = from_official(&read_tensors(path)?, Tower::Text);
    assign_exact(TextTransformer::new(config, device), &tensors, path)
}

/// Every key of a `.pt` or `.safetensors` checkpoint with its shape, read without the
/// tensor data: the safetensors header alone, or the `.pt` pickle (its tensors are
/// loaded lazily and never touched here). A `module.` prefix is removed.
pub fn read_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>, String> {
    use std::io::Read;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut out: Vec<(String, Vec<usize>)> = match ext {
        "safetensors" => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
            let mut len = [0u8; 8];
            f.read_exact(&mut len)
                .map_err(|_| format!("`{}` is too short for a safetensors file", path.display()))?;
            let n = u64::from_le_bytes(len);
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            if n > 100_000_000 || n + 8 > size {
                return Err(format!(
                    "`{}` is not a valid safetensors file (header of {n} bytes)",
                    path.display()
                ));
            }
            let mut header = vec![0u8; n as usize];
            f.read_exact(&mut header)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
                format!("`{}` is not a valid safetensors file: {e}", path.display())
            })?;
            let obj = json.as_object().ok_or_else(|| {
                format!(
                    "`{}`: the safetensors header is not an object",
                    path.display()
                )
            })?;
            obj.iter()
                .filter(|(k, _)| k.as_str() != "__metadata__")
                .map(|(k, v)| {
                    let shape = v["shape"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|d| d.as_u64()).map(|d| d as usize))
                        .ok_or_else(|| format!("`{}`: tensor `{k}` has no shape", path.display()))?
                        .collect();
                    Ok((k.clone(), shape))
                })
                .collect::<Result<_, String>>()?
        }
        "pt" | "pth" | "bin" => {
            let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| {
                format!(
                    "cannot read `{}` as a PyTorch checkpoint: {e}",
                    path.display()
                )
            })?;
            reader
                .tensors()
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.to_vec()))
                .collect()
        }
        _ => {
            return Err(format!(
                "`{}`: expected a `.pt` or `.safetensors` checkpoint",
                path.display()
            ))
        }
    };
    for (k, _) in &mut out {
        if let Some(rest) = k.strip_prefix("module.") {
            *k = rest.to_string();
        }
    }
    out.sort();
    Ok(out)
}

fn block_shapes(
    prefix: &str,
    width: usize,
    mlp: usize,
    layer_scale: bool,
) -> Vec<(String, Vec<usize>)> {
    let w = width;
    let mut v = vec![
        ("ln_1.weight", vec![w]),
        ("ln_1.bias", vec![w]),
        ("attn.in_proj_weight", vec![3 * w, w]),
        ("attn.in_proj_bias", vec![3 * w]),
        ("attn.out_proj.weight", vec![w, w]),
        ("attn.out_proj.bias", vec![w]),
        ("ln_2.weight", vec![w]),
        ("ln_2.bias", vec![w]),
        ("mlp.c_fc.weight", vec![mlp, w]),
        ("mlp.c_fc.bias", vec![mlp]),
        ("mlp.c_proj.weight", vec![w, mlp]),
        ("mlp.c_proj.bias", vec![w]),
    ];
    if layer_scale {
        v.push(("ls_1.gamma", vec![w]));
        v.push(("ls_2.gamma", vec![w]));
    }
    v.into_iter()
        .map(|(k, s)| (format!("{prefix}{k}"), s))
        .collect()
}

/// The official keys and shapes of a vision tower of this configuration (no `visual.`
/// prefix), computed without building it: what `weights:` is checked against.
pub fn vision_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let w = c.width;
    let g = c.pos_grid();
    let mut v: Vec<(String, Vec<usize>)> =
        vec![("conv1.weight".into(), vec![w, 3, c.patch, c.patch])];
    if c.cls {
        v.push(("class_embedding".into(), vec![w]));
    }
    if c.abs {
        v.push((
            "positional_embedding".into(),
            vec![usize::from(c.cls) + g * g, w],
        ));
    }
    v.push(("ln_pre.weight".into(), vec![w]));
    v.push(("ln_pre.bias".into(), vec![w]));
    for i in 0..c.depth {
        v.extend(block_shapes(
            &format!("transformer.resblocks.{i}."),
            w,
            c.mlp,
            c.layer_scale.is_some(),
        ));
    }
    if c.ln_post {
        v.push(("ln_post.weight".into(), vec![w]));
        v.push(("ln_post.bias".into(), vec![w]));
    }
    if let super::config::Pool::Attention { .. } = c.pool {
        // The probe, an attention, one LayerNorm (`layernorm`) and an MLP of 4 x width.
        for (k, s) in [
            ("probe", vec![1, 1, w]),
            ("attn.in_proj_weight", vec![3 * w, w]),
            ("attn.in_proj_bias", vec![3 * w]),
            ("attn.out_proj.weight", vec![w, w]),
            ("attn.out_proj.bias", vec![w]),
            ("layernorm.weight", vec![w]),
            ("layernorm.bias", vec![w]),
            ("mlp.c_fc.weight", vec![4 * w, w]),
            ("mlp.c_fc.bias", vec![4 * w]),
            ("mlp.c_proj.weight", vec![w, 4 * w]),
            ("mlp.c_proj.bias", vec![w]),
        ] {
            v.push((format!("attn_pool.{k}"), s));
        }
    }
    if let (Some(out), true) = (c.out, c.pool != super::config::Pool::None) {
        v.push(("proj".into(), vec![w, out]));
    }
    v.sort();
    v
}

/// The official keys and shapes of a CLIP text tower of this configuration.
pub fn text_shapes(c: &TextConfig) -> Vec<(String, Vec<usize>)> {
    let w = c.width;
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("token_embedding.weight".into(), vec![c.vocab, w]),
        ("positional_embedding".into(), vec![c.context, w]),
        ("ln_final.weight".into(), vec![w]),
        ("ln_final.bias".into(), vec![w]),
        ("text_projection".into(), vec![w, c.out]),
    ];
    for i in 0..c.depth {
        v.extend(block_shapes(
            &format!("transformer.resblocks.{i}."),
            w,
            c.mlp,
            false,
        ));
    }
    v.sort();
    v
}

/// The keys of one tower in a checkpoint's key list (see `from_official`).
pub fn tower_shapes(all: &[(String, Vec<usize>)], tower: Tower) -> Vec<(String, Vec<usize>)> {
    let clip = all.iter().any(|(k, _)| k.starts_with("visual."));
    let mut v: Vec<(String, Vec<usize>)> = all
        .iter()
        .filter_map(|(k, s)| {
            let key = match (tower, clip) {
                (Tower::Vision, true) => k.strip_prefix("visual.")?,
                (Tower::Vision, false) => k.as_str(),
                (Tower::Text, _) if k.starts_with("visual.") || k == "logit_scale" => return None,
                (Tower::Text, _) => k.as_str(),
            };
            Some((key.to_string(), s.clone()))
        })
        .collect();
    v.sort();
    v
}

/// How a checkpoint differs from a declared configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mismatch {
    /// Up to a few keys, one line each: "key: expected (..), found (..)" / "missing" / "unexpected".
    pub lines: Vec<String>,
    /// Every differing key (for the count).
    pub count: usize,
    /// The likely cause, in words.
    pub cause: String,
}

fn shape_str(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(usize::to_string).collect();
    format!("({})", inner.join(", "))
}

/// Compares a checkpoint's keys and shapes (one tower, official keys) with a declared
/// tower's; `None` when they fit exactly.
pub fn compare_shapes(
    expected: &[(String, Vec<usize>)],
    found: &[(String, Vec<usize>)],
    tower: Tower,
) -> Option<Mismatch> {
    let exp: HashMap<&str, &Vec<usize>> = expected.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let got: HashMap<&str, &Vec<usize>> = found.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let mut diffs: Vec<(String, String)> = Vec::new();
    for (k, s) in expected {
        match got.get(k.as_str()) {
            None => diffs.push((
                k.clone(),
                format!("{k}: expected {}, missing", shape_str(s)),
            )),
            Some(f) if *f != s => diffs.push((
                k.clone(),
                format!("{k}: expected {}, found {}", shape_str(s), shape_str(f)),
            )),
            _ => {}
        }
    }
    for (k, s) in found {
        if !exp.contains_key(k.as_str()) {
            diffs.push((
                k.clone(),
                format!("{k}: unexpected, found {}", shape_str(s)),
            ));
        }
    }
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by_key(|d| natural_key(&d.0));
    Some(Mismatch {
        count: diffs.len(),
        lines: diffs.iter().take(4).map(|(_, l)| l.clone()).collect(),
        cause: likely_cause(expected, found, tower),
    })
}

/// Sorts `resblocks.10` after `resblocks.9`.
fn natural_key(k: &str) -> Vec<(String, u64)> {
    k.split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (String::new(), n),
            Err(_) => (p.to_string(), 0),
        })
        .collect()
}

fn blocks(shapes: &[(String, Vec<usize>)]) -> usize {
    shapes
        .iter()
        .filter_map(|(k, _)| {
            k.strip_prefix("transformer.resblocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn likely_cause(
    expected: &[(String, Vec<usize>)],
    found: &[(String, Vec<usize>)],
    tower: Tower,
) -> String {
    let get = |v: &[(String, Vec<usize>)], k: &str| {
        v.iter().find(|(n, _)| n == k).map(|(_, s)| s.clone())
    };
    if found.is_empty() {
        return match tower {
            Tower::Vision => "the file holds no vision-tower keys".into(),
            Tower::Text => "the file holds no text-tower keys: is it a vision-only checkpoint (PE-Spatial, PE-Lang)?".into(),
        };
    }
    let (ew, fw) = match tower {
        Tower::Vision => (get(expected, "conv1.weight"), get(found, "conv1.weight")),
        Tower::Text => (
            get(expected, "token_embedding.weight").map(|s| s[1..].to_vec()),
            get(found, "token_embedding.weight").map(|s| s[1..].to_vec()),
        ),
    };
    if let (Some(e), Some(f)) = (&ew, &fw) {
        if e.first() != f.first() {
            return format!(
                "wrong preset: the checkpoint's width is {}, the model's {}",
                f.first().copied().unwrap_or(0),
                e.first().copied().unwrap_or(0)
            );
        }
        if tower == Tower::Vision && e.get(2) != f.get(2) {
            return format!(
                "wrong preset: the checkpoint's patch size is {}, the model's {}",
                f.get(2).copied().unwrap_or(0),
                e.get(2).copied().unwrap_or(0)
            );
        }
    }
    let (eb, fb) = (blocks(expected), blocks(found));
    if eb != fb {
        return if fb > eb {
            format!("truncated depth: the checkpoint has {fb} blocks, the model {eb}; a truncated tower (PE-lang drops the last blocks) needs a checkpoint of that depth, or set `depth: {fb}`")
        } else {
            format!("the checkpoint has {fb} blocks, the model {eb}: set `depth: {fb}` or use the preset the checkpoint was saved from")
        };
    }
    if tower == Tower::Vision {
        let (ec, fc) = (
            get(expected, "class_embedding").is_some(),
            get(found, "class_embedding").is_some(),
        );
        if ec != fc {
            return format!(
                "CLS or not: the checkpoint has {} class token; set `cls: {fc}`",
                if fc { "a" } else { "no" }
            );
        }
        if let (Some(e), Some(f)) = (
            get(expected, "positional_embedding"),
            get(found, "positional_embedding"),
        ) {
            if e != f {
                let cls = usize::from(fc);
                let g = ((f[0].saturating_sub(cls)) as f64).sqrt() as usize;
                let patch = fw.as_ref().and_then(|s| s.get(2).copied()).unwrap_or(1);
                return format!(
                    "the position table is for a {g}x{g} grid: set `image: {}`",
                    g * patch
                );
            }
        }
        let has = |v: &[(String, Vec<usize>)], p: &str| v.iter().any(|(k, _)| k.starts_with(p));
        if has(expected, "attn_pool.") != has(found, "attn_pool.") {
            return format!(
                "pooling: the checkpoint {} an attention pool; set `pool: {}`",
                if has(found, "attn_pool.") {
                    "has"
                } else {
                    "has no"
                },
                if has(found, "attn_pool.") {
                    "attention(heads: 8)"
                } else {
                    "none"
                }
            );
        }
        if has(expected, "ln_post.") != has(found, "ln_post.") {
            return format!("set `ln_post: {}`", has(found, "ln_post."));
        }
        if has(expected, "transformer.resblocks.0.ls_1")
            != has(found, "transformer.resblocks.0.ls_1")
        {
            return if has(found, "transformer.resblocks.0.ls_1") {
                "the checkpoint has layer scale: set `layer_scale: 0.1`".into()
            } else {
                "the checkpoint has no layer scale: remove `layer_scale`".into()
            };
        }
        if let (Some(e), Some(f)) = (get(expected, "proj"), get(found, "proj")) {
            if e != f {
                return format!("the checkpoint projects to {}: set `out: {}`", f[1], f[1]);
            }
        }
        if get(expected, "proj").is_some() != get(found, "proj").is_some() {
            return "projection: the checkpoint and the model differ in `out`".into();
        }
    } else {
        for (key, field) in [
            ("positional_embedding", "context"),
            ("token_embedding.weight", "vocab"),
        ] {
            if let (Some(e), Some(f)) = (get(expected, key), get(found, key)) {
                if e[0] != f[0] {
                    return format!("set `{field}: {}` (the checkpoint's)", f[0]);
                }
            }
        }
        if let (Some(e), Some(f)) = (
            get(expected, "text_projection"),
            get(found, "text_projection"),
        ) {
            if e != f {
                return format!("set `out: {}` (the checkpoint's)", f[1]);
            }
        }
    }
    let mlp = |v: &[(String, Vec<usize>)]| {
        get(v, "transformer.resblocks.0.mlp.c_fc.weight").map(|s| s[0])
    };
    if let (Some(e), Some(f)) = (mlp(expected), mlp(found)) {
        if e != f {
            return format!("set `mlp: {f}` (the checkpoint's MLP width)");
        }
    }
    "the checkpoint was saved from a different configuration: compare it with the preset it came from".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::config::Pool;

    fn official_of<B: Backend, M: Module<B>>(m: &M) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<(String, Vec<usize>)> = to_official(&checkpoint::collect(m, ""), "")
            .into_iter()
            .map(|(k, s)| (k, s.shape))
            .collect();
        v.sort();
        v
    }

    fn vit(cls: bool, pool: Pool, out: Option<usize>, ln_post: bool, ls: Option<f64>) -> VitConfig {
        VitConfig {
            patch: 4,
            width: 16,
            depth: 2,
            heads: 2,
            mlp: 24,
            rope2d: true,
            abs: true,
            cls,
            pool,
            out,
            image: 12,
            ln_post,
            layer_scale: ls,
            drop_path: 0.0,
        }
    }

    #[test]
    fn computed_shapes_are_exactly_the_modules_parameters() {
        let device = Default::default();
        for c in [
            vit(true, Pool::Attention { heads: 2 }, Some(8), true, None),
            vit(false, Pool::None, None, false, Some(0.1)),
            vit(true, Pool::Cls, Some(8), true, None),
            vit(false, Pool::Mean, None, true, Some(0.1)),
            VitConfig {
                abs: false,
                ..vit(true, Pool::None, Some(8), true, None)
            },
        ] {
            let m = VisionTransformer::<Cpu>::new(&c, &device);
            assert_eq!(vision_shapes(&c), official_of(&m), "{c:?}");
        }
        let t = TextConfig {
            context: 6,
            width: 16,
            depth: 2,
            heads: 2,
            mlp: 40,
            vocab: 30,
            out: 8,
        };
        let m = TextTransformer::<Cpu>::new(&t, &device);
        assert_eq!(text_shapes(&t), official_of(&m));
    }

    #[test]
    fn a_mismatch_names_the_keys_and_the_likely_cause() {
        let declared = vision_shapes(&vit(
            true,
            Pool::Attention { heads: 2 },
            Some(8),
            true,
            None,
        ));
        // A checkpoint without CLS (as PE-Core G and the spatial towers are).
        let no_cls = vision_shapes(&vit(
            false,
            Pool::Attention { heads: 2 },
            Some(8),
            true,
            None,
        ));
        let m = compare_shapes(&declared, &no_cls, Tower::Vision).expect("differs");
        assert!(m.cause.starts_with("CLS or not"), "{}", m.cause);
        assert!(
            m.lines
                .iter()
                .any(|l| l.starts_with("class_embedding: expected (16), missing")),
            "{:?}",
            m.lines
        );
        assert!(
            m.lines
                .iter()
                .any(|l| l == "positional_embedding: expected (10, 16), found (9, 16)"),
            "{:?}",
            m.lines
        );
        // One block more in the file: truncated depth.
        let deeper = vision_shapes(&VitConfig {
            depth: 3,
            ..vit(true, Pool::Attention { heads: 2 }, Some(8), true, None)
        });
        let m = compare_shapes(&declared, &deeper, Tower::Vision).expect("differs");
        assert!(
            m.cause
                .starts_with("truncated depth: the checkpoint has 3 blocks, the model 2"),
            "{}",
            m.cause
        );
        assert_eq!(m.count, 12);
        // Another width: wrong preset.
        let wide = vision_shapes(&VitConfig {
            width: 32,
            ..vit(true, Pool::Attention { heads: 2 }, Some(8), true, None)
        });
        let m = compare_shapes(&declared, &wide, Tower::Vision).expect("differs");
        assert!(
            m.cause
                .starts_with("wrong preset: the checkpoint's width is 32"),
            "{}",
            m.cause
        );
        assert!(compare_shapes(&declared, &declared, Tower::Vision).is_none());
    }

    #[test]
    fn the_fixture_checkpoints_fit_their_configurations_without_loading_data() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pe_reference");
        let core = vit(true, Pool::Attention { heads: 8 }, Some(32), true, None);
        let core = VitConfig {
            patch: 8,
            width: 64,
            depth: 3,
            mlp: 256,
            image: 32,
            ..core
        };
        let text = TextConfig {
            context: 8,
            width: 48,
            depth: 2,
            heads: 2,
            mlp: 192,
            vocab: 64,
            out: 32,
        };
        for file in ["core_tiny.pt", "core_tiny.safetensors"] {
            let all = read_shapes(&dir.join(file)).expect("readable");
            assert!(
                compare_shapes(
                    &vision_shapes(&core),
                    &tower_shapes(&all, Tower::Vision),
                    Tower::Vision
                )
                .is_none(),
                "{file}"
            );
            assert!(
                compare_shapes(
                    &text_shapes(&text),
                    &tower_shapes(&all, Tower::Text),
                    Tower::Text
                )
                .is_none(),
                "{file}"
            );
        }
        let spatial = VitConfig {
            cls: false,
            pool: Pool::None,
            out: None,
            ln_post: false,
            layer_scale: Some(0.1),
            ..core
        };
        for file in ["spatial_tiny.pt", "spatial_tiny.safetensors"] {
            let all = read_shapes(&dir.join(file)).expect("readable");
            assert!(
                compare_shapes(
                    &vision_shapes(&spatial),
                    &tower_shapes(&all, Tower::Vision),
                    Tower::Vision
                )
                .is_none(),
                "{file}"
            );
        }
    }
}

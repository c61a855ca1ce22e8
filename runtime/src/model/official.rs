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
                let data =
                    TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
                out.insert(name.clone(), stored(&name, data, path)?);
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

//! Checkpoints: every float parameter of a module by its path (`vision.blocks.0.mlp...`),
//! optimizer moments as `optim.m.<path>` / `optim.v.<path>`, and a JSON state (stage,
//! phase, step, seed...) in the safetensors metadata. Flat safetensors, written
//! atomically; loading never executes anything.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::optim::Moments;
use crate::rundir::write_atomic;

/// One f32 tensor, by value.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Stored {
    pub fn from_data(data: TensorData) -> Self {
        let shape = data.shape.to_vec();
        let values = data.convert::<f32>().to_vec::<f32>().unwrap_or_default();
        Stored { shape, values }
    }

    pub fn to_tensor<B: Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }
}

struct StoredView<'a>(&'a Stored, Vec<u8>);

impl View for StoredView<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.1)
    }
    fn data_len(&self) -> usize {
        self.1.len()
    }
}

/// Every float parameter of `module`, by path, prefixed with `prefix.`.
pub fn collect<B: Backend, M: Module<B>>(module: &M, prefix: &str) -> Vec<(String, Stored)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Stored)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _c: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push((
                self.path.join("."),
                Stored::from_data(param.val().into_data()),
            ));
        }
    }
    let mut c = Collect {
        path: if prefix.is_empty() {
            Vec::new()
        } else {
            vec![prefix.to_string()]
        },
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Replaces every float parameter of `module` with the tensor of its path in `tensors`;
/// a missing path or a shape that differs is an error naming it.
pub fn assign<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, Stored>,
    prefix: &str,
) -> Result<M, String> {
    assign_allowing(module, tensors, prefix, |_| false)
}

/// `assign`, except that parameters whose path satisfies `fresh` may be missing from
/// `tensors` and keep their initial value (parameters a regulariser adds).
pub fn assign_allowing<B: Backend, M: Module<B>>(
    module: M,
    tensors: &HashMap<String, Stored>,
    prefix: &str,
    fresh: impl Fn(&str) -> bool,
) -> Result<M, String> {
    struct Assign<'a, F: Fn(&str) -> bool> {
        path: Vec<String>,
        tensors: &'a HashMap<String, Stored>,
        errors: Vec<String>,
        fresh: F,
    }
    impl<B: Backend, F: Fn(&str) -> bool> ModuleMapper<B> for Assign<'_, F> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _c: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let key = self.path.join(".");
            let want = tensor.dims().to_vec();
            let tensor = match self.tensors.get(&key) {
                Some(s) if s.shape == want => {
                    let t: Tensor<B, D> = s.to_tensor(&tensor.device());
                    if tensor.is_require_grad() {
                        t.require_grad()
                    } else {
                        t
                    }
                }
                Some(s) => {
                    self.errors.push(format!(
                        "`{key}` has shape {:?}, expected {want:?}",
                        s.shape
                    ));
                    tensor
                }
                None if (self.fresh)(&key) => tensor,
                None => {
                    self.errors.push(format!("`{key}` is missing"));
                    tensor
                }
            };
            Param::from_mapped_value(id, tensor, mapper)
        }
    }
    let mut a = Assign {
        path: if prefix.is_empty() {
            Vec::new()
        } else {
            vec![prefix.to_string()]
        },
        tensors,
        errors: Vec::new(),
        fresh,
    };
    let module = module.map(&mut a);
    if a.errors.is_empty() {
        Ok(module)
    } else {
        let n = a.errors.len();
        let mut first: Vec<String> = a.errors.into_iter().take(5).collect();
        if n > 5 {
            first.push(format!("and {} more", n - 5));
        }
        Err(first.join("; "))
    }
}

/// Whether a tower's stored tensors hold LayerScale factors (a tower trained with a
/// `layer_scale` regulariser has them though its declaration has none): a tower built to
/// load them must have LayerScale too.
pub fn has_layer_scale(tensors: &HashMap<String, Stored>) -> bool {
    tensors.keys().any(|k| k.contains(".ls_1."))
}

/// Prepares the stored tensors of a tower trained without LayerScale for a tower with
/// LayerScale factors starting at `init` (a `layer_scale` regulariser on a pretrained
/// tower): each block's branch output projections (`attn.out_proj`, `mlp.c_proj`) are
/// divided by `init`, so that `init * W' x = W x` and the tower computes what it computed
/// before; the factors then learn from there. Without this, inserting a factor of 0.1 on
/// every branch would shrink every block's contribution tenfold and undo pretraining.
pub fn insert_layer_scale(tensors: &mut HashMap<String, Stored>, init: f64) {
    if init <= 0.0 || has_layer_scale(tensors) {
        return;
    }
    let k = (1.0 / init) as f32;
    for (key, t) in tensors.iter_mut() {
        let branch_out = key.starts_with("transformer.resblocks.")
            && (key.contains(".attn.out_proj.") || key.contains(".mlp.c_proj."));
        if branch_out {
            for v in &mut t.values {
                *v *= k;
            }
        }
    }
}

/// Optimizer moments as stored tensors.
pub fn collect_moments<B: Backend>(state: &HashMap<String, Moments<B>>) -> Vec<(String, Stored)> {
    let mut keys: Vec<&String> = state.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let m = &state[k];
        out.push((
            format!("optim.m.{k}"),
            Stored::from_data(m.m.clone().into_data()),
        ));
        out.push((
            format!("optim.v.{k}"),
            Stored::from_data(m.v.clone().into_data()),
        ));
        out.push((
            format!("optim.t.{k}"),
            Stored {
                shape: vec![1],
                values: vec![m.steps as f32],
            },
        ));
    }
    out
}

/// Optimizer moments back from stored tensors.
pub fn restore_moments<B: Backend>(
    tensors: &HashMap<String, Stored>,
    device: &B::Device,
) -> HashMap<String, Moments<B>> {
    let mut out = HashMap::new();
    for (k, m) in tensors {
        let Some(path) = k.strip_prefix("optim.m.") else {
            continue;
        };
        let (Some(v), Some(t)) = (
            tensors.get(&format!("optim.v.{path}")),
            tensors.get(&format!("optim.t.{path}")),
        ) else {
            continue;
        };
        out.insert(
            path.to_string(),
            Moments {
                m: m.to_tensor(device),
                v: v.to_tensor(device),
                steps: t.values.first().map_or(0, |x| *x as u64),
            },
        );
    }
    out
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Stored)],
    meta: &serde_json::Value,
) -> Result<(), String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| s.values.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(bytes)
        .map(|((name, s), b)| (name.clone(), StoredView(s, b)));
    let mut info = HashMap::new();
    info.insert("pexc".to_string(), meta.to_string());
    let buffer = safetensors::serialize(views, Some(info))
        .map_err(|e| format!("cannot encode `{}`: {e}", path.display()))?;
    write_atomic(path, &buffer).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// Reads a checkpoint: its tensors and its JSON state.
pub fn load(path: &Path) -> Result<(HashMap<String, Stored>, serde_json::Value), String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a valid safetensors file: {e}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("`{}` is not a valid safetensors file: {e}", path.display()))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("pexc"))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "`{}`: tensor `{name}` is {:?}, expected f32",
                path.display(),
                view.dtype()
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            Stored {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok((out, meta))
}

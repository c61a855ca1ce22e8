//! Gradient check: the autodiff gradient of the CLIP loss of a tiny PE model (RoPE 2D,
//! interpolated absolute positions, CLS, attention pool, causal text tower, learnable
//! logit scale) against central finite differences of the same loss, entry by entry.

use std::collections::HashMap;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use pexc_runtime::backend::Cpu;
use pexc_runtime::checkpoint::{assign, collect};
use pexc_runtime::loss;
use pexc_runtime::model::{Pool, TextConfig, TextTransformer, VisionTransformer, VitConfig};
use pexc_runtime::train::clip::ClipModel;

type I = Cpu;
type A = Autodiff<Cpu>;

fn model<B: burn::tensor::backend::Backend>(device: &B::Device) -> ClipModel<B> {
    let v = VitConfig {
        patch: 4,
        width: 16,
        depth: 2,
        heads: 2,
        mlp: 32,
        rope2d: true,
        abs: true,
        cls: true,
        pool: Pool::Attention { heads: 2 },
        out: Some(8),
        image: 8,
        ln_post: true,
        layer_scale: Some(0.5),
        drop_path: 0.0,
    };
    let t = TextConfig {
        context: 6,
        width: 16,
        depth: 1,
        heads: 2,
        mlp: 32,
        vocab: 20,
        out: 8,
    };
    B::seed(device, 42);
    ClipModel {
        vision: VisionTransformer::new(&v, device),
        text: Some(TextTransformer::new(&t, device)),
        proj: None,
        decoder: None,
        logit_scale: Param::from_tensor(Tensor::from_floats([1.0f32], device)),
        logit_bias: Param::from_tensor(Tensor::from_floats([0.0f32], device)),
    }
}

/// Images at 12 px (a 3x3 grid against the 2x2 table: the interpolation is exercised).
fn inputs<B: burn::tensor::backend::Backend>(
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 2, Int>) {
    let n = 3;
    let px: Vec<f32> = (0..n * 3 * 12 * 12)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let ids: Vec<i64> = vec![18, 3, 5, 19, 0, 0, 18, 7, 2, 9, 19, 0, 18, 11, 19, 0, 0, 0];
    (
        Tensor::from_data(TensorData::new(px, [n, 3, 12, 12]), device),
        Tensor::from_data(TensorData::new(ids, [n, 6]), device),
    )
}

fn clip_loss<B: burn::tensor::backend::Backend>(
    m: &ClipModel<B>,
    img: Tensor<B, 4>,
    ids: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let i = m.vision.encode(img).expect("pooled");
    let t = m.text.as_ref().expect("text tower").forward(ids);
    loss::clip(i, t, m.logit_scale.val(), 100.0)
}

/// Parameter ids by path.
fn ids_by_path<B: burn::tensor::backend::Backend, M: Module<B>>(m: &M) -> HashMap<String, ParamId> {
    struct V(Vec<String>, HashMap<String, ParamId>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.1.insert(self.0.join("."), p.id);
        }
    }
    let mut v = V(Vec::new(), HashMap::new());
    m.visit(&mut v);
    v.1
}

fn grad_values<const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Vec<f32>> {
    g.get::<I, D>(id)
        .map(|t| t.into_data().to_vec::<f32>().unwrap())
}

#[test]
fn autodiff_gradients_match_finite_differences() {
    let device = Default::default();
    let m: ClipModel<A> = model(&device);
    let (img, ids) = inputs::<A>(&device);
    let l = clip_loss(&m, img, ids);
    let grads = GradientsParams::from_grads(l.backward(), &m);
    let by_path = ids_by_path(&m);

    let inner: ClipModel<I> = m.valid();
    let base = collect(&inner, "");
    let stored: HashMap<String, _> = base.iter().cloned().collect();
    let (img, ids) = inputs::<I>(&device);
    let eval = |tensors: &HashMap<String, pexc_runtime::checkpoint::Stored>| -> f64 {
        let m = assign(model::<I>(&device), tensors, "").expect("same shapes");
        f64::from(clip_loss(&m, img.clone(), ids.clone()).into_scalar())
    };

    let checked = [
        "vision.conv1.weight",
        "vision.class_embedding",
        "vision.positional_embedding",
        "vision.transformer.resblocks.0.attn.in_proj_weight",
        "vision.transformer.resblocks.1.ls_2.gamma",
        "vision.transformer.resblocks.1.mlp.c_fc.weight",
        "vision.attn_pool.probe",
        "vision.attn_pool.attn.in_proj_weight",
        "vision.proj",
        "text.token_embedding.weight",
        "text.positional_embedding",
        "text.transformer.resblocks.0.attn.out_proj.weight",
        "text.text_projection",
        "logit_scale",
    ];
    let eps = 2e-3f32;
    let mut worst = 0.0f64;
    for path in checked {
        let s = &stored[path];
        let id = by_path[path];
        let g = match s.shape.len() {
            1 => grad_values::<1>(&grads, id),
            2 => grad_values::<2>(&grads, id),
            3 => grad_values::<3>(&grads, id),
            4 => grad_values::<4>(&grads, id),
            _ => None,
        }
        .unwrap_or_else(|| panic!("no gradient for {path}"));
        // A few entries spread over the tensor, the largest-gradient one among them.
        let n = s.values.len();
        let mut entries: Vec<usize> = (0..5)
            .map(|k| k * n / 5 + (k * 7) % (n / 5).max(1))
            .collect();
        let big = (0..n)
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        entries.push(big);
        for i in entries {
            let mut plus = stored.clone();
            plus.get_mut(path).unwrap().values[i] += eps;
            let mut minus = stored.clone();
            minus.get_mut(path).unwrap().values[i] -= eps;
            let fd = (eval(&plus) - eval(&minus)) / (2.0 * f64::from(eps));
            let ad = f64::from(g[i]);
            let err = (fd - ad).abs() / (fd.abs().max(ad.abs()).max(1e-2));
            worst = worst.max(err);
            assert!(
                err < 2e-2,
                "{path}[{i}]: autodiff {ad:.6} vs finite difference {fd:.6}"
            );
        }
    }
    println!("worst relative error {worst:.2e}");
}

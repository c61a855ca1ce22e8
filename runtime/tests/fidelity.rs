//! Fidelity to the official PE code: the tiny models the official implementation saved
//! (tests/fixtures/pe_reference, a copy of shared/fixtures/pe_reference) are loaded from
//! their `.pt` and `.safetensors` files into pexc's modules, and every intermediate the
//! official code recorded is reproduced to < 1e-4 absolute.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use pexc_runtime::backend::Cpu;
use pexc_runtime::loss::normalize;
use pexc_runtime::model::official::{load_text, load_vision};
use pexc_runtime::model::rope2d::{angles, Rope};
use pexc_runtime::model::{Pool, TextConfig, VitConfig};
use safetensors::SafeTensors;

type B = Cpu;
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pe_reference")
}

/// A fixture io file: f32 tensors as (shape, values), i64 ones converted.
struct Io(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Io {
    fn open(name: &str) -> Io {
        let bytes = std::fs::read(fixtures().join(name)).expect("fixture file");
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let mut out = HashMap::new();
        for (k, v) in st.tensors() {
            let values: Vec<f32> = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                d => panic!("unexpected dtype {d:?}"),
            };
            out.insert(k.clone(), (v.shape().to_vec(), values));
        }
        Io(out)
    }

    fn get(&self, k: &str) -> &(Vec<usize>, Vec<f32>) {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("fixture tensor {k}"))
    }

    fn tensor<const D: usize>(&self, k: &str) -> Tensor<B, D> {
        let (shape, values) = self.get(k);
        Tensor::from_data(
            TensorData::new(values.clone(), shape.clone()),
            &Default::default(),
        )
    }

    fn ints(&self, k: &str) -> Tensor<B, 2, Int> {
        let (shape, values) = self.get(k);
        let ids: Vec<i64> = values.iter().map(|v| *v as i64).collect();
        Tensor::from_data(TensorData::new(ids, shape.clone()), &Default::default())
    }
}

/// Max abs error of `got` against the fixture tensor `k`, shapes checked.
fn err<const D: usize>(io: &Io, k: &str, got: Tensor<B, D>) -> f32 {
    let (shape, want) = io.get(k);
    assert_eq!(&got.dims().to_vec(), shape, "shape of {k}");
    let got = got.into_data().to_vec::<f32>().unwrap();
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check(errors: &[(String, f32)]) {
    for (k, e) in errors {
        println!("{k:<40} max abs error {e:.2e}");
    }
    let bad: Vec<_> = errors
        .iter()
        .filter(|(_, e)| e.is_nan() || *e >= TOL)
        .collect();
    assert!(bad.is_empty(), "tensors off by more than {TOL}: {bad:?}");
}

fn core_vision() -> VitConfig {
    VitConfig {
        patch: 8,
        width: 64,
        depth: 3,
        heads: 2,
        mlp: 256,
        rope2d: true,
        abs: true,
        cls: true,
        pool: Pool::Attention { heads: 8 },
        out: Some(32),
        image: 32,
        ln_post: true,
        layer_scale: None,
        drop_path: 0.0,
    }
}

fn spatial_vision() -> VitConfig {
    VitConfig {
        cls: false,
        pool: Pool::None,
        out: None,
        ln_post: false,
        layer_scale: Some(0.1),
        ..core_vision()
    }
}

fn core_text() -> TextConfig {
    TextConfig {
        context: 8,
        width: 48,
        depth: 2,
        heads: 2,
        mlp: 192,
        vocab: 64,
        out: 32,
    }
}

const KEYS: [&str; 3] = ["32", "48", "24x40"];

fn vision_errors(file: &str, io: &Io, config: &VitConfig, pooled: bool) -> Vec<(String, f32)> {
    let device = Default::default();
    let model = load_vision::<B>(config, &fixtures().join(file), &device).expect("loads");
    let mut errors = Vec::new();
    let mut e = |k: String, v: f32| errors.push((format!("{file}: {k}"), v));
    for key in KEYS {
        let image: Tensor<B, 4> = io.tensor(&format!("image_{key}"));
        let [_, _, h, w] = image.dims();
        e(
            format!("patch_embed_{key}"),
            err(
                io,
                &format!("patch_embed_{key}"),
                model.patch_embed(image.clone()),
            ),
        );
        let embed = model.embed(image.clone(), None);
        e(
            format!("embed_{key}"),
            err(io, &format!("embed_{key}"), embed.clone()),
        );
        let (rows, cols) = model.grid(h, w);
        let pos = pexc_runtime::model::posemb::resized(
            model.positional_embedding.as_ref().unwrap().val(),
            model.pos_grid,
            rows,
            cols,
            config.cls,
        );
        e(
            format!("posemb_{key}"),
            err(io, &format!("posemb_{key}"), pos),
        );
        e(
            format!("ln_pre_{key}"),
            err(io, &format!("ln_pre_{key}"), model.ln_pre.forward(embed)),
        );
        let table = angles(32, rows, cols, config.cls, 10000.0);
        let t = table.len() / 32;
        let freq: Tensor<B, 2> = Tensor::from_data(TensorData::new(table, [t, 32]), &device);
        e(
            format!("rope_freq_{key}"),
            err(io, &format!("rope_freq_{key}"), freq),
        );
        for (name, layer) in [
            ("layer0", Some(0)),
            ("layer1", Some(1)),
            ("layer2", Some(2)),
            ("layer_m1", Some(-1)),
        ] {
            let k = format!("forward_features_{key}_{name}");
            e(
                k.clone(),
                err(io, &k, model.forward_features(image.clone(), layer, false)),
            );
        }
        let k = format!("forward_features_{key}_norm");
        e(
            k.clone(),
            err(io, &k, model.forward_features(image.clone(), None, true)),
        );
        let out = model.forward_masked(image.clone(), None);
        if pooled {
            let pool = model.attn_pool.as_ref().unwrap();
            let [n, _, width] = out.tokens.dims();
            let mha = pool.attend(out.tokens.clone()).reshape([n, width]);
            e(
                format!("attn_pool_mha_{key}"),
                err(io, &format!("attn_pool_mha_{key}"), mha),
            );
            e(
                format!("attn_pool_{key}"),
                err(
                    io,
                    &format!("attn_pool_{key}"),
                    pool.forward(out.tokens.clone()),
                ),
            );
            let emb = out.pooled.unwrap();
            e(
                format!("forward_{key}"),
                err(io, &format!("forward_{key}"), emb.clone()),
            );
            e(
                format!("encode_image_{key}"),
                err(io, &format!("encode_image_{key}"), emb.clone()),
            );
            e(
                format!("encode_image_{key}_normalized"),
                err(
                    io,
                    &format!("encode_image_{key}_normalized"),
                    normalize(emb),
                ),
            );
        } else {
            assert!(out.pooled.is_none());
            e(
                format!("forward_{key}"),
                err(io, &format!("forward_{key}"), out.tokens),
            );
        }
    }
    errors
}

#[test]
fn core_tiny_vision_matches_the_official_outputs_from_pt_and_safetensors() {
    let io = Io::open("core_tiny_io.safetensors");
    let mut errors = vision_errors("core_tiny.pt", &io, &core_vision(), true);
    errors.extend(vision_errors(
        "core_tiny.safetensors",
        &io,
        &core_vision(),
        true,
    ));
    check(&errors);
}

#[test]
fn spatial_tiny_vision_matches_the_official_outputs_from_pt_and_safetensors() {
    let io = Io::open("spatial_tiny_io.safetensors");
    let mut errors = vision_errors("spatial_tiny.pt", &io, &spatial_vision(), false);
    errors.extend(vision_errors(
        "spatial_tiny.safetensors",
        &io,
        &spatial_vision(),
        false,
    ));
    check(&errors);
}

#[test]
fn core_tiny_text_matches_the_official_outputs() {
    let io = Io::open("core_tiny_io.safetensors");
    let device = Default::default();
    let mut errors = Vec::new();
    for file in ["core_tiny.pt", "core_tiny.safetensors"] {
        let text = load_text::<B>(&core_text(), &fixtures().join(file), &device).expect("loads");
        let ids = io.ints("text_tokens");
        errors.push((
            format!("{file}: text_ln_final"),
            err(&io, "text_ln_final", text.tokens(ids.clone())),
        ));
        errors.push((
            format!("{file}: text_pooled"),
            err(&io, "text_pooled", text.pooled(ids.clone())),
        ));
        let enc = text.forward(ids);
        errors.push((
            format!("{file}: encode_text"),
            err(&io, "encode_text", enc.clone()),
        ));
        errors.push((
            format!("{file}: encode_text_normalized"),
            err(&io, "encode_text_normalized", normalize(enc)),
        ));
    }
    check(&errors);
}

#[test]
fn rope2d_tables_and_rotation_match_the_official_helper() {
    let io = Io::open("rope2d_io.safetensors");
    let device = Default::default();
    let mut errors = Vec::new();
    for (tag, cls) in [("nocls", false), ("cls", true)] {
        let table = angles(8, 3, 4, cls, 10000.0);
        let t = table.len() / 8;
        let freq: Tensor<B, 2> = Tensor::from_data(TensorData::new(table, [t, 8]), &device);
        errors.push((
            format!("freq_{tag}"),
            err(&io, &format!("freq_{tag}"), freq),
        ));
        for qk in ["q", "k"] {
            let x: Tensor<B, 4> = io.tensor(&format!("{qk}_{tag}"));
            let rope = Rope::<B>::new(8, x.dims()[1], 3, 4, cls, &device);
            let k = format!("{qk}_{tag}_rotated");
            errors.push((k.clone(), err(&io, &k, rope.apply(x))));
        }
    }
    check(&errors);
}

#[test]
fn a_checkpoint_that_does_not_fit_the_config_names_the_keys() {
    let device = Default::default();
    // The spatial file has no CLS, pool or projection: loading it as the core config fails.
    let e = load_vision::<B>(&core_vision(), &fixtures().join("spatial_tiny.pt"), &device)
        .expect_err("mismatch");
    assert!(
        e.contains("class_embedding") || e.contains("positional_embedding"),
        "{e}"
    );
    // The core file has no layer scale: loading it as the spatial config names the extras.
    let e = load_vision::<B>(
        &spatial_vision(),
        &fixtures().join("core_tiny.safetensors"),
        &device,
    )
    .expect_err("mismatch");
    assert!(e.contains("ls_1.gamma") || e.contains("unexpected"), "{e}");
}

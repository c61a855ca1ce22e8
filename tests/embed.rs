//! `pexc embed`, `pexc export` and `weights:` validation, end to end through the binary,
//! against the official PE outputs in tests/fixtures/pe_reference (its README).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pexc_runtime::checkpoint::{self, Stored};
use pexc_runtime::model::official::{self, Tower};

fn pexc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pexc"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pe_reference")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pexc-embed-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The fixture CLIP's vision tower (README "Model configurations"), with `extra`
/// arguments and the given weights file.
fn core_pex(dir: &Path, weights: &str, depth: usize) -> PathBuf {
    let text = format!(
        "model clip = vit(patch: 8, width: 64, depth: {depth}, heads: 2, mlp: 256, pos: [rope2d, abs],\n\
         \x20                cls: true, pool: attention(heads: 8), out: 32, image: 32,\n\
         \x20                weights: \"{weights}\")\n\
         model spatial = vit(patch: 8, width: 64, depth: 3, heads: 2, mlp: 256, pos: [rope2d, abs],\n\
         \x20                   cls: false, pool: none, image: 32, ln_post: false, layer_scale: 0.1,\n\
         \x20                   weights: \"{}\")\n",
        fixtures().join("spatial_tiny.safetensors").display()
    );
    let p = dir.join("embed.pex");
    std::fs::write(&p, text).expect("write pex");
    p
}

/// The float tensors of a fixture's io file (its token ids are int64).
fn io(name: &str) -> HashMap<String, Stored> {
    let bytes = std::fs::read(fixtures().join(name)).expect("fixture io");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                k,
                Stored {
                    shape: v.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

fn write_pixels(path: &Path, s: &Stored) {
    checkpoint::save(
        path,
        &[("pixels".into(), s.clone())],
        &serde_json::Value::Null,
    )
    .expect("write pixels");
}

fn read_out(path: &Path, name: &str) -> Stored {
    let (t, _) = checkpoint::load(path).expect("embed output");
    t.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no `{name}` in the output"))
}

fn max_err(a: &Stored, b: &Stored) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.values
        .iter()
        .zip(&b.values)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn embed(
    pex: &Path,
    model: &str,
    input: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    pexc()
        .arg("embed")
        .arg(pex)
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--backend", "cpu"])
        .args(extra)
        .output()
        .expect("pexc runs")
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn embed_reproduces_the_official_encode_image_and_block_features() {
    let dir = fresh_dir("official");
    let io = io("core_tiny_io.safetensors");
    let sio = io_spatial();
    for weights in ["core_tiny.pt", "core_tiny.safetensors"] {
        let pex = core_pex(&dir, &fixtures().join(weights).display().to_string(), 3);
        for key in ["32", "24x40"] {
            let pixels = dir.join(format!("pixels_{key}.safetensors"));
            write_pixels(&pixels, &io[&format!("image_{key}")]);
            let out = dir.join("e.safetensors");
            ok(&embed(&pex, "clip", &pixels, &out, &[]));
            let e = max_err(
                &read_out(&out, "embeddings"),
                &io[&format!("encode_image_{key}")],
            );
            println!("{weights} {key}: encode_image max abs error {e:.2e}");
            assert!(e < 1e-4, "{weights} {key}: {e}");
            ok(&embed(&pex, "clip", &pixels, &out, &["--normalize"]));
            let e = max_err(
                &read_out(&out, "embeddings"),
                &io[&format!("encode_image_{key}_normalized")],
            );
            assert!(e < 1e-4, "{weights} {key} normalized: {e}");
            for k in 1..=3 {
                ok(&embed(
                    &pex,
                    "clip",
                    &pixels,
                    &out,
                    &["--layer", &k.to_string()],
                ));
                let want = &io[&format!("forward_features_{key}_layer{}", k - 1)];
                let e = max_err(&read_out(&out, "features"), want);
                println!("{weights} {key}: block {k} features max abs error {e:.2e}");
                assert!(e < 1e-4, "{weights} {key} layer {k}: {e}");
            }
            // The spatial tower (no CLS, layer scale, no pool): features only.
            let spixels = dir.join(format!("spixels_{key}.safetensors"));
            write_pixels(&spixels, &sio[&format!("image_{key}")]);
            ok(&embed(&pex, "spatial", &spixels, &out, &["--layer", "3"]));
            let e = max_err(
                &read_out(&out, "features"),
                &sio[&format!("forward_features_{key}_layer2")],
            );
            assert!(e < 1e-4, "spatial {key}: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn io_spatial() -> HashMap<String, Stored> {
    io("spatial_tiny_io.safetensors")
}

/// Writes `n` PNG images of 32 x 32 with distinct contents; returns their pixels
/// normalised as the model sees them, (n, 3, 32, 32).
fn write_pngs(dir: &Path, n: usize, seed: u32) -> Stored {
    std::fs::create_dir_all(dir).expect("dir");
    let mut values = Vec::new();
    for i in 0..n {
        let mut img = image::RgbImage::new(32, 32);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let v = |c: u32| ((x * 7 + y * 13 + c * 29 + (i as u32 + seed) * 41) % 256) as u8;
            *p = image::Rgb([v(0), v(1), v(2)]);
        }
        img.save(dir.join(format!("{i:03}.png"))).expect("png");
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    values.push((img.get_pixel(x, y).0[c] as f32 / 255.0 - 0.5) / 0.5);
                }
            }
        }
    }
    Stored {
        shape: vec![n, 3, 32, 32],
        values,
    }
}

#[test]
fn images_in_a_folder_and_video_clips_embed_as_their_pixels_do() {
    let dir = fresh_dir("folders");
    let pex = core_pex(
        &dir,
        &fixtures().join("core_tiny.pt").display().to_string(),
        3,
    );
    // Three images at the model's resolution: the folder gives what their pixels give.
    let pixels = write_pngs(&dir.join("images"), 3, 0);
    let px = dir.join("px.safetensors");
    write_pixels(&px, &pixels);
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    ok(&embed(
        &pex,
        "clip",
        &dir.join("images"),
        &a,
        &["--batch", "2"],
    ));
    ok(&embed(&pex, "clip", &px, &b, &[]));
    let (ea, eb) = (read_out(&a, "embeddings"), read_out(&b, "embeddings"));
    assert_eq!(ea.shape, vec![3, 32]);
    assert!(max_err(&ea, &eb) < 1e-5);

    // Two clips of 4 frames; 2 frames sampled uniformly (the middles of two halves:
    // frames 1 and 3), embeddings averaged, in clip order.
    let c0 = write_pngs(&dir.join("clips/c0"), 4, 10);
    let c1 = write_pngs(&dir.join("clips/c1"), 4, 20);
    let out = dir.join("v.safetensors");
    ok(&embed(
        &pex,
        "clip",
        &dir.join("clips"),
        &out,
        &["--video", "--frames", "2"],
    ));
    let v = read_out(&out, "embeddings");
    assert_eq!(v.shape, vec![2, 32]);
    for (clip, frames) in [(0, &c0), (1, &c1)] {
        let per = 3 * 32 * 32;
        let picked: Vec<f32> = [1usize, 3]
            .iter()
            .flat_map(|&f| frames.values[f * per..(f + 1) * per].to_vec())
            .collect();
        write_pixels(
            &px,
            &Stored {
                shape: vec![2, 3, 32, 32],
                values: picked,
            },
        );
        ok(&embed(&pex, "clip", &px, &b, &[]));
        let f = read_out(&b, "embeddings");
        let mean: Vec<f32> = (0..32)
            .map(|j| (f.values[j] + f.values[32 + j]) / 2.0)
            .collect();
        let got = &v.values[clip * 32..(clip + 1) * 32];
        let e = mean
            .iter()
            .zip(got)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(e < 1e-5, "clip {clip}: {e}");
    }
    // Block features of video keep the frames: (clips, frames, tokens, width).
    ok(&embed(
        &pex,
        "clip",
        &dir.join("clips"),
        &out,
        &["--video", "--frames", "3", "--layer", "2"],
    ));
    assert_eq!(read_out(&out, "features").shape, vec![2, 3, 17, 64]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embed_refuses_bad_requests_with_a_message() {
    let dir = fresh_dir("errors");
    let pex = core_pex(
        &dir,
        &fixtures().join("core_tiny.pt").display().to_string(),
        3,
    );
    let px = dir.join("px.safetensors");
    write_pixels(&px, &io("core_tiny_io.safetensors")["image_32"]);
    let out = dir.join("o.safetensors");
    let cases: [(&str, &[&str], i32, &str); 5] = [
        (
            "clip",
            &["--layer", "4"],
            1,
            "--layer 4: the model has blocks 1 to 3",
        ),
        (
            "spatial",
            &[],
            1,
            "has no embedding; ask for the features of a block with --layer K",
        ),
        (
            "nosuch",
            &[],
            2,
            "declares no model `nosuch` (models: clip, spatial)",
        ),
        ("clip", &["--layer", "0"], 2, "--layer"),
        ("clip", &["--resolution", "30"], 0, ""),
    ];
    for (model, extra, code, message) in cases {
        let o = embed(&pex, model, &px, &out, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{model} {extra:?}: {stderr}");
        assert!(stderr.contains(message), "{model} {extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A resolution that is not a whole number of patches, for image files.
    write_pngs(&dir.join("images"), 1, 0);
    let o = embed(
        &pex,
        "clip",
        &dir.join("images"),
        &out,
        &["--resolution", "30"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("try 24 or 32"));
    // Pixels smaller than one patch.
    let tiny = dir.join("tiny.safetensors");
    write_pixels(
        &tiny,
        &Stored {
            shape: vec![1, 3, 4, 4],
            values: vec![0.0; 48],
        },
    );
    let o = embed(&pex, "clip", &tiny, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("smaller than one patch of 8 x 8"));
    // A missing input.
    let o = embed(&pex, "clip", &dir.join("nothing"), &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file or folder"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_compares_weights_with_the_declared_model_without_loading_them() {
    let dir = fresh_dir("weights");
    let pt = fixtures().join("core_tiny.pt").display().to_string();
    // The right configuration: clean.
    let pex = core_pex(&dir, &pt, 3);
    let o = pexc().arg("check").arg(&pex).output().expect("runs");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One block too few, declared: the checkpoint has more (a truncated tower).
    let pex = core_pex(&dir, &pt, 2);
    let o = pexc()
        .args(["check", "--format", "json"])
        .arg(&pex)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let d = &json["diagnostics"][0];
    assert_eq!(d["code"], "pex::weights::mismatch");
    assert_eq!(d["line"], 3, "{d}");
    assert!(
        d["help"]
            .as_str()
            .unwrap_or("")
            .contains("truncated depth: the checkpoint has 3 blocks, the model 2"),
        "{d}"
    );
    assert!(
        d["labels"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("transformer.resblocks.2.attn.in_proj_bias: unexpected, found (192)"),
        "{d}"
    );
    // A checkpoint that is not one.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").expect("write");
    let pex = core_pex(&dir, &bad.display().to_string(), 3);
    let o = pexc()
        .args(["check", "--format", "json"])
        .arg(&pex)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(json["diagnostics"][0]["code"], "pex::weights::unreadable");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cls_mismatch_reads_well() {
    let dir = std::env::temp_dir().join(format!("pexc-embed-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // The spatial checkpoint (no CLS) declared as a CLS tower.
    std::fs::copy(
        fixtures().join("spatial_tiny.safetensors"),
        dir.join("spatial.safetensors"),
    )
    .expect("copy");
    let text = "// A spatial checkpoint declared with a class token.\n\
        model vision = vit(patch: 8, width: 64, depth: 3, heads: 2, mlp: 256, pos: [rope2d, abs],\n\
        \x20                  cls: true, pool: none, image: 32, ln_post: false, layer_scale: 0.1,\n\
        \x20                  weights: \"spatial.safetensors\")\n";
    std::fs::write(dir.join("cls.pex"), text).expect("write");
    let o = pexc()
        .current_dir(&dir)
        .args(["check", "cls.pex"])
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exports_are_in_the_official_layout_bit_for_bit() {
    use pexc_runtime::backend::Cpu;
    use pexc_runtime::model::{Pool, TextConfig, VitConfig};
    let device = Default::default();
    let vision = VitConfig {
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
        let path = fixtures().join(file);
        let original = official::read_tensors(&path).expect("fixture");
        let v = official::load_vision::<Cpu>(&vision, &path, &device).expect("vision");
        let t = official::load_text::<Cpu>(&text, &path, &device).expect("text");
        // A stage checkpoint as the runtime writes it, then the whole-CLIP export.
        let mut ckpt: HashMap<String, Stored> = HashMap::new();
        ckpt.extend(checkpoint::collect(&v, "vision"));
        ckpt.extend(checkpoint::collect(&t, "text"));
        let scale = &original["logit_scale"];
        ckpt.insert(
            "logit_scale".into(),
            Stored {
                shape: vec![1],
                values: scale.values.clone(),
            },
        );
        let exported = pexc_runtime::export::clip(&ckpt).expect("export");
        let out = std::env::temp_dir().join(format!(
            "pexc-export-{file}-{}.safetensors",
            std::process::id()
        ));
        pexc_runtime::export::write(&out, &exported, serde_json::json!({})).expect("write");
        let (back, _) = checkpoint::load(&out).expect("read back");
        assert_eq!(back.len(), original.len(), "{file}: same keys");
        for (k, want) in &original {
            let got = back
                .get(k)
                .unwrap_or_else(|| panic!("{file}: `{k}` not exported"));
            assert_eq!(got.shape, want.shape, "{file}: `{k}`");
            let same = got
                .values
                .iter()
                .zip(&want.values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{file}: `{k}` differs");
        }
        // A tower alone: the vision keys without the `visual.` prefix.
        let tower = pexc_runtime::export::tower(&checkpoint::collect(&v, ""));
        for (k, got) in &tower {
            let want = &original[&format!("visual.{k}")];
            assert!(
                got.values
                    .iter()
                    .zip(&want.values)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "`{k}`"
            );
        }
        let shapes: Vec<(String, Vec<usize>)> = tower
            .iter()
            .map(|(k, s)| (k.clone(), s.shape.clone()))
            .collect();
        assert!(official::compare_shapes(
            &official::vision_shapes(&vision),
            &shapes,
            Tower::Vision
        )
        .is_none());
        let _ = std::fs::remove_file(&out);
    }
}

#[test]
fn pexc_export_writes_a_run_as_an_official_clip() {
    let dir = fresh_dir("run");
    let micro = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/runs/micro.pex");
    let o = pexc()
        .arg("run")
        .arg(&micro)
        .arg("--out")
        .arg(&dir)
        .args(["--backend", "cpu", "--smoke"])
        .output()
        .expect("runs");
    ok(&o);
    // The run's export is already official: `weights:` can take it.
    let shapes =
        official::read_shapes(&dir.join("exports/micro_vision.safetensors")).expect("export");
    assert!(shapes
        .iter()
        .any(|(k, s)| k == "transformer.resblocks.0.attn.in_proj_weight" && s == &vec![96, 32]));
    assert!(shapes
        .iter()
        .any(|(k, s)| k == "proj" && s == &vec![32, 16]));
    // The stage as a whole CLIP: text keys at the top, vision under `visual.`.
    let o = pexc()
        .arg("export")
        .arg(&dir)
        .arg("core")
        .output()
        .expect("runs");
    ok(&o);
    let clip = official::read_shapes(&dir.join("exports/core_clip.pe.safetensors")).expect("clip");
    assert!(clip.iter().any(|(k, s)| k == "logit_scale" && s.is_empty()));
    assert!(clip
        .iter()
        .any(|(k, s)| k == "visual.conv1.weight" && s == &vec![32, 3, 8, 8]));
    assert!(clip
        .iter()
        .any(|(k, s)| k == "token_embedding.weight" && s == &vec![300, 32]));
    let text = official::tower_shapes(&clip, Tower::Text);
    assert!(text.iter().all(|(k, _)| !k.starts_with("visual.")));
    // An unknown name lists what there is.
    let o = pexc()
        .arg("export")
        .arg(&dir)
        .arg("nope")
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("micro_vision"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! The cost model (language.md section 3): FLOPs of the matrix products only (patch
//! embedding, attention projections, QK^T and AV, MLP, pooling, projections, text tower,
//! decoder), 2 FLOPs per multiply-add, norms, activations and softmax ignored; parameter
//! counts; and activation sizes for the memory estimate. Functions of resolved model
//! configurations, so that the runtime and the tests can use them too.

use super::plan::{Arg, Ctor};

fn int(cfg: &Ctor, name: &str) -> f64 {
    cfg.int(name).unwrap_or(0) as f64
}

/// How a vision tower pools its tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pool {
    Attention { heads: u64 },
    Cls,
    Mean,
    None,
}

pub fn pool(cfg: &Ctor) -> Pool {
    match cfg.call("pool") {
        Some(p) if p.ctor == "attention" => Pool::Attention {
            heads: p.int("heads").unwrap_or(8).max(1) as u64,
        },
        Some(p) if p.ctor == "cls" => Pool::Cls,
        Some(p) if p.ctor == "mean" => Pool::Mean,
        _ => Pool::None,
    }
}

fn has_abs(cfg: &Ctor) -> bool {
    cfg.list("pos").is_some_and(|items| {
        items
            .iter()
            .any(|a| matches!(a, Arg::Call(c) if c.ctor == "abs"))
    })
}

/// Patches per side at `resolution` (0 when the patch does not divide it).
pub fn grid(cfg: &Ctor, resolution: u64) -> u64 {
    match cfg.int("patch") {
        Some(p) if p > 0 => resolution / p as u64,
        _ => 0,
    }
}

/// Tokens per image: patch tokens plus CLS.
pub fn vit_tokens(cfg: &Ctor, resolution: u64) -> u64 {
    let g = grid(cfg, resolution);
    g * g + u64::from(cfg.bool("cls").unwrap_or(true))
}

/// Multiply-adds of one pre-LN transformer block over `t` tokens of width `w`, MLP `m`,
/// with key/value width `kv` (`w` unless grouped-query attention).
fn block_macs(t: f64, w: f64, m: f64, kv: f64) -> f64 {
    // q and output projections, k and v projections, QK^T and AV, the MLP's two matrices.
    2.0 * t * w * w + 2.0 * t * w * kv + 2.0 * t * t * w + 2.0 * t * w * m
}

/// Forward FLOPs of a vision tower on one image: `blocks` blocks, and the pooling and
/// projection when `head`.
pub fn vit_forward(cfg: &Ctor, resolution: u64, blocks: u64, head: bool) -> f64 {
    let (p, w, m) = (int(cfg, "patch"), int(cfg, "width"), int(cfg, "mlp"));
    let g = grid(cfg, resolution) as f64;
    let n = g * g;
    let t = vit_tokens(cfg, resolution) as f64;
    let mut macs = n * 3.0 * p * p * w + blocks as f64 * block_macs(t, w, m, w);
    if head {
        macs += pool_macs(cfg, t);
        if let Some(out) = cfg.int("out") {
            let vectors = if pool(cfg) == Pool::None { t } else { 1.0 };
            macs += vectors * w * out as f64;
        }
    }
    2.0 * macs
}

fn pool_macs(cfg: &Ctor, t: f64) -> f64 {
    let (w, m) = (int(cfg, "width"), int(cfg, "mlp"));
    match pool(cfg) {
        // One probe query: its q projection, k and v over all tokens, QK^T and AV, the
        // output projection, then the MLP on one vector.
        Pool::Attention { .. } => w * w + 2.0 * t * w * w + 2.0 * t * w + w * w + 2.0 * w * m,
        _ => 0.0,
    }
}

/// Forward FLOPs of a text tower on one caption (the full context).
pub fn text_forward(cfg: &Ctor) -> f64 {
    let (c, w, m) = (int(cfg, "context"), int(cfg, "width"), int(cfg, "mlp"));
    let depth = int(cfg, "depth");
    2.0 * (depth * block_macs(c, w, m, w) + w * int(cfg, "out"))
}

fn kv_width(cfg: &Ctor) -> f64 {
    let (w, h) = (int(cfg, "width"), int(cfg, "heads").max(1.0));
    let kv = cfg.int("kv_heads").map_or(h, |k| k as f64);
    w / h * kv
}

/// Forward FLOPs of a decoder over `prefix` image tokens and its full text context, with
/// the output layer on the text positions.
pub fn decoder_forward(cfg: &Ctor, prefix: u64) -> f64 {
    let (c, w, m) = (int(cfg, "context"), int(cfg, "width"), int(cfg, "mlp"));
    let t = prefix as f64 + c;
    let depth = int(cfg, "depth");
    2.0 * (depth * block_macs(t, w, m, kv_width(cfg)) + c * w * int(cfg, "vocab"))
}

/// Forward FLOPs of a projector on `tokens` tokens of width `input`.
pub fn projector_forward(cfg: &Ctor, input: u64, tokens: u64) -> f64 {
    let (layers, out) = (int(cfg, "layers").max(1.0), int(cfg, "out"));
    2.0 * tokens as f64 * (input as f64 * out + (layers - 1.0) * out * out)
}

fn block_params(w: f64, m: f64, kv: f64, layer_scale: bool) -> f64 {
    // Two LayerNorms, q/o and k/v projections with biases, the MLP with biases.
    4.0 * w
        + 2.0 * w * w
        + 2.0 * w
        + 2.0 * w * kv
        + 2.0 * kv
        + 2.0 * w * m
        + m
        + w
        + if layer_scale { 2.0 * w } else { 0.0 }
}

/// Parameters of a vision tower.
pub fn vit_params(cfg: &Ctor) -> u64 {
    let (p, w, m) = (int(cfg, "patch"), int(cfg, "width"), int(cfg, "mlp"));
    let depth = int(cfg, "depth");
    let cls = cfg.bool("cls").unwrap_or(true);
    let mut n = 3.0 * p * p * w + 2.0 * w; // conv (no bias), ln_pre
    if cls {
        n += w;
    }
    if has_abs(cfg) {
        let g = if p > 0.0 {
            (int(cfg, "image") / p).floor()
        } else {
            0.0
        };
        n += (g * g + f64::from(u8::from(cls))) * w;
    }
    n += depth * block_params(w, m, w, cfg.float("layer_scale").is_some());
    if cfg.bool("ln_post").unwrap_or(true) {
        n += 2.0 * w;
    }
    if let Pool::Attention { .. } = pool(cfg) {
        // Probe, attention (packed in-projection and output, with biases), LN, MLP.
        n += w + 3.0 * w * w + 3.0 * w + w * w + w + 2.0 * w + 2.0 * w * m + m + w;
    }
    if let Some(out) = cfg.int("out") {
        n += w * out as f64;
    }
    n as u64
}

/// Parameters of a text tower.
pub fn text_params(cfg: &Ctor) -> u64 {
    let (c, w, m) = (int(cfg, "context"), int(cfg, "width"), int(cfg, "mlp"));
    let n = int(cfg, "vocab") * w
        + c * w
        + int(cfg, "depth") * block_params(w, m, w, false)
        + 2.0 * w
        + w * int(cfg, "out");
    n as u64
}

/// Parameters of a decoder (output layer not tied to the embedding).
pub fn decoder_params(cfg: &Ctor) -> u64 {
    let (w, m) = (int(cfg, "width"), int(cfg, "mlp"));
    let vocab = int(cfg, "vocab");
    let n =
        2.0 * vocab * w + int(cfg, "depth") * block_params(w, m, kv_width(cfg), false) + 2.0 * w;
    n as u64
}

/// Parameters of a projector reading width `input`.
pub fn projector_params(cfg: &Ctor, input: u64) -> u64 {
    let (layers, out) = (int(cfg, "layers").max(1.0), int(cfg, "out"));
    (input as f64 * out + out + (layers - 1.0) * (out * out + out)) as u64
}

/// Activation elements one block keeps for the backward pass over `t` tokens: the inputs
/// of its matrix products and norms (8 x width), the MLP's hidden (2 x mlp) and the
/// attention probabilities before and after softmax (2 x heads x t^2).
pub fn block_activations(t: f64, w: f64, m: f64, heads: f64) -> f64 {
    t * (8.0 * w + 2.0 * m) + 2.0 * heads * t * t
}

/// Activation elements of a vision tower per image.
pub fn vit_activations(cfg: &Ctor, resolution: u64, blocks: u64) -> f64 {
    let t = vit_tokens(cfg, resolution) as f64;
    let (w, m, h) = (int(cfg, "width"), int(cfg, "mlp"), int(cfg, "heads"));
    t * w + blocks as f64 * block_activations(t, w, m, h)
}

/// Activation elements of a text tower per caption.
pub fn text_activations(cfg: &Ctor) -> f64 {
    let (c, w, m, h) = (
        int(cfg, "context"),
        int(cfg, "width"),
        int(cfg, "mlp"),
        int(cfg, "heads"),
    );
    c * w + int(cfg, "depth") * block_activations(c, w, m, h)
}

/// Activation elements of a decoder per sample, logits included.
pub fn decoder_activations(cfg: &Ctor, prefix: u64) -> f64 {
    let (c, w, m, h) = (
        int(cfg, "context"),
        int(cfg, "width"),
        int(cfg, "mlp"),
        int(cfg, "heads"),
    );
    let t = prefix as f64 + c;
    t * w + int(cfg, "depth") * block_activations(t, w, m, h) + 2.0 * c * int(cfg, "vocab")
}

/// Activation elements of a projector per sample.
pub fn projector_activations(cfg: &Ctor, input: u64, tokens: u64) -> f64 {
    let (layers, out) = (int(cfg, "layers").max(1.0), int(cfg, "out"));
    tokens as f64 * (input as f64 + 2.0 * layers * out)
}

//! Losses on embeddings and tokens. Each returns a scalar (shape [1]) tensor; weights are
//! applied by the caller, which also logs every term.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// L2-normalises the rows of `x` (eps guards a zero row).
pub fn normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x.div(norm)
}

/// The similarity logits `scale * normalize(img) @ normalize(txt)^T`, with the scale
/// `exp(log_scale)` clamped at `max_scale` (CLIP's clamp of the learnable temperature).
pub fn clip_logits<B: Backend>(
    img: Tensor<B, 2>,
    txt: Tensor<B, 2>,
    log_scale: Tensor<B, 1>,
    max_scale: f64,
) -> Tensor<B, 2> {
    let scale = log_scale.exp().clamp_max(max_scale);
    normalize(img)
        .matmul(normalize(txt).transpose())
        .mul(scale.unsqueeze::<2>())
}

/// Mean cross-entropy of rows of `logits` against the diagonal (the matching pair).
fn diagonal_ce<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let idx: Tensor<B, 2, Int> = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([n, 1]);
    log_softmax(logits, 1).gather(1, idx).mean().neg()
}

/// CLIP's InfoNCE in both directions, averaged.
pub fn clip<B: Backend>(
    img: Tensor<B, 2>,
    txt: Tensor<B, 2>,
    log_scale: Tensor<B, 1>,
    max_scale: f64,
) -> Tensor<B, 1> {
    let logits = clip_logits(img, txt, log_scale, max_scale);
    let i2t = diagonal_ce(logits.clone());
    let t2i = diagonal_ce(logits.transpose());
    i2t.add(t2i).div_scalar(2.0)
}

/// SigLIP's pairwise sigmoid loss: every pair is a binary problem (the diagonal positive),
/// summed over the batch's pairs and divided by the batch size, as in the paper.
pub fn siglip<B: Backend>(
    img: Tensor<B, 2>,
    txt: Tensor<B, 2>,
    log_scale: Tensor<B, 1>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, _] = img.dims();
    let device = img.device();
    let logits = normalize(img)
        .matmul(normalize(txt).transpose())
        .mul(log_scale.exp().unsqueeze::<2>())
        .add(bias.unsqueeze::<2>());
    // +1 on the diagonal, -1 elsewhere.
    let labels = Tensor::<B, 2>::eye(n, &device)
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    log_sigmoid(labels.mul(logits))
        .sum()
        .div_scalar(n as f64)
        .neg()
}

/// Mask regularisation: 1 - cosine similarity between the masked copies' output tokens and
/// the unmasked originals' (the caller detaches the originals, so the two gradients stay
/// disjoint), averaged over every token.
pub fn token_cosine<B: Backend>(student: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 1> {
    let cos = normalize(student).mul(normalize(target)).sum_dim(2);
    cos.neg().add_scalar(1.0).mean()
}

/// Mask regularisation as PE describes it: the masked copies' tokens at the masked
/// positions are pulled to the unmasked originals' tokens there: 1 - cosine, averaged over
/// the positions where `weight` (copies, tokens) is 1.
pub fn masked_token_cosine<B: Backend>(
    student: Tensor<B, 3>,
    target: Tensor<B, 3>,
    weight: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let cos = normalize(student)
        .mul(normalize(target))
        .sum_dim(2)
        .squeeze_dim::<2>(2);
    let total = weight.clone().sum().clamp_min(1.0);
    cos.neg().add_scalar(1.0).mul(weight).sum().div(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    type B = Flex;

    fn t2(rows: &[[f32; 2]]) -> Tensor<B, 2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Default::default())
    }

    fn scalar(x: Tensor<B, 1>) -> f64 {
        x.into_scalar() as f64
    }

    #[test]
    fn clip_matches_a_hand_computed_value() {
        // Two orthogonal image embeddings, text embeddings equal to them: cosine 1 on the
        // diagonal, 0 off it. With scale s, each row's CE is ln(1 + e^-s).
        let img = t2(&[[3.0, 0.0], [0.0, 2.0]]);
        let txt = t2(&[[1.0, 0.0], [0.0, 5.0]]);
        let s: f64 = 2.0;
        let log_s = Tensor::<B, 1>::from_floats([s.ln() as f32], &Default::default());
        let got = scalar(clip(img, txt, log_s, 100.0));
        let want = (1.0 + (-s).exp()).ln();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn clip_scale_is_clamped() {
        let img = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let txt = t2(&[[0.0, 1.0], [1.0, 0.0]]);
        // exp(10) is clamped to 3: every row puts its mass on the wrong pair.
        let log_s = Tensor::<B, 1>::from_floats([10.0], &Default::default());
        let got = scalar(clip(img, txt, log_s, 3.0));
        let want = (1.0 + 3f64.exp()).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn siglip_matches_a_hand_computed_value() {
        let img = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let txt = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let (s, b): (f64, f64) = (10.0, -10.0);
        let log_s = Tensor::<B, 1>::from_floats([s.ln() as f32], &Default::default());
        let bias = Tensor::<B, 1>::from_floats([b as f32], &Default::default());
        let got = scalar(siglip(img, txt, log_s, bias));
        // Diagonal logits s + b = 0: -ln sigma(0) = ln 2 each; off-diagonal logits b = -10
        // with label -1: -ln sigma(10) each. Sum over 4 pairs / n = 2.
        let ls = |x: f64| -(1.0 / (1.0 + (-x).exp())).ln();
        let want = (2.0 * ls(0.0) + 2.0 * ls(10.0)) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn token_cosine_is_zero_for_equal_directions_and_one_for_orthogonal() {
        let a = Tensor::<B, 3>::from_floats([[[1.0, 0.0], [0.0, 2.0]]], &Default::default());
        let b = Tensor::<B, 3>::from_floats([[[2.0, 0.0], [1.0, 0.0]]], &Default::default());
        // Token 1: same direction (0); token 2: orthogonal (1). Mean 0.5.
        assert!((scalar(token_cosine(a, b)) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn masked_token_cosine_averages_only_the_masked_positions() {
        let a = Tensor::<B, 3>::from_floats(
            [[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]],
            &Default::default(),
        );
        let b = Tensor::<B, 3>::from_floats(
            [[[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]]],
            &Default::default(),
        );
        // Positions 1 and 2 masked: orthogonal (1) and opposite (2); position 0 ignored.
        let w = Tensor::<B, 2>::from_floats([[0.0, 1.0, 1.0]], &Default::default());
        assert!((scalar(masked_token_cosine(a, b, w)) - 1.5).abs() < 1e-6);
    }
}

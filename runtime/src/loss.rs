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

/// Distillation (pe-reference.md "Distillation into smaller models"): KL(teacher ||
/// student) of the image->text and of the text->image similarity distributions of the
/// batch, averaged. The student's logits use its learnable scale (clamped at `max_scale`),
/// the teacher's a fixed `teacher_scale` (PE: 200); the teacher's embeddings are constants.
#[allow(clippy::too_many_arguments)]
pub fn distill_kl<B: Backend>(
    img: Tensor<B, 2>,
    txt: Tensor<B, 2>,
    log_scale: Tensor<B, 1>,
    max_scale: f64,
    teacher_img: Tensor<B, 2>,
    teacher_txt: Tensor<B, 2>,
    teacher_scale: f64,
) -> Tensor<B, 1> {
    let student = clip_logits(img, txt, log_scale, max_scale);
    let teacher = normalize(teacher_img)
        .matmul(normalize(teacher_txt).transpose())
        .mul_scalar(teacher_scale)
        .detach();
    let i2t = row_kl(teacher.clone(), student.clone());
    let t2i = row_kl(teacher.transpose(), student.transpose());
    i2t.add(t2i).div_scalar(2.0)
}

/// Mean over rows of KL(softmax(p) || softmax(q)).
fn row_kl<B: Backend>(p_logits: Tensor<B, 2>, q_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let lp = log_softmax(p_logits, 1);
    let lq = log_softmax(q_logits, 1);
    lp.clone().exp().mul(lp.sub(lq)).sum_dim(1).mean()
}

/// Next-token cross-entropy (PE-lang): `logits` (n, l, vocab) predict `targets` (n, l);
/// averaged over the positions where `weight` (n, l) is 1 (the caption up to and with its
/// end token; padding is not a target).
pub fn next_token<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weight: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let picked = log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    let total = weight.clone().sum().clamp_min(1.0);
    picked.mul(weight).sum().div(total).neg()
}

/// Token cosine-similarity matrices (n, t, t) of tokens (n, t, w).
pub fn token_similarities<B: Backend>(tokens: Tensor<B, 3>) -> Tensor<B, 3> {
    let t = normalize(tokens);
    t.clone().matmul(t.swap_dims(1, 2))
}

/// The teacher side of `pairwise_similarity`: cosine similarities of the teacher's token
/// features passed through exp(t (x - 1)) (PE-spatial, t = 20), so that only near-equal
/// features count as similar.
pub fn sharpened_similarities<B: Backend>(features: Tensor<B, 3>, t: f64) -> Tensor<B, 3> {
    token_similarities(features)
        .sub_scalar(1.0)
        .mul_scalar(t)
        .exp()
}

/// `pairwise_similarity`: the mean squared difference between the student's token
/// cosine-similarity matrices and the teacher's (already sharpened) ones, (n, t, t) each.
pub fn pairwise_similarity<B: Backend>(
    student: Tensor<B, 3>,
    teacher_similarities: Tensor<B, 3>,
) -> Tensor<B, 1> {
    token_similarities(student)
        .sub(teacher_similarities.detach())
        .square()
        .mean()
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

    #[test]
    fn distill_kl_is_zero_when_the_student_matches_and_hand_computed_otherwise() {
        let a = t2(&[[1.0, 0.0], [0.0, 1.0]]);
        let dev = Default::default();
        // Student = teacher (same embeddings, same scale 2): KL 0.
        let ls = Tensor::<B, 1>::from_floats([2f32.ln()], &dev);
        let same = scalar(distill_kl(
            a.clone(),
            a.clone(),
            ls,
            100.0,
            a.clone(),
            a.clone(),
            2.0,
        ));
        assert!(same.abs() < 1e-6, "{same}");
        // Student scale 1, teacher scale 2 on orthonormal pairs: each row of the teacher
        // is softmax(2, 0), the student's softmax(1, 0); the KL is the same for every row
        // and both directions.
        let ls = Tensor::<B, 1>::from_floats([0.0], &dev);
        let got = scalar(distill_kl(
            a.clone(),
            a.clone(),
            ls,
            100.0,
            a.clone(),
            a,
            2.0,
        ));
        let p = [2f64.exp() / (2f64.exp() + 1.0), 1.0 / (2f64.exp() + 1.0)];
        let q = [1f64.exp() / (1f64.exp() + 1.0), 1.0 / (1f64.exp() + 1.0)];
        let want = p[0] * (p[0] / q[0]).ln() + p[1] * (p[1] / q[1]).ln();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn next_token_averages_the_weighted_positions_only() {
        let dev = Default::default();
        // One row, two positions, vocabulary 2. Position 0: logits (0, ln 3), target 1:
        // -ln(3/4). Position 1 is padding (weight 0) with a terrible prediction.
        let logits = Tensor::<B, 3>::from_floats([[[0.0, 3f32.ln()], [50.0, -50.0]]], &dev);
        let targets = Tensor::<B, 2, Int>::from_ints([[1, 1]], &dev);
        let w = Tensor::<B, 2>::from_floats([[1.0, 0.0]], &dev);
        let got = scalar(next_token(logits, targets, w));
        assert!((got + (0.75f64).ln()).abs() < 1e-6, "{got}");
    }

    #[test]
    fn pairwise_similarity_matches_a_hand_computed_value() {
        let dev = Default::default();
        // Student tokens: two orthogonal ones. Its similarity matrix is the identity.
        let s = Tensor::<B, 3>::from_floats([[[1.0, 0.0], [0.0, 3.0]]], &dev);
        // Teacher features: two equal tokens: cosine 1 everywhere, exp(t (1 - 1)) = 1.
        let f = Tensor::<B, 3>::from_floats([[[2.0, 1.0], [4.0, 2.0]]], &dev);
        let t = sharpened_similarities(f, 20.0);
        let got = scalar(pairwise_similarity(s, t));
        // Off-diagonal entries differ by 1 (two of four): mean 0.5 (to f32 rounding of a
        // cosine of 1, which exp(20 (x - 1)) amplifies twentyfold).
        assert!((got - 0.5).abs() < 1e-5, "{got}");
        // Orthogonal teacher features: exp(20 (0 - 1)) = e^-20 off the diagonal.
        let f = Tensor::<B, 3>::from_floats([[[1.0, 0.0], [0.0, 1.0]]], &dev);
        let t = sharpened_similarities(f, 20.0)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!((t[1] as f64 - (-20f64).exp()).abs() < 1e-12 && (t[0] - 1.0).abs() < 1e-6);
    }
}

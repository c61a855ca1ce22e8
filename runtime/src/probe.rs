//! The paper's layer-wise analysis ("the best visual embeddings are not at the output"):
//! a frozen vision tower, and a light probe trained on the features of every block, for
//! classification (the mean patch token, with the CLS token beside it when the tower has
//! one) and a dense task (per-patch segmentation, targets from the generator's masks).
//! The held-out score of each block says where in the tower each kind of knowledge lives.
//!
//! Probes are closed-form ridge-regression linear classifiers: least squares onto one-hot
//! targets, argmax to predict (a standard linear probe: no SGD, no learning rate, nothing
//! to tune). Features are standardised per dimension with the training set's mean and
//! standard deviation (a constant dimension is left out: its weight is zero) and a bias
//! column is added. The ridge penalty on the standardised weights (not the bias) is
//! `lambda = 1e-3 * trace(Z^T Z) / d`, i.e. about `1e-3 * n` for `n` training rows: small
//! enough to barely shrink a well-determined probe, large enough to keep the normal matrix
//! positive definite when features are collinear or outnumber the rows. The system is
//! solved in f64 in plain Rust: `X^T X` is accumulated row by row from the raw features
//! (so nothing but the `(d+1)^2` matrix is held), standardised afterwards, and factored by
//! Cholesky.
//!
//! Cost: the tower's forward pass over both sets once, plus `rows * d^2 / 2` multiply-adds
//! per block to accumulate. Dense training rows are capped: each image with a mask gives at
//! most `ceil(DENSE_ROWS / images)` of its patches (at most `DENSE_ROWS` = 32,768 rows per
//! block), chosen by a fixed-seed shuffle of its own (deterministic, independent of
//! batching). Held-out scoring uses every patch.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::{json, Value};

use crate::data::{Rng, Sample};
use crate::model::vit::VisionTransformer;

/// Images per forward pass.
const BATCH: usize = 64;
/// The ridge penalty relative to the mean diagonal of the standardised normal matrix.
const RIDGE: f64 = 1e-3;
/// The most dense (per-patch) training rows per block.
const DENSE_ROWS: usize = 32_768;
/// Seeds the choice of dense training patches.
const DENSE_SEED: u64 = 0x9E0B_E5EE;

/// Held-out scores, one entry per block (index 0 is the first block).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerScores {
    /// Top-1 accuracy of the classification probe on the held-out labelled samples.
    pub classification: Vec<f64>,
    /// Mean IoU of the per-patch probe over the categories (background included) that
    /// appear in the held-out targets or predictions.
    pub dense: Vec<f64>,
    /// The same per-patch predictions scored class-agnostically: mean IoU of object
    /// (any shape class) against background, the segmentation a class-agnostic teacher
    /// such as SAM's mask logits speaks to.
    pub objects: Vec<f64>,
}

impl LayerScores {
    /// `{"blocks": [1..=depth], "classification_top1", "dense_miou", "best_classification",
    /// "last_classification", "best_dense", "last_dense"}`; blocks are 1-based, as the paper
    /// numbers them; a best or last entry is `{"block", "score"}` (the earliest block on a
    /// tie), `null` without scores.
    pub fn to_json(&self) -> Value {
        let blocks: Vec<usize> = (1..=self.classification.len().max(self.dense.len())).collect();
        json!({
            "blocks": blocks,
            "classification_top1": self.classification,
            "dense_miou": self.dense,
            "object_miou": self.objects,
            "best_object": best(&self.objects),
            "last_object": last(&self.objects),
            "best_classification": best(&self.classification),
            "last_classification": last(&self.classification),
            "best_dense": best(&self.dense),
            "last_dense": last(&self.dense),
        })
    }

    /// Both score curves against the 1-based block, as SVG.
    pub fn svg(&self, title: &str) -> String {
        let pts = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, &s)| ((i + 1) as f64, s))
                .collect()
        };
        crate::report::svg_plot(
            title,
            "held-out score",
            &[
                (
                    "classification top-1".to_string(),
                    pts(&self.classification),
                ),
                ("dense mIoU".to_string(), pts(&self.dense)),
            ],
        )
    }
}

fn entry(v: &[f64], i: usize) -> Value {
    json!({"block": i + 1, "score": v[i]})
}

fn best(v: &[f64]) -> Value {
    let mut at: Option<usize> = None;
    for (i, &s) in v.iter().enumerate() {
        if at.is_none_or(|j| s > v[j]) {
            at = Some(i);
        }
    }
    at.map_or(Value::Null, |i| entry(v, i))
}

fn last(v: &[f64]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        entry(v, v.len() - 1)
    }
}

/// Trains a classification probe and a per-patch probe on the features of every block of
/// the frozen `vision` over `train`, and scores them on `held`. Samples without a label
/// are left out of classification, samples without a mask out of the dense task; it is an
/// error when either set has none of one kind. Labels must be below `classes`; mask values
/// at most `classes` (0 background, `k + 1` for class `k`). All images must share one size.
/// Inference only: `B` may be a plain backend.
pub fn layer_analysis<B: Backend>(
    vision: &VisionTransformer<B>,
    train: &[Sample],
    held: &[Sample],
    classes: usize,
    device: &B::Device,
) -> Result<LayerScores, String> {
    let depth = vision.depth();
    if depth == 0 {
        return Err("layer analysis: the vision tower has no blocks".into());
    }
    if classes == 0 {
        return Err("layer analysis: needs at least one class".into());
    }
    let Some(first) = train.first() else {
        return Err("layer analysis: no training samples".into());
    };
    if held.is_empty() {
        return Err("layer analysis: no held-out samples".into());
    }
    let (h, w) = (first.height, first.width);
    for (set, samples) in [("training", train), ("held-out", held)] {
        for (i, s) in samples.iter().enumerate() {
            check_sample(s, h, w, classes)
                .map_err(|e| format!("layer analysis: {set} sample {i}: {e}"))?;
        }
    }
    let (rows, cols) = vision.grid(h, w);
    if rows == 0 || cols == 0 {
        return Err(format!(
            "layer analysis: {h}x{w} images are smaller than one {}-pixel patch",
            vision.patch
        ));
    }
    for (set, samples) in [("training", train), ("held-out", held)] {
        if !samples.iter().any(|s| s.label.is_some()) {
            return Err(format!(
                "layer analysis: no {set} sample has a label (classification needs them)"
            ));
        }
        if !samples.iter().any(|s| s.mask.is_some()) {
            return Err(format!(
                "layer analysis: no {set} sample has a mask (the dense task needs them)"
            ));
        }
    }
    let geo = Geometry {
        cls: usize::from(vision.has_cls()),
        patches: rows * cols,
        width: vision.width(),
        patch: vision.patch,
        rows,
        cols,
    };
    let categories = classes + 1;
    let cls_dim = geo.width * (1 + geo.cls);

    // Training: accumulate the normal equations of every block.
    let mut cls_eq: Vec<Normal> = (0..depth).map(|_| Normal::new(cls_dim, classes)).collect();
    let mut dense_eq: Vec<Normal> = (0..depth)
        .map(|_| Normal::new(geo.width, categories))
        .collect();
    let masked = train.iter().filter(|s| s.mask.is_some()).count();
    let per_image = DENSE_ROWS.div_ceil(masked).min(geo.patches);
    let used: Vec<(usize, &Sample)> = train
        .iter()
        .enumerate()
        .filter(|(_, s)| s.label.is_some() || s.mask.is_some())
        .collect();
    let mut feat = vec![0f64; cls_dim];
    let mut row = vec![0f64; geo.width];
    for chunk in used.chunks(BATCH) {
        let taps = block_tokens(vision, chunk.iter().map(|(_, s)| *s), &geo, device)?;
        for (j, (idx, s)) in chunk.iter().enumerate() {
            let chosen = match &s.mask {
                Some(m) => {
                    let targets = patch_targets(m, h, w, &geo, categories)?;
                    let picks = choose(geo.patches, per_image, *idx);
                    Some((targets, picks))
                }
                None => None,
            };
            for (b, tap) in taps.iter().enumerate() {
                let tokens = &tap[j * geo.tokens() * geo.width..][..geo.tokens() * geo.width];
                if let Some(label) = s.label {
                    pooled(tokens, &geo, &mut feat);
                    cls_eq[b].add_class(&feat, label);
                }
                if let Some((targets, picks)) = &chosen {
                    for &p in picks {
                        widen(geo.token(tokens, p), &mut row);
                        dense_eq[b].add_class(&row, targets[p]);
                    }
                }
            }
        }
    }
    let mut cls_probes = Vec::with_capacity(depth);
    let mut dense_probes = Vec::with_capacity(depth);
    for b in 0..depth {
        cls_probes.push(
            cls_eq[b]
                .fit()
                .map_err(|e| format!("layer analysis: block {} classification: {e}", b + 1))?,
        );
        dense_probes.push(
            dense_eq[b]
                .fit()
                .map_err(|e| format!("layer analysis: block {} dense: {e}", b + 1))?,
        );
    }
    drop((cls_eq, dense_eq));

    // Held-out scoring.
    let mut correct = vec![0usize; depth];
    let mut labelled = 0usize;
    let mut confusion = vec![vec![0u64; categories * categories]; depth];
    let used: Vec<&Sample> = held
        .iter()
        .filter(|s| s.label.is_some() || s.mask.is_some())
        .collect();
    let mut scratch = Vec::new();
    for chunk in used.chunks(BATCH) {
        let taps = block_tokens(vision, chunk.iter().copied(), &geo, device)?;
        for (j, s) in chunk.iter().enumerate() {
            let targets = match &s.mask {
                Some(m) => Some(patch_targets(m, h, w, &geo, categories)?),
                None => None,
            };
            labelled += usize::from(s.label.is_some());
            for (b, tap) in taps.iter().enumerate() {
                let tokens = &tap[j * geo.tokens() * geo.width..][..geo.tokens() * geo.width];
                if let Some(label) = s.label {
                    pooled(tokens, &geo, &mut feat);
                    if cls_probes[b].predict(&feat, &mut scratch) == label {
                        correct[b] += 1;
                    }
                }
                if let Some(targets) = &targets {
                    for (p, &t) in targets.iter().enumerate() {
                        widen(geo.token(tokens, p), &mut row);
                        let pred = dense_probes[b].predict(&row, &mut scratch);
                        confusion[b][t * categories + pred] += 1;
                    }
                }
            }
        }
    }
    Ok(LayerScores {
        classification: correct
            .iter()
            .map(|&c| c as f64 / labelled.max(1) as f64)
            .collect(),
        dense: confusion
            .iter()
            .map(|cm| mean_iou(cm, categories))
            .collect(),
        objects: confusion
            .iter()
            .map(|cm| mean_iou(&object_confusion(cm, categories), 2))
            .collect(),
    })
}

/// The token layout of one image's block output.
struct Geometry {
    /// 1 when the tower has a CLS token (first), else 0.
    cls: usize,
    patches: usize,
    width: usize,
    patch: usize,
    rows: usize,
    cols: usize,
}

impl Geometry {
    fn tokens(&self) -> usize {
        self.cls + self.patches
    }

    /// Patch token `p` (row-major) of one image's `tokens`.
    fn token<'a>(&self, tokens: &'a [f32], p: usize) -> &'a [f32] {
        &tokens[(self.cls + p) * self.width..][..self.width]
    }
}

fn check_sample(s: &Sample, h: usize, w: usize, classes: usize) -> Result<(), String> {
    if (s.height, s.width) != (h, w) {
        return Err(format!(
            "a {}x{} image among {h}x{w} ones (every image must have one size)",
            s.height, s.width
        ));
    }
    if s.image.len() != 3 * h * w {
        return Err(format!(
            "{} image values for a 3x{h}x{w} image",
            s.image.len()
        ));
    }
    if let Some(l) = s.label {
        if l >= classes {
            return Err(format!("label {l} is not below {classes} classes"));
        }
    }
    if let Some(m) = &s.mask {
        if m.len() != h * w {
            return Err(format!("a mask of {} values for {h}x{w} pixels", m.len()));
        }
        if let Some(&v) = m.iter().find(|&&v| usize::from(v) > classes) {
            return Err(format!(
                "mask value {v} is above {classes} (0 background, k + 1 for class k)"
            ));
        }
    }
    Ok(())
}

/// One forward pass over `samples`: every block's output, flattened (n, tokens, width).
fn block_tokens<'a, B: Backend>(
    vision: &VisionTransformer<B>,
    samples: impl Iterator<Item = &'a Sample>,
    geo: &Geometry,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>, String> {
    let mut v = Vec::new();
    let mut n = 0;
    let (mut h, mut w) = (0, 0);
    for s in samples {
        v.extend_from_slice(&s.image);
        (h, w) = (s.height, s.width);
        n += 1;
    }
    let x: Tensor<B, 4> = Tensor::from_data(TensorData::new(v, [n, 3, h, w]), device);
    let all: Vec<usize> = (0..vision.depth()).collect();
    let out = vision.forward_taps(x, None, &all);
    if out.taps.len() != all.len() {
        return Err(format!(
            "layer analysis: the tower returned {} of its {} block outputs",
            out.taps.len(),
            all.len()
        ));
    }
    let mut taps = Vec::with_capacity(all.len());
    for t in out.taps {
        let dims = t.dims();
        if dims != [n, geo.tokens(), geo.width] {
            return Err(format!(
                "layer analysis: a block output of shape {dims:?}, expected [{n}, {}, {}]",
                geo.tokens(),
                geo.width
            ));
        }
        taps.push(
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| format!("layer analysis: cannot read a block output: {e:?}"))?,
        );
    }
    Ok(taps)
}

/// The classification feature of one image: the mean of its patch tokens, followed by
/// its CLS token when the tower has one.
fn pooled(tokens: &[f32], geo: &Geometry, out: &mut [f64]) {
    let w = geo.width;
    out.iter_mut().for_each(|v| *v = 0.0);
    for p in 0..geo.patches {
        for (o, &t) in out[..w].iter_mut().zip(geo.token(tokens, p)) {
            *o += f64::from(t);
        }
    }
    let inv = 1.0 / geo.patches as f64;
    out[..w].iter_mut().for_each(|v| *v *= inv);
    if geo.cls == 1 {
        widen(&tokens[..w], &mut out[w..2 * w]);
    }
}

fn widen(x: &[f32], out: &mut [f64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f64::from(v);
    }
}

/// The target of every patch (row-major): the most frequent mask value among its pixels,
/// the smallest value on a tie. Masks are checked: every value is below `categories`.
fn patch_targets(
    mask: &[u8],
    h: usize,
    w: usize,
    geo: &Geometry,
    categories: usize,
) -> Result<Vec<usize>, String> {
    if mask.len() != h * w {
        return Err(format!(
            "layer analysis: a mask of {} values for {h}x{w} pixels",
            mask.len()
        ));
    }
    let p = geo.patch;
    let mut counts = vec![0u32; categories];
    let mut out = Vec::with_capacity(geo.patches);
    for r in 0..geo.rows {
        for c in 0..geo.cols {
            counts.iter_mut().for_each(|v| *v = 0);
            for y in r * p..(r + 1) * p {
                for &v in &mask[y * w + c * p..y * w + (c + 1) * p] {
                    let v = usize::from(v);
                    if v >= categories {
                        return Err(format!(
                            "layer analysis: mask value {v} is not below {categories} categories"
                        ));
                    }
                    counts[v] += 1;
                }
            }
            let mut top = 0;
            for (k, &n) in counts.iter().enumerate() {
                if n > counts[top] {
                    top = k;
                }
            }
            out.push(top);
        }
    }
    Ok(out)
}

/// `take` of `0..n`, by a shuffle seeded by the image's index (sorted, for locality).
fn choose(n: usize, take: usize, image: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    if take < n {
        let mut rng = Rng::derive(DENSE_SEED, image as u64);
        for i in 0..take {
            let j = i + rng.below(n - i);
            all.swap(i, j);
        }
        all.truncate(take);
        all.sort_unstable();
    }
    all
}

/// Mean IoU of a `k x k` confusion matrix (`cm[target * k + prediction]`) over the
/// categories that occur as a target or a prediction; 0 when none does.
/// A (k x k) confusion matrix collapsed to (background, object) x (background, object).
fn object_confusion(cm: &[u64], k: usize) -> [u64; 4] {
    let mut out = [0u64; 4];
    for t in 0..k {
        for p in 0..k {
            out[usize::from(t > 0) * 2 + usize::from(p > 0)] += cm[t * k + p];
        }
    }
    out
}

fn mean_iou(cm: &[u64], k: usize) -> f64 {
    let mut sum = 0.0;
    let mut present = 0usize;
    for c in 0..k {
        let tp = cm[c * k + c];
        let targets: u64 = cm[c * k..(c + 1) * k].iter().sum();
        let preds: u64 = (0..k).map(|t| cm[t * k + c]).sum();
        let union = targets + preds - tp;
        if union > 0 {
            sum += tp as f64 / union as f64;
            present += 1;
        }
    }
    if present == 0 {
        0.0
    } else {
        sum / present as f64
    }
}

/// The normal equations of a least-squares fit, accumulated row by row from raw features:
/// sums of `x x^T` (upper triangle), `x`, `x y^T` and `y`.
struct Normal {
    d: usize,
    k: usize,
    n: f64,
    xx: Vec<f64>,
    sx: Vec<f64>,
    xy: Vec<f64>,
    sy: Vec<f64>,
}

/// A fitted linear probe on standardised features: `scores = ((x - mean) / std) W + b`.
struct Probe {
    d: usize,
    k: usize,
    mean: Vec<f64>,
    /// `1 / std`, 0 for a constant dimension (left out).
    inv_std: Vec<f64>,
    /// (d, k), row-major.
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Normal {
    fn new(d: usize, k: usize) -> Normal {
        Normal {
            d,
            k,
            n: 0.0,
            xx: vec![0.0; d * d],
            sx: vec![0.0; d],
            xy: vec![0.0; d * k],
            sy: vec![0.0; k],
        }
    }

    fn add_features(&mut self, x: &[f64]) {
        let d = self.d;
        self.n += 1.0;
        for j in 0..d {
            let xj = x[j];
            self.sx[j] += xj;
            for (a, &xl) in self.xx[j * d + j..(j + 1) * d].iter_mut().zip(&x[j..d]) {
                *a += xj * xl;
            }
        }
    }

    /// A row with a one-hot target at `class`.
    fn add_class(&mut self, x: &[f64], class: usize) {
        self.add_features(x);
        self.sy[class] += 1.0;
        for (j, &xj) in x.iter().enumerate().take(self.d) {
            self.xy[j * self.k + class] += xj;
        }
    }

    /// A row with the real-valued target `y` (k values).
    #[cfg(test)]
    fn add_target(&mut self, x: &[f64], y: &[f64]) {
        self.add_features(x);
        for (c, &yc) in y.iter().enumerate().take(self.k) {
            self.sy[c] += yc;
            for (j, &xj) in x.iter().enumerate().take(self.d) {
                self.xy[j * self.k + c] += xj * yc;
            }
        }
    }

    /// Standardises, adds the ridge penalty and the bias column, and solves.
    fn fit(&self) -> Result<Probe, String> {
        let (d, k, n) = (self.d, self.k, self.n);
        if n < 1.0 {
            return Err("no training rows".into());
        }
        let mean: Vec<f64> = self.sx.iter().map(|s| s / n).collect();
        let inv_std: Vec<f64> = (0..d)
            .map(|j| {
                let second = self.xx[j * d + j] / n;
                let var = second - mean[j] * mean[j];
                // Relative to the second moment: what rounding leaves of a constant.
                if var > 1e-12 * second && var > 0.0 {
                    1.0 / var.sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        // The (d+1) x (d+1) normal matrix of [z, 1]: z is centred, so the bias column is
        // orthogonal to the features (its entries are written anyway, as zeros).
        let m = d + 1;
        let mut a = vec![0.0; m * m];
        for j in 0..d {
            for l in j..d {
                let v = (self.xx[j * d + l] - n * mean[j] * mean[l]) * inv_std[j] * inv_std[l];
                a[j * m + l] = v;
                a[l * m + j] = v;
            }
        }
        a[d * m + d] = n;
        let trace: f64 = (0..d).map(|j| a[j * m + j]).sum();
        let lambda = RIDGE * if trace > 0.0 { trace / d as f64 } else { n };
        for j in 0..d {
            a[j * m + j] += lambda;
        }
        let mut rhs = vec![0.0; m * k];
        for j in 0..d {
            for c in 0..k {
                rhs[j * k + c] = (self.xy[j * k + c] - mean[j] * self.sy[c]) * inv_std[j];
            }
        }
        rhs[d * k..].copy_from_slice(&self.sy);
        cholesky(&mut a, m)?;
        solve(&a, m, &mut rhs, k);
        Ok(Probe {
            d,
            k,
            mean,
            inv_std,
            w: rhs[..d * k].to_vec(),
            b: rhs[d * k..].to_vec(),
        })
    }
}

impl Probe {
    /// The k scores of raw features `x`; `z` is scratch space.
    fn scores(&self, x: &[f64], z: &mut Vec<f64>) -> Vec<f64> {
        z.clear();
        z.extend(
            x.iter()
                .zip(&self.mean)
                .zip(&self.inv_std)
                .map(|((x, m), s)| (x - m) * s),
        );
        let mut out = self.b.clone();
        for (j, &zj) in z.iter().enumerate().take(self.d) {
            if zj != 0.0 {
                for (o, &wv) in out.iter_mut().zip(&self.w[j * self.k..(j + 1) * self.k]) {
                    *o += zj * wv;
                }
            }
        }
        out
    }

    /// The argmax of the scores (the first on a tie).
    fn predict(&self, x: &[f64], z: &mut Vec<f64>) -> usize {
        let s = self.scores(x, z);
        let mut top = 0;
        for (c, &v) in s.iter().enumerate() {
            if v > s[top] {
                top = c;
            }
        }
        top
    }
}

/// In-place Cholesky of the symmetric `m x m` matrix `a` (row-major): its lower triangle
/// becomes `L` with `a = L L^T`.
fn cholesky(a: &mut [f64], m: usize) -> Result<(), String> {
    for j in 0..m {
        let (done, rest) = a.split_at_mut(j * m);
        let row_j = &mut rest[..m];
        // Row j of L left of the diagonal: L[j][l] = (a[j][l] - L[j][..l] . L[l][..l]) / L[l][l].
        for l in 0..j {
            let row_l = &done[l * m..l * m + m];
            let dot: f64 = row_j[..l].iter().zip(&row_l[..l]).map(|(x, y)| x * y).sum();
            row_j[l] = (row_j[l] - dot) / row_l[l];
        }
        let diag = row_j[j] - row_j[..j].iter().map(|x| x * x).sum::<f64>();
        if diag <= 0.0 || !diag.is_finite() {
            return Err(format!(
                "the normal matrix is not positive definite (pivot {j} of {m} is {diag:e})"
            ));
        }
        row_j[j] = diag.sqrt();
    }
    Ok(())
}

/// Solves `L L^T x = b` for the `k` columns of `b` (m x k, row-major), in place.
fn solve(l: &[f64], m: usize, b: &mut [f64], k: usize) {
    // Forward: L y = b.
    for i in 0..m {
        for j in 0..i {
            let f = l[i * m + j];
            if f != 0.0 {
                for c in 0..k {
                    b[i * k + c] -= f * b[j * k + c];
                }
            }
        }
        let d = l[i * m + i];
        for c in 0..k {
            b[i * k + c] /= d;
        }
    }
    // Backward: L^T x = y.
    for i in (0..m).rev() {
        for j in i + 1..m {
            let f = l[j * m + i];
            if f != 0.0 {
                for c in 0..k {
                    b[i * k + c] -= f * b[j * k + c];
                }
            }
        }
        let d = l[i * m + i];
        for c in 0..k {
            b[i * k + c] /= d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::SyntheticShapes;
    use crate::data::{Dataset, Split};
    use crate::model::config::{Pool, VitConfig};
    use burn::backend::Flex;

    type B = Flex;

    fn uniform(r: &mut Rng, lo: f64, hi: f64) -> f64 {
        f64::from(r.range(lo as f32, hi as f32))
    }

    #[test]
    fn ridge_recovers_a_known_linear_map_and_separates_classes() {
        // Real-valued targets y = A x + b: the fitted probe reproduces them on fresh
        // points (up to the small ridge shrinkage, ~1e-3 relative).
        let (d, k) = (4, 2);
        let a = [[1.5, -2.0, 0.5, 3.0], [-1.0, 0.25, 2.0, 0.0]];
        let bias = [0.7, -1.2];
        let target = |x: &[f64]| -> Vec<f64> {
            (0..k)
                .map(|c| bias[c] + (0..d).map(|j| a[c][j] * x[j]).sum::<f64>())
                .collect()
        };
        let mut r = Rng::new(7);
        let mut eq = Normal::new(d, k);
        for _ in 0..400 {
            // Offsets and scales differ per dimension: standardisation must undo them.
            let x: Vec<f64> = (0..d)
                .map(|j| 10.0 * j as f64 + (j + 1) as f64 * uniform(&mut r, -1.0, 1.0))
                .collect();
            eq.add_target(&x, &target(&x));
        }
        let probe = eq.fit().unwrap();
        let mut z = Vec::new();
        for _ in 0..50 {
            let x: Vec<f64> = (0..d)
                .map(|j| 10.0 * j as f64 + (j + 1) as f64 * uniform(&mut r, -1.0, 1.0))
                .collect();
            let (got, want) = (probe.scores(&x, &mut z), target(&x));
            for c in 0..k {
                assert!(
                    (got[c] - want[c]).abs() < 2e-2 * (1.0 + want[c].abs()),
                    "{got:?} vs {want:?}"
                );
            }
        }

        // One-hot targets of separable clusters (with a constant dimension, left out):
        // every fresh point is classified exactly.
        let (d, k) = (6, 3);
        let point = |r: &mut Rng, c: usize| -> Vec<f64> {
            (0..d)
                .map(|j| {
                    if j == d - 1 {
                        5.0
                    } else {
                        3.0 * f64::from(u8::from(j == c)) + uniform(r, -0.3, 0.3)
                    }
                })
                .collect()
        };
        let mut eq = Normal::new(d, k);
        for i in 0..300 {
            let c = i % k;
            eq.add_class(&point(&mut r, c), c);
        }
        let probe = eq.fit().unwrap();
        assert_eq!(
            probe.inv_std[d - 1],
            0.0,
            "the constant dimension is left out"
        );
        for i in 0..90 {
            let c = i % k;
            assert_eq!(probe.predict(&point(&mut r, c), &mut z), c);
        }
    }

    #[test]
    fn mean_iou_matches_a_hand_computed_confusion() {
        // Targets [0, 0, 1, 1, 2], predictions [0, 1, 1, 1, 0], 4 categories (3 absent).
        let k = 4;
        let mut cm = vec![0u64; k * k];
        for (t, p) in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0)] {
            cm[t * k + p] += 1;
        }
        // IoU 0: 1 / (2 + 2 - 1); 1: 2 / (2 + 3 - 2); 2: 0 / 1; 3 not counted.
        let want = (1.0 / 3.0 + 2.0 / 3.0 + 0.0) / 3.0;
        assert!((mean_iou(&cm, k) - want).abs() < 1e-12);
        assert_eq!(mean_iou(&vec![0; k * k], k), 0.0);
        // Class-agnostic: targets [bg, bg, obj, obj, obj], predictions [bg, obj, obj, obj,
        // bg]: background IoU 1 / 3, object IoU 2 / 4.
        let o = object_confusion(&cm, k);
        assert_eq!(o, [1, 1, 1, 2]);
        assert!((mean_iou(&o, 2) - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn patch_targets_take_the_majority_and_the_smaller_on_a_tie() {
        // 4x4 mask, 2x2 patches.
        let mask: Vec<u8> = vec![
            0, 1, 2, 2, //
            1, 1, 2, 0, //
            0, 0, 3, 1, //
            0, 3, 1, 3, //
        ];
        let geo = Geometry {
            cls: 0,
            patches: 4,
            width: 1,
            patch: 2,
            rows: 2,
            cols: 2,
        };
        assert_eq!(
            patch_targets(&mask, 4, 4, &geo, 4).unwrap(),
            vec![1, 2, 0, 1]
        );
        assert!(patch_targets(&mask, 4, 4, &geo, 3).is_err());
    }

    fn tower(cls: bool) -> VisionTransformer<B> {
        let device = Default::default();
        B::seed(&device, 3);
        VisionTransformer::new(
            &VitConfig {
                patch: 8,
                width: 32,
                depth: 2,
                heads: 2,
                mlp: 64,
                rope2d: true,
                abs: true,
                cls,
                pool: Pool::None,
                out: None,
                image: 32,
                ln_post: true,
                layer_scale: None,
                drop_path: 0.0,
            },
            &device,
        )
    }

    fn shapes(count: usize, res: usize, split: Split) -> Vec<Sample> {
        let ds = SyntheticShapes::new(count, 5, 4, 0.25, split).unwrap();
        (0..ds.len())
            .map(|i| ds.get(i, res, &mut Rng::new(0)).unwrap())
            .collect()
    }

    #[test]
    fn layer_analysis_scores_every_block_deterministically() {
        let device = Default::default();
        let train = shapes(60, 32, Split::Train);
        let held = shapes(60, 32, Split::HeldOut);
        assert_eq!((train.len(), held.len()), (45, 15));
        for cls in [true, false] {
            let vision = tower(cls);
            let started = std::time::Instant::now();
            let a = layer_analysis(&vision, &train, &held, 4, &device).unwrap();
            eprintln!(
                "layer_analysis (cls {cls}): {:.3} s",
                started.elapsed().as_secs_f64()
            );
            assert_eq!((a.classification.len(), a.dense.len()), (2, 2));
            for s in a.classification.iter().chain(&a.dense) {
                assert!((0.0..=1.0).contains(s), "{a:?}");
            }
            let b = layer_analysis(&vision, &train, &held, 4, &device).unwrap();
            assert_eq!(a, b, "same inputs, same scores");

            let j = a.to_json();
            assert_eq!(j["blocks"], json!([1, 2]));
            assert_eq!(j["last_dense"]["block"], json!(2));
            assert_eq!(j["last_dense"]["score"], json!(a.dense[1]));
            let top = a.classification[0].max(a.classification[1]);
            assert_eq!(j["best_classification"]["score"], json!(top));
            let svg = a.svg("layer-wise probes");
            assert!(
                svg.starts_with("<svg") && svg.contains("dense mIoU"),
                "{svg}"
            );
        }
    }

    #[test]
    fn layer_analysis_rejects_data_it_cannot_probe() {
        let device = Default::default();
        let vision = tower(true);
        let train = shapes(20, 32, Split::Train);
        let held = shapes(20, 32, Split::HeldOut);
        let unlabelled: Vec<Sample> = train
            .iter()
            .cloned()
            .map(|s| Sample { label: None, ..s })
            .collect();
        let err = layer_analysis(&vision, &unlabelled, &held, 4, &device).unwrap_err();
        assert!(err.contains("label"), "{err}");
        let err = layer_analysis(&vision, &train, &held, 2, &device).unwrap_err();
        assert!(err.contains("classes") || err.contains("above"), "{err}");
        let small = shapes(20, 16, Split::HeldOut);
        let err = layer_analysis(&vision, &train, &small, 4, &device).unwrap_err();
        assert!(err.contains("one size"), "{err}");
        let err = layer_analysis(&vision, &train, &[], 4, &device).unwrap_err();
        assert!(err.contains("held-out"), "{err}");
    }

    /// The brief's scale: width 96, depth 4, 64 px, 1,000 training and 400 held-out
    /// images (`cargo test --release -p pexc-runtime --lib probe -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn layer_analysis_timing_at_a_small_tower_scale() {
        let device = Default::default();
        B::seed(&device, 1);
        let vision = VisionTransformer::<B>::new(
            &VitConfig {
                patch: 8,
                width: 96,
                depth: 4,
                heads: 4,
                mlp: 384,
                rope2d: true,
                abs: true,
                cls: true,
                pool: Pool::None,
                out: None,
                image: 64,
                ln_post: true,
                layer_scale: None,
                drop_path: 0.0,
            },
            &device,
        );
        let ds = |split| SyntheticShapes::new(1400, 2, 8, 400.0 / 1400.0, split).unwrap();
        let get = |d: &SyntheticShapes| -> Vec<Sample> {
            (0..d.len())
                .map(|i| d.get(i, 64, &mut Rng::new(0)).unwrap())
                .collect()
        };
        let (train, held) = (get(&ds(Split::Train)), get(&ds(Split::HeldOut)));
        let started = std::time::Instant::now();
        let s = layer_analysis(&vision, &train, &held, 8, &device).unwrap();
        eprintln!(
            "{} train, {} held: {:.2} s\n{}",
            train.len(),
            held.len(),
            started.elapsed().as_secs_f64(),
            s.to_json()
        );
    }
}

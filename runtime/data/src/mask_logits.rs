//! The locality teacher of PE-spatial (pe-reference.md "Stage 4b") for generated data:
//! PE queries SAM 2.1 with a grid of point prompts and uses the mask logits of every prompt
//! as a feature map; for synthetic images the generator's own masks stand in for SAM.
//! Prompt k at grid point p_k selects the segment under it (the shape, or the
//! background), and its logit map is +1 on that segment and -1 elsewhere: what a perfect
//! segmenter answers. Maps are averaged over each patch of the student's grid, so a
//! patch's feature is one value per prompt.

/// Patch features (rows * cols, prompts), row-major over patches, of a (height, width)
/// mask (one label per pixel) for a student grid of `patch`-pixel patches and a
/// `grid` = (rows, cols) of point prompts placed at the centres of equal cells.
pub fn patch_features(
    mask: &[u8],
    height: usize,
    width: usize,
    patch: usize,
    grid: (usize, usize),
) -> Vec<f32> {
    let (gr, gc) = (grid.0.max(1), grid.1.max(1));
    let prompts: Vec<u8> = (0..gr * gc)
        .map(|k| {
            let (i, j) = (k / gc, k % gc);
            let y = (((2 * i + 1) * height) / (2 * gr)).min(height.saturating_sub(1));
            let x = (((2 * j + 1) * width) / (2 * gc)).min(width.saturating_sub(1));
            mask.get(y * width + x).copied().unwrap_or(0)
        })
        .collect();
    let p = patch.max(1);
    let (rows, cols) = (height / p, width / p);
    let mut out = vec![0f32; rows * cols * prompts.len()];
    let area = (p * p) as f32;
    for r in 0..rows {
        for c in 0..cols {
            let base = (r * cols + c) * prompts.len();
            for (k, &seg) in prompts.iter().enumerate() {
                let mut inside = 0usize;
                for y in r * p..(r + 1) * p {
                    for x in c * p..(c + 1) * p {
                        if mask.get(y * width + x) == Some(&seg) {
                            inside += 1;
                        }
                    }
                }
                // Mean of +1 (inside) and -1 (outside) over the patch.
                out[base + k] = 2.0 * inside as f32 / area - 1.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_on_a_segment_light_it_and_darken_the_rest() {
        // A 4 x 4 mask, left half label 1, right half background; 2 x 2 patches; a 1 x 2
        // prompt grid: one prompt in each half.
        let mut mask = vec![0u8; 16];
        for y in 0..4 {
            for x in 0..2 {
                mask[y * 4 + x] = 1;
            }
        }
        let f = patch_features(&mask, 4, 4, 2, (1, 2));
        // Patches (0,0) and (1,0) lie on the shape: prompt 0 (on the shape) +1, prompt 1
        // (background) -1; the right patches the reverse.
        assert_eq!(f, vec![1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);
        // A patch half on the segment averages to 0.
        let f = patch_features(&mask, 4, 4, 4, (1, 2));
        assert_eq!(f, vec![0.0, 0.0]);
    }
}

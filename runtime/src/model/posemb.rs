//! The learned absolute position table, resized to the current patch grid by bilinear
//! interpolation with PyTorch's `align_corners=False` and no antialiasing (pe-reference.md
//! "Computation", step 3). The resize is a fixed matrix applied to the table, so it is
//! exact, works for any (rows, cols) and is differentiable on every backend (burn's
//! `interpolate` has no autodiff backward in 0.21).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The 1-D linear interpolation weights (out, in) of PyTorch's bilinear resize.
pub fn linear_weights(input: usize, output: usize) -> Vec<f64> {
    let mut w = vec![0.0; output * input];
    let scale = input as f64 / output as f64;
    for o in 0..output {
        // PyTorch: src = scale * (dst + 0.5) - 0.5, clamped at 0 for linear modes.
        let src = (scale * (o as f64 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l1 = src - i0 as f64;
        w[o * input + i0] += 1.0 - l1;
        w[o * input + i1] += l1;
    }
    w
}

/// The (rows * cols, g * g) matrix that resizes a row-major g x g grid to rows x cols.
pub fn resize_matrix<B: Backend>(
    g: usize,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let wy = linear_weights(g, rows);
    let wx = linear_weights(g, cols);
    let mut m = vec![0f32; rows * cols * g * g];
    for r in 0..rows {
        for c in 0..cols {
            let o = r * cols + c;
            for i in 0..g {
                let a = wy[r * g + i];
                if a == 0.0 {
                    continue;
                }
                for j in 0..g {
                    m[o * g * g + i * g + j] = (a * wx[c * g + j]) as f32;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [rows * cols, g * g]), device)
}

/// The position embedding to add for a rows x cols grid: `table` is (cls + g*g, width),
/// the CLS row (when `cls`) first and unchanged.
pub fn resized<B: Backend>(
    table: Tensor<B, 2>,
    g: usize,
    rows: usize,
    cols: usize,
    cls: bool,
) -> Tensor<B, 2> {
    if rows == g && cols == g {
        return table;
    }
    let [t, w] = table.dims();
    let shift = usize::from(cls);
    let grid = table.clone().slice([shift..t, 0..w]);
    let m = resize_matrix::<B>(g, rows, cols, &grid.device());
    let resized = m.matmul(grid);
    if cls {
        Tensor::cat(vec![table.slice([0..1, 0..w]), resized], 0)
    } else {
        resized
    }
}

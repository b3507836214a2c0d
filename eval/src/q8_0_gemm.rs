//! Products with Q8_0 weights in integer arithmetic, in llama.cpp's order: the activations are
//! quantized to Q8_0 (blocks of 32 levels with an f16 scale), and each block's 32 products are
//! summed exactly in eight 32-bit lanes of four adjacent products; each lane, as f32, is
//! multiplied by the product of the two scales and accumulated into its own f32 lane with one
//! fused multiply-add; the eight lanes end in `hsum_float_8`'s order. `ggml_vec_dot_q8_0_q8_0`
//! (AVX2, used by `mul_mat_id` and by small `mul_mat`s) and tinyBLAS's `tinyBLAS_Q0_AVX` (the
//! other `mul_mat`s) both compute exactly this, so one kernel gives llama.cpp's bits for every
//! shape and thread count.

use half::f16;
use rayon::prelude::*;

use quantize::activation::q8_0_block;

use crate::lanes::dispatched;

/// Values per block.
const BLOCK: usize = 32;
/// Bytes per weight block: the f16 scale and 32 levels.
const BLOCK_BYTES: usize = 2 + BLOCK;
/// Activation rows one task multiplies with every weight row.
const TASK_ROWS: usize = 8;

/// Activation rows in Q8_0 form.
pub(crate) struct Q80Rows {
    n_blocks: usize,
    /// Scale of each block (f16-rounded), row after row.
    scales: Vec<f32>,
    /// Levels, row after row.
    levels: Vec<i8>,
}

impl Q80Rows {
    /// `n_rows` rows of `x` (whose row length is a multiple of 32), quantized.
    pub(crate) fn new(x: &[f32], n_rows: usize) -> Q80Rows {
        let n_blocks = x.len() / n_rows.max(1) / BLOCK;
        let mut levels = vec![0i8; x.len()];
        let scales = x
            .chunks(BLOCK)
            .zip(levels.chunks_mut(BLOCK))
            .map(|(block, levels)| q8_0_block(block, levels))
            .collect();
        Q80Rows {
            n_blocks,
            scales,
            levels,
        }
    }
}

/// `x` times the Q8_0 weight rows `w` (`m` rows) transposed into `out` (rows of `m`).
pub(crate) fn product(w: &[u8], x: &Q80Rows, m: usize, out: &mut [f32]) {
    let row_bytes = x.n_blocks * BLOCK_BYTES;
    assert!(
        w.len() == m * row_bytes && out.len() * x.n_blocks == x.scales.len() * m,
        "Q8_0 product of {} blocks by {m} rows",
        x.n_blocks
    );
    out.par_chunks_mut(TASK_ROWS * m)
        .enumerate()
        .for_each(|(task, out)| {
            let first = task * TASK_ROWS;
            for (r, wr) in w.chunks_exact(row_bytes).enumerate() {
                for (t, o) in out.chunks_exact_mut(m).enumerate() {
                    let at = (first + t) * x.n_blocks;
                    let scales = &x.scales[at..at + x.n_blocks];
                    let levels = &x.levels[at * BLOCK..(at + x.n_blocks) * BLOCK];
                    o[r] = dot(wr, scales, levels);
                }
            }
        });
}

dispatched! {
    /// One weight row (Q8_0 blocks) with one activation row: see the module comment.
    fn dot(w: &[u8], scales: &[f32], levels: &[i8]) -> f32 {
        let mut acc = [0.0f32; 8];
        for ((wb, &dx), xb) in w.chunks_exact(BLOCK_BYTES).zip(scales).zip(levels.chunks_exact(BLOCK)) {
            let d = f16::from_bits(u16::from_le_bytes([wb[0], wb[1]])).to_f32() * dx;
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (0..4)
                    .map(|k| wb[2 + 4 * l + k] as i8 as i32 * xb[4 * l + k] as i32)
                    .sum();
                *a = d.mul_add(s as f32, *a);
            }
        }
        // hsum_float_8: the high half onto the low, then pairs, then the last two.
        let r: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_eight_lanes_of_four_like_ggml() {
        // Two blocks whose lane sums are large and of mixed sign, so that another order of
        // summation rounds differently.
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.731)
            .collect();
        let wv: Vec<f32> = (0..64)
            .map(|i| ((i * 53 % 29) as f32 - 14.0) * 1.37e3)
            .collect();
        let mut w = vec![0u8; 2 * BLOCK_BYTES];
        quantize::quantize(formats::gguf::GgmlType::Q8_0, &wv, &mut w).unwrap();
        let xr = Q80Rows::new(&x, 1);
        let mut out = [0.0f32];
        product(&w, &xr, 1, &mut out);
        // The reference, written out: lanes of four products, fused per block, then hsum.
        let mut acc = [0.0f32; 8];
        for b in 0..2 {
            let wb = &w[b * BLOCK_BYTES..];
            let d = f16::from_bits(u16::from_le_bytes([wb[0], wb[1]])).to_f32() * xr.scales[b];
            for l in 0..8 {
                let mut s = 0i32;
                for k in 0..4 {
                    s += wb[2 + 4 * l + k] as i8 as i32 * xr.levels[b * 32 + 4 * l + k] as i32;
                }
                acc[l] = d.mul_add(s as f32, acc[l]);
            }
        }
        let lo = [
            acc[0] + acc[4],
            acc[1] + acc[5],
            acc[2] + acc[6],
            acc[3] + acc[7],
        ];
        assert_eq!(
            out[0].to_bits(),
            ((lo[0] + lo[2]) + (lo[1] + lo[3])).to_bits()
        );
        // And it is the product of the rounded values, to rounding.
        let mut wd = vec![0.0f32; 64];
        quantize::dequantize(formats::gguf::GgmlType::Q8_0, &w, &mut wd).unwrap();
        let mut xd = x.clone();
        quantize::activation::ActivationForm::Q8_0.round(&mut xd);
        let exact: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((out[0] as f64 - exact).abs() <= 1e-5 * exact.abs());
    }
}

//! Q1_0 and Q2_0, llama.cpp's 1-bit class: Q1_0 keeps the sign of each of 128 values with one f16
//! scale (their mean magnitude); Q2_0 keeps round(x/d) ∈ {−1, 0, 1, 2} for each of 64 values with
//! d = the block's largest magnitude. Neither uses importance weights.
//!
//! Layouts: Q1_0 `d: f16, qs: [u8; 16]`; Q2_0 `d: f16, qs: [u8; 16]`.
//! Reproduces `quantize_row_q{1,2}_0_ref` and `dequantize_row_q{1,2}_0`.

use super::search::{f16_at, f16_bytes};

/// Values per Q1_0 block.
pub const Q1_BLOCK: usize = 128;
/// Values per Q2_0 block.
pub const Q2_BLOCK: usize = 64;
/// Bytes per block of either type.
pub const BLOCK_BYTES: usize = 2 + 16;

/// Encodes Q1_0 blocks.
pub fn quantize_q1(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(Q1_BLOCK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let sum_abs = x.iter().fold(0f32, |s, v| s + v.abs());
        y[..2].copy_from_slice(&f16_bytes(sum_abs / Q1_BLOCK as f32));
        y[2..].fill(0);
        for (j, &v) in x.iter().enumerate() {
            if v >= 0.0 {
                y[2 + j / 8] |= 1 << (j % 8);
            }
        }
    }
}

/// Decodes Q1_0 blocks.
pub fn dequantize_q1(src: &[u8], dst: &mut [f32]) {
    for (y, x) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(Q1_BLOCK))
    {
        let d = f16_at(y, 0);
        for (j, v) in x.iter_mut().enumerate() {
            *v = if (y[2 + j / 8] >> (j % 8)) & 1 != 0 {
                d
            } else {
                -d
            };
        }
    }
}

/// Encodes Q2_0 blocks.
pub fn quantize_q2(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(Q2_BLOCK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut amax = 0f32;
        for v in x {
            if v.abs() > amax {
                amax = v.abs();
            }
        }
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        y[..2].copy_from_slice(&f16_bytes(amax));
        y[2..].fill(0);
        for (j, &v) in x.iter().enumerate() {
            let q = ((v * id).round() as i32 + 1).clamp(0, 3) as u8;
            y[2 + j / 4] |= q << ((j % 4) * 2);
        }
    }
}

/// Decodes Q2_0 blocks.
pub fn dequantize_q2(src: &[u8], dst: &mut [f32]) {
    for (y, x) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(Q2_BLOCK))
    {
        let d = f16_at(y, 0);
        for (j, v) in x.iter_mut().enumerate() {
            let q = (y[2 + j / 4] >> ((j % 4) * 2)) & 3;
            *v = (q as i32 - 1) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_keeps_signs_and_mean_magnitude() {
        let x: Vec<f32> = (0..Q1_BLOCK)
            .map(|i| if i % 3 == 0 { -2.0 } else { 2.0 })
            .collect();
        let mut y = [0u8; BLOCK_BYTES];
        quantize_q1(&x, &mut y);
        let mut back = vec![0f32; Q1_BLOCK];
        dequantize_q1(&y, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn q2_represents_ternary_blocks_exactly() {
        // d is the largest magnitude, so the quantizer only ever uses levels −1, 0 and 1.
        let x: Vec<f32> = (0..Q2_BLOCK)
            .map(|i| [-1.0f32, 0.0, 1.0][i % 3] * 0.25)
            .collect();
        let mut y = [0u8; BLOCK_BYTES];
        quantize_q2(&x, &mut y);
        let mut back = vec![0f32; Q2_BLOCK];
        dequantize_q2(&y, &mut back);
        assert_eq!(back, x);
    }
}

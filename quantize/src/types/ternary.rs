//! TQ1_0 and TQ2_0: BitNet b1.58 ternary weights {−1, 0, 1}·d with one f16 `d` (the block's largest
//! magnitude) per 256 values. TQ2_0 stores each trit in 2 bits; TQ1_0 packs five trits per byte as a
//! base-3 fixed-point fraction (and four in each of the last four bytes).
//!
//! Layouts: TQ1_0 `qs: [u8; 48], qh: [u8; 4], d: f16`; TQ2_0 `qs: [u8; 64], d: f16`.
//! Reproduces `quantize_row_tq{1,2}_0_ref` and `dequantize_row_tq{1,2}_0`.

use super::search::{f16_at, f16_bytes};
use super::QK_K;

/// Bytes per TQ1_0 block.
pub const TQ1_BLOCK_BYTES: usize = 48 + 4 + 2;
/// Bytes per TQ2_0 block.
pub const TQ2_BLOCK_BYTES: usize = 64 + 2;

/// The block's scale (largest magnitude) and its inverse (0 for an all-zero block).
fn scale(x: &[f32]) -> (f32, f32) {
    let d = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// The trit of `v` as 0, 1 or 2 (`lroundf(v·id) + 1`).
#[inline]
fn trit(v: f32, id: f32) -> u8 {
    ((v * id).round() as i32 + 1) as u8
}

/// Base-3 digits → the byte whose top trits they are (ceiling of q·256/243).
#[inline]
fn pack_trits(q: u8) -> u8 {
    (q as u16 * 256).div_ceil(243) as u8
}

/// Encodes TQ1_0 blocks.
pub fn quantize_tq1(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(TQ1_BLOCK_BYTES))
    {
        let (d, id) = scale(x);
        // 32 bytes of five trits from values 0..160, 16 bytes from 160..240, 4 bytes of four from 240..256.
        for (first, stride, bytes, at) in [(0usize, 32usize, 32usize, 0usize), (160, 16, 16, 32)] {
            for m in 0..bytes {
                let mut q = 0u8;
                for n in 0..5 {
                    q = q
                        .wrapping_mul(3)
                        .wrapping_add(trit(x[first + m + n * stride], id));
                }
                y[at + m] = pack_trits(q);
            }
        }
        for j in 0..4 {
            let mut q = 0u8;
            for m in 0..4 {
                q = q.wrapping_mul(3).wrapping_add(trit(x[240 + j + m * 4], id));
            }
            y[48 + j] = pack_trits(q.wrapping_mul(3));
        }
        y[52..54].copy_from_slice(&f16_bytes(d));
    }
}

/// Decodes TQ1_0 blocks.
pub fn dequantize_tq1(src: &[u8], dst: &mut [f32]) {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let value = |byte: u8, n: usize, d: f32| {
        let q = byte.wrapping_mul(POW3[n]);
        let xi = ((q as u16 * 3) >> 8) as i16;
        (xi - 1) as f32 * d
    };
    for (y, out) in src
        .chunks_exact(TQ1_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(y, 52);
        let mut o = 0;
        for (at, bytes) in [(0usize, 32usize), (32, 16)] {
            for n in 0..5 {
                for m in 0..bytes {
                    out[o] = value(y[at + m], n, d);
                    o += 1;
                }
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                out[o] = value(y[48 + j], n, d);
                o += 1;
            }
        }
    }
}

/// Encodes TQ2_0 blocks.
pub fn quantize_tq2(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(TQ2_BLOCK_BYTES))
    {
        let (d, id) = scale(x);
        for j in (0..64).step_by(32) {
            let xs = &x[4 * j..4 * j + 128];
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q += (trit(xs[m + n * 32], id) & 3) << (2 * n);
                }
                y[j + m] = q;
            }
        }
        y[64..66].copy_from_slice(&f16_bytes(d));
    }
}

/// Decodes TQ2_0 blocks.
pub fn dequantize_tq2(src: &[u8], dst: &mut [f32]) {
    for (y, out) in src
        .chunks_exact(TQ2_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(y, 64);
        let mut o = 0;
        for j in (0..64).step_by(32) {
            for l in 0..4 {
                for m in 0..32 {
                    let q = ((y[j + m] >> (l * 2)) & 3) as i8;
                    out[o] = (q - 1) as f32 * d;
                    o += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ternary_input() -> Vec<f32> {
        (0..QK_K)
            .map(|i| [0.5f32, 0.0, -0.5][(i * 7) % 3])
            .collect()
    }

    #[test]
    fn ternary_values_round_trip_exactly() {
        let x = ternary_input();
        let mut back = vec![0f32; QK_K];
        let mut y1 = vec![0u8; TQ1_BLOCK_BYTES];
        quantize_tq1(&x, &mut y1);
        dequantize_tq1(&y1, &mut back);
        assert_eq!(back, x, "TQ1_0");
        let mut y2 = vec![0u8; TQ2_BLOCK_BYTES];
        quantize_tq2(&x, &mut y2);
        dequantize_tq2(&y2, &mut back);
        assert_eq!(back, x, "TQ2_0");
    }
}

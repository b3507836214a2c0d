//! MXFP4 (OCP microscaling FP4): blocks of 32 values as one E8M0 exponent byte `e` and 32 E2M1
//! codes, two per byte (the first half of the block in the low nibbles); value = table[code] ·
//! 2^(e − 128), the table holding twice E2M1's values. Reproduces `quantize_row_mxfp4_ref` and
//! `dequantize_row_mxfp4` from ggml-quants.c (no importance weights: ggml ignores them).

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: the exponent and 16 bytes of codes.
pub const BLOCK_BYTES: usize = 1 + BLOCK / 2;

/// `kvalues_mxfp4`: twice the E2M1 values, codes 8–15 negative.
const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `ggml_e8m0_to_fp32_half`: 2^(e − 128), subnormal for e < 2.
fn half_scale(e: u8) -> f32 {
    let bits = match e {
        0 | 1 => 0x0020_0000u32 << e,
        _ => (e as u32 - 1) << 23,
    };
    f32::from_bits(bits)
}

/// `best_index_mxfp4`: the code whose value times `d` is nearest `x` (the first of equals).
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = (0u8, (KVALUES[0] as f32 * d - x).abs());
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best.1 {
            best = (i as u8, err);
        }
    }
    best.0
}

/// Encodes `src` (a multiple of 32 values).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let amax = x
            .iter()
            .fold(0.0f32, |m, v| if m < v.abs() { v.abs() } else { m });
        // `(uint8_t)(floorf(log2f(amax)) - 2 + 127)`, converted as x86 does (to int, low byte).
        let e = match amax > 0.0 {
            true => ((amax.log2().floor() - 2.0 + 127.0) as i32) as u8,
            false => 0,
        };
        let d = half_scale(e);
        y[0] = e;
        for j in 0..BLOCK / 2 {
            y[1 + j] = best_index(x[j], d) | best_index(x[BLOCK / 2 + j], d) << 4;
        }
    }
}

/// Decodes blocks back to f32.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (y, x) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = half_scale(y[0]);
        for (j, &q) in y[1..].iter().enumerate() {
            x[j] = KVALUES[(q & 0x0f) as usize] as f32 * d;
            x[BLOCK / 2 + j] = KVALUES[(q >> 4) as usize] as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_through_the_fp4_grid() {
        // amax 6 → e = floor(log2 6) − 2 + 127 = 127, d = 2⁻¹: the grid is ±{0, .5, 1, 1.5, 2,
        // 3, 4, 6}, on which these values lie exactly.
        let grid = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let x: Vec<f32> = (0..32)
            .map(|i| grid[i % 8] * if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let mut y = [0u8; BLOCK_BYTES];
        quantize(&x, &mut y);
        assert_eq!(y[0], 127);
        let mut back = [0f32; 32];
        dequantize(&y, &mut back);
        assert_eq!(back.to_vec(), x);
        // A value between grid points goes to the nearer one; a zero block has exponent 0.
        assert_eq!(best_index(2.4, 0.5), 4);
        assert_eq!(best_index(-2.6, 0.5), 13);
        let mut zero = [0xffu8; BLOCK_BYTES];
        quantize(&[0.0; 32], &mut zero);
        assert_eq!(zero, [0u8; BLOCK_BYTES]);
        assert_eq!(half_scale(0), 2f32.powi(-128));
        assert_eq!(half_scale(130), 4.0);
    }
}

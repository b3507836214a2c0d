//! Q8_0: blocks of 32 values as an f16 scale `d` and 32 signed bytes; value ≈ d · q.
//! Reproduces `quantize_row_q8_0_ref` / `dequantize_row_q8_0` from ggml-quants.c.

use half::f16;

/// Values per block.
pub const BLOCK: usize = 32;
/// Bytes per block: f16 scale + 32 × i8.
pub const BLOCK_BYTES: usize = 2 + BLOCK;

/// Encodes `src` (a multiple of 32 values).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(BLOCK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        y[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        for (q, v) in y[2..].iter_mut().zip(x) {
            *q = round_half_away(v * id) as i8 as u8;
        }
    }
}

/// C's `roundf` (half away from zero) for the |x| ≤ 128-ish values a Q8_0 block produces (and NaN
/// → 0, as the C conversion gives here), without a library call so the loop vectorises.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    let t = x as i32; // truncation: exact at these magnitudes
    let frac = x - t as f32;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Decodes blocks back to f32.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (y, x) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK))
    {
        let d = f16::from_bits(u16::from_le_bytes([y[0], y[1]])).to_f32();
        for (v, q) in x.iter_mut().zip(&y[2..]) {
            *v = *q as i8 as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_c_roundf_at_q8_0_magnitudes() {
        let mut xs: Vec<f32> = (-2560..=2560).map(|i| i as f32 / 20.0).collect();
        xs.extend([
            0.49999997,
            -0.49999997,
            126.5,
            -126.5,
            127.00001,
            -127.00001,
            -0.0,
        ]);
        for x in xs {
            assert_eq!(round_half_away(x), x.round() as i32, "{x}");
        }
        assert_eq!(round_half_away(f32::NAN) as i8, f32::NAN.round() as i8);
    }

    #[test]
    fn known_block() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut y = [0u8; BLOCK_BYTES];
        quantize(&x, &mut y);
        // amax 16 → d = 16/127; x = -16 → q = -127, x = 15 → q = round(15·127/16) = 119
        assert_eq!(
            f16::from_bits(u16::from_le_bytes([y[0], y[1]])),
            f16::from_f32(16.0 / 127.0)
        );
        assert_eq!(y[2] as i8, -127);
        assert_eq!(y[33] as i8, 119);
        let mut back = [0f32; 32];
        dequantize(&y, &mut back);
        assert!(back
            .iter()
            .zip(&x)
            .all(|(a, b)| (a - b).abs() <= 16.0 / 127.0 / 2.0 + 1e-3));
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let mut y = [0xffu8; BLOCK_BYTES];
        quantize(&[0.0; 32], &mut y);
        assert!(y.iter().all(|&b| b == 0));
    }
}

//! BF16: the top 16 bits of an f32, rounded to nearest even; NaNs stay NaN (quiet bit set), as
//! ggml's `ggml_compute_fp32_to_bf16` and gguf-py do.

/// Encodes one value as ggml does.
pub fn from_f32(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// Encodes `src` as little-endian bf16.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (d, &x) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&from_f32(x).to_le_bytes());
    }
}

/// Decodes little-endian bf16.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_ggml() {
        assert_eq!(from_f32(1.0), 0x3f80);
        assert_eq!(
            from_f32(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "tie to even (down)"
        );
        assert_eq!(
            from_f32(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even (up)"
        );
        assert_eq!(from_f32(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(
            from_f32(f32::from_bits(0x7f80_0001)),
            0x7fc0,
            "NaN stays NaN"
        );
        assert_eq!(from_f32(f32::MAX), 0x7f80, "overflow rounds to inf");
    }
}

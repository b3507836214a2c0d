//! F16: IEEE binary16, round to nearest even (F16C where the CPU has it; identical results).

use half::slice::HalfFloatSliceExt;

/// Encodes `src` as little-endian f16.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    let mut tmp = vec![half::f16::ZERO; src.len()];
    tmp.convert_from_f32_slice(src);
    for (d, h) in dst.chunks_exact_mut(2).zip(&tmp) {
        d.copy_from_slice(&h.to_bits().to_le_bytes());
    }
}

/// Decodes little-endian f16.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-11 lies exactly between two f16 values: ties go to the even one (1.0).
        let mut out = [0u8; 4];
        super::quantize(&[1.0 + 1.0 / 2048.0, 65520.0], &mut out);
        assert_eq!(u16::from_le_bytes([out[0], out[1]]), 0x3c00);
        assert_eq!(
            u16::from_le_bytes([out[2], out[3]]),
            0x7c00,
            "65520 rounds to +inf"
        );
    }
}

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

/// Decodes little-endian f16 (in runs of 64 through the slice conversion, which uses F16C where
/// the CPU has it).
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let mut run = [half::f16::ZERO; 64];
    for (d, s) in dst.chunks_mut(64).zip(src.chunks(128)) {
        let run = &mut run[..d.len()];
        for (h, b) in run.iter_mut().zip(s.chunks_exact(2)) {
            *h = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        run.convert_to_f32_slice(d);
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

//! What ggml's CPU matrix multiplication does to the activations before the dot products: it
//! converts them to the weight type's `vec_dot_type` (Q8_0, Q8_1, Q8_K, F16, BF16 or F32, from
//! `ggml-cpu.c`'s `type_traits_cpu`) and multiplies in that form. Rounding activations the same way
//! and then multiplying in f32 gives llama.cpp's products up to float summation order, which is
//! what lets smelt's perplexity and KL divergence agree with llama-perplexity's on quantized files.

use formats::gguf::GgmlType;
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::types::bf16;
use crate::types::search::nearest_int;
use crate::types::QK_K;

/// The form ggml converts activations into before multiplying them with a `weight` tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationForm {
    /// Kept as f32 (F32 weights).
    F32,
    /// Rounded to f16 (F16 weights).
    F16,
    /// Rounded to bf16 (BF16 weights).
    BF16,
    /// Blocks of 32 with an f16 scale `amax/127` and values rounded half-to-even (Q8_0 and Q8_1:
    /// the legacy types, IQ4_NL, Q1_0, Q2_0).
    Q8_0,
    /// Blocks of 256 with an f32 scale `-max/127` (the k-quants, IQ and TQ types).
    Q8K,
}

impl ActivationForm {
    /// The form used for `weight`'s type on ggml's CPU backend.
    pub fn for_weight(weight: GgmlType) -> ActivationForm {
        use GgmlType::*;
        match weight {
            F32 => ActivationForm::F32,
            F16 => ActivationForm::F16,
            BF16 => ActivationForm::BF16,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4_NL | Q1_0 | Q2_0 => ActivationForm::Q8_0,
            _ => ActivationForm::Q8K,
        }
    }

    /// Rounds `row` in place to the values this form represents. `row.len()` must be a multiple
    /// of the form's block (32 or 256), which holds for every row of a tensor of that type.
    pub fn round(self, row: &mut [f32]) {
        match self {
            ActivationForm::F32 => {}
            ActivationForm::F16 => {
                let mut halves = [f16::ZERO; 256];
                for chunk in row.chunks_mut(halves.len()) {
                    let halves = &mut halves[..chunk.len()];
                    halves.convert_from_f32_slice(chunk);
                    halves.convert_to_f32_slice(chunk);
                }
            }
            ActivationForm::BF16 => row
                .iter_mut()
                .for_each(|v| *v = f32::from_bits((bf16::from_f32(*v) as u32) << 16)),
            ActivationForm::Q8_0 => row.chunks_mut(32).for_each(round_q8_0_block),
            ActivationForm::Q8K => row.chunks_mut(QK_K).for_each(round_q8_k_block),
        }
    }
}

/// `quantize_row_q8_0` (the AVX2 path: `_mm256_round_ps` rounds half to even) followed by the
/// dot product's use of the f16 scale.
fn round_q8_0_block(x: &mut [f32]) {
    let mut levels = [0i8; 32];
    let d = q8_0_block(x, &mut levels);
    for (v, &q) in x.iter_mut().zip(&levels) {
        *v = q as f32 * d;
    }
}

/// `quantize_row_q8_0` (AVX2 path) on one block of 32: writes the levels (`x · 127 / amax`
/// rounded half to even) and returns the block's f16 scale `amax / 127` as f32.
#[inline(always)]
pub fn q8_0_block(x: &[f32], levels: &mut [i8]) -> f32 {
    let amax = abs_max(x);
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    f16::from_f32(amax / 127.0).to_f32()
}

/// `quantize_row_q8_1` (AVX2 path) on one block of 32: the levels as [`q8_0_block`] writes them,
/// the block's f16 scale, and its f16 `s = d · Σ levels` where `d` is the unrounded `amax / 127`
/// (the `_1` weight types' dot products add `m · s`), both as f32.
#[inline(always)]
pub fn q8_1_block(x: &[f32], levels: &mut [i8]) -> (f32, f32) {
    let d = q8_0_block(x, levels);
    let sum: i32 = levels.iter().map(|&q| q as i32).sum();
    let s = f16::from_f32(abs_max(x) / 127.0 * sum as f32).to_f32();
    (d, s)
}

/// `quantize_row_q8_K_ref` on one block of 256 (rounded back to f32 values in place).
fn round_q8_k_block(x: &mut [f32]) {
    let mut levels = [0i8; QK_K];
    let d = q8_k_block(x, &mut levels);
    for (v, &q) in x.iter_mut().zip(&levels) {
        *v = q as f32 * d;
    }
}

/// `quantize_row_q8_K_ref` on one block of 256: writes the levels and returns the scale `d`
/// (value = level · d; 0 for an all-zero block). The scale comes from the signed value of
/// largest magnitude, which maps to −127. Inlinable, so that a caller compiled for a wider CPU
/// vectorizes it with that CPU's registers.
#[inline(always)]
pub fn q8_k_block(x: &[f32], levels: &mut [i8]) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        levels.fill(0);
        return 0.0;
    }
    // The first value of that magnitude, as ggml's strictly-greater scan keeps it.
    let max = *x
        .iter()
        .find(|v| v.abs() == amax)
        .expect("amax is the magnitude of one of the values");
    let iscale = -127.0 / max;
    for (q, &v) in levels.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    1.0 / iscale
}

/// The largest magnitude in `x` (NaNs ignored, as ggml's comparisons ignore them). A maximum
/// does not depend on the order it is taken in, so this runs in independent lanes that vectorize
/// instead of one long dependency chain. Always inlined, so that it takes the registers of the
/// caller's CPU (eval's AVX-512 activation quantizer called it, compiled for plain x86-64).
#[inline(always)]
fn abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut groups = x.chunks_exact(lanes.len());
    for group in &mut groups {
        lanes
            .iter_mut()
            .zip(group)
            .for_each(|(m, v)| *m = m.max(v.abs()));
    }
    let rest = groups
        .remainder()
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(rest, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_k_keeps_the_extreme_value_and_rounds_the_rest_to_its_grid() {
        let mut x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * 0.01).collect();
        let orig = x.clone();
        ActivationForm::Q8K.round(&mut x);
        assert!((x[255] - orig[255]).abs() < 1e-6);
        let step = 1.55 / 127.0;
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() <= step / 2.0 + 1e-6);
            let k = a / step;
            assert!((k - k.round()).abs() < 1e-3, "{a} not on the grid");
        }
    }

    #[test]
    fn q8_0_uses_the_f16_scale_and_zero_blocks_stay_zero() {
        let mut x = vec![0.0f32; 64];
        x[33] = 1.0;
        x[34] = 0.3;
        ActivationForm::Q8_0.round(&mut x);
        assert!(x[..32].iter().all(|v| *v == 0.0));
        let d = f16::from_f32(1.0 / 127.0).to_f32();
        assert_eq!(x[33], 127.0 * d);
        assert_eq!(x[34], (0.3f32 * 127.0).round() * d);
    }

    #[test]
    fn forms_follow_ggml_cpu_vec_dot_types() {
        assert_eq!(
            ActivationForm::for_weight(GgmlType::Q4_K),
            ActivationForm::Q8K
        );
        assert_eq!(
            ActivationForm::for_weight(GgmlType::IQ4_NL),
            ActivationForm::Q8_0
        );
        assert_eq!(
            ActivationForm::for_weight(GgmlType::IQ4_XS),
            ActivationForm::Q8K
        );
        assert_eq!(
            ActivationForm::for_weight(GgmlType::F16),
            ActivationForm::F16
        );
    }
}

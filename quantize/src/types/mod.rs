//! One module per ggml type family; [`quantize_rows`], [`quantize`] and [`dequantize`] dispatch to
//! them. Every encoder reproduces ggml-quants.c at llama.cpp 0c1e57098 byte for byte, both its
//! reference path (no importance matrix) and, where the type has one, its importance-weighted path.

pub mod bf16;
pub mod f16;
pub mod iq1;
pub mod iq2;
pub mod iq3;
pub mod iq4;
mod iq_codebook;
mod iq_grids;
pub mod iq_integer;
pub mod iq_lattice;
mod iq_scan;
mod lanes;
pub mod legacy;
pub mod levels32;
pub mod low_bit;
pub mod mxfp4;
pub mod q2_k;
pub mod q3_k;
pub mod q45_k;
pub mod q6_k;
pub mod q8_0;
pub mod search;
pub mod ternary;

use formats::gguf::GgmlType;

use crate::QuantError;

/// Values per k-quant super-block.
pub const QK_K: usize = 256;

fn check(ty: GgmlType, n_values: usize, n_bytes: usize) -> Result<(), QuantError> {
    let block = ty.block_size();
    if !n_values.is_multiple_of(block) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            len: n_values,
            block,
        });
    }
    assert_eq!(
        n_bytes,
        n_values / block * ty.block_bytes(),
        "buffer size does not match {ty} for {n_values} values"
    );
    Ok(())
}

/// Calls `f` on each block of `block` values of a row, with its output bytes and its slice of the
/// row's importance weights.
fn for_each_block(
    x: &[f32],
    y: &mut [u8],
    qw: Option<&[f32]>,
    block: usize,
    block_bytes: usize,
    mut f: impl FnMut(&[f32], &mut [u8], Option<&[f32]>),
) {
    for (i, (xb, yb)) in x
        .chunks_exact(block)
        .zip(y.chunks_exact_mut(block_bytes))
        .enumerate()
    {
        f(xb, yb, qw.map(|w| &w[i * block..(i + 1) * block]));
    }
}

/// Whether smelt can encode `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    is_codebook(ty)
        || matches!(
            ty,
            F32 | F16
                | BF16
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q8_0
                | Q2_K
                | Q3_K
                | Q4_K
                | Q5_K
                | Q6_K
                | IQ4_NL
                | IQ4_XS
                | TQ1_0
                | TQ2_0
                | Q1_0
                | Q2_0
                | MXFP4
        )
}

/// The 1–3-bit codebook types (IQ1_S … IQ3_S): all weighted by an imatrix when given one.
fn is_codebook(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S
    )
}

/// Whether smelt can decode `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    can_quantize(ty)
}

/// Whether `ty`'s encoder uses importance weights when given them (llama.cpp ignores them for the
/// others).
pub fn uses_importance(ty: GgmlType) -> bool {
    use GgmlType::*;
    is_codebook(ty)
        || matches!(
            ty,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
        )
}

/// Whether `ty`'s encoder cannot run without importance weights (ggml asserts on them).
pub fn needs_importance(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ1_S | IQ2_XXS | IQ2_XS)
}

/// Encodes one row of `src` (its length is the row length) as `ty` into `dst`, weighting the
/// search with `imatrix` (one weight per column) where the type has a weighted path — the same
/// bytes `ggml_quantize_chunk` writes for that row.
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    check(ty, src.len(), dst.len())?;
    if let Some(w) = imatrix {
        assert_eq!(w.len(), src.len(), "one importance weight per column");
    }
    let qw = imatrix.filter(|_| uses_importance(ty));
    if needs_importance(ty) && qw.is_none() {
        return Err(QuantError::NeedsImportance(ty));
    }
    let need = || qw.expect("checked above");
    use GgmlType::*;
    match ty {
        F32 => dst
            .iter_mut()
            .zip(src.iter().flat_map(|v| v.to_le_bytes()))
            .for_each(|(d, s)| *d = s),
        F16 => f16::quantize(src, dst),
        BF16 => bf16::quantize(src, dst),
        Q8_0 => q8_0::quantize(src, dst),
        Q4_0 => legacy::Q4_0.quantize_row(src, dst, qw),
        Q4_1 => legacy::Q4_1.quantize_row(src, dst, qw),
        Q5_0 => legacy::Q5_0.quantize_row(src, dst, qw),
        Q5_1 => legacy::Q5_1.quantize_row(src, dst, qw),
        Q2_K => q2_k::quantize_row(src, dst, qw),
        Q3_K => q3_k::quantize_row(src, dst, qw),
        Q4_K => q45_k::Q4_K.quantize_row(src, dst, qw),
        Q5_K => q45_k::Q5_K.quantize_row(src, dst, qw),
        Q6_K => q6_k::quantize_row(src, dst, qw),
        IQ4_NL => iq4::quantize_row_nl(src, dst, qw),
        IQ4_XS => iq4::quantize_row_xs(src, dst, qw),
        IQ1_S => iq1::quantize_row_s(src, dst, need()),
        IQ1_M => iq1::quantize_row_m(src, dst, qw),
        IQ2_XXS => iq2::quantize_row_xxs(src, dst, need()),
        IQ2_XS => iq2::quantize_row_xs(src, dst, need()),
        IQ2_S => iq2::quantize_row_s(src, dst, qw),
        IQ3_XXS => iq3::quantize_row_xxs(src, dst, qw),
        IQ3_S => iq3::quantize_row_s(src, dst, qw),
        TQ1_0 => ternary::quantize_tq1(src, dst),
        TQ2_0 => ternary::quantize_tq2(src, dst),
        Q1_0 => low_bit::quantize_q1(src, dst),
        Q2_0 => low_bit::quantize_q2(src, dst),
        MXFP4 => mxfp4::quantize(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Encodes `src` (any number of whole blocks, treated as one row) as `ty` without importance
/// weights.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_row(ty, src, dst, None)
}

/// Decodes `src` (encoded as `ty`) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(ty, dst.len(), src.len())?;
    use GgmlType::*;
    match ty {
        F32 => dst
            .iter_mut()
            .zip(src.chunks_exact(4))
            .for_each(|(d, s)| *d = f32::from_le_bytes(s.try_into().unwrap())),
        F16 => f16::dequantize(src, dst),
        BF16 => bf16::dequantize(src, dst),
        Q8_0 => q8_0::dequantize(src, dst),
        Q4_0 => legacy::Q4_0.dequantize(src, dst),
        Q4_1 => legacy::Q4_1.dequantize(src, dst),
        Q5_0 => legacy::Q5_0.dequantize(src, dst),
        Q5_1 => legacy::Q5_1.dequantize(src, dst),
        Q2_K => q2_k::dequantize(src, dst),
        Q3_K => q3_k::dequantize(src, dst),
        Q4_K => q45_k::Q4_K.dequantize(src, dst),
        Q5_K => q45_k::Q5_K.dequantize(src, dst),
        Q6_K => q6_k::dequantize(src, dst),
        IQ4_NL => iq4::dequantize_nl(src, dst),
        IQ4_XS => iq4::dequantize_xs(src, dst),
        TQ1_0 => ternary::dequantize_tq1(src, dst),
        TQ2_0 => ternary::dequantize_tq2(src, dst),
        Q1_0 => low_bit::dequantize_q1(src, dst),
        Q2_0 => low_bit::dequantize_q2(src, dst),
        MXFP4 => mxfp4::dequantize(src, dst),
        IQ2_XXS => iq_lattice::dequantize_iq2_xxs(src, dst),
        IQ2_XS => iq_lattice::dequantize_iq2_xs(src, dst),
        IQ2_S => iq_lattice::dequantize_iq2_s(src, dst),
        IQ3_XXS => iq_lattice::dequantize_iq3_xxs(src, dst),
        IQ3_S => iq_lattice::dequantize_iq3_s(src, dst),
        IQ1_S => iq_lattice::dequantize_iq1_s(src, dst),
        IQ1_M => iq_lattice::dequantize_iq1_m(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decodable_type_has_matching_block_sizes() {
        // Decoding a zeroed buffer exercises each decoder's block walk against the type table.
        for ty in GgmlType::all().filter(|t| can_dequantize(*t)) {
            let n = ty.block_size() * 2 * if ty.block_size() == 1 { 256 } else { 1 };
            let src = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
            let mut dst = vec![1f32; n];
            dequantize(ty, &src, &mut dst).unwrap();
            assert!(dst.iter().all(|v| v.is_finite()), "{ty}");
        }
    }

    /// A loose accuracy bound for `ty` on values in [−0.1, 0.1): catches layout and sign
    /// mistakes; byte-exactness is checked against llama.cpp by the integration tests.
    fn rms_bound(ty: GgmlType) -> f32 {
        use GgmlType::*;
        match ty {
            F32 | F16 | BF16 => 1e-3,
            Q8_0 | Q6_K => 2e-3,
            Q5_0 | Q5_1 | Q5_K => 4e-3,
            Q4_0 | Q4_1 | Q4_K | IQ4_NL | IQ4_XS => 8e-3,
            Q3_K => 0.02,
            Q2_K => 0.03,
            _ => 0.08, // ternary and 1-bit types on uniform data
        }
    }

    #[test]
    fn every_encodable_type_round_trips_within_its_accuracy() {
        let n = 512;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 256) as f32 / 128.0 - 1.0) * 0.1)
            .collect();
        let weights: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
        for ty in GgmlType::all().filter(|t| can_quantize(*t)) {
            for qw in [None, Some(&weights[..])] {
                if qw.is_none() && needs_importance(ty) {
                    let mut y = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
                    let err = quantize_row(ty, &x, &mut y, None).unwrap_err();
                    assert!(matches!(err, QuantError::NeedsImportance(_)), "{ty}");
                    continue;
                }
                let mut y = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
                quantize_row(ty, &x, &mut y, qw).unwrap();
                let mut back = vec![0f32; n];
                dequantize(ty, &y, &mut back).unwrap();
                let rms = (x
                    .iter()
                    .zip(&back)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    / n as f32)
                    .sqrt();
                assert!(
                    rms < rms_bound(ty),
                    "{ty} (weighted: {}): rms {rms}",
                    qw.is_some()
                );
            }
        }
    }
}

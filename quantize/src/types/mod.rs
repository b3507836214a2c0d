//! One module per ggml type; [`quantize`] and [`dequantize`] dispatch to them.

pub mod bf16;
pub mod f16;
pub mod q8_0;

use formats::gguf::GgmlType;

use crate::QuantError;

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

/// Encodes `src` as `ty` into `dst` (exactly `ty.bytes_for(src.len())` bytes), as ggml's
/// reference quantizer does.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => dst
            .iter_mut()
            .zip(src.iter().flat_map(|v| v.to_le_bytes()))
            .for_each(|(d, s)| *d = s),
        GgmlType::F16 => f16::quantize(src, dst),
        GgmlType::BF16 => bf16::quantize(src, dst),
        GgmlType::Q8_0 => q8_0::quantize(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Decodes `src` (encoded as `ty`) into `dst`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => dst
            .iter_mut()
            .zip(src.chunks_exact(4))
            .for_each(|(d, s)| *d = f32::from_le_bytes(s.try_into().unwrap())),
        GgmlType::F16 => f16::dequantize(src, dst),
        GgmlType::BF16 => bf16::dequantize(src, dst),
        GgmlType::Q8_0 => q8_0::dequantize(src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

//! The IQ super-blocks as integers, the way ggml's tiled kernel unpacks them
//! (`tiled_unpack_src0` in ggml-cpu/tiled/tiled.cpp at 0c1e57098): each value a signed integer
//! level, one integer scale per 16 or 32 values and one f32 factor `d` per super-block, so that a
//! value is `d · scale · level`. A product with Q8_K activations is then an exact integer until
//! its single multiplication by `d`, which is how llama.cpp evaluates these types from 8
//! activation rows up. (The f32 decoders of [`super::iq_lattice`] round differently: they are
//! `dequantize_row_*`.)

use formats::gguf::GgmlType;

use super::iq4::KVALUES_IQ4NL;
use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::iq_lattice::{signs7, u16_at, u32_at};
use super::search::f16_at;
use super::QK_K;

/// One super-block as integers.
pub struct IntegerIq {
    /// Each value's signed level.
    pub levels: [i8; QK_K],
    /// One scale per `group` values (the first `256 / group` used).
    pub scales: [i32; 16],
    /// Values per scale: 16 or 32.
    pub group: usize,
    /// The super-block factor, as ggml folds it (`f16 d · 1/8` for the IQ2 and IQ1 types, `· 1/4`
    /// for IQ3_XXS).
    pub d: f32,
}

/// Whether [`unpack`] knows `ty`.
pub fn has_integer_form(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS
    )
}

/// Values per scale of a type [`unpack`] knows.
pub fn group(ty: GgmlType) -> usize {
    use GgmlType::*;
    match ty {
        IQ1_M | IQ2_XS | IQ2_S => 16,
        _ => 32,
    }
}

/// Writes 8 grid magnitudes with their signs (`tiled_unpk_sign32`, one entry).
#[inline]
fn signed8(entry: u64, signs: u8, out: &mut [i8]) {
    for (j, o) in out[..8].iter_mut().enumerate() {
        let v = (entry >> (8 * j)) as u8 as i8;
        *o = if signs & (1 << j) != 0 { -v } else { v };
    }
}

/// Writes 8 ternary grid values as `8·v + delta` (`tiled_unpk_tern8`).
#[inline]
fn ternary8(entry: u64, delta: i8, out: &mut [i8]) {
    for (j, o) in out[..8].iter_mut().enumerate() {
        *o = 8 * ((entry >> (8 * j)) as u8 as i8) + delta;
    }
}

/// Two 4-value IQ3 entries as one 8-value entry, first in the low half.
#[inline]
fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

/// Unpacks one super-block of `ty` (see [`has_integer_form`]; `None` for other types).
pub fn unpack(ty: GgmlType, x: &[u8]) -> Option<IntegerIq> {
    use GgmlType::*;
    let mut b = IntegerIq {
        levels: [0; QK_K],
        scales: [0; 16],
        group: group(ty),
        d: 0.0,
    };
    let l = &mut b.levels;
    match ty {
        IQ2_XXS => {
            b.d = f16_at(x, 0) * 0.125;
            for ib in 0..8 {
                let (idx, aux) = (u32_at(x, 2 + 8 * ib), u32_at(x, 6 + 8 * ib));
                b.scales[ib] = 2 * (aux >> 28) as i32 + 1;
                for k in 0..4 {
                    let entry = IQ2XXS_GRID[((idx >> (8 * k)) & 255) as usize];
                    signed8(entry, signs7(aux >> (7 * k)), &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ2_XS => {
            b.d = f16_at(x, 0) * 0.125;
            for ib in 0..8 {
                let sc = x[66 + ib] as i32;
                b.scales[2 * ib] = 2 * (sc & 0xf) + 1;
                b.scales[2 * ib + 1] = 2 * (sc >> 4) + 1;
                for k in 0..4 {
                    let q = u16_at(x, 2 + 2 * (4 * ib + k));
                    let entry = IQ2XS_GRID[(q & 511) as usize];
                    signed8(entry, signs7((q >> 9) as u32), &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ2_S => {
            b.d = f16_at(x, 0) * 0.125;
            let (qs, signs, qh, scales) = (&x[2..34], &x[34..66], &x[66..74], &x[74..82]);
            for ib in 0..8 {
                b.scales[2 * ib] = 2 * (scales[ib] & 0xf) as i32 + 1;
                b.scales[2 * ib + 1] = 2 * (scales[ib] >> 4) as i32 + 1;
                for k in 0..4 {
                    let idx = qs[4 * ib + k] as usize | ((qh[ib] as usize) << (8 - 2 * k) & 0x300);
                    signed8(IQ2S_GRID[idx], signs[4 * ib + k], &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ3_XXS => {
            b.d = f16_at(x, 0) * 0.25;
            let qs = &x[2..66];
            for ib in 0..8 {
                let aux = u32_at(x, 66 + 4 * ib);
                b.scales[ib] = 2 * (aux >> 28) as i32 + 1;
                for k in 0..4 {
                    let q = &qs[8 * ib + 2 * k..];
                    let entry = pair(IQ3XXS_GRID[q[0] as usize], IQ3XXS_GRID[q[1] as usize]);
                    signed8(entry, signs7(aux >> (7 * k)), &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ3_S => {
            b.d = f16_at(x, 0);
            let (qs, qh, signs, scales) = (&x[2..66], &x[66..74], &x[74..106], &x[106..110]);
            for ib in 0..8 {
                b.scales[ib] = 1 + 2 * ((scales[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32;
                let h = qh[ib] as usize;
                for k in 0..4 {
                    let q = &qs[8 * ib + 2 * k..];
                    let lo = IQ3S_GRID[q[0] as usize | ((h << (8 - 2 * k)) & 256)];
                    let hi = IQ3S_GRID[q[1] as usize | ((h << (7 - 2 * k)) & 256)];
                    signed8(pair(lo, hi), signs[4 * ib + k], &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ1_S => {
            b.d = f16_at(x, 0) * 0.125;
            for ib in 0..8 {
                let hw = u16_at(x, 34 + 2 * ib);
                b.scales[ib] = 2 * ((hw >> 12) & 7) as i32 + 1;
                let delta = if hw & 0x8000 != 0 { -1 } else { 1 };
                for k in 0..4 {
                    let idx = x[2 + 4 * ib + k] as usize | ((((hw >> (3 * k)) & 7) as usize) << 8);
                    ternary8(IQ1S_GRID[idx], delta, &mut l[32 * ib + 8 * k..]);
                }
            }
        }
        IQ1_M => {
            let sc: [u16; 4] = std::array::from_fn(|k| u16_at(x, 48 + 2 * k));
            let bits = (sc[0] >> 12)
                | ((sc[1] >> 8) & 0x00f0)
                | ((sc[2] >> 4) & 0x0f00)
                | (sc[3] & 0xf000);
            b.d = half::f16::from_bits(bits).to_f32() * 0.125;
            for ib in 0..8 {
                let (hw, sh) = (sc[ib / 2], 6 * (ib % 2));
                b.scales[2 * ib] = 2 * ((hw >> sh) & 7) as i32 + 1;
                b.scales[2 * ib + 1] = 2 * ((hw >> (sh + 3)) & 7) as i32 + 1;
                let (qs, qh) = (&x[4 * ib..4 * ib + 4], &x[32 + 2 * ib..32 + 2 * ib + 2]);
                for k in 0..4 {
                    let h = qh[k / 2] as usize;
                    let (high, bit) = match k % 2 {
                        0 => ((h << 8) & 0x700, 0x08),
                        _ => ((h << 4) & 0x700, 0x80),
                    };
                    let delta = if h & bit != 0 { -1 } else { 1 };
                    ternary8(
                        IQ1S_GRID[qs[k] as usize | high],
                        delta,
                        &mut l[32 * ib + 8 * k..],
                    );
                }
            }
        }
        IQ4_XS => {
            b.d = f16_at(x, 0);
            let scales_h = u16_at(x, 2);
            for ib in 0..8 {
                let lo = (x[4 + ib / 2] >> (4 * (ib % 2))) & 0xf;
                let hi = ((scales_h >> (2 * ib)) & 3) as u8;
                b.scales[ib] = (lo | hi << 4) as i32 - 32;
                let qs = &x[8 + 16 * ib..8 + 16 * ib + 16];
                for j in 0..16 {
                    l[32 * ib + j] = KVALUES_IQ4NL[(qs[j] & 0xf) as usize];
                    l[32 * ib + j + 16] = KVALUES_IQ4NL[(qs[j] >> 4) as usize];
                }
            }
        }
        _ => return None,
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{dequantize, quantize_row};

    /// `d · scale · level` is the decoded value up to the rounding of the decoders' own order.
    #[test]
    fn integer_form_times_its_factors_is_the_decoded_value() {
        let n = 2 * QK_K;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 509) as f32 / 254.0 - 1.0) * 0.3)
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32).collect();
        for ty in GgmlType::all().filter(|&t| has_integer_form(t)) {
            let bb = ty.block_bytes();
            let mut y = vec![0u8; n / QK_K * bb];
            quantize_row(ty, &x, &mut y, Some(&w)).unwrap();
            let mut back = vec![0f32; n];
            dequantize(ty, &y, &mut back).unwrap();
            for (blk, want) in y.chunks_exact(bb).zip(back.chunks_exact(QK_K)) {
                let b = unpack(ty, blk).unwrap();
                for (i, &v) in want.iter().enumerate() {
                    let got = b.d * (b.scales[i / b.group] * b.levels[i] as i32) as f32;
                    assert!(
                        (got - v).abs() <= 1e-6 * v.abs().max(1e-3),
                        "{ty} {i}: {got} vs {v}"
                    );
                }
            }
        }
    }
}

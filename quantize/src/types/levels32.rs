//! The 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) as the integers ggml's dot
//! products multiply: 32 signed levels in value order, the block's scale `d` and, for the `_1`
//! types, its min `m` (value `i` = `d · levels[i] + m`). ggml's AVX2 kernels unpack the same
//! levels before `vpdpbusd` (`bytes_from_nibbles_32` − 8 for Q4_0, the fifth bit for Q5_0, the
//! table for IQ4_NL), so integer products over them are exactly ggml's.

use formats::gguf::GgmlType;

use super::iq4::KVALUES_IQ4NL;
use super::legacy::{Legacy, Q4_0, Q4_1, Q5_0, Q5_1};
use super::search::f16_at;

/// Values per block.
pub const BLOCK: usize = 32;

/// One block as integers.
pub struct Levels32 {
    /// The levels in value order (−127..127).
    pub levels: [i8; BLOCK],
    /// The scale.
    pub d: f32,
    /// The min (0 for types without one).
    pub m: f32,
}

/// The 32-value block types [`unpack`] reads.
pub const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
];

/// Whether `ty` is one of [`TYPES`].
pub fn applies(ty: GgmlType) -> bool {
    TYPES.contains(&ty)
}

/// Whether `ty`'s values carry a min (the activations then need their block sums: Q8_1).
pub fn has_min(ty: GgmlType) -> bool {
    legacy(ty).is_some_and(|l| l.with_min)
}

fn legacy(ty: GgmlType) -> Option<Legacy> {
    match ty {
        GgmlType::Q4_0 => Some(Q4_0),
        GgmlType::Q4_1 => Some(Q4_1),
        GgmlType::Q5_0 => Some(Q5_0),
        GgmlType::Q5_1 => Some(Q5_1),
        _ => None,
    }
}

/// Block `block` (of `ty`, one that [`applies`]) as integers.
pub fn unpack(ty: GgmlType, block: &[u8]) -> Levels32 {
    let d = f16_at(block, 0);
    let mut levels = [0i8; BLOCK];
    if let Some(l) = legacy(ty) {
        let offset = if l.with_min { 0 } else { 1 << (l.bits - 1) };
        for (j, v) in levels.iter_mut().enumerate() {
            *v = (l.level(block, j) - offset) as i8;
        }
        let m = if l.with_min { f16_at(block, 2) } else { 0.0 };
        return Levels32 { levels, d, m };
    }
    match ty {
        GgmlType::Q8_0 => {
            for (v, &b) in levels.iter_mut().zip(&block[2..2 + BLOCK]) {
                *v = b as i8;
            }
        }
        GgmlType::IQ4_NL => {
            for (j, &b) in block[2..2 + BLOCK / 2].iter().enumerate() {
                levels[j] = KVALUES_IQ4NL[(b & 0xF) as usize];
                levels[j + BLOCK / 2] = KVALUES_IQ4NL[(b >> 4) as usize];
            }
        }
        _ => panic!("{ty:?} is not a 32-value block type"),
    }
    Levels32 { levels, d, m: 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_times_scale_plus_min_are_the_decoded_values() {
        let x: Vec<f32> = (0..128)
            .map(|i| ((i * 37 % 41) as f32 - 20.0) * 0.13)
            .collect();
        for ty in TYPES {
            assert!(applies(ty));
            let mut bytes = vec![0u8; x.len() / BLOCK * ty.block_bytes()];
            crate::quantize(ty, &x, &mut bytes).unwrap();
            let mut want = vec![0.0f32; x.len()];
            crate::dequantize(ty, &bytes, &mut want).unwrap();
            for (b, block) in bytes.chunks_exact(ty.block_bytes()).enumerate() {
                let u = unpack(ty, block);
                for (j, &l) in u.levels.iter().enumerate() {
                    let got = u.d * l as f32 + u.m;
                    assert_eq!(got, want[b * BLOCK + j], "{ty:?} block {b} value {j}");
                }
            }
        }
        assert!(!applies(GgmlType::Q4_K));
    }
}

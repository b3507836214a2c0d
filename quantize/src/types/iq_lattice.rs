//! Decoders for the lattice ("i-quant") types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and
//! IQ3_S: groups of 4 or 8 values are indices into fixed codebooks ([`super::iq_grids`]) with sign
//! bits and small group scales. smelt reads these types so that it can evaluate anyone's GGUF; it
//! does not write them yet. Each function reproduces `dequantize_row_<type>` from ggml-quants.c.

use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::search::f16_at;
use super::QK_K;

/// The IQ1 grid offset.
const IQ1S_DELTA: f32 = 0.125;

/// Bytes per super-block of each type.
pub mod block_bytes {
    /// IQ2_XXS.
    pub const IQ2_XXS: usize = 2 + 64;
    /// IQ2_XS.
    pub const IQ2_XS: usize = 2 + 64 + 8;
    /// IQ2_S.
    pub const IQ2_S: usize = 2 + 64 + 8 + 8;
    /// IQ3_XXS.
    pub const IQ3_XXS: usize = 2 + 96;
    /// IQ3_S.
    pub const IQ3_S: usize = 2 + 64 + 8 + 32 + 4;
    /// IQ1_S.
    pub const IQ1_S: usize = 2 + 32 + 16;
    /// IQ1_M.
    pub const IQ1_M: usize = 32 + 16 + 8;
}

/// Byte `j` of a codebook entry.
#[inline]
fn grid_byte(entry: u64, j: usize) -> u8 {
    (entry >> (8 * j)) as u8
}

/// `ksigns_iq2xs`: seven sign bits plus an eighth that makes the count of set bits even.
#[inline]
pub(super) fn signs7(bits: u32) -> u8 {
    let b = (bits & 127) as u8;
    b | (((b.count_ones() & 1) as u8) << 7)
}

#[inline]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & (1 << j) != 0 {
        -1.0
    } else {
        1.0
    }
}

#[inline]
pub(super) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Decodes IQ2_XXS super-blocks.
pub fn dequantize_iq2_xxs(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ2_XXS)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        for ib32 in 0..8 {
            let idx = u32_at(x, 2 + 8 * ib32);
            let aux = u32_at(x, 6 + 8 * ib32);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[((idx >> (8 * l)) & 255) as usize];
                let signs = signs7(aux >> (7 * l));
                for j in 0..8 {
                    y[32 * ib32 + 8 * l + j] = db * grid_byte(grid, j) as f32 * sign(signs, j);
                }
            }
        }
    }
}

/// Decodes IQ2_XS super-blocks.
pub fn dequantize_iq2_xs(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ2_XS)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        for ib32 in 0..8 {
            let sc = x[66 + ib32];
            let db = [
                d * (0.5 + (sc & 0xf) as f32) * 0.25,
                d * (0.5 + (sc >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let q = u16_at(x, 2 + 2 * (4 * ib32 + l));
                let grid = IQ2XS_GRID[(q & 511) as usize];
                let signs = signs7((q >> 9) as u32);
                for j in 0..8 {
                    y[32 * ib32 + 8 * l + j] =
                        db[l / 2] * grid_byte(grid, j) as f32 * sign(signs, j);
                }
            }
        }
    }
}

/// Decodes IQ2_S super-blocks.
pub fn dequantize_iq2_s(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ2_S)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        let (qs, signs, qh, scales) = (&x[2..34], &x[34..66], &x[66..74], &x[74..82]);
        for ib32 in 0..8 {
            let db = [
                d * (0.5 + (scales[ib32] & 0xf) as f32) * 0.25,
                d * (0.5 + (scales[ib32] >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let idx =
                    qs[4 * ib32 + l] as usize | (((qh[ib32] as usize) << (8 - 2 * l)) & 0x300);
                let grid = IQ2S_GRID[idx];
                let s = signs[4 * ib32 + l];
                for j in 0..8 {
                    y[32 * ib32 + 8 * l + j] = db[l / 2] * grid_byte(grid, j) as f32 * sign(s, j);
                }
            }
        }
    }
}

/// Decodes IQ3_XXS super-blocks.
pub fn dequantize_iq3_xxs(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ3_XXS)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        let qs = &x[2..66];
        for ib32 in 0..8 {
            let aux = u32_at(x, 66 + 4 * ib32);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for l in 0..4 {
                let signs = signs7(aux >> (7 * l));
                let g1 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l] as usize] as u64;
                let g2 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l + 1] as usize] as u64;
                let o = 32 * ib32 + 8 * l;
                for j in 0..4 {
                    y[o + j] = db * grid_byte(g1, j) as f32 * sign(signs, j);
                    y[o + j + 4] = db * grid_byte(g2, j) as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

/// Decodes IQ3_S super-blocks.
pub fn dequantize_iq3_s(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ3_S)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        let (qs, qh, signs, scales) = (&x[2..66], &x[66..74], &x[74..106], &x[106..110]);
        for ib32 in 0..8 {
            let sc = scales[ib32 / 2] >> (4 * (ib32 % 2));
            let db = d * (1 + 2 * (sc & 0xf) as i32) as f32;
            let h = qh[ib32] as usize;
            for l in 0..4 {
                let g1 =
                    IQ3S_GRID[qs[8 * ib32 + 2 * l] as usize | ((h << (8 - 2 * l)) & 256)] as u64;
                let g2 = IQ3S_GRID[qs[8 * ib32 + 2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256)]
                    as u64;
                let s = signs[4 * ib32 + l];
                let o = 32 * ib32 + 8 * l;
                for j in 0..4 {
                    y[o + j] = db * grid_byte(g1, j) as f32 * sign(s, j);
                    y[o + j + 4] = db * grid_byte(g2, j) as f32 * sign(s, j + 4);
                }
            }
        }
    }
}

/// Decodes IQ1_S super-blocks.
pub fn dequantize_iq1_s(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ1_S)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(x, 0);
        for ib in 0..8 {
            let qh = u16_at(x, 34 + 2 * ib);
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for l in 0..4 {
                let idx = x[2 + 4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
                let grid = IQ1S_GRID[idx];
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] = dl * (grid_byte(grid, j) as i8 as f32 + delta);
                }
            }
        }
    }
}

/// Decodes IQ1_M super-blocks.
pub fn dequantize_iq1_m(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src
        .chunks_exact(block_bytes::IQ1_M)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let sc: [u16; 4] = std::array::from_fn(|k| u16_at(x, 48 + 2 * k));
        let scale_bits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = half::f16::from_bits(scale_bits).to_f32();
        for ib in 0..8 {
            let s = sc[ib / 2] >> (6 * (ib % 2));
            let dl = [
                d * (2 * (s & 7) + 1) as f32,
                d * (2 * ((s >> 3) & 7) + 1) as f32,
            ];
            let (qs, qh) = (&x[4 * ib..4 * ib + 4], &x[32 + 2 * ib..32 + 2 * ib + 2]);
            let idx = [
                qs[0] as usize | ((qh[0] as usize) << 8 & 0x700),
                qs[1] as usize | ((qh[0] as usize) << 4 & 0x700),
                qs[2] as usize | ((qh[1] as usize) << 8 & 0x700),
                qs[3] as usize | ((qh[1] as usize) << 4 & 0x700),
            ];
            let delta = |bit: u8| if bit != 0 { -IQ1S_DELTA } else { IQ1S_DELTA };
            let deltas = [
                delta(qh[0] & 0x08),
                delta(qh[0] & 0x80),
                delta(qh[1] & 0x08),
                delta(qh[1] & 0x80),
            ];
            for l in 0..4 {
                let grid = IQ1S_GRID[idx[l]];
                for j in 0..8 {
                    y[32 * ib + 8 * l + j] =
                        dl[l / 2] * (grid_byte(grid, j) as i8 as f32 + deltas[l]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_table_matches_ggml() {
        // First and last rows of ksigns_iq2xs in ggml-common.h.
        let first: Vec<u8> = (0..8).map(signs7).collect();
        assert_eq!(first, [0, 129, 130, 3, 132, 5, 6, 135]);
        assert_eq!(signs7(127), 255);
        assert_eq!(signs7(126), 126);
    }
}

//! IQ4_NL and IQ4_XS: 4-bit indices into the fixed non-linear table [`KVALUES_IQ4NL`].
//! IQ4_NL has blocks of 32 with one f16 scale; IQ4_XS has super-blocks of 256 with eight 6-bit
//! group scales under one f16 `d`. Both come from `quantize_row_iq4_nl_impl` (ggml-quants.c), which
//! llama-quantize always calls with 7 scale trials, with or without importance weights.
//!
//! Layouts: IQ4_NL `d: f16, qs: [u8; 16]`; IQ4_XS `d: f16, scales_h: u16, scales_l: [u8; 4],
//! qs: [u8; 128]`.

use super::search::{
    best_index_int8, f16_at, f16_bytes, nearest_int, signed_absmax, GROUP_MAX_EPS,
};
use super::{for_each_block, QK_K};

/// The 16 levels of the non-linear 4-bit grid.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Group size of both types.
const GROUP: usize = 32;
/// Scale trials on each side of the initial guess, as llama-quantize passes them.
const NTRY: i32 = 7;

/// Bytes per IQ4_NL block.
pub const NL_BLOCK_BYTES: usize = 2 + 16;
/// Bytes per IQ4_XS super-block.
pub const XS_BLOCK_BYTES: usize = 2 + 2 + 4 + QK_K / 2;

/// Encodes one IQ4_NL row.
pub fn quantize_row_nl(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, GROUP, NL_BLOCK_BYTES, quantize_super_block);
}

/// Encodes one IQ4_XS row.
pub fn quantize_row_xs(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, XS_BLOCK_BYTES, quantize_super_block);
}

/// The best scale for one group of 32 (`None` for an all-zero group), and its levels in `lb`.
fn group_scale(xb: &[f32], weight: &[f32], lb: &mut [u8]) -> Option<f32> {
    let values = &KVALUES_IQ4NL;
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let mut d = -max / values[0] as f32;
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for j in 0..GROUP {
        let l = best_index_int8(values, id * xb[j]);
        lb[j] = l as u8;
        let q = values[l] as f32;
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        id = (itry + values[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for j in 0..GROUP {
            let q = values[best_index_int8(values, id * xb[j])] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// `quantize_row_iq4_nl_impl` for one super-block of `x.len()` values (32: IQ4_NL, 256: IQ4_XS).
fn quantize_super_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let values = &KVALUES_IQ4NL;
    let n = x.len();
    let n_groups = n / GROUP;
    let mut sigma2 = x.iter().fold(0f32, |s, v| s + v * v);
    sigma2 *= 2.0 / n as f32;
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / GROUP];
    let mut weight = [0f32; GROUP];
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for ib in 0..n_groups {
        let xb = &x[ib * GROUP..(ib + 1) * GROUP];
        match qw {
            Some(qw) => {
                for j in 0..GROUP {
                    weight[j] = qw[ib * GROUP + j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..GROUP {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let Some(d) = group_scale(xb, &weight, &mut l[ib * GROUP..(ib + 1) * GROUP]) else {
            scales[ib] = 0.0;
            continue;
        };
        scales[ib] = d;
        if d.abs() > amax_scale {
            amax_scale = d.abs();
            max_scale = d;
        }
    }
    let qs_at;
    if n_groups > 1 {
        y[2..8].fill(0);
        let d = -max_scale / 32.0;
        y[..2].copy_from_slice(&f16_bytes(d));
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        for ib in 0..n_groups {
            let ls = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * ls as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..GROUP {
                l[ib * GROUP + j] = best_index_int8(values, idl * x[ib * GROUP + j]) as u8;
            }
            let ls = (ls + 32) as u8;
            let (l_l, l_h) = (ls & 0xF, ls >> 4);
            if ib % 2 == 0 {
                y[4 + ib / 2] = l_l;
            } else {
                y[4 + ib / 2] |= l_l << 4;
            }
            scales_h |= (l_h as u16) << (2 * (ib % 8));
        }
        y[2..4].copy_from_slice(&scales_h.to_le_bytes());
        qs_at = 8;
    } else {
        y[..2].copy_from_slice(&f16_bytes(scales[0]));
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for j in 0..n {
            l[j] = best_index_int8(values, id * x[j]) as u8;
        }
        qs_at = 2;
    }
    let q4 = &mut y[qs_at..qs_at + n / 2];
    for i in 0..n / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

/// Decodes IQ4_NL blocks.
pub fn dequantize_nl(src: &[u8], dst: &mut [f32]) {
    for (yb, out) in src
        .chunks_exact(NL_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(GROUP))
    {
        let d = f16_at(yb, 0);
        for j in 0..16 {
            out[j] = d * KVALUES_IQ4NL[(yb[2 + j] & 0xF) as usize] as f32;
            out[j + 16] = d * KVALUES_IQ4NL[(yb[2 + j] >> 4) as usize] as f32;
        }
    }
}

/// Decodes IQ4_XS super-blocks.
pub fn dequantize_xs(src: &[u8], dst: &mut [f32]) {
    for (yb, out) in src
        .chunks_exact(XS_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(yb, 0);
        let scales_h = u16::from_le_bytes([yb[2], yb[3]]);
        for ib in 0..QK_K / 32 {
            let ls = ((yb[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
                | ((((scales_h >> (2 * ib)) & 3) << 4) as i32);
            let dl = d * (ls - 32) as f32;
            let qs = &yb[8 + 16 * ib..8 + 16 * ib + 16];
            for j in 0..16 {
                out[32 * ib + j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                out[32 * ib + j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

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
use super::{for_each_block, lanes, QK_K};

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

/// The best scale for one group of 32 (`None` for an all-zero group). (ggml also keeps the
/// levels of the first guess; every caller recomputes them from the final scale.)
fn group_scale(xb: &[f32], weight: &[f32]) -> Option<f32> {
    let values = &KVALUES_IQ4NL;
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let mut d = -max / values[0] as f32;
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for j in 0..GROUP {
        let q = values[best_index_int8(values, id * xb[j])] as f32;
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
    let mut weight = [0f32; QK_K];
    for (ib, (xb, w)) in x
        .chunks_exact(GROUP)
        .zip(weight.chunks_exact_mut(GROUP))
        .enumerate()
    {
        match qw {
            Some(qw) => {
                for j in 0..GROUP {
                    w[j] = qw[ib * GROUP + j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..GROUP {
                    w[j] = xb[j] * xb[j];
                }
            }
        }
    }
    // IQ4_XS's eight groups are independent searches: one per lane.
    let mut found = [None; 8];
    if n_groups == 8 {
        found = lanes::iq4_group_scales::<GROUP>(x, &weight);
    } else {
        found[0] = group_scale(x, &weight[..GROUP]);
    }
    let (mut max_scale, mut amax_scale) = (0f32, 0f32);
    for (ib, &d) in found[..n_groups].iter().enumerate() {
        let Some(d) = d else {
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
            let r = ib * GROUP..(ib + 1) * GROUP;
            lanes::iq4_levels::<GROUP>(&x[r.clone()], idl, &mut l[r]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that land on levels, on midpoints between them, beyond the ends, and NaN.
    fn awkward() -> Vec<f32> {
        let t = KVALUES_IQ4NL.map(|v| v as f32);
        let mut v: Vec<f32> = t.to_vec();
        v.extend(t.windows(2).map(|w| 0.5 * (w[0] + w[1])));
        v.extend([
            -200.0,
            200.0,
            -127.0,
            113.0,
            0.0,
            -0.0,
            f32::NAN,
            1e-30,
            -1e30,
        ]);
        v.extend((0..200).map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 260.0));
        v.truncate(v.len() / 8 * 8);
        v
    }

    #[test]
    fn lane_levels_equal_best_index_int8() {
        let x = awkward();
        for idl in [1.0, 0.5, -1.0, 3.7] {
            let mut got = vec![0u8; x.len()];
            for (xs, ls) in x.chunks_exact(8).zip(got.chunks_exact_mut(8)) {
                lanes::iq4_levels::<8>(xs, idl, ls);
            }
            for (&v, &g) in x.iter().zip(&got) {
                let want = best_index_int8(&KVALUES_IQ4NL, idl * v);
                assert_eq!(g as usize, want, "{v} × {idl}");
            }
        }
    }

    #[test]
    fn lane_group_search_equals_the_scalar_one() {
        let base = awkward();
        for seed in 0..40usize {
            // Groups of every kind: scaled awkward values, all zero, one spike, constants.
            let x: Vec<f32> = (0..QK_K)
                .map(|i| match (i / GROUP + seed) % 4 {
                    0 => base[(i * 31 + seed) % base.len()] * 1e-3,
                    1 => 0.0,
                    2 => f32::from(i % GROUP == seed % GROUP) * 0.7,
                    _ => 0.25,
                })
                .map(|v| if v.is_nan() { 0.1 } else { v })
                .collect();
            let w: Vec<f32> = (0..QK_K).map(|i| ((i + seed) % 5) as f32).collect();
            let got = lanes::iq4_group_scales::<GROUP>(&x, &w);
            for (k, g) in got.iter().enumerate() {
                let r = k * GROUP..(k + 1) * GROUP;
                let want = group_scale(&x[r.clone()], &w[r]);
                assert_eq!(
                    g.map(f32::to_bits),
                    want.map(f32::to_bits),
                    "seed {seed}, group {k}"
                );
            }
        }
    }
}

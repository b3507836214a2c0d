//! Q6_K: super-blocks of 256 values in 16 groups of 16 with signed 8-bit group scales under one f16
//! `d`; values are 6-bit levels −32..31 split into four low bits and two high bits.
//! Layout: `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16`. Reproduces
//! `quantize_row_q6_K_ref`, `quantize_row_q6_K_impl` and `dequantize_row_q6_K`.

use super::lanes::{qx_lanes, to_lanes};
use super::search::{f16_at, f16_bytes, nearest_int, GROUP_MAX_EPS};
use super::{for_each_block, QK_K};

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 128 + 64 + 16 + 2;
const SCALES: usize = 192;
const D: usize = 208;

/// Encodes one row; `qw` (importance weights) weights the group searches.
pub fn quantize_row(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, BLOCK_BYTES, quantize_block);
}

fn quantize_block(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for half in 0..2 {
        let mut lanes = [[0i8; 8]; 16];
        let weights = qw.map(|w| to_lanes::<16>(w, 8 * half));
        let s = qx_lanes::<16>(32, &to_lanes(x, 8 * half), weights.as_ref(), &mut lanes);
        scales[8 * half..8 * half + 8].copy_from_slice(&s);
        for (i, row) in lanes.iter().enumerate() {
            for (k, &q) in row.iter().enumerate() {
                l[16 * (8 * half + k) + i] = q;
            }
        }
    }
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for &scale in &scales {
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let iscale = -128.0f32 / max_scale;
    y[D..D + 2].copy_from_slice(&f16_bytes(1.0 / iscale));
    for ib in 0..16 {
        y[SCALES + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = f16_at(y, D);
    for j in 0..16 {
        let d = d_all * y[SCALES + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for (h, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut ql[64 * h..64 * h + 64];
        let qh = &mut qh[32 * h..32 * h + 32];
        for i in 0..32 {
            let q = [l[j + i], l[j + i + 32], l[j + i + 64], l[j + i + 96]].map(|v| v as u8);
            ql[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// One super-block's levels (−32..31, in value order), group scales and `d`.
pub fn unpack(yb: &[u8]) -> ([i8; QK_K], [i8; 16], f32) {
    let mut levels = [0i8; QK_K];
    for h in 0..2 {
        let ql = &yb[64 * h..64 * h + 64];
        let qh = &yb[128 + 32 * h..128 + 32 * h + 32];
        let y = &mut levels[128 * h..128 * h + 128];
        for l in 0..32 {
            y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    let scales = std::array::from_fn(|g| yb[SCALES + g] as i8);
    (levels, scales, f16_at(yb, D))
}

/// Decodes super-blocks back to f32.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (yb, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let (levels, scales, d) = unpack(yb);
        for (i, (y, &q)) in out.iter_mut().zip(&levels).enumerate() {
            *y = d * scales[i / 16] as f32 * q as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_is_all_zero() {
        let mut y = vec![0x55u8; BLOCK_BYTES];
        quantize_row(&[0.0; QK_K], &mut y, None);
        assert!(y.iter().all(|&b| b == 0));
    }
}

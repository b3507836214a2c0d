//! Q3_K: super-blocks of 256 values in 16 groups of 16 with signed 6-bit group scales under one f16
//! `d`; values are 3-bit levels −4..3 split into two low bits and a high-bit mask.
//! Layout: `hmask: [u8; 32]`, `qs: [u8; 64]`, `scales: [u8; 12]`, `d: f16`. Reproduces
//! `quantize_row_q3_K_ref`, `quantize_row_q3_K_impl` and `dequantize_row_q3_K`.

use super::search::{
    f16_at, f16_bytes, make_q3_quants, make_qx_quants, nearest_int, pack_2bit, sum_squares,
};
use super::{for_each_block, QK_K};

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 32 + 64 + 12 + 2;
const SCALES: usize = 96;
const D: usize = 108;

/// Encodes one row; `qw` (importance weights) selects the weighted search.
pub fn quantize_row(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, BLOCK_BYTES, |xb, yb, qw| match qw {
        None => quantize_block_ref(xb, yb),
        Some(qw) => quantize_block_weighted(xb, yb, qw),
    });
}

/// Stores the 6-bit value `l` (0..63) as scale `j` of the 12 packed scale bytes.
fn put_scale(scales: &mut [u8], j: usize, l: i32) {
    if j < 8 {
        scales[j] = (l & 0xF) as u8;
    } else {
        scales[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    scales[j % 4 + 8] |= ((l >> 4) << (2 * (j / 4))) as u8;
}

/// Reads signed scale `j` (−32..31) from the 12 packed scale bytes.
fn get_scale(scales: &[u8], j: usize) -> i8 {
    let low = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    } as i8;
    (low | ((((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) as i8)) - 32
}

// Index loops kept as in ggml-quants.c, so the port reads line by line against it.
#[allow(clippy::needless_range_loop)]
fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(
            4,
            &x[16 * j..16 * j + 16],
            &mut l[16 * j..16 * j + 16],
            true,
        );
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    y[SCALES..SCALES + 12].fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        for j in 0..16 {
            // C stores nearest_int's result in an int8_t before clamping.
            let q = (nearest_int(iscale * scales[j]) as i8 as i32).clamp(-32, 31) + 32;
            put_scale(&mut y[SCALES..SCALES + 12], j, q);
        }
        y[D..D + 2].copy_from_slice(&f16_bytes(1.0 / iscale));
    } else {
        y[D..D + 2].copy_from_slice(&f16_bytes(0.0));
    }
    requantize_and_pack(x, y, &mut l);
}

fn quantize_block_weighted(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut weight = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut ls = [0i8; 16];
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    for j in 0..16 {
        let xg = &x[16 * j..16 * j + 16];
        for k in 0..16 {
            weight[k] = qw[16 * j + k] * (sigma2 + xg[k] * xg[k]).sqrt();
        }
        sw[j] = weight.iter().fold(0f32, |s, w| s + w);
        scales[j] = make_qx_quants(4, xg, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
    }
    y[SCALES..SCALES + 12].fill(0);
    let d_block = make_qx_quants(32, &scales, &mut ls, 1, Some(&sw));
    for (j, &q) in ls.iter().enumerate() {
        put_scale(&mut y[SCALES..SCALES + 12], j, q as i32);
    }
    y[D..D + 2].copy_from_slice(&f16_bytes(d_block));
    requantize_and_pack(x, y, &mut l);
}

/// Recomputes the levels from the stored scales, then writes the high-bit mask and low bits.
fn requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [i8; QK_K]) {
    let d_all = f16_at(y, D);
    for j in 0..16 {
        let d = d_all * get_scale(&y[SCALES..SCALES + 12], j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    let (hmask, rest) = y.split_at_mut(32);
    hmask.fill(0);
    let (mut m, mut hm) = (0usize, 1u8);
    for v in l.iter_mut() {
        if *v > 3 {
            hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit(&l.map(|v| v as u8), &mut rest[..64]);
}

/// One super-block's levels (−4..3, in value order), its 16 group scales (−32..31) and `d`.
pub fn unpack(yb: &[u8]) -> ([i8; QK_K], [i8; 16], f32) {
    let hm = &yb[..32];
    let mut levels = [0i8; QK_K];
    let mut m = 1u8;
    let mut o = 0;
    for n in (0..QK_K).step_by(128) {
        let q = &yb[32 + n / 4..32 + n / 4 + 32];
        for shift in [0, 2, 4, 6] {
            for k in 0..32 {
                let low = ((q[k] >> shift) & 3) as i8;
                let high = if hm[k] & m != 0 { 0 } else { 4 };
                levels[o] = low - high;
                o += 1;
            }
            m <<= 1;
        }
    }
    let scales = std::array::from_fn(|j| get_scale(&yb[SCALES..SCALES + 12], j));
    (levels, scales, f16_at(yb, D))
}

/// Decodes super-blocks back to f32.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (yb, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let (levels, scales, d) = unpack(yb);
        for (g, (out, levels)) in out
            .chunks_exact_mut(16)
            .zip(levels.chunks_exact(16))
            .enumerate()
        {
            let dl = d * scales[g] as f32;
            for (y, &q) in out.iter_mut().zip(levels) {
                *y = dl * q as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips() {
        let mut packed = [0u8; 12];
        let values: Vec<i32> = (0..16).map(|j| (j * 29 + 3) % 64).collect();
        for (j, &v) in values.iter().enumerate() {
            put_scale(&mut packed, j, v);
        }
        for (j, &v) in values.iter().enumerate() {
            assert_eq!(get_scale(&packed, j) as i32, v - 32);
        }
    }
}

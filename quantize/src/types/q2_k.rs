//! Q2_K: super-blocks of 256 values in 16 groups of 16; each group has a 4-bit scale and a 4-bit min,
//! themselves scaled by the f16 super-block `d` and `dmin`; values are 2-bit levels.
//! Layout: `scales: [u8; 16]` (scale low nibble, min high nibble), `qs: [u8; 64]`, `d: f16`,
//! `dmin: f16`. Reproduces `quantize_row_q2_K_ref`, `quantize_row_q2_K_impl` and
//! `dequantize_row_q2_K`.

use super::lanes::qkx_groups;
use super::search::{
    dequantize_with_mins, f16_at, f16_bytes, make_qp_quants, nearest_int, pack_2bit, sum_squares,
    MinSearch, MinSearchParams,
};
use super::{for_each_block, QK_K};

/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 16 + 64 + 4;

/// Encodes one row; `qw` (importance weights) selects the weighted search.
pub fn quantize_row(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, BLOCK_BYTES, |xb, yb, qw| match qw {
        None => quantize_block_ref(xb, yb),
        Some(qw) => quantize_block_weighted(xb, yb, qw),
    });
}

fn quantize_block_ref(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let q4scale = 15f32;
    let params = MinSearchParams {
        kind: MinSearch::Qkx2,
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let weights = x.iter().map(|v| v.abs()).collect::<Vec<f32>>();
    qkx_groups::<16>(params, x, &weights, &mut l, &mut scales, &mut mins);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let (sc, rest) = y.split_at_mut(16);
    if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        rest[64..66].copy_from_slice(&f16_bytes(max_scale / q4scale));
    } else {
        sc.fill(0);
        rest[64..66].copy_from_slice(&f16_bytes(0.0));
    }
    if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        rest[66..68].copy_from_slice(&f16_bytes(max_min / q4scale));
    } else {
        rest[66..68].copy_from_slice(&f16_bytes(0.0));
    }
    requantize_and_pack(x, y, &mut l);
}

// Index loops kept as in ggml-quants.c, so the port reads line by line against it.
#[allow(clippy::needless_range_loop)]
fn quantize_block_weighted(x: &[f32], y: &mut [u8], qw: &[f32]) {
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let mut weight = [0f32; QK_K];
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let params = MinSearchParams {
        kind: MinSearch::Qkx3,
        nmax: 3,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let sigma2 = sum_squares(x) / QK_K as f32;
    for j in 0..16 {
        let g = 16 * j..16 * j + 16;
        for k in g.clone() {
            weight[k] = qw[k] * (sigma2 + x[k] * x[k]).sqrt();
        }
        sw[j] = weight[g].iter().fold(0f32, |s, w| s + w);
    }
    qkx_groups::<16>(params, x, &weight, &mut l, &mut scales, &mut mins);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    y[80..82].copy_from_slice(&f16_bytes(dm));
    y[82..84].copy_from_slice(&f16_bytes(mm));
    for j in 0..16 {
        y[j] = ls[j] | (lm[j] << 4);
    }
    requantize_and_pack(x, y, &mut l);
}

/// Recomputes each group's levels from the stored (f16-rounded) scales, then packs them.
fn requantize_and_pack(x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
    let d_all = f16_at(y, 80);
    let m_all = f16_at(y, 82);
    for j in 0..16 {
        let d = d_all * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * (y[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = q.clamp(0, 3) as u8;
        }
    }
    pack_2bit(l, &mut y[16..80]);
}

/// One super-block's levels (0..3, in value order), its 16 group scales and mins (4 bits each),
/// `d` and `dmin`: value `i` is `d·scales[g]·levels[i] − dmin·mins[g]`, `g = i / 16`.
pub fn unpack(yb: &[u8]) -> ([u8; QK_K], [u8; 16], [u8; 16], f32, f32) {
    let mut levels = [0u8; QK_K];
    let mut o = 0;
    for n in (0..QK_K).step_by(128) {
        let q = &yb[16 + n / 4..16 + n / 4 + 32];
        for shift in [0, 2, 4, 6] {
            for &b in q {
                levels[o] = (b >> shift) & 3;
                o += 1;
            }
        }
    }
    let scales = std::array::from_fn(|g| yb[g] & 0xF);
    let mins = std::array::from_fn(|g| yb[g] >> 4);
    (levels, scales, mins, f16_at(yb, 80), f16_at(yb, 82))
}

/// Decodes super-blocks back to f32.
pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (yb, out) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let (levels, scales, mins, d, dmin) = unpack(yb);
        dequantize_with_mins(out, &levels, &scales, &mins, d, dmin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_block_is_all_zero() {
        let mut y = vec![0xAAu8; BLOCK_BYTES];
        quantize_row(&[0.0; QK_K], &mut y, None);
        assert!(y.iter().all(|&b| b == 0));
    }
}

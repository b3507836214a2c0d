//! The scale searches of ggml-quants.c that the k-quants, the importance-weighted legacy paths and
//! the IQ4 types share: given a group of values, find the scale (and min) and the integer levels that
//! minimise a (weighted) error. Each function reproduces its C namesake operation for operation —
//! same evaluation order, same f32 rounding, same integer truncations — because a single differing
//! rounding changes the bytes of the file.

use half::f16;

/// Groups whose largest magnitude is below this are stored as all-zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round to nearest (ties to even) through the 1.5·2²³ trick, valid for
/// |x| ≤ 4194303 (larger inputs give the same garbage as in C).
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0f32;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `GGML_FP32_TO_FP16` as little-endian bytes.
#[inline]
pub fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// `GGML_FP16_TO_FP32` of the two bytes at `b[at..at + 2]`.
#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// f32 → f16 → f32, the value a stored scale reads back as.
#[inline]
pub fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Index of the entry of the sorted table `values` nearest to `x` (`best_index_int8`).
#[inline]
pub fn best_index_int8(values: &[i8], x: f32) -> usize {
    let n = values.len();
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[n - 1] as f32 {
        return n - 1;
    }
    let (mut ml, mut mu) = (0, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// The value of largest magnitude (the first one on ties) and that magnitude, as the searches
/// find it.
#[inline]
pub fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Packs 256 two-bit levels as Q2_K and Q3_K store them: byte `i` of each 32-byte run holds
/// levels `i`, `i + 32`, `i + 64` and `i + 96` of its 128 values, lowest bits first.
pub fn pack_2bit(levels: &[u8; 256], qs: &mut [u8]) {
    for j in (0..256).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] = levels[j + i]
                | (levels[j + i + 32] << 2)
                | (levels[j + i + 64] << 4)
                | (levels[j + i + 96] << 6);
        }
    }
}

/// The weight `make_qx_quants` gives value `x` when no importance weights are passed.
#[inline]
fn rmse_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// Symmetric quantization to levels −nmax..nmax−1 with a scale search (`make_qx_quants`); writes
/// `level + nmax` into `l` and returns the scale.
// Index loops kept as in ggml-quants.c, so the port reads line by line against it.
#[allow(clippy::needless_range_loop)]
pub fn make_qx_quants(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
    rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let n = x.len();
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    if rmse_type == 0 {
        for i in 0..n {
            let q = nearest_int(iscale * x[i]);
            l[i] = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = if rmse_type < 0 {
        (-rmse_type, true)
    } else {
        (rmse_type, false)
    };
    let weight = |i: usize| match qw {
        Some(w) => w[i],
        None => rmse_weight(rmse_type, x[i]),
    };
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = weight(i);
            sumlx += w * x[i] * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let q = nearest_int(iscale * x[i]);
                l[i] = (nmax + q.clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's reference search (`make_q3_quants`): levels −nmax..nmax−1, refined one value at a time
/// when `do_rmse`; writes `level + nmax` and returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8], do_rmse: bool) -> f32 {
    let n = x.len();
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    if do_rmse {
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = q as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                    if new_l != l[i] as i32 {
                        slx += w * x[i] * new_l as f32;
                        sl2 += w * new_l as f32 * new_l as f32;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for v in l[..n].iter_mut() {
            *v += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
    }
    1.0 / iscale
}

/// Which asymmetric search to run: they differ in how a degenerate group and missing weights are
/// handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MinSearch {
    /// `make_qkx2_quants`: weights always given; `max == min` is degenerate.
    Qkx2,
    /// `make_qkx3_quants`: weights default to x²; `max <= min` is degenerate.
    Qkx3,
}

/// Parameters of the asymmetric (scale + min) search.
#[derive(Clone, Copy)]
pub struct MinSearchParams {
    /// Which C function.
    pub kind: MinSearch,
    /// Highest level.
    pub nmax: i32,
    /// First trial offset added to nmax.
    pub rmin: f32,
    /// Step between trials.
    pub rdelta: f32,
    /// Number of trial steps (nstep + 1 trials).
    pub nstep: i32,
    /// Mean absolute instead of squared error.
    pub use_mad: bool,
}

/// Asymmetric quantization `x ≈ scale·L − the_min` with levels 0..nmax (`make_qkx2_quants` /
/// `make_qkx3_quants`). Returns `(scale, the_min)`; `laux` is scratch of the same length.
// Index loops kept as in ggml-quants.c, so the port reads line by line against it.
#[allow(clippy::needless_range_loop)]
pub fn make_qkx_quants(
    p: MinSearchParams,
    x: &[f32],
    weights: Option<&[f32]>,
    l: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let w = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let nmax = p.nmax;
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let wi = w(i);
        sum_w += wi;
        sum_x += wi * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = match p.kind {
        MinSearch::Qkx2 => max == min,
        MinSearch::Qkx3 => max <= min,
    };
    if degenerate {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min));
        l[i] = q.clamp(0, nmax) as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += w(i) * err(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let wi = w(i);
            let qf = q as f32;
            sum_l += wi * qf;
            sum_l2 += wi * qf * qf;
            sum_xl += wi * qf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w(i) * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes non-negative sub-block scales (or mins) to 0..nmax with importance weights
/// (`make_qp_quants`); returns the super-block scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], quant_weights: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += quant_weights[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += quant_weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = quant_weights[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Unpacks the 6-bit scale and min of sub-block `j` from Q4_K/Q5_K's 12 scale bytes
/// (`get_scale_min_k4`).
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes one super-block held as levels with a scale and a min per group (Q2_K: groups of 16,
/// Q4_K/Q5_K: groups of 32, i.e. `levels.len() / scales.len()`): value = `(d·scale)·level −
/// dmin·min`, rounded as ggml's dequantizers round it.
pub fn dequantize_with_mins(
    out: &mut [f32],
    levels: &[u8],
    scales: &[u8],
    mins: &[u8],
    d: f32,
    dmin: f32,
) {
    let group = levels.len() / scales.len();
    for (g, (out, levels)) in out
        .chunks_exact_mut(group)
        .zip(levels.chunks_exact(group))
        .enumerate()
    {
        let (dg, mg) = (d * scales[g] as f32, dmin * mins[g] as f32);
        for (y, &q) in out.iter_mut().zip(levels) {
            *y = dg * q as f32 - mg;
        }
    }
}

/// Packs eight 6-bit scales and mins into Q4_K/Q5_K's 12 scale bytes (the inverse of
/// [`scale_min_k4`]).
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], scales: &mut [u8]) {
    for j in 0..8 {
        if j < 4 {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            scales[j - 4] |= (ls[j] >> 4) << 6;
            scales[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// Sum of squares in ascending order, as the C loops accumulate it.
#[inline]
pub fn sum_squares(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, v| s + v * v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(1e6 + 0.7), 1_000_001);
    }

    #[test]
    fn best_index_picks_the_nearest_table_entry() {
        let t = [-10i8, -3, 0, 4, 9];
        assert_eq!(best_index_int8(&t, -20.0), 0);
        assert_eq!(best_index_int8(&t, -6.4), 1);
        assert_eq!(best_index_int8(&t, -6.6), 0);
        assert_eq!(best_index_int8(&t, 2.1), 3);
        assert_eq!(best_index_int8(&t, 100.0), 4);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [1, 63, 17, 0, 42, 5, 33, 62];
        let lm = [0, 7, 63, 31, 1, 60, 2, 48];
        let mut packed = [0u8; 12];
        pack_scale_min_k4(&ls, &lm, &mut packed);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &packed), (ls[j], lm[j]));
        }
    }

    #[test]
    fn qx_quants_reproduce_a_uniform_grid_exactly() {
        // x = 0.5·(q) for q in −8..7: the best scale is 0.5 and every level is exact.
        let x: Vec<f32> = (0..16).map(|i| 0.5 * (i as f32 - 8.0)).collect();
        let mut l = [0i8; 16];
        let scale = make_qx_quants(8, &x, &mut l, 1, None);
        for (i, &q) in l.iter().enumerate() {
            assert_eq!((q as f32 - 8.0) * scale, x[i], "value {i}");
        }
    }
}

//! Encoders for IQ1_S and IQ1_M (`quantize_row_iq1_s_impl`, `quantize_row_iq1_m_impl` in
//! ggml-quants.c): each value is −1, 0 or +1 plus a shared shift of ±1/8, groups of 8 form points
//! of a 2048-entry codebook. With three levels the best split of a block's sorted values into
//! them is found exhaustively from prefix sums; a split that is off the grid snaps to the best
//! neighbour. IQ1_S has one 3-bit scale and shift per 32 values and needs importance weights;
//! IQ1_M has a 3-bit scale per 16 and a shift per 8 and weights by `x²` without them.
//!
//! Layouts (per 256 values): IQ1_S `d: f16, qs: [u8; 32], qh: [u16; 8]` (three high point bits per
//! group, scale in bits 12–14, shift sign in bit 15); IQ1_M `qs: [u8; 32], qh: [u8; 16]` (high
//! point bits and the shift signs 0x08/0x80), `scales: [u16; 4]` (3-bit scales, with the f16
//! super-block scale spread over their top nibbles).

use std::cmp::Ordering;

use super::iq_codebook::{self, Codebook, Lookup};
use super::iq_lattice::block_bytes;
use super::iq_scan::{c_max, importance, sigma2};
use super::lanes;
use super::search::{f16_bytes, nearest_int};
use super::{for_each_block, QK_K};

/// The shift of every level.
const DELTA: f32 = 0.125;
/// Levels −1, 0, 1 shifted up…
const X_P: [f32; 3] = [-1.0 + DELTA, DELTA, 1.0 + DELTA];
/// …or down.
const X_M: [f32; 3] = [-1.0 - DELTA, -DELTA, 1.0 - DELTA];
/// All-zero thresholds.
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// Encodes one IQ1_S row (importance weights required).
pub fn quantize_row_s(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for_each_block(x, y, Some(qw), QK_K, block_bytes::IQ1_S, |xbl, y, qw| {
        s_super_block(xbl, y, qw.unwrap())
    });
}

/// Encodes one IQ1_M row.
pub fn quantize_row_m(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, block_bytes::IQ1_M, m_super_block);
}

/// Block weights: importance, or `x²` without an imatrix.
fn weights(xb: &[f32], qw: Option<&[f32]>, sigma2: f32, weight: &mut [f32]) {
    match qw {
        Some(qw) => importance(xb, qw, sigma2, weight),
        None => weight.iter_mut().zip(xb).for_each(|(w, &v)| *w = v * v),
    }
}

/// Largest magnitude (`MAX` of `fabsf`, from the first value).
fn abs_max(xb: &[f32]) -> f32 {
    xb[1..].iter().fold(xb[0].abs(), |m, &v| c_max(m, v.abs()))
}

/// Value indices in increasing value order, ties in index order (glibc's `qsort` is a stable
/// merge sort at these sizes).
fn sorted_order(xb: &[f32], order: &mut [usize]) {
    for (i, o) in order.iter_mut().enumerate() {
        *o = i;
    }
    order.sort_by(|&a, &b| xb[a].partial_cmp(&xb[b]).unwrap_or(Ordering::Equal));
}

/// Levels from a split of the sorted values: below `i1` → 0, below `i2` → 1, the rest → 2.
fn split_levels(order: &[usize], i1: usize, i2: usize, l: &mut [i8]) {
    for (j, &i) in order.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// Snaps group `k` (8 levels in `l`) to the grid: its point, or the neighbour nearest `xb` at
/// `scale` with level values `xx` (`iq1_find_best_neighbour2`). Returns the point and whether
/// the levels were on the grid.
fn snap(
    book: &Codebook,
    l: &mut [i8],
    xb: &[f32],
    weight: &[f32],
    scale: f32,
    xx: &[f32; 3],
) -> (usize, bool) {
    match book.lookup(book.pack(l)) {
        Lookup::Point(i) => (i, true),
        Lookup::Near(near) => {
            // xx[l] = xx[0] + l exactly (levels 0, 1, 2; xx spaced by 1).
            let index = book.best_neighbour(near, xb, weight, scale, xx[0], l);
            (index, false)
        }
    }
}

/// Snaps each group of 8 of a block (levels `l`, level values `xx(k)` for group `k`) to the grid,
/// its points into `points`; if any group was off the grid, re-fits the scale to the points taken
/// (kept when positive). Returns the scale.
fn snap_block(
    book: &Codebook,
    l: &mut [i8],
    xb: &[f32],
    weight: &[f32],
    mut scale: f32,
    xx: impl Fn(usize) -> [f32; 3],
    points: &mut [usize],
) -> f32 {
    let mut all_on_grid = true;
    for (k, p) in points.iter_mut().enumerate() {
        let r = 8 * k..8 * k + 8;
        let on;
        (*p, on) = snap(
            book,
            &mut l[r.clone()],
            &xb[r.clone()],
            &weight[r],
            scale,
            &xx(k),
        );
        all_on_grid &= on;
    }
    if !all_on_grid {
        let mut sums = (0.0, 0.0);
        fit(book, points, xb, weight, &xx, 1.0, &mut sums);
        if sums.0 > 0.0 && sums.1 > 0.0 {
            scale = sums.0 / sums.1;
        }
    }
    scale
}

/// Adds `Σ w·q·x` and `Σ w·q²` of groups of 8 at their points (level values `mult·xx(k)`)
/// to `sums`, value by value.
fn fit(
    book: &Codebook,
    points: &[usize],
    xb: &[f32],
    weight: &[f32],
    xx: impl Fn(usize) -> [f32; 3],
    mult: f32,
    sums: &mut (f32, f32),
) {
    let (sumqx, sumq2) = sums;
    for (k, &p) in points.iter().enumerate() {
        let xk = xx(k);
        for (j, &lv) in book.levels(p).iter().enumerate() {
            let w = weight[8 * k + j];
            let q = xk[lv as usize] * mult;
            *sumqx += w * q * xb[8 * k + j];
            *sumq2 += w * q * q;
        }
    }
}

fn s_super_block(xbl: &[f32], y: &mut [u8], qw: &[f32]) {
    let book = iq_codebook::iq1();
    y.fill(0);
    let sigma2 = sigma2(xbl, 2.0);
    let (mut scales, mut shifts) = ([0f32; 8], [1i8; 8]);
    let mut max_scale = 0f32;
    let mut weight = [0f32; 32];
    let mut order = [0usize; 32];
    let (mut sumx, mut sumw) = ([0f32; 33], [0f32; 33]);
    let mut l = [0i8; 32];
    for ib in 0..8 {
        let xb = &xbl[32 * ib..32 * ib + 32];
        importance(xb, &qw[32 * ib..], sigma2, &mut weight);
        let max = abs_max(xb);
        if max < GROUP_MAX_EPS_IQ1_S {
            continue;
        }
        sorted_order(xb, &mut order);
        for (j, &i) in order.iter().enumerate() {
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        let (mut scale, best) = lanes::iq1s_best_split::<32>(&sumx, &sumw, &X_P, &X_M, max);
        let Some((i1, i2, mut shift)) = best else {
            continue;
        };
        split_levels(&order, i1, i2, &mut l);
        if scale < 0.0 {
            l.iter_mut().for_each(|v| *v = 2 - *v);
            scale = -scale;
            shift = -shift;
        }
        let xx = if shift == 1 { X_P } else { X_M };
        let mut points = [0usize; 4];
        let scale = snap_block(book, &mut l, xb, &weight, scale, |_| xx, &mut points);
        let mut h = 0u16;
        for (k, &p) in points.iter().enumerate() {
            y[2 + 4 * ib + k] = p as u8;
            h |= ((p >> 8) as u16) << (3 * k);
        }
        y[34 + 2 * ib..36 + 2 * ib].copy_from_slice(&h.to_le_bytes());
        scales[ib] = scale;
        shifts[ib] = shift;
        max_scale = c_max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 15.0;
    y[..2].copy_from_slice(&f16_bytes(d * 1.125));
    let id = 1.0 / d;
    for ib in 0..8 {
        let mut s = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7) as u16;
        if shifts[ib] == -1 {
            s |= 8;
        }
        y[35 + 2 * ib] |= (s << 4) as u8;
    }
}

/// IQ1_M's level values of group `k` (of 2) for shift code `code` (bit 1: first group shifted
/// down, bit 0: second group).
fn m_levels(code: usize, k: usize) -> [f32; 3] {
    let down = if k == 0 { code >= 2 } else { code % 2 == 1 };
    if down {
        X_M
    } else {
        X_P
    }
}

fn m_super_block(xbl: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let book = iq_codebook::iq1();
    y.fill(0);
    let sigma2 = sigma2(xbl, 2.0);
    let (mut scales, mut shifts) = ([0f32; 16], [0usize; 16]);
    let mut max_scale = 0f32;
    let mut weight = [0f32; 16];
    let mut order = [0usize; 16];
    let mut l = [0i8; 16];
    for ib in 0..16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        weights(
            xb,
            qw.map(|w| &w[16 * ib..16 * ib + 16]),
            sigma2,
            &mut weight,
        );
        let max = abs_max(xb);
        if max < GROUP_MAX_EPS_IQ1_M {
            continue;
        }
        sorted_order(xb, &mut order);
        // Prefix sums per half: each half of 8 has its own shift.
        let (mut px, mut pw) = ([[0f32; 17]; 2], [[0f32; 17]; 2]);
        for (j, &i) in order.iter().enumerate() {
            let h = usize::from(i >= 8);
            px[h][j + 1] = px[h][j] + weight[i] * xb[i];
            px[1 - h][j + 1] = px[1 - h][j];
            pw[h][j + 1] = pw[h][j] + weight[i];
            pw[1 - h][j + 1] = pw[1 - h][j];
        }
        let (mut scale, best) = lanes::iq1m_best_split::<16>(&px, &pw, &X_P, &X_M, max);
        let Some((i1, i2, mut code)) = best else {
            continue;
        };
        split_levels(&order, i1, i2, &mut l);
        if scale < 0.0 {
            l.iter_mut().for_each(|v| *v = 2 - *v);
            scale = -scale;
            code = 3 - code;
        }
        let mut points = [0usize; 2];
        let xx = |k| m_levels(code, k);
        let scale = snap_block(book, &mut l, xb, &weight, scale, xx, &mut points);
        y[2 * ib] = points[0] as u8;
        y[2 * ib + 1] = points[1] as u8;
        y[32 + ib] = ((points[0] >> 8) | ((points[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = code;
        max_scale = c_max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let mut sums = (0f32, 0f32); // over the whole super-block, value after value
    for ib in 0..16 {
        let s = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
        sc[ib / 4] |= (s as u16) << (3 * (ib % 4));
        y[32 + ib] |= MASKS[shifts[ib]];
        let xb = &xbl[16 * ib..16 * ib + 16];
        weights(
            xb,
            qw.map(|w| &w[16 * ib..16 * ib + 16]),
            sigma2,
            &mut weight,
        );
        let qh = y[32 + ib] as usize;
        let points = [
            y[2 * ib] as usize + ((qh << 8) & 0x700),
            y[2 * ib + 1] as usize + ((qh << 4) & 0x700),
        ];
        let xx = |k| m_levels(shifts[ib], k);
        fit(
            book,
            &points,
            xb,
            &weight,
            xx,
            (2 * s + 1) as f32,
            &mut sums,
        );
    }
    if sums.1 > 0.0 {
        d = sums.0 / sums.1;
    }
    let bits = half::f16::from_f32(d * 1.1125).to_bits();
    sc[0] |= (bits & 0x000f) << 12;
    sc[1] |= (bits & 0x00f0) << 8;
    sc[2] |= (bits & 0x0f00) << 4;
    sc[3] |= bits & 0xf000;
    for (o, s) in y[48..56].chunks_exact_mut(2).zip(sc) {
        o.copy_from_slice(&s.to_le_bytes());
    }
}

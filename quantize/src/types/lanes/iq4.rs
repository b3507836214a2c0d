//! IQ4_XS's group search ([`super::super::iq4`]'s `group_scale`) for the eight groups of 32 of a
//! super-block at once, one group per lane, each lane doing the scalar code's operations in its
//! order; and the nearest-level lookup (`best_index_int8`) for 8 values at a time.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::{to_lanes, Scalar8, Vec8};
use crate::types::iq4::KVALUES_IQ4NL;
use crate::types::search::GROUP_MAX_EPS;

/// `best_index_int8(KVALUES_IQ4NL, v)` per lane, as (index, level), both as f32: 0 at or below
/// the first level, 15 at or above the last (and for NaN, where the scalar search ends too), else
/// the nearer of the two levels around `v`, the upper one on ties.
#[inline(always)]
fn nearest_level<V: Vec8>(v: V) -> (V, V) {
    let t = &KVALUES_IQ4NL;
    let (first, last) = (V::splat(t[0] as f32), V::splat(t[15] as f32));
    let (zero, one) = (V::splat(0.0), V::splat(1.0));
    // How many levels are ≤ v (the scalar binary search's upper end), and the levels around v.
    let (mut count, mut lo, mut hi) = (zero, first, last);
    for &level in t {
        let lv = V::splat(level as f32);
        let below = lv.le(v);
        count = count.add(V::select(below, one, zero));
        lo = V::select(below, lv, lo);
    }
    for &level in t.iter().rev() {
        let lv = V::splat(level as f32);
        hi = V::select(v.lt(lv), lv, hi);
    }
    let down = v.sub(lo).lt(hi.sub(v));
    let mut idx = V::select(down, count.sub(one), count);
    let mut level = V::select(down, lo, hi);
    let top = V::or(last.le(v), v.ne(v));
    idx = V::select(top, V::splat(15.0), idx);
    level = V::select(top, last, level);
    let bottom = v.le(first);
    idx = V::select(bottom, zero, idx);
    level = V::select(bottom, first, level);
    (idx, level)
}

/// The scale of each of the 8 groups of `N` values in `x` with weights `w` (`None` for an
/// all-zero group), as `group_scale` finds it: the first guess from the largest magnitude, then 15
/// trials around it.
pub fn iq4_group_scales<const N: usize>(x: &[f32], w: &[f32]) -> [Option<f32>; 8] {
    dispatch!(group_core, N, [Option<f32>; 8], (x: &[f32], w: &[f32]))
}

#[inline(always)]
fn group_core<V: Vec8, const N: usize>(x: &[f32], w: &[f32]) -> [Option<f32>; 8] {
    let (xl, wl) = (to_lanes::<N>(x, 0), to_lanes::<N>(w, 0));
    let xs: [V; N] = std::array::from_fn(|i| V::load(&xl[i]));
    let ws: [V; N] = std::array::from_fn(|i| V::load(&wl[i]));
    let zero = V::splat(0.0);
    let (mut max, mut amax) = (zero, zero);
    for &v in &xs {
        let bigger = amax.lt(v.abs());
        amax = V::select(bigger, v.abs(), amax);
        max = V::select(bigger, v, max);
    }
    let v0 = KVALUES_IQ4NL[0];
    let d = max.mul(V::splat(-1.0)).div(V::splat(v0 as f32));
    let (sumqx, sumq2) = fit(V::splat(1.0).div(d), &xs, &ws);
    let mut d = V::select(zero.lt(sumq2), sumqx.div(sumq2), zero);
    let mut best = d.mul(sumqx);
    for itry in -7..=7 {
        let (sumqx, sumq2) = fit(V::splat((itry + v0 as i32) as f32).div(max), &xs, &ws);
        let better = V::and(zero.lt(sumq2), best.mul(sumq2).lt(sumqx.mul(sumqx)));
        let nd = sumqx.div(sumq2);
        d = V::select(better, nd, d);
        best = V::select(better, nd.mul(sumqx), best);
    }
    let (d, amax) = (d.store(), amax.store());
    std::array::from_fn(|k| (amax[k] >= GROUP_MAX_EPS).then_some(d[k]))
}

/// `Σ w·q·x` and `Σ w·q²` per lane in value order, `q` the level nearest `id·x`.
#[inline(always)]
fn fit<V: Vec8, const N: usize>(id: V, xs: &[V; N], ws: &[V; N]) -> (V, V) {
    let (mut sumqx, mut sumq2) = (V::splat(0.0), V::splat(0.0));
    for i in 0..N {
        let (_, q) = nearest_level(id.mul(xs[i]));
        let wq = ws[i].mul(q);
        sumqx = sumqx.add(wq.mul(xs[i]));
        sumq2 = sumq2.add(wq.mul(q));
    }
    (sumqx, sumq2)
}

/// `best_index_int8(KVALUES_IQ4NL, idl · x)` of `N` values (a multiple of 8).
pub fn iq4_levels<const N: usize>(x: &[f32], idl: f32, l: &mut [u8]) {
    dispatch!(levels_core, N, (), (x: &[f32], idl: f32, l: &mut [u8]))
}

#[inline(always)]
fn levels_core<V: Vec8, const N: usize>(x: &[f32], idl: f32, l: &mut [u8]) {
    let s = V::splat(idl);
    for (xs, ls) in x[..N].chunks_exact(8).zip(l[..N].chunks_exact_mut(8)) {
        let (idx, _) = nearest_level(s.mul(V::load(xs.try_into().unwrap())));
        for (d, i) in ls.iter_mut().zip(idx.store()) {
            *d = i as u8;
        }
    }
}

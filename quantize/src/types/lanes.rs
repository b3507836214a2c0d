//! Lane-parallel versions of the two hot scale searches ([`super::search::make_qkx_quants`] and
//! [`super::search::make_qx_quants`]): the groups of one super-block are independent searches, so
//! lane `k` of every array runs group `k`'s search while the CPU's vector units advance all lanes
//! at once. Within a lane every operation, and the order of every sum, is the scalar function's —
//! the vector units do IEEE single precision exactly as the scalar ones, and nothing is fused or
//! reordered — so the bytes are the same (the tests check this against the scalar functions).
//! Branches of the scalar code become per-lane selects.
//!
//! Arrays are transposed: `x[i][k]` is value `i` of group `k`.

use super::search::{nearest_int, MinSearch, MinSearchParams, GROUP_MAX_EPS};

/// Eight f32 lanes and the operations the searches need. Every operation is the IEEE single-precision
/// operation the scalar code performs, lane by lane; comparisons are ordered (false on NaN), as
/// in the scalar code.
trait Vec8: Copy {
    type Mask: Copy;
    fn splat(v: f32) -> Self;
    fn load(a: &[f32; 8]) -> Self;
    fn store(self) -> [f32; 8];
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn abs(self) -> Self;
    fn lt(self, o: Self) -> Self::Mask;
    fn le(self, o: Self) -> Self::Mask;
    fn eq(self, o: Self) -> Self::Mask;
    /// `!=`: true for NaN, like Rust's and C's.
    fn ne(self, o: Self) -> Self::Mask;
    fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    fn or(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// `if m { a } else { b }` per lane.
    fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// `nearest_int(self).clamp(lo, hi) as f32` per lane.
    fn round_clamp(self, lo: i32, hi: i32) -> Self;
    /// `nearest_int(self).clamp(lo, hi)` per lane as bytes (`lo`, `hi` within `i8`).
    fn round_clamp_i8(self, lo: i32, hi: i32) -> [i8; 8];
    fn mask_bits(m: Self::Mask) -> [bool; 8];
    /// The smallest of the 8 lanes (no NaN among them).
    fn hmin(self) -> f32;
    /// The mask as bits, lane `k` in bit `k`.
    fn mask_u8(m: Self::Mask) -> u8;
}

/// The portable implementation: plain arrays.
#[derive(Clone, Copy)]
struct Scalar8([f32; 8]);

impl Vec8 for Scalar8 {
    type Mask = [bool; 8];
    fn splat(v: f32) -> Self {
        Scalar8([v; 8])
    }
    fn load(a: &[f32; 8]) -> Self {
        Scalar8(*a)
    }
    fn store(self) -> [f32; 8] {
        self.0
    }
    fn add(self, o: Self) -> Self {
        Scalar8(std::array::from_fn(|k| self.0[k] + o.0[k]))
    }
    fn sub(self, o: Self) -> Self {
        Scalar8(std::array::from_fn(|k| self.0[k] - o.0[k]))
    }
    fn mul(self, o: Self) -> Self {
        Scalar8(std::array::from_fn(|k| self.0[k] * o.0[k]))
    }
    fn div(self, o: Self) -> Self {
        Scalar8(std::array::from_fn(|k| self.0[k] / o.0[k]))
    }
    fn abs(self) -> Self {
        Scalar8(self.0.map(f32::abs))
    }
    fn lt(self, o: Self) -> [bool; 8] {
        std::array::from_fn(|k| self.0[k] < o.0[k])
    }
    fn le(self, o: Self) -> [bool; 8] {
        std::array::from_fn(|k| self.0[k] <= o.0[k])
    }
    fn eq(self, o: Self) -> [bool; 8] {
        std::array::from_fn(|k| self.0[k] == o.0[k])
    }
    fn ne(self, o: Self) -> [bool; 8] {
        std::array::from_fn(|k| self.0[k] != o.0[k])
    }
    fn or(a: [bool; 8], b: [bool; 8]) -> [bool; 8] {
        std::array::from_fn(|k| a[k] || b[k])
    }
    fn and(a: [bool; 8], b: [bool; 8]) -> [bool; 8] {
        std::array::from_fn(|k| a[k] && b[k])
    }
    fn select(m: [bool; 8], a: Self, b: Self) -> Self {
        Scalar8(std::array::from_fn(|k| if m[k] { a.0[k] } else { b.0[k] }))
    }
    fn round_clamp(self, lo: i32, hi: i32) -> Self {
        Scalar8(self.0.map(|v| nearest_int(v).clamp(lo, hi) as f32))
    }
    fn round_clamp_i8(self, lo: i32, hi: i32) -> [i8; 8] {
        self.0.map(|v| nearest_int(v).clamp(lo, hi) as i8)
    }
    fn mask_bits(m: [bool; 8]) -> [bool; 8] {
        m
    }
    fn hmin(self) -> f32 {
        self.0.iter().fold(f32::INFINITY, |m, &v| m.min(v))
    }
    fn mask_u8(m: [bool; 8]) -> u8 {
        m.iter()
            .enumerate()
            .fold(0, |b, (k, &v)| b | (u8::from(v) << k))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// AVX2 registers. Only constructed inside `#[target_feature(enable = "avx2")]` functions.
    #[derive(Clone, Copy)]
    pub struct Avx8(pub __m256);

    /// ggml's `nearest_int` (add 1.5·2²³, keep the low mantissa bits) per lane, clamped.
    #[inline(always)]
    unsafe fn round_clamp_epi32(v: __m256, lo: i32, hi: i32) -> __m256i {
        let v = _mm256_add_ps(v, _mm256_set1_ps(12582912.0));
        let i = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007f_ffff));
        let i = _mm256_sub_epi32(i, _mm256_set1_epi32(0x0040_0000));
        _mm256_min_epi32(
            _mm256_max_epi32(i, _mm256_set1_epi32(lo)),
            _mm256_set1_epi32(hi),
        )
    }

    impl super::Vec8 for Avx8 {
        type Mask = __m256;
        #[inline(always)]
        fn splat(v: f32) -> Self {
            // SAFETY (all methods): only called from code compiled with AVX2 on CPUs that have it.
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(a: &[f32; 8]) -> Self {
            // SAFETY: AVX2 is present (see the impl); `a` holds the 8 floats read.
            unsafe { Avx8(_mm256_loadu_ps(a.as_ptr())) }
        }
        #[inline(always)]
        fn store(self) -> [f32; 8] {
            let mut out = [0f32; 8];
            // SAFETY: AVX2 is present (see the impl); `out` holds the 8 floats written.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), self.0) };
            out
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_add_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_sub_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_mul_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_div_ps(self.0, o.0)) }
        }
        #[inline(always)]
        fn abs(self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0)) }
        }
        #[inline(always)]
        fn lt(self, o: Self) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn le(self, o: Self) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn eq(self, o: Self) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn ne(self, o: Self) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_cmp_ps::<_CMP_NEQ_UQ>(self.0, o.0) }
        }
        #[inline(always)]
        fn or(a: __m256, b: __m256) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_or_ps(a, b) }
        }
        #[inline(always)]
        fn and(a: __m256, b: __m256) -> __m256 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_and_ps(a, b) }
        }
        #[inline(always)]
        fn select(m: __m256, a: Self, b: Self) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_blendv_ps(b.0, a.0, m)) }
        }
        #[inline(always)]
        fn round_clamp(self, lo: i32, hi: i32) -> Self {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { Avx8(_mm256_cvtepi32_ps(round_clamp_epi32(self.0, lo, hi))) }
        }
        #[inline(always)]
        fn round_clamp_i8(self, lo: i32, hi: i32) -> [i8; 8] {
            // SAFETY: register arithmetic and one 8-byte store into `out`; the CPU has AVX2 (see
            // `splat`).
            unsafe {
                let i = round_clamp_epi32(self.0, lo, hi);
                let w =
                    _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
                let mut out = [0i8; 8];
                _mm_storel_epi64(out.as_mut_ptr().cast(), _mm_packs_epi16(w, w));
                out
            }
        }
        #[inline(always)]
        fn mask_bits(m: __m256) -> [bool; 8] {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            let bits = unsafe { _mm256_movemask_ps(m) };
            std::array::from_fn(|k| bits & (1 << k) != 0)
        }
        #[inline(always)]
        fn mask_u8(m: __m256) -> u8 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe { _mm256_movemask_ps(m) as u8 }
        }
        #[inline(always)]
        fn hmin(self) -> f32 {
            // SAFETY: register arithmetic only; the CPU has AVX2 (see `splat`).
            unsafe {
                let m = _mm_min_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_min_ss(m, _mm_shuffle_ps::<1>(m, m));
                _mm_cvtss_f32(m)
            }
        }
    }
}

/// Transposes groups of `N` consecutive values (group `k` at `x[k * N..]`) into 8 lanes, starting
/// at group `first`.
pub fn to_lanes<const N: usize>(x: &[f32], first: usize) -> [[f32; 8]; N] {
    std::array::from_fn(|i| std::array::from_fn(|k| x[(first + k) * N + i]))
}

/// Runs `$core::<V, N>(args)` with the AVX2 implementation when the CPU has it.
macro_rules! dispatch {
    ($core:ident, $n:ident, $ret:ty, ($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            fn with_avx2<const $n: usize>($($arg: $ty),*) -> $ret {
                $core::<avx2::Avx8, $n>($($arg),*)
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has the feature the function was compiled for.
                return unsafe { with_avx2::<$n>($($arg),*) };
            }
        }
        $core::<Scalar8, $n>($($arg),*)
    }};
}

mod iq;
mod iq4;
pub use iq::{iq1m_best_split, iq1s_best_split, nearest_candidate, snap_groups, trial_fits};
pub use iq4::{iq4_group_scales, iq4_levels};

/// [`super::search::make_qkx_quants`] for consecutive groups of `N` values (a multiple of 8 groups)
/// with explicit weights, eight groups at a time: writes each group's scale and `the_min` into
/// `scales` / `mins` and its levels into `l`.
pub fn qkx_groups<const N: usize>(
    p: MinSearchParams,
    x: &[f32],
    w: &[f32],
    l: &mut [u8],
    scales: &mut [f32],
    mins: &mut [f32],
) {
    for first in (0..x.len() / N).step_by(8) {
        let mut lanes = [[0u8; 8]; N];
        let (s, m) = qkx_lanes::<N>(p, &to_lanes(x, first), &to_lanes(w, first), &mut lanes);
        scales[first..first + 8].copy_from_slice(&s);
        mins[first..first + 8].copy_from_slice(&m);
        for (i, row) in lanes.iter().enumerate() {
            for (k, &q) in row.iter().enumerate() {
                l[(first + k) * N + i] = q;
            }
        }
    }
}

/// [`super::search::make_qkx_quants`] for 8 groups of `N` values with explicit weights: returns
/// each group's `(scale, the_min)` and writes its levels into `l`.
pub fn qkx_lanes<const N: usize>(
    p: MinSearchParams,
    x: &[[f32; 8]; N],
    w: &[[f32; 8]; N],
    l: &mut [[u8; 8]; N],
) -> ([f32; 8], [f32; 8]) {
    dispatch!(qkx_core, N, ([f32; 8], [f32; 8]), (p: MinSearchParams, x: &[[f32; 8]; N], w: &[[f32; 8]; N], l: &mut [[u8; 8]; N]))
}

#[inline(always)]
fn qkx_core<V: Vec8, const N: usize>(
    p: MinSearchParams,
    x: &[[f32; 8]; N],
    w: &[[f32; 8]; N],
    l: &mut [[u8; 8]; N],
) -> ([f32; 8], [f32; 8]) {
    let xs: [V; N] = std::array::from_fn(|i| V::load(&x[i]));
    let ws: [V; N] = std::array::from_fn(|i| V::load(&w[i]));
    let err = |d: V| if p.use_mad { d.abs() } else { d.mul(d) };
    let zero = V::splat(0.0);
    let nmax = V::splat(p.nmax as f32);
    let (mut min, mut max, mut sum_w) = (xs[0], xs[0], ws[0]);
    let mut sum_x = sum_w.mul(xs[0]);
    for i in 1..N {
        min = V::select(xs[i].lt(min), xs[i], min);
        max = V::select(max.lt(xs[i]), xs[i], max);
        sum_w = sum_w.add(ws[i]);
        sum_x = sum_x.add(ws[i].mul(xs[i]));
    }
    min = V::select(zero.lt(min), zero, min);
    let start_min = min;
    let degenerate = match p.kind {
        MinSearch::Qkx2 => max.eq(min),
        MinSearch::Qkx3 => max.le(min),
    };
    let iscale = nmax.div(max.sub(min));
    let mut scale = V::splat(1.0).div(iscale);
    let mut levels: [V; N] = [zero; N];
    let mut best_error = zero;
    for i in 0..N {
        let q = iscale.mul(xs[i].sub(min)).round_clamp(0, p.nmax);
        levels[i] = q;
        let diff = scale.mul(q).add(min).sub(xs[i]);
        best_error = best_error.add(ws[i].mul(err(diff)));
    }
    let mut laux: [V; N] = [zero; N];
    for is in 0..=p.nstep {
        let numerator = V::splat(p.rmin + p.rdelta * is as f32 + p.nmax as f32);
        // A better trial moves `min`, and with it the range the next trials divide by.
        let iscale = numerator.div(max.sub(min));
        let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
        for i in 0..N {
            let q = iscale.mul(xs[i].sub(min)).round_clamp(0, p.nmax);
            laux[i] = q;
            let wq = ws[i].mul(q);
            sum_l = sum_l.add(wq);
            sum_l2 = sum_l2.add(wq.mul(q));
            sum_xl = sum_xl.add(wq.mul(xs[i]));
        }
        let d = sum_w.mul(sum_l2).sub(sum_l.mul(sum_l));
        let s = sum_w.mul(sum_xl).sub(sum_x.mul(sum_l)).div(d);
        let m = sum_l2.mul(sum_x).sub(sum_l.mul(sum_xl)).div(d);
        let clamp = zero.lt(m);
        let this_min = V::select(clamp, zero, m);
        let this_scale = V::select(clamp, sum_xl.div(sum_l2), s);
        let mut cur_error = zero;
        for i in 0..N {
            let diff = this_scale.mul(laux[i]).add(this_min).sub(xs[i]);
            cur_error = cur_error.add(ws[i].mul(err(diff)));
        }
        let better = V::and(zero.lt(d), cur_error.lt(best_error));
        for i in 0..N {
            levels[i] = V::select(better, laux[i], levels[i]);
        }
        best_error = V::select(better, cur_error, best_error);
        scale = V::select(better, this_scale, scale);
        min = V::select(better, this_min, min);
    }
    scale = V::select(degenerate, zero, scale);
    min = V::select(degenerate, start_min, min);
    let degenerate = V::mask_bits(degenerate);
    for i in 0..N {
        let q = levels[i].store();
        for k in 0..8 {
            l[i][k] = if degenerate[k] { 0 } else { q[k] as u8 };
        }
    }
    let min = min.store();
    (scale.store(), min.map(|m| -m))
}

/// [`super::search::make_qx_quants`] with `rmse_type` 1 for 8 groups of `N` values: returns
/// each group's scale and writes `level + nmax` into `l`.
pub fn qx_lanes<const N: usize>(
    nmax: i32,
    x: &[[f32; 8]; N],
    qw: Option<&[[f32; 8]; N]>,
    l: &mut [[i8; 8]; N],
) -> [f32; 8] {
    dispatch!(qx_core, N, [f32; 8], (nmax: i32, x: &[[f32; 8]; N], qw: Option<&[[f32; 8]; N]>, l: &mut [[i8; 8]; N]))
}

#[inline(always)]
fn qx_core<V: Vec8, const N: usize>(
    nmax: i32,
    x: &[[f32; 8]; N],
    qw: Option<&[[f32; 8]; N]>,
    l: &mut [[i8; 8]; N],
) -> [f32; 8] {
    let xs: [V; N] = std::array::from_fn(|i| V::load(&x[i]));
    let ws: [V; N] = std::array::from_fn(|i| match qw {
        Some(w) => V::load(&w[i]),
        None => xs[i].mul(xs[i]),
    });
    let zero = V::splat(0.0);
    let (mut max, mut amax) = (zero, zero);
    for v in &xs {
        let ax = v.abs();
        let bigger = amax.lt(ax);
        amax = V::select(bigger, ax, amax);
        max = V::select(bigger, *v, max);
    }
    let (lo, hi) = (-nmax, nmax - 1);
    let iscale = V::splat(-(nmax as f32)).div(max);
    let mut levels: [V; N] = [zero; N];
    let (mut sumlx, mut suml2) = (zero, zero);
    for i in 0..N {
        let q = iscale.mul(xs[i]).round_clamp(lo, hi);
        levels[i] = q;
        sumlx = sumlx.add(ws[i].mul(xs[i]).mul(q));
        suml2 = suml2.add(ws[i].mul(q).mul(q));
    }
    let mut scale = V::select(suml2.ne(zero), sumlx.div(suml2), zero);
    let mut best = scale.mul(sumlx);
    let mut trial: [V; N] = [zero; N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = V::splat(-(nmax as f32 + 0.1f32 * is as f32)).div(max);
        let (mut sumlx, mut suml2) = (zero, zero);
        for i in 0..N {
            let q = iscale.mul(xs[i]).round_clamp(lo, hi);
            trial[i] = q;
            sumlx = sumlx.add(ws[i].mul(xs[i]).mul(q));
            suml2 = suml2.add(ws[i].mul(q).mul(q));
        }
        let better = V::and(zero.lt(suml2), best.mul(suml2).lt(sumlx.mul(sumlx)));
        for i in 0..N {
            levels[i] = V::select(better, trial[i], levels[i]);
        }
        let new_scale = sumlx.div(suml2);
        scale = V::select(better, new_scale, scale);
        best = V::select(better, new_scale.mul(sumlx), best);
    }
    let zero_group = V::mask_bits(amax.lt(V::splat(GROUP_MAX_EPS)));
    let scale = scale.store();
    for i in 0..N {
        let q = levels[i].store();
        for k in 0..8 {
            l[i][k] = if zero_group[k] {
                0
            } else {
                (q[k] as i32 + nmax) as i8
            };
        }
    }
    std::array::from_fn(|k| if zero_group[k] { 0.0 } else { scale[k] })
}

#[cfg(test)]
mod tests {
    use super::super::search::{make_qkx_quants, make_qx_quants};
    use super::*;

    /// Deterministic awkward values: mixed signs and scales, exact zeros, repeated values.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                match (i / 16 + seed as usize) % 5 {
                    0 => 0.0,
                    1 => u * 1e-3,
                    2 => u.signum() * 0.25,
                    3 => u * u * u * 40.0,
                    _ => u,
                }
            })
            .collect()
    }

    fn check_qkx<const N: usize>(p: MinSearchParams) {
        for seed in 0..40 {
            let x = values(8 * N, seed);
            let w: Vec<f32> = x
                .iter()
                .map(|v| v.abs() + 0.01 * (seed % 3) as f32)
                .collect();
            let mut l = [[0u8; 8]; N];
            let (scale, min) = qkx_lanes::<N>(p, &to_lanes(&x, 0), &to_lanes(&w, 0), &mut l);
            for k in 0..8 {
                let (mut ls, mut laux) = (vec![0u8; N], vec![0u8; N]);
                let g = k * N..(k + 1) * N;
                let want = make_qkx_quants(p, &x[g.clone()], Some(&w[g]), &mut ls, &mut laux);
                assert_eq!(
                    (scale[k].to_bits(), min[k].to_bits()),
                    (want.0.to_bits(), want.1.to_bits()),
                    "seed {seed} lane {k}"
                );
                assert!(
                    (0..N).all(|i| l[i][k] == ls[i]),
                    "seed {seed} lane {k} levels"
                );
            }
        }
    }

    #[test]
    fn qkx_lanes_equal_the_scalar_search() {
        let p = |kind, nmax, rmin, rdelta, nstep, use_mad| MinSearchParams {
            kind,
            nmax,
            rmin,
            rdelta,
            nstep,
            use_mad,
        };
        check_qkx::<32>(p(MinSearch::Qkx2, 15, -1.0, 0.1, 20, false));
        check_qkx::<32>(p(MinSearch::Qkx3, 31, -0.9, 0.05, 36, false));
        check_qkx::<16>(p(MinSearch::Qkx2, 3, -0.5, 0.1, 15, true));
    }

    #[test]
    fn qx_lanes_equal_the_scalar_search() {
        for seed in 0..40 {
            let x = values(128, seed);
            let w: Vec<f32> = x.iter().map(|v| v * v + 1e-4).collect();
            for qw in [None, Some(&w)] {
                let mut l = [[0i8; 8]; 16];
                let wl = qw.map(|w| to_lanes::<16>(w, 0));
                let scale = qx_lanes::<16>(32, &to_lanes(&x, 0), wl.as_ref(), &mut l);
                for k in 0..8 {
                    let mut ls = [0i8; 16];
                    let g = k * 16..(k + 1) * 16;
                    let want = make_qx_quants(32, &x[g.clone()], &mut ls, 1, qw.map(|w| &w[g]));
                    assert_eq!(scale[k].to_bits(), want.to_bits(), "seed {seed} lane {k}");
                    assert!(
                        (0..16).all(|i| l[i][k] == ls[i]),
                        "seed {seed} lane {k} levels"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_lanes_equal_the_vector_ones() {
        let x = values(256, 7);
        let w: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let p = MinSearchParams {
            kind: MinSearch::Qkx2,
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (mut a, mut b) = ([[0u8; 8]; 32], [[0u8; 8]; 32]);
        let ra = qkx_core::<Scalar8, 32>(p, &to_lanes(&x, 0), &to_lanes(&w, 0), &mut a);
        let rb = qkx_lanes::<32>(p, &to_lanes(&x, 0), &to_lanes(&w, 0), &mut b);
        assert_eq!((ra, a), (rb, b));
    }
}

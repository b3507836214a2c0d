//! Lane-parallel pieces of the IQ1–IQ3 encoders ([`super::super::iq_scan`],
//! [`super::super::iq1`]): candidate scoring, trial levels and IQ1's split searches, each lane
//! doing exactly the scalar code's operations so the bytes stay ggml's.

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::{Scalar8, Vec8};
use crate::types::iq_codebook::{Codebook, Lookup};

/// The first of `n` codebook candidates with the smallest weighted squared distance, scoring 8 at
/// a time: for each block of `D` rows of 8 lanes (row `i`: the stored value `v` of value `i` of 8
/// candidates), `Σ_i w[i]·(scale·q − x[i])²` with `q = v + shift` (`q = v` without one), summed
/// in `i` order exactly as the scalar neighbour searches do (`q` is exact for the codebooks' small
/// levels, so computing it costs no rounding). `None` when no score is below `f32::MAX`
/// (non-finite input).
pub fn nearest_candidate<const D: usize>(
    blocks: &[[f32; 8]],
    n: usize,
    shift: Option<f32>,
    scale: f32,
    x: &[f32],
    w: &[f32],
) -> Option<usize> {
    dispatch!(nearest_core, D, Option<usize>, (blocks: &[[f32; 8]], n: usize, shift: Option<f32>, scale: f32, x: &[f32], w: &[f32]))
}

#[inline(always)]
fn nearest_core<V: Vec8, const D: usize>(
    blocks: &[[f32; 8]],
    n: usize,
    shift: Option<f32>,
    scale: f32,
    x: &[f32],
    w: &[f32],
) -> Option<usize> {
    let (shift, vs) = (shift.map(V::splat), V::splat(scale));
    let xs: [V; D] = std::array::from_fn(|i| V::splat(x[i]));
    let ws: [V; D] = std::array::from_fn(|i| V::splat(w[i]));
    if n <= 8 {
        // One block: lanes not below f32::MAX (NaN included) and those past the end can never
        // be taken; the first lane holding the smallest of the rest is.
        let d2 = score::<V, D>(blocks, shift, vs, &xs, &ws).add(V::load(&PAST_END[n]));
        let d2 = V::select(d2.lt(V::splat(f32::MAX)), d2, V::splat(f32::INFINITY));
        let min = d2.hmin();
        if min == f32::INFINITY {
            return None;
        }
        return Some(V::mask_u8(d2.eq(V::splat(min))).trailing_zeros() as usize);
    }
    // Per lane: the smallest score and the first candidate holding it (strict `<`, as the scalar
    // scan). Then the smallest score over lanes and, on ties, the lowest candidate number: the
    // first candidate with the overall smallest score, which is what the scalar scan keeps.
    let (mut best_d2, mut best_at) = (V::splat(f32::MAX), V::splat(f32::INFINITY));
    let mut at = V::load(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let blocks = blocks.chunks_exact(D);
    let last = blocks.len() - 1;
    for (c, block) in blocks.enumerate() {
        let mut d2 = score::<V, D>(block, shift, vs, &xs, &ws);
        if c == last {
            d2 = d2.add(V::load(&PAST_END[n - 8 * last]));
        }
        let better = d2.lt(best_d2);
        best_d2 = V::select(better, d2, best_d2);
        best_at = V::select(better, at, best_at);
        at = at.add(V::splat(8.0));
    }
    let min = best_d2.hmin();
    if min == f32::MAX {
        return None; // no lane ever scored below it
    }
    let lanes = V::mask_u8(best_d2.eq(V::splat(min)));
    let at = best_at.store();
    (0..8)
        .filter(|&k| lanes & (1 << k) != 0)
        .map(|k| at[k] as usize)
        .min()
}

/// Scores of one block of 8 candidates (see [`nearest_candidate`]).
#[inline(always)]
fn score<V: Vec8, const D: usize>(
    block: &[[f32; 8]],
    shift: Option<V>,
    vs: V,
    xs: &[V; D],
    ws: &[V; D],
) -> V {
    let mut d2 = V::splat(0.0);
    for i in 0..D {
        let q = match shift {
            Some(b) => V::load(&block[i]).add(b),
            None => V::load(&block[i]),
        };
        let diff = vs.mul(q).sub(xs[i]);
        d2 = d2.add(ws[i].mul(diff).mul(diff));
    }
    d2
}

/// Added to the scores of a last block holding `n` candidates (row `n`): lanes past the end can
/// never be the minimum.
static PAST_END: [[f32; 8]; 9] = {
    let mut t = [[0f32; 8]; 9];
    let mut n = 0;
    while n < 9 {
        let mut k = n;
        while k < 8 {
            t[n][k] = f32::INFINITY;
            k += 1;
        }
        n += 1;
    }
    t
};

/// One snapping pass of the IQ2/IQ3 scale search over a block of `xval.len()` magnitudes in
/// groups of `G` (`Scan::snap`): each group (with `only`, each marked one) takes the levels
/// `clamp(nearest_int(0.5·(id·x − 1)), 0, kmax − 1)` if they are a codebook point, else the
/// neighbour nearest `scale·(2l+1)` under the weights `waux` (the book stores magnitudes `2l+1`); `on[k]` says which. All of it in
/// one vector function, so the per-group work is not a call apiece.
#[allow(clippy::too_many_arguments)]
pub fn snap_groups<const G: usize>(
    book: &Codebook,
    kmax: i32,
    id: f32,
    scale: f32,
    xval: &[f32],
    waux: &[f32],
    l: &mut [i8],
    on: &mut [bool; 8],
    only: Option<&[bool; 8]>,
) {
    dispatch!(snap_core, G, (), (book: &Codebook, kmax: i32, id: f32, scale: f32, xval: &[f32], waux: &[f32], l: &mut [i8], on: &mut [bool; 8], only: Option<&[bool; 8]>))
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn snap_core<V: Vec8, const G: usize>(
    book: &Codebook,
    kmax: i32,
    id: f32,
    scale: f32,
    xval: &[f32],
    waux: &[f32],
    l: &mut [i8],
    on: &mut [bool; 8],
    only: Option<&[bool; 8]>,
) {
    let n = xval.len();
    let (vid, half, one) = (V::splat(id), V::splat(0.5), V::splat(1.0));
    let mut near = [0i8; 32];
    for (xs, ls) in xval.chunks_exact(8).zip(near.chunks_exact_mut(8)) {
        let v = V::load(xs.try_into().unwrap());
        let q = half.mul(vid.mul(v).sub(one));
        ls.copy_from_slice(&q.round_clamp_i8(0, kmax - 1));
    }
    let groups = l[..n]
        .chunks_exact_mut(G)
        .zip(near.chunks_exact(G))
        .zip(xval.chunks_exact(G).zip(waux.chunks_exact(G)));
    for (k, ((lg, ng), (x, w))) in groups.enumerate() {
        if only.is_some_and(|o| !o[k]) {
            continue;
        }
        let lg: &mut [i8; G] = lg.try_into().unwrap();
        let ng: &[i8; G] = ng.try_into().unwrap();
        on[k] = match book.lookup(book.pack(ng)) {
            Lookup::Point(_) => {
                *lg = *ng;
                true
            }
            Lookup::Near(nb) => {
                let at = nearest_core::<V, G>(nb.lanes, nb.points.len(), None, scale, x, w);
                // ggml asserts one scores below FLT_MAX; only non-finite input misses: the first.
                *lg = book.point_levels::<G>(nb.points[at.unwrap_or(0)] as usize);
                false
            }
        };
    }
}

/// `Σ w·x·q` and `Σ w·q²` (`q = 2l+1`, summed in value order as ggml's scale searches do) of
/// the first `N` values of each trial's levels `l[t]`, 8 trials at a time, one per lane; returns them per trial.
pub fn trial_fits<const N: usize>(
    l: &[[i8; 32]],
    xval: &[f32],
    weight: &[f32],
) -> ([f32; 32], [f32; 32]) {
    dispatch!(trial_fits_core, N, ([f32; 32], [f32; 32]), (l: &[[i8; 32]], xval: &[f32], weight: &[f32]))
}

#[inline(always)]
fn trial_fits_core<V: Vec8, const N: usize>(
    l: &[[i8; 32]],
    xval: &[f32],
    weight: &[f32],
) -> ([f32; 32], [f32; 32]) {
    let (mut sqx, mut sq2) = ([0f32; 32], [0f32; 32]);
    for (t0, trials) in l.chunks(8).enumerate() {
        let (mut qx, mut q2) = (V::splat(0.0), V::splat(0.0));
        for i in 0..N {
            let q: [f32; 8] = std::array::from_fn(|k| {
                trials.get(k).map_or(1.0, |t| (2 * t[i] as i32 + 1) as f32)
            });
            let q = V::load(&q);
            let w = V::splat(weight[i]);
            qx = qx.add(V::splat(weight[i] * xval[i]).mul(q));
            q2 = q2.add(w.mul(q).mul(q));
        }
        sqx[8 * t0..8 * t0 + 8].copy_from_slice(&qx.store());
        sq2[8 * t0..8 * t0 + 8].copy_from_slice(&q2.store());
    }
    (sqx, sq2)
}

/// `v` padded with 8 more values so that 8-wide loads from any position up to `N` stay in bounds.
fn padded<const N: usize>(v: &[f32]) -> [f32; 48] {
    let mut out = [0f32; 48];
    out[..=N].copy_from_slice(&v[..=N]);
    out
}

/// Runs the scalar update `(q2 > 0 && qx² > best·q2) ⇒ take it` over a batch of candidates, in
/// order, if any of them passes against the best so far. When none does, the scalar loop would
/// change nothing either, so skipping it is exact.
#[inline(always)]
fn batch<V: Vec8, const C: usize>(
    cand: [(V, V); C],
    n: usize,
    best_score: &mut f32,
    mut take: impl FnMut(usize, usize, f32),
) {
    let (zero, vb) = (V::splat(0.0), V::splat(*best_score));
    let mut any = 0u8;
    for &(qx, q2) in &cand {
        any |= V::mask_u8(V::and(zero.lt(q2), vb.mul(q2).lt(qx.mul(qx))));
    }
    let any = any & (0xffu16 >> (8 - n)) as u8 != 0;
    if !any {
        return;
    }
    let vals: [([f32; 8], [f32; 8]); C] = cand.map(|(qx, q2)| (qx.store(), q2.store()));
    for k in 0..n {
        for (c, (qx, q2)) in vals.iter().enumerate() {
            let (qx, q2) = (qx[k], q2[k]);
            if q2 > 0.0 && qx * qx > *best_score * q2 {
                let scale = qx / q2;
                *best_score = scale * qx;
                take(k, c, scale);
            }
        }
    }
}

/// IQ1_S's exhaustive split of a block of `N` sorted values into the levels −1, 0, +1 (shifted
/// up by `xp`, down by `xm`), from the prefix sums of `w·x` and `w`: the scale and the first best
/// `(i1, i2, shift)`, as `quantize_row_iq1_s_impl` finds them — candidate `i2` 8 at a time.
pub fn iq1s_best_split<const N: usize>(
    sumx: &[f32],
    sumw: &[f32],
    xp: &[f32; 3],
    xm: &[f32; 3],
    max: f32,
) -> (f32, Option<(usize, usize, i8)>) {
    dispatch!(iq1s_core, N, (f32, Option<(usize, usize, i8)>), (sumx: &[f32], sumw: &[f32], xp: &[f32; 3], xm: &[f32; 3], max: f32))
}

#[inline(always)]
fn iq1s_core<V: Vec8, const N: usize>(
    sumx: &[f32],
    sumw: &[f32],
    xp: &[f32; 3],
    xm: &[f32; 3],
    max: f32,
) -> (f32, Option<(usize, usize, i8)>) {
    let (px, pw) = (padded::<N>(sumx), padded::<N>(sumw));
    let (tx, tw) = (V::splat(sumx[N]), V::splat(sumw[N]));
    let (mut best_score, mut scale, mut best) = (-f32::MAX, max, None);
    for i1 in 0..=N {
        let (ax, aw) = (sumx[i1] - sumx[0], sumw[i1] - sumw[0]);
        let (x1, w1) = (V::splat(sumx[i1]), V::splat(sumw[i1]));
        for i2 in (i1..=N).step_by(8) {
            let sx = V::load(px[i2..i2 + 8].try_into().unwrap());
            let sw = V::load(pw[i2..i2 + 8].try_into().unwrap());
            let (bx, cx, bw, cw) = (sx.sub(x1), tx.sub(sx), sw.sub(w1), tw.sub(sw));
            let sums = (ax, aw, bx, cx, bw, cw);
            let n = (N + 1 - i2).min(8);
            batch(
                [split_sums(sums, xp), split_sums(sums, xm)],
                n,
                &mut best_score,
                |k, c, s| {
                    scale = s;
                    best = Some((i1, i2 + k, if c == 0 { 1 } else { -1 }));
                },
            );
        }
    }
    (scale, best)
}

/// One IQ1_S candidate's `Σ w·q·x` and `Σ w·q²` from the prefix-sum differences `A` (scalar),
/// `B`, `C` (lanes): `((A·x0 + B·x1) + C·x2)` and `((A·x0·x0 + B·x1·x1) + C·x2·x2)`, as ggml sums.
#[inline(always)]
fn split_sums<V: Vec8>((ax, aw, bx, cx, bw, cw): (f32, f32, V, V, V, V), xs: &[f32; 3]) -> (V, V) {
    let (s1, s2) = (V::splat(xs[1]), V::splat(xs[2]));
    let qx = V::splat(ax * xs[0]).add(bx.mul(s1)).add(cx.mul(s2));
    let q2 = V::splat(aw * xs[0] * xs[0])
        .add(bw.mul(s1).mul(s1))
        .add(cw.mul(s2).mul(s2));
    (qx, q2)
}

/// IQ1_M's split of a block of 16 sorted values whose halves of 8 have shifts of their own, from
/// per-half prefix sums `px`, `pw` (`quantize_row_iq1_m_impl`'s collapsed form): the scale and
/// the first best `(i1, i2, shift code)`, candidate `i2` 8 at a time.
pub fn iq1m_best_split<const N: usize>(
    px: &[[f32; 17]; 2],
    pw: &[[f32; 17]; 2],
    xp: &[f32; 3],
    xm: &[f32; 3],
    max: f32,
) -> (f32, Option<(usize, usize, usize)>) {
    dispatch!(iq1m_core, N, (f32, Option<(usize, usize, usize)>), (px: &[[f32; 17]; 2], pw: &[[f32; 17]; 2], xp: &[f32; 3], xm: &[f32; 3], max: f32))
}

#[inline(always)]
fn iq1m_core<V: Vec8, const N: usize>(
    px: &[[f32; 17]; 2],
    pw: &[[f32; 17]; 2],
    xp: &[f32; 3],
    xm: &[f32; 3],
    max: f32,
) -> (f32, Option<(usize, usize, usize)>) {
    let ppx = [padded::<N>(&px[0]), padded::<N>(&px[1])];
    let ppw = [padded::<N>(&pw[0]), padded::<N>(&pw[1])];
    let txs = [px[0][N], px[1][N]];
    let tws = [pw[0][N], pw[1][N]];
    let (p2, m2) = (xp[2], xm[2]);
    let (cp1, cp2) = (xp[0] * xp[0] - xp[1] * xp[1], xp[1] * xp[1] - xp[2] * xp[2]);
    let (cm1, cm2) = (xm[0] * xm[0] - xm[1] * xm[1], xm[1] * xm[1] - xm[2] * xm[2]);
    let (mut best_score, mut scale, mut best) = (-f32::MAX, max, None);
    for i1 in 0..=N {
        for i2 in (i1..=N).step_by(8) {
            let mut qx_p = [V::splat(0.0); 2];
            let (mut qx_m, mut q2_p, mut q2_m) = (qx_p, qx_p, qx_p);
            for h in 0..2 {
                let x2 = V::load(ppx[h][i2..i2 + 8].try_into().unwrap());
                let w2 = V::load(ppw[h][i2..i2 + 8].try_into().unwrap());
                let sx = V::splat(px[h][i1]).add(x2);
                qx_p[h] = V::splat(txs[h] * p2).sub(sx);
                qx_m[h] = V::splat(txs[h] * m2).sub(sx);
                q2_p[h] = V::splat(tws[h] * p2 * p2 + pw[h][i1] * cp1).add(w2.mul(V::splat(cp2)));
                q2_m[h] = V::splat(tws[h] * m2 * m2 + pw[h][i1] * cm1).add(w2.mul(V::splat(cm2)));
            }
            let cand = [
                (qx_p[0].add(qx_p[1]), q2_p[0].add(q2_p[1])),
                (qx_p[0].add(qx_m[1]), q2_p[0].add(q2_m[1])),
                (qx_m[0].add(qx_p[1]), q2_m[0].add(q2_p[1])),
                (qx_m[0].add(qx_m[1]), q2_m[0].add(q2_m[1])),
            ];
            let n = (N + 1 - i2).min(8);
            batch(cand, n, &mut best_score, |k, c, s| {
                scale = s;
                best = Some((i1, i2 + k, c));
            });
        }
    }
    (scale, best)
}

//! The search the IQ2 and IQ3 encoders share (`quantize_row_iq2_*_impl`, `quantize_row_iq3_*_impl`
//! in ggml-quants.c): values are stored as magnitudes `scale·(2l+1)` with signs apart, and groups
//! of 8 (IQ2) or 4 (IQ3) levels must form a codebook point. A block tries a range of scales, snaps
//! each group to its packing or, off the grid, to the best of its neighbours, keeps the scale with
//! the best weighted fit, then re-snaps at that scale. The types differ only in the parameters of
//! [`Scan`] and in how they store the result.

use super::iq_codebook::Codebook;
use super::lanes;
use super::search::nearest_int;
use super::QK_K;

/// `sigma2` of a super-block: `factor·Σx²/256`, the weighting's floor.
pub fn sigma2(xbl: &[f32], factor: f32) -> f32 {
    let mut sumx2 = 0f32;
    for &v in xbl {
        sumx2 += v * v;
    }
    factor * sumx2 / QK_K as f32
}

/// Importance weights of a block: `qw·√(σ² + x²)`.
pub fn importance(xb: &[f32], qw: &[f32], sigma2: f32, weight: &mut [f32]) {
    for ((w, &q), &x) in weight.iter_mut().zip(qw).zip(xb) {
        *w = q * (sigma2 + x * x).sqrt();
    }
}

/// Magnitudes of a group of 8 into `xval` and its sign bits. With `even`, the types whose sign
/// byte keeps only 7 bits force an even count of negatives by flipping the value that costs least
/// (smallest `w·x²`, first on ties), and return those 7 bits.
pub fn signs8(xb: &[f32], weight: &[f32], xval: &mut [f32], even: bool) -> u8 {
    let mut s = 0u8;
    for i in 0..8 {
        if xb[i] >= 0.0 {
            xval[i] = xb[i];
        } else {
            xval[i] = -xb[i];
            s |= 1 << i;
        }
    }
    if !even {
        return s;
    }
    if s.count_ones() % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * xb[0] * xb[0];
        for i in 1..8 {
            let ax = weight[i] * xb[i] * xb[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s & 127
}

/// ggml's `MAX` over a slice, from its first value.
pub fn max_of(x: &[f32]) -> f32 {
    x[1..].iter().fold(x[0], |m, &v| if m > v { m } else { v })
}

/// Which groups the final pass re-snaps at the chosen scale.
#[derive(Clone, Copy, PartialEq)]
pub enum Refine {
    /// Every group, whenever the scale is positive (IQ2_XXS).
    Always,
    /// Only the groups that were off the grid, if any (IQ2_XS, IQ2_S, IQ3_XXS).
    OffGrid,
    /// Every group, if any was off the grid (IQ3_S).
    AllIfOffGrid,
}

/// One type's scale search.
pub struct Scan {
    /// The type's codebook.
    pub book: &'static Codebook,
    /// Levels per value (`kMaxQ`): 3 for IQ2, 8 for IQ3.
    pub kmax: i32,
    /// Scale trials `is` in `−steps..=steps`…
    pub steps: i32,
    /// …each moving `2·kmax−1` by `is·step`.
    pub step: f32,
    /// The final pass.
    pub refine: Refine,
    /// Whether the groups start as on the grid before any trial wins (all but IQ3_S).
    pub start_on_grid: bool,
}

impl Scan {
    /// Searches one block: `max` sets the trial scales, `scale` is the answer if no trial fits
    /// better than zero. Leaves each value's level in `l` and returns the block's scale.
    pub fn run(
        &self,
        xval: &[f32],
        weight: &[f32],
        waux: &[f32],
        max: f32,
        mut scale: f32,
        l: &mut [i8],
    ) -> f32 {
        let (n, g) = (xval.len(), self.book.dim);
        let ng = n / g;
        // The trials are independent until one is kept: snap them all, fit them 8 at a time,
        // then keep the best in trial order as ggml does.
        let trials = (2 * self.steps + 1) as usize;
        let mut laux = [[0i8; 32]; 32];
        let mut on_aux = [[true; 8]; 32];
        for (t, is) in (-self.steps..=self.steps).enumerate() {
            let id = ((2 * self.kmax - 1) as f32 + is as f32 * self.step) / max;
            let this_scale = 1.0 / id;
            self.snap(
                id,
                this_scale,
                xval,
                waux,
                &mut laux[t],
                &mut on_aux[t],
                None,
            );
        }
        let (sqx, sq2) = match n {
            32 => lanes::trial_fits::<32>(&laux[..trials], xval, weight),
            _ => lanes::trial_fits::<16>(&laux[..trials], xval, weight),
        };
        let mut on_grid = [self.start_on_grid; 8];
        let mut best = 0f32;
        for t in 0..trials {
            let (sumqx, sumq2) = (sqx[t], sq2[t]);
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                scale = sumqx / sumq2;
                best = scale * sumqx;
                l[..n].copy_from_slice(&laux[t][..n]);
                on_grid = on_aux[t];
            }
        }
        let any_off = on_grid[..ng].iter().any(|&o| !o);
        let run = match self.refine {
            Refine::Always => scale > 0.0,
            Refine::OffGrid | Refine::AllIfOffGrid => any_off && scale > 0.0,
        };
        if run {
            let id = 1.0 / scale;
            let off: [bool; 8] = std::array::from_fn(|k| !on_grid[k]);
            let only = (self.refine == Refine::OffGrid).then_some(&off);
            let mut on = [true; 8];
            self.snap(id, scale, xval, waux, l, &mut on, only);
            let (sumqx, sumq2) = fit(&xval[..n], weight, &l[..n]);
            if sumq2 > 0.0 {
                scale = sumqx / sumq2;
            }
        }
        scale
    }

    /// Snaps every group (or, with `only`, the marked ones) at inverse scale `id`: its nearest
    /// levels if they are a point, else the best neighbour at `scale`. Sets `on` to whether each
    /// group's levels were a point.
    #[allow(clippy::too_many_arguments)]
    fn snap(
        &self,
        id: f32,
        scale: f32,
        xval: &[f32],
        waux: &[f32],
        l: &mut [i8],
        on: &mut [bool; 8],
        only: Option<&[bool; 8]>,
    ) {
        let (book, kmax) = (self.book, self.kmax);
        match book.dim {
            8 => lanes::snap_groups::<8>(book, kmax, id, scale, xval, waux, l, on, only),
            _ => lanes::snap_groups::<4>(book, kmax, id, scale, xval, waux, l, on, only),
        }
    }

    /// The codebook point of group `k` of final levels `l`.
    pub fn point(&self, l: &[i8], k: usize) -> usize {
        let g = self.book.dim;
        self.book
            .point_of(&l[g * k..g * (k + 1)])
            .expect("a block's final levels are codebook points")
    }
}

/// `Σ w·x·q` and `Σ w·q²` with `q = 2l+1`.
fn fit(xval: &[f32], weight: &[f32], l: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for i in 0..xval.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The 4-bit block scale `l` of `scale` under super-block `1/d` (`nearest_int(0.5(id·s−1))`,
/// clamped to `0..=max`).
#[inline]
pub fn scale_nibble(id: f32, scale: f32, max: i32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, max) as u8
}

/// `waux = √weight`.
pub fn sqrt_into(weight: &[f32], waux: &mut [f32]) {
    for (a, &w) in waux.iter_mut().zip(weight) {
        *a = w.sqrt();
    }
}

/// ggml's `MAX(a, b)`.
#[inline]
pub fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

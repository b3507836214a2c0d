//! Products with the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) in integer
//! arithmetic, in llama.cpp's order. The activations are quantized to Q8_0 (Q8_1 for the `_1`
//! types: the same levels and scale, plus the block's `s`); each block's 32 products are summed
//! exactly in eight 32-bit lanes of four adjacent products; each lane, as f32, is multiplied by
//! the product of the two scales and accumulated into its own f32 lane with one fused
//! multiply-add; the eight lanes end in `hsum_float_8`'s order, and the `_1` types then add their
//! `Σ m·s`, summed in block order. ggml's AVX2 `vec_dot`s (used by `mul_mat_id`, by small
//! `mul_mat`s and always for the `_1` types) and tinyBLAS's `tinyBLAS_Q0_AVX` (the other
//! `mul_mat`s) all compute exactly this, so one kernel gives llama.cpp's bits for every shape
//! and thread count.
//!
//! On AVX512-VNNI, one `vpdpbusd` computes a whole block for two weight rows (row `2p` in lanes
//! 0–7, row `2p+1` in lanes 8–15: each lane a sum of four products), so a tile of two row pairs
//! and eight activation rows keeps its 16 accumulators in registers while the weights stay in
//! L1; elsewhere the same arithmetic runs one output at a time.

use rayon::prelude::*;

use formats::gguf::GgmlType;
use quantize::activation::q8_1_block;
use quantize::types::levels32::{self, BLOCK};

use crate::lanes::{dispatched, has_vnni};
use crate::pair_tiles::{hsum_float_8, row_tasks, LANES};

/// Bytes of one pair-block: two rows' 32 levels.
const PAIR_BYTES: usize = 2 * BLOCK;
/// Weight rows per parallel task.
const TASK_ROWS: usize = 64;

/// Whether `ty` weights take the integer kernel.
pub(crate) fn applies(ty: GgmlType) -> bool {
    levels32::applies(ty)
}

/// Activation rows in Q8_0/Q8_1 form.
pub(crate) struct Q8Rows {
    n_rows: usize,
    n_blocks: usize,
    /// Levels, row after row.
    levels: Vec<i8>,
    /// Scale of each block (f16-rounded).
    scales: Vec<f32>,
    /// `s` of each block (Q8_1's f16 `d · Σ levels`).
    sums: Vec<f32>,
    /// −128 × each lane's sum of four levels, eight per block: the offset that turns the
    /// kernel's unsigned weight bytes (level + 128) back into signed products.
    offsets: Vec<i32>,
}

impl Q8Rows {
    /// `n_rows` rows of `x` (whose row length is a multiple of 32), quantized as ggml's
    /// `quantize_row_q8_0`/`_q8_1`.
    pub(crate) fn new(x: &[f32], n_rows: usize) -> Q8Rows {
        let n_blocks = x.len() / n_rows.max(1) / BLOCK;
        let blocks = x.len() / BLOCK;
        let mut q = Q8Rows {
            n_rows,
            n_blocks,
            levels: vec![0; x.len()],
            scales: vec![0.0; blocks],
            sums: vec![0.0; blocks],
            offsets: vec![0; blocks * LANES],
        };
        let row = n_blocks.max(1);
        q.levels
            .par_chunks_mut(row * BLOCK)
            .zip(q.scales.par_chunks_mut(row))
            .zip(q.sums.par_chunks_mut(row))
            .zip(q.offsets.par_chunks_mut(row * LANES))
            .zip(x.par_chunks(row * BLOCK))
            .for_each(|((((levels, scales), sums), offsets), x)| {
                quantize_row(x, levels, scales, sums, offsets)
            });
        q
    }
}

dispatched! {
    /// One activation row into [`Q8Rows`]' form.
    fn quantize_row(x: &[f32], levels: &mut [i8], scales: &mut [f32], sums: &mut [f32], offsets: &mut [i32]) {
        for ((((x, l), d), s), o) in x
            .chunks_exact(BLOCK)
            .zip(levels.chunks_exact_mut(BLOCK))
            .zip(scales.iter_mut())
            .zip(sums.iter_mut())
            .zip(offsets.chunks_exact_mut(LANES))
        {
            (*d, *s) = q8_1_block(x, l);
            for (o, q) in o.iter_mut().zip(l.chunks_exact(4)) {
                *o = -128 * q.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
    }
}

/// A task's weight rows, two per 16-lane register.
struct RowPairs {
    /// Rows that exist (an odd count leaves the last pair's second row zero, never stored).
    rows: usize,
    n_blocks: usize,
    /// Per pair and block: row `2p`'s 32 levels, then row `2p+1`'s, each + 128.
    levels: Vec<u8>,
    /// Per pair and block: row `2p`'s scale in lanes 0–7, row `2p+1`'s in lanes 8–15.
    d: Vec<f32>,
    /// Per row and block: the min (the `_1` types; empty otherwise).
    m: Vec<f32>,
}

impl RowPairs {
    /// Unpacks `rows` (whole rows of `row_bytes`, `n_blocks` blocks of `ty` each).
    fn new(ty: GgmlType, rows: &[u8], row_bytes: usize, n_blocks: usize) -> RowPairs {
        let n = rows.len() / row_bytes;
        let pairs = n.div_ceil(2);
        let with_min = levels32::has_min(ty);
        let mut w = RowPairs {
            rows: n,
            n_blocks,
            levels: vec![128; pairs * n_blocks * PAIR_BYTES],
            d: vec![0.0; pairs * n_blocks * 2 * LANES],
            m: vec![0.0; if with_min { n * n_blocks } else { 0 }],
        };
        let block_bytes = ty.block_bytes();
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            let (p, h) = (r / 2, r % 2);
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let u = levels32::unpack(ty, block);
                let at = p * n_blocks + b;
                let levels = &mut w.levels[at * PAIR_BYTES + h * BLOCK..][..BLOCK];
                for (o, &l) in levels.iter_mut().zip(&u.levels) {
                    *o = (l as i32 + 128) as u8;
                }
                w.d[(2 * at + h) * LANES..][..LANES].fill(u.d);
                if with_min {
                    w.m[r * n_blocks + b] = u.m;
                }
            }
        }
        w
    }
}

/// `x` (as [`Q8Rows`]) times `weight`ᵀ (`m` rows of `ty` blocks in `bytes`) into `out`
/// (`n_rows` × `m`, every element written). Panics unless [`applies`] holds and the slices hold
/// those shapes.
pub(crate) fn product(ty: GgmlType, bytes: &[u8], x: &Q8Rows, m: usize, out: &mut [f32]) {
    let (n, nb) = (x.n_rows, x.n_blocks);
    assert!(applies(ty), "no integer kernel for {ty:?}");
    assert_eq!(
        bytes.len(),
        m * nb * ty.block_bytes(),
        "{ty:?} weight bytes"
    );
    assert_eq!(out.len(), n * m, "{ty:?} product output");
    let row_bytes = bytes.len() / m.max(1);
    let vnni = has_vnni();
    row_tasks(out, n, m, bytes, TASK_ROWS, |rows, window| {
        let w = RowPairs::new(ty, rows, row_bytes, nb);
        #[cfg(target_arch = "x86_64")]
        if vnni {
            let (out, stride) = window.raw();
            // SAFETY: `has_vnni` checked AVX-512F and VNNI; `out` is this task's own
            // `n` × `w.rows` window of the output, rows `stride` apart.
            unsafe { x86::multiply(&w, x, out, stride) };
        }
        if !vnni {
            window.set_each(|t, r| dot(&w, r, x, t));
        }
        if !w.m.is_empty() {
            window.add_each(|t, r| sum_of_mins(&w, r, x, t));
        }
    });
}

/// The `_1` types' `Σ m·s` of weight row `r` and activation row `t`, in block order.
fn sum_of_mins(w: &RowPairs, r: usize, x: &Q8Rows, t: usize) -> f32 {
    let nb = w.n_blocks;
    w.m[r * nb..(r + 1) * nb]
        .iter()
        .zip(&x.sums[t * nb..(t + 1) * nb])
        .fold(0.0f32, |s, (m, xs)| s + m * xs)
}

dispatched! {
    /// Weight row `r` with activation row `t` without the mins' term: see the module comment.
    fn dot(w: &RowPairs, r: usize, x: &Q8Rows, t: usize) -> f32 {
        let nb = w.n_blocks;
        let (p, h) = (r / 2, r % 2);
        let mut acc = [0.0f32; LANES];
        for b in 0..nb {
            let at = p * nb + b;
            let wl = &w.levels[at * PAIR_BYTES + h * BLOCK..][..BLOCK];
            let xl = &x.levels[(t * nb + b) * BLOCK..][..BLOCK];
            let d = w.d[(2 * at + h) * LANES] * x.scales[t * nb + b];
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (0..4)
                    .map(|k| (wl[4 * l + k] as i32 - 128) * xl[4 * l + k] as i32)
                    .sum();
                *a = d.mul_add(s as f32, *a);
            }
        }
        hsum_float_8(&acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX512-VNNI kernel.

    use std::arch::x86_64::*;

    use super::{Q8Rows, RowPairs, BLOCK, LANES, PAIR_BYTES};
    use crate::pair_tiles::{for_each_tile, pair_sums, PairTile};

    /// `out` (`x.n_rows` rows, `width` apart, of `w.rows` values) = `x` · `w`ᵀ without the
    /// mins' term.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-VNNI, and `out` must be writable as described.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn multiply(w: &RowPairs, x: &Q8Rows, out: *mut f32, width: usize) {
        let tiles = Tiles { w, x, out, width };
        for_each_tile(&tiles, w.rows.div_ceil(2), x.n_rows);
    }

    /// A task's weights, the activations and the task's window of the output.
    struct Tiles<'a> {
        w: &'a RowPairs,
        x: &'a Q8Rows,
        out: *mut f32,
        width: usize,
    }

    impl PairTile for Tiles<'_> {
        /// Row pairs `p..p+R` × activation rows `t..t+T`.
        #[inline(always)]
        unsafe fn tile<const R: usize, const T: usize>(&self, p: usize, t: usize) {
            let (w, x) = (self.w, self.x);
            let nb = w.n_blocks;
            let mut acc = [[_mm512_setzero_ps(); R]; T];
            for b in 0..nb {
                let at: [usize; R] = std::array::from_fn(|i| (p + i) * nb + b);
                let wv: [__m512i; R] = std::array::from_fn(|i| {
                    _mm512_loadu_si512(w.levels.as_ptr().add(at[i] * PAIR_BYTES) as *const _)
                });
                let dv: [__m512; R] =
                    std::array::from_fn(|i| _mm512_loadu_ps(w.d.as_ptr().add(2 * at[i] * LANES)));
                for (j, acc) in acc.iter_mut().enumerate() {
                    let blk = (t + j) * nb + b;
                    let xv = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        x.levels.as_ptr().add(blk * BLOCK) as *const __m256i,
                    ));
                    let ov = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        x.offsets.as_ptr().add(blk * LANES) as *const __m256i,
                    ));
                    let dx = _mm512_set1_ps(*x.scales.get_unchecked(blk));
                    for i in 0..R {
                        let s = _mm512_dpbusd_epi32(ov, wv[i], xv);
                        let d = _mm512_mul_ps(dv[i], dx);
                        acc[i] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[i]);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                for (i, acc) in acc.iter().enumerate() {
                    for (h, v) in pair_sums(*acc).into_iter().enumerate() {
                        let r = 2 * (p + i) + h;
                        if r < w.rows {
                            *self.out.add((t + j) * self.width + r) = v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantize::activation::q8_1_block;

    /// A signal whose outliers make block scales vary and lane sums large.
    fn signal(n: usize, seed: usize) -> Vec<f32> {
        crate::pair_tiles::tests::signal(n, seed, 89, 40.0)
    }

    /// ggml's arithmetic written out one output at a time from the decoded blocks.
    fn reference(ty: GgmlType, bytes: &[u8], x: &[f32], n: usize, m: usize) -> Vec<f32> {
        let k = x.len() / n;
        let nb = k / BLOCK;
        let bb = ty.block_bytes();
        let mut out = vec![0.0f32; n * m];
        for t in 0..n {
            for r in 0..m {
                let (mut acc, mut summs) = ([0.0f32; LANES], 0.0f32);
                for b in 0..nb {
                    let u = levels32::unpack(ty, &bytes[(r * nb + b) * bb..][..bb]);
                    let mut q = [0i8; BLOCK];
                    let (dx, s) = q8_1_block(&x[t * k + b * BLOCK..][..BLOCK], &mut q);
                    for (l, a) in acc.iter_mut().enumerate() {
                        let s: i32 = (4 * l..4 * l + 4)
                            .map(|i| u.levels[i] as i32 * q[i] as i32)
                            .sum();
                        *a = (u.d * dx).mul_add(s as f32, *a);
                    }
                    summs += u.m * s;
                }
                let lo: [f32; 4] = std::array::from_fn(|i| acc[i] + acc[i + 4]);
                out[t * m + r] = ((lo[0] + lo[2]) + (lo[1] + lo[3])) + summs;
            }
        }
        out
    }

    #[test]
    fn every_type_gives_the_reference_bits_on_every_path() {
        for (n, k, m) in [(11, 896, 2 * TASK_ROWS + 37), (9, 64, 6), (1, 32, 3)] {
            let x = signal(n * k, 3);
            let q = Q8Rows::new(&x, n);
            for ty in levels32::TYPES {
                let wv = signal(m * k, ty as usize);
                let mut bytes = vec![0u8; m * k / BLOCK * ty.block_bytes()];
                quantize::quantize(ty, &wv, &mut bytes).unwrap();
                let want = reference(ty, &bytes, &x, n, m);
                let mut got = vec![f32::NAN; n * m];
                product(ty, &bytes, &q, m, &mut got);
                let same = |a: &[f32]| a.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same(&got), "{ty:?} {n}x{k}x{m}");
                // The one-output-at-a-time path (machines without VNNI) too.
                let w = RowPairs::new(ty, &bytes, bytes.len() / m, k / BLOCK);
                let mut one = vec![0.0f32; n * m];
                for t in 0..n {
                    for r in 0..m {
                        one[t * m + r] = dot(&w, r, &q, t);
                        if !w.m.is_empty() {
                            one[t * m + r] += sum_of_mins(&w, r, &q, t);
                        }
                    }
                }
                assert!(same(&one), "{ty:?} {n}x{k}x{m}, one at a time");
                // And close to the product of the decoded values.
                let mut wd = vec![0.0f32; m * k];
                quantize::dequantize(ty, &bytes, &mut wd).unwrap();
                let exact: f64 = wd[..k]
                    .iter()
                    .zip(&x[..k])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let scale: f64 = wd[..k]
                    .iter()
                    .zip(&x[..k])
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                assert!(
                    (got[0] as f64 - exact).abs() <= 0.02 * scale,
                    "{ty:?}: {} vs {exact}",
                    got[0]
                );
            }
        }
    }
}

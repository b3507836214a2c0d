//! The frame the two integer kernels ([`crate::legacy_gemm`], [`crate::kquant_gemm`]) share.
//! Both reproduce ggml's AVX2 `vec_dot`s, which keep eight f32 lanes per output; both put two
//! weight rows in each 16-lane AVX-512 register (row `2p` in lanes 0–7, row `2p+1` in 8–15); both
//! split the weight rows into parallel tasks that each own their columns of the output; and both
//! walk a task in tiles of row pairs × activation rows, with the accumulators in registers.

use faer::MatMut;
use rayon::prelude::*;

/// f32 lanes of one output (ggml's `__m256` accumulator).
pub(crate) const LANES: usize = 8;
/// Activation rows one tile multiplies at once.
const TILE_TOKENS: usize = 4;
/// Activation rows kept hot in cache while a task's weight rows pass over them.
const TOKEN_BLOCK: usize = 64;

/// `hsum_float_8`: the high half onto the low, then the pairs (0, 2) and (1, 3), then the two.
#[inline(always)]
pub(crate) fn hsum_float_8(acc: &[f32]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| acc[4 + i] + acc[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// One task's columns of the output: `rows` values in each of `n` output rows, `stride` apart.
pub(crate) struct Window {
    ptr: *mut f32,
    stride: usize,
    n: usize,
    /// Weight rows of the task (its columns).
    pub(crate) rows: usize,
}

impl Window {
    /// Sets output `(t, r)` of the window to `f(t, r)` for every activation row `t` and weight
    /// row `r`.
    pub(crate) fn set_each(&mut self, f: impl Fn(usize, usize) -> f32) {
        for t in 0..self.n {
            for r in 0..self.rows {
                // SAFETY: (t, r) lies in this task's window of the output (`row_tasks`).
                unsafe { *self.ptr.add(t * self.stride + r) = f(t, r) };
            }
        }
    }

    /// The first output and the distance between output rows, for a kernel that writes the
    /// window itself.
    pub(crate) fn raw(&mut self) -> (*mut f32, usize) {
        (self.ptr, self.stride)
    }

    /// Adds `f(t, r)` to output `(t, r)` of the window, for every `t` and `r`.
    pub(crate) fn add_each(&mut self, f: impl Fn(usize, usize) -> f32) {
        for t in 0..self.n {
            for r in 0..self.rows {
                // SAFETY: as in `set_each`.
                unsafe { *self.ptr.add(t * self.stride + r) += f(t, r) };
            }
        }
    }
}

/// Splits `out` (`n` × `m`, row-major) and `bytes` (`m` weight rows) into tasks of `task_rows`
/// weight rows and runs `task` on each in parallel, with those rows' bytes and their window of
/// `out`. Each output is computed by one task, so results do not depend on the thread count.
pub(crate) fn row_tasks(
    out: &mut [f32],
    n: usize,
    m: usize,
    bytes: &[u8],
    task_rows: usize,
    task: impl Fn(&[u8], &mut Window) + Sync + Send,
) {
    if n == 0 || m == 0 {
        return;
    }
    let row_bytes = bytes.len() / m;
    MatMut::from_row_major_slice_mut(out, n, m)
        .par_col_chunks_mut(task_rows)
        .zip(bytes.par_chunks(row_bytes * task_rows))
        .for_each(|(columns, rows)| {
            let mut window = Window {
                ptr: columns.as_ptr_mut(),
                stride: columns.row_stride() as usize,
                n,
                rows: columns.ncols(),
            };
            task(rows, &mut window);
        });
}

/// A kernel's tile: weight row pairs `p..p+R` × activation rows `t..t+T`, written to its window.
pub(crate) trait PairTile {
    /// Computes and stores one tile.
    ///
    /// # Safety
    /// As the kernel's [`for_each_tile`] caller states (CPU features, window).
    unsafe fn tile<const R: usize, const T: usize>(&self, p: usize, t: usize);
}

/// Runs `kernel` over every tile of `pairs` row pairs × `n` activation rows: blocks of
/// [`TOKEN_BLOCK`] activation rows, two pairs × [`TILE_TOKENS`] rows at a time, the remainders one
/// at a time. Inlined into the caller, so that a caller compiled for AVX-512 inlines the tiles.
///
/// # Safety
/// As [`PairTile::tile`].
#[inline(always)]
pub(crate) unsafe fn for_each_tile<K: PairTile>(kernel: &K, pairs: usize, n: usize) {
    for t0 in (0..n).step_by(TOKEN_BLOCK) {
        let t_end = (t0 + TOKEN_BLOCK).min(n);
        let mut p = 0;
        while p < pairs {
            let two = pairs - p >= 2;
            let mut t = t0;
            while t < t_end {
                let whole = t_end - t >= TILE_TOKENS;
                match (two, whole) {
                    (true, true) => kernel.tile::<2, TILE_TOKENS>(p, t),
                    (true, false) => kernel.tile::<2, 1>(p, t),
                    (false, true) => kernel.tile::<1, TILE_TOKENS>(p, t),
                    (false, false) => kernel.tile::<1, 1>(p, t),
                }
                t += if whole { TILE_TOKENS } else { 1 };
            }
            p += if two { 2 } else { 1 };
        }
    }
}

/// A register's 16 lanes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn lanes(v: std::arch::x86_64::__m512) -> [f32; 2 * LANES] {
    let mut lanes = [0.0f32; 2 * LANES];
    std::arch::x86_64::_mm512_storeu_ps(lanes.as_mut_ptr(), v);
    lanes
}

/// The two outputs of a register of row-pair lanes: `hsum_float_8` of lanes 0–7 and of 8–15.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn pair_sums(acc: std::arch::x86_64::__m512) -> [f32; 2] {
    let lanes = lanes(acc);
    [hsum_float_8(&lanes[..LANES]), hsum_float_8(&lanes[LANES..])]
}

/// Test signals shared by the kernels' tests.
#[cfg(test)]
pub(crate) mod tests {
    /// A smooth-but-irregular signal with an outlier every `period` values, `outlier` times
    /// larger (so that block scales vary and lane sums are large).
    pub(crate) fn signal(n: usize, seed: usize, period: usize, outlier: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = ((i * 7 + seed * 13) as f32 * 0.618_034).fract() - 0.45;
                if (i + seed).is_multiple_of(period) {
                    v * outlier
                } else {
                    v
                }
            })
            .collect()
    }
}

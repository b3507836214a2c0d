//! Products with F32 and F16 weights summed in exactly the order llama.cpp's CPU backend sums
//! them on an AVX-512 machine, so that an f32 model's logits equal llama.cpp's to the last bit
//! rather than to a summation-order difference that an f16 key/value cache can amplify.
//!
//! ggml multiplies such weights in one of two ways (`ggml_compute_forward_mul_mat`):
//! - llamafile's tinyBLAS (`sgemm.cpp`) when the batch has two or more rows, the weight's row
//!   count is a multiple of 4 and its width a multiple of 16: every output element keeps 16 lane
//!   sums, lane `l` fusing the products `k ≡ l (mod 16)` in order, and ends with
//!   `_mm512_reduce_add_ps` ([`reduce16`]);
//! - otherwise `ggml_vec_dot_f32`/`_f16`: four such 16-lane sums over steps of 64, folded
//!   pairwise, reduced, then the leftover products added one by one.
//!
//! Each element's order is fixed, so tiling and threading change nothing in the result. The
//! kernels run on AVX-512 (one register per 16 lanes) or AVX2+FMA (two registers), and portably
//! with `mul_add` elsewhere — the same arithmetic, so the same bits, on every machine.

use rayon::prelude::*;

use crate::lanes::{self, LaneKernel, Lanes16, Portable, LANES};

/// `GGML_F32_STEP`: products per iteration of `ggml_vec_dot_f32`'s main loop (four accumulators).
const VEC_DOT_STEP: usize = 64;
/// Weight rows of one tile (tinyBLAS's `RM`).
const TILE_ROWS: usize = 4;
/// Activation rows handled by one parallel task.
const TASK_ROWS: usize = 48;

/// Weight rows in a float encoding the kernels read directly.
#[derive(Clone, Copy)]
pub(crate) enum FloatWeight<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half-precision bit patterns.
    F16(&'a [u16]),
}

/// `x` (`n` rows of `k`, already rounded to the weight type's `vec_dot_type`) times `weight`ᵀ
/// (`m` rows of `k`) into `out`: `n` × `m`, row-major, each element summed in ggml's order and
/// written; `tiles` says whether ggml would take tinyBLAS's tiles where the shape allows
/// (`mul_mat`) or always `vec_dot` (`mul_mat_id`). Panics when the slices do not hold those
/// shapes (the kernels read them through raw pointers).
pub(crate) fn product(
    weight: FloatWeight,
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    tiles: bool,
    out: &mut [f32],
) {
    let w_len = match weight {
        FloatWeight::F32(w) => w.len(),
        FloatWeight::F16(w) => w.len(),
    };
    assert!(
        k > 0 && x.len() == n * k && w_len == m * k && out.len() == n * m,
        "float product of {n}x{k} by {m}x{k}"
    );
    let tiled = tiles && n >= 2 && k.is_multiple_of(LANES) && m.is_multiple_of(TILE_ROWS);
    out.par_chunks_mut(TASK_ROWS * m)
        .zip(x.par_chunks(TASK_ROWS * k))
        .for_each(|(out, x)| match weight {
            FloatWeight::F32(w) => lanes::dispatch(Gemm {
                w,
                x,
                k,
                m,
                out,
                tiled,
            }),
            FloatWeight::F16(w) => lanes::dispatch(Gemm {
                w,
                x,
                k,
                m,
                out,
                tiled,
            }),
        });
}

/// One task's rows (`x`, rows of `k`) times `w`ᵀ (`m` rows) into `out`, tiled or in
/// `ggml_vec_dot` order ([`run_with`] with the machine's lanes).
struct Gemm<'a, W> {
    w: &'a [W],
    x: &'a [f32],
    k: usize,
    m: usize,
    out: &'a mut [f32],
    tiled: bool,
}

impl<W: Element> LaneKernel for Gemm<'_, W> {
    #[inline(always)]
    fn run<L: Lanes16>(&mut self) {
        run_with::<L, W>(self.w, self.x, self.k, self.m, self.out, self.tiled)
    }
}

/// A weight element type the kernels load 16 at a time.
trait Element: Copy + Send + Sync {
    /// The value as f32 (exact: f16 → f32 widening).
    fn to_f32(self) -> f32;

    /// Loads 16 elements as f32 lanes.
    ///
    /// # Safety
    /// As [`Lanes16::load_f32`].
    unsafe fn load<L: Lanes16>(p: *const Self) -> L;

    /// `ggml_vec_dot`'s last step: the products past its 64-wide main loop added to `sum`.
    fn add_leftovers(sum: f32, w: &[Self], x: &[f32]) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[inline(always)]
    unsafe fn load<L: Lanes16>(p: *const f32) -> L {
        L::load_f32(p)
    }

    /// In f32 and in the order the reference build's compiled code adds them: GCC 12 vectorizes
    /// `sumf += x[i]*y[i]` in groups of 16 and then 8 (multiply, then add lane by lane); only the
    /// last `len mod 8` products are fused.
    #[inline(always)]
    fn add_leftovers(mut sum: f32, w: &[f32], x: &[f32]) -> f32 {
        let unfused = w.len() / 8 * 8;
        for (w, x) in w[..unfused].iter().zip(x) {
            sum += w * x;
        }
        for (w, x) in w[unfused..].iter().zip(&x[unfused..]) {
            sum = w.mul_add(*x, sum);
        }
        sum
    }
}

impl Element for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::from_bits(self).to_f32()
    }

    #[inline(always)]
    unsafe fn load<L: Lanes16>(p: *const u16) -> L {
        L::load_f16(p)
    }

    #[inline(always)]
    fn add_leftovers(sum: f32, w: &[u16], x: &[f32]) -> f32 {
        add_leftovers_f64(sum, w, x)
    }
}

/// `ggml_vec_dot_f16`'s leftovers: each product in f32 (f16 × f16 products are exact there),
/// added in f64 (its `ggml_float`), so only the additions' order matters.
#[inline(always)]
fn add_leftovers_f64<W: Element>(sum: f32, w: &[W], x: &[f32]) -> f32 {
    let sum = w
        .iter()
        .zip(x)
        .fold(sum as f64, |s, (w, x)| s + (w.to_f32() * x) as f64);
    sum as f32
}

/// An f32 holding an f16 value (the key cache's and an f16-converted query's elements): products
/// of two such values are exact in f32, and `ggml_vec_dot_f16` adds its leftovers in f64.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct F16Value(f32);

// SAFETY: `F16Value` is `repr(transparent)` over `f32`.
unsafe impl bytemuck::TransparentWrapper<f32> for F16Value {}

impl Element for F16Value {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.0
    }

    #[inline(always)]
    unsafe fn load<L: Lanes16>(p: *const F16Value) -> L {
        L::load_f32(p as *const f32)
    }

    #[inline(always)]
    fn add_leftovers(sum: f32, w: &[F16Value], x: &[f32]) -> f32 {
        add_leftovers_f64(sum, w, x)
    }
}

/// `ggml_vec_dot_f16` of two rows of f16 values held as f32 (flash attention's query · key):
/// its SIMD order over whole steps of 64, the rest in f64. Compiled into the caller, so a caller
/// built for AVX-512 gets vector FMAs.
#[inline(always)]
pub(crate) fn dot_f16_values(a: &[f32], b: &[f32]) -> f32 {
    use bytemuck::TransparentWrapper;
    vec_dot::<Portable, F16Value>(F16Value::wrap_slice(a), b)
}

/// `_mm512_reduce_add_ps` as GCC implements it: halves, quarters, then the pairs (0,2), (1,3).
#[inline(always)]
pub(crate) fn reduce16(v: [f32; LANES]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|i| v[i + 8] + v[i]);
    let q: [f32; 4] = std::array::from_fn(|i| h[i + 4] + h[i]);
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Computes `out` (rows of `x` × rows of `w`) with lanes `L`, tiled or in `ggml_vec_dot` order.
#[inline(always)]
fn run_with<L: Lanes16, W: Element>(
    w: &[W],
    x: &[f32],
    k: usize,
    m: usize,
    out: &mut [f32],
    tiled: bool,
) {
    let n = x.len() / k;
    if !tiled {
        for (row, out_row) in x.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
            for (o, w_row) in out_row.iter_mut().zip(w.chunks_exact(k)) {
                *o = vec_dot::<L, W>(w_row, row);
            }
        }
        return;
    }
    let cols = L::TILE_COLS;
    for r in (0..m).step_by(TILE_ROWS) {
        let mut c = 0;
        while c < n {
            let width = cols.min(n - c);
            // SAFETY: rows r..r+4 of w and c..c+width of x exist (m % 4 == 0, width ≤ n − c),
            // each k long with k % 16 == 0; out holds n × m.
            unsafe {
                match width {
                    6 => tile::<L, W, 6>(w, x, k, m, out, r, c),
                    5 => tile::<L, W, 5>(w, x, k, m, out, r, c),
                    4 => tile::<L, W, 4>(w, x, k, m, out, r, c),
                    3 => tile::<L, W, 3>(w, x, k, m, out, r, c),
                    2 => tile::<L, W, 2>(w, x, k, m, out, r, c),
                    _ => tile::<L, W, 1>(w, x, k, m, out, r, c),
                }
            }
            c += width;
        }
    }
}

/// tinyBLAS's `gemm_bloc<4, COLS>`: weight rows `r..r+4` against activation rows `c..c+COLS`.
///
/// # Safety
/// See the caller: the rows must exist and `k` must be a multiple of 16.
#[inline(always)]
unsafe fn tile<L: Lanes16, W: Element, const COLS: usize>(
    w: &[W],
    x: &[f32],
    k: usize,
    m: usize,
    out: &mut [f32],
    r: usize,
    c: usize,
) {
    let mut acc = [[L::zero(); TILE_ROWS]; COLS];
    let (wp, xp) = (w.as_ptr().add(r * k), x.as_ptr().add(c * k));
    for l in (0..k).step_by(LANES) {
        let a: [L; TILE_ROWS] = std::array::from_fn(|i| W::load::<L>(wp.add(i * k + l)));
        for (j, acc) in acc.iter_mut().enumerate() {
            let b = L::load_f32(xp.add(j * k + l));
            for i in 0..TILE_ROWS {
                acc[i] = L::fma(a[i], b, acc[i]);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let o = &mut out[(c + j) * m + r..(c + j) * m + r + TILE_ROWS];
        for (o, a) in o.iter_mut().zip(acc) {
            *o = reduce16(a.to_array());
        }
    }
}

/// `ggml_vec_dot_f32` / `ggml_vec_dot_f16` on AVX-512: four accumulators over steps of 64,
/// folded (0+2, 1+3, then 0+1), reduced, then the leftover products added
/// ([`Element::add_leftovers`]).
#[inline(always)]
fn vec_dot<L: Lanes16, W: Element>(w: &[W], x: &[f32]) -> f32 {
    let k = x.len();
    let main = k - k % VEC_DOT_STEP;
    let mut sum = [L::zero(); 4];
    for i in (0..main).step_by(VEC_DOT_STEP) {
        for (j, s) in sum.iter_mut().enumerate() {
            let at = i + j * LANES;
            // SAFETY: at + 16 ≤ main ≤ k for both slices.
            let (a, b) = unsafe {
                (
                    W::load::<L>(w.as_ptr().add(at)),
                    L::load_f32(x.as_ptr().add(at)),
                )
            };
            *s = L::fma(a, b, *s);
        }
    }
    let folded = L::add(L::add(sum[0], sum[2]), L::add(sum[1], sum[3]));
    W::add_leftovers(reduce16(folded.to_array()), &w[main..], &x[main..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with a long mantissa, so that summation order shows in the last bits.
    fn awkward(i: usize) -> f32 {
        ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 7) as f32 * 0.37)
    }

    /// tinyBLAS's and ggml_vec_dot's orders written out one element at a time.
    fn reference(w: &[f32], x: &[f32], k: usize, tiled: bool) -> f32 {
        let mut lanes = [[0.0f32; LANES]; 4];
        if tiled {
            for l in 0..k {
                lanes[0][l % LANES] = w[l].mul_add(x[l], lanes[0][l % LANES]);
            }
            return reduce16(lanes[0]);
        }
        let main = k - k % VEC_DOT_STEP;
        for l in 0..main {
            let (acc, lane) = ((l % VEC_DOT_STEP) / LANES, l % LANES);
            lanes[acc][lane] = w[l].mul_add(x[l], lanes[acc][lane]);
        }
        let folded: [f32; LANES] =
            std::array::from_fn(|i| (lanes[0][i] + lanes[2][i]) + (lanes[1][i] + lanes[3][i]));
        let mut s = reduce16(folded);
        let fused_from = main + (k - main) / 8 * 8;
        for l in main..k {
            s = if l < fused_from {
                s + w[l] * x[l]
            } else {
                w[l].mul_add(x[l], s)
            };
        }
        s
    }

    #[test]
    fn every_kernel_sums_in_ggml_order() {
        for (n, k, m) in [
            (7, 64, 12),
            (13, 176, 8),
            (1, 64, 8),
            (5, 172, 8),
            (3, 48, 6),
        ] {
            // mul_mat's choice of tinyBLAS, or mul_mat_id's vec_dot whatever the shape.
            for tiles in [true, false] {
                let w: Vec<f32> = (0..m * k).map(awkward).collect();
                let x: Vec<f32> = (0..n * k).map(|i| awkward(i + 1000)).collect();
                let tiled = tiles && n >= 2 && k.is_multiple_of(16) && m.is_multiple_of(4);
                let mut got = vec![f32::NAN; n * m];
                product(FloatWeight::F32(&w), &x, n, k, m, tiles, &mut got);
                for t in 0..n {
                    for r in 0..m {
                        let want =
                            reference(&w[r * k..(r + 1) * k], &x[t * k..(t + 1) * k], k, tiled);
                        assert_eq!(
                            got[t * m + r].to_bits(),
                            want.to_bits(),
                            "{n}×{k}×{m} at {t},{r}"
                        );
                    }
                }
                let mut out = vec![0.0f32; n * m];
                let w = &w[..];
                let mut kernel = Gemm {
                    w,
                    x: &x,
                    k,
                    m,
                    out: &mut out,
                    tiled,
                };
                for (form, out) in crate::lanes::tests::each_form(&mut kernel, |g| g.out.to_vec()) {
                    assert_eq!(got, out, "{n}×{k}×{m}: {form} lanes");
                }
            }
        }
    }

    #[test]
    fn f16_weights_are_widened_exactly() {
        let (n, k, m) = (9, 96, 8);
        let w16: Vec<u16> = (0..m * k)
            .map(|i| half::f16::from_f32(awkward(i)).to_bits())
            .collect();
        let w32: Vec<f32> = w16
            .iter()
            .map(|&b| half::f16::from_bits(b).to_f32())
            .collect();
        let x: Vec<f32> = (0..n * k).map(|i| awkward(i + 7)).collect();
        let (mut from_f16, mut from_f32) = (vec![0.0f32; n * m], vec![1.0f32; n * m]);
        product(FloatWeight::F16(&w16), &x, n, k, m, true, &mut from_f16);
        product(FloatWeight::F32(&w32), &x, n, k, m, true, &mut from_f32);
        assert_eq!(from_f16, from_f32);
    }
}

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
    /// bfloat16 bit patterns (multiplied by [`bf16_product`]).
    BF16(&'a [u16]),
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
        FloatWeight::F16(w) | FloatWeight::BF16(w) => w.len(),
    };
    assert!(
        k > 0 && x.len() == n * k && w_len == m * k && out.len() == n * m,
        "float product of {n}x{k} by {m}x{k}"
    );
    if let FloatWeight::BF16(w) = weight {
        return bf16_product(w, x, n, k, m, tiles, out);
    }
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
            FloatWeight::BF16(_) => unreachable!("multiplied above"),
        });
}

/// bf16 values per `vdpbf16ps` (tinyBLAS's `KN` for BF16).
const BF16_STEP: usize = 32;
/// Weight rows one pass over a task's activation rows keeps hot in cache.
const BF16_ROW_BLOCK: usize = 64;

/// [`product`] for BF16 weights, with `x` already rounded to bf16. ggml multiplies them with
/// `vdpbf16ps` (AVX512-BF16): tinyBLAS's tiles (two or more activation rows, a width that is a
/// multiple of 32 and a row count that is a multiple of 4) keep 16 lanes per output, lane `i`
/// adding, for each step of 32, the products at `2i+1` and then `2i` (each rounded once, the
/// instruction's order), and end in `_mm512_reduce_add_ps`; otherwise `ggml_vec_dot_bf16` keeps
/// two such sums over steps of 64, adds their reductions and then the leftover products in f64.
/// On CPUs without AVX512-BF16 the same order runs with f32 FMAs; the instruction flushes
/// subnormal inputs and results to zero and the FMAs do not, so the two differ only where a
/// product or sum falls below 1.2e-38.
fn bf16_product(w: &[u16], x: &[f32], n: usize, k: usize, m: usize, tiles: bool, out: &mut [f32]) {
    let tiled = tiles && n >= 2 && k.is_multiple_of(BF16_STEP) && m.is_multiple_of(TILE_ROWS);
    let native = has_avx512_bf16();
    out.par_chunks_mut(TASK_ROWS * m)
        .zip(x.par_chunks(TASK_ROWS * k))
        .for_each(|(out, x)| {
            let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            #[cfg(target_arch = "x86_64")]
            if tiled && native {
                // SAFETY: `has_avx512_bf16` checked the CPU; the tile shapes hold (k % 32 == 0,
                // m % 4 == 0) and `out` holds this task's rows.
                return unsafe { x86_bf16::tiles(w, &xb, k, m, out) };
            }
            for r0 in (0..m).step_by(BF16_ROW_BLOCK) {
                let rows = r0..(r0 + BF16_ROW_BLOCK).min(m);
                for (xr, o) in xb.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
                    for r in rows.clone() {
                        let wr = &w[r * k..(r + 1) * k];
                        o[r] = match (tiled, native) {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: `has_avx512_bf16` checked the CPU.
                            (false, true) => unsafe { x86_bf16::vec_dot(wr, xr) },
                            (true, _) => bf16_tiled(wr, xr),
                            (false, _) => bf16_vec_dot(wr, xr),
                        };
                    }
                }
            }
        });
}

/// Whether this CPU has AVX512-BF16 (`vdpbf16ps`).
fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// bf16 bits as f32.
#[inline(always)]
fn widen(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// One step of 32 of `vdpbf16ps`, in f32 FMAs: lane `i` adds the products at `2i+1`, then `2i`.
#[inline(always)]
fn dpbf16(acc: &mut [f32; LANES], w: &[u16], x: &[u16]) {
    for (i, a) in acc.iter_mut().enumerate() {
        *a = widen(w[2 * i + 1]).mul_add(widen(x[2 * i + 1]), *a);
        *a = widen(w[2 * i]).mul_add(widen(x[2 * i]), *a);
    }
}

/// tinyBLAS's order for one output (see [`bf16_product`]), in f32 FMAs.
fn bf16_tiled(w: &[u16], x: &[u16]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (w, x) in w.chunks_exact(BF16_STEP).zip(x.chunks_exact(BF16_STEP)) {
        dpbf16(&mut acc, w, x);
    }
    reduce16(acc)
}

/// `ggml_vec_dot_bf16`'s order for one output (see [`bf16_product`]), in f32 FMAs.
fn bf16_vec_dot(w: &[u16], x: &[u16]) -> f32 {
    let main = w.len() - w.len() % (2 * BF16_STEP);
    let mut acc = [[0.0f32; LANES]; 2];
    for (w, x) in w[..main]
        .chunks_exact(2 * BF16_STEP)
        .zip(x.chunks_exact(2 * BF16_STEP))
    {
        dpbf16(&mut acc[0], &w[..BF16_STEP], &x[..BF16_STEP]);
        dpbf16(&mut acc[1], &w[BF16_STEP..], &x[BF16_STEP..]);
    }
    bf16_leftovers(reduce16(acc[0]), reduce16(acc[1]), &w[main..], &x[main..])
}

/// `ggml_vec_dot_bf16`'s end: the two reductions and then each leftover product (exact in f32)
/// added in f64.
#[inline(always)]
fn bf16_leftovers(r1: f32, r2: f32, w: &[u16], x: &[u16]) -> f32 {
    let sum = w
        .iter()
        .zip(x)
        .fold(0.0f64 + r1 as f64 + r2 as f64, |s, (&w, &x)| {
            s + (widen(w) * widen(x)) as f64
        });
    sum as f32
}

#[cfg(target_arch = "x86_64")]
mod x86_bf16 {
    //! The AVX512-BF16 forms of [`super::bf16_tiled`] (in tinyBLAS's tiles) and
    //! [`super::bf16_vec_dot`].

    use std::arch::x86_64::*;

    use super::{bf16_leftovers, reduce16, BF16_STEP, LANES};

    #[inline(always)]
    unsafe fn load(p: *const u16) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const _))
    }

    #[inline(always)]
    unsafe fn lanes(v: __m512) -> [f32; LANES] {
        let mut a = [0.0f32; LANES];
        _mm512_storeu_ps(a.as_mut_ptr(), v);
        a
    }

    /// tinyBLAS's tiles: four weight rows × up to six activation rows at a time, each output
    /// in [`super::bf16_tiled`]'s order, into `out` (rows of `m`).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `k` is a multiple of 32, `m` of 4, `w` holds
    /// `m` rows of `k`, `x` whole rows of `k` and `out` as many rows of `m`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tiles(w: &[u16], x: &[u16], k: usize, m: usize, out: &mut [f32]) {
        let n = x.len() / k;
        for r in (0..m).step_by(4) {
            let mut c = 0;
            while c < n {
                let width = (n - c).min(6);
                match width {
                    6 => tile::<6>(w, x, k, m, r, c, out),
                    5 => tile::<5>(w, x, k, m, r, c, out),
                    4 => tile::<4>(w, x, k, m, r, c, out),
                    3 => tile::<3>(w, x, k, m, r, c, out),
                    2 => tile::<2>(w, x, k, m, r, c, out),
                    _ => tile::<1>(w, x, k, m, r, c, out),
                }
                c += width;
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const COLS: usize>(
        w: &[u16],
        x: &[u16],
        k: usize,
        m: usize,
        r: usize,
        c: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; COLS];
        let (wp, xp) = (w.as_ptr().add(r * k), x.as_ptr().add(c * k));
        for l in (0..k).step_by(BF16_STEP) {
            let a: [__m512bh; 4] = std::array::from_fn(|i| load(wp.add(i * k + l)));
            for (j, acc) in acc.iter_mut().enumerate() {
                let b = load(xp.add(j * k + l));
                for i in 0..4 {
                    acc[i] = _mm512_dpbf16_ps(acc[i], a[i], b);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (i, a) in acc.iter().enumerate() {
                out[(c + j) * m + r + i] = reduce16(lanes(*a));
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `w` and `x` have the same length.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn vec_dot(w: &[u16], x: &[u16]) -> f32 {
        let main = w.len() - w.len() % (2 * BF16_STEP);
        let (mut c1, mut c2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for l in (0..main).step_by(2 * BF16_STEP) {
            let (wp, xp) = (w.as_ptr().add(l), x.as_ptr().add(l));
            c1 = _mm512_dpbf16_ps(c1, load(wp), load(xp));
            c2 = _mm512_dpbf16_ps(c2, load(wp.add(BF16_STEP)), load(xp.add(BF16_STEP)));
        }
        bf16_leftovers(
            reduce16(lanes(c1)),
            reduce16(lanes(c2)),
            &w[main..],
            &x[main..],
        )
    }
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
    fn bf16_products_keep_vdpbf16ps_order_on_every_path() {
        let round = |v: f32| crate::float_gemm::tests::to_bf16(v);
        for (n, k, m, tiles) in [
            (5, 96, 8, true),
            (3, 100, 6, true),
            (1, 64, 4, true),
            (4, 160, 8, false),
        ] {
            let w: Vec<u16> = (0..m * k).map(|i| round(awkward(i) * 3.0)).collect();
            let xb: Vec<u16> = (0..n * k).map(|i| round(awkward(i + 77))).collect();
            let x: Vec<f32> = xb.iter().map(|&b| widen(b)).collect();
            let mut got = vec![f32::NAN; n * m];
            product(FloatWeight::BF16(&w), &x, n, k, m, tiles, &mut got);
            let tiled = tiles && n >= 2 && k % 32 == 0 && m % 4 == 0;
            for t in 0..n {
                for r in 0..m {
                    let (wr, xr) = (&w[r * k..(r + 1) * k], &xb[t * k..(t + 1) * k]);
                    // Written out: lanes of pairs (odd, then even) per step.
                    let want = if tiled {
                        let mut acc = [0.0f32; LANES];
                        for l in (0..k).step_by(32) {
                            for i in 0..LANES {
                                acc[i] = widen(wr[l + 2 * i + 1])
                                    .mul_add(widen(xr[l + 2 * i + 1]), acc[i]);
                                acc[i] = widen(wr[l + 2 * i]).mul_add(widen(xr[l + 2 * i]), acc[i]);
                            }
                        }
                        reduce16(acc)
                    } else {
                        bf16_vec_dot(wr, xr)
                    };
                    assert_eq!(
                        got[t * m + r].to_bits(),
                        want.to_bits(),
                        "{n}x{k}x{m} at {t},{r}"
                    );
                    let portable = if tiled {
                        bf16_tiled(wr, xr)
                    } else {
                        bf16_vec_dot(wr, xr)
                    };
                    assert_eq!(portable.to_bits(), want.to_bits());
                }
            }
        }
    }

    /// Round-to-nearest-even bf16 bits of `v` (ggml's `GGML_FP32_TO_BF16` for finite values).
    pub(super) fn to_bf16(v: f32) -> u16 {
        let u = v.to_bits();
        ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
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

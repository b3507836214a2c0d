//! Products with k-quant weights (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in integer arithmetic, giving
//! llama.cpp's bits. The activations are quantized to Q8_K (levels −127..127, one f32 scale per
//! 256, and the sums of each 16 levels). ggml then takes one of two paths, and so does this module:
//! with [`TILED_MIN_ROWS`] activation rows or more, its tiled kernel ([`tiles`]); with fewer,
//! `vec_dot` (below). ggml's AVX2 `vec_dot`s keep, per super-block, eight
//! exact 32-bit lane sums — lane `k` holds the products at positions `i` with `(i mod 32) / 4 == k`,
//! each times its group scale — and fuse each into its own f32 lane (`acc = fma(d, lane, acc)`,
//! `d = d_x · d_w`), ending in `hsum_float_8`. The types differ only in what else they add:
//! - Q6_K subtracts, in lane `k`, `32 · (sc[2k]·bsum[2k] + sc[2k+1]·bsum[2k+1])` (its levels are
//!   stored +32) before the lane is converted;
//! - Q2_K first fuses its mins into the same lanes: `acc = fma(−d_x·dmin, m[2k]·bsum[2k] +
//!   m[2k+1]·bsum[2k+1], acc)`;
//! - Q4_K keeps its mins in four more lanes (pairs of 32-sums) reduced and added at the end;
//! - Q5_K fuses its whole mins term into one scalar per output (`summs`), added at the end.
//!
//! On AVX512-VNNI each register holds two weight rows × eight lanes; the weights are unpacked
//! once per task as 16-bit `scale · level`, so one `vpdpwssd` adds two products per lane with the
//! scale already applied and the lanes come out exactly as ggml's. Machines without VNNI keep the
//! decode-and-faer path in [`crate::linear`] (equal to llama.cpp's up to summation order).

use rayon::prelude::*;

use formats::gguf::GgmlType;
use quantize::activation::q8_k_block;
use quantize::types::q45_k::{Q4_K, Q5_K};
use quantize::types::{iq_integer, q2_k, q3_k, q6_k, QK_K};

use crate::lanes::{dispatched, has_vnni};
use crate::pair_tiles::{row_tasks, LANES};

mod tiles;

/// ggml takes its tiled path (`ggml_tiled_min_batch`) for products with at least this many
/// activation rows (per expert, in a mixture), `vec_dot` below it.
const TILED_MIN_ROWS: usize = 8;

/// Chunks of 32 positions per super-block.
const CHUNKS: usize = QK_K / 32;
/// 16-bit values per register: two rows × eight lanes × two.
const REG: usize = 32;
/// Weight rows per parallel task.
const TASK_ROWS: usize = 32;

/// The k-quant types, as the kernel's const parameter.
const Q2: u8 = 2;
const Q3: u8 = 3;
const Q4: u8 = 4;
const Q5: u8 = 5;
const Q6: u8 = 6;

/// The codebook types and IQ4_XS: their ggml type id as the kind (never 2–6). ggml multiplies
/// them in integers on its tiled path only; below [`TILED_MIN_ROWS`] rows its `vec_dot`s have
/// type-specific arithmetic that smelt does not reproduce (it decodes them to f32 there).
fn iq_type(kind: u8) -> Option<GgmlType> {
    GgmlType::from_id(kind as u32).filter(|&t| iq_integer::has_integer_form(t))
}

fn kind(ty: GgmlType) -> Option<u8> {
    match ty {
        GgmlType::Q2_K => Some(Q2),
        GgmlType::Q3_K => Some(Q3),
        GgmlType::Q4_K => Some(Q4),
        GgmlType::Q5_K => Some(Q5),
        GgmlType::Q6_K => Some(Q6),
        t if iq_integer::has_integer_form(t) => Some(t.id() as u8),
        _ => None,
    }
}

/// Whether `ty` weights of `rows` × `cols`, multiplied with `n_rows` activation rows, take the
/// integer kernel on this machine.
pub fn applies(ty: GgmlType, rows: usize, cols: usize, n_rows: usize) -> bool {
    let Some(kind) = kind(ty) else {
        return false;
    };
    let path = iq_type(kind).is_none() || n_rows >= TILED_MIN_ROWS;
    path && rows > 0 && cols.is_multiple_of(QK_K) && has_vnni()
}

/// Activation rows in Q8_K form, laid out for the `vec_dot` kernel.
struct LaneRows {
    n_rows: usize,
    /// Super-blocks per row.
    n_blocks: usize,
    /// Levels as 16-bit values; per chunk of 32, the positions `(4k, 4k+1)` of each lane `k`,
    /// then `(4k+2, 4k+3)`.
    x16: Vec<i16>,
    /// Scale of each super-block.
    scales: Vec<f32>,
    /// Sums of each 16 levels (16 per super-block).
    b16: Vec<i16>,
    /// Sums of each 32 levels, then eight zeros (16 per super-block).
    b32: Vec<i16>,
}

dispatched! {
    /// One super-block of activations into [`LaneRows`]' form; returns the scale.
    fn quantize_block(x: &[f32], x16: &mut [i16], b16: &mut [i16], b32: &mut [i16]) -> f32 {
        let mut levels = [0i8; QK_K];
        let scale = q8_k_block(x, &mut levels);
        for (c, chunk) in levels.chunks_exact(32).enumerate() {
            let out = &mut x16[32 * c..32 * c + 32];
            for k in 0..LANES {
                for e in 0..2 {
                    out[2 * k + e] = chunk[4 * k + e] as i16;
                    out[16 + 2 * k + e] = chunk[4 * k + 2 + e] as i16;
                }
            }
        }
        for (s, g) in b16.iter_mut().zip(levels.chunks_exact(16)) {
            *s = g.iter().map(|&v| v as i16).sum::<i16>();
        }
        for g in 0..8 {
            b32[g] = b16[2 * g] + b16[2 * g + 1];
            b32[8 + g] = 0;
        }
        scale
    }
}

impl LaneRows {
    /// Quantizes `x` (`n_rows` rows of `k`, `k` a multiple of 256) as ggml's `quantize_row_q8_K`.
    fn new(x: &[f32], n_rows: usize) -> LaneRows {
        let n_blocks = x.len() / n_rows / QK_K;
        let blocks = n_rows * n_blocks;
        let mut q = LaneRows {
            n_rows,
            n_blocks,
            x16: vec![0; blocks * QK_K],
            scales: vec![0.0; blocks],
            b16: vec![0; blocks * 16],
            b32: vec![0; blocks * 16],
        };
        q.x16
            .par_chunks_mut(QK_K)
            .zip(q.scales.par_iter_mut())
            .zip(q.b16.par_chunks_mut(16))
            .zip(q.b32.par_chunks_mut(16))
            .zip(x.par_chunks(QK_K))
            .for_each(|((((x16, scale), b16), b32), x)| {
                *scale = quantize_block(x, x16, b16, b32);
            });
        q
    }
}

/// A k-quant super-block as integers: `levels[i]` times `scales[i / group]`, minus the mins'
/// terms the type's kernel adds separately.
struct IntegerBlock {
    /// The level each position is multiplied with (unsigned, except Q3_K's −4..3).
    levels: [i32; QK_K],
    /// Per group of `group` positions.
    scales: [i32; 16],
    group: usize,
    /// Per group of 16 (Q2_K) or 32 (Q4_K, Q5_K); 0 elsewhere.
    mins: [i32; 16],
    d: f32,
    dmin: f32,
}

impl IntegerBlock {
    fn new(kind: u8, block: &[u8]) -> IntegerBlock {
        let mut ib = IntegerBlock {
            levels: [0; QK_K],
            scales: [0; 16],
            group: 16,
            mins: [0; 16],
            d: 0.0,
            dmin: 0.0,
        };
        if let Some(ty) = iq_type(kind) {
            let b = iq_integer::unpack(ty, block).expect("an IQ kind has an integer form");
            // Stored +128 (unsigned for the kernel), the offset taken off with the sums.
            ib.levels = b.levels.map(|l| l as i32 + 128);
            ib.scales = b.scales;
            ib.group = b.group;
            ib.d = b.d;
            return ib;
        }
        match kind {
            Q6 | Q3 => {
                let (levels, scales, d) = match kind {
                    Q6 => q6_k::unpack(block),
                    _ => q3_k::unpack(block),
                };
                // Q6_K's lanes multiply the stored level (+32) and subtract 32 · scale · sum.
                let offset = if kind == Q6 { 32 } else { 0 };
                ib.levels = levels.map(|l| l as i32 + offset);
                ib.scales = scales.map(|s| s as i32);
                ib.d = d;
            }
            Q2 => {
                let (levels, scales, mins, d, dmin) = q2_k::unpack(block);
                ib.levels = levels.map(|l| l as i32);
                ib.scales = scales.map(|s| s as i32);
                ib.mins = mins.map(|m| m as i32);
                (ib.d, ib.dmin) = (d, dmin);
            }
            _ => {
                let k = if kind == Q5 { Q5_K } else { Q4_K };
                let (levels, scales, mins, d, dmin) = k.unpack(block);
                ib.levels = levels.map(|l| l as i32);
                ib.scales[..8].copy_from_slice(&scales.map(|s| s as i32));
                ib.mins[..8].copy_from_slice(&mins.map(|m| m as i32));
                ib.group = 32;
                (ib.d, ib.dmin) = (d, dmin);
            }
        }
        ib
    }

    /// Position `i`'s level times its group scale.
    fn value(&self, i: usize) -> i32 {
        self.scales[i / self.group] * self.levels[i]
    }
}

/// A task's weight rows, two per register.
struct RowPairs {
    kind: u8,
    /// Rows that exist (an odd count leaves the last pair's second row zero, never stored).
    rows: usize,
    n_blocks: usize,
    /// Per pair, super-block and chunk: two registers of `scale · level` — lane `(h, k)` holds row
    /// `2p+h`'s positions `(4k, 4k+1)` in the first, `(4k+2, 4k+3)` in the second.
    w: Vec<i16>,
    /// Per pair and super-block: one register of 16-bit pairs multiplied with the activation
    /// sums — Q6_K `−32·sc[2k], −32·sc[2k+1]`; Q2_K `m[2k], m[2k+1]`; Q4_K `m[2j], m[2j+1]` in
    /// lanes `j < 4`.
    extra: Vec<i16>,
    /// Per pair and super-block: row `2p`'s `d` in lanes 0–7, row `2p+1`'s in lanes 8–15.
    d: Vec<f32>,
    /// The same for `dmin`.
    dmin: Vec<f32>,
    /// Q5_K: per row and super-block, its eight mins.
    mins: Vec<i32>,
}

impl RowPairs {
    fn new(kind: u8, rows: &[u8], row_bytes: usize, n_blocks: usize) -> RowPairs {
        let n = rows.len() / row_bytes;
        let pairs = n.div_ceil(2);
        let mut w = RowPairs {
            kind,
            rows: n,
            n_blocks,
            w: vec![0; pairs * n_blocks * CHUNKS * 2 * REG],
            extra: vec![0; pairs * n_blocks * REG],
            d: vec![0.0; pairs * n_blocks * 2 * LANES],
            dmin: vec![0.0; pairs * n_blocks * 2 * LANES],
            mins: vec![0; if kind == Q5 { n * n_blocks * 8 } else { 0 }],
        };
        let block_bytes = row_bytes / n_blocks;
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            let (p, h) = (r / 2, r % 2);
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let ib = IntegerBlock::new(kind, block);
                let at = p * n_blocks + b;
                for c in 0..CHUNKS {
                    let reg = &mut w.w[(at * CHUNKS + c) * 2 * REG..][..2 * REG];
                    for k in 0..LANES {
                        for e in 0..2 {
                            let lane = 2 * (LANES * h + k) + e;
                            reg[lane] = ib.value(32 * c + 4 * k + e) as i16;
                            reg[REG + lane] = ib.value(32 * c + 4 * k + 2 + e) as i16;
                        }
                    }
                }
                let extra = &mut w.extra[at * REG..][..REG];
                for k in 0..LANES {
                    for e in 0..2 {
                        extra[2 * (LANES * h + k) + e] = match kind {
                            Q6 => -32 * ib.scales[2 * k + e],
                            Q2 => ib.mins[2 * k + e],
                            Q4 if k < 4 => ib.mins[2 * k + e],
                            _ => 0,
                        } as i16;
                    }
                }
                w.d[(2 * at + h) * LANES..][..LANES].fill(ib.d);
                w.dmin[(2 * at + h) * LANES..][..LANES].fill(ib.dmin);
                if kind == Q5 {
                    w.mins[(r * n_blocks + b) * 8..][..8].copy_from_slice(&ib.mins[..8]);
                }
            }
        }
        w
    }
}

/// Activation rows in Q8_K form, laid out for the path ggml takes with that many rows.
pub struct Q8kRows(Form);

/// The two layouts of [`Q8kRows`].
enum Form {
    /// Fewer than [`TILED_MIN_ROWS`] rows: `vec_dot`'s lanes.
    Lanes(LaneRows),
    /// [`TILED_MIN_ROWS`] rows or more: the tiled kernel's.
    Tiles(tiles::TileRows),
}

impl Q8kRows {
    /// Quantizes `x` (`n_rows` rows of `k`, `k` a multiple of 256) as ggml's `quantize_row_q8_K`,
    /// laid out for the path those rows take.
    pub fn new(x: &[f32], n_rows: usize) -> Q8kRows {
        Q8kRows(match n_rows >= TILED_MIN_ROWS {
            true => Form::Tiles(tiles::TileRows::new(x, n_rows)),
            false => Form::Lanes(LaneRows::new(x, n_rows)),
        })
    }

    /// Rows and super-blocks per row.
    fn shape(&self) -> (usize, usize) {
        match &self.0 {
            Form::Lanes(x) => (x.n_rows, x.n_blocks),
            Form::Tiles(x) => (x.n_rows, x.n_blocks),
        }
    }
}

/// `x` (as [`Q8kRows`]) times `weight`ᵀ (`m` rows of `ty` blocks in `bytes`) into `out`
/// (`n_rows` × `m`, every element written). Panics unless [`applies`] holds and the slices hold
/// those shapes.
pub(crate) fn product(ty: GgmlType, bytes: &[u8], x: &Q8kRows, m: usize, out: &mut [f32]) {
    let (n, n_blocks) = x.shape();
    let k = n_blocks * QK_K;
    assert!(
        applies(ty, m, k, n),
        "the integer kernel does not apply to {ty:?} {m}x{k} with {n} rows here"
    );
    assert_eq!(
        bytes.len(),
        m * ty.block_bytes() * n_blocks,
        "{ty:?} {m}x{k} weight bytes"
    );
    assert_eq!(out.len(), n * m, "{ty:?} product output");
    let kind = kind(ty).expect("applies checked the type");
    match &x.0 {
        Form::Tiles(x) => tiles::product(kind, bytes, x, m, out),
        Form::Lanes(x) => lanes_product(kind, bytes, x, m, out),
    }
}

/// [`product`] on `vec_dot`'s path.
fn lanes_product(kind: u8, bytes: &[u8], x: &LaneRows, m: usize, out: &mut [f32]) {
    let n = x.n_rows;
    let row_bytes = bytes.len() / m;
    row_tasks(out, n, m, bytes, TASK_ROWS, |rows, window| {
        let w = RowPairs::new(kind, rows, row_bytes, x.n_blocks);
        #[cfg(target_arch = "x86_64")]
        {
            let (out, stride) = window.raw();
            // SAFETY: `applies` checked AVX-512F and VNNI; `out` is this task's own
            // `n` × `w.rows` window of the output, rows `stride` apart.
            unsafe { x86::multiply(&w, x, out, stride) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("applies() is false off x86-64 ({})", w.rows);
        if kind == Q5 {
            window.add_each(|t, r| q5_k_summs(&w, r, x, t));
        }
    });
}

/// Q4_K's four mins lanes, reduced as ggml reduces its `__m128`: (0 + 2) + (1 + 3).
#[inline(always)]
fn hsum4(acc: &[f32]) -> f32 {
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// Q5_K's `summs` of weight row `r` and activation row `t`: per super-block, one fused
/// `fma(−d_x·dmin, Σ m·sum32, summs)`, in block order.
fn q5_k_summs(w: &RowPairs, r: usize, x: &LaneRows, t: usize) -> f32 {
    let nb = w.n_blocks;
    let (p, h) = (r / 2, r % 2);
    (0..nb).fold(0.0f32, |summs, b| {
        let blk = t * nb + b;
        let mins = &w.mins[(r * nb + b) * 8..][..8];
        let sums = &x.b32[blk * 16..][..8];
        let total: i32 = mins.iter().zip(sums).map(|(&m, &s)| m * s as i32).sum();
        let dmin = x.scales[blk] * w.dmin[(2 * (p * nb + b) + h) * LANES];
        (-dmin).mul_add(total as f32, summs)
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX512-VNNI kernel.

    use std::arch::x86_64::*;

    use super::{hsum4, LaneRows, RowPairs, CHUNKS, LANES, Q2, Q3, Q4, Q5, Q6, QK_K, REG};
    use crate::pair_tiles::{for_each_tile, lanes, pair_sums, PairTile};

    /// `out` (`x.n_rows` rows, `width` apart, of `w.rows` values) = `x` · `w`ᵀ, but for Q5_K's
    /// `summs`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-VNNI, and `out` must be writable as described.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn multiply(w: &RowPairs, x: &LaneRows, out: *mut f32, width: usize) {
        let (pairs, n) = (w.rows.div_ceil(2), x.n_rows);
        match w.kind {
            Q2 => for_each_tile(&Tiles::<Q2> { w, x, out, width }, pairs, n),
            Q3 => for_each_tile(&Tiles::<Q3> { w, x, out, width }, pairs, n),
            Q4 => for_each_tile(&Tiles::<Q4> { w, x, out, width }, pairs, n),
            Q5 => for_each_tile(&Tiles::<Q5> { w, x, out, width }, pairs, n),
            _ => for_each_tile(&Tiles::<Q6> { w, x, out, width }, pairs, n),
        }
    }

    /// A task's weights (of type `KIND`), the activations and the task's window of the output.
    struct Tiles<'a, const KIND: u8> {
        w: &'a RowPairs,
        x: &'a LaneRows,
        out: *mut f32,
        width: usize,
    }

    /// 256 bits at `p`, in both halves of a register.
    #[inline(always)]
    unsafe fn both_halves(p: *const i16) -> __m512i {
        _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i))
    }

    impl<const KIND: u8> PairTile for Tiles<'_, KIND> {
        /// Row pairs `p..p+R` × activation rows `t..t+T`.
        #[inline(always)]
        unsafe fn tile<const R: usize, const T: usize>(&self, p: usize, t: usize) {
            let (w, x, out, width) = (self.w, self.x, self.out, self.width);
            let nb = w.n_blocks;
            let mut acc = [[_mm512_setzero_ps(); R]; T];
            let mut acc_m = [[_mm512_setzero_ps(); R]; T];
            for b in 0..nb {
                let blk: [usize; T] = std::array::from_fn(|j| (t + j) * nb + b);
                let at: [usize; R] = std::array::from_fn(|i| (p + i) * nb + b);
                let extra: [__m512i; R] = std::array::from_fn(|i| {
                    _mm512_loadu_si512(w.extra.as_ptr().add(at[i] * REG) as *const _)
                });
                let mut s = [[_mm512_setzero_si512(); R]; T];
                if KIND == Q6 {
                    for (j, s) in s.iter_mut().enumerate() {
                        let sums = both_halves(x.b16.as_ptr().add(blk[j] * 16));
                        for i in 0..R {
                            s[i] = _mm512_dpwssd_epi32(s[i], extra[i], sums);
                        }
                    }
                }
                for c in 0..CHUNKS {
                    let xs: [*const i16; T] =
                        std::array::from_fn(|j| x.x16.as_ptr().add(blk[j] * QK_K + 32 * c));
                    let xa: [__m512i; T] = std::array::from_fn(|j| both_halves(xs[j]));
                    let xb: [__m512i; T] = std::array::from_fn(|j| both_halves(xs[j].add(16)));
                    for i in 0..R {
                        let wp = w.w.as_ptr().add((at[i] * CHUNKS + c) * 2 * REG);
                        let w1 = _mm512_loadu_si512(wp as *const _);
                        let w2 = _mm512_loadu_si512(wp.add(REG) as *const _);
                        for j in 0..T {
                            s[j][i] = _mm512_dpwssd_epi32(s[j][i], w1, xa[j]);
                            s[j][i] = _mm512_dpwssd_epi32(s[j][i], w2, xb[j]);
                        }
                    }
                }
                let d: [__m512; R] =
                    std::array::from_fn(|i| _mm512_loadu_ps(w.d.as_ptr().add(2 * at[i] * LANES)));
                let dmin: [__m512; R] = std::array::from_fn(|i| {
                    _mm512_loadu_ps(w.dmin.as_ptr().add(2 * at[i] * LANES))
                });
                for j in 0..T {
                    let da = _mm512_set1_ps(*x.scales.get_unchecked(blk[j]));
                    if KIND == Q2 || KIND == Q4 {
                        let sums = match KIND {
                            Q2 => both_halves(x.b16.as_ptr().add(blk[j] * 16)),
                            _ => both_halves(x.b32.as_ptr().add(blk[j] * 16)),
                        };
                        for i in 0..R {
                            let m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), extra[i], sums);
                            let dm = _mm512_mul_ps(dmin[i], da);
                            let m = _mm512_cvtepi32_ps(m);
                            match KIND {
                                Q2 => acc[j][i] = _mm512_fnmadd_ps(dm, m, acc[j][i]),
                                _ => acc_m[j][i] = _mm512_fnmadd_ps(dm, m, acc_m[j][i]),
                            }
                        }
                    }
                    for i in 0..R {
                        let dd = _mm512_mul_ps(d[i], da);
                        acc[j][i] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s[j][i]), acc[j][i]);
                    }
                }
            }
            for j in 0..T {
                for i in 0..R {
                    let sums = pair_sums(acc[j][i]);
                    let mins = lanes(acc_m[j][i]);
                    for (h, mut v) in sums.into_iter().enumerate() {
                        let r = 2 * (p + i) + h;
                        if r < w.rows {
                            if KIND == Q4 {
                                v += hsum4(&mins[h * LANES..][..4]);
                            }
                            *out.add((t + j) * width + r) = v;
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

    /// A signal whose outliers make scales and mins vary.
    fn signal(n: usize, seed: usize) -> Vec<f32> {
        crate::pair_tiles::tests::signal(n, seed, 97, 9.0)
    }

    /// ggml's AVX2 `vec_dot_qN_K_q8_K` written out one output at a time by positions.
    fn lanes_reference(ty: GgmlType, bytes: &[u8], x: &[f32], n: usize, m: usize) -> Vec<f32> {
        let kind = kind(ty).unwrap();
        let k = x.len() / n;
        let nb = k / QK_K;
        let bb = ty.block_bytes();
        let mut out = vec![0.0f32; n * m];
        for t in 0..n {
            for r in 0..m {
                let (mut acc, mut acc_m, mut summs) = ([0.0f32; 8], [0.0f32; 4], 0.0f32);
                for b in 0..nb {
                    let ib = IntegerBlock::new(kind, &bytes[(r * nb + b) * bb..][..bb]);
                    let mut q = [0i8; QK_K];
                    let dx = q8_k_block(&x[t * k + b * QK_K..][..QK_K], &mut q);
                    let bsum = |g: usize, len: usize| -> i32 {
                        q[g * len..(g + 1) * len].iter().map(|&v| v as i32).sum()
                    };
                    let (d, dmin) = (dx * ib.d, -dx * ib.dmin);
                    let mut lanes = [0i32; 8];
                    for (i, &qi) in q.iter().enumerate() {
                        lanes[(i % 32) / 4] += ib.value(i) * qi as i32;
                    }
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        let pair = |v: &[i32], len: usize| {
                            v[2 * l] * bsum(2 * l, len) + v[2 * l + 1] * bsum(2 * l + 1, len)
                        };
                        match kind {
                            Q6 => *lane -= 32 * pair(&ib.scales, 16),
                            Q2 => acc[l] = dmin.mul_add(pair(&ib.mins, 16) as f32, acc[l]),
                            Q4 if l < 4 => {
                                acc_m[l] = dmin.mul_add(pair(&ib.mins, 32) as f32, acc_m[l])
                            }
                            _ => {}
                        }
                        acc[l] = d.mul_add(*lane as f32, acc[l]);
                    }
                    if kind == Q5 {
                        let total: i32 = (0..8).map(|g| ib.mins[g] * bsum(g, 32)).sum();
                        summs = dmin.mul_add(total as f32, summs);
                    }
                }
                let lo: [f32; 4] = std::array::from_fn(|i| acc[i] + acc[i + 4]);
                let mut v = (lo[0] + lo[2]) + (lo[1] + lo[3]);
                if kind == Q4 {
                    v += (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
                }
                out[t * m + r] = v + summs;
            }
        }
        out
    }

    /// ggml's tiled k-quant microkernel (AVX512-VNNI build) written out one output at a time:
    /// exact `S1` and `S2` per super-block, `r = S1·d`, `r = fma(−dmin, S2, r)`,
    /// `out = fma(r, d_x, out)`.
    fn tiles_reference(ty: GgmlType, bytes: &[u8], x: &[f32], n: usize, m: usize) -> Vec<f32> {
        let kind = kind(ty).unwrap();
        let k = x.len() / n;
        let nb = k / QK_K;
        let bb = ty.block_bytes();
        let mut out = vec![0.0f32; n * m];
        for t in 0..n {
            for r in 0..m {
                let mut f = 0.0f32;
                for b in 0..nb {
                    let ib = IntegerBlock::new(kind, &bytes[(r * nb + b) * bb..][..bb]);
                    let mut q = [0i8; QK_K];
                    let dx = q8_k_block(&x[t * k + b * QK_K..][..QK_K], &mut q);
                    let zero = match kind {
                        Q6 => 32,
                        Q2 | Q3 | Q4 | Q5 => 0,
                        _ => 128, // the IQ types' levels are stored +128
                    };
                    let (mut s1, mut s2) = (0i32, 0i32);
                    for (i, &qi) in q.iter().enumerate() {
                        let scale = ib.scales[i / ib.group];
                        s1 += scale * (ib.levels[i] - zero) * qi as i32;
                        s2 += ib.mins[i / ib.group] * qi as i32;
                    }
                    let mut v = s1 as f32 * ib.d;
                    if matches!(kind, Q2 | Q4 | Q5) {
                        v = (-ib.dmin).mul_add(s2 as f32, v);
                    }
                    f = v.mul_add(dx, f);
                }
                out[t * m + r] = f;
            }
        }
        out
    }

    /// Every output has the reference's bits.
    fn assert_same_bits(got: &[f32], want: &[f32], ty: GgmlType, n: usize) {
        let same = got
            .iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        assert_eq!(same, got.len(), "{ty:?}, {n} rows");
    }

    /// The IQ types on the tiled kernel (8 rows and more): the reference's bits, whole tiles and
    /// remainders; fewer rows do not take the integer kernel.
    #[test]
    fn iq_types_take_the_tiled_kernel_with_its_bits() {
        let (k, m) = (512, 2 * TASK_ROWS + 37);
        let imatrix: Vec<f32> = (0..k).map(|i| 1.0 + (i % 7) as f32).collect();
        for ty in GgmlType::all().filter(|&t| iq_integer::has_integer_form(t)) {
            let w = signal(m * k, ty as usize);
            let row_bytes = k / QK_K * ty.block_bytes();
            let mut bytes = vec![0u8; m * row_bytes];
            for (src, dst) in w.chunks_exact(k).zip(bytes.chunks_exact_mut(row_bytes)) {
                quantize::types::quantize_row(ty, src, dst, Some(&imatrix)).unwrap();
            }
            assert!(
                !applies(ty, m, k, TILED_MIN_ROWS - 1),
                "{ty:?} below 8 rows"
            );
            if !applies(ty, m, k, TILED_MIN_ROWS) {
                eprintln!("no AVX512-VNNI here: nothing to check");
                return;
            }
            // 16 and more: AMX tiles of 16 and 32 rows where the CPU has AMX, the rest as before.
            for n in [TILED_MIN_ROWS, 11, 16, 37, 48] {
                let x = signal(n * k, 5);
                let mut got = vec![f32::NAN; n * m];
                product(ty, &bytes, &Q8kRows::new(&x, n), m, &mut got);
                assert_same_bits(&got, &tiles_reference(ty, &bytes, &x, n, m), ty, n);
            }
        }
    }

    /// Both AVX512-VNNI kernels, and the AMX one, give their reference's bits (whole tiles and
    /// remainders, several tasks, an odd row count), and the integer form decodes to what
    /// `dequantize` gives.
    #[test]
    fn kernel_matches_ggml_bits_and_dequantized_values() {
        let (n, k, m) = (11, 512, 2 * TASK_ROWS + 37);
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let kind = kind(ty).unwrap();
            let w = signal(m * k, ty as usize);
            let row_bytes = ty.block_bytes() * k / QK_K;
            let mut bytes = vec![0u8; m * row_bytes];
            quantize::quantize(ty, &w, &mut bytes).unwrap();
            let mut decoded = vec![0.0f32; m * k];
            quantize::dequantize(ty, &bytes, &mut decoded).unwrap();
            for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
                for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
                    let ib = IntegerBlock::new(kind, block);
                    for i in 0..QK_K {
                        let want = decoded[r * k + b * QK_K + i];
                        let zero = if kind == Q6 { 32 } else { 0 };
                        let scale = ib.scales[i / ib.group] as f32;
                        let min = match ib.group {
                            32 => ib.mins[i / 32],
                            _ => ib.mins[i / 16],
                        };
                        let got =
                            ib.d * scale * (ib.levels[i] - zero) as f32 - ib.dmin * min as f32;
                        assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{ty:?}");
                    }
                }
            }
            if !applies(ty, m, k, TILED_MIN_ROWS) {
                eprintln!("no AVX512-VNNI here: only the integer form was checked");
                continue;
            }
            // Both of ggml's paths: vec_dot below TILED_MIN_ROWS rows, the tiled kernel from it.
            // From 16 rows: AMX where the CPU has it (pairs of 16-row tiles, one tile, rest).
            for n in [TILED_MIN_ROWS - 1, 1, TILED_MIN_ROWS, n, 16, 53] {
                let x = signal(n * k, 3);
                let mut got = vec![f32::NAN; n * m];
                product(ty, &bytes, &Q8kRows::new(&x, n), m, &mut got);
                let want = match n >= TILED_MIN_ROWS {
                    true => tiles_reference(ty, &bytes, &x, n, m),
                    false => lanes_reference(ty, &bytes, &x, n, m),
                };
                assert_same_bits(&got, &want, ty, n);
            }
        }
    }
}

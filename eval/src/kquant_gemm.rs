//! Products with k-quant weights (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in integer arithmetic, the way
//! llama.cpp multiplies them: the activations are quantized to Q8_K (levels −127..127 and one f32
//! scale per 256), the weights stay 2- to 6-bit levels with their group scales, and a
//! super-block's dot product is exact in 32-bit integers. Only the float sum over super-blocks is
//! rounded, in a fixed order, so the result does not depend on tiling or threads.
//!
//! On AVX512-VNNI one `vpdpbusd` does 64 multiply-adds (unsigned weight level × signed activation
//! level) where an f32 FMA does 16, at the same rate; each group's sum is then scaled by its
//! integer group scale. Machines without VNNI (and shapes the kernel does not tile) keep the
//! decode-and-faer path in [`crate::linear`].

use faer::MatMut;
use rayon::prelude::*;

use formats::gguf::GgmlType;
use quantize::activation::q8_k_block;
use quantize::types::q45_k::{Q4_K, Q5_K};
use quantize::types::{q2_k, q3_k, q6_k, QK_K};

use crate::lanes::{dispatched, has_vnni};

/// Weight rows per register (16 i32 lanes).
const GROUP_ROWS: usize = 16;
/// Weight rows per parallel task (a multiple of [`GROUP_ROWS`]).
const TASK_ROWS: usize = 96;
/// Activation rows one tile multiplies at once (one accumulator register each).
const TILE_TOKENS: usize = 8;
/// Activation rows kept hot in cache while a task's weight groups pass over them.
const TOKEN_BLOCK: usize = 64;
/// Groups of four levels per super-block (`vpdpbusd` multiplies four bytes per lane).
const QUADS: usize = QK_K / 4;
/// Groups of 16 per super-block: the finest grouping of scales and mins (Q2_K, Q3_K, Q6_K).
const GROUPS16: usize = QK_K / 16;

/// Whether `ty` weights of `rows` × `cols` take the integer kernel on this machine.
pub fn applies(ty: GgmlType, rows: usize, cols: usize) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K
    ) && rows > 0
        && cols.is_multiple_of(QK_K)
        && has_vnni()
}

/// Activation rows in Q8_K form, laid out for the kernel.
pub struct Q8kRows {
    n_rows: usize,
    /// Super-blocks per row.
    n_blocks: usize,
    /// Levels (`n_rows` × `n_blocks` × 256).
    levels: Vec<i8>,
    /// Scale of each super-block (`n_rows` × `n_blocks`).
    scales: Vec<f32>,
    /// Level sums of each group of 16 (`n_rows` × `n_blocks` × 16): for weight types whose
    /// levels have a zero offset (Q3_K, Q6_K).
    sums: Vec<i32>,
    /// The same sums as 16-bit pairs (`n_rows` × `n_blocks` × 8): for the mins (Q2_K, Q4_K, Q5_K).
    sum_pairs: Vec<i32>,
}

/// Two 16-bit values in one i32 lane, low first (`vpdpwssd`'s operand layout).
fn pair(lo: i32, hi: i32) -> i32 {
    (lo as i16 as u16 as u32 | ((hi as i16 as u16 as u32) << 16)) as i32
}

dispatched! {
    /// One super-block of activations into Q8_K levels and their group sums (both forms of
    /// [`Q8kRows`]); returns the scale.
    fn quantize_block(x: &[f32], levels: &mut [i8], sums: &mut [i32], pairs: &mut [i32]) -> f32 {
        let scale = q8_k_block(x, levels);
        for (s, g) in sums.iter_mut().zip(levels.chunks_exact(16)) {
            *s = g.iter().map(|&v| v as i32).sum::<i32>();
        }
        for (p, s) in pairs.iter_mut().zip(sums.chunks_exact(2)) {
            *p = pair(s[0], s[1]);
        }
        scale
    }
}

impl Q8kRows {
    /// Quantizes `x` (`n_rows` rows of `k`, `k` a multiple of 256) as ggml's `quantize_row_q8_K`.
    pub fn new(x: &[f32], n_rows: usize) -> Q8kRows {
        let n_blocks = x.len() / n_rows / QK_K;
        let blocks = n_rows * n_blocks;
        let mut levels = vec![0i8; blocks * QK_K];
        let mut scales = vec![0f32; blocks];
        let mut sums = vec![0i32; blocks * GROUPS16];
        let mut sum_pairs = vec![0i32; blocks * GROUPS16 / 2];
        levels
            .par_chunks_mut(QK_K)
            .zip(scales.par_iter_mut())
            .zip(sums.par_chunks_mut(GROUPS16))
            .zip(sum_pairs.par_chunks_mut(GROUPS16 / 2))
            .zip(x.par_chunks(QK_K))
            .for_each(|((((levels, scale), sums), pairs), x)| {
                *scale = quantize_block(x, levels, sums, pairs);
            });
        Q8kRows {
            n_rows,
            n_blocks,
            levels,
            scales,
            sums,
            sum_pairs,
        }
    }
}

/// How a k-quant type's integer form is organized (the same for every block of the type).
#[derive(Clone, Copy)]
struct Layout {
    /// Values sharing a scale: 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K).
    group: usize,
    /// The level that stands for 0: 4 (Q3_K), 32 (Q6_K), else 0.
    zero: i32,
    /// Whether mins are subtracted (Q2_K, Q4_K, Q5_K).
    mins: bool,
}

impl Layout {
    /// The layout of `ty`, one of the types [`applies`] accepts.
    fn of(ty: GgmlType) -> Layout {
        let (group, zero, mins) = match ty {
            GgmlType::Q6_K => (16, 32, false),
            GgmlType::Q3_K => (16, 4, false),
            GgmlType::Q2_K => (16, 0, true),
            _ => (32, 0, true),
        };
        Layout { group, zero, mins }
    }

    /// Groups sharing a scale per super-block.
    fn n_groups(self) -> usize {
        QK_K / self.group
    }
}

/// A k-quant super-block as integers: value `i` =
/// `d · scales[i / group] · (levels[i] − zero) − dmin · mins[i / 16]` (see [`Layout`]).
struct IntegerBlock {
    levels: [u8; QK_K],
    /// Per group (16 used for groups of 16, 8 for groups of 32).
    scales: [i32; GROUPS16],
    /// Per group of 16 (Q4_K's and Q5_K's mins of 32 repeated); all 0 for types without mins.
    mins: [i32; GROUPS16],
    d: f32,
    dmin: f32,
}

impl IntegerBlock {
    fn new(ty: GgmlType, block: &[u8]) -> IntegerBlock {
        let zero = Layout::of(ty).zero;
        let signed = |levels: [i8; QK_K], scales: [i8; GROUPS16], d: f32| IntegerBlock {
            levels: levels.map(|l| (l as i32 + zero) as u8),
            scales: scales.map(|s| s as i32),
            mins: [0; GROUPS16],
            d,
            dmin: 0.0,
        };
        match ty {
            GgmlType::Q6_K => {
                let (levels, scales, d) = q6_k::unpack(block);
                signed(levels, scales, d)
            }
            GgmlType::Q3_K => {
                let (levels, scales, d) = q3_k::unpack(block);
                signed(levels, scales, d)
            }
            GgmlType::Q2_K => {
                let (levels, scales, mins, d, dmin) = q2_k::unpack(block);
                IntegerBlock {
                    levels,
                    scales: scales.map(|s| s as i32),
                    mins: mins.map(|m| m as i32),
                    d,
                    dmin,
                }
            }
            _ => {
                let kind = if ty == GgmlType::Q5_K { Q5_K } else { Q4_K };
                let (levels, scales, mins, d, dmin) = kind.unpack(block);
                let mut all = [0; GROUPS16];
                all[..QK_K / 32].copy_from_slice(&scales.map(|s| s as i32));
                IntegerBlock {
                    levels,
                    scales: all,
                    mins: std::array::from_fn(|g| mins[g / 2] as i32),
                    d,
                    dmin,
                }
            }
        }
    }
}

/// [`GROUP_ROWS`] weight rows in the kernel's layout; per super-block: [`QUADS`] registers of
/// 16 rows × four levels, a register of 16 group scales per group, the rows' `d` and `dmin`, and
/// their mins as 16-bit pairs over the groups of 16.
struct RowGroup {
    quads: Vec<i32>,
    scales: Vec<i32>,
    d: Vec<f32>,
    dmin: Vec<f32>,
    mins: Vec<i32>,
    layout: Layout,
    /// Rows that exist (the last group of a weight whose row count is not a multiple of
    /// [`GROUP_ROWS`] has fewer; the others are zero and never stored).
    rows: usize,
}

impl RowGroup {
    /// Unpacks rows `rows` (each `row_bytes` of `ty` blocks) of a weight.
    fn new(ty: GgmlType, rows: &[u8], row_bytes: usize, n_blocks: usize) -> RowGroup {
        let mut g = RowGroup {
            quads: vec![0; n_blocks * QUADS * GROUP_ROWS],
            scales: vec![0; n_blocks * GROUPS16 * GROUP_ROWS],
            d: vec![0.0; n_blocks * GROUP_ROWS],
            dmin: vec![0.0; n_blocks * GROUP_ROWS],
            mins: vec![0; n_blocks * GROUPS16 / 2 * GROUP_ROWS],
            layout: Layout::of(ty),
            rows: rows.len() / row_bytes,
        };
        let block_bytes = row_bytes / n_blocks;
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let ib = IntegerBlock::new(ty, block);
                let at = b * GROUP_ROWS + r;
                g.d[at] = ib.d;
                g.dmin[at] = ib.dmin;
                for (q, l) in ib.levels.chunks_exact(4).enumerate() {
                    g.quads[(b * QUADS + q) * GROUP_ROWS + r] =
                        i32::from_le_bytes([l[0], l[1], l[2], l[3]]);
                }
                for (j, &s) in ib.scales[..g.layout.n_groups()].iter().enumerate() {
                    g.scales[(b * GROUPS16 + j) * GROUP_ROWS + r] = s;
                }
                for (q, m) in ib.mins.chunks_exact(2).enumerate() {
                    g.mins[(b * GROUPS16 / 2 + q) * GROUP_ROWS + r] = pair(m[0], m[1]);
                }
            }
        }
        g
    }
}

/// `x` (as [`Q8kRows`]) times `weight`ᵀ (`m` rows of `ty` blocks in `bytes`) into `out`
/// (`n_rows` × `m`, every element written). Panics unless [`applies`] holds and the slices hold
/// those shapes.
pub(crate) fn product(ty: GgmlType, bytes: &[u8], x: &Q8kRows, m: usize, out: &mut [f32]) {
    let n = x.n_rows;
    let k = x.n_blocks * QK_K;
    assert!(
        applies(ty, m, k),
        "the integer kernel does not apply to {ty:?} {m}x{k} here"
    );
    assert_eq!(
        bytes.len(),
        m * ty.block_bytes() * x.n_blocks,
        "{ty:?} {m}x{k} weight bytes"
    );
    assert_eq!(out.len(), n * m, "{ty:?} product output");
    let row_bytes = bytes.len() / m;
    MatMut::from_row_major_slice_mut(out, n, m)
        .par_col_chunks_mut(TASK_ROWS)
        .zip(bytes.par_chunks(row_bytes * TASK_ROWS))
        .for_each(|(columns, rows)| {
            let groups: Vec<RowGroup> = rows
                .chunks(row_bytes * GROUP_ROWS)
                .map(|g| RowGroup::new(ty, g, row_bytes, x.n_blocks))
                .collect();
            let stride = columns.row_stride() as usize;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX-512F and VNNI; `columns` is this task's own
            // `n` × 16·groups window of `out`, rows `stride` apart.
            unsafe {
                x86::multiply(&groups, x, columns.as_ptr_mut(), stride)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("applies() is false off x86-64 ({stride}, {})", groups.len());
        });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX512-VNNI kernel.

    use std::arch::x86_64::*;

    use super::{Q8kRows, RowGroup, GROUPS16, GROUP_ROWS, QK_K, QUADS, TILE_TOKENS, TOKEN_BLOCK};

    /// `out` (`x.n_rows` rows, `width` apart, of 16 · `groups.len()` values) = `x` · the
    /// groups' rows ᵀ.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-VNNI, and `out` must be writable as described.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn multiply(groups: &[RowGroup], x: &Q8kRows, out: *mut f32, width: usize) {
        let n = x.n_rows;
        for t0 in (0..n).step_by(TOKEN_BLOCK) {
            let t_end = (t0 + TOKEN_BLOCK).min(n);
            for (gi, g) in groups.iter().enumerate() {
                let mut t = t0;
                while t < t_end {
                    let whole = t_end - t >= TILE_TOKENS;
                    let o = out.add(t * width + gi * GROUP_ROWS);
                    match (whole, g.layout.group == 16, g.layout.mins) {
                        (true, true, true) => tile::<TILE_TOKENS, 4, true>(g, x, t, o, width),
                        (true, true, false) => tile::<TILE_TOKENS, 4, false>(g, x, t, o, width),
                        (true, false, _) => tile::<TILE_TOKENS, 8, true>(g, x, t, o, width),
                        (false, true, true) => tile::<1, 4, true>(g, x, t, o, width),
                        (false, true, false) => tile::<1, 4, false>(g, x, t, o, width),
                        (false, false, _) => tile::<1, 8, true>(g, x, t, o, width),
                    }
                    t += if whole { TILE_TOKENS } else { 1 };
                }
            }
        }
    }

    /// 16 weight rows × `T` activation rows from `t`, written to `out` (rows `width` apart);
    /// groups of `GQ` quads (4: groups of 16, 8: groups of 32), mins subtracted if `MINS`.
    #[inline(always)]
    unsafe fn tile<const T: usize, const GQ: usize, const MINS: bool>(
        g: &RowGroup,
        x: &Q8kRows,
        t: usize,
        out: *mut f32,
        width: usize,
    ) {
        let nb = x.n_blocks;
        let n_groups = QUADS / GQ;
        let mut f = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            let block: [usize; T] = std::array::from_fn(|j| (t + j) * nb + b);
            let a: [*const i8; T] = std::array::from_fn(|j| x.levels.as_ptr().add(block[j] * QK_K));
            let w = g.quads.as_ptr().add(b * QUADS * GROUP_ROWS);
            let scales = g.scales.as_ptr().add(b * GROUPS16 * GROUP_ROWS);
            let mut s = [_mm512_setzero_si512(); T];
            for k in 0..n_groups {
                // Start from −zero · (the group's activation sum): the levels' zero offset.
                let mut acc: [__m512i; T] = std::array::from_fn(|j| {
                    let zero = g.layout.zero;
                    if zero == 0 {
                        return _mm512_setzero_si512();
                    }
                    let sums = &x.sums[block[j] * GROUPS16..][..GROUPS16];
                    let group_sum: i32 = sums[k * GQ / 4..(k + 1) * GQ / 4].iter().sum();
                    _mm512_set1_epi32(-zero * group_sum)
                });
                for q in k * GQ..(k + 1) * GQ {
                    let wv = _mm512_loadu_si512(w.add(q * GROUP_ROWS) as *const _);
                    for j in 0..T {
                        let av =
                            _mm512_set1_epi32((a[j].add(4 * q) as *const i32).read_unaligned());
                        acc[j] = _mm512_dpbusd_epi32(acc[j], wv, av);
                    }
                }
                let sc = _mm512_loadu_si512(scales.add(k * GROUP_ROWS) as *const _);
                for j in 0..T {
                    s[j] = _mm512_add_epi32(s[j], _mm512_mullo_epi32(acc[j], sc));
                }
            }
            let d = _mm512_loadu_ps(g.d.as_ptr().add(b * GROUP_ROWS));
            for j in 0..T {
                let da = _mm512_set1_ps(x.scales[block[j]]);
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), _mm512_mul_ps(d, da), f[j]);
            }
            if MINS {
                let mins = g.mins.as_ptr().add(b * GROUPS16 / 2 * GROUP_ROWS);
                let dmin = _mm512_loadu_ps(g.dmin.as_ptr().add(b * GROUP_ROWS));
                for j in 0..T {
                    let sums = x.sum_pairs.as_ptr().add(block[j] * GROUPS16 / 2);
                    let mut acc = _mm512_setzero_si512();
                    for q in 0..GROUPS16 / 2 {
                        let mv = _mm512_loadu_si512(mins.add(q * GROUP_ROWS) as *const _);
                        acc = _mm512_dpwssd_epi32(acc, mv, _mm512_set1_epi32(*sums.add(q)));
                    }
                    let da = _mm512_set1_ps(x.scales[block[j]]);
                    f[j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(dmin, da), f[j]);
                }
            }
        }
        let mask = (1u32 << g.rows).wrapping_sub(1) as __mmask16;
        for (j, f) in f.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(j * width), mask, *f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a smooth-but-irregular signal with a few outliers (so scales and mins vary).
    fn signal(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = ((i * 7 + seed * 13) as f32 * 0.618_034).fract() - 0.45;
                if (i + seed).is_multiple_of(97) {
                    v * 9.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Value `i` of a `ty` block without its `d` and mins: `scale · (level − zero)`.
    fn value(ty: GgmlType, ib: &IntegerBlock, i: usize) -> i32 {
        let layout = Layout::of(ty);
        ib.scales[i / layout.group] * (ib.levels[i] as i32 - layout.zero)
    }

    /// The kernel's arithmetic one output at a time: exact integer super-block sums, then
    /// `f = fma(s, d·da, f)` and `f = fma(−m, dmin·da, f)` per super-block, in order.
    fn reference(ty: GgmlType, bytes: &[u8], x: &[f32], n: usize, m: usize) -> Vec<f32> {
        let k = x.len() / n;
        let nb = k / QK_K;
        let row_bytes = bytes.len() / m;
        let mut out = vec![0.0f32; n * m];
        for t in 0..n {
            for r in 0..m {
                let mut f = 0.0f32;
                for b in 0..nb {
                    let block =
                        &bytes[r * row_bytes..][b * row_bytes / nb..(b + 1) * row_bytes / nb];
                    let ib = IntegerBlock::new(ty, block);
                    let mut levels = [0i8; QK_K];
                    let da = q8_k_block(&x[t * k + b * QK_K..][..QK_K], &mut levels);
                    let s: i32 = (0..QK_K)
                        .map(|i| value(ty, &ib, i) * levels[i] as i32)
                        .sum();
                    f = (s as f32).mul_add(ib.d * da, f);
                    if matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K) {
                        let mm: i32 = (0..QK_K).map(|i| ib.mins[i / 16] * levels[i] as i32).sum();
                        f = (-(mm as f32)).mul_add(ib.dmin * da, f);
                    }
                }
                out[t * m + r] = f;
            }
        }
        out
    }

    /// The AVX512-VNNI kernel gives the reference's bits (whole tiles of 8 activation rows and a
    /// remainder, several tasks), and the integer form decodes to what `dequantize` gives.
    #[test]
    fn kernel_matches_reference_bits_and_dequantized_values() {
        let (n, k, m) = (11, 512, 2 * TASK_ROWS + 37);
        for ty in [
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            let w = signal(m * k, ty as usize);
            let row_bytes = ty.block_bytes() * k / QK_K;
            let mut bytes = vec![0u8; m * row_bytes];
            quantize::quantize(ty, &w, &mut bytes).unwrap();
            let mut decoded = vec![0.0f32; m * k];
            quantize::dequantize(ty, &bytes, &mut decoded).unwrap();
            for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
                for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
                    let ib = IntegerBlock::new(ty, block);
                    for i in 0..QK_K {
                        let want = decoded[r * k + b * QK_K + i];
                        let got =
                            ib.d * value(ty, &ib, i) as f32 - ib.dmin * ib.mins[i / 16] as f32;
                        assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{ty:?}");
                    }
                }
            }
            if !applies(ty, m, k) {
                eprintln!("no AVX512-VNNI here: only the integer form was checked");
                continue;
            }
            let x = signal(n * k, 3);
            let mut got = vec![f32::NAN; n * m];
            product(ty, &bytes, &Q8kRows::new(&x, n), m, &mut got);
            let want = reference(ty, &bytes, &x, n, m);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty:?}"
            );
        }
    }
}

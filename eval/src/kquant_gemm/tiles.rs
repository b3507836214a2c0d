//! ggml's tiled path for k-quant products (`ggml_compute_forward_mul_mat_tiled`, taken when the
//! activations have at least [`super::TILED_MIN_ROWS`] rows). Per super-block it forms two exact
//! integers per output — `S1 = Σ scale·(level − zero)·x` and, for the types with mins,
//! `S2 = Σ min·(sum of x over the min's group)` — and then, in f32 (as the reference build
//! compiles its AVX512-VNNI microkernel): `r = S1 · d`, `r = r − dmin · S2` (fused),
//! `out = fma(r, d_x, out)`, super-block after super-block.
//!
//! The kernel keeps 16 weight rows in the lanes of a register: one `vpdpbusd` multiplies four
//! levels of each of 16 rows with four activation levels, and a group's sum is scaled once by its
//! 16 integer scales.

use rayon::prelude::*;

use quantize::activation::q8_k_block;
use quantize::types::QK_K;

use super::{IntegerBlock, Q2, Q3, Q4, Q5, Q6};
use crate::lanes::dispatched;
use crate::pair_tiles::row_tasks;

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
/// Groups of 16 per super-block: the finest grouping of scales and mins.
const GROUPS16: usize = QK_K / 16;
/// Activation rows of one AMX tile.
const AMX_TOKENS: usize = 16;

/// Activation rows in Q8_K form, laid out for the tiled kernel.
pub(super) struct TileRows {
    pub(super) n_rows: usize,
    /// Super-blocks per row.
    pub(super) n_blocks: usize,
    /// Levels (`n_rows` × `n_blocks` × 256).
    levels: Vec<i8>,
    /// Scale of each super-block.
    scales: Vec<f32>,
    /// Level sums of each group of 16: for the levels' zero offset (Q3_K, Q6_K).
    sums: Vec<i32>,
    /// The same sums as 16-bit pairs: for the mins (Q2_K, Q4_K, Q5_K).
    sum_pairs: Vec<i32>,
    /// Where AMX multiplies these rows (empty otherwise): the level sum of each super-block, for
    /// the AMX planes' offset ([`AMX_OFFSET`]).
    totals: Vec<i32>,
    /// Where AMX multiplies these rows (empty otherwise): the levels of each whole tile of 16
    /// rows again, per super-block and chunk of 64 values one contiguous 16×64-byte tile.
    amx_levels: Vec<i8>,
}

/// Two 16-bit values in one i32 lane, low first (`vpdpwssd`'s operand layout).
fn pair(lo: i32, hi: i32) -> i32 {
    (lo as i16 as u16 as u32 | ((hi as i16 as u16 as u32) << 16)) as i32
}

dispatched! {
    /// One super-block of activations into Q8_K levels and their group sums; returns the scale.
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

impl TileRows {
    /// Quantizes `x` (`n_rows` rows of `k`, `k` a multiple of 256) as ggml's `quantize_row_q8_K`.
    pub(super) fn new(x: &[f32], n_rows: usize) -> TileRows {
        let n_blocks = x.len() / n_rows / QK_K;
        let blocks = n_rows * n_blocks;
        let mut q = TileRows {
            n_rows,
            n_blocks,
            levels: vec![0; blocks * QK_K],
            scales: vec![0.0; blocks],
            sums: vec![0; blocks * GROUPS16],
            sum_pairs: vec![0; blocks * GROUPS16 / 2],
            totals: Vec::new(),
            amx_levels: Vec::new(),
        };
        q.levels
            .par_chunks_mut(QK_K)
            .zip(q.scales.par_iter_mut())
            .zip(q.sums.par_chunks_mut(GROUPS16))
            .zip(q.sum_pairs.par_chunks_mut(GROUPS16 / 2))
            .zip(x.par_chunks(QK_K))
            .for_each(|((((levels, scale), sums), pairs), x)| {
                *scale = quantize_block(x, levels, sums, pairs);
            });
        if crate::amx::available() && n_rows >= AMX_TOKENS {
            q.totals = q
                .sums
                .chunks_exact(GROUPS16)
                .map(|s| s.iter().sum())
                .collect();
            q.amx_levels = amx_tiles(&q.levels, n_rows, n_blocks);
        }
        q
    }
}

/// The levels of each whole tile of [`AMX_TOKENS`] rows (`levels`: `n_rows` rows of `n_blocks`
/// super-blocks) as contiguous 1024-byte tiles: tile of rows `16T..`, super-block `b`, chunk `c`
/// at `((T·n_blocks + b)·4 + c)·1024`, its row `j` the 64 levels of that chunk.
fn amx_tiles(levels: &[i8], n_rows: usize, n_blocks: usize) -> Vec<i8> {
    let k = n_blocks * QK_K;
    let mut out = vec![0i8; n_rows / AMX_TOKENS * AMX_TOKENS * k];
    out.par_chunks_mut(AMX_TOKENS * k)
        .zip(levels.par_chunks(AMX_TOKENS * k))
        .for_each(|(out, rows)| {
            for (i, tile) in out.chunks_exact_mut(AMX_TILE_BYTES).enumerate() {
                let at = i * AMX_CHUNK; // super-block and chunk within a row
                for (j, dst) in tile.chunks_exact_mut(AMX_CHUNK).enumerate() {
                    dst.copy_from_slice(&rows[j * k + at..][..AMX_CHUNK]);
                }
            }
        });
    out
}

/// [`GROUP_ROWS`] weight rows in the kernel's layout; per super-block: [`QUADS`] registers of
/// 16 rows × four unsigned levels, a register of 16 scales per group, the rows' `d` and `dmin`,
/// and their mins as 16-bit pairs over the groups of 16.
struct RowGroup {
    kind: u8,
    /// Values per scale: 16 or 32.
    group: usize,
    quads: Vec<i32>,
    scales: Vec<i32>,
    d: Vec<f32>,
    dmin: Vec<f32>,
    mins: Vec<i32>,
    /// Rows that exist (a last group may have fewer; the others are zero and never stored).
    rows: usize,
    /// For the AMX kernel (empty otherwise): per super-block and chunk of 64 values, two
    /// 64×16-byte tiles in `tdpbsud`'s layout (quad `q`, row `r`: 4 bytes at `64q + 4r`), the low
    /// and the high byte of each value's `scale·(level − zero) + AMX_OFFSET`.
    planes: Vec<u8>,
}

/// Added to every `scale·(level − zero)` (at most 4096 in magnitude in every type: Q6_K's
/// 128·32, IQ4_XS's 32·127) so that the AMX planes hold it as two unsigned bytes; taken off again
/// as `AMX_OFFSET` times the activations' super-block sum.
const AMX_OFFSET: i32 = 4096;
/// Values per AMX chunk (one tile row of bytes).
const AMX_CHUNK: usize = 64;
/// Bytes of one tile: 16 rows of one chunk.
const AMX_TILE_BYTES: usize = AMX_TOKENS * AMX_CHUNK;
/// Plane bytes per super-block: per chunk a low and a high tile.
const AMX_BLOCK_BYTES: usize = QK_K / AMX_CHUNK * 2 * AMX_TILE_BYTES;

dispatched! {
    /// Writes one row's AMX plane bytes for super-block `b` (see [`RowGroup::planes`]): each
    /// value's `scale·(level + shift) + AMX_OFFSET` (`shift` taking the kind's zero off), row `r`.
    fn put_planes(
        planes: &mut [u8],
        b: usize,
        r: usize,
        levels: &[i32],
        scaling: (&[i32], usize, i32),
    ) {
        let (scales, group, shift) = scaling;
        let mut w = [0i32; QK_K];
        for ((w, l), &s) in w.chunks_exact_mut(group).zip(levels.chunks_exact(group)).zip(scales) {
            for (w, &l) in w.iter_mut().zip(l) {
                *w = s * (l + shift) + AMX_OFFSET;
            }
        }
        debug_assert!(w.iter().all(|w| (0..1 << 16).contains(w)), "AMX plane values");
        let lo: [u8; QK_K] = std::array::from_fn(|i| w[i] as u8);
        let hi: [u8; QK_K] = std::array::from_fn(|i| (w[i] >> 8) as u8);
        let quads = AMX_CHUNK / 4;
        for q in 0..QK_K / 4 {
            let at = b * AMX_BLOCK_BYTES + q / quads * 2 * AMX_TILE_BYTES + 64 * (q % quads) + 4 * r;
            planes[at..at + 4].copy_from_slice(&lo[4 * q..4 * q + 4]);
            let at = at + AMX_TILE_BYTES;
            planes[at..at + 4].copy_from_slice(&hi[4 * q..4 * q + 4]);
        }
    }
}

/// The level that stands for 0 in the kernel's unsigned levels: 4 (Q3_K), 32 (Q6_K), 128 (the
/// IQ types, stored +128 as ggml's tiled unpackers store them), else 0.
fn zero(kind: u8) -> i32 {
    match kind {
        Q6 => 32,
        Q3 => 4,
        Q2 | Q4 | Q5 => 0,
        _ => 128,
    }
}

impl RowGroup {
    /// Unpacks rows `rows` (each `row_bytes` of `kind` blocks) of a weight, for the VNNI kernel
    /// (`vnni`: quads and scales) and for the AMX one (`amx`: planes), or both.
    fn new(
        kind: u8,
        rows: &[u8],
        row_bytes: usize,
        n_blocks: usize,
        (vnni, amx): (bool, bool),
    ) -> RowGroup {
        let sized = |on: bool, n: usize| if on { n } else { 0 };
        let mut g = RowGroup {
            kind,
            group: 16,
            quads: vec![0; sized(vnni, n_blocks * QUADS * GROUP_ROWS)],
            scales: vec![0; sized(vnni, n_blocks * GROUPS16 * GROUP_ROWS)],
            d: vec![0.0; n_blocks * GROUP_ROWS],
            dmin: vec![0.0; n_blocks * GROUP_ROWS],
            mins: vec![0; n_blocks * GROUPS16 / 2 * GROUP_ROWS],
            rows: rows.len() / row_bytes,
            planes: vec![0; sized(amx, n_blocks * AMX_BLOCK_BYTES)],
        };
        let zero = zero(kind);
        // IntegerBlock keeps Q6_K's levels +32 and Q3_K's signed: make both unsigned.
        let shift = if kind == Q3 { 4 } else { 0 };
        let block_bytes = row_bytes / n_blocks;
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let ib = IntegerBlock::new(kind, block);
                g.group = ib.group;
                let at = b * GROUP_ROWS + r;
                g.d[at] = ib.d;
                g.dmin[at] = ib.dmin;
                if amx {
                    let scales = (&ib.scales[..], ib.group, shift - zero);
                    put_planes(&mut g.planes, b, r, &ib.levels, scales);
                }
                if vnni {
                    for (q, l) in ib.levels.chunks_exact(4).enumerate() {
                        let l: [u8; 4] = std::array::from_fn(|i| (l[i] + shift) as u8);
                        g.quads[(b * QUADS + q) * GROUP_ROWS + r] = i32::from_le_bytes(l);
                    }
                    for (j, &s) in ib.scales[..QK_K / ib.group].iter().enumerate() {
                        g.scales[(b * GROUPS16 + j) * GROUP_ROWS + r] = s;
                    }
                }
                // Mins per group of 16 (Q4_K's and Q5_K's mins of 32 repeated).
                let min16 = |j: usize| ib.mins[j * 16 / ib.group.max(16)];
                for q in 0..GROUPS16 / 2 {
                    let m = pair(min16(2 * q), min16(2 * q + 1));
                    g.mins[(b * GROUPS16 / 2 + q) * GROUP_ROWS + r] = m;
                }
            }
        }
        g
    }
}

/// `x` (as [`TileRows`]) times the `kind` weight rows in `bytes` (`m` of them) into `out`
/// (`n_rows` × `m`); the caller checked the shapes and the CPU.
pub(super) fn product(kind: u8, bytes: &[u8], x: &TileRows, m: usize, out: &mut [f32]) {
    let row_bytes = bytes.len() / m;
    // AMX takes whole tiles of 16 activation rows, the VNNI kernel what is left.
    let amx = !x.amx_levels.is_empty();
    let vnni = !amx || !x.n_rows.is_multiple_of(AMX_TOKENS);
    row_tasks(out, x.n_rows, m, bytes, TASK_ROWS, |rows, window| {
        let groups: Vec<RowGroup> = rows
            .chunks(row_bytes * GROUP_ROWS)
            .map(|g| RowGroup::new(kind, g, row_bytes, x.n_blocks, (vnni, amx)))
            .collect();
        #[cfg(target_arch = "x86_64")]
        {
            let (out, stride) = window.raw();
            // SAFETY: the caller checked AVX-512F and VNNI, and `amx` that AMX is available;
            // `out` is this task's own `n` × 16·groups window of the output, rows `stride` apart.
            unsafe {
                let done = if amx {
                    x86::multiply_amx(&groups, x, out, stride)
                } else {
                    0
                };
                x86::multiply(&groups, x, out, stride, done);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no tiled kernel off x86-64 ({})", window.rows);
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX512-VNNI kernel.

    use std::arch::x86_64::*;

    use super::{
        zero, RowGroup, TileRows, AMX_BLOCK_BYTES, AMX_CHUNK, AMX_OFFSET, AMX_TILE_BYTES,
        AMX_TOKENS, GROUPS16, GROUP_ROWS, Q2, Q4, Q5, QK_K, QUADS, TILE_TOKENS, TOKEN_BLOCK,
    };

    /// Rows `from..` of `out` (`x.n_rows` rows, `width` apart, of 16 · `groups.len()` values) =
    /// those rows of `x` · the groups' rows ᵀ.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-VNNI, and `out` must be writable as described.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn multiply(
        groups: &[RowGroup],
        x: &TileRows,
        out: *mut f32,
        width: usize,
        from: usize,
    ) {
        let n = x.n_rows;
        for t0 in (from..n).step_by(TOKEN_BLOCK) {
            let t_end = (t0 + TOKEN_BLOCK).min(n);
            for (gi, g) in groups.iter().enumerate() {
                let mut t = t0;
                while t < t_end {
                    let whole = t_end - t >= TILE_TOKENS;
                    let o = out.add(t * width + gi * GROUP_ROWS);
                    let mins = matches!(g.kind, Q2 | Q4 | Q5);
                    match (whole, g.group == 32, mins) {
                        (true, false, true) => tile::<TILE_TOKENS, 4, true>(g, x, t, o, width),
                        (true, false, false) => tile::<TILE_TOKENS, 4, false>(g, x, t, o, width),
                        (true, true, true) => tile::<TILE_TOKENS, 8, true>(g, x, t, o, width),
                        (true, true, false) => tile::<TILE_TOKENS, 8, false>(g, x, t, o, width),
                        (false, false, true) => tile::<1, 4, true>(g, x, t, o, width),
                        (false, false, false) => tile::<1, 4, false>(g, x, t, o, width),
                        (false, true, true) => tile::<1, 8, true>(g, x, t, o, width),
                        (false, true, false) => tile::<1, 8, false>(g, x, t, o, width),
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
        x: &TileRows,
        t: usize,
        out: *mut f32,
        width: usize,
    ) {
        let nb = x.n_blocks;
        let n_groups = QUADS / GQ;
        let zero = zero(g.kind);
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
            let factors = Factors::load(g, b);
            for j in 0..T {
                f[j] = factors.apply(x, block[j], s[j], MINS, f[j]);
            }
        }
        let mask = (1u32 << g.rows).wrapping_sub(1) as __mmask16;
        for (j, f) in f.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(j * width), mask, *f);
        }
    }

    /// 64-byte aligned scratch for four 16×16 tiles of sums.
    #[repr(C, align(64))]
    struct Sums([[i32; 256]; 4]);

    /// Rows `0..n16` of `out` (as [`multiply`]) with AMX, `n16` the largest multiple of 16
    /// activation rows; returns `n16`. Per super-block, 16 or 32 activation rows and 16 weight
    /// rows: `tdpbsud` forms `Σ low·x` and `Σ high·x` over the planes, which give the exact
    /// `S1 = low + 256·high − AMX_OFFSET·Σx` of [`tile`]; from there every f32 operation is
    /// [`tile`]'s, in its order. The f32 steps of one super-block run while the tile unit
    /// multiplies the next.
    ///
    /// # Safety
    /// As [`multiply`], and `x` must carry its AMX tiles and the groups their planes (which
    /// [`crate::amx::available`] allowed).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn multiply_amx(
        groups: &[RowGroup],
        x: &TileRows,
        out: *mut f32,
        width: usize,
    ) -> usize {
        crate::amx::ensure_configured();
        let n16 = x.n_rows / AMX_TOKENS * AMX_TOKENS;
        let nb = x.n_blocks;
        let tile_set = QK_K / AMX_CHUNK * AMX_TILE_BYTES; // one super-block's tiles of 16 rows
        let mut sums = [Sums([[0; 256]; 4]), Sums([[0; 256]; 4])];
        // Super-block outside, weight groups inside: a super-block's activation tiles stay in
        // L1 while every group's planes pass by (the planes of one super-block are 8 KB a
        // group, the activation tiles of all super-blocks too many for L1 on wide rows).
        // Each super-block 0 starts its accumulators from zero ([`finish`]), so they are never
        // cleared.
        let mut f = vec![[[_mm512_setzero_ps(); AMX_TOKENS]; 2]; groups.len()];
        let steps = nb * groups.len();
        for t0 in (0..n16).step_by(2 * AMX_TOKENS) {
            let two = n16 - t0 >= 2 * AMX_TOKENS;
            let tiles = if two { 2 } else { 1 };
            let a = x.amx_levels.as_ptr().add(t0 / AMX_TOKENS * nb * tile_set);
            for step in 0..=steps {
                if step < steps {
                    let (b, g) = (step / groups.len(), &groups[step % groups.len()]);
                    let planes = g.planes.as_ptr().add(b * AMX_BLOCK_BYTES);
                    multiply_block(a.add(b * tile_set), nb * tile_set, planes, two);
                }
                if step > 0 {
                    let (b, gi) = ((step - 1) / groups.len(), (step - 1) % groups.len());
                    let g = &groups[gi];
                    let mins = matches!(g.kind, Q2 | Q4 | Q5);
                    let s = &sums[(step - 1) % 2].0;
                    for (h, f) in f[gi][..tiles].iter_mut().enumerate() {
                        let t = t0 + h * AMX_TOKENS;
                        finish(g, x, b, t, &s[2 * h], &s[2 * h + 1], mins, f);
                    }
                }
                if step < steps {
                    store_sums(&mut sums[step % 2], two);
                }
            }
            for (gi, (g, f)) in groups.iter().zip(&f).enumerate() {
                let mask = (1u32 << g.rows).wrapping_sub(1) as __mmask16;
                for (h, f) in f[..tiles].iter().enumerate() {
                    for (j, f) in f.iter().enumerate() {
                        let t = t0 + h * AMX_TOKENS + j;
                        _mm512_mask_storeu_ps(out.add(t * width + gi * GROUP_ROWS), mask, *f);
                    }
                }
            }
        }
        n16
    }

    /// Starts the low and high sums of one super-block in tiles 0–1 (and 2–3 with `two`): the
    /// activation tiles at `a` (the second 16 rows `next` bytes on) times one group's planes.
    #[inline(always)]
    unsafe fn multiply_block(a: *const i8, next: usize, planes: *const u8, two: bool) {
        use std::arch::asm;
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, preserves_flags, nomem)
        );
        for c in 0..QK_K / AMX_CHUNK {
            let a0 = a.add(c * AMX_TILE_BYTES);
            let lo = planes.add(c * 2 * AMX_TILE_BYTES);
            if two {
                asm!(
                    "tileloadd tmm4, [{a0} + {s64}*1]",
                    "tileloadd tmm5, [{a1} + {s64}*1]",
                    "tileloadd tmm6, [{lo} + {s64}*1]",
                    "tileloadd tmm7, [{hi} + {s64}*1]",
                    "tdpbsud tmm0, tmm4, tmm6",
                    "tdpbsud tmm1, tmm4, tmm7",
                    "tdpbsud tmm2, tmm5, tmm6",
                    "tdpbsud tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(next),
                    lo = in(reg) lo,
                    hi = in(reg) lo.add(AMX_TILE_BYTES),
                    s64 = in(reg) 64usize,
                    options(nostack, preserves_flags, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {s64}*1]",
                    "tileloadd tmm6, [{lo} + {s64}*1]",
                    "tileloadd tmm7, [{hi} + {s64}*1]",
                    "tdpbsud tmm0, tmm4, tmm6",
                    "tdpbsud tmm1, tmm4, tmm7",
                    a0 = in(reg) a0,
                    lo = in(reg) lo,
                    hi = in(reg) lo.add(AMX_TILE_BYTES),
                    s64 = in(reg) 64usize,
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
    }

    /// Stores the sums [`multiply_block`] started: low, high of the first 16 rows, then (with
    /// `two`) of the second.
    #[inline(always)]
    unsafe fn store_sums(sums: &mut Sums, two: bool) {
        use std::arch::asm;
        let p = sums.0.as_mut_ptr() as *mut i32;
        asm!(
            "tilestored [{p0} + {s64}*1], tmm0",
            "tilestored [{p1} + {s64}*1], tmm1",
            p0 = in(reg) p,
            p1 = in(reg) p.add(256),
            s64 = in(reg) 64usize,
            options(nostack, preserves_flags)
        );
        if two {
            asm!(
                "tilestored [{p2} + {s64}*1], tmm2",
                "tilestored [{p3} + {s64}*1], tmm3",
                p2 = in(reg) p.add(512),
                p3 = in(reg) p.add(768),
                s64 = in(reg) 64usize,
                options(nostack, preserves_flags)
            );
        }
    }

    /// [`tile`]'s f32 steps for super-block `b` of activation rows `t0..t0 + 16`, from their
    /// low and high sums (row `j` of each: 16 weight rows); super-block 0 starts `f` from zero.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn finish(
        g: &RowGroup,
        x: &TileRows,
        b: usize,
        t0: usize,
        lo: &[i32; 256],
        hi: &[i32; 256],
        mins: bool,
        f: &mut [__m512; AMX_TOKENS],
    ) {
        let factors = Factors::load(g, b);
        for (j, f) in f.iter_mut().enumerate() {
            let blk = (t0 + j) * x.n_blocks + b;
            let l = _mm512_loadu_si512(lo.as_ptr().add(16 * j) as *const _);
            let h = _mm512_loadu_si512(hi.as_ptr().add(16 * j) as *const _);
            let s = _mm512_add_epi32(l, _mm512_slli_epi32::<8>(h));
            let s = _mm512_sub_epi32(s, _mm512_set1_epi32(AMX_OFFSET * x.totals[blk]));
            let before = if b == 0 { _mm512_setzero_ps() } else { *f };
            *f = factors.apply(x, blk, s, mins, before);
        }
    }

    /// One weight group's f32 factors for super-block `b`: the 16 rows' `d`, `dmin` and mins.
    struct Factors {
        d: __m512,
        dmin: __m512,
        min_pairs: *const i32,
    }

    impl Factors {
        #[inline(always)]
        unsafe fn load(g: &RowGroup, b: usize) -> Factors {
            Factors {
                d: _mm512_loadu_ps(g.d.as_ptr().add(b * GROUP_ROWS)),
                dmin: _mm512_loadu_ps(g.dmin.as_ptr().add(b * GROUP_ROWS)),
                min_pairs: g.mins.as_ptr().add(b * GROUPS16 / 2 * GROUP_ROWS),
            }
        }

        /// ggml's f32 steps for activation super-block `blk` (both kernels take exactly these):
        /// `r = S1·d`, with `mins` `r = r − dmin·S2` (fused), then `fma(r, d_x, f)`.
        #[inline(always)]
        unsafe fn apply(
            &self,
            x: &TileRows,
            blk: usize,
            s1: __m512i,
            mins: bool,
            f: __m512,
        ) -> __m512 {
            let mut r = _mm512_mul_ps(_mm512_cvtepi32_ps(s1), self.d);
            if mins {
                let sums = x.sum_pairs.as_ptr().add(blk * GROUPS16 / 2);
                let mut m = _mm512_setzero_si512();
                for q in 0..GROUPS16 / 2 {
                    let mv = _mm512_loadu_si512(self.min_pairs.add(q * GROUP_ROWS) as *const _);
                    m = _mm512_dpwssd_epi32(m, mv, _mm512_set1_epi32(*sums.add(q)));
                }
                r = _mm512_fnmadd_ps(self.dmin, _mm512_cvtepi32_ps(m), r);
            }
            _mm512_fmadd_ps(r, _mm512_set1_ps(x.scales[blk]), f)
        }
    }
}

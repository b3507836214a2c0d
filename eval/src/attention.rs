//! Causal attention of one head, computed the way ggml's CPU flash attention computes it, so that
//! an f32 model's outputs equal llama.cpp's bit for bit. ggml has two kernels
//! (`ggml_compute_forward_flash_attn_ext_f16`): micro-batches of 64 or more query rows take the
//! tiled one ([`attend_tiled`]), smaller ones (short prompts, token-by-token decoding) the
//! one-row kernel with f16 queries and an f16 accumulator ([`attend_one_row_f16`]).

use half::f16;

use crate::fastmath::ggml_expf;
use crate::float_gemm::{dot_f16_values, reduce16};
use crate::lanes::{self, LaneKernel, Lanes16, LANES};

/// Query rows per micro-batch from which ggml takes the tiled kernel (`GGML_FA_TILE_Q`).
pub const TILE_ROWS: usize = 64;
/// Keys per tile of the tiled kernel (`GGML_FA_TILE_KV`).
const KV_TILE: usize = 64;

/// Attention of `queries` (`t` rows of `hd`, positions `n_past..n_past + t`) over `keys` and
/// `values` (rows of `hd`, f16-rounded, positions `0..`), scaled by `scale`, into `out` (`t` rows
/// of `hd`): ggml's tiled kernel if `n_rows` (the micro-batch's query rows over all sequences)
/// reaches [`TILE_ROWS`], its one-row kernel otherwise. With a sliding `window`, the query at
/// position `p` sees keys `p − window + 1 ..= p` (llama.cpp's `LLAMA_SWA_TYPE_STANDARD` mask).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    n_past: usize,
    n_rows: usize,
    scale: f32,
    window: Option<usize>,
    out: &mut [f32],
) {
    lanes::dispatch(Attend {
        queries,
        keys,
        values,
        hd,
        n_past,
        tiled: n_rows >= TILE_ROWS,
        scale,
        window,
        out,
    })
}

/// [`attend`]'s arguments, as a kernel over the machine's lanes.
struct Attend<'a> {
    queries: &'a [f32],
    keys: &'a [f32],
    values: &'a [f32],
    hd: usize,
    n_past: usize,
    tiled: bool,
    scale: f32,
    window: Option<usize>,
    out: &'a mut [f32],
}

impl LaneKernel for Attend<'_> {
    #[inline(always)]
    fn run<L: Lanes16>(&mut self) {
        let Attend {
            queries,
            keys,
            values,
            hd,
            n_past,
            tiled,
            scale,
            window,
            ref mut out,
        } = *self;
        let rows = queries.chunks(hd).zip(out.chunks_mut(hd)).enumerate();
        if tiled {
            let key_tiles = transpose_key_tiles(keys, hd);
            // The blocked rows assume every query sees the keys from position 0.
            let blocked = match (hd, window) {
                (64, None) => {
                    attend_tiled_blocks::<L, 4>(queries, &key_tiles, values, n_past, scale, out)
                }
                (128, None) => {
                    attend_tiled_blocks::<L, 8>(queries, &key_tiles, values, n_past, scale, out)
                }
                (256, None) => {
                    attend_tiled_blocks::<L, 16>(queries, &key_tiles, values, n_past, scale, out)
                }
                _ => 0,
            };
            let rows = queries
                .chunks(hd)
                .zip(out.chunks_mut(hd))
                .enumerate()
                .skip(blocked);
            for (i, (q, o)) in rows {
                let seen = arch::graph::first_visible(n_past + i, window)..n_past + i + 1;
                attend_tiled(q, &key_tiles, values, seen, scale, o);
            }
        } else {
            for (i, (q, o)) in rows {
                let seen = arch::graph::first_visible(n_past + i, window)..n_past + i + 1;
                attend_one_row_f16(q, keys, values, seen, scale, o);
            }
        }
    }
}

/// The keys in tiles of [`KV_TILE`], each stored dimension-major (`[d][key]`, zero-padded) as
/// ggml packs them, so that a tile's scores are computed for all its keys at once.
#[inline(always)]
fn transpose_key_tiles(keys: &[f32], hd: usize) -> Vec<f32> {
    let n_kv = keys.len() / hd;
    let mut tiles = vec![0.0f32; n_kv.div_ceil(KV_TILE) * KV_TILE * hd];
    for (j, key) in keys.chunks(hd).enumerate() {
        let tile = &mut tiles[j / KV_TILE * KV_TILE * hd..];
        for (d, &v) in key.iter().enumerate() {
            tile[d * KV_TILE + j % KV_TILE] = v;
        }
    }
    tiles
}

/// One query row through `ggml_compute_forward_flash_attn_ext_tiled`: per tile of 64 keys, scores
/// summed by fused multiply-adds in dimension order, then scaled; a running maximum rescales the
/// accumulator with libm's `expf`; weights from `ggml_expf`, their sum added to the running sum
/// in f64 sixteen at a time; values accumulated by fused multiply-adds in key order; finally
/// multiplied by the reciprocal of the sum.
#[inline(always)]
fn attend_tiled(
    query: &[f32],
    key_tiles: &[f32],
    values: &[f32],
    seen: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
) {
    let hd = query.len();
    let (mut sum, mut max) = (0.0f32, f32::NEG_INFINITY);
    out.fill(0.0);
    // Tiles wholly before the window are skipped, as ggml skips fully masked tiles.
    for start in (seen.start / KV_TILE * KV_TILE..seen.end).step_by(KV_TILE) {
        let visible = KV_TILE.min(seen.end - start);
        let hidden = seen.start.saturating_sub(start);
        let tile = &key_tiles[start * hd..(start + KV_TILE) * hd];
        let mut p = [0.0f32; KV_TILE];
        for (&q, keys) in query.iter().zip(tile.chunks_exact(KV_TILE)) {
            for (s, &k) in p.iter_mut().zip(keys) {
                *s = k.mul_add(q, *s);
            }
        }
        if let Some(ms) = softmax_tile(&mut p, hidden..visible, scale, &mut max, &mut sum) {
            out.iter_mut().for_each(|v| *v *= ms);
        }
        for (j, &w) in p.iter().enumerate().take(visible).skip(hidden) {
            let v = &values[(start + j) * hd..(start + j + 1) * hd];
            out.iter_mut()
                .zip(v)
                .for_each(|(acc, &v)| *acc = v.mul_add(w, *acc));
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}

/// Query rows [`attend_tiled_block`] takes at once.
const QUERY_BLOCK: usize = 4;

/// [`attend_tiled`] over the whole blocks of [`QUERY_BLOCK`] rows of `queries` (heads of
/// `16·V`); returns how many rows it did (the rest are left to [`attend_tiled`]).
#[inline(always)]
fn attend_tiled_blocks<L: Lanes16, const V: usize>(
    queries: &[f32],
    key_tiles: &[f32],
    values: &[f32],
    n_past: usize,
    scale: f32,
    out: &mut [f32],
) -> usize {
    let block = QUERY_BLOCK * V * LANES;
    let whole = queries.len() / block;
    for (b, (q, o)) in queries
        .chunks_exact(block)
        .zip(out.chunks_exact_mut(block))
        .enumerate()
    {
        attend_tiled_block::<L, V>(q, key_tiles, values, n_past + b * QUERY_BLOCK + 1, scale, o);
    }
    whole * QUERY_BLOCK
}

/// Lane vectors per tile of [`KV_TILE`] scores.
const TILE_VECTORS: usize = KV_TILE / LANES;

/// [`attend_tiled`] for [`QUERY_BLOCK`] consecutive query rows of `16·V` at once (row `r` sees
/// `n_visible + r` keys), each row's arithmetic in exactly [`attend_tiled`]'s order; the rows
/// share every key and value load, and scores and accumulators live in lane registers.
#[inline(always)]
fn attend_tiled_block<L: Lanes16, const V: usize>(
    queries: &[f32],
    key_tiles: &[f32],
    values: &[f32],
    n_visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = V * LANES;
    let mut acc = [[L::zero(); V]; QUERY_BLOCK];
    let mut sum = [0.0f32; QUERY_BLOCK];
    let mut max = [f32::NEG_INFINITY; QUERY_BLOCK];
    for start in (0..n_visible + QUERY_BLOCK - 1).step_by(KV_TILE) {
        let tile = &key_tiles[start * hd..(start + KV_TILE) * hd];
        let mut s = [[L::zero(); TILE_VECTORS]; QUERY_BLOCK];
        for d in 0..hd {
            // SAFETY: row d of the tile holds KV_TILE = 16·TILE_VECTORS values.
            let keys: [L; TILE_VECTORS] = std::array::from_fn(|c| unsafe {
                L::load_f32(tile.as_ptr().add(d * KV_TILE + c * LANES))
            });
            for (s, q) in s.iter_mut().zip(queries.chunks_exact(hd)) {
                let q = L::splat(q[d]);
                for (s, &k) in s.iter_mut().zip(&keys) {
                    *s = L::fma(k, q, *s);
                }
            }
        }
        let mut p = [[0.0f32; KV_TILE]; QUERY_BLOCK];
        let mut visible = [0usize; QUERY_BLOCK];
        for r in 0..QUERY_BLOCK {
            let seen = (n_visible + r).saturating_sub(start).min(KV_TILE);
            visible[r] = seen;
            if seen == 0 {
                continue;
            }
            let p = &mut p[r];
            for (c, v) in s[r].iter().enumerate() {
                p[c * LANES..(c + 1) * LANES].copy_from_slice(&v.to_array());
            }
            if let Some(ms) = softmax_tile(p, 0..seen, scale, &mut max[r], &mut sum[r]) {
                acc[r]
                    .iter_mut()
                    .for_each(|v| *v = L::mul(*v, L::splat(ms)));
            }
        }
        let last = visible.iter().copied().max().unwrap_or(0);
        let tile_values = &values[start * hd..];
        if V <= 4 {
            // All QUERY_BLOCK·V accumulators fit in registers: each value row is loaded once.
            for j in 0..last {
                // SAFETY: row j of the tile holds hd = 16·V values.
                let v: [L; V] = std::array::from_fn(|c| unsafe {
                    L::load_f32(tile_values.as_ptr().add(j * hd + c * LANES))
                });
                for r in 0..QUERY_BLOCK {
                    if j < visible[r] {
                        let w = L::splat(p[r][j]);
                        for (a, &v) in acc[r].iter_mut().zip(&v) {
                            *a = L::fma(v, w, *a);
                        }
                    }
                }
            }
        } else {
            // Wider heads would spill them: one lane vector of every row at a time, keys inside
            // (each accumulator still takes its values in key order, so the sums are the same).
            for c in 0..V {
                let mut a: [L; QUERY_BLOCK] = std::array::from_fn(|r| acc[r][c]);
                for j in 0..last {
                    // SAFETY: row j of the tile holds hd = 16·V values.
                    let v = unsafe { L::load_f32(tile_values.as_ptr().add(j * hd + c * LANES)) };
                    for (r, a) in a.iter_mut().enumerate() {
                        if j < visible[r] {
                            *a = L::fma(v, L::splat(p[r][j]), *a);
                        }
                    }
                }
                for (r, a) in a.into_iter().enumerate() {
                    acc[r][c] = a;
                }
            }
        }
    }
    for (r, o) in out.chunks_exact_mut(hd).enumerate() {
        let inv = L::splat(if sum[r] == 0.0 { 0.0 } else { 1.0 / sum[r] });
        for (o, a) in o.chunks_exact_mut(LANES).zip(&acc[r]) {
            o.copy_from_slice(&L::mul(*a, inv).to_array());
        }
    }
}

/// One tile's step of the online softmax, as ggml's tiled kernel takes it: the raw scores `p`
/// are scaled, those outside the `visible` keys masked, and replaced by their weights
/// `ggml_expf(score − max)` against the running maximum `max`; the weights' sum (in f64, sixteen
/// at a time) is added to the running `sum`. If the maximum grew, `sum` is first rescaled by
/// libm's `expf(old − new)`, and that factor is returned for the caller's value accumulator.
#[inline(always)]
fn softmax_tile(
    p: &mut [f32; KV_TILE],
    visible: std::ops::Range<usize>,
    scale: f32,
    max: &mut f32,
    sum: &mut f32,
) -> Option<f32> {
    p.iter_mut().for_each(|s| *s *= scale);
    p[..visible.start].fill(f32::NEG_INFINITY);
    p[visible.end..].fill(f32::NEG_INFINITY);
    let new_max = max.max(max_of(p));
    let rescale = (new_max > *max).then(|| (*max - new_max).exp());
    if let Some(ms) = rescale {
        *sum *= ms;
    }
    *max = new_max;
    let mut tile_sum = 0.0f64;
    for group in p.chunks_exact_mut(16) {
        group.iter_mut().for_each(|v| *v = ggml_expf(*v - new_max));
        tile_sum += reduce16(group.try_into().expect("16 lanes")) as f64;
    }
    *sum = (*sum as f64 + tile_sum) as f32;
    rescale
}

/// The largest of a tile's scores. Maxima do not depend on the order they are taken in, so this
/// runs in sixteen independent lanes instead of one long chain.
#[inline(always)]
fn max_of(p: &[f32; KV_TILE]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for group in p.chunks_exact(16) {
        lanes
            .iter_mut()
            .zip(group)
            .for_each(|(m, &v)| *m = m.max(v));
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// One query row through ggml's `flash_attn_ext_f16_one_chunk`: f16 query, online softmax, and
/// the value accumulator rounded to f16 after every update. Scores take `ggml_vec_dot_f16`'s order
/// ([`dot_f16_values`]); updates are fused as the `-march=native` build fuses them, so the rounding
/// steps land where llama.cpp's do. On CPUs with AVX512-FP16, ggml's `ggml_vec_mad_f16` and
/// `ggml_vec_scale_f16` work in f16 arithmetic on each whole 128 values of the row
/// ([`F16Updates`]).
#[inline(always)]
fn attend_one_row_f16(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    seen: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
) {
    let hd = query.len();
    let q: Vec<f32> = query.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let updates = F16Updates::for_row(hd);
    let (mut sum, mut max) = (0.0f32, f32::NEG_INFINITY);
    out.fill(0.0);
    for j in seen {
        let k = &keys[j * hd..(j + 1) * hd];
        let s = dot_f16_values(k, &q) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            ms = (max - s).exp();
            max = s;
            updates.scale(out, ms);
        } else {
            vs = (s - max).exp();
        }
        updates.mad(out, &values[j * hd..(j + 1) * hd], vs);
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}

/// `x` rounded once to f16 (to nearest, ties to even), as f32. Through f32 rounded to odd: an
/// intermediate with more than two extra bits that keeps the information "inexact" in its last
/// bit rounds to the same f16 as `x` itself (a plain f32 rounding first could create a tie).
fn f16_of_f64(x: f64) -> f32 {
    let nearest = x as f32;
    let odd = if nearest as f64 == x || !nearest.is_finite() {
        nearest
    } else {
        let toward_zero = match (nearest as f64).abs() > x.abs() {
            true => f32::from_bits(nearest.to_bits() - 1),
            false => nearest,
        };
        f32::from_bits(toward_zero.to_bits() | 1)
    };
    f16::from_f32(odd).to_f32()
}

/// How ggml updates an f16 accumulator row: its first `native` values in f16 arithmetic
/// (AVX512-FP16 builds: the factor rounded to f16, one rounding per operation), the rest in f32
/// rounded to f16 (every other build, and the leftovers of a row).
#[derive(Clone, Copy)]
struct F16Updates {
    native: usize,
}

impl F16Updates {
    /// `GGML_F16_STEP` on AVX512-FP16 builds: the vector loop takes whole steps of 128 values.
    const STEP: usize = 128;

    fn for_row(n: usize) -> F16Updates {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512fp16") {
            return F16Updates {
                native: n - n % Self::STEP,
            };
        }
        let _ = n;
        F16Updates { native: 0 }
    }

    /// `ggml_vec_scale_f16`: `acc = acc · s`.
    fn scale(self, acc: &mut [f32], s: f32) {
        let (native, rest) = acc.split_at_mut(self.native);
        let s16 = f16::from_f32(s).to_f32();
        // The product of two f16 values is exact in f32: one rounding, as the f16 multiply.
        native
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v * s16).to_f32());
        rest.iter_mut()
            .for_each(|v| *v = f16::from_f32(*v * s).to_f32());
    }

    /// `ggml_vec_mad_f16`: `acc = acc + x · s`.
    fn mad(self, acc: &mut [f32], x: &[f32], s: f32) {
        let (native, rest) = acc.split_at_mut(self.native);
        let s16 = f16::from_f32(s).to_f32() as f64;
        // An f16 fused multiply-add rounds once: the f64 product of two f16 values is exact, and
        // so is its sum with an f16 value but for magnitudes 2^80 apart, which an accumulator
        // and a value row never are.
        for (a, &v) in native.iter_mut().zip(x) {
            *a = f16_of_f64((v as f64).mul_add(s16, *a as f64));
        }
        for (a, &v) in rest.iter_mut().zip(&x[self.native..]) {
            *a = f16::from_f32(v.mul_add(s, *a)).to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with a long mantissa, so that any change of operation order shows in the bits.
    fn awkward(i: usize) -> f32 {
        ((i as f32 * 0.618_034).fract() - 0.5) * (1.0 + (i % 7) as f32 * 0.37)
    }

    /// The blocked rows (heads of 64, 128 and 256) give the one-row tiled kernel's bits with every
    /// lane form, for a first micro-batch and for one that continues a cache (blocks straddling
    /// tile borders).
    #[test]
    fn blocked_rows_equal_single_rows() {
        for hd in [64, 128, 256] {
            for (n_past, t) in [(0, 150), (70, 67)] {
                let n_kv = n_past + t;
                let keys: Vec<f32> = (0..n_kv * hd).map(|i| awkward(3 * i + 1)).collect();
                let values: Vec<f32> = (0..n_kv * hd).map(|i| awkward(5 * i + 2)).collect();
                let queries: Vec<f32> = (0..t * hd).map(|i| 4.0 * awkward(7 * i)).collect();
                let scale = 1.0 / (hd as f32).sqrt();
                let tiles = transpose_key_tiles(&keys, hd);
                let mut out = vec![0.0f32; t * hd];
                let mut kernel = Attend {
                    queries: &queries,
                    keys: &keys,
                    values: &values,
                    hd,
                    n_past,
                    tiled: true,
                    scale,
                    window: None,
                    out: &mut out,
                };
                for (form, out) in crate::lanes::tests::each_form(&mut kernel, |a| a.out.to_vec()) {
                    for (i, q) in queries.chunks(hd).enumerate() {
                        let mut one = vec![0.0f32; hd];
                        attend_tiled(q, &tiles, &values, 0..n_past + i + 1, scale, &mut one);
                        let got = &out[i * hd..(i + 1) * hd];
                        assert!(
                            got.iter()
                                .zip(&one)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{form} lanes, hd {hd}, n_past {n_past}, row {i}"
                        );
                    }
                }
            }
        }
    }
}

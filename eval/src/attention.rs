//! Causal attention of one head, computed the way ggml's CPU flash attention computes it, so that
//! an f32 model's outputs equal llama.cpp's bit for bit. ggml has two kernels
//! (`ggml_compute_forward_flash_attn_ext_f16`): micro-batches of 64 or more query rows take the
//! tiled one ([`attend_tiled`]), smaller ones (short prompts, token-by-token decoding) the
//! one-row kernel with f16 queries and an f16 accumulator ([`attend_one_row_f16`]).

use half::f16;

use crate::fastmath::{fma_dispatched, ggml_expf};
use crate::float_gemm::reduce16;

/// Query rows per micro-batch from which ggml takes the tiled kernel (`GGML_FA_TILE_Q`).
pub const TILE_ROWS: usize = 64;
/// Keys per tile of the tiled kernel (`GGML_FA_TILE_KV`).
const KV_TILE: usize = 64;

fma_dispatched! {
    /// Attention of `queries` (`t` rows of `hd`, positions `n_past..n_past + t`) over `keys` and
    /// `values` (rows of `hd`, f16-rounded, positions `0..`), scaled by `scale`, into `out`
    /// (`t` rows of `hd`): ggml's tiled kernel if `n_rows` (the micro-batch's query rows over all
    /// sequences) reaches [`TILE_ROWS`], its one-row kernel otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
        hd: usize,
        n_past: usize,
        n_rows: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        if n_rows >= TILE_ROWS {
            let key_tiles = transpose_key_tiles(keys, hd);
            for (i, (q, o)) in queries.chunks(hd).zip(out.chunks_mut(hd)).enumerate() {
                attend_tiled(q, &key_tiles, values, n_past + i + 1, scale, o);
            }
        } else {
            for (i, (q, o)) in queries.chunks(hd).zip(out.chunks_mut(hd)).enumerate() {
                attend_one_row_f16(q, keys, values, n_past + i + 1, scale, o);
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
    n_visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = query.len();
    let (mut sum, mut max) = (0.0f32, f32::NEG_INFINITY);
    out.fill(0.0);
    for start in (0..n_visible).step_by(KV_TILE) {
        let visible = KV_TILE.min(n_visible - start);
        let tile = &key_tiles[start * hd..(start + KV_TILE) * hd];
        let mut p = [0.0f32; KV_TILE];
        for (&q, keys) in query.iter().zip(tile.chunks_exact(KV_TILE)) {
            for (s, &k) in p.iter_mut().zip(keys) {
                *s = k.mul_add(q, *s);
            }
        }
        p.iter_mut().for_each(|s| *s *= scale);
        p[visible..].fill(f32::NEG_INFINITY);
        let tile_max = p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let new_max = max.max(tile_max);
        if new_max > max {
            let ms = (max - new_max).exp();
            out.iter_mut().for_each(|v| *v *= ms);
            sum *= ms;
        }
        max = new_max;
        let mut tile_sum = 0.0f64;
        for group in p.chunks_exact_mut(16) {
            group.iter_mut().for_each(|v| *v = ggml_expf(*v - max));
            tile_sum += reduce16(group.try_into().expect("16 lanes")) as f64;
        }
        sum = (sum as f64 + tile_sum) as f32;
        for (j, &w) in p[..visible].iter().enumerate() {
            let v = &values[(start + j) * hd..(start + j + 1) * hd];
            out.iter_mut()
                .zip(v)
                .for_each(|(acc, &v)| *acc = v.mul_add(w, *acc));
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}

/// One query row through ggml's `flash_attn_ext_f16_one_chunk`: f16 query, online softmax, and
/// the value accumulator rounded to f16 after every update. For heads narrower than ggml's SIMD
/// step (64) the operation order is ggml's scalar one — products in f32 summed in f64, updates
/// fused as the `-march=native` build fuses them — so the rounding steps land where llama.cpp's do.
#[inline(always)]
fn attend_one_row_f16(
    query: &[f32],
    keys: &[f32],
    values: &[f32],
    n_visible: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = query.len();
    let q: Vec<f32> = query.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    let (mut sum, mut max) = (0.0f32, f32::NEG_INFINITY);
    out.fill(0.0);
    for j in 0..n_visible {
        let k = &keys[j * hd..(j + 1) * hd];
        let dot: f64 = k.iter().zip(&q).map(|(a, b)| (a * b) as f64).sum();
        let s = dot as f32 * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            ms = (max - s).exp();
            max = s;
            out.iter_mut()
                .for_each(|v| *v = f16::from_f32(*v * ms).to_f32());
        } else {
            vs = (s - max).exp();
        }
        for (acc, &v) in out.iter_mut().zip(&values[j * hd..(j + 1) * hd]) {
            *acc = f16::from_f32(v.mul_add(vs, *acc)).to_f32();
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().for_each(|v| *v *= inv);
}

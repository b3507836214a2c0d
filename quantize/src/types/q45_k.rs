//! Q4_K and Q5_K: super-blocks of 256 values in 8 groups of 32, each with a 6-bit scale and a 6-bit
//! min under the f16 super-block `d` and `dmin`; values are 4-bit (Q4_K) or 5-bit (Q5_K) levels.
//! The two types share their search and differ only in the level range and in Q5_K's extra mask of
//! fifth bits, so one parametrised implementation serves both.
//!
//! Layouts: Q4_K `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`;
//! Q5_K `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`.
//! Reproduces `quantize_row_q{4,5}_K_ref`, `quantize_row_q{4,5}_K_impl` and the dequantizers.

use super::lanes::qkx_groups;
use super::search::{
    dequantize_with_mins, f16_at, f16_bytes, make_qp_quants, nearest_int, pack_scale_min_k4,
    scale_min_k4, sum_squares, MinSearch, MinSearchParams,
};
use super::{for_each_block, QK_K};

/// Bits per value: 4 (Q4_K) or 5 (Q5_K).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KQuant {
    /// 4 or 5.
    pub bits: u32,
}

/// Q4_K.
pub const Q4_K: KQuant = KQuant { bits: 4 };
/// Q5_K.
pub const Q5_K: KQuant = KQuant { bits: 5 };

/// The scale/min search of all eight groups of a super-block at once; levels go to `l`.
fn search_groups(
    params: MinSearchParams,
    x: &[f32],
    weights: &[f32; QK_K],
    l: &mut [u8; QK_K],
) -> ([f32; 8], [f32; 8]) {
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    qkx_groups::<32>(params, x, weights, l, &mut scales, &mut mins);
    (scales, mins)
}

impl KQuant {
    /// Bytes per super-block.
    pub fn block_bytes(self) -> usize {
        4 + 12 + self.qh_bytes() + QK_K / 2
    }

    fn qh_bytes(self) -> usize {
        if self.bits == 5 {
            QK_K / 8
        } else {
            0
        }
    }

    fn nmax(self) -> i32 {
        (1 << self.bits) - 1
    }

    /// Encodes one row; `qw` (importance weights) selects the weighted search.
    pub fn quantize_row(self, x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
        for_each_block(x, y, qw, QK_K, self.block_bytes(), |xb, yb, qw| match qw {
            None => self.quantize_block_ref(xb, yb),
            Some(qw) => self.quantize_block_weighted(xb, yb, qw),
        });
    }

    fn quantize_block_ref(self, x: &[f32], y: &mut [u8]) {
        let mut l = [0u8; QK_K];
        let mut weights = [0f32; QK_K];
        let params = if self.bits == 4 {
            MinSearchParams {
                kind: MinSearch::Qkx2,
                nmax: 15,
                rmin: -1.0,
                rdelta: 0.1,
                nstep: 20,
                use_mad: false,
            }
        } else {
            MinSearchParams {
                kind: MinSearch::Qkx2,
                nmax: 31,
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: false,
            }
        };
        for j in 0..8 {
            let g = 32 * j..32 * j + 32;
            let av_x = (sum_squares(&x[g.clone()]) / 32.0).sqrt();
            for k in g {
                weights[k] = av_x + x[k].abs();
            }
        }
        let (scales, mins) = search_groups(params, x, &weights, &mut l);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..8 {
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
        for j in 0..8 {
            ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
        }
        pack_scale_min_k4(&ls, &lm, &mut y[4..16]);
        y[0..2].copy_from_slice(&f16_bytes(max_scale / 63.0));
        y[2..4].copy_from_slice(&f16_bytes(max_min / 63.0));
        self.requantize_and_pack(x, y, &mut l);
    }

    // Index loops kept as in ggml-quants.c, so the port reads line by line against it.
    #[allow(clippy::needless_range_loop)]
    fn quantize_block_weighted(self, x: &[f32], y: &mut [u8], qw: &[f32]) {
        let mut l = [0u8; QK_K];
        let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
        let mut weights = [0f32; QK_K];
        let mut sw = [0f32; 8];
        let params = MinSearchParams {
            kind: MinSearch::Qkx3,
            nmax: self.nmax(),
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
        for j in 0..8 {
            let g = 32 * j..32 * j + 32;
            for k in g.clone() {
                weights[k] = qw[k] * (sigma2 + x[k] * x[k]).sqrt();
            }
            sw[j] = weights[g].iter().fold(0f32, |s, w| s + w);
        }
        let (scales, mins) = search_groups(params, x, &weights, &mut l);
        let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
        let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
        if self.bits == 5 {
            // Only Q5_K's weighted path clamps again; make_qp_quants already keeps levels ≤ 63.
            for v in ls.iter_mut().chain(lm.iter_mut()) {
                *v = (*v).min(63);
            }
        }
        pack_scale_min_k4(&ls, &lm, &mut y[4..16]);
        y[0..2].copy_from_slice(&f16_bytes(d_block));
        y[2..4].copy_from_slice(&f16_bytes(m_block));
        self.requantize_and_pack(x, y, &mut l);
    }

    /// Recomputes the levels from the stored scales and mins, then packs them.
    fn requantize_and_pack(self, x: &[f32], y: &mut [u8], l: &mut [u8; QK_K]) {
        let d_all = f16_at(y, 0);
        let m_all = f16_at(y, 2);
        let nmax = self.nmax();
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &y[4..16]);
            let d = d_all * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = m_all * m as f32;
            for ii in 0..32 {
                let q = nearest_int((x[32 * j + ii] + dm) / d);
                l[32 * j + ii] = q.clamp(0, nmax) as u8;
            }
        }
        let (head, q) = y.split_at_mut(16 + self.qh_bytes());
        if self.bits == 4 {
            for (n, chunk) in (0..QK_K).step_by(64).zip(q.chunks_exact_mut(32)) {
                for i in 0..32 {
                    chunk[i] = l[n + i] | (l[n + i + 32] << 4);
                }
            }
        } else {
            let qh = &mut head[16..];
            qh.fill(0);
            let (mut m1, mut m2) = (1u8, 2u8);
            for (n, chunk) in (0..QK_K).step_by(64).zip(q.chunks_exact_mut(32)) {
                for i in 0..32 {
                    let mut l1 = l[n + i];
                    if l1 > 15 {
                        l1 -= 16;
                        qh[i] |= m1;
                    }
                    let mut l2 = l[n + i + 32];
                    if l2 > 15 {
                        l2 -= 16;
                        qh[i] |= m2;
                    }
                    chunk[i] = l1 | (l2 << 4);
                }
                m1 <<= 2;
                m2 <<= 2;
            }
        }
    }

    /// One super-block's levels (in value order), group scales and mins, `d` and `dmin`:
    /// value `i` is `d·scales[g]·levels[i] − dmin·mins[g]`, `g = i / 32`.
    pub fn unpack(self, yb: &[u8]) -> ([u8; QK_K], [u8; 8], [u8; 8], f32, f32) {
        let qh = &yb[16..16 + self.qh_bytes()];
        let ql = &yb[16 + self.qh_bytes()..];
        let mut levels = [0u8; QK_K];
        for (g, out) in levels.chunks_exact_mut(64).enumerate() {
            let q = &ql[32 * g..32 * g + 32];
            let (u1, u2) = (1u8 << (2 * g), 2u8 << (2 * g));
            let high = |l: usize, bit: u8| {
                if self.bits == 5 && qh[l] & bit != 0 {
                    16
                } else {
                    0
                }
            };
            for l in 0..32 {
                out[l] = (q[l] & 0xF) + high(l, u1);
                out[32 + l] = (q[l] >> 4) + high(l, u2);
            }
        }
        let pairs: [(u8, u8); 8] = std::array::from_fn(|g| scale_min_k4(g, &yb[4..16]));
        (
            levels,
            pairs.map(|(sc, _)| sc),
            pairs.map(|(_, m)| m),
            f16_at(yb, 0),
            f16_at(yb, 2),
        )
    }

    /// Decodes super-blocks back to f32.
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) {
        for (yb, out) in src
            .chunks_exact(self.block_bytes())
            .zip(dst.chunks_exact_mut(QK_K))
        {
            let (levels, scales, mins, d, dmin) = self.unpack(yb);
            dequantize_with_mins(out, &levels, &scales, &mins, d, dmin);
        }
    }
}

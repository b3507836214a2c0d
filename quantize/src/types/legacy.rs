//! The legacy 32-value block types Q4_0, Q4_1, Q5_0 and Q5_1 (`quantize_row_q{4,5}_{0,1}_ref` and
//! their importance-weighted `_impl` twins in ggml-quants.c). They differ only in the number of
//! bits (4: nibbles; 5: nibbles plus a 32-bit mask of fifth bits) and in symmetric (`_0`: scale
//! only) versus asymmetric (`_1`: scale and min), so one parametrised implementation serves all four.
//!
//! Block layouts (little-endian):
//! - Q4_0: `d: f16, qs: [u8; 16]`; Q5_0: `d: f16, qh: [u8; 4], qs: [u8; 16]`
//! - Q4_1: `d: f16, m: f16, qs: [u8; 16]`; Q5_1: `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`

use super::search::{
    f16_at, f16_bytes, make_qkx_quants, make_qx_quants, sum_squares, MinSearch, MinSearchParams,
};

/// Values per block.
pub const BLOCK: usize = 32;

/// One of the four legacy types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Legacy {
    /// Bits per value: 4 or 5.
    pub bits: u32,
    /// `_1` types store a min next to the scale.
    pub with_min: bool,
}

/// Q4_0.
pub const Q4_0: Legacy = Legacy {
    bits: 4,
    with_min: false,
};
/// Q4_1.
pub const Q4_1: Legacy = Legacy {
    bits: 4,
    with_min: true,
};
/// Q5_0.
pub const Q5_0: Legacy = Legacy {
    bits: 5,
    with_min: false,
};
/// Q5_1.
pub const Q5_1: Legacy = Legacy {
    bits: 5,
    with_min: true,
};

impl Legacy {
    fn header(self) -> usize {
        if self.with_min {
            4
        } else {
            2
        }
    }

    fn qh_bytes(self) -> usize {
        if self.bits == 5 {
            4
        } else {
            0
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.header() + self.qh_bytes() + BLOCK / 2
    }

    /// Highest level (15 or 31).
    fn top(self) -> i32 {
        (1 << self.bits) - 1
    }

    /// Writes the 32 levels of a block (0..=top) as nibbles plus, for 5 bits, the fifth-bit mask.
    fn pack(self, levels: &[u8], y: &mut [u8]) {
        let at = self.header();
        let mut qh = 0u32;
        for j in 0..BLOCK / 2 {
            let (a, b) = (levels[j], levels[j + BLOCK / 2]);
            y[at + self.qh_bytes() + j] = (a & 0x0F) | ((b & 0x0F) << 4);
            qh |= ((a as u32 & 0x10) >> 4) << j;
            qh |= ((b as u32 & 0x10) >> 4) << (j + BLOCK / 2);
        }
        if self.bits == 5 {
            y[at..at + 4].copy_from_slice(&qh.to_le_bytes());
        }
    }

    /// The level of value `j` of block `y` (0..=15 or 0..=31).
    pub fn level(self, y: &[u8], j: usize) -> i32 {
        let qs = &y[self.header() + self.qh_bytes()..];
        let nib = if j < BLOCK / 2 {
            qs[j] & 0x0F
        } else {
            qs[j - BLOCK / 2] >> 4
        } as i32;
        if self.bits == 5 {
            let qh = u32::from_le_bytes(y[self.header()..self.header() + 4].try_into().unwrap());
            nib | ((((qh >> j) & 1) << 4) as i32)
        } else {
            nib
        }
    }

    /// Encodes one row; `qw` (the row's importance weights) selects llama.cpp's weighted search.
    pub fn quantize_row(self, x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
        match qw {
            None => self.quantize_ref(x, y),
            Some(qw) => self.quantize_weighted(x, y, qw),
        }
    }

    fn quantize_ref(self, x: &[f32], y: &mut [u8]) {
        let top = self.top();
        let mut levels = [0u8; BLOCK];
        for (xb, yb) in x
            .chunks_exact(BLOCK)
            .zip(y.chunks_exact_mut(self.block_bytes()))
        {
            if self.with_min {
                let (mut min, mut max) = (f32::MAX, -f32::MAX);
                for &v in xb {
                    if v < min {
                        min = v;
                    }
                    if v > max {
                        max = v;
                    }
                }
                let d = (max - min) / top as f32;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                yb[..2].copy_from_slice(&f16_bytes(d));
                yb[2..4].copy_from_slice(&f16_bytes(min));
                for (q, &v) in levels.iter_mut().zip(xb) {
                    let t = (v - min) * id + 0.5;
                    // Q4_1 clamps with MIN(15, (int8_t)t); Q5_1 casts straight to uint8_t.
                    *q = if self.bits == 4 {
                        (t as i32 as i8).min(15) as u8
                    } else {
                        t as i32 as u8
                    };
                }
            } else {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in xb {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let half = (1 << (self.bits - 1)) as f32;
                let d = max / -half;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                yb[..2].copy_from_slice(&f16_bytes(d));
                for (q, &v) in levels.iter_mut().zip(xb) {
                    *q = ((v * id + (half + 0.5)) as i32 as i8).min(top as i8) as u8;
                }
            }
            self.pack(&levels, yb);
        }
    }

    fn quantize_weighted(self, x: &[f32], y: &mut [u8], qw: &[f32]) {
        let sigma2 = sum_squares(x) / x.len() as f32;
        let mut weight = [0f32; BLOCK];
        let mut levels = [0u8; BLOCK];
        let mut laux = [0u8; BLOCK];
        for ((xb, wb), yb) in x
            .chunks_exact(BLOCK)
            .zip(qw.chunks_exact(BLOCK))
            .zip(y.chunks_exact_mut(self.block_bytes()))
        {
            for j in 0..BLOCK {
                weight[j] = wb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
            if self.with_min {
                let params = MinSearchParams {
                    kind: MinSearch::Qkx3,
                    nmax: self.top(),
                    rmin: -0.9,
                    rdelta: 0.05,
                    nstep: 36,
                    use_mad: false,
                };
                let (d, the_min) =
                    make_qkx_quants(params, xb, Some(&weight), &mut levels, &mut laux);
                yb[..2].copy_from_slice(&f16_bytes(d));
                yb[2..4].copy_from_slice(&f16_bytes(-the_min));
            } else {
                let mut l = [0i8; BLOCK];
                let nmax = 1 << (self.bits - 1);
                let d = make_qx_quants(nmax, xb, &mut l, 1, Some(&weight));
                yb[..2].copy_from_slice(&f16_bytes(d));
                for (q, v) in levels.iter_mut().zip(l) {
                    *q = v as u8;
                }
            }
            self.pack(&levels, yb);
        }
    }

    /// Decodes blocks back to f32.
    pub fn dequantize(self, src: &[u8], dst: &mut [f32]) {
        let offset = 1 << (self.bits - 1);
        for (yb, xb) in src
            .chunks_exact(self.block_bytes())
            .zip(dst.chunks_exact_mut(BLOCK))
        {
            let d = f16_at(yb, 0);
            if self.with_min {
                let m = f16_at(yb, 2);
                for (j, v) in xb.iter_mut().enumerate() {
                    *v = self.level(yb, j) as f32 * d + m;
                }
            } else {
                for (j, v) in xb.iter_mut().enumerate() {
                    *v = (self.level(yb, j) - offset) as f32 * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<f32> {
        (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) * 0.01)
            .collect()
    }

    #[test]
    fn symmetric_types_map_the_extreme_to_the_lowest_level() {
        for ty in [Q4_0, Q5_0] {
            let x = ramp();
            let mut y = vec![0u8; 2 * ty.block_bytes()];
            ty.quantize_row(&x, &mut y, None);
            // The value of largest magnitude (+0.33 at index 18 of block 0) gets level 0: d = max/−half.
            let i = (0..32)
                .max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
                .unwrap();
            assert_eq!(ty.level(&y, i), 0, "{ty:?}");
        }
    }
}

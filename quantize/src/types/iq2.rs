//! Encoders for IQ2_XXS, IQ2_XS and IQ2_S (`quantize_row_iq2_xxs_impl`, `…_xs_impl`, `…_s_impl`
//! in ggml-quants.c): groups of 8 magnitudes are points of a 256/512/1024-entry codebook (levels
//! 0–2, stored as `2l+1`), signs apart, one 4-bit scale per 32 (XXS) or 16 (XS, S) values under an
//! f16 super-block scale. XXS and XS keep 7 sign bits per group (an even count of negatives) and
//! need importance weights; S stores all 8 and works without.
//!
//! Layouts (per 256 values): IQ2_XXS `d: f16, qs: [u32; 16]` (per 32: four point bytes, then 4×7
//! sign bits and the scale in the top nibble); IQ2_XS `d: f16, qs: [u16; 32]` (9-bit point, 7 sign
//! bits), `scales: [u8; 8]`; IQ2_S `d: f16, qs: [u8; 32], signs: [u8; 32], qh: [u8; 8],
//! scales: [u8; 8]`.

use super::iq_codebook;
use super::iq_lattice::block_bytes;
use super::iq_scan::{
    c_max, importance, max_of, scale_nibble, sigma2, signs8, sqrt_into, Refine, Scan,
};
use super::search::{f16_bytes, make_qp_quants, GROUP_MAX_EPS};
use super::{for_each_block, QK_K};

/// IQ2_S's all-zero threshold.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// Encodes one IQ2_XXS row (importance weights required).
pub fn quantize_row_xxs(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for_each_block(x, y, Some(qw), QK_K, block_bytes::IQ2_XXS, |xbl, y, qw| {
        xxs_super_block(xbl, y, qw.unwrap())
    });
}

fn xxs_super_block(xbl: &[f32], y: &mut [u8], qw: &[f32]) {
    let scan = Scan {
        book: iq_codebook::iq2_xxs(),
        kmax: 3,
        steps: 6,
        step: 0.1,
        refine: Refine::Always,
        start_on_grid: true,
    };
    y.fill(0);
    let mut q2 = [0u32; 16];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let sigma2 = sigma2(xbl, 1.0);
    let (mut weight, mut waux, mut xval) = ([0f32; 32], [0f32; 32], [0f32; 32]);
    let mut l = [0i8; 32];
    for ib in 0..8 {
        let xb = &xbl[32 * ib..32 * ib + 32];
        importance(xb, &qw[32 * ib..], sigma2, &mut weight);
        sqrt_into(&weight, &mut waux);
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = signs8(&xb[r.clone()], &weight[r.clone()], &mut xval[r], true);
        }
        let max = max_of(&xval);
        if max < GROUP_MAX_EPS {
            continue;
        }
        let mut lq = [0u8; 32];
        let scale = make_qp_quants(4, &xval, &mut lq, &weight);
        let eff_max = scale * 3.0;
        if eff_max <= 0.0 {
            continue;
        }
        let mut scale = scan.run(&xval, &weight, &waux, eff_max, scale, &mut l);
        if scale < 0.0 {
            scale = -scale;
            signs.iter_mut().for_each(|s| *s = !*s & 127);
        }
        for k in 0..4 {
            q2[2 * ib] |= (scan.point(&l, k) as u32) << (8 * k);
            q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = c_max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&f16_bytes(d));
    let id = 1.0 / d;
    for ib in 0..8 {
        q2[2 * ib + 1] |= (scale_nibble(id, scales[ib], 15) as u32) << 28;
    }
    for (o, q) in y[2..].chunks_exact_mut(4).zip(q2) {
        o.copy_from_slice(&q.to_le_bytes());
    }
}

/// Encodes one IQ2_XS row (importance weights required).
pub fn quantize_row_xs(x: &[f32], y: &mut [u8], qw: &[f32]) {
    for_each_block(x, y, Some(qw), QK_K, block_bytes::IQ2_XS, |xbl, y, qw| {
        sixteens(xbl, y, qw, Kind::Xs)
    });
}

/// Encodes one IQ2_S row.
pub fn quantize_row_s(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, block_bytes::IQ2_S, |xbl, y, qw| {
        sixteens(xbl, y, qw, Kind::S)
    });
}

/// The two types with a scale per 16 values.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Xs,
    S,
}

/// One IQ2_XS or IQ2_S super-block.
fn sixteens(xbl: &[f32], y: &mut [u8], qw: Option<&[f32]>, kind: Kind) {
    let scan = Scan {
        book: match kind {
            Kind::Xs => iq_codebook::iq2_xs(),
            Kind::S => iq_codebook::iq2_s(),
        },
        kmax: 3,
        steps: 9,
        step: 0.1,
        refine: Refine::OffGrid,
        start_on_grid: true,
    };
    y.fill(0);
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let sigma2 = sigma2(xbl, if kind == Kind::Xs { 1.0 } else { 2.0 });
    let (mut weight, mut waux, mut xval) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut xs_points = [0u16; 32];
    for ib in 0..16 {
        let xb = &xbl[16 * ib..16 * ib + 16];
        match qw {
            Some(qw) => importance(xb, &qw[16 * ib..], sigma2, &mut weight),
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = 0.25 * sigma2 + v * v;
                }
            }
        }
        sqrt_into(&weight, &mut waux);
        let mut signs = [0u8; 2];
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            signs[k] = signs8(
                &xb[r.clone()],
                &weight[r.clone()],
                &mut xval[r],
                kind == Kind::Xs,
            );
        }
        let max = max_of(&xval);
        let eps = if kind == Kind::Xs {
            GROUP_MAX_EPS
        } else {
            GROUP_MAX_EPS_IQ2_S
        };
        if max < eps {
            continue;
        }
        let mut l = [0i8; 16];
        let mut scale = scan.run(&xval, &weight, &waux, max, max / 5.0, &mut l);
        if scale < 0.0 {
            scale = -scale;
            let mask = if kind == Kind::Xs { 127 } else { 255 };
            signs.iter_mut().for_each(|s| *s = !*s & mask);
        }
        for k in 0..2 {
            let point = scan.point(&l, k);
            let i8 = 2 * ib + k;
            match kind {
                Kind::Xs => xs_points[i8] = point as u16 | (signs[k] as u16) << 9,
                Kind::S => {
                    y[2 + i8] = point as u8;
                    y[66 + i8 / 4] |= ((point >> 8) << (2 * (i8 % 4))) as u8;
                    y[34 + i8] = signs[k];
                }
            }
        }
        scales[ib] = scale;
        max_scale = c_max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return; // IQ2_XS leaves its points zero, IQ2_S keeps them
    }
    let d = max_scale / 31.0;
    let (fudge, at) = match kind {
        Kind::Xs => (1.0, 66),
        Kind::S => (0.9875, 74),
    };
    y[..2].copy_from_slice(&f16_bytes(d * fudge));
    let id = 1.0 / d;
    for ib in 0..16 {
        y[at + ib / 2] |= scale_nibble(id, scales[ib], 15) << (4 * (ib % 2));
    }
    if kind == Kind::Xs {
        for (o, q) in y[2..66].chunks_exact_mut(2).zip(xs_points) {
            o.copy_from_slice(&q.to_le_bytes());
        }
    }
}

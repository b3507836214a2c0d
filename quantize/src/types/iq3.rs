//! Encoders for IQ3_XXS and IQ3_S (`quantize_row_iq3_xxs_impl` with its 256-point grid and
//! `quantize_row_iq3_s_impl` in ggml-quants.c): groups of 4 magnitudes are points of a 256- or
//! 512-entry codebook (levels 0–7, stored as `2l+1`), signs apart, one 4-bit scale per 32 values
//! under an f16 super-block scale. IQ3_XXS keeps 7 sign bits per 8 values (an even count of
//! negatives); IQ3_S stores all 8 and a ninth point bit. Without importance weights both weight
//! each value by `x²`.
//!
//! Layouts (per 256 values): IQ3_XXS `d: f16, qs: [u8; 64], scales_and_signs: [u32; 8]` (4×7 sign
//! bits, scale in the top nibble); IQ3_S `d: f16, qs: [u8; 64], qh: [u8; 8], signs: [u8; 32],
//! scales: [u8; 4]`.

use super::iq_codebook;
use super::iq_lattice::block_bytes;
use super::iq_scan::{
    c_max, importance, max_of, scale_nibble, sigma2, signs8, sqrt_into, Refine, Scan,
};
use super::search::f16_bytes;
use super::{for_each_block, QK_K};

/// IQ3_XXS's all-zero threshold (IQ3_S only skips exact zeros).
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// The two IQ3 types.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Xxs,
    S,
}

/// Encodes one IQ3_XXS row.
pub fn quantize_row_xxs(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, block_bytes::IQ3_XXS, |xbl, y, qw| {
        super_block(xbl, y, qw, Kind::Xxs)
    });
}

/// Encodes one IQ3_S row.
pub fn quantize_row_s(x: &[f32], y: &mut [u8], qw: Option<&[f32]>) {
    for_each_block(x, y, qw, QK_K, block_bytes::IQ3_S, |xbl, y, qw| {
        super_block(xbl, y, qw, Kind::S)
    });
}

fn super_block(xbl: &[f32], y: &mut [u8], qw: Option<&[f32]>, kind: Kind) {
    let scan = match kind {
        Kind::Xxs => Scan {
            book: iq_codebook::iq3_xxs(),
            kmax: 8,
            steps: 15,
            step: 0.2,
            refine: Refine::OffGrid,
            start_on_grid: true,
        },
        Kind::S => Scan {
            book: iq_codebook::iq3_s(),
            kmax: 8,
            steps: 9,
            step: 0.2,
            refine: Refine::AllIfOffGrid,
            start_on_grid: false,
        },
    };
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let sigma2 = sigma2(xbl, 2.0);
    let (mut weight, mut waux, mut xval) = ([0f32; 32], [0f32; 32], [0f32; 32]);
    // IQ3_S writes points and signs through pointers that an all-zero block does not advance
    // (ggml's `continue` skips the increments), so later blocks land in earlier slots while their
    // high point bits and scales stay in place. IQ3_XXS indexes by block.
    let mut slot = 0;
    for ib in 0..8 {
        let xb = &xbl[32 * ib..32 * ib + 32];
        match qw {
            Some(qw) => importance(xb, &qw[32 * ib..], sigma2, &mut weight),
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        sqrt_into(&weight, &mut waux);
        let mut signs = [0u8; 4];
        for k in 0..4 {
            let r = 8 * k..8 * k + 8;
            signs[k] = signs8(
                &xb[r.clone()],
                &weight[r.clone()],
                &mut xval[r],
                kind == Kind::Xxs,
            );
        }
        let max = max_of(&xval);
        let empty = match kind {
            Kind::Xxs => max < GROUP_MAX_EPS_IQ3_XXS,
            Kind::S => max == 0.0,
        };
        if empty {
            continue;
        }
        let mut l = [0i8; 32];
        let mut scale = scan.run(&xval, &weight, &waux, max, max / 15.0, &mut l);
        if scale < 0.0 {
            scale = -scale;
            let mask = if kind == Kind::Xxs { 127 } else { 255 };
            signs.iter_mut().for_each(|s| *s = !*s & mask);
        }
        let at = if kind == Kind::S { slot } else { ib };
        slot += 1;
        for k in 0..8 {
            let point = scan.point(&l, k);
            y[2 + 8 * at + k] = point as u8;
            if kind == Kind::S {
                y[66 + ib] |= ((point >> 8) << k) as u8;
            }
        }
        match kind {
            Kind::Xxs => {
                let packed = signs[0] as u32
                    | (signs[1] as u32) << 7
                    | (signs[2] as u32) << 14
                    | (signs[3] as u32) << 21;
                y[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&packed.to_le_bytes());
            }
            Kind::S => y[74 + 4 * at..78 + 4 * at].copy_from_slice(&signs),
        }
        scales[ib] = scale;
        max_scale = c_max(max_scale, scale);
    }
    if max_scale == 0.0 {
        if kind == Kind::Xxs {
            y.fill(0); // IQ3_S keeps its points and signs
        }
        return;
    }
    let d = max_scale / 31.0;
    let id = 1.0 / d;
    match kind {
        Kind::Xxs => {
            y[..2].copy_from_slice(&f16_bytes(d * 1.0125));
            for ib in 0..8 {
                y[69 + 4 * ib] |= scale_nibble(id, scales[ib], 15) << 4;
            }
        }
        Kind::S => {
            y[..2].copy_from_slice(&f16_bytes(d * 1.033));
            for ib in (0..8).step_by(2) {
                y[106 + ib / 2] =
                    scale_nibble(id, scales[ib], 15) | scale_nibble(id, scales[ib + 1], 15) << 4;
            }
        }
    }
}

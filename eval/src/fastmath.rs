//! Vectorizable elementwise math. A Cephes `exp` for softmax-shaped work (log-softmax over the
//! vocabulary; libm's `expf` is a function call per element and took most of a small model's
//! pass), ggml's own `exp` polynomial and SwiGLU where llama.cpp's bits must be reproduced, and
//! the row loops are [`dispatched`]: compiled for AVX-512 and AVX2+FMA too.

use crate::lanes::dispatched;

dispatched! {
    /// `v = e^v` for every element (inputs below −87.3 give ≈ 0, as they underflow anyway).
    pub fn exp_in_place(values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = exp1(*v);
        }
    }
}

#[inline(always)]
fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12582912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.336_55, 88.722_83);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// ggml's `ggml_v_expf` (AVX-512 form) for one lane: ARM's optimized-routines polynomial, within
/// 1.5 ulp, reproduced operation for operation (fused where ggml fuses) so that SwiGLU matches
/// llama.cpp's bits.
#[inline(always)]
pub fn ggml_expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let round = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), round);
    let n = z - round;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    // _mm512_scalef_ps(j, n): j · 2ⁿ rounded once (exact in f64, then one rounding to f32).
    let scaled =
        (j as f64 * f64::from_bits(((n.clamp(-1000.0, 1000.0) as i64 + 1023) as u64) << 52)) as f32;
    if n.abs() > 192.0 {
        if n <= 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    } else {
        scaled
    }
}

dispatched! {
    /// ggml's `ggml_vec_swiglu_f32` on one row: `gate = silu(gate) · up`, where the row's whole
    /// groups of 16 take `x / (1 + ggml_expf(−x))` and the rest libm's `expf`, as on AVX-512.
    pub fn swiglu_row(gate: &mut [f32], up: &[f32]) {
        let whole = gate.len() - gate.len() % 16;
        let (vector, tail) = gate.split_at_mut(whole);
        for (g, u) in vector.iter_mut().zip(up) {
            *g = *g / (1.0 + ggml_expf(0.0 - *g)) * u;
        }
        for (g, u) in tail.iter_mut().zip(&up[whole..]) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }
}

/// ggml's `ggml_vec_geglu_f32` on one row, as the CPU backend builds it (`GGML_GELU_FP16`):
/// `gate = gelu(gate) · up`, where gelu comes from a table over every f16 input (the gate rounded
/// to f16), 0 at or below −10 and the identity at or above 10.
pub fn geglu_row(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    #[cfg(target_arch = "x86_64")]
    if crate::lanes::cpu() == crate::lanes::Cpu::Avx512 {
        let whole = gate.len() - gate.len() % 16;
        // SAFETY: the CPU has AVX-512F; `whole` ≤ both lengths.
        unsafe { x86::geglu_avx512(&mut gate[..whole], &up[..whole], table) };
        return geglu_scalar(&mut gate[whole..], &up[whole..], table);
    }
    geglu_scalar(gate, up, table)
}

/// [`geglu_row`] an element at a time.
fn geglu_scalar(gate: &mut [f32], up: &[f32], table: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            table[half::f16::from_f32(x).to_bits() as usize] * u
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::geglu_scalar`] 16 elements at a time (`gate.len()` a multiple of 16): the gate
    /// rounded to f16 by `vcvtps2ph` (to nearest, as `half` rounds), the table gathered, the
    /// same three cases by mask (the software f16 conversion per element was 4 % of a Gemma 3
    /// pass).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn geglu_avx512(gate: &mut [f32], up: &[f32], table: &[f32]) {
        assert_eq!(table.len(), 1 << 16);
        for (g, u) in gate.chunks_exact_mut(16).zip(up.chunks_exact(16)) {
            let x = _mm512_loadu_ps(g.as_ptr());
            let u = _mm512_loadu_ps(u.as_ptr());
            let half = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let gelu = _mm512_i32gather_ps::<4>(_mm512_cvtepu16_epi32(half), table.as_ptr());
            let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_set1_ps(-10.0));
            let high = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(10.0));
            let y = _mm512_mul_ps(_mm512_mask_blend_ps(high, gelu, x), u);
            _mm512_storeu_ps(g.as_mut_ptr(), _mm512_maskz_mov_ps(!low, y));
        }
    }
}

/// `ggml_table_gelu_f16` (as f32): for each f16 value, `ggml_gelu_f32` of it rounded to f16. The
/// tanh approximation is evaluated as the native build compiles it, the `1 + a·x·x` fused.
fn gelu_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const GELU_COEF_A: f32 = 0.044715;
        #[allow(clippy::excessive_precision)]
        const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_355_879_892_119_868_76;
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
                let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh());
                half::f16::from_f32(y).to_f32()
            })
            .collect()
    })
}

/// Elements handled per stack buffer by the row helpers.
const STRIDE: usize = 256;

/// `Σ e^(v − shift)` over `row`, each term rounded to f32 and summed in f64 in order (how
/// llama-perplexity's `log_softmax` sums).
pub fn sum_exp_shifted(row: &[f32], shift: f32) -> f64 {
    sums_exp_shifted([row], [shift])[0]
}

/// [`sum_exp_shifted`] of `R` rows of equal length at once: each row's sum still takes its terms
/// in order, but the rows' adds interleave, so they overlap instead of each waiting for the one
/// before it (one row's sum over a 50,000-token vocabulary is bound by the adder's latency).
pub fn sums_exp_shifted<const R: usize>(rows: [&[f32]; R], shifts: [f32; R]) -> [f64; R] {
    let mut buf = [[0.0f32; STRIDE]; R];
    let mut sums = [0.0f64; R];
    let n = rows[0].len();
    for start in (0..n).step_by(STRIDE) {
        let len = STRIDE.min(n - start);
        for ((b, row), shift) in buf.iter_mut().zip(rows).zip(shifts) {
            let b = &mut b[..len];
            b.iter_mut()
                .zip(&row[start..start + len])
                .for_each(|(d, &v)| *d = v - shift);
            exp_in_place(b);
        }
        add_in_order(&buf, len, &mut sums);
    }
    sums
}

/// `sums[r] += buf[r][i]` (in f64) for `i` in `0..len`, in order.
#[inline(always)]
fn add_in_order<const R: usize>(buf: &[[f32; STRIDE]; R], len: usize, sums: &mut [f64; R]) {
    for i in 0..len {
        for (sum, b) in sums.iter_mut().zip(buf) {
            *sum += b[i] as f64;
        }
    }
}

dispatched! {
    /// The largest value of a non-empty `row` (NaNs ignored), in lanes.
    pub fn row_max(row: &[f32]) -> f32 {
        let mut lanes = [row[0]; 16];
        let mut groups = row.chunks_exact(lanes.len());
        for group in &mut groups {
            lanes.iter_mut().zip(group).for_each(|(m, &v)| *m = m.max(v));
        }
        let rest = groups.remainder().iter().fold(row[0], |m, &v| m.max(v));
        lanes.iter().fold(rest, |m, &v| m.max(v))
    }
}

/// Calls `f(i, e^(xᵢ))` for every element of the values `x(i)` over `0..n`, computed a stack
/// buffer at a time.
pub fn for_each_exp(n: usize, x: impl Fn(usize) -> f32, mut f: impl FnMut(usize, f32)) {
    let mut buf = [0.0f32; STRIDE];
    let mut start = 0;
    while start < n {
        let len = STRIDE.min(n - start);
        let b = &mut buf[..len];
        b.iter_mut()
            .enumerate()
            .for_each(|(i, d)| *d = x(start + i));
        exp_in_place(b);
        b.iter().enumerate().for_each(|(i, &e)| f(start + i, e));
        start += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geglu_rows_match_the_scalar_form_bit_for_bit() {
        // A sweep over the table's range and past it, f16 rounding ties (1 + 2⁻¹¹ lies halfway
        // between two f16 values), the ±10 edges, subnormal f16 inputs and signed zeros.
        let mut gate: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.0061).collect();
        gate.extend([
            -10.0,
            -9.999,
            10.0,
            9.999,
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
        ]);
        gate.extend([1e-6, -3e-8, 0.0, -0.0, 6e-5, -20.0, 300.0, 70000.0]);
        gate.extend([0.25, 0.5, 0.75]); // a tail shorter than 16
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 - (i % 7) as f32 * 0.3)
            .collect();
        let mut vector = gate.clone();
        geglu_row(&mut vector, &up);
        let mut scalar = gate;
        geglu_scalar(&mut scalar, &up, gelu_table());
        assert!(vector
            .iter()
            .zip(&scalar)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn matches_libm_to_a_few_ulp_over_the_softmax_range() {
        let mut xs: Vec<f32> = (0..200_000).map(|i| -87.0 + i as f32 * 0.00047).collect();
        xs.extend([0.0, -0.0, 1.0, 10.0, 88.0]);
        let expected: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        exp_in_place(&mut xs);
        for (got, want) in xs.iter().zip(&expected) {
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-6, "{got} vs {want}");
        }
        for &x in &[
            -150.0f32, -100.0, -87.0, -10.0, -1e-3, 0.0, 0.5, 3.0, 80.0, 88.0,
        ] {
            let rel = ((ggml_expf(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            assert!(
                rel < 2e-7 || x < -87.0,
                "ggml_expf({x}) = {} vs {}",
                ggml_expf(x),
                (x as f64).exp()
            );
        }
        let mut tiny = [-100.0f32, -1000.0, f32::NEG_INFINITY];
        exp_in_place(&mut tiny);
        assert!(tiny.iter().all(|v| *v < 1e-37));
    }
}

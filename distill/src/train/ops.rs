//! The block operations' kernels for training, with hand-written backward passes, one sequence at
//! a time (the block itself is `arch::graph::block`; `graph.rs` records these on a tape).
//! Every `*_backward` is checked against central finite differences in the tests below.
//!
//! Why by hand: the model is a fixed stack of eight operations; candle-core or burn would bring
//! 100+ crates and minutes of build time for an autodiff the tests can pin down in a page, and
//! plain loops over one sequence keep training deterministic for any thread count (threads only
//! split a batch into sequences, whose gradients are summed in order).

use arch::{Hparams, RopeMode};
use eval::linear::{multiply, multiply_transposed};

/// `y = x · wᵀ` for `x` of `rows × cols_in` and `w` of `cols_out × cols_in`.
pub fn linear(x: &[f32], w: &[f32], rows: usize, cols_in: usize, cols_out: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * cols_out];
    multiply_transposed(&mut y, x, w, rows, cols_in, cols_out);
    y
}

/// Row-major transpose of a `rows × cols` matrix.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// Backward of [`linear`]: returns dx and adds dw (when given).
pub fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    dw: Option<&mut [f32]>,
    shape: (usize, usize, usize),
) -> Vec<f32> {
    let (rows, cols_in, cols_out) = shape;
    let mut dx = vec![0.0f32; rows * cols_in];
    multiply(&mut dx, dy, w, rows, cols_out, cols_in);
    if let Some(dw) = dw {
        let mut g = vec![0.0f32; cols_out * cols_in];
        multiply(
            &mut g,
            &transpose(dy, rows, cols_out),
            x,
            cols_out,
            rows,
            cols_in,
        );
        dw.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
    dx
}

/// RMSNorm of each row of `x` times `w`; returns the output and each row's 1/rms.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut y = vec![0.0f32; x.len()];
    let mut inv = Vec::with_capacity(x.len() / d);
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = (row.iter().map(|&v| (v * v) as f64).sum::<f64>() / d as f64) as f32;
        let s = 1.0 / (mean + eps).sqrt();
        inv.push(s);
        for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
            *o = v * s * g;
        }
    }
    (y, inv)
}

/// Backward of [`rms_norm`]: returns dx and adds dw (when given).
pub fn rms_norm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    inv: &[f32],
    mut dw: Option<&mut [f32]>,
) -> Vec<f32> {
    let d = w.len();
    let mut dx = vec![0.0f32; x.len()];
    for (r, ((g, row), out)) in dy
        .chunks(d)
        .zip(x.chunks(d))
        .zip(dx.chunks_mut(d))
        .enumerate()
    {
        let s = inv[r];
        if let Some(dw) = dw.as_deref_mut() {
            for ((a, &gi), &xi) in dw.iter_mut().zip(g).zip(row) {
                *a += gi * xi * s;
            }
        }
        let dot: f32 = g
            .iter()
            .zip(w)
            .zip(row)
            .map(|((&gi, &wi), &xi)| gi * wi * xi)
            .sum();
        let k = s * s * s * dot / d as f32;
        for (((o, &gi), &wi), &xi) in out.iter_mut().zip(g).zip(w).zip(row) {
            *o = s * gi * wi - k * xi;
        }
    }
    dx
}

/// What a model's RoPE does: how many dimensions of a head rotate, how they pair, the base, the
/// linear scaling and the per-pair frequency divisors (Llama 3's `rope_freqs`).
#[derive(Debug, Clone, Copy)]
pub struct RopeSpec<'a> {
    /// Rotated dimensions of each head.
    pub dims: usize,
    /// Base frequency.
    pub base: f32,
    /// Pairing.
    pub mode: RopeMode,
    /// Factor on every angle.
    pub freq_scale: f32,
    /// Divisors per pair.
    pub factors: Option<&'a [f32]>,
}

impl RopeSpec<'_> {
    /// The RoPE of the global blocks of a model of `h` with `factors`, or of its `local` ones.
    pub fn of<'a>(h: &Hparams, factors: Option<&'a [f32]>, local: bool) -> RopeSpec<'a> {
        let (base, freq_scale) = h.rope_of(local);
        RopeSpec {
            dims: h.rope_dims,
            base,
            mode: h.arch.rope_mode,
            freq_scale,
            factors,
        }
    }
}

/// RoPE angles: `(cos, sin)` per position and pair, as eval's forward pass computes them.
pub struct Rope {
    table: Vec<Vec<(f32, f32)>>,
    mode: RopeMode,
}

impl Rope {
    /// Angles for `n_pos` positions.
    pub fn new(n_pos: usize, spec: RopeSpec) -> Rope {
        let scale = spec.base.powf(-2.0 / spec.dims as f32);
        let table = (0..n_pos)
            .map(|p| {
                let mut theta = p as f32;
                (0..spec.dims / 2)
                    .map(|i| {
                        let ff = spec.factors.map_or(1.0, |f| f[i]);
                        let angle = spec.freq_scale * (theta / ff);
                        theta *= scale;
                        (angle.cos(), angle.sin())
                    })
                    .collect()
            })
            .collect();
        Rope {
            table,
            mode: spec.mode,
        }
    }

    /// Rotates the pairs of every head (width `hd`) of rows of `width`; `sign` −1 rotates back,
    /// which is the backward pass.
    pub fn apply(&self, x: &mut [f32], width: usize, hd: usize, sign: f32) {
        for (p, row) in x.chunks_mut(width).enumerate() {
            let half = self.table[p].len();
            for head in row.chunks_mut(hd) {
                for (i, &(c, s)) in self.table[p].iter().enumerate() {
                    let s = sign * s;
                    let (a, b) = match self.mode {
                        RopeMode::Normal => (2 * i, 2 * i + 1),
                        RopeMode::Neox => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        }
    }
}

/// Shapes of causal grouped-query attention over one sequence.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Positions.
    pub t: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a head.
    pub hd: usize,
}

impl Heads {
    fn kv_of(&self, head: usize) -> usize {
        head / (self.n_head / self.n_head_kv)
    }
}

/// Which keys the query at position `i` sees: all earlier ones, or the last `window`.
fn seen(i: usize, window: Option<usize>) -> std::ops::RangeInclusive<usize> {
    arch::graph::first_visible(i, window)..=i
}

/// Attention weights below this (before normalization; the largest is 1) are set to exactly 0:
/// even thousands of them add less than an ulp to the row's sum, and trained models put most of
/// a long context's weights there. Left in, their products ran into subnormal floats, each a
/// microcode assist.
const NEGLIGIBLE: f32 = 1e-28;

/// `x = e^(x − max)` over a non-empty row of scores, `max` their largest (weights under
/// [`NEGLIGIBLE`] made 0); returns their sum, added in order. The exponentials are eval's
/// vectorized ones: libm's `expf`, a call per score, took 40 % of a distillation step at 512
/// positions.
fn softmax_terms(row: &mut [f32]) -> f32 {
    let max = eval::fastmath::row_max(row);
    row.iter_mut().for_each(|x| *x -= max);
    eval::fastmath::exp_in_place(row);
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        if *x < NEGLIGIBLE {
            *x = 0.0;
        }
        sum += *x;
    }
    sum
}

/// Causal softmax attention with scores scaled by `scale` (within a sliding `window`, if any):
/// returns the output (`t × n_head·hd`) and the attention weights (`n_head × t × t`) the
/// backward pass needs.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    h: Heads,
    scale: f32,
    window: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let (t, hd) = (h.t, h.hd);
    let (qw, kw) = (h.n_head * hd, h.n_head_kv * hd);
    let mut out = vec![0.0f32; t * qw];
    let mut probs = vec![0.0f32; h.n_head * t * t];
    for head in 0..h.n_head {
        let kv = h.kv_of(head);
        for i in 0..t {
            let qi = &q[i * qw + head * hd..][..hd];
            let p = &mut probs[(head * t + i) * t..][..t];
            for j in seen(i, window) {
                let kj = &k[j * kw + kv * hd..][..hd];
                p[j] = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            let p_seen = &mut p[seen(i, window)];
            let sum = softmax_terms(p_seen);
            let o = &mut out[i * qw + head * hd..][..hd];
            for j in seen(i, window) {
                p[j] /= sum;
                let vj = &v[j * kw + kv * hd..][..hd];
                o.iter_mut().zip(vj).for_each(|(a, b)| *a += p[j] * b);
            }
        }
    }
    (out, probs)
}

/// Backward of [`attention`] (same `scale` and `window`): returns (dq, dk, dv).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    h: Heads,
    scale: f32,
    window: Option<usize>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, hd) = (h.t, h.hd);
    let (qw, kw) = (h.n_head * hd, h.n_head_kv * hd);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0f32; q.len()],
        vec![0.0f32; k.len()],
        vec![0.0f32; v.len()],
    );
    let mut dp = vec![0.0f32; t];
    for head in 0..h.n_head {
        let kv = h.kv_of(head);
        for i in 0..t {
            let p = &probs[(head * t + i) * t..][..t];
            let doi = &dout[i * qw + head * hd..][..hd];
            for j in seen(i, window) {
                let vj = &v[j * kw + kv * hd..][..hd];
                dp[j] = doi.iter().zip(vj).map(|(a, b)| a * b).sum();
                let dvj = &mut dv[j * kw + kv * hd..][..hd];
                dvj.iter_mut().zip(doi).for_each(|(a, b)| *a += p[j] * b);
            }
            let dot: f32 = seen(i, window).map(|j| p[j] * dp[j]).sum();
            let qi = &q[i * qw + head * hd..][..hd];
            for j in seen(i, window) {
                let ds = p[j] * (dp[j] - dot) * scale;
                let kj = &k[j * kw + kv * hd..][..hd];
                let dqi = &mut dq[i * qw + head * hd..][..hd];
                dqi.iter_mut().zip(kj).for_each(|(a, b)| *a += ds * b);
                let dkj = &mut dk[j * kw + kv * hd..][..hd];
                dkj.iter_mut().zip(qi).for_each(|(a, b)| *a += ds * b);
            }
        }
    }
    (dq, dk, dv)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// SwiGLU: `silu(gate) · up`.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| g * sigmoid(g) * u)
        .collect()
}

/// Backward of [`swiglu`]: returns (dgate, dup).
pub fn swiglu_backward(dy: &[f32], gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = Vec::with_capacity(gate.len());
    let mut du = Vec::with_capacity(gate.len());
    for ((&d, &g), &u) in dy.iter().zip(gate).zip(up) {
        let s = sigmoid(g);
        dg.push(d * u * s * (1.0 + g * (1.0 - s)));
        du.push(d * g * s);
    }
    (dg, du)
}

/// GELU, tanh approximation, and its derivative at `x`.
fn gelu_tanh(x: f32) -> (f32, f32) {
    const A: f32 = 0.044715;
    const C: f32 = 0.797_884_6;
    let k = C * (x + A * x * x * x);
    let th = k.tanh();
    let dk = C * (1.0 + 3.0 * A * x * x);
    (
        0.5 * x * (1.0 + th),
        0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dk,
    )
}

/// GeGLU: `gelu(gate) · up` (tanh approximation).
pub fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| gelu_tanh(g).0 * u)
        .collect()
}

/// Backward of [`geglu`]: returns (dgate, dup).
pub fn geglu_backward(dy: &[f32], gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = Vec::with_capacity(gate.len());
    let mut du = Vec::with_capacity(gate.len());
    for ((&d, &g), &u) in dy.iter().zip(gate).zip(up) {
        let (y, dy_dg) = gelu_tanh(g);
        dg.push(d * u * dy_dg);
        du.push(d * y);
    }
    (dg, du)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Checks an analytic gradient `grad` of `f` at `x` against central differences along a
    /// random direction v: ⟨∇f, v⟩ ≈ (f(x + hv) − f(x − hv)) / 2h, with Richardson's
    /// extrapolation over h and h/2 cancelling the h² error (f32 allows no tiny h); relative
    /// error at most 1e-3.
    pub fn check_direction(f: &dyn Fn(&[f32]) -> f64, x: &[f32], grad: &[f32], seed: u64) {
        check_direction_within(f, x, grad, seed, (1e-3, 1e-3));
    }

    /// [`check_direction`] with error at most `tolerance` relative to the larger of the two
    /// directional derivatives and `floor` (below which errors count as absolute).
    pub fn check_direction_within(
        f: &dyn Fn(&[f32]) -> f64,
        x: &[f32],
        grad: &[f32],
        seed: u64,
        (tolerance, floor): (f64, f64),
    ) {
        let v = noise(x.len(), seed);
        let central = |h: f32| {
            let shifted = |sign: f32| -> Vec<f32> {
                x.iter().zip(&v).map(|(a, b)| a + sign * h * b).collect()
            };
            (f(&shifted(1.0)) - f(&shifted(-1.0))) / (2.0 * h as f64)
        };
        let numeric = (4.0 * central(5e-3) - central(1e-2)) / 3.0;
        let analytic: f64 = grad.iter().zip(&v).map(|(a, b)| (a * b) as f64).sum();
        let err = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(floor);
        assert!(err < tolerance, "numeric {numeric} vs analytic {analytic}");
    }

    /// A fixed random projection of an output to a scalar, so every output element matters.
    fn project(y: &[f32], seed: u64) -> (f64, Vec<f32>) {
        let r = noise(y.len(), seed);
        (y.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum(), r)
    }

    #[test]
    fn linear_gradients() {
        let (rows, ci, co) = (3, 5, 4);
        let (x, w) = (noise(rows * ci, 1), noise(co * ci, 2));
        let (_, dy) = project(&linear(&x, &w, rows, ci, co), 3);
        let mut dw = vec![0.0; w.len()];
        let dx = linear_backward(&dy, &x, &w, Some(&mut dw), (rows, ci, co));
        check_direction(&|x| project(&linear(x, &w, rows, ci, co), 3).0, &x, &dx, 4);
        check_direction(&|w| project(&linear(&x, w, rows, ci, co), 3).0, &w, &dw, 5);
    }

    #[test]
    fn rms_norm_gradients() {
        let (x, w) = (noise(12, 1), noise(4, 2));
        let (y, inv) = rms_norm(&x, &w, 1e-5);
        let (_, dy) = project(&y, 3);
        let mut dw = vec![0.0; 4];
        let dx = rms_norm_backward(&dy, &x, &w, &inv, Some(&mut dw));
        check_direction(&|x| project(&rms_norm(x, &w, 1e-5).0, 3).0, &x, &dx, 4);
        check_direction(&|w| project(&rms_norm(&x, w, 1e-5).0, 3).0, &w, &dw, 5);
    }

    #[test]
    fn rope_gradient_is_the_inverse_rotation() {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let factors = [1.0, 2.5];
            let spec = RopeSpec {
                dims: 4,
                base: 10_000.0,
                mode,
                freq_scale: 0.5,
                factors: Some(&factors),
            };
            let rope = Rope::new(3, spec);
            let x = noise(3 * 8, 1);
            let f = |x: &[f32]| {
                let mut y = x.to_vec();
                rope.apply(&mut y, 8, 4, 1.0);
                project(&y, 2).0
            };
            let (_, mut dx) = project(&x, 2);
            rope.apply(&mut dx, 8, 4, -1.0);
            check_direction(&f, &x, &dx, 3);
        }
    }

    #[test]
    fn attention_gradients() {
        let h = Heads {
            t: 4,
            n_head: 4,
            n_head_kv: 2,
            hd: 3,
        };
        let (q, k, v) = (noise(4 * 12, 1), noise(4 * 6, 2), noise(4 * 6, 3));
        // Plain causal attention, and with a sliding window of 2 and another scale (Gemma).
        for (scale, window) in [(1.0 / 3f32.sqrt(), None), (0.7, Some(2))] {
            let att = |q: &[f32], k: &[f32], v: &[f32]| attention(q, k, v, h, scale, window);
            let (out, probs) = att(&q, &k, &v);
            let (_, dout) = project(&out, 4);
            let (dq, dk, dv) = attention_backward(&dout, &q, &k, &v, &probs, h, scale, window);
            check_direction(&|q| project(&att(q, &k, &v).0, 4).0, &q, &dq, 5);
            check_direction(&|k| project(&att(&q, k, &v).0, 4).0, &k, &dk, 6);
            check_direction(&|v| project(&att(&q, &k, v).0, 4).0, &v, &dv, 7);
        }
    }

    #[test]
    fn geglu_gradients() {
        let (g, u) = (noise(10, 1), noise(10, 2));
        let (_, dy) = project(&geglu(&g, &u), 3);
        let (dg, du) = geglu_backward(&dy, &g, &u);
        check_direction(&|g| project(&geglu(g, &u), 3).0, &g, &dg, 4);
        check_direction(&|u| project(&geglu(&g, u), 3).0, &u, &du, 5);
    }

    #[test]
    fn swiglu_gradients() {
        let (g, u) = (noise(10, 1), noise(10, 2));
        let (_, dy) = project(&swiglu(&g, &u), 3);
        let (dg, du) = swiglu_backward(&dy, &g, &u);
        check_direction(&|g| project(&swiglu(g, &u), 3).0, &g, &dg, 4);
        check_direction(&|u| project(&swiglu(&g, u), 3).0, &u, &du, 5);
    }
}

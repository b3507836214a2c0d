//! Matrix products against weights kept in their file encoding, with the activations in the form
//! ggml's CPU backend converts them to for that weight type (see [`ActivationForm`]):
//! - F32 and F16 weights are multiplied straight from the file in llama.cpp's own summation order
//!   ([`crate::float_gemm`]);
//! - k-quant weights (Q2_K … Q6_K), on CPUs with AVX512-VNNI, in integers against Q8_K activations
//!   as llama.cpp does ([`crate::kquant_gemm`]: 64 products per instruction, four times an f32
//!   FMA's rate; on the Q4_K_M benchmark its products take 2.6× less CPU time than decoding to
//!   f32 for faer's GEMM did);
//! - the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) in integers against
//!   Q8_0/Q8_1 activations, in llama.cpp's order ([`crate::legacy_gemm`]);
//! - everything else is decoded block by block into f32 and multiplied with faer's GEMM (equal to
//!   llama.cpp's up to summation order).

use std::borrow::Cow;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use quantize::activation::ActivationForm;
use rayon::prelude::*;

use crate::float_gemm::{self, FloatWeight};
use crate::kquant_gemm::{self, Q8kRows};
use crate::legacy_gemm::{self, Q8Rows};
use crate::model::{Model, Weight};
use formats::gguf::GgmlType;

/// Sees the input of every matrix product before it is rounded (importance matrices, pruning
/// statistics) and, optionally, each block's residual stream before and after it.
pub trait Observer {
    /// `x` holds `n_rows` rows of `weight.cols` activations that are about to be multiplied
    /// with `weight`.
    fn matmul_input(&mut self, weight: &Weight, x: &[f32], n_rows: usize);

    /// The input of a block's stacked expert products (llama.cpp's `mul_mat_id`; the matrices'
    /// own products do not call [`Observer::matmul_input`]).
    fn experts_input(&mut self, _input: &ExpertInput) {}

    /// Block `layer`'s routing in a forward call: row `r`'s experts with their weights
    /// (`routes[r]`, most probable first) and the L2 norm of each one's weighted output
    /// (`contributions[r][slot]`: what the mixture would lose without that expert).
    fn routing(
        &mut self,
        _layer: usize,
        _routes: &[Vec<(usize, f32)>],
        _contributions: &[Vec<f64>],
    ) {
    }

    /// Whether [`Observer::block_io`] is wanted (the pass copies the residual stream for it).
    fn wants_block_io(&self) -> bool {
        false
    }

    /// Block `layer` turned the residual stream `input` into `output` (rows of `n_embd`).
    fn block_io(&mut self, _layer: usize, _input: &[f32], _output: &[f32], _n_embd: usize) {}
}

/// What the experts of one stacked tensor were given in a forward call.
pub struct ExpertInput<'a> {
    /// The stacked tensor's name (`blk.0.ffn_up_exps.weight`).
    pub name: &'a str,
    /// Experts in the tensor.
    pub n_expert: usize,
    /// Width of one input row.
    pub cols: usize,
    /// Row `r`'s experts, most probable first, with their weights.
    pub routes: &'a [Vec<(usize, f32)>],
    /// The inputs: one row per token shared by its experts (gate and up projections), or with
    /// `per_slot` one row per token and slot, its input to that expert (down projections).
    pub x: &'a [f32],
    /// Whether `x` has a row per token and slot.
    pub per_slot: bool,
}

impl ExpertInput<'_> {
    /// The input row of token `r` to its `slot`-th expert.
    pub fn row(&self, r: usize, slot: usize) -> &[f32] {
        let i = match self.per_slot {
            true => r * self.routes[r].len() + slot,
            false => r,
        };
        &self.x[i * self.cols..(i + 1) * self.cols]
    }
}

/// `x` (`n_rows` × `weight.cols`, row-major) times `weightᵀ`: `n_rows` × `weight.rows`.
pub fn linear(
    model: &Model,
    weight: &Weight,
    x: &[f32],
    n_rows: usize,
    observer: &mut Option<&mut dyn Observer>,
) -> Vec<f32> {
    let [out] = linears(model, [weight], x, n_rows, observer);
    out
}

/// [`linear`] into `out`, reusing its memory: a large product repeated with the same shape
/// (the output layer, once per sequence) then costs no fresh pages to fault in.
pub fn linear_into(
    model: &Model,
    weight: &Weight,
    x: &[f32],
    n_rows: usize,
    observer: &mut Option<&mut dyn Observer>,
    out: &mut Vec<f32>,
) {
    out.resize(n_rows * weight.rows, 0.0);
    Products::new(model, x, n_rows).compute(weight, observer, out);
}

/// [`linear`] for several weights that read the same input (a block's query/key/value or
/// gate/up projections): the input is rounded once per activation form, not once per weight.
pub fn linears<const N: usize>(
    model: &Model,
    weights: [&Weight; N],
    x: &[f32],
    n_rows: usize,
    observer: &mut Option<&mut dyn Observer>,
) -> [Vec<f32>; N] {
    linears_with(model, weights, x, n_rows, observer, |len| vec![0.0; len])
}

/// [`linears`] into buffers from `buffer(len)`, which returns `len` values of any contents
/// (every one is overwritten): a forward pass hands back buffers it has finished with.
pub(crate) fn linears_with<const N: usize>(
    model: &Model,
    weights: [&Weight; N],
    x: &[f32],
    n_rows: usize,
    observer: &mut Option<&mut dyn Observer>,
    mut buffer: impl FnMut(usize) -> Vec<f32>,
) -> [Vec<f32>; N] {
    let mut products = Products::new(model, x, n_rows);
    weights.map(|weight| {
        let mut out = buffer(n_rows * weight.rows);
        products.compute(weight, observer, &mut out);
        out
    })
}

/// Products of one input with weights in turn, each form of the input made once.
struct Products<'a> {
    model: &'a Model,
    x: &'a [f32],
    n_rows: usize,
    rounded: Vec<(ActivationForm, Vec<f32>)>,
    q8k: Option<Q8kRows>,
    q8: Option<Q8Rows>,
}

impl<'a> Products<'a> {
    fn new(model: &'a Model, x: &'a [f32], n_rows: usize) -> Products<'a> {
        Products {
            model,
            x,
            n_rows,
            rounded: Vec::new(),
            q8k: None,
            q8: None,
        }
    }

    /// `x` times `weight`ᵀ into `out` (every element written).
    fn compute(
        &mut self,
        weight: &Weight,
        observer: &mut Option<&mut dyn Observer>,
        out: &mut [f32],
    ) {
        let (model, x, n_rows) = (self.model, self.x, self.n_rows);
        debug_assert_eq!(x.len(), n_rows * weight.cols);
        if let Some(obs) = observer.as_deref_mut().filter(|_| weight.expert.is_none()) {
            obs.matmul_input(weight, x, n_rows);
        }
        if kquant_gemm::applies(weight.ty, weight.rows, weight.cols, n_rows) {
            let x = self.q8k.get_or_insert_with(|| Q8kRows::new(x, n_rows));
            return kquant_gemm::product(weight.ty, model.bytes(weight), x, weight.rows, out);
        }
        if legacy_gemm::applies(weight.ty) {
            let x = self.q8.get_or_insert_with(|| Q8Rows::new(x, n_rows));
            return legacy_gemm::product(weight.ty, model.bytes(weight), x, weight.rows, out);
        }
        let form = ActivationForm::for_weight(weight.ty);
        let x: &[f32] = match form {
            ActivationForm::F32 => x,
            _ => {
                let at = match self.rounded.iter().position(|(f, _)| *f == form) {
                    Some(at) => at,
                    None => {
                        let mut copy = x.to_vec();
                        copy.par_chunks_mut(weight.cols)
                            .for_each(|row| form.round(row));
                        self.rounded.push((form, copy));
                        self.rounded.len() - 1
                    }
                };
                &self.rounded[at].1
            }
        };
        product(model, weight, x, n_rows, out)
    }
}

/// `x`, already rounded to `weight`'s activation form, times `weightᵀ` into `out`.
fn product(model: &Model, weight: &Weight, x: &[f32], n_rows: usize, out: &mut [f32]) {
    let (k, m) = (weight.cols, weight.rows);
    // An expert's matrix is multiplied by `mul_mat_id`, which never takes tinyBLAS's tiles.
    let tiles = weight.expert.is_none();
    match weight.ty {
        GgmlType::F32 => {
            let w = as_words::<f32>(model.bytes(weight));
            float_gemm::product(FloatWeight::F32(&w), x, n_rows, k, m, tiles, out)
        }
        GgmlType::F16 => {
            let w = as_words::<u16>(model.bytes(weight));
            float_gemm::product(FloatWeight::F16(&w), x, n_rows, k, m, tiles, out)
        }
        GgmlType::BF16 => {
            let w = as_words::<u16>(model.bytes(weight));
            float_gemm::product(FloatWeight::BF16(&w), x, n_rows, k, m, tiles, out)
        }
        _ => quantized_product(model, weight, x, n_rows, out),
    }
}

/// A float tensor's bytes as its elements: borrowed straight from the file (GGUF aligns tensor
/// data), copied only if a file breaks that alignment.
fn as_words<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    bytemuck::try_cast_slice(bytes)
        .map(Cow::Borrowed)
        .unwrap_or_else(|_| Cow::Owned(bytemuck::pod_collect_to_vec(bytes)))
}

/// Weight rows per parallel task of a quantized product: a multiple of faer's 96-row f32
/// micro-kernel, so that tasks do not end in its slower 32-row edge kernel (128 spent a quarter
/// of every product there).
const GEMM_BLOCK: usize = 192;

/// `x` times a quantized `weight`ᵀ: each task decodes [`GEMM_BLOCK`] weight rows into a small
/// buffer (hot in cache, never the whole matrix) and multiplies them with faer into its own
/// columns of the output. Each product runs on one thread, so every output element is summed
/// the same way whatever the number of threads: results do not depend on `-t`.
fn quantized_product(model: &Model, weight: &Weight, x: &[f32], n_rows: usize, out: &mut [f32]) {
    let (k, m) = (weight.cols, weight.rows);
    let bytes = model.bytes(weight);
    let row_bytes = bytes.len() / m;
    let lhs = MatRef::from_row_major_slice(x, n_rows, k);
    MatMut::from_row_major_slice_mut(out, n_rows, m)
        .par_col_chunks_mut(GEMM_BLOCK)
        .zip(bytes.par_chunks(row_bytes * GEMM_BLOCK))
        .for_each(|(dst, src)| {
            let mut rows = vec![0.0f32; dst.ncols() * k];
            quantize::dequantize(weight.ty, src, &mut rows)
                .expect("types checked when the model was opened");
            let rhs = MatRef::from_row_major_slice(&rows, dst.ncols(), k).transpose();
            gemm(dst, lhs, rhs);
        });
}

/// `out` (`m` × `n`) = `a` (`m` × `k`) · `b`ᵀ where `b` is `n` × `k`, all row-major, on the
/// calling thread (callers parallelize over independent products).
pub fn multiply_transposed(out: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(b, n, k).transpose();
    gemm(dst, lhs, rhs);
}

/// `out` (`m` × `n`) = `a` (`m` × `k`) · `b` (`k` × `n`), all row-major, on the calling thread.
pub fn multiply(out: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(b, k, n);
    gemm(dst, lhs, rhs);
}

/// `dst = lhs · rhs` with faer on the calling thread, then `vzeroupper`: faer's AVX-512 kernels
/// return with the vector registers' upper halves dirty, and on this Xeon every later call into
/// libm (`expf`, `exp`, `tanhf`) from code compiled for plain x86-64 then stalled about 140 ns
/// instead of 4 (the state change between legacy-SSE and VEX code); the distillation trainer,
/// whose products are all faer's, spent most of its time there.
fn gemm(dst: MatMut<'_, f32>, lhs: MatRef<'_, f32>, rhs: MatRef<'_, f32>) {
    matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, Par::Seq);
    crate::lanes::clean_upper_state();
}

/// Decodes row `row` of `weight` (an embedding lookup).
pub fn decode_row(model: &Model, weight: &Weight, row: usize, out: &mut [f32]) {
    let bytes = model.bytes(weight);
    let row_bytes = bytes.len() / weight.rows;
    quantize::dequantize(
        weight.ty,
        &bytes[row * row_bytes..(row + 1) * row_bytes],
        out,
    )
    .expect("types checked when the model was opened");
}

//! The Llama-family forward pass over a batch of sequences: RMSNorm, RoPE, causal grouped-query
//! attention over a key/value cache, SwiGLU. Keys and values are kept rounded to f16, as in
//! llama.cpp's default cache, so that scores match llama-perplexity's.

use quantize::activation::ActivationForm;
use rayon::prelude::*;

use crate::attention;
use crate::fastmath;
use crate::lanes::dispatched;
use crate::linear::{decode_row, linear_into, linears_with, Observer};
use crate::scratch::Scratch;
use arch::graph::{Activation, Graph, HeadsOf};
use arch::{Role, RopeMode};

use crate::model::Model;

/// Keys and values of the positions one sequence has seen, per layer (f16-rounded f32,
/// `n_past` rows of `n_head_kv · head_dim`).
#[derive(Default, Clone)]
struct SequenceCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    n_past: usize,
}

/// A model with one key/value cache per sequence; each [`Session::forward`] call appends the
/// same number of tokens to every sequence.
pub struct Session<'m> {
    model: &'m Model,
    caches: Vec<SequenceCache>,
    /// RoPE angles of the global blocks and (sliding-window families) of the local ones.
    ropes: [RopeTable; 2],
    /// Whether keys and values are kept for later calls; a single-pass session drops each
    /// layer's as soon as its attention is done.
    keep_cache: bool,
    /// Buffers finished operations hand to later ones.
    scratch: Scratch,
}

impl<'m> Session<'m> {
    /// A session for `n_seq` independent sequences, all empty, evaluated as llama.cpp would with a
    /// context of `n_ctx` positions per sequence (which picks LongRoPE's factors).
    pub fn new(model: &'m Model, n_seq: usize, n_ctx: usize) -> Session<'m> {
        let empty = SequenceCache {
            keys: vec![Vec::new(); model.hparams.n_layer],
            values: vec![Vec::new(); model.hparams.n_layer],
            n_past: 0,
        };
        Session {
            model,
            caches: vec![empty; n_seq],
            ropes: [false, true].map(|local| RopeTable::new(model, local, n_ctx)),
            keep_cache: true,
            scratch: Scratch::default(),
        }
    }

    /// A session for one [`Session::forward`] call over whole sequences (perplexity's chunks):
    /// the same results as [`Session::new`], without holding every layer's keys and values
    /// (151 MB for four 512-token sequences of a 768-wide, 12-layer model) until the call ends.
    pub fn single_pass(model: &'m Model, n_seq: usize, n_ctx: usize) -> Session<'m> {
        Session {
            keep_cache: false,
            ..Session::new(model, n_seq, n_ctx)
        }
    }

    /// Positions already in the caches.
    pub fn n_past(&self) -> usize {
        self.caches.first().map_or(0, |c| c.n_past)
    }

    /// Appends `tokens[s]` to sequence `s` (all the same length `t`) and returns the logits of
    /// the new positions `first_output..t` of every sequence, sequence after sequence
    /// (`n_seq · (t − first_output)` rows of `n_vocab`).
    pub fn forward(
        &mut self,
        tokens: &[&[u32]],
        first_output: usize,
        observer: Option<&mut dyn Observer>,
    ) -> Vec<f32> {
        let mut all = Vec::new();
        self.forward_each(tokens, first_output, observer, |_, logits| {
            all.extend_from_slice(logits)
        });
        all
    }

    /// [`Session::forward`], handing sequence `s`'s logits to `on_logits(s, rows)` in turn
    /// instead of returning them all: the output layer runs one sequence at a time, so only one
    /// sequence's logits are in memory at once (33 MB instead of 131 MB for four 256-row halves
    /// and a 32000-token vocabulary — memory the kernel would otherwise have to fault in).
    pub fn forward_each(
        &mut self,
        tokens: &[&[u32]],
        first_output: usize,
        observer: Option<&mut dyn Observer>,
        on_logits: impl FnMut(usize, &[f32]),
    ) {
        let t = self.check_tokens(tokens);
        let x = self.embed(tokens);
        self.run_layers(x, 0, t, first_output, observer, None, on_logits);
    }

    /// [`Session::forward_each`] that also keeps the hidden state at the input of every block
    /// and after the last one (`n_layer + 1` states): a later [`Session::forward_from`] with
    /// one of them gives the same logits without running the blocks before it again.
    pub fn forward_recording(
        &mut self,
        tokens: &[&[u32]],
        first_output: usize,
        states: &mut Vec<Vec<f32>>,
        on_logits: impl FnMut(usize, &[f32]),
    ) {
        let t = self.check_tokens(tokens);
        let x = self.embed(tokens);
        self.run_layers(x, 0, t, first_output, None, Some(states), on_logits);
    }

    /// Runs a fresh session from block `layer` on, given the hidden state `x` a
    /// [`Session::forward_recording`] kept at that block's input (`layer == n_layer`: only the
    /// output layer), for sequences of `t` tokens.
    pub fn forward_from(
        &mut self,
        layer: usize,
        x: Vec<f32>,
        t: usize,
        first_output: usize,
        on_logits: impl FnMut(usize, &[f32]),
    ) {
        assert_eq!(self.n_past(), 0, "resuming needs a fresh session");
        assert_eq!(x.len(), t * self.caches.len() * self.model.hparams.n_embd);
        self.run_layers(x, layer, t, first_output, None, None, on_logits);
    }

    /// Checks the token lists of a call; returns their common length.
    fn check_tokens(&self, tokens: &[&[u32]]) -> usize {
        assert_eq!(
            tokens.len(),
            self.caches.len(),
            "one token list per sequence"
        );
        let t = tokens[0].len();
        assert!(
            tokens.iter().all(|s| s.len() == t),
            "sequences of equal length"
        );
        t
    }

    /// The embedded tokens of every sequence, sequence after sequence.
    fn embed(&self, tokens: &[&[u32]]) -> Vec<f32> {
        let model = self.model;
        let h = &model.hparams;
        let n_rows: usize = tokens.iter().map(|s| s.len()).sum();
        let mut x = vec![0.0f32; n_rows * h.n_embd];
        let embedding_scale = arch::graph::embedding_scale(h);
        x.par_chunks_mut(h.n_embd)
            .zip(tokens.concat().into_par_iter())
            .for_each(|(row, tok)| {
                decode_row(model, &model.token_embd, tok as usize, row);
                if let Some(s) = embedding_scale {
                    row.iter_mut().for_each(|v| *v *= s);
                }
            });
        x
    }

    /// Blocks `from..n_layer` on `x` (sequences of `t` new tokens), then the output layer;
    /// `record` receives the state at each block's input and after the last.
    #[allow(clippy::too_many_arguments)]
    fn run_layers(
        &mut self,
        mut x: Vec<f32>,
        from: usize,
        t: usize,
        first_output: usize,
        mut observer: Option<&mut dyn Observer>,
        mut record: Option<&mut Vec<Vec<f32>>>,
        mut on_logits: impl FnMut(usize, &[f32]),
    ) {
        let model = self.model;
        let h = &model.hparams;
        let n_seq = self.caches.len();
        let n_past = self.n_past();
        assert!(
            self.keep_cache || n_past == 0,
            "a single-pass session takes one forward call"
        );
        let local = h.swa_layers.iter().any(|&l| l);
        for (rope, used) in self.ropes.iter_mut().zip([true, local]) {
            if used {
                rope.extend(n_past + t);
            }
        }

        for il in from..h.n_layer {
            if let Some(states) = record.as_mut() {
                states.push(x.clone());
            }
            let block_input = observer
                .as_ref()
                .filter(|o| o.wants_block_io())
                .map(|_| x.clone());
            let mut graph = EvalGraph {
                session: self,
                observer: &mut observer,
                t,
                n_past,
            };
            x = arch::graph::block(&mut graph, h, il, x);
            if let (Some(o), Some(input)) = (observer.as_mut(), block_input) {
                o.block_io(il, &input, &x, h.n_embd);
            }
        }
        if let Some(states) = record.as_mut() {
            states.push(x.clone());
        }
        for cache in &mut self.caches {
            cache.n_past += t;
        }

        let kept: Vec<f32> = x
            .chunks(h.n_embd)
            .enumerate()
            .filter(|(r, _)| r % t >= first_output)
            .flat_map(|(_, row)| row.iter().copied())
            .collect();
        let rows_out = t - first_output;
        let per_seq = rows_out * h.n_embd;
        let mut logits = Vec::new();
        for s in 0..n_seq {
            let kept = &kept[s * per_seq..(s + 1) * per_seq];
            let normed = rms_norm(kept, &model.output_norm, h.rms_eps);
            linear_into(
                model,
                &model.output,
                &normed,
                rows_out,
                &mut observer,
                &mut logits,
            );
            if h.final_logit_softcap != 0.0 {
                softcap(&mut logits, h.final_logit_softcap);
            }
            on_logits(s, &logits);
        }
    }
}

/// One forward call's view of a session for [`arch::graph::block`]: each operation on llama.cpp's
/// exact kernels, attention over the sequences' key/value caches.
struct EvalGraph<'a, 'm, 'o> {
    session: &'a mut Session<'m>,
    observer: &'a mut Option<&'o mut dyn Observer>,
    /// Positions this call appends to every sequence.
    t: usize,
    /// Positions already cached.
    n_past: usize,
}

impl EvalGraph<'_, '_, '_> {
    fn rows(&self) -> usize {
        self.t * self.session.caches.len()
    }
}

impl Graph for EvalGraph<'_, '_, '_> {
    type Act = Vec<f32>;

    fn norm(&mut self, x: &Vec<f32>, role: Role, layer: usize) -> Vec<f32> {
        let model = self.session.model;
        let mut out = self.session.scratch.take(x.len());
        rms_norm_into(
            x,
            model.vector(role, layer),
            model.hparams.rms_eps,
            &mut out,
        );
        out
    }

    fn linears<const N: usize>(
        &mut self,
        x: &Vec<f32>,
        roles: [Role; N],
        layer: usize,
    ) -> [Vec<f32>; N] {
        let model = self.session.model;
        let weights = roles.map(|r| model.weight(r, layer));
        let n_rows = self.rows();
        let scratch = &mut self.session.scratch;
        linears_with(model, weights, x, n_rows, self.observer, |len| {
            scratch.take(len)
        })
    }

    fn add_bias(&mut self, mut x: Vec<f32>, role: Role, layer: usize) -> Vec<f32> {
        add_bias(&mut x, self.session.model.vector(role, layer));
        x
    }

    fn head_norm(&mut self, x: Vec<f32>, role: Role, layer: usize) -> Vec<f32> {
        let out = self.norm(&x, role, layer);
        self.session.scratch.give(x);
        out
    }

    fn rope(&mut self, mut x: Vec<f32>, heads: HeadsOf, layer: usize) -> Vec<f32> {
        let h = &self.session.model.hparams;
        let n = match heads {
            HeadsOf::Query => h.n_head,
            HeadsOf::Key => h.n_head_kv,
        };
        let rope = &self.session.ropes[h.swa_layers[layer] as usize];
        rope.apply(&mut x, n * h.head_dim, h.head_dim, self.t, self.n_past);
        x
    }

    /// Rounds keys and values to f16 as llama.cpp's cache stores them, appends them to the
    /// caches and attends each head (`n_rows` × `n_head · head_dim` out).
    fn attention(
        &mut self,
        q: Vec<f32>,
        mut k: Vec<f32>,
        mut v: Vec<f32>,
        scale: f32,
        il: usize,
    ) -> Vec<f32> {
        let (t, n_past, n_rows) = (self.t, self.n_past, self.rows());
        let session = &mut *self.session;
        let h = &session.model.hparams;
        let n_seq = session.caches.len();
        let hd = h.head_dim;
        let q_width = h.n_head * hd;
        let kv_width = h.n_head_kv * hd;
        round_f16(&mut k);
        round_f16(&mut v);
        if session.keep_cache {
            for (s, cache) in session.caches.iter_mut().enumerate() {
                cache.keys[il].extend_from_slice(&k[s * t * kv_width..(s + 1) * t * kv_width]);
                cache.values[il].extend_from_slice(&v[s * t * kv_width..(s + 1) * t * kv_width]);
            }
        }
        let n_kv = n_past + t;
        // Sequence s's keys and values of all n_kv positions: the cache, or (single pass,
        // n_past = 0) this call's own.
        let seen = |s: usize| -> (&[f32], &[f32]) {
            if session.keep_cache {
                (&session.caches[s].keys[il], &session.caches[s].values[il])
            } else {
                let rows = s * t * kv_width..(s + 1) * t * kv_width;
                (&k[rows.clone()], &v[rows])
            }
        };
        let group = h.n_head / h.n_head_kv;
        // A window as long as every query's history masks nothing: the unwindowed kernels.
        let window = h.window(il).filter(|&w| n_kv > w);
        let heads: Vec<Vec<f32>> = (0..n_seq * h.n_head)
            .into_par_iter()
            .map(|task| {
                let (s, head) = (task / h.n_head, task % h.n_head);
                let kvh = head / group;
                let queries = gather_head(&q[s * t * q_width..], t, q_width, head * hd, hd);
                let gather = |cache: &[f32]| gather_head(cache, n_kv, kv_width, kvh * hd, hd);
                let (keys, values) = seen(s);
                let (keys, values) = (gather(keys), gather(values));
                let mut out = vec![0.0f32; t * hd];
                attention::attend(
                    &queries, &keys, &values, hd, n_past, n_rows, scale, window, &mut out,
                );
                out
            })
            .collect();
        let mut merged = session.scratch.take(n_rows * q_width);
        for (task, out) in heads.iter().enumerate() {
            let (s, head) = (task / h.n_head, task % h.n_head);
            for i in 0..t {
                let at = (s * t + i) * q_width + head * hd;
                merged[at..at + hd].copy_from_slice(&out[i * hd..(i + 1) * hd]);
            }
        }
        for done in [q, k, v] {
            session.scratch.give(done);
        }
        merged
    }

    fn gated(&mut self, mut gate: Vec<f32>, up: Vec<f32>, act: Activation) -> Vec<f32> {
        gated_rows(&mut gate, &up, self.session.model.hparams.n_ff, act);
        self.session.scratch.give(up);
        gate
    }

    fn experts(&mut self, x: &Vec<f32>, layer: usize, act: Activation) -> Vec<f32> {
        let rows = self.rows();
        crate::experts::mixture(self.session.model, layer, x, rows, act, self.observer)
    }

    fn split<const N: usize>(&mut self, x: Vec<f32>, widths: [usize; N]) -> [Vec<f32>; N] {
        let parts = arch::graph::split_columns(&x, widths);
        self.session.scratch.give(x);
        parts
    }

    fn scale(&mut self, mut x: Vec<f32>, s: f32) -> Vec<f32> {
        x.par_iter_mut().for_each(|v| *v *= s);
        x
    }

    fn add(&mut self, mut x: Vec<f32>, y: Vec<f32>) -> Vec<f32> {
        add_in_place(&mut x, &y);
        self.session.scratch.give(y);
        x
    }

    fn release(&mut self, x: Vec<f32>) {
        self.session.scratch.give(x);
    }
}

/// `gate = act(gate) ⊙ up` on rows of `width`, with llama.cpp's kernels.
pub(crate) fn gated_rows(gate: &mut [f32], up: &[f32], width: usize, act: Activation) {
    let row = match act {
        Activation::Silu => fastmath::swiglu_row,
        Activation::GeluTanh => fastmath::geglu_row,
    };
    gate.par_chunks_mut(width)
        .zip(up.par_chunks(width))
        .for_each(|(g, u)| row(g, u));
}

/// Cosines and sines of every (position, pair) RoPE needs, computed like ggml's
/// `ggml_rope_cache_init`: θ starts at the position and is multiplied by `base^(−2/n_dims)` in f32
/// for each successive pair; each pair's angle is `freq_scale · θ / factor`.
struct RopeTable {
    mode: RopeMode,
    n_dims: usize,
    theta_scale: f32,
    /// Divisors per pair (Llama 3's `rope_freqs`, LongRoPE's factors), if the model has them.
    factors: Option<Vec<f32>>,
    /// Factor on every cosine and sine (LongRoPE's attention factor; 1 otherwise).
    mscale: f32,
    /// Linear scaling's factor on every angle.
    freq_scale: f32,
    /// `[position][pair] → (cos, sin)`.
    table: Vec<Vec<(f32, f32)>>,
}

impl RopeTable {
    /// The angles of `model`'s global blocks, or of its local (sliding-window) ones, in contexts
    /// of `n_ctx` positions.
    fn new(model: &Model, local: bool, n_ctx: usize) -> RopeTable {
        let h = &model.hparams;
        let (base, freq_scale) = h.rope_of(local);
        RopeTable {
            mode: h.arch.rope_mode,
            n_dims: h.rope_dims,
            theta_scale: base.powf(-2.0 / h.rope_dims as f32),
            factors: model.rope_factors(n_ctx).map(<[f32]>::to_vec),
            mscale: h.rope_attn_factor,
            freq_scale,
            table: Vec::new(),
        }
    }

    fn extend(&mut self, n_pos: usize) {
        while self.table.len() < n_pos {
            let mut theta = self.table.len() as f32;
            let row = (0..self.n_dims / 2)
                .map(|i| {
                    // ggml's rope_yarn without extrapolation: freq_scale · θ / factor.
                    let ff = self.factors.as_ref().map_or(1.0, |f| f[i]);
                    let angle = self.freq_scale * (theta / ff);
                    let cs = (angle.cos() * self.mscale, angle.sin() * self.mscale);
                    theta *= self.theta_scale;
                    cs
                })
                .collect();
            self.table.push(row);
        }
    }

    /// Rotates every head (of width `hd`) of `x`, rows of `row_width`; row `r` is at position
    /// `n_past + r % t`.
    fn apply(&self, x: &mut [f32], row_width: usize, hd: usize, t: usize, n_past: usize) {
        x.par_chunks_mut(row_width)
            .enumerate()
            .for_each(|(r, row)| {
                let cs = &self.table[n_past + r % t];
                rotate_heads(row, hd, cs, self.mode, self.n_dims / 2);
            });
    }
}

dispatched! {
    /// ggml's `rotate_pairs` on every head (of width `hd`) of one row: `(x0·cos − x1·sin,
    /// x0·sin + x1·cos)` with the first product of each fused, as the native build compiles it.
    fn rotate_heads(row: &mut [f32], hd: usize, cs: &[(f32, f32)], mode: RopeMode, half: usize) {
        for head in row.chunks_mut(hd) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0.mul_add(c, -(x1 * s));
                head[b] = x0.mul_add(s, x1 * c);
            }
        }
    }
}

/// ggml's `rms_norm` (sum of squares in f64, then `1/sqrtf(mean + eps)`) followed by the
/// elementwise weight.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    rms_norm_into(x, weight, eps, &mut out);
    out
}

/// [`rms_norm`] into `out` (every value written).
fn rms_norm_into(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    out.par_chunks_mut(width * NORM_ROWS)
        .zip(x.par_chunks(width * NORM_ROWS))
        .for_each(|(out, rows)| normalize_rows(rows, weight, eps, out));
}

dispatched! {
    /// [`rms_norm_into`] on up to [`NORM_ROWS`] rows (compiled for the machine's vectors; the
    /// arithmetic is the same).
    fn normalize_rows(rows: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let width = weight.len();
        let (sums, n) = squares_per_row(rows, width);
        for ((out, row), sum) in out.chunks_mut(width).zip(rows.chunks(width)).zip(&sums[..n]) {
            let mean = (sum / width as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, v), w) in out.iter_mut().zip(row).zip(weight) {
                *o = (*v * scale) * w;
            }
        }
    }
}

/// Rows whose sums of squares [`rms_norm`] forms side by side.
const NORM_ROWS: usize = 8;

/// Each row's `Σ v²` in f64, added in order as ggml does, for up to [`NORM_ROWS`] rows of `width`
/// at a time: the rows' sums advance together, so the adds of different rows overlap instead of
/// each waiting for the previous one of its own row (a row alone is bound by the adder's
/// latency; the head norms of every query and key made that 5 % of a Gemma 3 pass).
#[inline(always)]
fn squares_per_row(rows: &[f32], width: usize) -> ([f64; NORM_ROWS], usize) {
    let n = rows.len() / width;
    let mut sums = [0.0f64; NORM_ROWS];
    if n == NORM_ROWS {
        for i in 0..width {
            for (r, sum) in sums.iter_mut().enumerate() {
                let v = rows[r * width + i];
                *sum += (v * v) as f64;
            }
        }
    } else {
        for (row, sum) in rows.chunks(width).zip(&mut sums) {
            *sum = row.iter().map(|&v| (v * v) as f64).sum();
        }
    }
    (sums, n)
}

/// The final logit soft-cap as llama.cpp's graph computes it: scale by `1/c`, `tanhf`, scale by
/// `c`.
fn softcap(logits: &mut [f32], c: f32) {
    let inv = 1.0 / c;
    logits
        .par_iter_mut()
        .for_each(|z| *z = (*z * inv).tanh() * c);
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_iter_mut()
        .zip(y.par_iter())
        .for_each(|(a, b)| *a += b);
}

fn add_bias(x: &mut [f32], b: &[f32]) {
    x.par_chunks_mut(b.len())
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
}

/// Rounds keys or values to f16, as llama.cpp's default cache stores them.
fn round_f16(x: &mut [f32]) {
    x.par_chunks_mut(4096)
        .for_each(|chunk| ActivationForm::F16.round(chunk));
}

/// Columns `at..at + hd` of the first `rows` rows of `x` (rows of `width`), packed.
fn gather_head(x: &[f32], rows: usize, width: usize, at: usize, hd: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * hd);
    for r in 0..rows {
        out.extend_from_slice(&x[r * width + at..r * width + at + hd]);
    }
    out
}

//! A family's transformer block, written once against a small set of operations that each stage
//! implements its own way: evaluation with llama.cpp's exact kernels and a key/value cache, the
//! trainer with the backward pass of each operation. This is the one definition of what a block
//! computes; adding a family means describing its block here in terms of these operations (plus
//! any operation it is the first to need), never writing a forward pass twice.

use crate::{Hparams, Role};

/// The activation of a gated feed-forward network (`act(gate) ⊙ up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU): Llama, Qwen.
    Silu,
    /// GELU, tanh approximation (GeGLU): Gemma.
    GeluTanh,
}

/// Which heads a RoPE application rotates: the query projection's or the key projection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadsOf {
    /// `n_head` query heads.
    Query,
    /// `n_head_kv` key heads.
    Key,
}

/// The operations a block is written in. Activations are rows of one position each; `layer`
/// names the block whose weights (by [`Role`]) an operation uses.
pub trait Graph {
    /// An activation: a matrix of rows (evaluation: the values; training: a node to
    /// differentiate through).
    type Act;

    /// RMSNorm of every row, times the weight of `role`.
    fn norm(&mut self, x: &Self::Act, role: Role, layer: usize) -> Self::Act;

    /// `x · Wᵀ` for the weights of `roles`, which share the input `x` (Q/K/V, gate/up).
    fn linears<const N: usize>(
        &mut self,
        x: &Self::Act,
        roles: [Role; N],
        layer: usize,
    ) -> [Self::Act; N];

    /// `x + b` on every row, with the bias of `role`.
    fn add_bias(&mut self, x: Self::Act, role: Role, layer: usize) -> Self::Act;

    /// RMSNorm of every head of every row (a head's width at a time), times the weight of
    /// `role` (Qwen3's q/k norms).
    fn head_norm(&mut self, x: Self::Act, role: Role, layer: usize) -> Self::Act;

    /// Rotary position embedding of every head (the model's pairing; the base and scaling of
    /// block `layer`'s kind, [`Hparams::rope_of`]).
    fn rope(&mut self, x: Self::Act, heads: HeadsOf, layer: usize) -> Self::Act;

    /// Causal grouped-query attention of queries over keys and values (those of earlier calls
    /// included where the graph keeps a cache), scores scaled by `scale`, within block `layer`'s
    /// sliding window if it has one ([`Hparams::window`]).
    fn attention(
        &mut self,
        q: Self::Act,
        k: Self::Act,
        v: Self::Act,
        scale: f32,
        layer: usize,
    ) -> Self::Act;

    /// `act(gate) ⊙ up`.
    fn gated(&mut self, gate: Self::Act, up: Self::Act, act: Activation) -> Self::Act;

    /// `s · x`.
    fn scale(&mut self, x: Self::Act, s: f32) -> Self::Act;

    /// The columns of every row of `x` cut into consecutive parts of `widths` (a fused
    /// projection's outputs, as llama.cpp views them).
    fn split<const N: usize>(&mut self, x: Self::Act, widths: [usize; N]) -> [Self::Act; N];

    /// `x + y` (a residual connection).
    fn add(&mut self, x: Self::Act, y: Self::Act) -> Self::Act;

    /// Block `layer`'s mixture of experts on the rows of `x` (llama.cpp's `build_moe_ffn` with
    /// softmax gating and renormalised weights): per row, the softmax of the router's
    /// (`ffn_gate_inp`) logits, the [`Hparams::n_expert_used`] most probable experts, their
    /// probabilities divided by their sum, each chosen expert's gated network (`act`, stacked
    /// `ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`) scaled by its weight, the scaled outputs
    /// added from the most probable expert down.
    fn experts(&mut self, x: &Self::Act, layer: usize, act: Activation) -> Self::Act;

    /// `x` is not used again (evaluation reuses its memory for later outputs).
    fn release(&mut self, _x: Self::Act) {}
}

/// Block `layer` of a model of shape `h` on the residual stream `x`: pre-norm attention
/// (separate or fused q/k/v projections, optional q/k/v biases, optional per-head q/k norms, RoPE, optional query pre-scaling and
/// sliding window, optional post-norm) and a pre-norm gated feed-forward network (separate or
/// fused gate/up, or a mixture of experts; optional post-norm), each added back to the stream —
/// llama.cpp's `llama.cpp`, `qwen2.cpp`, `qwen3.cpp`, `qwen3moe.cpp`, `gemma3.cpp` and `phi3.cpp`
/// graphs.
pub fn block<G: Graph>(g: &mut G, h: &Hparams, layer: usize, x: G::Act) -> G::Act {
    let arch = h.arch;
    let h_in = g.norm(&x, Role::AttnNorm, layer);
    let [mut q, mut k, mut v] = match arch.has(Role::AttnQkv) {
        true => {
            let [qkv] = g.linears(&h_in, [Role::AttnQkv], layer);
            let kv = h.n_head_kv * h.head_dim;
            g.split(qkv, [h.n_head * h.head_dim, kv, kv])
        }
        false => g.linears(&h_in, [Role::AttnQ, Role::AttnK, Role::AttnV], layer),
    };
    g.release(h_in);
    if arch.has(Role::AttnQBias) {
        q = g.add_bias(q, Role::AttnQBias, layer);
        k = g.add_bias(k, Role::AttnKBias, layer);
        v = g.add_bias(v, Role::AttnVBias, layer);
    }
    if arch.has(Role::AttnQNorm) {
        q = g.head_norm(q, Role::AttnQNorm, layer);
        k = g.head_norm(k, Role::AttnKNorm, layer);
    }
    let mut q = g.rope(q, HeadsOf::Query, layer);
    let k = g.rope(k, HeadsOf::Key, layer);
    let kq_scale = match arch.prescale_query {
        true => {
            q = g.scale(q, h.attention_scale);
            1.0
        }
        false => h.attention_scale,
    };
    let att = g.attention(q, k, v, kq_scale, layer);
    let [mut out] = g.linears(&att, [Role::AttnOutput], layer);
    g.release(att);
    if arch.has(Role::AttnPostNorm) {
        out = post_norm(g, out, Role::AttnPostNorm, layer);
    }
    let x = g.add(x, out);
    let h_ffn = g.norm(&x, Role::FfnNorm, layer);
    let mut down = match h.n_expert > 0 {
        true => g.experts(&h_ffn, layer, arch.ffn_activation),
        false => {
            let [gate, up] = match arch.has(Role::FfnGateUp) {
                true => {
                    let [gate_up] = g.linears(&h_ffn, [Role::FfnGateUp], layer);
                    g.split(gate_up, [h.n_ff, h.n_ff])
                }
                false => g.linears(&h_ffn, [Role::FfnGate, Role::FfnUp], layer),
            };
            let act = g.gated(gate, up, arch.ffn_activation);
            let [down] = g.linears(&act, [Role::FfnDown], layer);
            g.release(act);
            down
        }
    };
    g.release(h_ffn);
    if arch.has(Role::FfnPostNorm) {
        down = post_norm(g, down, Role::FfnPostNorm, layer);
    }
    g.add(x, down)
}

/// RMSNorm of `x` times the weight of `role`, taking `x`'s place (a post-norm): `x` is released.
fn post_norm<G: Graph>(g: &mut G, x: G::Act, role: Role, layer: usize) -> G::Act {
    let normed = g.norm(&x, role, layer);
    g.release(x);
    normed
}

/// The smallest sum of chosen probabilities the expert weights are divided by (llama.cpp's
/// clamp in `build_moe_ffn`).
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// The `n_used` most probable experts of one row of router probabilities, most probable first
/// (ties: the lower index first; ggml's `std::sort` leaves their order unspecified), each with its
/// probability divided by the chosen ones' sum (summed in f64 and rounded, as `sum_rows` does,
/// and clamped below at 2⁻¹⁴): [`Graph::experts`]' routing, for evaluation and training.
pub fn route_experts(probs: &[f32], n_used: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order.truncate(n_used);
    let sum = order.iter().map(|&e| probs[e] as f64).sum::<f64>() as f32;
    let sum = sum.max(MIN_WEIGHT_SUM);
    order.into_iter().map(|e| (e, probs[e] / sum)).collect()
}

/// Each of `n_expert` experts' (row, slot) pairs, rows ascending: which rows, routed by
/// [`route_experts`], run which expert, and at which rank.
pub fn rows_by_expert(routes: &[Vec<(usize, f32)>], n_expert: usize) -> Vec<Vec<(usize, usize)>> {
    let mut assigned = vec![Vec::new(); n_expert];
    for (r, route) in routes.iter().enumerate() {
        for (slot, &(e, _)) in route.iter().enumerate() {
            assigned[e].push((r, slot));
        }
    }
    assigned
}

/// The rows of `x` (of the widths' sum) cut into consecutive column ranges of `widths`: the
/// values of [`Graph::split`], which evaluation and training both compute with this.
pub fn split_columns<const N: usize>(x: &[f32], widths: [usize; N]) -> [Vec<f32>; N] {
    let total: usize = widths.iter().sum();
    let mut start = 0;
    widths.map(|w| {
        let part = x
            .chunks(total)
            .flat_map(|row| &row[start..start + w])
            .copied()
            .collect();
        start += w;
        part
    })
}

/// The first key position the query at `pos` sees: 0, or with a sliding `window` the oldest of
/// the last `window` positions (llama.cpp's `LLAMA_SWA_TYPE_STANDARD` mask).
pub fn first_visible(pos: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

/// The factor on the embedded tokens before the first block: √n_embd for families that scale
/// them (llama.cpp's `sqrtf(n_embd)`), none otherwise.
pub fn embedding_scale(h: &Hparams) -> Option<f32> {
    h.arch.scale_embedding.then(|| (h.n_embd as f32).sqrt())
}

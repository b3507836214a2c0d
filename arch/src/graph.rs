//! A family's transformer block, written once against a small set of operations that each stage
//! implements its own way: evaluation with llama.cpp's exact kernels and a key/value cache, the
//! trainer with the backward pass of each operation. This is the one definition of what a block
//! computes; adding a family means describing its block here in terms of these operations (plus
//! any operation it is the first to need), never writing a forward pass twice.

use crate::{Architecture, Role};

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

    /// Rotary position embedding of every head (the model's pairing, base and scaling).
    fn rope(&mut self, x: Self::Act, heads: HeadsOf) -> Self::Act;

    /// Causal grouped-query attention of queries over keys and values (those of earlier calls
    /// included where the graph keeps a cache).
    fn attention(&mut self, q: Self::Act, k: Self::Act, v: Self::Act, layer: usize) -> Self::Act;

    /// SwiGLU: `silu(gate) ⊙ up`.
    fn swiglu(&mut self, gate: Self::Act, up: Self::Act) -> Self::Act;

    /// `x + y` (a residual connection).
    fn add(&mut self, x: Self::Act, y: Self::Act) -> Self::Act;
}

/// Block `layer` of a model of architecture `arch` on the residual stream `x`: pre-norm
/// attention (optional q/k/v biases, optional per-head q/k norms, RoPE) and a pre-norm SwiGLU
/// feed-forward network, each added back to the stream — llama.cpp's `llama.cpp`, `qwen2.cpp`
/// and `qwen3.cpp` graphs.
pub fn block<G: Graph>(g: &mut G, arch: &Architecture, layer: usize, x: G::Act) -> G::Act {
    let h = g.norm(&x, Role::AttnNorm, layer);
    let [mut q, mut k, mut v] = g.linears(&h, [Role::AttnQ, Role::AttnK, Role::AttnV], layer);
    if arch.has(Role::AttnQBias) {
        q = g.add_bias(q, Role::AttnQBias, layer);
        k = g.add_bias(k, Role::AttnKBias, layer);
        v = g.add_bias(v, Role::AttnVBias, layer);
    }
    if arch.has(Role::AttnQNorm) {
        q = g.head_norm(q, Role::AttnQNorm, layer);
        k = g.head_norm(k, Role::AttnKNorm, layer);
    }
    let q = g.rope(q, HeadsOf::Query);
    let k = g.rope(k, HeadsOf::Key);
    let att = g.attention(q, k, v, layer);
    let [out] = g.linears(&att, [Role::AttnOutput], layer);
    let x = g.add(x, out);
    let h = g.norm(&x, Role::FfnNorm, layer);
    let [gate, up] = g.linears(&h, [Role::FfnGate, Role::FfnUp], layer);
    let act = g.swiglu(gate, up);
    let [down] = g.linears(&act, [Role::FfnDown], layer);
    g.add(x, down)
}

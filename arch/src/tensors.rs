//! The tensors of a model: each one's role in the block, GGUF name and shape (in ggml order, row
//! length first) as the hyper-parameters imply it. Loading checks files against this list,
//! training finds its parameters through it, and pruning knows from a role which axis a change
//! of width touches.

use crate::{Architecture, Hparams};

/// What a tensor is in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Token embedding, one row per token.
    TokenEmbd,
    /// Output projection (absent when tied to the embedding).
    Output,
    /// Final norm weight.
    OutputNorm,
    /// Per-pair RoPE frequency divisors (Llama 3's rope scaling).
    RopeFreqs,
    /// LongRoPE's per-pair divisors for contexts past the original one (Phi-3).
    RopeFactorsLong,
    /// LongRoPE's per-pair divisors within the original context (Phi-3).
    RopeFactorsShort,
    /// Norm weight before attention.
    AttnNorm,
    /// Query projection.
    AttnQ,
    /// Key projection.
    AttnK,
    /// Value projection.
    AttnV,
    /// Query, key and value projections fused into one matrix, rows in that order (Phi-3).
    AttnQkv,
    /// Query bias.
    AttnQBias,
    /// Key bias.
    AttnKBias,
    /// Value bias.
    AttnVBias,
    /// RMSNorm weight applied to each query head (Qwen3).
    AttnQNorm,
    /// RMSNorm weight applied to each key head (Qwen3).
    AttnKNorm,
    /// Attention output projection.
    AttnOutput,
    /// RMSNorm weight on the attention output before the residual add (Gemma's sandwich norms).
    AttnPostNorm,
    /// Norm weight before the feed-forward network.
    FfnNorm,
    /// Gate projection of the gated feed-forward network.
    FfnGate,
    /// Up projection.
    FfnUp,
    /// Gate and up projections fused into one matrix, gate rows first (Phi-3's `ffn_up`).
    FfnGateUp,
    /// Down projection.
    FfnDown,
    /// RMSNorm weight on the feed-forward output before the residual add (Gemma).
    FfnPostNorm,
    /// The router of a mixture-of-experts block: one row of logits per expert.
    FfnGateInp,
    /// Every expert's gate projection, stacked (3-D: row length, rows, experts).
    FfnGateExps,
    /// Every expert's up projection, stacked.
    FfnUpExps,
    /// Every expert's down projection, stacked.
    FfnDownExps,
}

/// Every role, for name lookups.
const ROLES: [Role; 28] = [
    Role::TokenEmbd,
    Role::Output,
    Role::OutputNorm,
    Role::RopeFreqs,
    Role::RopeFactorsLong,
    Role::RopeFactorsShort,
    Role::AttnNorm,
    Role::AttnQ,
    Role::AttnK,
    Role::AttnV,
    Role::AttnQkv,
    Role::AttnQBias,
    Role::AttnKBias,
    Role::AttnVBias,
    Role::AttnQNorm,
    Role::AttnKNorm,
    Role::AttnOutput,
    Role::AttnPostNorm,
    Role::FfnNorm,
    Role::FfnGate,
    Role::FfnUp,
    Role::FfnGateUp,
    Role::FfnDown,
    Role::FfnPostNorm,
    Role::FfnGateInp,
    Role::FfnGateExps,
    Role::FfnUpExps,
    Role::FfnDownExps,
];

impl Role {
    /// The GGUF name without the `blk.N.` of block tensors (llama.cpp's `llama-arch.cpp` names).
    pub fn suffix(self) -> &'static str {
        match self {
            Role::TokenEmbd => "token_embd.weight",
            Role::Output => "output.weight",
            Role::OutputNorm => "output_norm.weight",
            Role::RopeFreqs => "rope_freqs.weight",
            Role::RopeFactorsLong => "rope_factors_long.weight",
            Role::RopeFactorsShort => "rope_factors_short.weight",
            Role::AttnQkv => "attn_qkv.weight",
            Role::FfnGateUp => "ffn_up.weight",
            Role::AttnNorm => "attn_norm.weight",
            Role::AttnQ => "attn_q.weight",
            Role::AttnK => "attn_k.weight",
            Role::AttnV => "attn_v.weight",
            Role::AttnQBias => "attn_q.bias",
            Role::AttnKBias => "attn_k.bias",
            Role::AttnVBias => "attn_v.bias",
            Role::AttnQNorm => "attn_q_norm.weight",
            Role::AttnKNorm => "attn_k_norm.weight",
            Role::AttnOutput => "attn_output.weight",
            Role::AttnPostNorm => "post_attention_norm.weight",
            Role::FfnPostNorm => "post_ffw_norm.weight",
            Role::FfnNorm => "ffn_norm.weight",
            Role::FfnGate => "ffn_gate.weight",
            Role::FfnUp => "ffn_up.weight",
            Role::FfnDown => "ffn_down.weight",
            Role::FfnGateInp => "ffn_gate_inp.weight",
            Role::FfnGateExps => "ffn_gate_exps.weight",
            Role::FfnUpExps => "ffn_up_exps.weight",
            Role::FfnDownExps => "ffn_down_exps.weight",
        }
    }

    /// The role whose [`Role::suffix`] is `suffix` in a model of `arch` (Phi-3's fused
    /// `ffn_up` is not Llama's).
    pub fn from_suffix(arch: &Architecture, suffix: &str) -> Option<Role> {
        ROLES
            .into_iter()
            .find(|&r| r.suffix() == suffix && arch.has(r))
    }

    /// The GGUF name in block `layer` (ignored for the model-wide roles).
    pub fn name(self, layer: usize) -> String {
        match self.is_block() {
            true => format!("blk.{layer}.{}", self.suffix()),
            false => self.suffix().to_string(),
        }
    }

    /// Whether each block has its own.
    pub fn is_block(self) -> bool {
        !matches!(
            self,
            Role::TokenEmbd
                | Role::Output
                | Role::OutputNorm
                | Role::RopeFreqs
                | Role::RopeFactorsLong
                | Role::RopeFactorsShort
        )
    }

    /// The shape in ggml order (row length first).
    pub fn dims(self, h: &Hparams) -> Vec<usize> {
        let (q, kv) = (h.n_head * h.head_dim, h.n_head_kv * h.head_dim);
        match self {
            Role::TokenEmbd | Role::Output => vec![h.n_embd, h.n_vocab],
            Role::OutputNorm
            | Role::AttnNorm
            | Role::FfnNorm
            | Role::AttnPostNorm
            | Role::FfnPostNorm => vec![h.n_embd],
            Role::RopeFreqs | Role::RopeFactorsLong | Role::RopeFactorsShort => {
                vec![h.rope_dims / 2]
            }
            Role::AttnQkv => vec![h.n_embd, q + 2 * kv],
            Role::FfnGateUp => vec![h.n_embd, 2 * h.n_ff],
            Role::AttnQ => vec![h.n_embd, q],
            Role::AttnK | Role::AttnV => vec![h.n_embd, kv],
            Role::AttnQBias => vec![q],
            Role::AttnKBias | Role::AttnVBias => vec![kv],
            Role::AttnQNorm | Role::AttnKNorm => vec![h.head_dim],
            Role::AttnOutput => vec![q, h.n_embd],
            Role::FfnGate | Role::FfnUp => vec![h.n_embd, h.n_ff],
            Role::FfnDown => vec![h.n_ff, h.n_embd],
            Role::FfnGateInp => vec![h.n_embd, h.n_expert],
            Role::FfnGateExps | Role::FfnUpExps => vec![h.n_embd, h.n_ff_exp, h.n_expert],
            Role::FfnDownExps => vec![h.n_ff_exp, h.n_embd, h.n_expert],
        }
    }

    /// Whether the tensor stacks one matrix per expert (its last dimension).
    pub fn is_experts(self) -> bool {
        matches!(
            self,
            Role::FfnGateExps | Role::FfnUpExps | Role::FfnDownExps
        )
    }
}

/// Whether a model-wide tensor must be in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Always there.
    Required,
    /// May be absent (a tied output, rope factors of an unscaled model).
    Optional,
}

/// One tensor a model of given hyper-parameters has.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// What it is.
    pub role: Role,
    /// Its block, for block tensors.
    pub layer: Option<usize>,
    /// GGUF name.
    pub name: String,
    /// Shape in ggml order.
    pub dims: Vec<usize>,
    /// Whether the file must have it.
    pub presence: Presence,
}

/// Every tensor of a model of `h`'s architecture and shape: model-wide ones first, then each
/// block's, in the architecture's order.
pub fn tensors(h: &Hparams) -> Vec<TensorSpec> {
    let spec = |role: Role, layer: Option<usize>, presence| TensorSpec {
        role,
        layer,
        name: role.name(layer.unwrap_or(0)),
        dims: role.dims(h),
        presence,
    };
    let mut out: Vec<TensorSpec> = h
        .arch
        .global_tensors
        .iter()
        .map(|&(role, presence)| spec(role, None, presence))
        .collect();
    for il in 0..h.n_layer {
        out.extend(
            h.arch
                .blocks(h.n_expert)
                .iter()
                .map(|&role| spec(role, Some(il), Presence::Required)),
        );
    }
    out
}

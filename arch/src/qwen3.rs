//! Qwen3 dense (`qwen3`, `Qwen3ForCausalLM`): Llama's block without attention biases, with an
//! RMSNorm over each query and key head before RoPE (`attn_q_norm`, `attn_k_norm`), GPT-NeoX RoPE
//! and an explicit head width (`attention.key_length`, often not `n_embd / n_head`).

use formats::hf::vocab::VocabStyle;

use crate::convert::{no_keys, no_tensors, Conversion};
use crate::{Architecture, Presence, Role, RopeMode};

/// The `qwen3` architecture.
pub const QWEN3: Architecture = Architecture {
    gguf_name: "qwen3",
    hf_names: &["Qwen3ForCausalLM"],
    rope_mode: RopeMode::Neox,
    conversion: Conversion {
        vocab: VocabStyle::Qwen2,
        permute_qk: false,
        rope_types: &[],
        extra_keys: no_keys,
        extra_tensors: no_tensors,
    },
    global_tensors: &[
        (Role::TokenEmbd, Presence::Required),
        (Role::OutputNorm, Presence::Required),
        (Role::Output, Presence::Optional),
    ],
    block_tensors: &[
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnQNorm,
        Role::AttnKNorm,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
    ],
};

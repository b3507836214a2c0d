//! Qwen3 dense (`qwen3`, `Qwen3ForCausalLM`): Llama's block without attention biases, with an
//! RMSNorm over each query and key head before RoPE (`attn_q_norm`, `attn_k_norm`), GPT-NeoX RoPE
//! and an explicit head width (`attention.key_length`, often not `n_embd / n_head`).

use crate::{qwen2, Architecture, Role, RopeMode};

/// The `qwen3` architecture.
pub const QWEN3: Architecture = Architecture {
    gguf_name: "qwen3",
    hf_names: &["Qwen3ForCausalLM"],
    rope_mode: RopeMode::Neox,
    conversion: qwen2::CONVERSION,
    global_tensors: qwen2::GLOBAL_TENSORS,
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
    ..crate::LLAMA_LIKE
};

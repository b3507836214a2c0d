//! Qwen2 (`qwen2`): Llama's block with biases on the query, key and value projections and
//! GPT-NeoX RoPE (halves rotated, no Q/K permutation).

use crate::{Architecture, Presence, Role, RopeMode};

/// The `qwen2` architecture.
pub const QWEN2: Architecture = Architecture {
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM"],
    trainable: false,
    rope_mode: RopeMode::Neox,
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
        Role::AttnQBias,
        Role::AttnKBias,
        Role::AttnVBias,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
    ],
};

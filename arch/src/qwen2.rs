//! Qwen2 (`qwen2`): Llama's block with biases on the query, key and value projections and
//! GPT-NeoX RoPE (halves rotated, no Q/K permutation).

use formats::hf::vocab::VocabStyle;

use crate::convert::{no_keys, no_tensors, Conversion};
use crate::{Architecture, Presence, Role, RopeMode};

/// The `qwen2` architecture.
pub const QWEN2: Architecture = Architecture {
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM"],
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

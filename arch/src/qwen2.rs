//! Qwen2 (`qwen2`): Llama's block with biases on the query, key and value projections and
//! GPT-NeoX RoPE (halves rotated, no Q/K permutation).

use formats::hf::vocab::VocabStyle;

use crate::convert::{no_keys, no_tensors, Conversion};
use crate::{Architecture, Presence, Role, RopeMode};

/// How the converter writes the Qwen families: their own tokenizer loader, NeoX layout (no Q/K
/// permutation), no keys or tensors of their own.
pub const CONVERSION: Conversion = Conversion {
    vocab: VocabStyle::Qwen2,
    permute_qk: false,
    rope_types: &[],
    extra_keys: no_keys,
    extra_tensors: no_tensors,
    norm_offset: 0.0,
    trim_embedding_to_vocab: false,
    expert_order: crate::convert::MIXTRAL_EXPERT_ORDER,
    parameters: None,
};

/// The Qwen families' model-wide tensors (the output is absent when tied).
pub const GLOBAL_TENSORS: &[(Role, Presence)] = &[
    (Role::TokenEmbd, Presence::Required),
    (Role::OutputNorm, Presence::Required),
    (Role::Output, Presence::Optional),
];

/// The `qwen2` architecture.
pub const QWEN2: Architecture = Architecture {
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM"],
    rope_mode: RopeMode::Neox,
    conversion: CONVERSION,
    global_tensors: GLOBAL_TENSORS,
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
    ..crate::LLAMA_LIKE
};

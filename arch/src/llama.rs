//! Llama (Llama 2/3, Mistral, and anything `convert_hf_to_gguf.py` writes as `llama`): RMSNorm,
//! RoPE on adjacent pairs (the converter permutes Q/K rows for it), optional per-pair frequency
//! divisors (`rope_freqs`, Llama 3's rope scaling), grouped-query attention, SwiGLU.

use crate::{Architecture, Presence, Role, RopeMode};

/// The `llama` architecture.
pub const LLAMA: Architecture = Architecture {
    gguf_name: "llama",
    hf_names: &["LlamaForCausalLM", "MistralForCausalLM"],
    trainable: true,
    rope_mode: RopeMode::Normal,
    global_tensors: GLOBAL_TENSORS,
    block_tensors: &[
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
    ],
};

/// Llama's model-wide tensors: the output projection is absent when tied to the embedding, and
/// `rope_freqs` comes only with Llama 3's rope scaling.
pub const GLOBAL_TENSORS: &[(Role, Presence)] = &[
    (Role::TokenEmbd, Presence::Required),
    (Role::OutputNorm, Presence::Required),
    (Role::Output, Presence::Optional),
    (Role::RopeFreqs, Presence::Optional),
];

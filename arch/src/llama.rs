//! Llama (Llama 2/3, Mistral, and anything `convert_hf_to_gguf.py` writes as `llama`): RMSNorm,
//! RoPE on adjacent pairs (the converter permutes Q/K rows for it), optional per-pair frequency
//! divisors (`rope_freqs`, Llama 3's rope scaling), grouped-query attention, SwiGLU.

use crate::{Architecture, RopeMode};

/// The `llama` architecture.
pub const LLAMA: Architecture = Architecture {
    gguf_name: "llama",
    hf_names: &["LlamaForCausalLM", "MistralForCausalLM"],
    trainable: true,
    rope_mode: RopeMode::Normal,
    qkv_bias: false,
};

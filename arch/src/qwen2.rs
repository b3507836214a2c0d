//! Qwen2 (`qwen2`): Llama's block with biases on the query, key and value projections and
//! GPT-NeoX RoPE (halves rotated, no Q/K permutation).

use crate::{Architecture, RopeMode};

/// The `qwen2` architecture.
pub const QWEN2: Architecture = Architecture {
    gguf_name: "qwen2",
    hf_names: &["Qwen2ForCausalLM"],
    trainable: false,
    rope_mode: RopeMode::Neox,
    qkv_bias: true,
};

//! Gemma 3 text (`gemma3`; `Gemma3ForCausalLM` and the text model of
//! `Gemma3ForConditionalGeneration`): Qwen3's attention (q/k RMSNorm per head, NeoX RoPE, explicit
//! head width) in a block with sandwich norms (RMSNorm after attention and after the FFN, before
//! each residual add), a GELU-tanh gated FFN, embeddings scaled by √n_embd, queries pre-scaled,
//! local sliding-window blocks interleaved with global ones (each kind with its own RoPE base),
//! an optional final logit soft-cap, and norms stored as `1 + w` by the converter — llama.cpp's
//! `src/models/gemma3.cpp`.

use formats::gguf::{Metadata, Value};
use formats::hf::config::Config;
use formats::hf::vocab::VocabStyle;
use formats::Result;

use crate::convert::{no_tensors, u32_key, Conversion};
use crate::graph::Activation;
use crate::{qwen2, Architecture, Role, RopeMode};

/// The `gemma3` architecture.
pub const GEMMA3: Architecture = Architecture {
    gguf_name: "gemma3",
    hf_names: &["Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"],
    rope_mode: RopeMode::Neox,
    conversion: Conversion {
        vocab: VocabStyle::Gemma,
        permute_qk: false,
        rope_types: &[],
        extra_keys: gemma3_keys,
        extra_tensors: no_tensors,
        norm_offset: 1.0,
        trim_embedding_to_vocab: true,
        expert_order: crate::convert::MIXTRAL_EXPERT_ORDER,
        parameters: None,
    },
    global_tensors: qwen2::GLOBAL_TENSORS,
    block_tensors: &[
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnQNorm,
        Role::AttnKNorm,
        Role::AttnOutput,
        Role::AttnPostNorm,
        Role::FfnNorm,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
        Role::FfnPostNorm,
    ],
    ffn_activation: Activation::GeluTanh,
    scale_embedding: true,
    prescale_query: true,
    attention_scale: gemma3_attention_scale,
    sliding_window_pattern: Some(6),
    keys: &[
        "attention.sliding_window",
        "attention.sliding_window_pattern",
        "rope.freq_base_swa",
        "final_logit_softcapping",
    ],
    ..crate::LLAMA_LIKE
};

/// `llama_model_gemma3::load_arch_hparams`: `1/√(n_embd / n_head)` for the 62-block model (27B,
/// as gemma_pytorch configures it), `1/√head_dim` otherwise. llama.cpp ignores the config's
/// `query_pre_attn_scalar`, and so does smelt, to compute what llama.cpp computes.
fn gemma3_attention_scale(n_layer: usize, n_embd: usize, n_head: usize, head_dim: usize) -> f32 {
    match n_layer {
        62 => 1.0 / ((n_embd / n_head.max(1)) as f32).sqrt(),
        _ => 1.0 / (head_dim as f32).sqrt(),
    }
}

/// `Gemma3Model.set_gguf_parameters`, after the common keys (which it partly overrides in place,
/// with its own defaults): context length, head count, RMS epsilon, key/value width, the global
/// RoPE base, the final soft-cap if set, the sliding window unless every block is global, and the
/// key/value head count.
fn gemma3_keys(config: &Config, md: &mut Metadata) -> Result<()> {
    let get = |k: &str| config.json.get(k).filter(|v| !v.is_null());
    let uint = |k: &str, default: u64| -> Result<Value> {
        let v = get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(default);
        Ok(Value::U32(u32_key(config, v, k)?))
    };
    md.set(
        "gemma3.context_length",
        uint("max_position_embeddings", 131072)?,
    );
    md.set(
        "gemma3.attention.head_count",
        uint("num_attention_heads", 8)?,
    );
    let eps = get("rms_norm_eps")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(1e-6);
    md.set(
        "gemma3.attention.layer_norm_rms_epsilon",
        Value::F32(eps as f32),
    );
    md.set("gemma3.attention.key_length", uint("head_dim", 256)?);
    md.set("gemma3.attention.value_length", uint("head_dim", 256)?);
    let theta = crate::convert::RopeParams::from_config(config)
        .theta
        .unwrap_or(1_000_000.0);
    md.set("gemma3.rope.freq_base", Value::F32(theta as f32));
    if let Some(cap) = get("final_logit_softcapping").and_then(serde_json::Value::as_f64) {
        if cap != 0.0 {
            md.set("gemma3.final_logit_softcapping", Value::F32(cap as f32));
        }
    }
    if get("sliding_window_pattern").and_then(serde_json::Value::as_u64) != Some(1) {
        md.set(
            "gemma3.attention.sliding_window",
            uint("sliding_window", 0)?,
        );
    }
    md.set(
        "gemma3.attention.head_count_kv",
        uint("num_key_value_heads", 4)?,
    );
    Ok(())
}

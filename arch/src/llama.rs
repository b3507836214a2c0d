//! Llama (Llama 2/3, Mistral, and anything `convert_hf_to_gguf.py` writes as `llama`): RMSNorm,
//! RoPE on adjacent pairs (the converter permutes Q/K rows for it), optional per-pair frequency
//! divisors (`rope_freqs`, Llama 3's rope scaling), grouped-query attention, SwiGLU.

use formats::gguf::{Metadata, Value};
use formats::hf::config::Config;
use formats::hf::vocab::VocabStyle;
use formats::hf::{PlannedTensor, TensorSource};
use formats::Result;

use crate::convert::{u32_key, Conversion, RopeParams};
use crate::{Architecture, Presence, Role, RopeMode};

/// The `llama` architecture.
pub const LLAMA: Architecture = Architecture {
    gguf_name: "llama",
    hf_names: &[
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
    ],
    rope_mode: RopeMode::Normal,
    conversion: Conversion {
        vocab: VocabStyle::Llama,
        permute_qk: true,
        rope_types: &["llama3"],
        extra_keys: llama_keys,
        extra_tensors: llama3_rope_freqs,
        norm_offset: 0.0,
        trim_embedding_to_vocab: false,
        expert_order: crate::convert::MIXTRAL_EXPERT_ORDER,
        parameters: None,
    },
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
    moe_block_tensors: &[
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGateInp,
        Role::FfnGateExps,
        Role::FfnDownExps,
        Role::FfnUpExps,
    ],
    keys: crate::EXPERT_KEYS,
    ..crate::LLAMA_LIKE
};

/// Llama's model-wide tensors: the output projection is absent when tied to the embedding, and
/// `rope_freqs` comes only with Llama 3's rope scaling.
pub const GLOBAL_TENSORS: &[(Role, Presence)] = &[
    (Role::TokenEmbd, Presence::Required),
    (Role::OutputNorm, Presence::Required),
    (Role::Output, Presence::Optional),
    (Role::RopeFreqs, Presence::Optional),
];

/// `head_dim`, or `hidden_size / num_attention_heads` as the converter derives it.
fn head_dim(config: &Config) -> Result<u64> {
    match config
        .json
        .get("head_dim")
        .and_then(serde_json::Value::as_u64)
    {
        Some(hd) => Ok(hd),
        None => Ok(config.require_u64(&["hidden_size"])?
            / config.require_u64(&["num_attention_heads"])?.max(1)),
    }
}

/// `LlamaModel.set_gguf_parameters`' own keys: `vocab_size` and `rope.dimension_count`.
fn llama_keys(config: &Config, md: &mut Metadata) -> Result<()> {
    let vocab = config.require_u64(&["vocab_size"])?;
    md.set(
        "llama.vocab_size",
        Value::U32(u32_key(config, vocab, "vocab_size")?),
    );
    let rope_dim = head_dim(config)?;
    md.set(
        "llama.rope.dimension_count",
        Value::U32(u32_key(config, rope_dim, "head_dim")?),
    );
    Ok(())
}

/// `LlamaModel.generate_extra_tensors`: `rope_freqs` for `rope_scaling.rope_type = llama3`.
fn llama3_rope_freqs(config: &Config, _: &mut Metadata) -> Result<Vec<PlannedTensor>> {
    let rope = RopeParams::from_config(config);
    if rope.rope_type.as_deref() != Some("llama3") {
        return Ok(Vec::new());
    }
    let dim = head_dim(config)?;
    let factors = llama3_rope_factors(&rope, dim as usize);
    Ok(vec![PlannedTensor {
        name: Role::RopeFreqs.name(0),
        dims: vec![factors.len() as u64],
        source: TensorSource::Computed(factors.iter().flat_map(|f| f.to_le_bytes()).collect()),
        rope_heads: None,
        keep_f32: true,
        offset: 0.0,
    }])
}

/// Llama 3's per-pair frequency divisors as `LlamaModel.generate_extra_tensors` computes them in
/// torch f32: frequencies `1 / base^(2i/dim)`, wavelengths `2π / f`, factor 1 above the high-
/// frequency cut, `factor` below the low one, a smooth ramp between. Operation for operation as
/// torch evaluates it: Python scalars are rounded to f32, and `scalar / tensor` is
/// `reciprocal(tensor) · scalar`. The power is the double-precision one rounded to f32; torch
/// uses SLEEF's `powf` (1 ULP), which gives the same bits for Llama 3.x's bases and head widths
/// (500000; 64, 128 — checked against the converter in the tier-2 tests).
fn llama3_rope_factors(rope: &RopeParams, dim: usize) -> Vec<f32> {
    let base = rope.theta.unwrap_or(10000.0) as f32;
    let factor = rope.llama3.factor as f32;
    let (low, high) = (rope.llama3.low_freq_factor, rope.llama3.high_freq_factor);
    let old_ctx = rope.llama3.original_ctx;
    let (low_wavelen, high_wavelen) = ((old_ctx / low) as f32, (old_ctx / high) as f32);
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let x = i as f32 / dim as f32;
            let freq = 1.0 / ((base as f64).powf(x as f64) as f32);
            let wavelen = (1.0 / freq) * two_pi;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = ((1.0 / wavelen) * old_ctx as f32 - low as f32) / (high - low) as f32;
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

//! Phi-3 and Phi-4-mini (`phi3`, `Phi3ForCausalLM`): Llama's block with the query, key and value
//! projections fused into one `attn_qkv` matrix and the gate and up projections into one
//! `ffn_up` (gate rows first), as the converter writes them and llama.cpp splits them at run
//! time; NeoX RoPE, possibly over part of each head (`partial_rotary_factor`), with LongRoPE's
//! per-pair divisors (`rope_factors_long/short`, the long ones past the original context) and
//! their attention factor; queries pre-scaled by `1/√head_dim`. llama.cpp ignores Phi-3's
//! sliding window (its `phi3.cpp` turns it off), and so does smelt.

use formats::gguf::{Metadata, Value};
use formats::hf::config::Config;
use formats::hf::vocab::VocabStyle;
use formats::hf::{PlannedTensor, TensorSource};
use formats::{FormatError, Result};

use crate::convert::{no_keys, u32_key, Conversion, RopeParams};
use crate::{Architecture, Presence, Role, RopeMode};

/// The `phi3` architecture.
pub const PHI3: Architecture = Architecture {
    gguf_name: "phi3",
    hf_names: &["Phi3ForCausalLM"],
    rope_mode: RopeMode::Neox,
    conversion: Conversion {
        vocab: VocabStyle::Phi3,
        permute_qk: false,
        rope_types: &["longrope", "su"],
        extra_keys: no_keys,
        extra_tensors: longrope_factors,
        norm_offset: 0.0,
        trim_embedding_to_vocab: false,
        expert_order: crate::convert::MIXTRAL_EXPERT_ORDER,
        parameters: Some(phi3_parameters),
    },
    global_tensors: &[
        (Role::TokenEmbd, Presence::Required),
        (Role::OutputNorm, Presence::Required),
        (Role::Output, Presence::Optional),
        (Role::RopeFactorsLong, Presence::Optional),
        (Role::RopeFactorsShort, Presence::Optional),
    ],
    block_tensors: &[
        Role::AttnNorm,
        Role::AttnQkv,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGateUp,
        Role::FfnDown,
    ],
    prescale_query: true,
    keys: &["attention.sliding_window", "rope.scaling.attn_factor"],
    query_width_is_embedding: true,
    ..crate::LLAMA_LIKE
};

/// A key `Phi3MiniModel` reads with `find_hparam` (the first of `keys` present), required.
fn required(config: &Config, keys: &[&str]) -> Result<f64> {
    config
        .find_f64(keys)
        .ok_or_else(|| FormatError::new(config.path(), format!("config.json has no {}", keys[0])))
}

/// The original context length LongRoPE scales from (`rope_parameters`' mirror of it).
fn original_ctx(config: &Config, rope: &RopeParams) -> Result<f64> {
    rope.original_ctx.ok_or_else(|| {
        FormatError::new(
            config.path(),
            "config.json has no original_max_position_embeddings",
        )
    })
}

/// Rotated dimensions per head: `int(partial_rotary_factor · n_embd) // n_head`.
fn rope_dims(config: &Config, rope: &RopeParams) -> Result<u64> {
    let n_embd = required(config, &["hidden_size", "n_embd"])?;
    let n_head = required(config, &["num_attention_heads", "n_head"])?.max(1.0);
    let pct = rope.partial_rotary_factor.unwrap_or(1.0);
    Ok((pct * n_embd).trunc() as u64 / n_head as u64)
}

/// `Phi3MiniModel.set_gguf_parameters`, which does not start from the common keys: its own set
/// in its own order, the sliding window written as 0 when the config has none.
fn phi3_parameters(config: &Config, file_type: u32, md: &mut Metadata) -> Result<()> {
    let rope = RopeParams::from_config(config);
    let u32_of = |keys: &[&str]| -> Result<Value> {
        let v = required(config, keys)? as u64;
        Ok(Value::U32(u32_key(config, v, keys[0])?))
    };
    md.set(
        "phi3.context_length",
        u32_of(&["n_positions", "max_position_embeddings"])?,
    );
    let orig = original_ctx(config, &rope)? as u64;
    md.set(
        "phi3.rope.scaling.original_context_length",
        Value::U32(u32_key(config, orig, "original_max_position_embeddings")?),
    );
    md.set("phi3.embedding_length", u32_of(&["hidden_size", "n_embd"])?);
    md.set("phi3.feed_forward_length", u32_of(&["intermediate_size"])?);
    md.set(
        "phi3.block_count",
        u32_of(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
    );
    md.set(
        "phi3.attention.head_count",
        u32_of(&["num_attention_heads", "n_head"])?,
    );
    md.set(
        "phi3.attention.head_count_kv",
        u32_of(&["num_key_value_heads", "n_head_kv"])?,
    );
    md.set(
        "phi3.attention.layer_norm_rms_epsilon",
        Value::F32(required(config, &["rms_norm_eps"])? as f32),
    );
    let dims = rope_dims(config, &rope)?;
    md.set(
        "phi3.rope.dimension_count",
        Value::U32(u32_key(config, dims, "partial_rotary_factor")?),
    );
    let theta = rope
        .theta
        .ok_or_else(|| FormatError::new(config.path(), "config.json has no rope_theta"))?;
    md.set("phi3.rope.freq_base", Value::F32(theta as f32));
    md.set("general.file_type", Value::U32(file_type));
    let window = config
        .json
        .get("sliding_window")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    md.set(
        "phi3.attention.sliding_window",
        Value::U32(u32_key(config, window, "sliding_window")?),
    );
    Ok(())
}

/// `Phi3MiniModel.generate_extra_tensors`: with LongRoPE's `long_factor`, the attention factor
/// `√(1 + ln s / ln n₀)` (`s` = context / original context `n₀`, 1 when not extended; YaRN's
/// `0.1 ln s + 1`) and the long and short factors as f32 tensors.
fn longrope_factors(config: &Config, md: &mut Metadata) -> Result<Vec<PlannedTensor>> {
    let rope = RopeParams::from_config(config);
    let Some(long) = rope.long_factor.clone().filter(|l| !l.is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = |msg: String| FormatError::new(config.path(), msg);
    let max_pos = required(config, &["n_positions", "max_position_embeddings"])?;
    let orig = original_ctx(config, &rope)?;
    let scale = max_pos / orig;
    let kind = rope.rope_type.as_deref().unwrap_or("").to_lowercase();
    let attn_factor = match kind.as_str() {
        "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / orig.ln()).sqrt(),
        "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
        "su" | "longrope" | "yarn" => 1.0,
        "" => return Err(bad("rope_scaling has no type".into())),
        other => return Err(bad(format!("rope scaling type {other} is not supported"))),
    };
    md.set(
        "phi3.rope.scaling.attn_factor",
        Value::F32(attn_factor as f32),
    );
    let short = rope
        .short_factor
        .clone()
        .ok_or_else(|| bad("rope_scaling has long_factor but no short_factor".into()))?;
    let dims = rope_dims(config, &rope)? as usize;
    if long.len() != short.len() || 2 * long.len() != dims {
        return Err(bad(format!(
            "rope long and short factors must have {} entries ({} and {})",
            dims / 2,
            long.len(),
            short.len()
        )));
    }
    let tensor = |role: Role, values: &[f64]| PlannedTensor {
        name: role.name(0),
        dims: vec![values.len() as u64],
        source: TensorSource::Computed(
            values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
        ),
        rope_heads: None,
        keep_f32: true,
        offset: 0.0,
    };
    Ok(vec![
        tensor(Role::RopeFactorsLong, &long),
        tensor(Role::RopeFactorsShort, &short),
    ])
}

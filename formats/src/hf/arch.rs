//! The architectures smelt imports and how llama.cpp's converter maps them: GGUF architecture
//! name, hyper-parameter keys, tensor names, and which tensors get the rotary Q/K row permutation.

use crate::gguf::{Metadata, Value};
use crate::hf::config::Config;
use crate::hf::vocab::VocabStyle;
use crate::hf::{PlannedTensor, TensorSource};
use crate::{FormatError, Result};

/// Hugging Face architectures smelt can import.
pub const SUPPORTED: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

/// A supported architecture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama and Mistral (`general.architecture = llama`), Q/K rows permuted for llama.cpp's rope.
    Llama,
    /// Qwen2 (`qwen2`): q/k/v biases, NeoX rope, no permutation.
    Qwen2,
    /// Qwen3 dense (`qwen3`): Qwen2's tokenizer and rope, q/k RMSNorm, no biases.
    Qwen3,
}

impl Arch {
    /// The architecture named by `config.json`'s `architectures[0]`.
    pub fn from_config(config: &Config) -> Result<Arch> {
        match config.architecture()? {
            "LlamaForCausalLM" | "MistralForCausalLM" => Ok(Arch::Llama),
            "Qwen2ForCausalLM" => Ok(Arch::Qwen2),
            "Qwen3ForCausalLM" => Ok(Arch::Qwen3),
            other => Err(FormatError::new(
                config.path(),
                format!(
                    "unsupported architecture {other} (supported: {})",
                    SUPPORTED.join(", ")
                ),
            )),
        }
    }

    /// `general.architecture` and the prefix of the architecture's keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// The tokenizer loader llama.cpp's converter uses for this family.
    pub fn vocab_style(self) -> VocabStyle {
        match self {
            Arch::Llama => VocabStyle::Llama,
            Arch::Qwen2 | Arch::Qwen3 => VocabStyle::Qwen2,
        }
    }

    /// Whether Q/K projections are permuted from HF's rotate-half layout to llama.cpp's interleaved one.
    pub fn undo_rope_permute(self) -> bool {
        self == Arch::Llama
    }
}

/// Hyper-parameters needed to map tensors.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Number of transformer blocks.
    pub n_layer: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads (GQA).
    pub n_head_kv: u64,
}

impl Dims {
    /// Reads the hyper-parameters the tensor mapping needs; missing keys are errors.
    pub fn from_config(config: &Config) -> Result<Dims> {
        let n_layer =
            config.require_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
        let n_head = config.require_u64(&["n_heads", "num_attention_heads"])?;
        let n_head_kv = config.require_u64(&["n_kv_heads", "num_key_value_heads"])?;
        config.require_u64(&["hidden_size", "n_embd", "dim"])?;
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(FormatError::new(config.path(), format!("num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}")));
        }
        Ok(Dims {
            n_layer,
            n_head,
            n_head_kv,
        })
    }
}

/// Writes the `{arch}.*` hyper-parameter keys and `general.file_type`, in the converter's order.
pub fn add_parameters(
    arch: Arch,
    config: &Config,
    dims: &Dims,
    file_type: u32,
    md: &mut Metadata,
) -> Result<()> {
    let a = arch.gguf_name();
    let u32_of = |v: u64, key: &str| {
        u32::try_from(v).map_err(|_| {
            FormatError::new(
                config.path(),
                format!("{key} = {v} does not fit in 32 bits"),
            )
        })
    };
    md.set(
        format!("{a}.block_count"),
        Value::U32(u32_of(dims.n_layer, "num_hidden_layers")?),
    );
    let optional: [(&str, &[&str]); 5] = [
        (
            "context_length",
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ],
        ),
        ("embedding_length", &["hidden_size", "n_embd", "dim"]),
        (
            "feed_forward_length",
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
        ),
        (
            "attention.head_count",
            &["num_attention_heads", "n_head", "n_heads"],
        ),
        (
            "attention.head_count_kv",
            &["num_key_value_heads", "n_kv_heads"],
        ),
    ];
    for (suffix, keys) in optional {
        if let Some(v) = config.find_u64(keys) {
            md.set(format!("{a}.{suffix}"), Value::U32(u32_of(v, keys[0])?));
        }
    }
    if config.json.get("is_causal") == Some(&serde_json::Value::Bool(false)) {
        md.set(format!("{a}.attention.causal"), Value::Bool(false));
    }
    if config
        .find(&["num_local_experts", "num_experts", "n_routed_experts"])
        .is_some_and(|v| !v.is_null())
    {
        return Err(FormatError::new(
            config.path(),
            "mixture-of-experts checkpoints are not supported",
        ));
    }

    let rope = RopeParams::from_config(config);
    match rope.rope_type.as_deref() {
        Some("linear") if rope.factor.is_some() => {
            md.set(
                format!("{a}.rope.scaling.type"),
                Value::String("linear".into()),
            );
            md.set(
                format!("{a}.rope.scaling.factor"),
                Value::F32(rope.factor.unwrap() as f32),
            );
        }
        Some("llama3") if arch == Arch::Llama => {} // rope_freqs: see extra_tensors
        Some("yarn") | Some("su") | Some("longrope") | Some("llama3") => {
            return Err(FormatError::new(
                config.path(),
                format!(
                    "rope scaling type {:?} is not supported yet",
                    rope.rope_type.unwrap()
                ),
            ));
        }
        _ => {}
    }
    if let Some(theta) = rope.theta {
        md.set(format!("{a}.rope.freq_base"), Value::F32(theta as f32));
    }
    if let Some(eps) = config.find_f64(&["rms_norm_eps", "norm_eps"]) {
        md.set(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(eps as f32),
        );
    }
    if let Some(eps) = config.find_f64(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"]) {
        md.set(
            format!("{a}.attention.layer_norm_epsilon"),
            Value::F32(eps as f32),
        );
    }
    let head_dim = config
        .json
        .get("head_dim")
        .and_then(serde_json::Value::as_u64);
    if let Some(hd) = head_dim {
        md.set(
            format!("{a}.attention.key_length"),
            Value::U32(u32_of(hd, "head_dim")?),
        );
        md.set(
            format!("{a}.attention.value_length"),
            Value::U32(u32_of(hd, "head_dim")?),
        );
    }
    md.set("general.file_type", Value::U32(file_type));

    if arch == Arch::Llama {
        let vocab = config.require_u64(&["vocab_size"])?;
        md.set(
            format!("{a}.vocab_size"),
            Value::U32(u32_of(vocab, "vocab_size")?),
        );
        let rope_dim = match head_dim {
            Some(hd) => hd,
            None => config.require_u64(&["hidden_size"])? / dims.n_head,
        };
        md.set(
            format!("{a}.rope.dimension_count"),
            Value::U32(u32_of(rope_dim, "head_dim")?),
        );
    }
    Ok(())
}

/// Tensors the converter computes from the config instead of reading them, in its order (they
/// come before the checkpoint's): Llama 3's `rope_freqs`.
pub fn extra_tensors(arch: Arch, config: &Config) -> Result<Vec<PlannedTensor>> {
    let rope = RopeParams::from_config(config);
    if arch != Arch::Llama || rope.rope_type.as_deref() != Some("llama3") {
        return Ok(Vec::new());
    }
    let dim = match config
        .json
        .get("head_dim")
        .and_then(serde_json::Value::as_u64)
    {
        Some(hd) => hd,
        None => {
            config.require_u64(&["hidden_size"])?
                / config.require_u64(&["num_attention_heads"])?.max(1)
        }
    };
    let factors = llama3_rope_factors(&rope, dim as usize);
    Ok(vec![PlannedTensor {
        name: "rope_freqs.weight".into(),
        dims: vec![factors.len() as u64],
        source: TensorSource::Computed(factors.iter().flat_map(|f| f.to_le_bytes()).collect()),
        rope_heads: None,
        keep_f32: true,
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

/// The converter's view of rope settings: `rope_parameters` (or `rope_scaling`) with the global
/// `rope_theta` mirrored in.
struct RopeParams {
    rope_type: Option<String>,
    factor: Option<f64>,
    theta: Option<f64>,
    llama3: Llama3Rope,
}

/// `rope_type = "llama3"` settings, with the converter's defaults.
struct Llama3Rope {
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_ctx: f64,
}

impl RopeParams {
    fn from_config(config: &Config) -> RopeParams {
        let empty = serde_json::Map::new();
        let params = ["rope_parameters", "rope_scaling"]
            .iter()
            .find_map(|k| config.json.get(*k).filter(|v| !v.is_null()))
            .and_then(serde_json::Value::as_object)
            .unwrap_or(&empty);
        let params = params
            .get("full_attention")
            .and_then(serde_json::Value::as_object)
            .unwrap_or(params);
        let rope_type = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let theta = match params.get("rope_theta") {
            Some(v) => v.as_f64(),
            None => config.find_f64(&[
                "global_rope_theta",
                "rope_global_theta",
                "rope_theta_global",
                "rope_theta",
                "rotary_emb_base",
            ]),
        };
        let num =
            |key: &str, default: f64| params.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
        let original_ctx = params
            .get("original_max_position_embeddings")
            .and_then(|v| v.as_f64())
            .or_else(|| config.find_f64(&["original_max_position_embeddings"]))
            .unwrap_or(8192.0);
        RopeParams {
            rope_type,
            factor: params.get("factor").and_then(serde_json::Value::as_f64),
            theta,
            llama3: Llama3Rope {
                factor: num("factor", 8.0),
                low_freq_factor: num("low_freq_factor", 1.0),
                high_freq_factor: num("high_freq_factor", 4.0),
                original_ctx,
            },
        }
    }
}

/// Maps a Hugging Face tensor name to its GGUF name (`None` for tensors the converter drops).
pub fn gguf_tensor_name(hf: &str, n_layer: u64) -> std::result::Result<Option<String>, String> {
    if hf.ends_with(".attention.masked_bias")
        || hf.ends_with(".attention.bias")
        || hf.ends_with(".rotary_emb.inv_freq")
    {
        return Ok(None);
    }
    let (stem, suffix) = match hf.rsplit_once('.') {
        Some((s, x @ ("weight" | "bias"))) => (s, x),
        _ => return Err(format!("cannot map tensor {hf}")),
    };
    let stem = stem.replace("language_model.", "");
    let global = match stem.as_str() {
        "model.embed_tokens" => Some("token_embd"),
        "model.norm" => Some("output_norm"),
        "lm_head" => Some("output"),
        _ => None,
    };
    if let Some(g) = global {
        return Ok(Some(format!("{g}.{suffix}")));
    }
    let rest = stem
        .strip_prefix("model.layers.")
        .ok_or_else(|| format!("cannot map tensor {hf}"))?;
    let (bid, part) = rest
        .split_once('.')
        .ok_or_else(|| format!("cannot map tensor {hf}"))?;
    let bid: u64 = bid.parse().map_err(|_| format!("cannot map tensor {hf}"))?;
    if bid >= n_layer {
        return Err(format!(
            "tensor {hf} belongs to block {bid} but config.json has {n_layer} layers"
        ));
    }
    let name = match part {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return Err(format!("cannot map tensor {hf}")),
    };
    Ok(Some(format!("blk.{bid}.{name}.{suffix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_the_converter() {
        assert_eq!(
            gguf_tensor_name("model.layers.3.mlp.down_proj.weight", 5)
                .unwrap()
                .unwrap(),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(
            gguf_tensor_name("model.layers.0.self_attn.q_proj.bias", 1)
                .unwrap()
                .unwrap(),
            "blk.0.attn_q.bias"
        );
        assert_eq!(
            gguf_tensor_name("lm_head.weight", 1).unwrap().unwrap(),
            "output.weight"
        );
        assert_eq!(
            gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq", 1).unwrap(),
            None
        );
        assert!(gguf_tensor_name("model.layers.5.mlp.up_proj.weight", 5).is_err());
        assert!(gguf_tensor_name("vision.patch.weight", 5).is_err());
    }
}

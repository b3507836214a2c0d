//! Hugging Face checkpoint → GGUF, as llama.cpp's `convert_hf_to_gguf.py` (0c1e57098) does it:
//! the [`ConversionPlan`] of a checkpoint — which GGUF tensors (names through the architecture's
//! roles, Q/K permutation, computed tensors) and metadata (the common `TextModel` keys, then the
//! family's own) the converter would write. What differs between families is in each family's
//! module ([`Conversion`]); formats knows the files, this module what a family makes of them.

use formats::gguf::{Metadata, Value};
use formats::hf::config::Config;
use formats::hf::vocab::{add_vocab, VocabStyle};
use formats::hf::{
    add_naming, Checkpoint, ConversionPlan, ParamCount, PlannedTensor, RowRange, TensorSource,
};
use formats::{FormatError, Result};

use crate::{Architecture, Role, ARCHITECTURES};

/// A family's own `set_gguf_parameters`: the config, `general.file_type`, the metadata to fill.
pub type ParametersFn = fn(&Config, u32, &mut Metadata) -> Result<()>;

/// How the converter writes one family.
#[derive(Debug)]
pub struct Conversion {
    /// The tokenizer loader the converter uses.
    pub vocab: VocabStyle,
    /// Whether Q/K rows are permuted from HF's rotate-half layout to llama.cpp's interleaved one.
    pub permute_qk: bool,
    /// `rope_scaling.rope_type`s this family implements beyond linear (others are refused).
    pub rope_types: &'static [&'static str],
    /// The family's own hyper-parameter keys, after the common ones.
    pub extra_keys: fn(&Config, &mut Metadata) -> Result<()>,
    /// Tensors the family computes from the config, before the checkpoint's (and the keys the
    /// converter writes while computing them, right after `general.architecture`).
    pub extra_tensors: fn(&Config, &mut Metadata) -> Result<Vec<PlannedTensor>>,
    /// The family's own `set_gguf_parameters` when it does not start from the common one (Phi-3):
    /// every `<arch>.*` key and `general.file_type`.
    pub parameters: Option<ParametersFn>,
    /// Added to every norm weight (Gemma stores `w` for a norm that multiplies by `1 + w`; the
    /// converter writes `1 + w`).
    pub norm_offset: f32,
    /// Whether the token embedding loses the rows past the tokenizer's vocabulary (Gemma 3's
    /// `modify_tensors`).
    pub trim_embedding_to_vocab: bool,
    /// The order in which the converter writes a block's stacked expert tensors once it has
    /// seen all of them (its `modify_tensors` loop; Mixtral's w1, w2, w3, Qwen's down, gate, up).
    pub expert_order: [Role; 3],
}

/// Mixtral's order of stacked expert tensors (`w1`, `w2`, `w3`), the default.
pub const MIXTRAL_EXPERT_ORDER: [Role; 3] = [Role::FfnGateExps, Role::FfnDownExps, Role::FfnUpExps];

/// `v` as the u32 a key takes, or an error naming the config key it came from.
pub(crate) fn u32_key(config: &Config, v: u64, key: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        FormatError::new(
            config.path(),
            format!("{key} = {v} does not fit in 32 bits"),
        )
    })
}

/// [`Conversion::extra_keys`] of a family without any.
pub fn no_keys(_: &Config, _: &mut Metadata) -> Result<()> {
    Ok(())
}

/// [`Conversion::extra_tensors`] of a family without any.
pub fn no_tensors(_: &Config, _: &mut Metadata) -> Result<Vec<PlannedTensor>> {
    Ok(Vec::new())
}

/// The architecture named by `config.json`'s `architectures[0]`.
pub fn by_hf_name(config: &Config) -> Result<&'static Architecture> {
    let name = config.architecture()?;
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.hf_names.contains(&name))
        .ok_or_else(|| {
            let all: Vec<&str> = ARCHITECTURES
                .iter()
                .flat_map(|a| a.hf_names.iter().copied())
                .collect();
            FormatError::new(
                config.path(),
                format!(
                    "unsupported architecture {name} (supported: {})",
                    all.join(", ")
                ),
            )
        })
}

/// Plans the conversion of `ckpt`; `file_type` is llama.cpp's `general.file_type` for the output.
pub fn plan(ckpt: &Checkpoint, file_type: u32) -> Result<ConversionPlan> {
    let config = &ckpt.config;
    let arch = by_hf_name(config)?;
    let dims = Dims::from_config(config)?;
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String(arch.gguf_name.into()));
    let mut tensors: Vec<PlannedTensor> = (arch.conversion.extra_tensors)(config, &mut md)?;
    let mut experts = ExpertStacks::new(arch, config, dims.n_layer as usize)?;
    for (source, t) in ckpt.tensors.iter().enumerate() {
        if let Some(stacks) = experts
            .add(ckpt, source)
            .map_err(|msg| FormatError::new(ckpt.shard_path(t), msg))?
        {
            tensors.extend(stacks);
            continue;
        }
        let name = match gguf_tensor_name(arch, &t.name, dims.n_layer) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(msg) => return Err(FormatError::new(ckpt.shard_path(t), msg)),
        };
        let rope_heads = if !arch.conversion.permute_qk {
            None
        } else if t.name.ends_with("q_proj.weight") || t.name.ends_with("q_proj.bias") {
            Some(dims.n_head as usize)
        } else if t.name.ends_with("k_proj.weight") || t.name.ends_with("k_proj.bias") {
            Some(dims.n_head_kv as usize)
        } else {
            None
        };
        if let Some(h) = rope_heads {
            if t.shape.is_empty() || t.shape[0] % (2 * h) != 0 {
                return Err(FormatError::new(
                    ckpt.shard_path(t),
                    format!(
                        "tensor {} has {} rows, not a multiple of 2 × {h} heads",
                        t.name,
                        t.shape.first().copied().unwrap_or(0)
                    ),
                ));
            }
        }
        let keep_f32 = t.shape.len() <= 1
            || name.ends_with("_norm.weight")
            || name.ends_with(Role::FfnGateInp.suffix())
            || !name.ends_with(".weight");
        let offset = match t.name.ends_with("norm.weight") {
            true => arch.conversion.norm_offset,
            false => 0.0,
        };
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push(PlannedTensor {
            name,
            dims: if dims.is_empty() { vec![1] } else { dims },
            source: TensorSource::Checkpoint(source),
            rope_heads,
            keep_f32,
            offset,
        });
    }
    experts
        .finish()
        .map_err(|msg| FormatError::new(ckpt.dir(), msg))?;
    if !tensors.iter().any(|t| t.name == "token_embd.weight") {
        return Err(FormatError::new(
            ckpt.dir(),
            "no model.embed_tokens.weight tensor",
        ));
    }

    md.set("general.type", Value::String("model".into()));
    let mut params = ParamCount::default();
    for t in &tensors {
        params.add(&t.name, &t.dims);
    }
    let dir_name = ckpt
        .dir()
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    add_naming(&mut md, &dir_name, &params);
    add_parameters(arch, config, &dims, file_type, &mut md)?;
    md.set("general.quantization_version", Value::U32(2));
    add_vocab(arch.conversion.vocab, ckpt.dir(), config, &mut md)?;
    if arch.conversion.trim_embedding_to_vocab {
        trim_embedding(&mut tensors, &md);
    }
    Ok(ConversionPlan {
        metadata: md,
        tensors,
    })
}

/// Drops the token embedding's rows past the vocabulary the tokenizer keys list (Gemma 3's
/// `modify_tensors`: `data_torch[:n_vocab_real]`); rows are a prefix, so only the shape changes.
fn trim_embedding(tensors: &mut [PlannedTensor], md: &Metadata) {
    let n_tokens = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(_, items)) => items.len() as u64,
        _ => return,
    };
    for t in tensors.iter_mut().filter(|t| t.name == "token_embd.weight") {
        if let Some(rows) = t.dims.get_mut(1) {
            *rows = (*rows).min(n_tokens);
        }
    }
}

/// Hyper-parameters needed to map tensors.
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Number of transformer blocks.
    n_layer: u64,
    /// Attention heads.
    n_head: u64,
    /// Key/value heads (GQA).
    n_head_kv: u64,
}

impl Dims {
    /// Reads the hyper-parameters the tensor mapping needs; missing keys are errors.
    fn from_config(config: &Config) -> Result<Dims> {
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
fn add_parameters(
    arch: &Architecture,
    config: &Config,
    dims: &Dims,
    file_type: u32,
    md: &mut Metadata,
) -> Result<()> {
    if let Some(own) = arch.conversion.parameters {
        return own(config, file_type, md);
    }
    let a = arch.gguf_name;
    let u32_of = |v: u64, key: &str| u32_key(config, v, key);
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
    let n_expert = config.find(&["num_local_experts", "num_experts", "n_routed_experts"]);
    if n_expert.is_some_and(|v| !v.is_null()) && !arch.has(Role::FfnGateInp) {
        return Err(FormatError::new(
            config.path(),
            format!("mixture-of-experts {a} checkpoints are not supported"),
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
        Some(t) if arch.conversion.rope_types.contains(&t) => {} // the family's own (rope_freqs)
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
    if let Some(theta) = rope.theta_swa {
        md.set(format!("{a}.rope.freq_base_swa"), Value::F32(theta as f32));
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
    if arch.has(Role::FfnGateInp) {
        add_expert_keys(config, a, md)?;
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

    (arch.conversion.extra_keys)(config, md)?;
    Ok(())
}

/// `TextModel.set_gguf_parameters`' expert keys: `expert_count` and `expert_used_count`. The
/// grouped and non-softmax routings its other keys describe are refused.
fn add_expert_keys(config: &Config, a: &str, md: &mut Metadata) -> Result<()> {
    let unsupported = [
        "n_group",
        "topk_group",
        "score_function",
        "scoring_func",
        "score_func",
        "moe_router_activation",
        "moe_router_activation_func",
        "expert_selection_fn",
    ];
    if let Some(k) = unsupported
        .iter()
        .find(|k| config.json.get(**k).is_some_and(|v| !v.is_null()))
    {
        return Err(FormatError::new(
            config.path(),
            format!("{k}: this expert routing is not supported"),
        ));
    }
    let keys: [(&str, &[&str]); 2] = [
        (
            "expert_count",
            &["num_local_experts", "num_experts", "n_routed_experts"],
        ),
        (
            "expert_used_count",
            &[
                "num_experts_per_tok",
                "num_experts_per_token",
                "top_k_experts",
            ],
        ),
    ];
    for (suffix, names) in keys {
        if let Some(v) = config.find_u64(names) {
            md.set(
                format!("{a}.{suffix}"),
                Value::U32(u32_key(config, v, names[0])?),
            );
        }
    }
    Ok(())
}

/// A mixture-of-experts checkpoint's per-expert matrices (`block_sparse_moe.experts.E.w1`,
/// `mlp.experts.E.gate_proj`, …), gathered block by block until every expert's three are there,
/// then planned as the converter's stacked tensors (`ffn_gate_exps`, … of `n_expert` matrices).
struct ExpertStacks {
    arch: &'static Architecture,
    n_expert: usize,
    n_layer: usize,
    /// Per block: the checkpoint tensor of each (role, expert) seen so far.
    seen: Vec<std::collections::HashMap<(Role, usize), usize>>,
}

impl ExpertStacks {
    fn new(arch: &'static Architecture, config: &Config, n_layer: usize) -> Result<ExpertStacks> {
        // Families always with experts need the count; Llama has experts only when it is set.
        let names = ["num_local_experts", "num_experts", "n_routed_experts"];
        let n_expert = match (arch.is_moe(), arch.has(Role::FfnGateInp)) {
            (true, _) => config.require_u64(&names)?,
            (false, true) => config.find_u64(&names).unwrap_or(0),
            (false, false) => 0,
        };
        if n_expert > 256 || (arch.is_moe() && n_expert == 0) {
            return Err(FormatError::new(
                config.path(),
                format!("num_experts = {n_expert} is not between 1 and 256"),
            ));
        }
        Ok(ExpertStacks {
            arch,
            n_expert: n_expert as usize,
            n_layer,
            seen: vec![Default::default(); n_layer],
        })
    }

    /// Takes checkpoint tensor `source` if it is one expert's matrix: `Ok(None)` if it is not
    /// one, `Ok(Some(stacks))` with the block's stacked tensors once it completes them (empty
    /// before).
    fn add(
        &mut self,
        ckpt: &Checkpoint,
        source: usize,
    ) -> std::result::Result<Option<Vec<PlannedTensor>>, String> {
        let t = &ckpt.tensors[source];
        let Some((bid, xid, role)) = hf_expert(&t.name) else {
            return Ok(None);
        };
        if self.n_expert == 0 {
            return Err(format!(
                "cannot map tensor {} of a {} model",
                t.name, self.arch.gguf_name
            ));
        }
        if bid >= self.n_layer || xid >= self.n_expert || t.shape.len() != 2 {
            return Err(format!(
                "tensor {} does not fit {} blocks of {} experts",
                t.name, self.n_layer, self.n_expert
            ));
        }
        let block = &mut self.seen[bid];
        block.insert((role, xid), source);
        if block.len() < 3 * self.n_expert {
            return Ok(Some(Vec::new()));
        }
        let block = std::mem::take(block);
        let order = self.arch.conversion.expert_order;
        order
            .iter()
            .map(|&role| {
                let parts: Vec<usize> = (0..self.n_expert).map(|x| block[&(role, x)]).collect();
                let shape = &ckpt.tensors[parts[0]].shape;
                if let Some(&odd) = parts.iter().find(|&&p| ckpt.tensors[p].shape != *shape) {
                    return Err(format!(
                        "expert tensor {} has shape {:?}, its block's first {:?}",
                        ckpt.tensors[odd].name, ckpt.tensors[odd].shape, shape
                    ));
                }
                Ok(PlannedTensor {
                    name: role.name(bid),
                    dims: vec![shape[1] as u64, shape[0] as u64, self.n_expert as u64],
                    source: TensorSource::Rows(
                        parts
                            .into_iter()
                            .map(|tensor| RowRange {
                                tensor,
                                first: 0,
                                rows: shape[0],
                            })
                            .collect(),
                    ),
                    rope_heads: None,
                    keep_f32: false,
                    offset: 0.0,
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Fails if a block is missing some of its experts' matrices (the converter's "Unprocessed
    /// experts").
    fn finish(&self) -> std::result::Result<(), String> {
        match self.seen.iter().position(|b| !b.is_empty()) {
            None => Ok(()),
            Some(bid) => Err(format!(
                "block {bid} has {} of its {} expert matrices",
                self.seen[bid].len(),
                3 * self.n_expert
            )),
        }
    }
}

/// The block, expert and stacked role of one expert's matrix: Mixtral's
/// `model.layers.B.block_sparse_moe.experts.E.w1|w2|w3.weight` (gate, down, up) or Qwen's
/// `model.layers.B.mlp.experts.E.gate_proj|up_proj|down_proj.weight`.
fn hf_expert(name: &str) -> Option<(usize, usize, Role)> {
    let rest = name
        .replace("language_model.", "")
        .strip_prefix("model.layers.")?
        .to_string();
    let (bid, rest) = rest.split_once('.')?;
    let rest = rest
        .strip_prefix("block_sparse_moe.experts.")
        .or_else(|| rest.strip_prefix("mlp.experts."))?;
    let (xid, matrix) = rest.split_once('.')?;
    let role = match matrix {
        "w1.weight" | "gate_proj.weight" => Role::FfnGateExps,
        "w2.weight" | "down_proj.weight" => Role::FfnDownExps,
        "w3.weight" | "up_proj.weight" => Role::FfnUpExps,
        _ => return None,
    };
    Some((bid.parse().ok()?, xid.parse().ok()?, role))
}

/// The converter's view of rope settings: `rope_parameters` (or `rope_scaling`) with the global
/// `rope_theta` mirrored in.
pub(crate) struct RopeParams {
    pub(crate) rope_type: Option<String>,
    pub(crate) factor: Option<f64>,
    pub(crate) theta: Option<f64>,
    /// `rope_parameters.sliding_attention.rope_theta`: the base of sliding-window layers.
    pub(crate) theta_swa: Option<f64>,
    /// Share of each head RoPE rotates (`partial_rotary_factor`, mirrored from the config).
    pub(crate) partial_rotary_factor: Option<f64>,
    /// `original_max_position_embeddings` (mirrored from the config).
    pub(crate) original_ctx: Option<f64>,
    /// LongRoPE's per-pair divisors beyond and within the original context.
    pub(crate) long_factor: Option<Vec<f64>>,
    pub(crate) short_factor: Option<Vec<f64>>,
    pub(crate) llama3: Llama3Rope,
}

/// `rope_type = "llama3"` settings, with the converter's defaults.
pub(crate) struct Llama3Rope {
    pub(crate) factor: f64,
    pub(crate) low_freq_factor: f64,
    pub(crate) high_freq_factor: f64,
    pub(crate) original_ctx: f64,
}

impl RopeParams {
    pub(crate) fn from_config(config: &Config) -> RopeParams {
        let empty = serde_json::Map::new();
        let params = ["rope_parameters", "rope_scaling"]
            .iter()
            .find_map(|k| config.json.get(*k).filter(|v| !v.is_null()))
            .and_then(serde_json::Value::as_object)
            .unwrap_or(&empty);
        let per_layer_type =
            params.contains_key("full_attention") || params.contains_key("sliding_attention");
        let theta_swa = match per_layer_type {
            true => params
                .get("sliding_attention")
                .and_then(|p| p.get("rope_theta"))
                .and_then(serde_json::Value::as_f64),
            false => config.find_f64(&[
                "local_rope_theta",
                "rope_local_theta",
                "rope_theta_local",
                "swa_rope_theta",
                "rope_local_base_freq",
            ]),
        };
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
        let factors = |key: &str| -> Option<Vec<f64>> {
            params
                .get(key)?
                .as_array()?
                .iter()
                .map(serde_json::Value::as_f64)
                .collect()
        };
        RopeParams {
            rope_type,
            factor: params.get("factor").and_then(serde_json::Value::as_f64),
            theta,
            theta_swa,
            partial_rotary_factor: params
                .get("partial_rotary_factor")
                .and_then(|v| v.as_f64())
                .or_else(|| {
                    config.find_f64(&["partial_rotary_factor", "rope_pct", "rope_percent"])
                }),
            original_ctx: params
                .get("original_max_position_embeddings")
                .and_then(|v| v.as_f64())
                .or_else(|| config.find_f64(&["original_max_position_embeddings"])),
            long_factor: factors("long_factor"),
            short_factor: factors("short_factor"),
            llama3: Llama3Rope {
                factor: num("factor", 8.0),
                low_freq_factor: num("low_freq_factor", 1.0),
                high_freq_factor: num("high_freq_factor", 4.0),
                original_ctx,
            },
        }
    }
}

/// The block role of a Hugging Face tensor's name within its block (`self_attn.q_proj`), as
/// gguf-py's `TensorNameMap` maps the Llama-style names every family here uses.
fn hf_block_role(part: &str, suffix: &str) -> Option<Role> {
    let role = match (part, suffix) {
        ("input_layernorm", "weight") => Role::AttnNorm,
        ("self_attn.q_proj", "weight") => Role::AttnQ,
        ("self_attn.k_proj", "weight") => Role::AttnK,
        ("self_attn.v_proj", "weight") => Role::AttnV,
        ("self_attn.qkv_proj", "weight") => Role::AttnQkv,
        ("self_attn.q_proj", "bias") => Role::AttnQBias,
        ("self_attn.k_proj", "bias") => Role::AttnKBias,
        ("self_attn.v_proj", "bias") => Role::AttnVBias,
        ("self_attn.q_norm", "weight") => Role::AttnQNorm,
        ("self_attn.k_norm", "weight") => Role::AttnKNorm,
        ("self_attn.o_proj", "weight") => Role::AttnOutput,
        ("post_attention_layernorm", "weight") => Role::FfnNorm,
        ("pre_feedforward_layernorm", "weight") => Role::FfnNorm,
        ("post_feedforward_layernorm", "weight") => Role::FfnPostNorm,
        ("mlp.gate_proj", "weight") => Role::FfnGate,
        ("mlp.up_proj", "weight") => Role::FfnUp,
        ("mlp.gate_up_proj", "weight") => Role::FfnGateUp,
        ("mlp.down_proj", "weight") => Role::FfnDown,
        ("mlp.gate", "weight") | ("block_sparse_moe.gate", "weight") => Role::FfnGateInp,
        _ => return None,
    };
    Some(role)
}

/// `TextModel.filter_tensors`: the vision and audio towers and projectors of a multimodal
/// checkpoint, which a text model's conversion leaves out.
fn is_multimodal(name: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: [&str; 17] = [
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p))
}

/// Maps a Hugging Face tensor name to its GGUF name for `arch` (`None` for tensors the converter
/// drops): through the tensor's role, which the architecture must have.
fn gguf_tensor_name(
    arch: &Architecture,
    hf: &str,
    n_layer: u64,
) -> std::result::Result<Option<String>, String> {
    if hf.ends_with(".attention.masked_bias")
        || hf.ends_with(".attention.bias")
        || hf.ends_with(".rotary_emb.inv_freq")
    {
        return Ok(None);
    }
    if is_multimodal(hf) {
        return Ok(None);
    }
    let cannot = || format!("cannot map tensor {hf} of a {} model", arch.gguf_name);
    let (stem, suffix) = match hf.rsplit_once('.') {
        Some((s, x @ ("weight" | "bias"))) => (s, x),
        _ => return Err(cannot()),
    };
    let stem = stem.replace("language_model.", "");
    let global = match (stem.as_str(), suffix) {
        ("model.embed_tokens", "weight") => Some(Role::TokenEmbd),
        ("model.norm", "weight") => Some(Role::OutputNorm),
        ("lm_head", "weight") => Some(Role::Output),
        _ => None,
    };
    if let Some(role) = global {
        return Ok(Some(role.name(0)));
    }
    let rest = stem.strip_prefix("model.layers.").ok_or_else(cannot)?;
    let (bid, part) = rest.split_once('.').ok_or_else(cannot)?;
    let bid: u64 = bid.parse().map_err(|_| cannot())?;
    if bid >= n_layer {
        return Err(format!(
            "tensor {hf} belongs to block {bid} but config.json has {n_layer} layers"
        ));
    }
    let role = match hf_block_role(part, suffix) {
        // With sandwich norms (Gemma) the norm after attention is its own, and the FFN's comes
        // from `pre_feedforward_layernorm`.
        Some(Role::FfnNorm)
            if part == "post_attention_layernorm" && arch.has(Role::AttnPostNorm) =>
        {
            Some(Role::AttnPostNorm)
        }
        other => other,
    };
    match role {
        Some(role) if arch.has(role) => Ok(Some(role.name(bid as usize))),
        _ => Err(cannot()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_the_converter() {
        let llama = &crate::llama::LLAMA;
        let qwen2 = &crate::qwen2::QWEN2;
        let map = |a, n, l| gguf_tensor_name(a, n, l).unwrap().unwrap();
        assert_eq!(
            map(llama, "model.layers.3.mlp.down_proj.weight", 5),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(
            map(qwen2, "model.layers.0.self_attn.q_proj.bias", 1),
            "blk.0.attn_q.bias"
        );
        assert_eq!(map(llama, "lm_head.weight", 1), "output.weight");
        assert_eq!(
            gguf_tensor_name(llama, "model.layers.0.self_attn.rotary_emb.inv_freq", 1).unwrap(),
            None
        );
        // A role the family does not have is not silently mapped.
        assert!(gguf_tensor_name(llama, "model.layers.0.self_attn.q_proj.bias", 1).is_err());
        assert!(gguf_tensor_name(llama, "model.layers.0.self_attn.q_norm.weight", 1).is_err());
        assert!(gguf_tensor_name(llama, "model.layers.5.mlp.up_proj.weight", 5).is_err());
        assert!(gguf_tensor_name(llama, "model.extra.weight", 5).is_err());
        // A multimodal checkpoint's towers are left out, as TextModel.filter_tensors does.
        assert_eq!(
            gguf_tensor_name(llama, "vision_tower.patch.weight", 5),
            Ok(None)
        );
        // Gemma's sandwich norms: the norm after attention is its own.
        let gemma = &crate::gemma3::GEMMA3;
        assert_eq!(
            map(gemma, "model.layers.1.post_attention_layernorm.weight", 2),
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(
            map(
                gemma,
                "model.language_model.layers.1.pre_feedforward_layernorm.weight",
                2
            ),
            "blk.1.ffn_norm.weight"
        );
    }
}

//! Hyper-parameters from GGUF metadata: [`KeyReader`] reads `<arch>.*` keys of any architecture
//! (quantization needs only a few, for every family llama-quantize takes), and [`Hparams`] is the
//! checked shape and constants of a model smelt runs — the one reader evaluation, pruning and
//! training share. A key whose meaning smelt does not implement is refused, so a model is never
//! evaluated approximately.

use std::path::Path;

use formats::gguf::{GgufFile, Metadata, Value};
use formats::{FormatError, Result};

use crate::{by_gguf_name, supported_names, Architecture, Role};

/// Typed access to a model's `<arch>.*` keys, with errors naming the file and the key.
pub struct KeyReader<'a> {
    metadata: &'a Metadata,
    path: &'a Path,
    arch: &'a str,
}

impl<'a> KeyReader<'a> {
    /// The keys of the metadata's own architecture (`general.architecture`, which must be set)
    /// of the model at `path` (named in errors).
    pub fn new(metadata: &'a Metadata, path: &'a Path) -> Result<KeyReader<'a>> {
        let arch = metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| FormatError::new(path, "general.architecture is missing"))?;
        Ok(KeyReader {
            metadata,
            path,
            arch,
        })
    }

    /// `general.architecture`.
    pub fn arch(&self) -> &'a str {
        self.arch
    }

    /// The full name of key `k` (`llama.block_count` for `block_count`).
    pub fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// An error about `file` naming nothing else.
    pub fn error(&self, message: impl Into<String>) -> FormatError {
        FormatError::new(self.path, message)
    }

    /// An unsigned integer key, if present.
    pub fn uint(&self, k: &str) -> Result<Option<usize>> {
        match self.metadata.get(&self.key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(v as usize))
                .ok_or_else(|| self.error(format!("{} is not an unsigned integer", self.key(k)))),
        }
    }

    /// An unsigned integer key that must be present and non-zero.
    pub fn need(&self, k: &str) -> Result<usize> {
        self.uint(k)?
            .filter(|&v| v > 0)
            .ok_or_else(|| self.error(format!("{} is missing or zero", self.key(k))))
    }

    /// A float key, if present as F32 or F64.
    pub fn float(&self, k: &str) -> Option<f32> {
        match self.metadata.get(&self.key(k)) {
            Some(Value::F32(v)) => Some(*v),
            Some(Value::F64(v)) => Some(*v as f32),
            _ => None,
        }
    }

    /// Any key's value.
    pub fn value(&self, k: &str) -> Option<&'a Value> {
        self.metadata.get(&self.key(k))
    }
}

/// The shape and constants of a model smelt runs, from `<arch>.*` metadata keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    /// The architecture (`general.architecture`).
    pub arch: &'static Architecture,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (fewer than `n_head` with grouped-query attention).
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Hidden width of the feed-forward network.
    pub n_ff: usize,
    /// Vocabulary size (rows of the token embedding).
    pub n_vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dims: usize,
    /// Factor on every rotation angle: `1 / rope.scaling.factor` for linear scaling, else 1.
    pub rope_freq_scale: f32,
    /// Context length the model was trained with (informational).
    pub n_ctx_train: usize,
    /// Sliding-window width of local blocks (0: every block attends to all earlier positions).
    pub n_swa: usize,
    /// Whether each block is a local (sliding-window) one; all false without a window.
    pub swa_layers: Vec<bool>,
    /// RoPE base of local blocks (`rope.freq_base_swa`, llama.cpp's default 10000).
    pub rope_base_swa: f32,
    /// Final logit soft-cap `c` (`c · tanh(z / c)`); 0 for none.
    pub final_logit_softcap: f32,
    /// The attention scale (`1/√head_dim` but for Gemma 3 27B).
    pub attention_scale: f32,
    /// Factor on RoPE's cosines and sines (`rope.scaling.attn_factor`: LongRoPE's), else 1.
    pub rope_attn_factor: f32,
    /// The context RoPE was trained for, past which LongRoPE's long factors apply
    /// (`rope.scaling.original_context_length`, else the training context).
    pub n_ctx_orig: usize,
    /// Experts of each mixture-of-experts block (0: a dense model).
    pub n_expert: usize,
    /// Experts each token is routed to.
    pub n_expert_used: usize,
    /// Hidden width of one expert's feed-forward network (`expert_feed_forward_length`, else
    /// `feed_forward_length`).
    pub n_ff_exp: usize,
}

impl Hparams {
    /// The sliding window of block `layer`, if it is a local one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.swa_layers[layer].then_some(self.n_swa)
    }

    /// The per-pair RoPE divisors a model evaluated with contexts of `n_ctx` positions uses
    /// (llama.cpp's `get_rope_factors`): LongRoPE's long factors past the original context, its
    /// short ones within it, or Llama 3's `rope_freqs`. The file may lack the tensor (an unscaled
    /// model).
    pub fn rope_factors_role(&self, n_ctx: usize) -> Role {
        match self.arch.has(Role::RopeFactorsLong) {
            true if n_ctx > self.n_ctx_orig => Role::RopeFactorsLong,
            true => Role::RopeFactorsShort,
            false => Role::RopeFreqs,
        }
    }

    /// RoPE base and linear frequency scale of the global blocks, or of the `local` ones: those
    /// have their own base and no scaling (llama.cpp's `rope_freq_base_train_swa`,
    /// `rope_freq_scale_train_swa`).
    pub fn rope_of(&self, local: bool) -> (f32, f32) {
        match local {
            true => (self.rope_base_swa, 1.0),
            false => (self.rope_base, self.rope_freq_scale),
        }
    }
}

impl Hparams {
    /// Reads and checks the hyper-parameters of `file`, which must be of an architecture smelt
    /// runs and carry no key it does not implement.
    pub fn read(file: &GgufFile) -> Result<Hparams> {
        let keys = KeyReader::new(&file.metadata, file.path())?;
        let arch = by_gguf_name(keys.arch()).ok_or_else(|| {
            keys.error(format!(
                "architecture {} is not supported ({})",
                keys.arch(),
                supported_names()
            ))
        })?;
        check_keys(&keys, arch)?;
        let n_embd = keys.need("embedding_length")?;
        let n_head = keys.need("attention.head_count")?;
        let n_head_kv = keys.uint("attention.head_count_kv")?.unwrap_or(n_head);
        let key_length = keys.uint("attention.key_length")?;
        if n_embd % n_head != 0 && key_length.is_none() {
            return Err(keys.error(format!(
                "{}: n_head {n_head} does not divide the width {n_embd}",
                keys.key("attention.head_count")
            )));
        }
        let head_dim = key_length.unwrap_or(n_embd / n_head.max(1));
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(keys.error(format!(
                "{}: {n_head_kv} key/value heads do not divide {n_head} heads",
                keys.key("attention.head_count_kv")
            )));
        }
        let rope_dims = keys.uint("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims > head_dim || rope_dims % 2 != 0 {
            return Err(keys.error(format!(
                "{} = {rope_dims} does not fit a head of {head_dim}",
                keys.key("rope.dimension_count")
            )));
        }
        if keys
            .uint("attention.value_length")?
            .is_some_and(|v| v != head_dim)
        {
            return Err(keys.error(format!(
                "{} differs from the key width {head_dim}",
                keys.key("attention.value_length")
            )));
        }
        if keys
            .value("attention.causal")
            .is_some_and(|v| *v != Value::Bool(true))
        {
            return Err(keys.error(format!(
                "{}: only causal attention is implemented",
                keys.key("attention.causal")
            )));
        }
        let n_vocab = file
            .tensor("token_embd.weight")
            .and_then(|t| t.info.dims.get(1).copied())
            .ok_or_else(|| keys.error("tensor token_embd.weight is missing"))?
            as usize;
        let n_layer: usize = keys.need("block_count")?;
        if n_layer > file.tensors.len() {
            return Err(keys.error(format!(
                "{} is {n_layer}, but the file holds only {} tensors",
                keys.key("block_count"),
                file.tensors.len()
            )));
        }
        let (n_swa, swa_layers) = sliding_window(&keys, arch, n_layer)?;
        let n_ff = keys.need("feed_forward_length")?;
        let (n_expert, n_expert_used) = experts(&keys, arch)?;
        let attention_scale = (arch.attention_scale)(n_layer, n_embd, n_head, head_dim);
        Ok(Hparams {
            arch,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_vocab,
            rms_eps: keys
                .float("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            rope_base: keys.float("rope.freq_base").unwrap_or(10000.0),
            rope_dims,
            rope_freq_scale: rope_freq_scale(&keys)?,
            n_ctx_train: keys.uint("context_length")?.unwrap_or(0),
            n_swa,
            swa_layers,
            rope_base_swa: keys.float("rope.freq_base_swa").unwrap_or(10000.0),
            final_logit_softcap: keys.float("final_logit_softcapping").unwrap_or(0.0),
            attention_scale,
            rope_attn_factor: keys.float("rope.scaling.attn_factor").unwrap_or(1.0),
            n_ctx_orig: keys
                .uint("rope.scaling.original_context_length")?
                .or(keys.uint("context_length")?)
                .unwrap_or(0),
            n_expert,
            n_expert_used,
            n_ff_exp: keys.uint("expert_feed_forward_length")?.unwrap_or(n_ff),
        })
    }
}

/// The `<arch>.*` keys whose meaning the forward pass implements (or, like the layer-norm epsilon
/// of an RMSNorm model, that llama.cpp ignores for these architectures too).
const KNOWN_KEYS: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "vocab_size",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "attention.causal",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
];

/// Refuses a model with an `<arch>.*` key smelt does not implement: evaluating it without that
/// key's effect would be silently approximate.
fn check_keys(keys: &KeyReader, arch: &Architecture) -> Result<()> {
    let prefix = keys.key("");
    for (k, _) in keys.metadata.iter() {
        if let Some(rest) = k.strip_prefix(&prefix) {
            if !KNOWN_KEYS.contains(&rest) && !arch.keys.contains(&rest) {
                return Err(keys.error(format!(
                    "key {k} is not implemented by smelt's {} forward pass",
                    keys.arch()
                )));
            }
        }
    }
    Ok(())
}

/// `expert_count` and `expert_used_count`: both 0 for a dense model; a family with experts
/// needs them, and each token uses between 1 and all of them.
fn experts(keys: &KeyReader, arch: &Architecture) -> Result<(usize, usize)> {
    let n_expert = keys.uint("expert_count")?.unwrap_or(0);
    if n_expert == 0 {
        return match arch.is_moe() {
            true => Err(keys.error(format!("{} is missing or zero", keys.key("expert_count")))),
            false => Ok((0, 0)),
        };
    }
    let used = keys.uint("expert_used_count")?.unwrap_or(0);
    if used == 0 || used > n_expert {
        return Err(keys.error(format!(
            "{} = {used} is not between 1 and the {n_expert} experts",
            keys.key("expert_used_count")
        )));
    }
    Ok((n_expert, used))
}

/// The sliding window and which blocks use it, as llama.cpp's `load_swa_pattern` reads them: no
/// window when `attention.sliding_window` is absent or 0; otherwise the per-block flags of
/// `attention.sliding_window_pattern` (an array), or its period `n` (a number; the family's
/// default without one), block `i` being local unless `i % n == n − 1` (`n` = 0: all local).
fn sliding_window(
    keys: &KeyReader,
    arch: &Architecture,
    n_layer: usize,
) -> Result<(usize, Vec<bool>)> {
    let n_swa = keys.uint("attention.sliding_window")?.unwrap_or(0);
    let default = match arch.sliding_window_pattern {
        Some(n) if n_swa > 0 => n,
        _ => return Ok((0, vec![false; n_layer])),
    };
    let name = keys.key("attention.sliding_window_pattern");
    let layers = match keys.value("attention.sliding_window_pattern") {
        Some(Value::Array(_, items)) => {
            if items.len() > n_layer {
                return Err(keys.error(format!("{name} lists {} blocks of {n_layer}", items.len())));
            }
            let mut flags = vec![false; n_layer];
            for (flag, item) in flags.iter_mut().zip(items) {
                *flag = match item {
                    Value::Bool(b) => *b,
                    other => other
                        .as_u64()
                        .map(|v| v != 0)
                        .ok_or_else(|| keys.error(format!("{name} is not an array of flags")))?,
                };
            }
            flags
        }
        Some(v) => {
            let n = v
                .as_u64()
                .ok_or_else(|| keys.error(format!("{name} is neither a number nor an array")))?
                as usize;
            (0..n_layer).map(|i| n == 0 || i % n < n - 1).collect()
        }
        None => (0..n_layer)
            .map(|i| default == 0 || i % default < default - 1)
            .collect(),
    };
    Ok((n_swa, layers))
}

/// llama.cpp's `rope_freq_scale_train`: `1 / rope.scaling.factor` (1 when unset or 0), for
/// unscaled or linearly scaled RoPE; other scaling types are refused.
fn rope_freq_scale(keys: &KeyReader) -> Result<f32> {
    match keys.value("rope.scaling.type").map(Value::as_str) {
        None | Some(Some("none" | "linear")) => {}
        Some(other) => {
            return Err(keys.error(format!(
                "{} = {} is not implemented (none, linear)",
                keys.key("rope.scaling.type"),
                other.unwrap_or("a non-string")
            )))
        }
    }
    match keys.value("rope.scaling.factor") {
        None => Ok(1.0),
        Some(Value::F32(f)) if *f == 0.0 => Ok(1.0),
        Some(Value::F32(f)) if f.is_finite() && *f > 0.0 => Ok(1.0 / f),
        Some(v) => Err(keys.error(format!(
            "{} = {v:?} is not a positive number",
            keys.key("rope.scaling.factor")
        ))),
    }
}

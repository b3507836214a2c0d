//! A Llama-family model read from a GGUF file: hyperparameters from the metadata and every tensor
//! checked against them before anything runs, so a file whose metadata and tensors disagree is
//! refused with its name and the first mismatch instead of failing halfway through a pass.

use std::path::Path;

use formats::gguf::{GgmlType, GgufFile, TensorEntry, Value};
use formats::{FormatError, Result};

/// How rotary position embedding pairs up a head's dimensions (ggml's `rope` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(x[2i], x[2i+1])` — llama (whose converter permutes Q/K for it).
    Normal,
    /// Halves `(x[i], x[i + n/2])` — qwen2 (GPT-NeoX style).
    Neox,
}

/// The shape and constants of a model, from `<arch>.*` metadata keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    /// `general.architecture`: `llama` or `qwen2`.
    pub arch: String,
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
    /// RoPE pairing.
    pub rope_mode: RopeMode,
    /// Context length the model was trained with (informational).
    pub n_ctx_train: usize,
}

/// A weight matrix left in its file encoding: `rows` outputs of `cols` inputs each.
#[derive(Debug, Clone)]
pub struct Weight {
    /// Tensor name (`blk.0.attn_q.weight`), the key imatrix statistics are filed under.
    pub name: String,
    /// Encoding of the rows.
    pub ty: GgmlType,
    /// Output features (ggml `ne1`).
    pub rows: usize,
    /// Input features (ggml `ne0`, the row length).
    pub cols: usize,
    entry: TensorEntry,
}

/// One transformer block's tensors.
#[derive(Debug, Clone)]
pub struct Layer {
    /// RMSNorm weight before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: Weight,
    /// Key projection.
    pub wk: Weight,
    /// Value projection.
    pub wv: Weight,
    /// Query/key/value biases (qwen2).
    pub bq: Option<Vec<f32>>,
    /// Key bias.
    pub bk: Option<Vec<f32>>,
    /// Value bias.
    pub bv: Option<Vec<f32>>,
    /// Attention output projection.
    pub wo: Weight,
    /// RMSNorm weight before the feed-forward network.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate projection.
    pub gate: Weight,
    /// SwiGLU up projection.
    pub up: Weight,
    /// Down projection.
    pub down: Weight,
}

/// An opened model: the memory-mapped file plus its checked tensor table.
pub struct Model {
    file: GgufFile,
    /// Shape and constants.
    pub hparams: Hparams,
    /// Token embedding (`token_embd.weight`), one row per token.
    pub token_embd: Weight,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// Output projection; the token embedding itself when the model ties them.
    pub output: Weight,
    /// Transformer blocks in order.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Opens `path` and checks that every tensor the architecture needs is there with the shape
    /// the metadata implies and a type smelt can decode.
    pub fn open(path: &Path) -> Result<Model> {
        let file = GgufFile::open(path)?;
        let hparams = read_hparams(&file)?;
        let tensors = Tensors {
            file: &file,
            hp: &hparams,
        };
        let h = &hparams;
        let q_width = h.n_head * h.head_dim;
        let kv_width = h.n_head_kv * h.head_dim;
        let token_embd = tensors.weight("token_embd.weight", h.n_embd, h.n_vocab)?;
        let output = match file.tensor("output.weight") {
            Some(_) => tensors.weight("output.weight", h.n_embd, h.n_vocab)?,
            None => token_embd.clone(),
        };
        let output_norm = tensors.vector("output_norm.weight", h.n_embd)?;
        let biases = h.arch == "qwen2";
        let mut layers = Vec::with_capacity(h.n_layer);
        for i in 0..h.n_layer {
            let name = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, n: usize| -> Result<Option<Vec<f32>>> {
                match biases {
                    true => tensors.vector(&name(s), n).map(Some),
                    false => Ok(None),
                }
            };
            layers.push(Layer {
                attn_norm: tensors.vector(&name("attn_norm.weight"), h.n_embd)?,
                wq: tensors.weight(&name("attn_q.weight"), h.n_embd, q_width)?,
                wk: tensors.weight(&name("attn_k.weight"), h.n_embd, kv_width)?,
                wv: tensors.weight(&name("attn_v.weight"), h.n_embd, kv_width)?,
                bq: bias("attn_q.bias", q_width)?,
                bk: bias("attn_k.bias", kv_width)?,
                bv: bias("attn_v.bias", kv_width)?,
                wo: tensors.weight(&name("attn_output.weight"), q_width, h.n_embd)?,
                ffn_norm: tensors.vector(&name("ffn_norm.weight"), h.n_embd)?,
                gate: tensors.weight(&name("ffn_gate.weight"), h.n_embd, h.n_ff)?,
                up: tensors.weight(&name("ffn_up.weight"), h.n_embd, h.n_ff)?,
                down: tensors.weight(&name("ffn_down.weight"), h.n_ff, h.n_embd)?,
            });
        }
        Ok(Model {
            file,
            hparams,
            token_embd,
            output_norm,
            output,
            layers,
        })
    }

    /// The underlying file (metadata for the tokenizer, the path for messages).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The encoded bytes of `weight`.
    pub fn bytes(&self, weight: &Weight) -> &[u8] {
        self.file.data(&weight.entry)
    }
}

struct Tensors<'a> {
    file: &'a GgufFile,
    hp: &'a Hparams,
}

impl Tensors<'_> {
    fn find(&self, name: &str) -> Result<&TensorEntry> {
        self.file.tensor(name).ok_or_else(|| {
            FormatError::new(
                self.file.path(),
                format!("tensor {name} is missing (needed by {})", self.hp.arch),
            )
        })
    }

    fn weight(&self, name: &str, cols: usize, rows: usize) -> Result<Weight> {
        let entry = self.find(name)?;
        let dims = &entry.info.dims;
        if dims.len() != 2 || dims[0] != cols as u64 || dims[1] != rows as u64 {
            return Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} has shape {dims:?}, but the metadata implies [{cols}, {rows}]"
                ),
            ));
        }
        let ty = entry.info.ggml_type;
        if !quantize::types::can_dequantize(ty) {
            return Err(FormatError::new(
                self.file.path(),
                format!("tensor {name} is {}, which smelt cannot decode", ty.name()),
            ));
        }
        Ok(Weight {
            name: name.to_string(),
            ty,
            rows,
            cols,
            entry: entry.clone(),
        })
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let w = self.weight_1d(name, len)?;
        let mut out = vec![0.0; len];
        quantize::dequantize(w.info.ggml_type, self.file.data(w), &mut out)
            .map_err(|e| FormatError::new(self.file.path(), format!("tensor {name}: {e}")))?;
        Ok(out)
    }

    fn weight_1d(&self, name: &str, len: usize) -> Result<&TensorEntry> {
        let entry = self.find(name)?;
        let dims = &entry.info.dims;
        if dims.iter().product::<u64>() != len as u64 || dims[0] != len as u64 {
            return Err(FormatError::new(
                self.file.path(),
                format!("tensor {name} has shape {dims:?}, but the metadata implies [{len}]"),
            ));
        }
        Ok(entry)
    }
}

fn read_hparams(file: &GgufFile) -> Result<Hparams> {
    let path = file.path();
    let arch = file
        .architecture()
        .ok_or_else(|| FormatError::new(path, "general.architecture is missing"))?
        .to_string();
    let rope_mode = match arch.as_str() {
        "llama" => RopeMode::Normal,
        "qwen2" => RopeMode::Neox,
        other => {
            return Err(FormatError::new(
                path,
                format!("architecture {other} is not supported (llama, qwen2)"),
            ))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        match file.metadata.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| {
                FormatError::new(path, format!("{} is not an unsigned integer", key(k)))
            }),
        }
    };
    let need = |k: &str| -> Result<usize> {
        uint(k)?
            .filter(|&v| v > 0)
            .ok_or_else(|| FormatError::new(path, format!("{} is missing or zero", key(k))))
    };
    let float = |k: &str| match file.metadata.get(&key(k)) {
        Some(Value::F32(v)) => Some(*v),
        Some(Value::F64(v)) => Some(*v as f32),
        _ => None,
    };
    let n_embd = need("embedding_length")?;
    let n_head = need("attention.head_count")?;
    let n_head_kv = uint("attention.head_count_kv")?.unwrap_or(n_head);
    if n_embd % n_head != 0 && uint("attention.key_length")?.is_none() {
        return Err(FormatError::new(
            path,
            format!(
                "{}: n_head {n_head} does not divide the width {n_embd}",
                key("attention.head_count")
            ),
        ));
    }
    let head_dim = uint("attention.key_length")?.unwrap_or(n_embd / n_head.max(1));
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(FormatError::new(
            path,
            format!(
                "{}: {n_head_kv} key/value heads do not divide {n_head} heads",
                key("attention.head_count_kv")
            ),
        ));
    }
    let rope_dims = uint("rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dims > head_dim || rope_dims % 2 != 0 {
        return Err(FormatError::new(
            path,
            format!(
                "{} = {rope_dims} does not fit a head of {head_dim}",
                key("rope.dimension_count")
            ),
        ));
    }
    let n_vocab = file
        .tensor("token_embd.weight")
        .and_then(|t| t.info.dims.get(1).copied())
        .ok_or_else(|| FormatError::new(path, "tensor token_embd.weight is missing"))?
        as usize;
    Ok(Hparams {
        n_embd,
        n_layer: need("block_count")?,
        n_head,
        n_head_kv,
        head_dim,
        n_ff: need("feed_forward_length")?,
        n_vocab,
        rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_base: float("rope.freq_base").unwrap_or(10000.0),
        rope_dims,
        rope_mode,
        n_ctx_train: uint("context_length")?.unwrap_or(0),
        arch,
    })
}

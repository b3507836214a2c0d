//! A Llama-family model read from a GGUF file: hyperparameters from the metadata and every tensor
//! checked against them before anything runs, so a file whose metadata and tensors disagree is
//! refused with its name and the first mismatch instead of failing halfway through a pass.

use std::path::Path;

use arch::Hparams;
use formats::gguf::{GgmlType, GgufFile, TensorEntry};
use formats::{FormatError, Result};

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
    /// Per-pair divisors of RoPE frequencies (`rope_freqs.weight`, Llama 3's rope scaling).
    pub rope_factors: Option<Vec<f32>>,
}

impl Model {
    /// Opens `path` and checks that every tensor the architecture needs is there with the shape
    /// the metadata implies and a type smelt can decode.
    pub fn open(path: &Path) -> Result<Model> {
        let file = GgufFile::open(path)?;
        let hparams = Hparams::read(&file)?;
        let tensors = Tensors {
            file: &file,
            hp: &hparams,
            used: Default::default(),
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
        let rope_factors = match file.tensor(ROPE_FREQS) {
            Some(_) => Some(tensors.vector(ROPE_FREQS, h.rope_dims / 2)?),
            None => None,
        };
        let biases = h.arch.qkv_bias;
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
        tensors.all_used()?;
        Ok(Model {
            file,
            hparams,
            token_embd,
            output_norm,
            output,
            layers,
            rope_factors,
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

/// Llama 3's RoPE frequency divisors, one per rotated pair.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Looks tensors up for [`Model::open`] and remembers which it took, so that a tensor the
/// evaluation would ignore is found.
struct Tensors<'a> {
    file: &'a GgufFile,
    hp: &'a Hparams,
    used: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl Tensors<'_> {
    /// Refuses a model with a tensor the forward pass did not take: its meaning is not
    /// implemented, and evaluating without it would be silently approximate.
    fn all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        match self
            .file
            .tensors
            .iter()
            .find(|t| !used.contains(&t.info.name))
        {
            None => Ok(()),
            Some(t) => Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {} is not implemented by smelt's {} forward pass, \
                     which refuses to evaluate the model without it",
                    t.info.name, self.hp.arch.gguf_name
                ),
            )),
        }
    }

    fn find(&self, name: &str) -> Result<&TensorEntry> {
        self.used.borrow_mut().insert(name.to_string());
        self.file.tensor(name).ok_or_else(|| {
            FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} is missing (needed by {})",
                    self.hp.arch.gguf_name
                ),
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

//! A Llama-family model read from a GGUF file: hyperparameters from the metadata and every tensor
//! checked against them before anything runs, so a file whose metadata and tensors disagree is
//! refused with its name and the first mismatch instead of failing halfway through a pass.

use std::path::Path;

use arch::{Hparams, Role, TensorSpec};
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
    /// RMSNorm weights over each query and each key head, before RoPE (qwen3).
    pub q_norm: Option<Vec<f32>>,
    /// Key-head norm weight.
    pub k_norm: Option<Vec<f32>>,
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
            specs: arch::tensors::tensors(&hparams),
        };
        let token_embd = tensors.weight(Role::TokenEmbd, 0)?;
        let output = match tensors.present(Role::Output, 0) {
            true => tensors.weight(Role::Output, 0)?,
            false => token_embd.clone(),
        };
        let output_norm = tensors.vector(Role::OutputNorm, 0)?;
        let rope_factors = match tensors.present(Role::RopeFreqs, 0) {
            true => Some(tensors.vector(Role::RopeFreqs, 0)?),
            false => None,
        };
        let layers = (0..hparams.n_layer)
            .map(|i| {
                let optional = |role: Role| -> Result<Option<Vec<f32>>> {
                    match hparams.arch.has(role) {
                        true => tensors.vector(role, i).map(Some),
                        false => Ok(None),
                    }
                };
                Ok(Layer {
                    attn_norm: tensors.vector(Role::AttnNorm, i)?,
                    wq: tensors.weight(Role::AttnQ, i)?,
                    wk: tensors.weight(Role::AttnK, i)?,
                    wv: tensors.weight(Role::AttnV, i)?,
                    bq: optional(Role::AttnQBias)?,
                    bk: optional(Role::AttnKBias)?,
                    bv: optional(Role::AttnVBias)?,
                    q_norm: optional(Role::AttnQNorm)?,
                    k_norm: optional(Role::AttnKNorm)?,
                    wo: tensors.weight(Role::AttnOutput, i)?,
                    ffn_norm: tensors.vector(Role::FfnNorm, i)?,
                    gate: tensors.weight(Role::FfnGate, i)?,
                    up: tensors.weight(Role::FfnUp, i)?,
                    down: tensors.weight(Role::FfnDown, i)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tensors.all_known()?;
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

    /// The block matrix of `role` in block `layer`.
    pub fn weight(&self, role: Role, layer: usize) -> &Weight {
        let l = &self.layers[layer];
        match role {
            Role::AttnQ => &l.wq,
            Role::AttnK => &l.wk,
            Role::AttnV => &l.wv,
            Role::AttnOutput => &l.wo,
            Role::FfnGate => &l.gate,
            Role::FfnUp => &l.up,
            Role::FfnDown => &l.down,
            other => panic!("{other:?} is not a matrix of a block"),
        }
    }

    /// The vector (norm weight or bias) of `role` in block `layer` (model-wide roles ignore
    /// `layer`); panics when the architecture has none.
    pub fn vector(&self, role: Role, layer: usize) -> &[f32] {
        let l = &self.layers[layer];
        let v = match role {
            Role::OutputNorm => Some(&self.output_norm),
            Role::AttnNorm => Some(&l.attn_norm),
            Role::FfnNorm => Some(&l.ffn_norm),
            Role::AttnQBias => l.bq.as_ref(),
            Role::AttnKBias => l.bk.as_ref(),
            Role::AttnVBias => l.bv.as_ref(),
            Role::AttnQNorm => l.q_norm.as_ref(),
            Role::AttnKNorm => l.k_norm.as_ref(),
            _ => None,
        };
        v.unwrap_or_else(|| panic!("the model has no {role:?} vector"))
    }

    /// The encoded bytes of `weight`.
    pub fn bytes(&self, weight: &Weight) -> &[u8] {
        self.file.data(&weight.entry)
    }
}

/// Looks up and checks a model's tensors against its architecture's tensor list.
struct Tensors<'a> {
    file: &'a GgufFile,
    hp: &'a Hparams,
    specs: Vec<TensorSpec>,
}

impl Tensors<'_> {
    /// Refuses a model with a tensor its architecture does not list: its meaning is not
    /// implemented, and evaluating without it would be silently approximate.
    fn all_known(&self) -> Result<()> {
        let known: std::collections::HashSet<&str> =
            self.specs.iter().map(|s| s.name.as_str()).collect();
        match self
            .file
            .tensors
            .iter()
            .find(|t| !known.contains(t.info.name.as_str()))
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

    /// Whether the file has the tensor of `role` in block `layer`.
    fn present(&self, role: Role, layer: usize) -> bool {
        self.file.tensor(&role.name(layer)).is_some()
    }

    /// The spec of `role` in block `layer` and its entry in the file.
    fn find(&self, role: Role, layer: usize) -> Result<(&TensorSpec, &TensorEntry)> {
        let name = role.name(layer);
        let spec = self
            .specs
            .iter()
            .find(|s| s.name == name)
            .expect("the forward pass asks only for its architecture's tensors");
        let entry = self.file.tensor(&name).ok_or_else(|| {
            FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} is missing (needed by {})",
                    self.hp.arch.gguf_name
                ),
            )
        })?;
        let dims = &entry.info.dims;
        if dims.len() != spec.dims.len()
            || dims.iter().zip(&spec.dims).any(|(a, b)| *a != *b as u64)
        {
            return Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} has shape {dims:?}, but the metadata implies {:?}",
                    spec.dims
                ),
            ));
        }
        Ok((spec, entry))
    }

    fn weight(&self, role: Role, layer: usize) -> Result<Weight> {
        let (spec, entry) = self.find(role, layer)?;
        let ty = entry.info.ggml_type;
        if !quantize::types::can_dequantize(ty) {
            return Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {} is {}, which smelt cannot decode",
                    spec.name,
                    ty.name()
                ),
            ));
        }
        Ok(Weight {
            name: spec.name.clone(),
            ty,
            rows: spec.dims[1],
            cols: spec.dims[0],
            entry: entry.clone(),
        })
    }

    fn vector(&self, role: Role, layer: usize) -> Result<Vec<f32>> {
        let (spec, entry) = self.find(role, layer)?;
        let mut out = vec![0.0; spec.dims[0]];
        quantize::dequantize(entry.info.ggml_type, self.file.data(entry), &mut out).map_err(
            |e| FormatError::new(self.file.path(), format!("tensor {}: {e}", spec.name)),
        )?;
        Ok(out)
    }
}

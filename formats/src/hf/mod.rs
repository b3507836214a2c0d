//! Hugging Face checkpoint import: the folder, its config and tokenizer, and the [`ConversionPlan`]
//! that says which GGUF tensors and metadata llama.cpp's `convert_hf_to_gguf.py` (0c1e57098) would
//! write for it.

mod arch;
pub mod checkpoint;
pub mod config;
mod naming;
pub mod synthetic;
pub mod vocab;

pub use arch::{Arch, SUPPORTED};
pub use checkpoint::{Checkpoint, CheckpointTensor, FloatType};
pub use naming::size_label;

use crate::gguf::{Metadata, Value};
use crate::{FormatError, Result};

/// One GGUF tensor to be produced from a checkpoint tensor.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Dimensions in ggml order (the checkpoint shape reversed).
    pub dims: Vec<u64>,
    /// Where the values come from.
    pub source: TensorSource,
    /// Rows are permuted from HF's rotate-half Q/K layout to llama.cpp's, with this many heads.
    pub rope_heads: Option<usize>,
    /// The converter keeps this tensor in F32 whatever the output type (1-D tensors, norms, biases).
    pub keep_f32: bool,
}

/// Where a planned tensor's values come from.
#[derive(Debug, Clone)]
pub enum TensorSource {
    /// The checkpoint tensor at this index of [`Checkpoint::tensors`].
    Checkpoint(usize),
    /// Values the converter computes from the config (Llama 3's `rope_freqs`), as f32 bytes.
    Computed(Vec<u8>),
}

impl PlannedTensor {
    /// The stored source values and their encoding.
    pub fn data<'a>(&'a self, ckpt: &'a Checkpoint) -> (&'a [u8], FloatType) {
        match &self.source {
            TensorSource::Checkpoint(i) => {
                let t = &ckpt.tensors[*i];
                (ckpt.bytes(t), t.dtype)
            }
            TensorSource::Computed(bytes) => (bytes, FloatType::F32),
        }
    }

    /// The file and name that messages about the source give: the checkpoint shard and tensor,
    /// or `config.json` for a computed tensor.
    pub fn origin(&self, ckpt: &Checkpoint) -> (std::path::PathBuf, String) {
        match &self.source {
            TensorSource::Checkpoint(i) => {
                let t = &ckpt.tensors[*i];
                (ckpt.shard_path(t).to_path_buf(), t.name.clone())
            }
            TensorSource::Computed(_) => (ckpt.config.path().to_path_buf(), self.name.clone()),
        }
    }

    /// Drops the source's pages once the tensor is written (see [`Checkpoint::release`]).
    pub fn release(&self, ckpt: &Checkpoint) {
        if let TensorSource::Checkpoint(i) = self.source {
            ckpt.release(&ckpt.tensors[i]);
        }
    }

    /// Length of one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }

    /// Number of rows (all dims but the first).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }

    /// The source row that becomes output row `row`.
    pub fn source_row(&self, row: usize) -> usize {
        match self.rope_heads {
            None => row,
            Some(heads) => {
                // HF: rows [head][half][pos]; llama.cpp: rows [head][pos][half].
                let half = self.n_rows() / heads / 2;
                let (head, within) = (row / (2 * half), row % (2 * half));
                head * 2 * half + (within % 2) * half + within / 2
            }
        }
    }
}

/// What a conversion writes: metadata (complete but for what the output type decides) and tensors.
pub struct ConversionPlan {
    /// The architecture.
    pub arch: Arch,
    /// GGUF metadata in the converter's order.
    pub metadata: Metadata,
    /// Tensors in the converter's order.
    pub tensors: Vec<PlannedTensor>,
}

/// Plans the conversion of `ckpt`; `file_type` is llama.cpp's `general.file_type` for the output.
pub fn plan(ckpt: &Checkpoint, file_type: u32) -> Result<ConversionPlan> {
    let config = &ckpt.config;
    let arch = Arch::from_config(config)?;
    let dims = arch::Dims::from_config(config)?;
    let mut tensors: Vec<PlannedTensor> = arch::extra_tensors(arch, config)?;
    for (source, t) in ckpt.tensors.iter().enumerate() {
        let name = match arch::gguf_tensor_name(&t.name, dims.n_layer) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(msg) => return Err(FormatError::new(ckpt.shard_path(t), msg)),
        };
        let rope_heads = if !arch.undo_rope_permute() {
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
        let keep_f32 =
            t.shape.len() <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight");
        let dims: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push(PlannedTensor {
            name,
            dims: if dims.is_empty() { vec![1] } else { dims },
            source: TensorSource::Checkpoint(source),
            rope_heads,
            keep_f32,
        });
    }
    if !tensors.iter().any(|t| t.name == "token_embd.weight") {
        return Err(FormatError::new(
            ckpt.dir(),
            "no model.embed_tokens.weight tensor",
        ));
    }

    let mut md = Metadata::new();
    md.set(
        "general.architecture",
        Value::String(arch.gguf_name().into()),
    );
    md.set("general.type", Value::String("model".into()));
    let total: u64 = tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum();
    let dir_name = ckpt
        .dir()
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    naming::add_naming(&mut md, &dir_name, total);
    arch::add_parameters(arch, config, &dims, file_type, &mut md)?;
    md.set("general.quantization_version", Value::U32(2));
    vocab::add_vocab(arch.vocab_style(), ckpt.dir(), config, &mut md)?;
    Ok(ConversionPlan {
        arch,
        metadata: md,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_matches_the_converter() {
        // permute(w, n_head) = w.reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2)
        let t = PlannedTensor {
            name: "q".into(),
            dims: vec![1, 8],
            source: TensorSource::Checkpoint(0),
            rope_heads: Some(2),
            keep_f32: false,
        };
        let order: Vec<usize> = (0..8).map(|r| t.source_row(r)).collect();
        assert_eq!(order, [0, 2, 1, 3, 4, 6, 5, 7]);
    }
}

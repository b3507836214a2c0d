//! Hugging Face checkpoint import: the folder, its config and tokenizer, and the [`ConversionPlan`]
//! type — which GGUF tensors and metadata a conversion writes and where each tensor's values come
//! from. What a family makes of a checkpoint (`convert_hf_to_gguf.py`'s per-model logic) is
//! `arch::convert`, which fills the plan.

pub mod checkpoint;
pub mod config;
mod naming;
pub mod synthetic;
pub mod vocab;

pub use checkpoint::{Checkpoint, CheckpointTensor, FloatType};
pub use naming::{add_naming, size_label};

use crate::gguf::Metadata;

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
    /// Added to every value in the source's precision (f32, or f16 for an f16 source; Gemma's
    /// norm weights, stored as `w` for `1 + w`); 0 for most tensors.
    pub offset: f32,
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
    /// GGUF metadata in the converter's order.
    pub metadata: Metadata,
    /// Tensors in the converter's order.
    pub tensors: Vec<PlannedTensor>,
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
            offset: 0.0,
        };
        let order: Vec<usize> = (0..8).map(|r| t.source_row(r)).collect();
        assert_eq!(order, [0, 2, 1, 3, 4, 6, 5, 7]);
    }
}

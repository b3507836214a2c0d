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
pub use naming::{add_naming, size_label, ParamCount};

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
    /// Rows of several checkpoint tensors one after another (a mixture-of-experts model's
    /// per-expert matrices stacked into one 3-D tensor, or a fused gate/up stack split in two).
    Rows(Vec<RowRange>),
    /// Values the converter computes from the config (Llama 3's `rope_freqs`), as f32 bytes.
    Computed(Vec<u8>),
}

/// Rows `first..first + rows` of the checkpoint tensor `tensor`, a part of a
/// [`TensorSource::Rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRange {
    /// Index in [`Checkpoint::tensors`].
    pub tensor: usize,
    /// First row (rows of the tensor's last dimension).
    pub first: usize,
    /// Number of rows.
    pub rows: usize,
}

impl PlannedTensor {
    /// The element type of the source values.
    pub fn dtype(&self, ckpt: &Checkpoint) -> FloatType {
        match &self.source {
            TensorSource::Checkpoint(i) => ckpt.tensors[*i].dtype,
            TensorSource::Rows(parts) => parts
                .first()
                .map_or(FloatType::F32, |p| ckpt.tensors[p.tensor].dtype),
            TensorSource::Computed(_) => FloatType::F32,
        }
    }

    /// Bytes of source values the tensor is made of (for progress bars).
    pub fn source_len(&self, ckpt: &Checkpoint) -> u64 {
        (self.row_len() * self.n_rows() * self.dtype(ckpt).size()) as u64
    }

    /// The stored source values of output row `row` (Q/K rows permuted, experts stacked).
    pub fn row_bytes<'a>(&'a self, ckpt: &'a Checkpoint, row: usize) -> &'a [u8] {
        let in_row = self.row_len() * self.dtype(ckpt).size();
        let (bytes, row) = match &self.source {
            TensorSource::Checkpoint(i) => (ckpt.bytes(&ckpt.tensors[*i]), self.source_row(row)),
            TensorSource::Computed(bytes) => (bytes.as_slice(), self.source_row(row)),
            TensorSource::Rows(parts) => {
                let mut row = self.source_row(row);
                let part = parts
                    .iter()
                    .find(|p| {
                        let inside = row < p.rows;
                        if !inside {
                            row -= p.rows;
                        }
                        inside
                    })
                    .expect("row within the planned rows");
                (ckpt.bytes(&ckpt.tensors[part.tensor]), part.first + row)
            }
        };
        &bytes[row * in_row..(row + 1) * in_row]
    }

    /// The file and name that messages about the source give: the checkpoint shard and tensor,
    /// or `config.json` for a computed tensor.
    pub fn origin(&self, ckpt: &Checkpoint) -> (std::path::PathBuf, String) {
        match &self.source {
            TensorSource::Checkpoint(i) => {
                let t = &ckpt.tensors[*i];
                (ckpt.shard_path(t).to_path_buf(), t.name.clone())
            }
            TensorSource::Rows(parts) => {
                let t = &ckpt.tensors[parts[0].tensor];
                (ckpt.shard_path(t).to_path_buf(), t.name.clone())
            }
            TensorSource::Computed(_) => (ckpt.config.path().to_path_buf(), self.name.clone()),
        }
    }

    /// Drops the source's pages once the tensor is written (see [`Checkpoint::release`]).
    pub fn release(&self, ckpt: &Checkpoint) {
        match &self.source {
            TensorSource::Checkpoint(i) => ckpt.release(&ckpt.tensors[*i]),
            TensorSource::Rows(parts) => {
                for p in parts {
                    ckpt.release(&ckpt.tensors[p.tensor]);
                }
            }
            TensorSource::Computed(_) => {}
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

//! Checkpoint → GGUF conversion: which ggml type each tensor gets (llama.cpp converter's rules) and
//! the streaming loop that decodes checkpoint rows, checks them, encodes them and hands them to the
//! GGUF writer a bounded chunk at a time.

use std::fmt;
use std::path::Path;

use formats::gguf::split::{SetWriter, SplitLimit};
use formats::gguf::{GgmlType, TensorInfo};
use formats::hf::{Checkpoint, ConversionPlan, FloatType, PlannedTensor};
use formats::FormatError;
use rayon::prelude::*;

/// `--outtype` of `smelt convert`: the types llama.cpp's converter can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    /// Everything F32.
    F32,
    /// Matrices F16.
    F16,
    /// Matrices BF16.
    BF16,
    /// Matrices Q8_0 (F16 where a row is not a multiple of 32).
    Q8_0,
}

impl OutType {
    /// Parses `f32`, `f16`, `bf16` or `q8_0` (any case).
    pub fn from_name(name: &str) -> Option<OutType> {
        match name.to_ascii_lowercase().as_str() {
            "f32" => Some(OutType::F32),
            "f16" => Some(OutType::F16),
            "bf16" => Some(OutType::BF16),
            "q8_0" => Some(OutType::Q8_0),
            _ => None,
        }
    }

    /// llama.cpp's `general.file_type` (`LlamaFileType`) for the output.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::BF16 => 32,
            OutType::Q8_0 => 7,
        }
    }

    /// The ggml type matrices get.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// The checkpoint's own float type: that of its first tensor with two or more dimensions.
    pub fn native(ckpt: &Checkpoint) -> OutType {
        match ckpt
            .tensors
            .iter()
            .find(|t| t.shape.len() >= 2)
            .map(|t| t.dtype)
        {
            Some(FloatType::BF16) => OutType::BF16,
            Some(FloatType::F16) => OutType::F16,
            _ => OutType::F32,
        }
    }
}

/// The type llama.cpp's converter gives `t`: F32 for what it keeps in F32, else the output type,
/// falling back to F16 when a row is not a whole number of blocks.
pub fn tensor_type(t: &PlannedTensor, out: OutType) -> GgmlType {
    if t.keep_f32 {
        return GgmlType::F32;
    }
    let ty = out.ggml_type();
    if t.row_len().is_multiple_of(ty.block_size()) {
        ty
    } else {
        GgmlType::F16
    }
}

/// Why a conversion stopped.
#[derive(Debug)]
pub enum ConvertError {
    /// A file problem (input or output).
    Format(FormatError),
    /// A tensor holds NaN or ±Inf (pass `allow_nonfinite` to convert it anyway).
    NonFinite {
        /// The shard holding it.
        file: std::path::PathBuf,
        /// The checkpoint tensor name.
        tensor: String,
        /// The offending value.
        value: f32,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Format(e) => e.fmt(f),
            ConvertError::NonFinite {
                file,
                tensor,
                value,
            } => {
                write!(f, "{}: tensor {tensor} contains {value} (use --allow-nonfinite to convert anyway)", file.display())
            }
        }
    }
}

impl std::error::Error for ConvertError {}

impl From<FormatError> for ConvertError {
    fn from(e: FormatError) -> Self {
        ConvertError::Format(e)
    }
}

/// Options of one conversion.
pub struct ConvertOptions<'a> {
    /// The output type.
    pub out_type: OutType,
    /// Convert tensors holding NaN/Inf instead of refusing.
    pub allow_nonfinite: bool,
    /// Called with the number of source bytes done after each chunk (for progress bars).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Write a split set (llama-gguf-split's layout) instead of one file.
    pub split: Option<SplitLimit>,
}

/// Values decoded per chunk: bounds the working memory at ~16 MiB of f32 plus its encoding.
const CHUNK_VALUES: usize = 1 << 22;

/// Converts `ckpt` as planned into a GGUF at `out` (or the split set it names), streaming tensor
/// by tensor; returns the files written.
pub fn write_gguf(
    ckpt: &Checkpoint,
    plan: &ConversionPlan,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<Vec<std::path::PathBuf>, ConvertError> {
    let infos: Vec<TensorInfo> = plan
        .tensors
        .iter()
        .map(|t| TensorInfo {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ggml_type: tensor_type(t, opts.out_type),
        })
        .collect();
    let mut writer = SetWriter::create(out, &plan.metadata, &infos, opts.split)?;
    let paths = writer.paths().to_vec();
    for (t, info) in plan.tensors.iter().zip(&infos) {
        write_tensor(ckpt, t, info.ggml_type, &mut writer, opts)?;
    }
    writer.finish()?;
    Ok(paths)
}

fn write_tensor(
    ckpt: &Checkpoint,
    t: &PlannedTensor,
    ty: GgmlType,
    writer: &mut SetWriter,
    opts: &ConvertOptions,
) -> Result<(), ConvertError> {
    let dtype = t.dtype(ckpt);
    let (row_len, n_rows) = (t.row_len(), t.n_rows());
    let in_row = row_len * dtype.size();
    let out_row = ty
        .bytes_for(row_len as u64)
        .expect("row fits the chosen type") as usize;
    let rows_per_chunk = (CHUNK_VALUES / row_len.max(1)).max(1);
    let mut encoded = Vec::new();
    for first in (0..n_rows).step_by(rows_per_chunk) {
        let rows = rows_per_chunk.min(n_rows - first);
        encoded.resize(rows * out_row, 0);
        let bad = encoded
            .par_chunks_mut(out_row)
            .enumerate()
            .map_init(
                || vec![0f32; row_len],
                |values, (i, dst)| {
                    decode_row(ckpt, t, first + i, values);
                    let bad = values.iter().copied().find(|v| !v.is_finite());
                    crate::quantize(ty, values, dst).expect("row length checked against the type");
                    bad
                },
            )
            .find_any(|b| b.is_some())
            .flatten();
        if let (Some(value), false) = (bad, opts.allow_nonfinite) {
            let (file, tensor) = t.origin(ckpt);
            return Err(ConvertError::NonFinite {
                file,
                tensor,
                value,
            });
        }
        writer.write(&encoded)?;
        (opts.progress)((rows * in_row) as u64);
    }
    t.release(ckpt);
    Ok(())
}

/// Output row `row` of the planned tensor `t` as the converter computes it: its source row (Q/K
/// rows permuted, experts stacked) decoded to f32, plus the tensor's offset.
pub fn decode_row(ckpt: &Checkpoint, t: &PlannedTensor, row: usize, dst: &mut [f32]) {
    let dtype = t.dtype(ckpt);
    decode(dtype, t.row_bytes(ckpt, row), dst);
    if t.offset != 0.0 {
        add_offset(dst, t.offset, dtype);
    }
}

/// `convert_hf_to_gguf.py`'s `data_torch + offset` on decoded source values: the sum is rounded
/// to f16 for an f16 source (torch adds in the tensor's type), kept in f32 otherwise (the converter
/// widens bf16 to f32 first).
fn add_offset(values: &mut [f32], offset: f32, dtype: FloatType) {
    for v in values {
        *v += offset;
        if dtype == FloatType::F16 {
            *v = half::f16::from_f32(*v).to_f32();
        }
    }
}

/// Decodes little-endian checkpoint values to f32 (exact for all three types).
pub fn decode(dtype: FloatType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        FloatType::F32 => crate::types::dequantize(GgmlType::F32, src, dst),
        FloatType::F16 => crate::types::dequantize(GgmlType::F16, src, dst),
        FloatType::BF16 => crate::types::dequantize(GgmlType::BF16, src, dst),
    }
    .expect("checkpoint rows are whole");
}

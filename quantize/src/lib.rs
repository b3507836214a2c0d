//! smelt's numbers: ggml tensor encodings that reproduce llama.cpp's reference quantizers byte for
//! byte (`ggml/src/ggml-quants.c` at 0c1e57098), and the conversion policy that decides which
//! encoding each tensor of a checkpoint gets.
//!
//! Each encoding lives in its own module under [`types`] with its block layout, its quantizer and
//! dequantizer, and their tests. The scalar code defines the bytes; anything faster must match it.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod activation;
pub mod allocation;
pub mod convert;
pub mod imatrix;
pub mod job;
pub mod mixture;
pub mod prune;
pub mod types;

use formats::gguf::GgmlType;

/// Why a row could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    /// smelt has no encoder (or decoder) for this type yet.
    #[error("{0} is not supported for this operation yet")]
    Unsupported(GgmlType),
    /// The type's encoder needs importance weights and none were given.
    #[error("{0} needs an importance matrix (--imatrix)")]
    NeedsImportance(GgmlType),
    /// The row is not a whole number of blocks.
    #[error("row of {len} values is not a multiple of {ty}'s block size {block}")]
    NotBlockMultiple {
        /// The type.
        ty: GgmlType,
        /// The row length.
        len: usize,
        /// The type's block size.
        block: usize,
    },
}

pub use types::{dequantize, quantize};

//! GGUF v3: the container llama.cpp loads.
//!
//! Layout (little endian): magic `GGUF`, version 3, tensor count (u64), metadata count (u64), the
//! metadata key/value pairs, the tensor infos (name, dims in ggml order, type id, offset), padding to
//! the alignment (32 unless `general.alignment` says otherwise), then every tensor's bytes, each
//! padded to the alignment.

mod metadata;
mod reader;
mod shard;
pub mod split;
mod types;
mod writer;

pub use metadata::{Metadata, Value, ValueType};
pub use reader::GgufFile;
pub use shard::TensorEntry;
pub use types::GgmlType;
pub use writer::{file_size, temp_path_for, write_atomically, Completed, GgufWriter, TensorInfo};

/// The four magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The only GGUF version smelt reads and writes.
pub const VERSION: u32 = 3;
/// Data alignment used when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Rounds `n` up to a multiple of `align`.
pub fn pad_to(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

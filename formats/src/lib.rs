//! smelt's file formats: everything that knows how bytes are laid out on disk.
//!
//! * [`gguf`] — a typed GGUF v3 reader over a memory map and a streaming writer that never holds
//!   more than one tensor chunk in memory.
//! * [`hf`] — Hugging Face checkpoint folders: `config.json`, single or sharded safetensors
//!   (F32/F16/BF16, memory-mapped, zero-copy), tokenizers, and the plan that maps them onto the
//!   GGUF names, shapes and metadata that llama.cpp's `convert_hf_to_gguf.py` writes.
//! * [`digest`] — SHA-256 fingerprints of files and of a GGUF's tokenizer.
//! * [`imatrix`] — importance-matrix files (`llama-imatrix`'s GGUF and legacy `.dat` formats).
//! * [`kld_base`] — llama-perplexity's `--kl-divergence-base` files of saved log-probabilities.
//!
//! This crate knows files, not numbers: it hands out raw tensor bytes and row ranges, and leaves
//! encoding them (F16, Q8_0, …) to the `quantize` crate.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod digest;
mod direct;
mod error;
pub mod gguf;
pub mod hf;
pub mod imatrix;
pub mod kld_base;
mod pages;

pub use error::{FormatError, Result};

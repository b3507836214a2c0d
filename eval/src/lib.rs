//! smelt's model runtime and quality metrics: a CPU forward pass for every architecture `arch`
//! describes (dense or with experts) over GGUF files of any type smelt decodes, llama.cpp's
//! tokenizers, and the numbers llama.cpp's tools report — perplexity, KL divergence against a
//! base model, importance matrices.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod amx;
pub mod attention;
pub mod calibration;
mod experts;
pub mod fastmath;
mod float_gemm;
pub mod forward;
pub mod imatrix;
pub mod kld;
mod kquant_gemm;
mod lanes;
mod legacy_gemm;
pub mod linear;
pub mod model;
mod pair_tiles;
pub mod perplexity;
mod scratch;
pub mod sensitivity;
pub mod text;
pub mod tokenizer;

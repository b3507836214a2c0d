//! smelt's teacher–student distillation.
//!
//! * [`sdd`] — teacher datasets: a teacher's top-k log-probabilities over a text, compact,
//!   streamed and resumable.
//! * [`dataset`] — making them: running a teacher model over a text, or importing a llama.cpp
//!   `--kl-divergence-base` file.
//! * [`compare`] — a student's KL divergence (and llama-perplexity's other statistics) against a
//!   dataset instead of a full-vocabulary base.
//!
//! Errors are `formats::FormatError`s: each names the file it is about.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod compare;
pub mod dataset;
pub mod sdd;
pub mod train;

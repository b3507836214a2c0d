//! smelt's model runtime and quality metrics (perplexity, KL divergence, imatrix).
//!
//! Not built yet: this crate is reserved so the workspace layout is fixed from the start;
//! see the `eval` issue for what it will hold.

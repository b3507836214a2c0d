//! smelt's teacher–student datasets and distillation training.
//!
//! Not built yet: this crate is reserved so the workspace layout is fixed from the start;
//! see the `distill` issue for what it will hold.

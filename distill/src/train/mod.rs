//! Distillation training: a student's float tensors trained to match a teacher dataset.

pub mod ops;
pub mod student;

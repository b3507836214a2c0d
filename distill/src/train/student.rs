//! A student model held as f32 tensors for training: loaded from a GGUF, run forward over one
//! sequence through the shared block definition (on [`TrainGraph`]'s tape), and differentiated
//! with respect to every float tensor (quantized tensors stay frozen).

use std::collections::HashMap;

use arch::{Hparams, Presence, Role};
use eval::model::Model;
use formats::gguf::GgmlType;
use formats::{FormatError, Result};

/// One tensor of the student.
#[derive(Debug, Clone)]
pub struct Param {
    /// GGUF name.
    pub name: String,
    /// GGUF dims (row length first).
    pub dims: Vec<u64>,
    /// Encoding in the student file; float tensors are trained and written back in it.
    pub ty: GgmlType,
    /// Values.
    pub data: Vec<f32>,
    /// Whether training updates it (float tensors only).
    pub trainable: bool,
}

/// A trainable model of any architecture smelt runs: its block is `arch::graph::block`, the
/// definition evaluation uses, differentiated through [`TrainGraph`].
#[derive(Debug, Clone)]
pub struct Student {
    /// Every tensor of the GGUF, in file order.
    pub params: Vec<Param>,
    /// Shape and constants.
    pub shape: Hparams,
    /// Where each (role, block) tensor is in `params` (block 0 for model-wide roles).
    index: HashMap<(Role, usize), usize>,
}

/// How much each part of the objective weighs.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    /// Weight of the cross-entropy with the text's next token, beside the KL to the teacher.
    pub ce_weight: f32,
}

impl Student {
    /// The tensors of an opened model, decoded to f32.
    pub fn from_model(model: &Model) -> Result<Student> {
        let path = model.file().path();
        let file = model.file();
        let mut params = Vec::with_capacity(file.tensors.len());
        for t in &file.tensors {
            let mut data = vec![0.0f32; t.info.n_elements() as usize];
            quantize::dequantize(t.info.ggml_type, file.data(t), &mut data)
                .map_err(|e| FormatError::new(path, format!("{}: {e}", t.info.name)))?;
            params.push(Param {
                name: t.info.name.clone(),
                dims: t.info.dims.clone(),
                ty: t.info.ggml_type,
                trainable: matches!(
                    t.info.ggml_type,
                    GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
                ),
                data,
            });
        }
        Student::from_params(params, model.hparams.clone()).map_err(|m| FormatError::new(path, m))
    }

    /// A student of shape `shape` from tensors named as in GGUF (`output.weight` optional:
    /// tied to the embedding when absent). The architecture's constants (RoPE divisors) are
    /// never trained.
    pub fn from_params(
        mut params: Vec<Param>,
        shape: Hparams,
    ) -> std::result::Result<Student, String> {
        let mut index = HashMap::new();
        for spec in arch::tensors::tensors(&shape) {
            let key = (spec.role, spec.layer.unwrap_or(0));
            match params.iter().position(|p| p.name == spec.name) {
                Some(i) => {
                    index.insert(key, i);
                }
                None if spec.presence == Presence::Required => {
                    return Err(format!("no tensor {}", spec.name))
                }
                None => {}
            }
        }
        for role in [
            Role::RopeFreqs,
            Role::RopeFactorsLong,
            Role::RopeFactorsShort,
        ] {
            if let Some(&i) = index.get(&(role, 0)) {
                params[i].trainable = false;
            }
        }

        if !index.contains_key(&(Role::Output, 0)) {
            let embd = index[&(Role::TokenEmbd, 0)];
            index.insert((Role::Output, 0), embd);
        }
        Ok(Student {
            params,
            shape,
            index,
        })
    }

    /// The index in `params` of the tensor of `role` in block `layer`.
    pub(super) fn param(&self, role: Role, layer: usize) -> usize {
        self.index[&(role, if role.is_block() { layer } else { 0 })]
    }

    /// The values of parameter `i`.
    pub(super) fn data(&self, i: usize) -> &[f32] {
        &self.params[i].data
    }

    /// `(cols_in, cols_out)` of matrix parameter `i`.
    pub(super) fn matrix_dims(&self, i: usize) -> (usize, usize) {
        let d = &self.params[i].dims;
        (d[0] as usize, d[1] as usize)
    }

    /// The RoPE divisors for sequences of `n_ctx` positions, if the model has them.
    pub(super) fn rope_factors(&self, n_ctx: usize) -> Option<&[f32]> {
        let role = self.shape.rope_factors_role(n_ctx);
        self.index.get(&(role, 0)).map(|&i| self.data(i))
    }

    /// The gradient buffer of parameter `i`, if it is trained.
    pub(super) fn grad_of<'g>(&self, grads: &'g mut [Vec<f32>], i: usize) -> Option<&'g mut [f32]> {
        self.params[i].trainable.then(|| grads[i].as_mut_slice())
    }

    /// Zeroed gradients: one buffer per trainable tensor, empty for frozen ones.
    pub fn zero_grads(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|p| {
                if p.trainable {
                    vec![0.0; p.data.len()]
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::ops::tests::{check_direction, check_direction_within, noise};
    use super::*;
    use crate::sdd::{Selection, TeacherRow};
    use crate::train::loss::row_loss;

    /// A random two-block student of architecture `arch` with grouped-query attention and an
    /// untied output; its tensors are the architecture's list (Llama's with `rope_freqs`).
    pub(crate) fn tiny_student_of(arch: &'static arch::Architecture, seed: u64) -> Student {
        tiny_student_with(arch, arch.is_moe() as usize * 4, seed)
    }

    /// [`tiny_student_of`] with `n_expert` experts (two used per token) where the family has a
    /// form with experts.
    pub(crate) fn tiny_student_with(
        arch: &'static arch::Architecture,
        n_expert: usize,
        seed: u64,
    ) -> Student {
        let shape = Hparams {
            arch,
            n_embd: 8,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 4,
            n_ff: 12,
            n_vocab: 16,
            rms_eps: 1e-5,
            rope_base: 10_000.0,
            rope_dims: 4,
            rope_freq_scale: 1.0,
            n_ctx_train: 0,
            // A sliding-window family gets a local first block (window 2) and a soft-cap.
            n_swa: 2 * arch.sliding_window_pattern.is_some() as usize,
            swa_layers: vec![arch.sliding_window_pattern.is_some(), false],
            rope_base_swa: 1000.0,
            final_logit_softcap: 3.0 * arch.sliding_window_pattern.is_some() as u8 as f32,
            attention_scale: (arch.attention_scale)(2, 8, 4, 4),
            rope_attn_factor: 1.0,
            n_ctx_orig: 4,
            n_expert,
            n_expert_used: 2.min(n_expert),
            n_ff_exp: 12,
        };
        let params = arch::tensors::tensors(&shape)
            .into_iter()
            .enumerate()
            .map(|(k, spec)| {
                let n = spec.dims.iter().product::<usize>();
                let data = match (spec.role, spec.dims.len()) {
                    (Role::RopeFreqs | Role::RopeFactorsShort, _) => vec![1.0, 3.0],
                    (Role::RopeFactorsLong, _) => vec![2.0, 5.0],
                    (_, 1) => noise(n, seed + k as u64)
                        .iter()
                        .map(|v| 1.0 + 0.3 * v)
                        .collect(),
                    _ => noise(n, seed + k as u64).iter().map(|v| 0.5 * v).collect(),
                };
                Param {
                    name: spec.name,
                    dims: spec.dims.iter().map(|&d| d as u64).collect(),
                    ty: GgmlType::F32,
                    data,
                    trainable: true,
                }
            })
            .collect();
        Student::from_params(params, shape).unwrap()
    }

    /// [`tiny_student_of`] for Llama.
    pub(crate) fn tiny_student(seed: u64) -> Student {
        tiny_student_of(&arch::llama::LLAMA, seed)
    }

    /// Teacher rows for positions `first..t-1` of `tokens`.
    pub(crate) fn teacher_rows(tokens: &[u32], first: usize) -> Vec<TeacherRow> {
        (first..tokens.len() - 1)
            .map(|i| {
                let logits: Vec<f32> = noise(16, 100 + i as u64).iter().map(|v| 3.0 * v).collect();
                let sel = Selection {
                    top_k: 5,
                    max_rest: 0.0,
                    tail: 16,
                };
                TeacherRow::from_logits(&logits, tokens[i + 1], sel, i as u64)
            })
            .collect()
    }

    /// The whole model's gradient, tensor by tensor, against finite differences, through the
    /// shared block definition of every architecture (Llama with rope factors, Qwen2's biases and
    /// NeoX RoPE, Qwen3's q/k norms).
    #[test]
    fn student_gradients_match_finite_differences() {
        // Every family, and Llama with experts (Mixtral). Expert choice is a step: a seed whose
        // routing no difference quotient's step switches (seed 1's Mixtral has near ties, second
        // and third experts 2e-3 apart in probability, which the 1e-2 steps cross).
        let students = arch::ARCHITECTURES
            .iter()
            .map(|a| tiny_student_of(a, 1))
            .chain([tiny_student_with(&arch::llama::LLAMA, 4, 2)]);
        for student in students {
            let tokens = [1u32, 5, 9, 2, 15, 3, 3];
            let rows = teacher_rows(&tokens, 2);
            let objective = Objective { ce_weight: 0.5 };
            let mut grads = student.zero_grads();
            student.loss_and_grads(&tokens, 2, &rows, objective, Some(&mut grads));
            for (i, p) in student.params.iter().enumerate() {
                if !p.trainable {
                    assert!(p.name.starts_with("rope_"), "{} is frozen", p.name);
                    continue;
                }
                let f = |values: &[f32]| {
                    let mut s = student.clone();
                    s.params[i].data = values.to_vec();
                    let (kl, ce) = s.loss_and_grads(&tokens, 2, &rows, objective, None);
                    kl + 0.5 * ce
                };
                // Each operation's backward holds 1e-3 (ops.rs). Through a whole f32 model the
                // difference quotients carry up to ~4e-3 relative error, and ~1e-4 absolute on
                // near-zero derivatives (a key bias moves scores very little), while a wrongly
                // wired gradient is off by far more.
                check_direction_within(&f, &p.data, &grads[i], 7 + i as u64, (1e-2, 1e-2));
            }
        }
    }

    #[test]
    fn loss_gradient_matches_finite_differences() {
        let teacher = noise(20, 9).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
        let row = TeacherRow::from_logits(
            &teacher,
            7,
            Selection {
                top_k: 6,
                max_rest: 0.0,
                tail: 64,
            },
            3,
        );
        assert!(row.tail.len() >= 4, "{} tail samples", row.tail.len());
        let z = noise(20, 1);
        let objective = Objective { ce_weight: 0.3 };
        let mut dz = vec![0.0; 20];
        row_loss(&z, &row, objective, &mut dz);
        let f = |z: &[f32]| {
            let (kl, ce) = row_loss(z, &row, objective, &mut [0.0; 20]);
            kl + 0.3 * ce
        };
        check_direction(&f, &z, &dz, 2);
    }
}

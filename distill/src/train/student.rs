//! A student model held as f32 tensors for training: loaded from a GGUF, run forward over one
//! sequence keeping what the backward pass needs, and differentiated with respect to every
//! float tensor (quantized tensors stay frozen).

use arch::Role;
use eval::model::Model;
use formats::gguf::GgmlType;
use formats::{FormatError, Result};

use super::ops::{self, Heads, Rope};
use crate::compare::{log_softmax_shift, row_kld};
use crate::sdd::TeacherRow;

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

/// Indices of one block's tensors in [`Student::params`].
#[derive(Debug, Clone)]
struct BlockIndex {
    attn_norm: usize,
    wq: usize,
    wk: usize,
    wv: usize,
    wo: usize,
    ffn_norm: usize,
    gate: usize,
    up: usize,
    down: usize,
}

/// Shape constants of the student.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Residual width.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Head width.
    pub head_dim: usize,
    /// FFN width.
    pub n_ff: usize,
    /// Vocabulary.
    pub n_vocab: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base.
    pub rope_base: f32,
    /// RoPE dimensions.
    pub rope_dims: usize,
}

/// A trainable Llama.
#[derive(Debug, Clone)]
pub struct Student {
    /// Every tensor of the GGUF, in file order.
    pub params: Vec<Param>,
    /// Shape constants.
    pub shape: Shape,
    embd: usize,
    output: usize,
    output_norm: usize,
    blocks: Vec<BlockIndex>,
}

/// How much each part of the objective weighs.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    /// Weight of the cross-entropy with the text's next token, beside the KL to the teacher.
    pub ce_weight: f32,
}

impl Student {
    /// The tensors of an opened model, decoded to f32 (a `llama` model with normal RoPE and
    /// no biases).
    pub fn from_model(model: &Model) -> Result<Student> {
        let h = &model.hparams;
        let path = model.file().path();
        if h.arch != &arch::llama::LLAMA {
            return Err(FormatError::new(
                path,
                format!(
                    "training supports llama models; this is {}",
                    h.arch.gguf_name
                ),
            ));
        }
        if model.rope_factors.is_some() || h.rope_freq_scale != 1.0 {
            return Err(FormatError::new(
                path,
                "training does not implement scaled RoPE (rope_freqs or rope.scaling.factor)",
            ));
        }
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
        let shape = Shape {
            n_embd: h.n_embd,
            n_head: h.n_head,
            n_head_kv: h.n_head_kv,
            head_dim: h.head_dim,
            n_ff: h.n_ff,
            n_vocab: h.n_vocab,
            eps: h.rms_eps,
            rope_base: h.rope_base,
            rope_dims: h.rope_dims,
        };
        Student::from_params(params, shape, h.n_layer).map_err(|m| FormatError::new(path, m))
    }

    /// A student of `n_layer` blocks from tensors named as in GGUF (`output.weight` optional:
    /// tied to the embedding when absent).
    pub fn from_params(
        params: Vec<Param>,
        shape: Shape,
        n_layer: usize,
    ) -> std::result::Result<Student, String> {
        let find = |name: &str| -> std::result::Result<usize, String> {
            params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| format!("no tensor {name}"))
        };
        let embd = find(&Role::TokenEmbd.name(0))?;
        let output = find(&Role::Output.name(0)).unwrap_or(embd);
        let blocks = (0..n_layer)
            .map(|i| {
                let b = |role: Role| find(&role.name(i));
                Ok(BlockIndex {
                    attn_norm: b(Role::AttnNorm)?,
                    wq: b(Role::AttnQ)?,
                    wk: b(Role::AttnK)?,
                    wv: b(Role::AttnV)?,
                    wo: b(Role::AttnOutput)?,
                    ffn_norm: b(Role::FfnNorm)?,
                    gate: b(Role::FfnGate)?,
                    up: b(Role::FfnUp)?,
                    down: b(Role::FfnDown)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(Student {
            shape,
            output_norm: find(&Role::OutputNorm.name(0))?,
            params,
            embd,
            output,
            blocks,
        })
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

    /// Runs one sequence (`tokens`, BOS already in place) and, with `grads`, adds to them the
    /// gradient of the summed per-row loss (without, only the forward pass runs); `rows[i]` is the teacher at position `first + i`, predicting
    /// `tokens[first + i + 1]`. Returns the summed KL divergence and the summed cross-entropy.
    pub fn loss_and_grads(
        &self,
        tokens: &[u32],
        first: usize,
        rows: &[TeacherRow],
        objective: Objective,
        grads: Option<&mut [Vec<f32>]>,
    ) -> (f64, f64) {
        let s = self.shape;
        let (t, d) = (tokens.len(), s.n_embd);
        let p = |i: usize| self.params[i].data.as_slice();
        let heads = Heads {
            t,
            n_head: s.n_head,
            n_head_kv: s.n_head_kv,
            hd: s.head_dim,
        };
        let (qw, kw) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        let rope = Rope::new(t, s.rope_dims, s.rope_base);

        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&tok| p(self.embd)[tok as usize * d..][..d].iter().copied())
            .collect();
        let mut saved = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let x_in = x.clone();
            let (n1, inv1) = ops::rms_norm(&x, p(b.attn_norm), s.eps);
            let mut q = ops::linear(&n1, p(b.wq), t, d, qw);
            let mut k = ops::linear(&n1, p(b.wk), t, d, kw);
            let v = ops::linear(&n1, p(b.wv), t, d, kw);
            rope.apply(&mut q, qw, s.head_dim, 1.0);
            rope.apply(&mut k, kw, s.head_dim, 1.0);
            let (att, probs) = ops::attention(&q, &k, &v, heads);
            let o = ops::linear(&att, p(b.wo), t, qw, d);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let x_mid = x.clone();
            let (n2, inv2) = ops::rms_norm(&x, p(b.ffn_norm), s.eps);
            let gate = ops::linear(&n2, p(b.gate), t, d, s.n_ff);
            let up = ops::linear(&n2, p(b.up), t, d, s.n_ff);
            let act = ops::swiglu(&gate, &up);
            let down = ops::linear(&act, p(b.down), t, s.n_ff, d);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            saved.push(Saved {
                x_in,
                n1,
                inv1,
                q,
                k,
                v,
                att,
                probs,
                x_mid,
                n2,
                inv2,
                gate,
                up,
                act,
            });
        }

        // Output rows: the scored positions only.
        let n_out = rows.len();
        let xs = &x[first * d..(first + n_out) * d];
        let (nf, invf) = ops::rms_norm(xs, p(self.output_norm), s.eps);
        let logits = ops::linear(&nf, p(self.output), n_out, d, s.n_vocab);
        let mut dlogits = vec![0.0f32; logits.len()];
        let (mut kl_sum, mut ce_sum) = (0.0, 0.0);
        for (r, row) in rows.iter().enumerate() {
            let z = &logits[r * s.n_vocab..][..s.n_vocab];
            let (kl, ce) = row_loss(
                z,
                row,
                objective,
                &mut dlogits[r * s.n_vocab..][..s.n_vocab],
            );
            kl_sum += kl;
            ce_sum += ce;
        }
        let Some(grads) = grads else {
            return (kl_sum, ce_sum);
        };

        let dnf = self.backward_linear(grads, &dlogits, &nf, self.output, (n_out, d, s.n_vocab));
        let dxs = ops::rms_norm_backward(
            &dnf,
            xs,
            p(self.output_norm),
            &invf,
            self.grad_of(grads, self.output_norm),
        );
        let mut dx = vec![0.0f32; t * d];
        dx[first * d..(first + n_out) * d].copy_from_slice(&dxs);
        for (b, sv) in self.blocks.iter().zip(&saved).rev() {
            let dact = self.backward_linear(grads, &dx, &sv.act, b.down, (t, s.n_ff, d));
            let (dgate, dup) = ops::swiglu_backward(&dact, &sv.gate, &sv.up);
            let mut dn2 = self.backward_linear(grads, &dgate, &sv.n2, b.gate, (t, d, s.n_ff));
            let dn2_up = self.backward_linear(grads, &dup, &sv.n2, b.up, (t, d, s.n_ff));
            dn2.iter_mut().zip(&dn2_up).for_each(|(a, b)| *a += b);
            let dmid = ops::rms_norm_backward(
                &dn2,
                &sv.x_mid,
                p(b.ffn_norm),
                &sv.inv2,
                self.grad_of(grads, b.ffn_norm),
            );
            dx.iter_mut().zip(&dmid).for_each(|(a, b)| *a += b);
            let datt = self.backward_linear(grads, &dx, &sv.att, b.wo, (t, qw, d));
            let (mut dq, mut dk, dv) =
                ops::attention_backward(&datt, &sv.q, &sv.k, &sv.v, &sv.probs, heads);
            rope.apply(&mut dq, qw, s.head_dim, -1.0);
            rope.apply(&mut dk, kw, s.head_dim, -1.0);
            let mut dn1 = self.backward_linear(grads, &dq, &sv.n1, b.wq, (t, d, qw));
            for (dy, w) in [(&dk, b.wk), (&dv, b.wv)] {
                let part = self.backward_linear(grads, dy, &sv.n1, w, (t, d, kw));
                dn1.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
            let din = ops::rms_norm_backward(
                &dn1,
                &sv.x_in,
                p(b.attn_norm),
                &sv.inv1,
                self.grad_of(grads, b.attn_norm),
            );
            dx.iter_mut().zip(&din).for_each(|(a, b)| *a += b);
        }
        if self.params[self.embd].trainable {
            let g = &mut grads[self.embd];
            for (pos, &tok) in tokens.iter().enumerate() {
                let row = &mut g[tok as usize * d..][..d];
                row.iter_mut()
                    .zip(&dx[pos * d..][..d])
                    .for_each(|(a, b)| *a += b);
            }
        }
        (kl_sum, ce_sum)
    }

    fn grad_of<'g>(&self, grads: &'g mut [Vec<f32>], i: usize) -> Option<&'g mut [f32]> {
        self.params[i].trainable.then(|| grads[i].as_mut_slice())
    }

    fn backward_linear(
        &self,
        grads: &mut [Vec<f32>],
        dy: &[f32],
        x: &[f32],
        w: usize,
        shape: (usize, usize, usize),
    ) -> Vec<f32> {
        let weights = self.params[w].data.as_slice();
        ops::linear_backward(dy, x, weights, self.grad_of(grads, w), shape)
    }
}

/// What one block's forward pass keeps for the backward pass.
struct Saved {
    x_in: Vec<f32>,
    n1: Vec<f32>,
    inv1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    probs: Vec<f32>,
    x_mid: Vec<f32>,
    n2: Vec<f32>,
    inv2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

/// KL(teacher ‖ student) of one row over the teacher's kept tokens and the lumped rest, plus
/// the weighted cross-entropy with the target; writes the gradient with respect to the logits
/// `z` into `dz`. Returns (KL, cross-entropy).
pub fn row_loss(z: &[f32], row: &TeacherRow, objective: Objective, dz: &mut [f32]) -> (f64, f64) {
    let (_, shift) = log_softmax_shift(z);
    let d = row.distribution();
    let (kl, q_listed, q_rest) = row_kld(z, shift, &row.ids, &d);
    let rest_scale = (d.rest_log_prob as f64).exp() / q_rest;
    for (g, &v) in dz.iter_mut().zip(z) {
        let q = ((v - shift) as f64).exp();
        *g = (q * (1.0 - rest_scale) + objective.ce_weight as f64 * q) as f32;
    }
    // Listed tokens: q − p instead of q − r·q/q_rest.
    for ((&id, &lp), &q) in row.ids.iter().zip(&d.log_probs).zip(&q_listed) {
        dz[id as usize] = (q - (lp as f64).exp() + objective.ce_weight as f64 * q) as f32;
    }
    let ce = (shift - z[row.target as usize]) as f64;
    dz[row.target as usize] -= objective.ce_weight;
    (kl, ce)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::ops::tests::{check_direction, noise};
    use super::*;
    use crate::sdd::Selection;

    /// A random two-block student with grouped-query attention and an untied output.
    pub(crate) fn tiny_student(seed: u64) -> Student {
        let shape = Shape {
            n_embd: 8,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 2,
            n_ff: 12,
            n_vocab: 16,
            eps: 1e-5,
            rope_base: 10_000.0,
            rope_dims: 2,
        };
        let mut specs = vec![
            ("token_embd.weight".to_string(), vec![8, 16]),
            ("output_norm.weight".to_string(), vec![8]),
            ("output.weight".to_string(), vec![8, 16]),
        ];
        for i in 0..2 {
            for (n, dims) in [
                ("attn_norm", vec![8]),
                ("attn_q", vec![8, 8]),
                ("attn_k", vec![8, 4]),
                ("attn_v", vec![8, 4]),
                ("attn_output", vec![8, 8]),
                ("ffn_norm", vec![8]),
                ("ffn_gate", vec![8, 12]),
                ("ffn_up", vec![8, 12]),
                ("ffn_down", vec![12, 8]),
            ] {
                specs.push((format!("blk.{i}.{n}.weight"), dims));
            }
        }
        let params = specs
            .into_iter()
            .enumerate()
            .map(|(k, (name, dims))| {
                let n = dims.iter().product::<u64>() as usize;
                let data = if dims.len() == 1 {
                    noise(n, seed + k as u64)
                        .iter()
                        .map(|v| 1.0 + 0.3 * v)
                        .collect()
                } else {
                    noise(n, seed + k as u64).iter().map(|v| 0.5 * v).collect()
                };
                Param {
                    name,
                    dims,
                    ty: GgmlType::F32,
                    data,
                    trainable: true,
                }
            })
            .collect();
        Student::from_params(params, shape, 2).unwrap()
    }

    /// Teacher rows for positions `first..t-1` of `tokens`.
    pub(crate) fn teacher_rows(tokens: &[u32], first: usize) -> Vec<TeacherRow> {
        (first..tokens.len() - 1)
            .map(|i| {
                let logits: Vec<f32> = noise(16, 100 + i as u64).iter().map(|v| 3.0 * v).collect();
                let sel = Selection {
                    top_k: 5,
                    max_rest: 0.0,
                };
                TeacherRow::from_logits(&logits, tokens[i + 1], sel)
            })
            .collect()
    }

    /// The whole model's gradient, tensor by tensor, against finite differences.
    #[test]
    fn student_gradients_match_finite_differences() {
        let student = tiny_student(1);
        let tokens = [1u32, 5, 9, 2, 15, 3, 3];
        let rows = teacher_rows(&tokens, 2);
        let objective = Objective { ce_weight: 0.5 };
        let mut grads = student.zero_grads();
        student.loss_and_grads(&tokens, 2, &rows, objective, Some(&mut grads));
        for (i, p) in student.params.iter().enumerate() {
            let f = |values: &[f32]| {
                let mut s = student.clone();
                s.params[i].data = values.to_vec();
                let (kl, ce) = s.loss_and_grads(&tokens, 2, &rows, objective, None);
                kl + 0.5 * ce
            };
            check_direction(&f, &p.data, &grads[i], 7 + i as u64);
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
            },
        );
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

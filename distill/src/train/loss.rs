//! The training objective on one sequence: the student's forward pass (the architecture's block
//! on [`TrainGraph`]), the loss against the teacher's rows, and its gradient back through the
//! graph into every trainable tensor.

use arch::Role;

use super::graph::TrainGraph;
use super::ops;
use super::student::{Objective, Student};
use crate::compare::{log_softmax_shift, row_kld};
use crate::sdd::TeacherRow;

impl Student {
    /// Runs one sequence (`tokens`, BOS already in place) and, with `grads`, adds to them the
    /// gradient of the summed per-row loss (without, only the forward pass runs); `rows[i]` is
    /// the teacher at position `first + i`, predicting `tokens[first + i + 1]`. Returns the
    /// summed KL divergence and the summed cross-entropy.
    pub fn loss_and_grads(
        &self,
        tokens: &[u32],
        first: usize,
        rows: &[TeacherRow],
        objective: Objective,
        grads: Option<&mut [Vec<f32>]>,
    ) -> (f64, f64) {
        let s = &self.shape;
        let (t, d) = (tokens.len(), s.n_embd);
        let embd = self.param(Role::TokenEmbd, 0);
        let embedding_scale = arch::graph::embedding_scale(s).unwrap_or(1.0);
        let x: Vec<f32> = tokens
            .iter()
            .flat_map(|&tok| self.data(embd)[tok as usize * d..][..d].iter())
            .map(|v| v * embedding_scale)
            .collect();
        let mut graph = TrainGraph::new(self, t, x);
        let mut x = 0;
        for il in 0..s.n_layer {
            x = arch::graph::block(&mut graph, s, il, x);
        }

        // Output rows: the scored positions only.
        let (output_norm, output) = (self.param(Role::OutputNorm, 0), self.param(Role::Output, 0));
        let n_out = rows.len();
        let xs = &graph.value(x)[first * d..(first + n_out) * d];
        let (nf, invf) = ops::rms_norm(xs, self.data(output_norm), s.rms_eps);
        let mut logits = ops::linear(&nf, self.data(output), n_out, d, s.n_vocab);
        let cap = s.final_logit_softcap;
        if cap != 0.0 {
            logits.iter_mut().for_each(|z| *z = (*z / cap).tanh() * cap);
        }
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
        if cap != 0.0 {
            // d(c·tanh(z/c))/dz = 1 − tanh², from the capped logit c·tanh.
            for (g, z) in dlogits.iter_mut().zip(&logits) {
                let th = z / cap;
                *g *= 1.0 - th * th;
            }
        }

        let dnf = ops::linear_backward(
            &dlogits,
            &nf,
            self.data(output),
            self.grad_of(grads, output),
            (n_out, d, s.n_vocab),
        );
        let dxs = ops::rms_norm_backward(
            &dnf,
            xs,
            self.data(output_norm),
            &invf,
            self.grad_of(grads, output_norm),
        );
        let mut dx = vec![0.0f32; t * d];
        dx[first * d..(first + n_out) * d].copy_from_slice(&dxs);
        let dx = graph.backward(x, dx, grads);
        if self.params[embd].trainable {
            let g = &mut grads[embd];
            for (pos, &tok) in tokens.iter().enumerate() {
                let row = &mut g[tok as usize * d..][..d];
                row.iter_mut()
                    .zip(&dx[pos * d..][..d])
                    .for_each(|(a, b)| *a += b * embedding_scale);
            }
        }
        (kl_sum, ce_sum)
    }
}

/// KL(teacher ‖ student) of one row (the estimate of [`row_kld`]), plus the weighted
/// cross-entropy with the target; writes the gradient with respect to the logits `z` into `dz`.
/// Returns (KL, cross-entropy).
///
/// The gradient is the estimate's own, so its expectation over the tail sample is the
/// full-vocabulary gradient: kept tokens get `q − p`; the rest `q·(1 − (P_T + W)/Q_T)`, where
/// `W` sums the samples' weights `w = P_T/m·(r − 1)`, and each sampled token adds its `w` on
/// top. (Differentiating `r − 1 − ln r` through `ln r = ln q_i − ln Q_T − …`.)
pub fn row_loss(z: &[f32], row: &TeacherRow, objective: Objective, dz: &mut [f32]) -> (f64, f64) {
    let (_, shift) = log_softmax_shift(z);
    let d = row.distribution();
    let kl = row_kld(z, shift, row, &d);
    let sampled: f64 = kl.tail_weights.iter().sum();
    let rest_scale = ((d.rest_log_prob as f64).exp() + sampled) / kl.q_rest;
    let ce_weight = objective.ce_weight as f64;
    for (g, &v) in dz.iter_mut().zip(z) {
        let q = ((v - shift) as f64).exp();
        *g = (q * (1.0 - rest_scale) + ce_weight * q) as f32;
    }
    // Listed tokens: q − p instead of q − r·q/q_rest.
    for ((&id, &lp), &q) in row.ids.iter().zip(&d.log_probs).zip(&kl.q) {
        dz[id as usize] = (q - (lp as f64).exp() + ce_weight * q) as f32;
    }
    for (&id, &w) in row.tail.iter().zip(&kl.tail_weights) {
        dz[id as usize] += w as f32;
    }
    let ce = (shift - z[row.target as usize]) as f64;
    dz[row.target as usize] -= objective.ce_weight;
    (kl.kld, ce)
}

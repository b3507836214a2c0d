//! A block's mixture of experts as llama.cpp's `build_moe_ffn` computes it for softmax-gated
//! families (Mixtral, Qwen3-MoE): the router's logits through ggml's `soft_max`, the most
//! probable `n_expert_used` experts per row (`argsort_top_k`), their probabilities divided by
//! their sum (`sum_rows`, clamped below at 2⁻¹⁴), and only the chosen experts' matrices run — each
//! on the rows routed to it, in the summation order of `mul_mat_id`, which is `vec_dot`'s for
//! every row count (never tinyBLAS's tiles) — their outputs scaled by the weights and added from
//! the most probable expert down.

use rayon::prelude::*;

use arch::graph::{route_experts, rows_by_expert, Activation};
use arch::Role;

use crate::fastmath::ggml_expf;
use crate::float_gemm::reduce16;
use crate::forward::gated_rows;
use crate::linear::{linear, linears, ExpertInput, Observer};
use crate::model::Model;

/// Block `layer`'s mixture of experts on `x` (`n_rows` rows of `n_embd`): see the module comment.
pub(crate) fn mixture(
    model: &Model,
    layer: usize,
    x: &[f32],
    n_rows: usize,
    act: Activation,
    observer: &mut Option<&mut dyn Observer>,
) -> Vec<f32> {
    let h = &model.hparams;
    let (n_embd, n_expert, n_used) = (h.n_embd, h.n_expert, h.n_expert_used);
    let router = model.weight(Role::FfnGateInp, layer);
    let mut probs = linear(model, router, x, n_rows, observer);
    probs.par_chunks_mut(n_expert).for_each(soft_max);
    let routes: Vec<Vec<(usize, f32)>> = probs
        .par_chunks(n_expert)
        .map(|p| route_experts(p, n_used))
        .collect();
    let assigned = rows_by_expert(&routes, n_expert);
    let [gates, ups, downs] = [Role::FfnGateExps, Role::FfnUpExps, Role::FfnDownExps]
        .map(|role| model.experts(role, layer));
    let report = |obs: &mut dyn Observer, name: &str, x: &[f32], per_slot: bool| {
        obs.experts_input(&ExpertInput {
            name,
            n_expert,
            cols: x.len() / n_rows / if per_slot { n_used } else { 1 },
            routes: &routes,
            x,
            per_slot,
        })
    };
    if let Some(obs) = observer.as_deref_mut() {
        report(obs, &gates[0].name, x, false);
        report(obs, &ups[0].name, x, false);
    }
    // The down projections' inputs by token and slot, for an observer.
    let mut down_inputs = match observer.is_some() {
        true => vec![0.0f32; n_rows * n_used * h.n_ff_exp],
        false => Vec::new(),
    };
    // slots[slot][row]: the weighted output of the row's slot-th expert.
    let mut slots = vec![0.0f32; n_used * n_rows * n_embd];
    for (e, rows) in assigned.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|&(r, _)| &x[r * n_embd..(r + 1) * n_embd])
            .copied()
            .collect();
        let [mut gate, up] = linears(model, [&gates[e], &ups[e]], &xs, rows.len(), observer);
        gated_rows(&mut gate, &up, h.n_ff_exp, act);
        if !down_inputs.is_empty() {
            for (&(r, slot), a) in rows.iter().zip(gate.chunks(h.n_ff_exp)) {
                down_inputs[(r * n_used + slot) * h.n_ff_exp..][..h.n_ff_exp].copy_from_slice(a);
            }
        }
        let down = linear(model, &downs[e], &gate, rows.len(), observer);
        for (&(r, slot), out) in rows.iter().zip(down.chunks(n_embd)) {
            let w = routes[r][slot].1;
            let dst = &mut slots[(slot * n_rows + r) * n_embd..][..n_embd];
            dst.iter_mut().zip(out).for_each(|(d, v)| *d = v * w);
        }
    }
    if let Some(obs) = observer.as_deref_mut() {
        report(obs, &downs[0].name, &down_inputs, true);
        let contributions: Vec<Vec<f64>> = (0..n_rows)
            .map(|r| {
                (0..n_used)
                    .map(|slot| {
                        let out = &slots[(slot * n_rows + r) * n_embd..][..n_embd];
                        out.iter()
                            .map(|&v| (v as f64) * (v as f64))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect()
            })
            .collect();
        obs.routing(layer, &routes, &contributions);
    }
    let (first, rest) = slots.split_at_mut(n_rows * n_embd);
    for slot in rest.chunks(n_rows * n_embd) {
        first
            .par_iter_mut()
            .zip(slot.par_iter())
            .for_each(|(a, b)| *a += b);
    }
    slots.truncate(n_rows * n_embd);
    slots
}

/// ggml's `soft_max` of one row as its AVX-512 build computes it: `e^(x − max)` sixteen at a time
/// with `ggml_expf` (each group's sum reduced in f32 and added in f64), the rest with libm's
/// `expf`, then every value times `1/sum` rounded to f32.
fn soft_max(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    let whole = row.len() - row.len() % 16;
    let (groups, tail) = row.split_at_mut(whole);
    for group in groups.chunks_mut(16) {
        group.iter_mut().for_each(|v| *v = ggml_expf(*v - max));
        sum += reduce16(group.try_into().expect("16 lanes")) as f64;
    }
    for v in tail.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let scale = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_picks_the_most_probable_and_renormalises() {
        let mut p = [1.0f32, 3.0, 2.0, 0.5];
        soft_max(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let r = route_experts(&p, 2);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2]);
        assert!((r[0].1 + r[1].1 - 1.0).abs() < 1e-6);
        assert!(r[0].1 > r[1].1);
        // Sixteen-wide groups and a tail agree with the plain formula.
        let mut wide: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let plain: Vec<f64> = {
            let m = wide.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = wide.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        soft_max(&mut wide);
        for (a, b) in wide.iter().zip(&plain) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }
}

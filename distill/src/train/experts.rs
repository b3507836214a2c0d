//! The trainer's mixture of experts ([`arch::graph::Graph::experts`]): each row's experts are
//! chosen as evaluation chooses them (softmax over the router's logits,
//! [`arch::graph::route_experts`]); only the chosen experts run, forward and backward. The choice
//! itself is a step function and has no gradient, but the chosen experts' weights are smooth
//! functions of the router's logits: the backward pass differentiates them (the renormalisation
//! and the softmax), so the router is trained and the block's input gets the gradient of both
//! paths — exact wherever a small change does not switch an expert.

use arch::graph::{route_experts, rows_by_expert, Activation};
use arch::Role;

use super::ops;
use super::student::Student;

/// One expert's share of a forward pass: its rows and what their backward pass needs.
pub(super) struct ExpertRows {
    expert: usize,
    /// (row, slot) pairs routed to the expert.
    rows: Vec<(usize, usize)>,
    /// Their inputs, gate and up products, and gated activations.
    xs: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

/// A recorded mixture: the routing and each used expert's rows.
pub(super) struct Mixture {
    layer: usize,
    activation: Activation,
    /// Every row's router probabilities (`n_expert` each).
    probs: Vec<f32>,
    routes: Vec<Vec<(usize, f32)>>,
    /// Each row's chosen experts' unweighted outputs, by slot (`n_used · n_embd` per row).
    outputs: Vec<f32>,
    experts: Vec<ExpertRows>,
}

/// Expert `e`'s matrix within a stacked parameter's values (`len` values per expert).
fn slice(data: &[f32], e: usize, len: usize) -> &[f32] {
    &data[e * len..(e + 1) * len]
}

/// The mixture of block `layer` on `x` (`t` rows of `n_embd`): its output and its record.
pub(super) fn forward(
    s: &Student,
    layer: usize,
    x: &[f32],
    t: usize,
    activation: Activation,
) -> (Vec<f32>, Mixture) {
    let h = &s.shape;
    let (n_embd, n_ff, n_expert) = (h.n_embd, h.n_ff_exp, h.n_expert);
    let router = s.data(s.param(Role::FfnGateInp, layer));
    let mut probs = ops::linear(x, router, t, n_embd, n_expert);
    let routes: Vec<Vec<(usize, f32)>> = probs
        .chunks_mut(n_expert)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = (*v - max).exp());
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
            route_experts(row, h.n_expert_used)
        })
        .collect();
    let [gates, ups, downs] = [Role::FfnGateExps, Role::FfnUpExps, Role::FfnDownExps]
        .map(|role| s.data(s.param(role, layer)));
    let len = n_embd * n_ff;
    let gated = match activation {
        Activation::Silu => ops::swiglu,
        Activation::GeluTanh => ops::geglu,
    };
    let n_used = h.n_expert_used;
    let mut slots = vec![0.0f32; n_used * t * n_embd];
    let mut outputs = vec![0.0f32; t * n_used * n_embd];
    let mut experts = Vec::new();
    let assigned = rows_by_expert(&routes, n_expert);
    for (e, rows) in assigned.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let n = rows.len();
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|&(r, _)| &x[r * n_embd..(r + 1) * n_embd])
            .copied()
            .collect();
        let gate = ops::linear(&xs, slice(gates, e, len), n, n_embd, n_ff);
        let up = ops::linear(&xs, slice(ups, e, len), n, n_embd, n_ff);
        let act = gated(&gate, &up);
        let down = ops::linear(&act, slice(downs, e, len), n, n_ff, n_embd);
        for (&(r, slot), out) in rows.iter().zip(down.chunks(n_embd)) {
            let w = routes[r][slot].1;
            let dst = &mut slots[(slot * t + r) * n_embd..][..n_embd];
            dst.iter_mut().zip(out).for_each(|(d, v)| *d = v * w);
            outputs[(r * n_used + slot) * n_embd..][..n_embd].copy_from_slice(out);
        }
        experts.push(ExpertRows {
            expert: e,
            rows,
            xs,
            gate,
            up,
            act,
        });
    }
    let (first, rest) = slots.split_at_mut(t * n_embd);
    for slot in rest.chunks(t * n_embd) {
        first.iter_mut().zip(slot).for_each(|(a, b)| *a += b);
    }
    slots.truncate(t * n_embd);
    let mixture = Mixture {
        layer,
        activation,
        probs,
        routes,
        outputs,
        experts,
    };
    (slots, mixture)
}

/// Given `dy`, the gradient with respect to the mixture's output, adds the router's and the
/// chosen experts' gradients to `grads` and returns the gradient with respect to its input `x`.
pub(super) fn backward(
    s: &Student,
    m: &Mixture,
    x: &[f32],
    dy: &[f32],
    grads: &mut [Vec<f32>],
) -> Vec<f32> {
    let h = &s.shape;
    let (n_embd, n_ff) = (h.n_embd, h.n_ff_exp);
    let mut dx = router_backward(s, m, x, dy, grads);
    let len = n_embd * n_ff;
    let [gate_p, up_p, down_p] =
        [Role::FfnGateExps, Role::FfnUpExps, Role::FfnDownExps].map(|role| s.param(role, m.layer));
    let backward = match m.activation {
        Activation::Silu => ops::swiglu_backward,
        Activation::GeluTanh => ops::geglu_backward,
    };
    for ex in &m.experts {
        let n = ex.rows.len();
        let dd: Vec<f32> = ex
            .rows
            .iter()
            .flat_map(|&(r, slot)| {
                let w = m.routes[r][slot].1;
                dy[r * n_embd..(r + 1) * n_embd].iter().map(move |g| g * w)
            })
            .collect();
        // Expert `e`'s matrix of the stacked parameter `p`: its product's backward pass.
        let matrix = |grads: &mut [Vec<f32>], p: usize, dy: &[f32], x: &[f32], shape| {
            let e = ex.expert * len..(ex.expert + 1) * len;
            let dw = s.grad_of(grads, p).map(|g| &mut g[e.clone()]);
            ops::linear_backward(dy, x, &s.data(p)[e], dw, shape)
        };
        let da = matrix(grads, down_p, &dd, &ex.act, (n, n_ff, n_embd));
        let (dg, du) = backward(&da, &ex.gate, &ex.up);
        let mut dxs = matrix(grads, gate_p, &dg, &ex.xs, (n, n_embd, n_ff));
        let dxu = matrix(grads, up_p, &du, &ex.xs, (n, n_embd, n_ff));
        dxs.iter_mut().zip(&dxu).for_each(|(a, b)| *a += b);
        for (&(r, _), g) in ex.rows.iter().zip(dxs.chunks(n_embd)) {
            dx[r * n_embd..(r + 1) * n_embd]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
    }
    dx
}

/// The router's part of the backward pass: each chosen weight `w_i = p_i / Σ p` gets
/// `dy · output_i`; through the renormalisation `dp_i = (dw_i − Σ dw_k w_k) / Σ p` for the chosen
/// experts (0 for the others), through the softmax `dz_j = p_j (dp_j − Σ dp_i p_i)`; the logits'
/// gradient is then a linear layer's (router weights and input). Returns the input's share.
fn router_backward(
    s: &Student,
    m: &Mixture,
    x: &[f32],
    dy: &[f32],
    grads: &mut [Vec<f32>],
) -> Vec<f32> {
    let h = &s.shape;
    let (n_embd, n_expert, n_used) = (h.n_embd, h.n_expert, h.n_expert_used);
    let t = m.routes.len();
    let mut dz = vec![0.0f32; t * n_expert];
    for (r, route) in m.routes.iter().enumerate() {
        let g = &dy[r * n_embd..(r + 1) * n_embd];
        let dw: Vec<f32> = (0..route.len())
            .map(|slot| {
                let out = &m.outputs[(r * n_used + slot) * n_embd..][..n_embd];
                g.iter().zip(out).map(|(a, b)| a * b).sum()
            })
            .collect();
        let p = &m.probs[r * n_expert..(r + 1) * n_expert];
        let sum: f32 = route.iter().map(|&(e, _)| p[e]).sum();
        let mean: f32 = dw.iter().zip(route).map(|(d, &(_, w))| d * w).sum();
        let mut dp = vec![0.0f32; n_expert];
        for (d, &(e, _)) in dw.iter().zip(route) {
            dp[e] = (d - mean) / sum;
        }
        let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
        for (j, z) in dz[r * n_expert..(r + 1) * n_expert].iter_mut().enumerate() {
            *z = p[j] * (dp[j] - dot);
        }
    }
    let router = s.param(Role::FfnGateInp, m.layer);
    ops::linear_backward(
        &dz,
        x,
        s.data(router),
        s.grad_of(grads, router),
        (t, n_embd, n_expert),
    )
}

//! The trainer's implementation of [`arch::graph::Graph`]: every operation of the shared block
//! definition runs forward on one sequence and records itself on a tape with what its backward
//! pass needs; [`TrainGraph::backward`] walks the tape in reverse, adding parameter gradients and
//! returning the gradient of the block stack's input. So training differentiates exactly the
//! block evaluation runs, with no second forward definition.

use arch::graph::{Activation, Graph, HeadsOf};
use arch::Role;

use super::experts::{self, Mixture};
use super::ops::{self, Heads, Rope, RopeSpec};
use super::student::Student;

/// How a tape entry was computed (node indices point at earlier entries).
enum Op {
    /// The embedded tokens.
    Input,
    /// RMSNorm of `x` (rows of the weight's length) with parameter `w`; `inv` = 1/rms per row.
    Norm { x: usize, w: usize, inv: Vec<f32> },
    /// `x · wᵀ` with parameter `w`.
    Linear { x: usize, w: usize },
    /// `x` plus the bias parameter `b` on every row.
    Bias { x: usize, b: usize },
    /// RoPE of `x`, rows of `width`, with the angles of the global (0) or local (1) blocks.
    Rope { x: usize, width: usize, kind: usize },
    /// Causal attention with scores scaled by `scale` within `window`; `probs` are the
    /// attention weights.
    Attention {
        q: usize,
        k: usize,
        v: usize,
        probs: Vec<f32>,
        scale: f32,
        window: Option<usize>,
    },
    /// `act(gate) ⊙ up`.
    Gated {
        gate: usize,
        up: usize,
        act: Activation,
    },
    /// `s · x`.
    Scale { x: usize, s: f32 },
    /// Columns `start..start + width` of every row of `x` (rows of `total`).
    Columns {
        x: usize,
        start: usize,
        total: usize,
    },
    /// `x + y`.
    Add { x: usize, y: usize },
    /// A mixture of experts on `x`, its routing held fixed.
    Experts { x: usize, mixture: Mixture },
}

/// The tape of one sequence's forward pass.
pub(super) struct TrainGraph<'s> {
    student: &'s Student,
    heads: Heads,
    /// RoPE angles of the global blocks and of the local (sliding-window) ones.
    ropes: [Rope; 2],
    values: Vec<Vec<f32>>,
    ops: Vec<Op>,
}

impl<'s> TrainGraph<'s> {
    /// A tape for a sequence of `t` positions whose embedded tokens are `input` (node 0).
    pub(super) fn new(student: &'s Student, t: usize, input: Vec<f32>) -> TrainGraph<'s> {
        let h = &student.shape;
        TrainGraph {
            student,
            heads: Heads {
                t,
                n_head: h.n_head,
                n_head_kv: h.n_head_kv,
                hd: h.head_dim,
            },
            ropes: [false, true]
                .map(|local| Rope::new(t, RopeSpec::of(h, student.rope_factors(t), local))),
            values: vec![input],
            ops: vec![Op::Input],
        }
    }

    /// The values of node `i`.
    pub(super) fn value(&self, i: usize) -> &[f32] {
        &self.values[i]
    }

    fn push(&mut self, value: Vec<f32>, op: Op) -> usize {
        self.values.push(value);
        self.ops.push(op);
        self.values.len() - 1
    }

    /// Given `dout`, the gradient of the loss with respect to node `out`, adds every trainable
    /// parameter's gradient to `grads` and returns the gradient with respect to the input.
    pub(super) fn backward(&self, out: usize, dout: Vec<f32>, grads: &mut [Vec<f32>]) -> Vec<f32> {
        let s = self.student;
        let mut d: Vec<Option<Vec<f32>>> = (0..self.ops.len()).map(|_| None).collect();
        d[out] = Some(dout);
        for i in (1..self.ops.len()).rev() {
            let Some(dy) = d[i].take() else { continue };
            match &self.ops[i] {
                Op::Input => unreachable!("the input is node 0"),
                Op::Norm { x, w, inv } => {
                    let dw = s.grad_of(grads, *w);
                    let dx = ops::rms_norm_backward(&dy, &self.values[*x], s.data(*w), inv, dw);
                    accumulate(&mut d, *x, dx);
                }
                Op::Linear { x, w } => {
                    let (cols_in, cols_out) = s.matrix_dims(*w);
                    let shape = (self.heads.t, cols_in, cols_out);
                    let dw = s.grad_of(grads, *w);
                    let dx = ops::linear_backward(&dy, &self.values[*x], s.data(*w), dw, shape);
                    accumulate(&mut d, *x, dx);
                }
                Op::Bias { x, b } => {
                    if let Some(db) = s.grad_of(grads, *b) {
                        let n = db.len();
                        for row in dy.chunks(n) {
                            db.iter_mut().zip(row).for_each(|(a, g)| *a += g);
                        }
                    }
                    accumulate(&mut d, *x, dy);
                }
                Op::Rope { x, width, kind } => {
                    let mut dx = dy;
                    self.ropes[*kind].apply(&mut dx, *width, self.heads.hd, -1.0);
                    accumulate(&mut d, *x, dx);
                }
                Op::Attention {
                    q,
                    k,
                    v,
                    probs,
                    scale,
                    window,
                } => {
                    let (dq, dk, dv) = ops::attention_backward(
                        &dy,
                        &self.values[*q],
                        &self.values[*k],
                        &self.values[*v],
                        probs,
                        self.heads,
                        *scale,
                        *window,
                    );
                    accumulate(&mut d, *q, dq);
                    accumulate(&mut d, *k, dk);
                    accumulate(&mut d, *v, dv);
                }
                Op::Gated { gate, up, act } => {
                    let backward = match act {
                        Activation::Silu => ops::swiglu_backward,
                        Activation::GeluTanh => ops::geglu_backward,
                    };
                    let (dg, du) = backward(&dy, &self.values[*gate], &self.values[*up]);
                    accumulate(&mut d, *gate, dg);
                    accumulate(&mut d, *up, du);
                }
                Op::Scale { x, s } => {
                    accumulate(&mut d, *x, dy.iter().map(|g| g * s).collect());
                }
                Op::Columns { x, start, total } => {
                    let width = dy.len() / self.heads.t;
                    let mut dx = vec![0.0f32; self.heads.t * total];
                    for (row, g) in dx.chunks_mut(*total).zip(dy.chunks(width)) {
                        row[*start..*start + width].copy_from_slice(g);
                    }
                    accumulate(&mut d, *x, dx);
                }
                Op::Add { x, y } => {
                    accumulate(&mut d, *x, dy.clone());
                    accumulate(&mut d, *y, dy);
                }
                Op::Experts { x, mixture } => {
                    let dx = experts::backward(s, mixture, &self.values[*x], &dy, grads);
                    accumulate(&mut d, *x, dx);
                }
            }
        }
        d[0].take()
            .unwrap_or_else(|| vec![0.0; self.values[0].len()])
    }
}

/// Adds `g` to the gradient of node `i`.
fn accumulate(d: &mut [Option<Vec<f32>>], i: usize, g: Vec<f32>) {
    match &mut d[i] {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
        slot => *slot = Some(g),
    }
}

impl Graph for TrainGraph<'_> {
    type Act = usize;

    fn norm(&mut self, x: &usize, role: Role, layer: usize) -> usize {
        let w = self.student.param(role, layer);
        let eps = self.student.shape.rms_eps;
        let (y, inv) = ops::rms_norm(&self.values[*x], self.student.data(w), eps);
        self.push(y, Op::Norm { x: *x, w, inv })
    }

    fn linears<const N: usize>(&mut self, x: &usize, roles: [Role; N], layer: usize) -> [usize; N] {
        roles.map(|role| {
            let w = self.student.param(role, layer);
            let (cols_in, cols_out) = self.student.matrix_dims(w);
            let y = ops::linear(
                &self.values[*x],
                self.student.data(w),
                self.heads.t,
                cols_in,
                cols_out,
            );
            self.push(y, Op::Linear { x: *x, w })
        })
    }

    fn add_bias(&mut self, x: usize, role: Role, layer: usize) -> usize {
        let b = self.student.param(role, layer);
        let bias = self.student.data(b);
        let mut y = self.values[x].clone();
        for row in y.chunks_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        self.push(y, Op::Bias { x, b })
    }

    fn head_norm(&mut self, x: usize, role: Role, layer: usize) -> usize {
        self.norm(&x, role, layer)
    }

    fn rope(&mut self, x: usize, heads: HeadsOf, layer: usize) -> usize {
        let n = match heads {
            HeadsOf::Query => self.heads.n_head,
            HeadsOf::Key => self.heads.n_head_kv,
        };
        let width = n * self.heads.hd;
        let kind = self.student.shape.swa_layers[layer] as usize;
        let mut y = self.values[x].clone();
        self.ropes[kind].apply(&mut y, width, self.heads.hd, 1.0);
        self.push(y, Op::Rope { x, width, kind })
    }

    fn attention(&mut self, q: usize, k: usize, v: usize, scale: f32, layer: usize) -> usize {
        let window = self.student.shape.window(layer);
        let (y, probs) = ops::attention(
            &self.values[q],
            &self.values[k],
            &self.values[v],
            self.heads,
            scale,
            window,
        );
        let op = Op::Attention {
            q,
            k,
            v,
            probs,
            scale,
            window,
        };
        self.push(y, op)
    }

    fn gated(&mut self, gate: usize, up: usize, act: Activation) -> usize {
        let forward = match act {
            Activation::Silu => ops::swiglu,
            Activation::GeluTanh => ops::geglu,
        };
        let y = forward(&self.values[gate], &self.values[up]);
        self.push(y, Op::Gated { gate, up, act })
    }

    fn split<const N: usize>(&mut self, x: usize, widths: [usize; N]) -> [usize; N] {
        let total: usize = widths.iter().sum();
        let parts = arch::graph::split_columns(&self.values[x], widths);
        let mut start = 0;
        let mut parts = parts.into_iter();
        widths.map(|w| {
            let y = parts.next().expect("one part per width");
            let node = self.push(y, Op::Columns { x, start, total });
            start += w;
            node
        })
    }

    fn scale(&mut self, x: usize, s: f32) -> usize {
        let y = self.values[x].iter().map(|v| v * s).collect();
        self.push(y, Op::Scale { x, s })
    }

    fn add(&mut self, x: usize, y: usize) -> usize {
        let sum = self.values[x]
            .iter()
            .zip(&self.values[y])
            .map(|(a, b)| a + b)
            .collect();
        self.push(sum, Op::Add { x, y })
    }

    fn experts(&mut self, x: &usize, layer: usize, act: Activation) -> usize {
        let (y, mixture) =
            experts::forward(self.student, layer, &self.values[*x], self.heads.t, act);
        self.push(y, Op::Experts { x: *x, mixture })
    }
}

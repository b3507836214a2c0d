//! Activation statistics for pruning, collected over a calibration text: the squared norm of every
//! input channel of every block matrix (Wanda's ‖X_j‖₂; the FFN neurons' magnitudes are the input
//! channels of `ffn_down`, the attention heads' output norms those of `attn_output`), each
//! block's mean cosine similarity between its residual input and output (Block Influence), and
//! how much each expert of a mixture was used and contributed.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::linear::Observer;
use crate::model::{Model, Weight};
use crate::perplexity::{run_chunks, ChunkPlan};
use formats::gguf::GgufFile;

/// What a calibration pass saw.
#[derive(Debug, Default)]
pub struct ActivationStats {
    /// Per weight: per-input-channel sums of squares (f64) over all rows.
    sum_sq: BTreeMap<String, Vec<f64>>,
    /// Per block: sum over rows of cos(input, output), and the row count.
    cosine: BTreeMap<usize, (f64, usize)>,
    /// Per block with experts, per expert: how often the router chose it, and the summed norms
    /// of its weighted outputs.
    experts: BTreeMap<usize, Vec<(f64, f64)>>,
}

/// How experts are ranked for pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertScore {
    /// How often the router chooses the expert.
    Usage,
    /// The summed L2 norm of the expert's weighted outputs: how much the block's output changes,
    /// to first order, when it is removed.
    Contribution,
}

impl Observer for ActivationStats {
    fn matmul_input(&mut self, weight: &Weight, x: &[f32], _n_rows: usize) {
        if !weight.name.starts_with("blk.") {
            return;
        }
        let cols = weight.cols;
        let partial = x
            .par_chunks(cols * 64)
            .map(|rows| {
                let mut acc = vec![0f64; cols];
                for row in rows.chunks(cols) {
                    acc.iter_mut()
                        .zip(row)
                        .for_each(|(a, &v)| *a += (v as f64) * (v as f64));
                }
                acc
            })
            .reduce(
                || vec![0f64; cols],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let sums = self
            .sum_sq
            .entry(weight.name.clone())
            .or_insert_with(|| vec![0.0; cols]);
        sums.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
    }

    fn routing(&mut self, layer: usize, routes: &[Vec<(usize, f32)>], contributions: &[Vec<f64>]) {
        let n_expert = routes
            .iter()
            .flatten()
            .map(|&(e, _)| e + 1)
            .max()
            .unwrap_or(0);
        let acc = self.experts.entry(layer).or_default();
        if acc.len() < n_expert {
            acc.resize(n_expert, (0.0, 0.0));
        }
        for (route, contrib) in routes.iter().zip(contributions) {
            for (&(e, _), &c) in route.iter().zip(contrib) {
                acc[e].0 += 1.0;
                acc[e].1 += c;
            }
        }
    }

    fn wants_block_io(&self) -> bool {
        true
    }

    fn block_io(&mut self, layer: usize, input: &[f32], output: &[f32], n_embd: usize) {
        let rows = input.len() / n_embd;
        let sum: f64 = input
            .par_chunks(n_embd)
            .zip(output.par_chunks(n_embd))
            .map(|(a, b)| cosine(a, b))
            .sum();
        let entry = self.cosine.entry(layer).or_insert((0.0, 0));
        entry.0 += sum;
        entry.1 += rows;
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

impl ActivationStats {
    /// Runs `model` over the planned chunks of `tokens`, collecting the statistics.
    pub fn collect(
        model: &Model,
        tokens: &[u32],
        plan: &ChunkPlan,
        bos: Option<u32>,
        mut on_chunk: impl FnMut(usize),
    ) -> ActivationStats {
        let mut stats = ActivationStats::default();
        run_chunks(model, tokens, plan, bos, Some(&mut stats), |chunk| {
            on_chunk(chunk.index)
        });
        stats
    }

    /// ‖X_j‖₂ of every input channel of `weight` (Wanda's activation norm); `None` when the
    /// pass never multiplied it.
    pub fn input_norms(&self, weight: &str) -> Option<Vec<f32>> {
        self.sum_sq
            .get(weight)
            .map(|s| s.iter().map(|v| v.sqrt() as f32).collect())
    }

    /// Block Influence of `layer`: 1 − mean cos(block input, block output). Low means the block
    /// changes little and is the first to drop.
    pub fn block_influence(&self, layer: usize) -> Option<f64> {
        self.cosine
            .get(&layer)
            .map(|&(sum, n)| 1.0 - sum / n.max(1) as f64)
    }

    /// The Block Influence of each of `n_layer` blocks (0 for one the pass never saw): the
    /// depth-pruning score.
    pub fn block_influences(&self, n_layer: usize) -> Vec<f64> {
        (0..n_layer)
            .map(|l| self.block_influence(l).unwrap_or(0.0))
            .collect()
    }

    /// Per layer of `n_layer`, the summed squared input norms of `blk.L.{role}`'s columns in
    /// groups of `width`: FFN neurons' scores (width 1 on `ffn_down.weight`) and heads' (the head
    /// width on `attn_output.weight`). Names the first matrix the pass never multiplied.
    pub fn group_scores(
        &self,
        n_layer: usize,
        role: &str,
        width: usize,
    ) -> Result<Vec<Vec<f64>>, String> {
        (0..n_layer)
            .map(|l| {
                let name = format!("blk.{l}.{role}");
                let norms = self
                    .input_norms(&name)
                    .ok_or_else(|| format!("no calibration statistics for {name}"))?;
                Ok(norms
                    .chunks(width)
                    .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum())
                    .collect())
            })
            .collect()
    }

    /// Per layer of `n_layer`, each of `n_expert` experts' `score` (0 for one never chosen).
    /// Names the first block the pass saw no routing of.
    pub fn expert_scores(
        &self,
        n_layer: usize,
        n_expert: usize,
        score: ExpertScore,
    ) -> Result<Vec<Vec<f64>>, String> {
        (0..n_layer)
            .map(|l| {
                let seen = self
                    .experts
                    .get(&l)
                    .ok_or_else(|| format!("no routing statistics for block {l}"))?;
                Ok((0..n_expert)
                    .map(|e| {
                        let (count, contribution) = seen.get(e).copied().unwrap_or_default();
                        match score {
                            ExpertScore::Usage => count,
                            ExpertScore::Contribution => contribution,
                        }
                    })
                    .collect())
            })
            .collect()
    }

    /// Wanda's ‖X_j‖₂ for every block matrix of `file` the pass multiplied.
    pub fn wanda_norms(&self, file: &GgufFile) -> HashMap<String, Vec<f32>> {
        file.tensors
            .iter()
            .filter_map(|t| {
                let name = &t.info.name;
                self.input_norms(name).map(|n| (name.clone(), n))
            })
            .collect()
    }
}

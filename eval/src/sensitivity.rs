//! What each tensor's quantization costs the model's output, measured: the full-precision model's
//! log-probabilities on calibration chunks are kept (as a KL-divergence base, in memory), then
//! the model is run again with one tensor at a time replaced by its encoding in a candidate type,
//! and the mean KL divergence from the kept distributions is that (tensor, type)'s cost. This is
//! the measurement behind `smelt quantize … auto`, which then chooses types under a size budget.
//!
//! The full-precision pass also keeps the hidden state at every block's input, so a tensor of
//! block `l` is measured by running blocks `l..` only: the blocks before it compute exactly what
//! they computed in the kept pass.
//!
//! Costs of different tensors are treated as additive: small, independent perturbations of
//! different matrices add their second-order KL terms, which is what the per-tensor measurement
//! assumes and what `docs/QUALITY.md` checks against the measured KLD of the chosen file.

use std::sync::Arc;

use formats::gguf::GgmlType;
use formats::Result;

use crate::forward::Session;
use crate::kld::KldStats;
use crate::perplexity::{chunk_inputs, chunk_targets, encode_chunk};
use crate::text::Tokenized;

/// One batch of calibration chunks as the full-precision pass saw it.
struct Batch {
    /// First chunk index.
    first: usize,
    /// Token lists (BOS in place of each chunk's first token).
    inputs: Vec<Vec<u32>>,
    /// Hidden state at each block's input and after the last block.
    states: Vec<Vec<f32>>,
}

/// The calibration chunks and the full-precision model's distributions on them.
pub struct Reference {
    tokenized: Tokenized,
    batches: Vec<Batch>,
    /// Each chunk's encoded base rows (llama-perplexity's 16-bit log-probability codes).
    rows: Vec<Vec<u16>>,
    /// Mean KLD of the model itself against its own encoded rows: the encoding's rounding,
    /// subtracted from every measurement so that a cost is what the quantization adds.
    floor: f64,
}

impl Reference {
    /// Runs the model of `tokenized` (the full-precision teacher) over its chunks and keeps its
    /// distributions and hidden states.
    pub fn new(tokenized: Tokenized) -> Reference {
        let plan = tokenized.plan;
        let n_vocab = tokenized.model.hparams.n_vocab;
        let mut rows = Vec::with_capacity(plan.n_chunks);
        let mut batches = Vec::new();
        for first in (0..plan.n_chunks).step_by(plan.n_seq) {
            let n_seq = plan.n_seq.min(plan.n_chunks - first);
            let inputs = chunk_inputs(
                &tokenized.tokens,
                &plan,
                first..first + n_seq,
                tokenized.bos,
            );
            let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
            let mut states = Vec::new();
            let mut session = Session::single_pass(&tokenized.model, n_seq, plan.n_ctx);
            session.forward_recording(&refs, plan.first(), &mut states, |s, logits| {
                let targets = targets(&tokenized, first + s);
                rows.push(encode_chunk(logits, targets, n_vocab).0);
            });
            batches.push(Batch {
                first,
                inputs,
                states,
            });
        }
        let mut reference = Reference {
            tokenized,
            batches,
            rows,
            floor: 0.0,
        };
        reference.floor = reference.mean_kld(0);
        reference
    }

    /// Scored positions per measurement.
    pub fn positions(&self) -> usize {
        self.tokenized.plan.n_chunks * self.tokenized.plan.scored_per_chunk()
    }

    /// Mean KLD of the model as it is now from the kept distributions, running it from block
    /// `from` on (the kept states stand for the blocks before).
    fn mean_kld(&self, from: usize) -> f64 {
        let t = &self.tokenized;
        let (n_vocab, n_ctx) = (t.model.hparams.n_vocab, t.plan.n_ctx);
        let mut stats = KldStats::default();
        for b in &self.batches {
            let mut session = Session::single_pass(&t.model, b.inputs.len(), n_ctx);
            let mut compare = |s: usize, logits: &[f32]| {
                let c = b.first + s;
                stats.add_chunk(logits, &self.rows[c], targets(t, c), n_vocab)
            };
            match from {
                0 => {
                    let refs: Vec<&[u32]> = b.inputs.iter().map(Vec::as_slice).collect();
                    session.forward_each(&refs, t.plan.first(), None, &mut compare);
                }
                l => session.forward_from(
                    l,
                    b.states[l].clone(),
                    n_ctx,
                    t.plan.first(),
                    &mut compare,
                ),
            }
        }
        stats.mean_kld()
    }

    /// The mean KLD that tensor `name` encoded as `ty` (`data`, the whole tensor) adds to the
    /// model's output, every other tensor at full precision.
    pub fn cost(&mut self, name: &str, ty: GgmlType, data: Vec<u8>) -> Result<f64> {
        let from = first_block_reading(name, self.tokenized.model.hparams.n_layer);
        let replaced = self.tokenized.model.replace(name, ty, Arc::from(data))?;
        let kld = self.mean_kld(from);
        self.tokenized.model.restore(replaced);
        Ok(kld - self.floor)
    }
}

/// The tokens chunk `c`'s scored rows predict.
fn targets(t: &Tokenized, c: usize) -> &[u32] {
    chunk_targets(&t.tokens, &t.plan, c)
}

/// The first block whose computation reads tensor `name`: its own block (`blk.N.…`), the output
/// layer for `output.weight`, and the whole pass for anything else (the token embedding, which a
/// tied output also reads).
fn first_block_reading(name: &str, n_layer: usize) -> usize {
    if name == "output.weight" {
        return n_layer;
    }
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .filter(|&l| l < n_layer)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_rerun_from_the_first_block_that_reads_them() {
        assert_eq!(first_block_reading("blk.3.ffn_down.weight", 4), 3);
        assert_eq!(first_block_reading("output.weight", 4), 4);
        assert_eq!(first_block_reading("token_embd.weight", 4), 0);
        assert_eq!(first_block_reading("blk.9.attn_q.weight", 4), 0);
    }
}

//! What each tensor's quantization costs the model's output, measured: the full-precision model's
//! log-probabilities on calibration chunks are kept (as a KL-divergence base, in memory), then
//! the model is run again with one tensor at a time replaced by its encoding in a candidate type,
//! and the mean KL divergence from the kept distributions is that (tensor, type)'s cost. This is
//! the measurement behind `smelt quantize … auto`, which then chooses types under a size budget.
//!
//! Costs of different tensors are treated as additive: small, independent perturbations of
//! different matrices add their second-order KL terms, which is what the per-tensor measurement
//! assumes and what `docs/QUALITY.md` checks against the measured KLD of the chosen file.

use std::sync::Arc;

use formats::gguf::GgmlType;
use formats::Result;

use crate::kld::KldStats;
use crate::model::Model;
use crate::perplexity::{encode_chunk, run_chunks};
use crate::text::Tokenized;

/// The calibration chunks and the full-precision model's distributions on them.
pub struct Reference {
    tokenized: Tokenized,
    /// Each chunk's encoded base rows (llama-perplexity's 16-bit log-probability codes).
    rows: Vec<Vec<u16>>,
    /// Mean KLD of the model itself against its own encoded rows: the encoding's rounding,
    /// subtracted from every measurement so that a cost is what the quantization adds.
    floor: f64,
}

impl Reference {
    /// Runs the model of `tokenized` (the full-precision teacher) over its chunks and keeps its
    /// distributions.
    pub fn new(tokenized: Tokenized) -> Reference {
        let n_vocab = tokenized.model.hparams.n_vocab;
        let mut rows = Vec::with_capacity(tokenized.plan.n_chunks);
        run_chunks(
            &tokenized.model,
            &tokenized.tokens,
            &tokenized.plan,
            tokenized.bos,
            None,
            |chunk| rows.push(encode_chunk(chunk.logits, chunk.targets, n_vocab).0),
        );
        let mut reference = Reference {
            tokenized,
            rows,
            floor: 0.0,
        };
        reference.floor = reference.mean_kld();
        reference
    }

    /// Scored positions per measurement.
    pub fn positions(&self) -> usize {
        self.tokenized.plan.n_chunks * self.tokenized.plan.scored_per_chunk()
    }

    /// The model being measured.
    pub fn model(&self) -> &Model {
        &self.tokenized.model
    }

    /// Mean KLD of the model as it is now from the kept distributions.
    fn mean_kld(&self) -> f64 {
        let t = &self.tokenized;
        let n_vocab = t.model.hparams.n_vocab;
        let mut stats = KldStats::default();
        run_chunks(&t.model, &t.tokens, &t.plan, t.bos, None, |chunk| {
            stats.add_chunk(
                chunk.logits,
                &self.rows[chunk.index],
                chunk.targets,
                n_vocab,
            )
        });
        stats.mean_kld()
    }

    /// The mean KLD that tensor `name` encoded as `ty` (`data`, the whole tensor) adds to the
    /// model's output, every other tensor at full precision.
    pub fn cost(&mut self, name: &str, ty: GgmlType, data: Vec<u8>) -> Result<f64> {
        let replaced = self.tokenized.model.replace(name, ty, Arc::from(data))?;
        let kld = self.mean_kld();
        self.tokenized.model.restore(replaced);
        Ok(kld - self.floor)
    }
}

//! Importance-matrix collection as `llama-imatrix` does it: for every `blk.*` matrix product, the
//! per-column sum of squared inputs (f32, row by row) and the number of rows seen.
//!
//! llama-imatrix runs each batch of `n_seq` chunks in micro-batches that take an equal share of
//! every sequence (`split_equal`: `⌊512 / n_seq⌋` positions each) and ignores products over fewer
//! than 16 rows. The collector reproduces both — the row order of the sums and the rows that are
//! left out — so its counts and chunk count equal llama-imatrix's.

use std::collections::BTreeMap;

use formats::imatrix::{ImatrixEntry, ImatrixFile};

use crate::linear::Observer;
use crate::model::{Model, Weight};
use crate::perplexity::{row_nlls, run_chunks, ChunkPlan, PerplexityStats};

/// Rows in one llama.cpp micro-batch (`-ub`, default 512).
const UBATCH: usize = 512;
/// llama-imatrix ignores products over fewer rows than this.
const MIN_ROWS: usize = 16;

/// Accumulates squared activations per weight.
pub struct ImatrixCollector {
    n_ctx: usize,
    stats: BTreeMap<String, (Vec<f32>, i64)>,
}

impl ImatrixCollector {
    /// A collector for chunks of `n_ctx` tokens.
    pub fn new(n_ctx: usize) -> ImatrixCollector {
        ImatrixCollector {
            n_ctx,
            stats: BTreeMap::new(),
        }
    }

    /// Chunks' worth of rows the busiest entry has seen (llama-imatrix's `m_last_chunk`).
    fn chunks_seen(&self) -> u32 {
        let max = self.stats.values().map(|(_, c)| *c).max().unwrap_or(0);
        (max / self.n_ctx as i64) as u32
    }

    /// The collected statistics as an imatrix file recording `datasets`; the name of the first
    /// tensor whose sums overflowed to a non-finite value is the error (llama-imatrix stops there).
    pub fn into_file(self, datasets: Vec<String>) -> Result<ImatrixFile, String> {
        if let Some((name, _)) = self
            .stats
            .iter()
            .find(|(_, (s, _))| !s.iter().all(|v| v.is_finite()))
        {
            return Err(format!("non-finite activations in the input of {name}"));
        }
        let chunk_count = self.chunks_seen();
        Ok(ImatrixFile {
            entries: self
                .stats
                .into_iter()
                .map(|(name, (sums, count))| {
                    (
                        name,
                        ImatrixEntry {
                            sums,
                            counts: vec![count],
                        },
                    )
                })
                .collect(),
            datasets,
            chunk_count,
            chunk_size: self.n_ctx as u32,
            legacy: false,
            has_metadata: true,
        })
    }
}

/// Runs `model` over the planned chunks of `tokens` collecting its importance matrix (and, as
/// llama-imatrix prints it, its perplexity); `on_chunk` sees the chunk index and running PPL.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    plan: &ChunkPlan,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, &PerplexityStats),
) -> (ImatrixCollector, PerplexityStats) {
    let n_vocab = model.hparams.n_vocab;
    let mut collector = ImatrixCollector::new(plan.n_ctx);
    let mut stats = PerplexityStats::default();
    run_chunks(model, tokens, plan, bos, Some(&mut collector), |chunk| {
        stats.add(&row_nlls(chunk.logits, chunk.targets, n_vocab));
        on_chunk(chunk.index, &stats);
    });
    (collector, stats)
}

impl Observer for ImatrixCollector {
    fn matmul_input(&mut self, weight: &Weight, x: &[f32], n_rows: usize) {
        if !weight.name.starts_with("blk.") || !n_rows.is_multiple_of(self.n_ctx) {
            return;
        }
        let cols = weight.cols;
        let n_seq = n_rows / self.n_ctx;
        let share = (UBATCH / n_seq).max(1);
        let (sums, count) = self
            .stats
            .entry(weight.name.clone())
            .or_insert_with(|| (vec![0.0; cols], 0));
        let mut pos = 0;
        while pos < self.n_ctx {
            let len = share.min(self.n_ctx - pos);
            if len * n_seq >= MIN_ROWS {
                for s in 0..n_seq {
                    for p in pos..pos + len {
                        let row = &x[(s * self.n_ctx + p) * cols..][..cols];
                        sums.iter_mut().zip(row).for_each(|(acc, v)| *acc += v * v);
                    }
                }
                *count += (len * n_seq) as i64;
            }
            pos += len;
        }
    }
}

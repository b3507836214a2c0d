//! Importance-matrix collection as `llama-imatrix` does it: for every `blk.*` matrix product, the
//! per-column sum of squared inputs (f32, row by row) and the number of rows seen.
//!
//! llama-imatrix runs each batch of `n_seq` chunks in micro-batches that take an equal share of
//! every sequence (`split_equal`: `⌊512 / n_seq⌋` positions each) and ignores products over fewer
//! than 16 rows. The collector reproduces both — the row order of the sums and the rows that are
//! left out — so its counts and chunk count equal llama-imatrix's.

use std::collections::BTreeMap;

use formats::imatrix::{ImatrixEntry, ImatrixFile};

use crate::linear::{ExpertInput, Observer};
use crate::model::{Model, Weight};
use crate::perplexity::{row_nlls, run_chunks, ChunkPlan, PerplexityStats};

/// Rows in one llama.cpp micro-batch (`-ub`, default 512).
const UBATCH: usize = 512;
/// llama-imatrix ignores products over fewer rows than this.
const MIN_ROWS: usize = 16;

/// Accumulates squared activations per weight.
pub struct ImatrixCollector {
    n_ctx: usize,
    /// Per tensor: the sums (one row per expert) and each expert's row count.
    stats: BTreeMap<String, (Vec<f32>, Vec<i64>)>,
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
        let max = self
            .stats
            .values()
            .flat_map(|(_, c)| c.iter().copied())
            .max()
            .unwrap_or(0);
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
                .map(|(name, (sums, counts))| (name, ImatrixEntry { sums, counts }))
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

impl ImatrixCollector {
    /// The micro-batches llama-imatrix splits `n_rows` rows (whole chunks) into: each the rows
    /// (sequence-major) of an equal share of every sequence's positions.
    fn micro_batches(&self, n_rows: usize) -> Vec<Vec<usize>> {
        let n_seq = n_rows / self.n_ctx;
        let share = (UBATCH / n_seq).max(1);
        (0..self.n_ctx)
            .step_by(share)
            .map(|pos| {
                let len = share.min(self.n_ctx - pos);
                (0..n_seq)
                    .flat_map(|s| (pos..pos + len).map(move |p| s * self.n_ctx + p))
                    .collect()
            })
            .collect()
    }
}

impl Observer for ImatrixCollector {
    fn matmul_input(&mut self, weight: &Weight, x: &[f32], n_rows: usize) {
        if !weight.name.starts_with("blk.") || !n_rows.is_multiple_of(self.n_ctx) {
            return;
        }
        let cols = weight.cols;
        let batches = self.micro_batches(n_rows);
        let (sums, counts) = self
            .stats
            .entry(weight.name.clone())
            .or_insert_with(|| (vec![0.0; cols], vec![0]));
        for rows in batches.iter().filter(|rows| rows.len() >= MIN_ROWS) {
            for &r in rows {
                let row = &x[r * cols..][..cols];
                sums.iter_mut().zip(row).for_each(|(acc, v)| *acc += v * v);
            }
            counts[0] += rows.len() as i64;
        }
    }

    /// llama-imatrix's `MUL_MAT_ID` statistics: per micro-batch, slot by slot, each token's input
    /// added to the sums of the expert it went to, which counts the row (no minimum batch).
    fn experts_input(&mut self, input: &ExpertInput) {
        let n_rows = input.routes.len();
        if !n_rows.is_multiple_of(self.n_ctx) {
            return;
        }
        let (cols, n_used) = (input.cols, input.routes.first().map_or(0, Vec::len));
        let batches = self.micro_batches(n_rows);
        let (sums, counts) = self
            .stats
            .entry(input.name.to_string())
            .or_insert_with(|| (vec![0.0; cols * input.n_expert], vec![0; input.n_expert]));
        for rows in &batches {
            for slot in 0..n_used {
                for &r in rows {
                    let e = input.routes[r][slot].0;
                    let acc = &mut sums[e * cols..(e + 1) * cols];
                    acc.iter_mut()
                        .zip(input.row(r, slot))
                        .for_each(|(a, v)| *a += v * v);
                    counts[e] += 1;
                }
            }
        }
    }
}

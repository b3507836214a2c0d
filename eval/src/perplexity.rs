//! llama-perplexity's method: tokenize the whole text (with BOS), cut it into `n_ctx`-token chunks,
//! put BOS in place of each chunk's first token, run every chunk from an empty cache and score
//! only its second half — each of the last `n_ctx/2 − 1` positions predicting the next token.

use formats::kld_base::{row_slots, BaseWriter};
use formats::{FormatError, Result};
use quantize::types::search::nearest_int;
use rayon::prelude::*;

use crate::fastmath::{row_max, sum_exp_shifted, sums_exp_shifted};
use crate::forward::Session;
use crate::linear::Observer;
use crate::model::Model;

/// Tokens llama-perplexity puts in one decode call (`-b 2048`); chunks are batched up to it.
pub const BATCH_TOKENS: usize = 2048;

/// How the text is cut into chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlan {
    /// Tokens per chunk (`-c`).
    pub n_ctx: usize,
    /// Chunks evaluated (`--chunks`, capped by the text).
    pub n_chunks: usize,
    /// Chunks run together in one batch.
    pub n_seq: usize,
}

impl ChunkPlan {
    /// The plan for `n_tokens` tokens, refusing texts shorter than two chunks as llama.cpp does.
    pub fn new(
        n_tokens: usize,
        n_ctx: usize,
        max_chunks: Option<usize>,
        text: &std::path::Path,
    ) -> Result<ChunkPlan> {
        if n_ctx < 4 {
            return Err(FormatError::new(
                text,
                format!("context of {n_ctx} tokens is too small"),
            ));
        }
        if n_tokens < 2 * n_ctx {
            return Err(FormatError::new(
                text,
                format!(
                    "tokenizes to only {n_tokens} tokens; a context of {n_ctx} needs at least {}",
                    2 * n_ctx
                ),
            ));
        }
        let n_chunks = (n_tokens / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
        if n_chunks == 0 {
            return Err(FormatError::new(
                text,
                "--chunks 0 leaves nothing to evaluate",
            ));
        }
        Ok(ChunkPlan::batched(n_ctx, n_chunks))
    }

    /// `n_chunks` chunks of `n_ctx` tokens, as many per batch as llama-perplexity puts in one.
    pub fn batched(n_ctx: usize, n_chunks: usize) -> ChunkPlan {
        ChunkPlan {
            n_ctx,
            n_chunks,
            n_seq: (BATCH_TOKENS / n_ctx).max(1),
        }
    }

    /// First scored position of a chunk: its second half.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Scored predictions per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }
}

/// The scored part of one chunk: logits of positions `first..n_ctx-1` and the tokens they predict.
pub struct ScoredChunk<'a> {
    /// Chunk index.
    pub index: usize,
    /// `scored_per_chunk` rows of `n_vocab` logits.
    pub logits: &'a [f32],
    /// The token each row predicts.
    pub targets: &'a [u32],
}

/// The token lists of chunks `chunks`, each with BOS in place of its first token (when the
/// tokenizer adds one), as llama-perplexity runs them.
pub(crate) fn chunk_inputs(
    tokens: &[u32],
    plan: &ChunkPlan,
    chunks: std::ops::Range<usize>,
    bos: Option<u32>,
) -> Vec<Vec<u32>> {
    let n_ctx = plan.n_ctx;
    chunks
        .map(|c| {
            let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
            if let Some(b) = bos {
                chunk[0] = b;
            }
            chunk
        })
        .collect()
}

/// The tokens chunk `c`'s scored rows predict.
pub(crate) fn chunk_targets<'a>(tokens: &'a [u32], plan: &ChunkPlan, c: usize) -> &'a [u32] {
    &tokens[c * plan.n_ctx + plan.first() + 1..(c + 1) * plan.n_ctx]
}

/// Runs `model` over the chunks of `tokens` in order, calling `on_chunk` for each with its scored
/// logits. `observer` sees every matrix product's input (importance matrices).
pub fn run_chunks(
    model: &Model,
    tokens: &[u32],
    plan: &ChunkPlan,
    bos: Option<u32>,
    mut observer: Option<&mut dyn Observer>,
    mut on_chunk: impl FnMut(ScoredChunk),
) {
    let n_vocab = model.hparams.n_vocab;
    let (n_ctx, first) = (plan.n_ctx, plan.first());
    let mut start = 0;
    while start < plan.n_chunks {
        let n_seq = plan.n_seq.min(plan.n_chunks - start);
        let inputs = chunk_inputs(tokens, plan, start..start + n_seq, bos);
        let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut session = Session::single_pass(model, n_seq, n_ctx);
        let reborrowed: Option<&mut dyn Observer> = match observer {
            Some(ref mut o) => Some(&mut **o),
            None => None,
        };
        session.forward_each(&refs, first, reborrowed, |s, logits| {
            let c = start + s;
            on_chunk(ScoredChunk {
                index: c,
                logits: &logits[..plan.scored_per_chunk() * n_vocab],
                targets: chunk_targets(tokens, plan, c),
            });
        });
        start += n_seq;
    }
}

/// Runs `model` over the planned chunks of `tokens`, accumulating its perplexity; with `base`,
/// also saves each chunk's log-probabilities there (a KL-divergence base, finished on success).
/// `on_chunk` sees the chunk index and the running statistics (progress, the `[i]ppl,` line).
pub fn score(
    model: &Model,
    tokens: &[u32],
    plan: &ChunkPlan,
    bos: Option<u32>,
    mut base: Option<BaseWriter>,
    mut on_chunk: impl FnMut(usize, &PerplexityStats),
) -> Result<PerplexityStats> {
    let n_vocab = model.hparams.n_vocab;
    let mut stats = PerplexityStats::default();
    let mut err = None;
    run_chunks(model, tokens, plan, bos, None, |chunk| {
        if err.is_some() {
            return;
        }
        let nlls = match base.as_mut() {
            Some(w) => {
                let (codes, nlls) = encode_chunk(chunk.logits, chunk.targets, n_vocab);
                if let Err(e) = w.write_rows(&codes) {
                    return err = Some(e);
                }
                nlls
            }
            None => row_nlls(chunk.logits, chunk.targets, n_vocab),
        };
        stats.add(&nlls);
        on_chunk(chunk.index, &stats);
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(w) = base {
        w.finish()?;
    }
    Ok(stats)
}

/// Negative log-likelihoods of each row's target, as llama-perplexity's `log_softmax` computes
/// them (max-shifted, `expf` terms summed in f64).
pub fn row_nlls(logits: &[f32], targets: &[u32], n_vocab: usize) -> Vec<f64> {
    let nll =
        |row: &[f32], tok: u32, max: f32, sum: f64| -((row[tok as usize] - max) as f64 - sum.ln());
    logits
        .par_chunks(n_vocab * NLL_ROWS)
        .zip(targets.par_chunks(NLL_ROWS))
        .flat_map_iter(|(rows, targets)| {
            let rows: Vec<&[f32]> = rows.chunks(n_vocab).collect();
            let maxes: Vec<f32> = rows.iter().map(|row| row_max(row)).collect();
            let sums = match <[&[f32]; NLL_ROWS]>::try_from(&rows[..]) {
                Ok(four) => {
                    sums_exp_shifted(four, maxes[..].try_into().expect("one each")).to_vec()
                }
                Err(_) => rows
                    .iter()
                    .zip(&maxes)
                    .map(|(row, &max)| sum_exp_shifted(row, max))
                    .collect(),
            };
            (0..rows.len()).map(move |r| nll(rows[r], targets[r], maxes[r], sums[r]))
        })
        .collect()
}

/// Rows whose sums [`row_nlls`] forms side by side.
const NLL_ROWS: usize = 4;

/// Running perplexity: sums of NLL and NLL² over scored tokens.
#[derive(Debug, Default, Clone)]
pub struct PerplexityStats {
    nll: f64,
    nll2: f64,
    count: usize,
}

impl PerplexityStats {
    /// Adds one chunk's NLLs.
    pub fn add(&mut self, nlls: &[f64]) {
        for &v in nlls {
            self.nll += v;
            self.nll2 += v * v;
        }
        self.count += nlls.len();
    }

    /// Statistics from raw sums (the KL-divergence pass accumulates its own).
    pub fn from_sums(nll: f64, nll2: f64, count: usize) -> PerplexityStats {
        PerplexityStats { nll, nll2, count }
    }

    /// Tokens scored so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// `exp(mean NLL)`.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// llama-perplexity's "±": the standard error of the mean NLL times the perplexity.
    pub fn ppl_err(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

/// Encodes one row of logits as llama-perplexity's `log_softmax` does into `slots`
/// ([`row_slots`] long); returns the NLL of `target`.
fn encode_row(logits: &[f32], target: u32, slots: &mut [u16]) -> f64 {
    let max = row_max(logits);
    let min = logits
        .iter()
        .fold(logits[0], |m, &v| m.min(v))
        .max(max - 16.0);
    let sum = sum_exp_shifted(logits, max);
    let log_sum = sum.ln() as f32;
    let min_log_prob = min - max - log_sum;
    let scale = (max - min) / 65535.0;
    let head = [scale.to_bits(), min_log_prob.to_bits()];
    slots[0] = head[0] as u16;
    slots[1] = (head[0] >> 16) as u16;
    slots[2] = head[1] as u16;
    slots[3] = (head[1] >> 16) as u16;
    let codes = &mut slots[4..4 + logits.len()];
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (c, &v) in codes.iter_mut().zip(logits) {
            *c = if v > min {
                nearest_int(inv * (v - min)) as u16
            } else {
                0
            };
        }
    } else {
        codes.fill(0);
    }
    slots[4 + logits.len()..].fill(0);
    (max + log_sum - logits[target as usize]) as f64
}

/// Encodes one chunk's scored rows (`logits`, rows of `n_vocab`, one per target) for a
/// `--kl-divergence-base` file; returns the codes and the targets' NLLs.
pub fn encode_chunk(logits: &[f32], targets: &[u32], n_vocab: usize) -> (Vec<u16>, Vec<f64>) {
    let nv = row_slots(n_vocab);
    let mut slots = vec![0u16; targets.len() * nv];
    let nlls: Vec<f64> = slots
        .par_chunks_mut(nv)
        .zip(logits.par_chunks(n_vocab))
        .zip(targets.par_iter())
        .map(|((s, row), &t)| encode_row(row, t, s))
        .collect();
    (slots, nlls)
}

//! A student against a teacher dataset: llama-perplexity's KL-divergence statistics, computed
//! from the teacher's kept tokens, the mass of the rest and a sample of it instead of its full
//! vocabulary.

use std::path::Path;

use eval::kld::{KldStats, TokenComparison};
use eval::model::Model;
use eval::perplexity::{run_chunks, ChunkPlan};
use formats::digest::tokenizer_sha256;
use formats::{FormatError, Result};
use rayon::prelude::*;

use crate::sdd::{Distribution, Header, SddReader, TeacherRow};

/// Refuses a model that cannot be compared with the dataset: another vocabulary size, or
/// (when the dataset names it) another tokenizer.
pub fn check_student(model: &Model, model_path: &Path, header: &Header) -> Result<()> {
    if model.hparams.n_vocab != header.n_vocab as usize {
        return Err(FormatError::new(
            model_path,
            format!(
                "has a vocabulary of {} tokens, the dataset's teacher {}",
                model.hparams.n_vocab, header.n_vocab
            ),
        ));
    }
    if header.tokenizer != [0; 32] && tokenizer_sha256(&model.file().metadata) != header.tokenizer {
        return Err(FormatError::new(
            model_path,
            "tokenizes differently from the dataset's teacher (tokenizer metadata differs)",
        ));
    }
    Ok(())
}

/// The row's most likely token and its log-sum-exp shift (ln p_i = logit_i − shift); shared
/// by the comparison and the training loss.
pub fn log_softmax_shift(logits: &[f32]) -> (usize, f32) {
    let (mut imax, mut max) = (0, logits[0]);
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > max {
            (imax, max) = (i, v);
        }
    }
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (imax, max + sum.ln() as f32)
}

/// A row's KL divergence at the student's logits, and what the training gradient needs.
pub struct RowKl {
    /// The estimate of KL(teacher ‖ student): exact over the kept tokens, the rest lumped, plus
    /// the tail sample's estimate of the divergence within the rest (see `sdd::tail`).
    pub kld: f64,
    /// The estimate's variance from the tail sample (0 with fewer than two samples).
    pub variance: f64,
    /// The student's probability of each kept token.
    pub q: Vec<f64>,
    /// The student's probability of the rest.
    pub q_rest: f64,
    /// Each tail sample's weight `P_T/m · (r − 1)`: the derivative of the estimate with respect
    /// to that sample's `ln r`.
    pub tail_weights: Vec<f64>,
}

/// KL(teacher ‖ student) of one row (`d` its distribution), given the student's logits and
/// log-sum-exp shift.
pub fn row_kld(logits: &[f32], shift: f32, row: &TeacherRow, d: &Distribution) -> RowKl {
    let q_of = |i: u32| ((logits[i as usize] - shift) as f64).exp();
    let q: Vec<f64> = row.ids.iter().map(|&i| q_of(i)).collect();
    let q_rest = (1.0 - q.iter().sum::<f64>()).max(f64::MIN_POSITIVE);
    let mut kld: f64 = d
        .log_probs
        .iter()
        .zip(&q)
        .map(|(&lp, &qi)| (lp as f64).exp() * (lp as f64 - qi.max(f64::MIN_POSITIVE).ln()))
        .sum();
    let rest = d.rest_log_prob as f64;
    let (p_rest, ln_q_rest) = (rest.exp(), q_rest.ln());
    kld += p_rest * (rest - ln_q_rest);
    let m = row.tail.len();
    let mut tail_weights = Vec::with_capacity(m);
    let mut terms = Vec::with_capacity(m);
    for (&id, &lp) in row.tail.iter().zip(&d.tail_log_probs) {
        let ln_r = (q_of(id).max(f64::MIN_POSITIVE).ln() - ln_q_rest) - (lp as f64 - rest);
        let r = ln_r.exp();
        terms.push(r - 1.0 - ln_r);
        tail_weights.push(p_rest / m as f64 * (r - 1.0));
    }
    let mut variance = 0.0;
    if m > 0 {
        let mean = terms.iter().sum::<f64>() / m as f64;
        kld += p_rest * mean;
        if m > 1 {
            let spread = terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
            variance = p_rest * p_rest * spread / m as f64;
        }
    }
    RowKl {
        kld,
        variance,
        q,
        q_rest,
        tail_weights,
    }
}

/// What one position contributes, as llama-perplexity's `--kl-divergence` would count it.
pub fn compare_row(logits: &[f32], row: &TeacherRow) -> TokenComparison {
    let (imax, shift) = log_softmax_shift(logits);
    let d = row.distribution();
    let kl = row_kld(logits, shift, row, &d);
    let nll = shift - logits[row.target as usize];
    let nll_base = -d.target_log_prob;
    TokenComparison {
        nll,
        nll_base,
        kld: kl.kld,
        kld_variance: kl.variance,
        p_diff: (-nll).exp() - (-nll_base).exp(),
        same_top: imax as u32 == row.ids[0],
    }
}

/// Runs `model` over the dataset's chunks (at most `max_chunks`), a batch of chunks at a time,
/// comparing each position with the teacher's row; `on_chunk` sees each chunk index and the
/// running statistics.
pub fn compare_with_dataset(
    model: &Model,
    reader: &mut SddReader,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, &KldStats),
) -> Result<KldStats> {
    let header = reader.header().clone();
    let n_ctx = header.n_ctx as usize;
    let total = (header.n_chunks as usize).min(max_chunks.unwrap_or(usize::MAX));
    let batch = ChunkPlan::batched(n_ctx, 1).n_seq;
    let mut stats = KldStats::default();
    let mut start = 0;
    while start < total {
        let mut chunks = Vec::new();
        while chunks.len() < batch && start + chunks.len() < total {
            match reader.next_chunk()? {
                Some(c) => chunks.push(c),
                None => break,
            }
        }
        if chunks.is_empty() {
            break;
        }
        let tokens: Vec<u32> = chunks
            .iter()
            .flat_map(|c| c.tokens.iter().copied())
            .collect();
        let plan = ChunkPlan::batched(n_ctx, chunks.len());
        run_chunks(model, &tokens, &plan, header.bos, None, |scored| {
            let rows = &chunks[scored.index].rows;
            let n_vocab = model.hparams.n_vocab;
            let compared: Vec<TokenComparison> = scored
                .logits
                .par_chunks(n_vocab)
                .zip(rows.par_iter())
                .map(|(l, r)| compare_row(l, r))
                .collect();
            stats.add(&compared);
            on_chunk(start + scored.index, &stats);
        });
        start += chunks.len();
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdd::Selection;

    fn logits(seed: u64, n: usize, spread: f32) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let h = (i ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761) >> 7;
                spread * ((h % 10_000) as f32 / 10_000.0 - 0.5)
            })
            .collect()
    }

    /// Over many tail samples the estimate averages to the full-vocabulary KL, which lumping the
    /// rest under-estimates by far, and its stated variance matches its spread.
    #[test]
    fn the_tail_sample_makes_the_estimate_unbiased() {
        let n = 3000;
        let teacher = logits(1, n, 8.0);
        let student: Vec<f32> = teacher
            .iter()
            .zip(logits(2, n, 3.0))
            .map(|(t, e)| t + e)
            .collect();
        let (_, ts) = log_softmax_shift(&teacher);
        let (_, ss) = log_softmax_shift(&student);
        let exact: f64 = (0..n)
            .map(|i| {
                let (lp, lq) = ((teacher[i] - ts) as f64, (student[i] - ss) as f64);
                lp.exp() * (lp - lq)
            })
            .sum();
        let estimate = |tail: u32, seed: u64| {
            let sel = Selection {
                top_k: 32,
                max_rest: 0.0,
                tail,
            };
            let row = TeacherRow::from_logits(&teacher, 0, sel, seed);
            row_kld(&student, ss, &row, &row.distribution())
        };
        let lumped = estimate(0, 0).kld;
        assert!(lumped < 0.8 * exact, "lumped {lumped} vs exact {exact}");
        let runs: Vec<RowKl> = (0..400).map(|s| estimate(64, s)).collect();
        let mean = runs.iter().map(|r| r.kld).sum::<f64>() / runs.len() as f64;
        let spread = runs.iter().map(|r| (r.kld - mean).powi(2)).sum::<f64>() / 399.0;
        let stated = runs.iter().map(|r| r.variance).sum::<f64>() / runs.len() as f64;
        assert!(
            (mean - exact).abs() < 0.01 * exact,
            "mean {mean} vs exact {exact}"
        );
        assert!(
            stated > 0.5 * spread && stated < 2.0 * spread,
            "{stated} vs {spread}"
        );
    }
}

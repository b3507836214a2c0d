//! A student against a teacher dataset: llama-perplexity's KL-divergence statistics, computed
//! from the teacher's kept tokens plus the mass of the rest instead of its full vocabulary.

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

/// Forward KL(teacher ‖ student) over a row's kept tokens `ids` and the lumped rest, given the
/// student's logits and log-sum-exp shift. Also returns the student's probability of each kept
/// token and of the rest, which the training gradient needs.
pub fn row_kld(logits: &[f32], shift: f32, ids: &[u32], d: &Distribution) -> (f64, Vec<f64>, f64) {
    let q: Vec<f64> = ids
        .iter()
        .map(|&i| ((logits[i as usize] - shift) as f64).exp())
        .collect();
    let q_rest = (1.0 - q.iter().sum::<f64>()).max(f64::MIN_POSITIVE);
    let mut kld: f64 = d
        .log_probs
        .iter()
        .zip(&q)
        .map(|(&lp, &qi)| (lp as f64).exp() * (lp as f64 - qi.max(f64::MIN_POSITIVE).ln()))
        .sum();
    let rest = d.rest_log_prob as f64;
    kld += rest.exp() * (rest - q_rest.ln());
    (kld, q, q_rest)
}

/// What one position contributes, as llama-perplexity's `--kl-divergence` would count it.
pub fn compare_row(logits: &[f32], row: &TeacherRow) -> TokenComparison {
    let (imax, shift) = log_softmax_shift(logits);
    let d = row.distribution();
    let (kld, _, _) = row_kld(logits, shift, &row.ids, &d);
    let nll = shift - logits[row.target as usize];
    let nll_base = -d.target_log_prob;
    TokenComparison {
        nll,
        nll_base,
        kld,
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

//! Making teacher datasets: run a teacher over a text (llama-perplexity's chunks, BOS in front,
//! the second half of each chunk scored), or convert the rows of a llama.cpp
//! `--kl-divergence-base` file.

use std::path::Path;

use eval::model::Model;
use eval::perplexity::{run_chunks, ChunkPlan};
use formats::digest::{file_sha256, model_sha256, tokenizer_sha256};
use formats::kld_base::{decode_row, row_slots, BaseReader};
use formats::Result;
use rayon::prelude::*;

use crate::sdd::{Header, SddWriter, Selection, TeacherRow};

/// The header of a dataset of `teacher` over the text at `text_path`.
pub fn header_for_model(
    teacher: &Model,
    text_path: &Path,
    plan: &ChunkPlan,
    selection: Selection,
    bos: Option<u32>,
) -> Result<Header> {
    Ok(Header {
        teacher: model_sha256(teacher.file())?,
        tokenizer: tokenizer_sha256(&teacher.file().metadata),
        text: file_sha256(text_path)?,
        n_vocab: teacher.hparams.n_vocab as u32,
        n_ctx: plan.n_ctx as u32,
        n_chunks: plan.n_chunks as u32,
        top_k: selection.top_k as u32,
        max_rest: selection.max_rest,
        tail: selection.tail,
        bos,
    })
}

/// The selection a header asks for.
pub fn selection_of(header: &Header) -> Selection {
    Selection {
        top_k: header.top_k as usize,
        max_rest: header.max_rest,
        tail: header.tail,
    }
}

/// The stored rows of chunk `chunk`'s scored logits (or log-probabilities: the same rows); each
/// row's tail sample is seeded by its index in the dataset, so any thread count draws the same.
fn rows_of(
    logits: &[f32],
    targets: &[u32],
    n_vocab: usize,
    sel: Selection,
    chunk: usize,
) -> Vec<TeacherRow> {
    let first = (chunk * targets.len()) as u64;
    logits
        .par_chunks(n_vocab)
        .zip(targets.par_iter())
        .enumerate()
        .map(|(r, (row, &t))| TeacherRow::from_logits(row, t, sel, first + r as u64))
        .collect()
}

/// Runs `teacher` over the chunks of `tokens` that `writer` still lacks and appends them;
/// `on_chunk` sees each chunk index once it is on disk.
pub fn write_from_model(
    teacher: &Model,
    tokens: &[u32],
    writer: &mut SddWriter,
    mut on_chunk: impl FnMut(usize),
) -> Result<()> {
    let header = writer.header().clone();
    let (n_ctx, done) = (header.n_ctx as usize, writer.chunks_done());
    let plan = ChunkPlan::batched(n_ctx, header.n_chunks as usize - done);
    let tokens = &tokens[done * n_ctx..header.n_chunks as usize * n_ctx];
    let n_vocab = teacher.hparams.n_vocab;
    let mut result = Ok(());
    run_chunks(teacher, tokens, &plan, header.bos, None, |chunk| {
        if result.is_err() {
            return;
        }
        let c = chunk.index;
        let sel = selection_of(&header);
        let rows = rows_of(chunk.logits, chunk.targets, n_vocab, sel, done + c);
        result = writer.write_chunk(&tokens[c * n_ctx..(c + 1) * n_ctx], &rows);
        on_chunk(done + c);
    });
    result
}

/// The header of a dataset imported from `base` (at `base_path`), keeping its first
/// `n_chunks` chunks; teacher, tokenizer and BOS come from the model that made the base.
pub fn header_for_base(
    base: &BaseReader,
    base_path: &Path,
    teacher: &Model,
    n_chunks: usize,
    selection: Selection,
    bos: Option<u32>,
) -> Result<Header> {
    if base.n_vocab != teacher.hparams.n_vocab {
        return Err(formats::FormatError::new(
            base_path,
            format!(
                "vocabulary of {} tokens, the teacher {} has {}",
                base.n_vocab,
                teacher.file().path().display(),
                teacher.hparams.n_vocab
            ),
        ));
    }
    // The base file stands for the text: its hash names the dataset's input.
    header_for_model(
        teacher,
        base_path,
        &ChunkPlan::batched(base.n_ctx, n_chunks),
        selection,
        bos,
    )
}

/// Converts the chunks of `base` that `writer` still lacks; `on_chunk` sees each chunk index.
pub fn write_from_base(
    base: &mut BaseReader,
    writer: &mut SddWriter,
    mut on_chunk: impl FnMut(usize),
) -> Result<()> {
    let header = writer.header().clone();
    let (n_ctx, n_vocab) = (base.n_ctx, base.n_vocab);
    let first = header.first_scored();
    for c in 0..header.n_chunks as usize {
        let slots = base.next_chunk()?;
        if c < writer.chunks_done() {
            continue;
        }
        let tokens = &base.tokens[c * n_ctx..(c + 1) * n_ctx];
        let log_probs: Vec<f32> = slots
            .par_chunks(row_slots(n_vocab))
            .flat_map_iter(|row| decode_row(row, n_vocab))
            .collect();
        let rows = rows_of(
            &log_probs,
            &tokens[first + 1..],
            n_vocab,
            selection_of(&header),
            c,
        );
        writer.write_chunk(tokens, &rows)?;
        on_chunk(c);
    }
    Ok(())
}

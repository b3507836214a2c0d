//! A model opened together with the text it is to run over: the start of every command that
//! evaluates a model on a text (perplexity, imatrix, prune's calibration, teacher datasets, the
//! release's teacher runs).

use std::path::Path;

use formats::{FormatError, Result};

use crate::model::Model;
use crate::perplexity::ChunkPlan;
use crate::tokenizer::Tokenizer;

/// Opens a model for evaluation and reads the text it is to be evaluated on.
pub fn open_model_and_text(model: &Path, text: &Path) -> Result<(Model, Tokenizer, String)> {
    let m = Model::open(model)?;
    let tokenizer = Tokenizer::from_gguf(&m.file().metadata, model)?;
    if tokenizer.n_tokens() != m.hparams.n_vocab {
        return Err(FormatError::new(
            model,
            format!(
                "the tokenizer has {} tokens but token_embd.weight has {} rows",
                tokenizer.n_tokens(),
                m.hparams.n_vocab
            ),
        ));
    }
    let bytes = std::fs::read(text).map_err(|e| FormatError::io(text, e))?;
    let text_str =
        String::from_utf8(bytes).map_err(|_| FormatError::new(text, "is not UTF-8 text"))?;
    Ok((m, tokenizer, text_str))
}

/// A model opened with the text it runs over, tokenized whole (with BOS) and cut into chunks as
/// llama-perplexity does: what perplexity, imatrix, prune and release all start from.
pub struct Tokenized {
    /// The model.
    pub model: Model,
    /// The BOS token the tokenizer adds, if any.
    pub bos: Option<u32>,
    /// The text's tokens.
    pub tokens: Vec<u32>,
    /// Its chunks (refusing texts shorter than two).
    pub plan: ChunkPlan,
}

/// Opens `model`, tokenizes `text` and plans chunks of `n_ctx` tokens (at most `chunks`).
pub fn open_tokenized(
    model: &Path,
    text: &Path,
    n_ctx: usize,
    chunks: Option<usize>,
) -> Result<Tokenized> {
    let (model, tokenizer, text_str) = open_model_and_text(model, text)?;
    let tokens = tokenizer.tokenize(&text_str, true, false);
    let plan = ChunkPlan::new(tokens.len(), n_ctx, chunks, text)?;
    Ok(Tokenized {
        model,
        bos: tokenizer.bos_to_add(),
        tokens,
        plan,
    })
}

//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod archs;
pub mod convert;
pub mod demo;
pub mod dev;
pub mod distill;
pub mod imatrix;
pub mod inspect;
pub mod perplexity;
pub mod progress;
pub mod prune;
pub mod quantize;
pub mod release;
pub mod types;

/// `--split-max-size N[M|G]` / `--split-max-tensors N`: write a split set with
/// llama-gguf-split's layout (`OUT-0000i-of-0000n.gguf` for `OUT.gguf`).
#[derive(clap::Args)]
pub struct SplitArgs {
    /// Start a new shard before the tensor data would pass this size (M = 10^6, G = 10^9 bytes).
    #[arg(long, value_name = "N[M|G]", conflicts_with = "split_max_tensors")]
    pub split_max_size: Option<String>,
    /// Put at most this many tensors in each shard.
    #[arg(long, value_name = "N")]
    pub split_max_tensors: Option<usize>,
}

impl SplitArgs {
    /// The requested split, if any.
    pub fn limit(&self) -> anyhow::Result<Option<formats::gguf::split::SplitLimit>> {
        use formats::gguf::split::SplitLimit;
        match (&self.split_max_size, self.split_max_tensors) {
            (Some(size), _) => Ok(Some(
                SplitLimit::parse_size(size)
                    .map_err(|m| anyhow::anyhow!("--split-max-size {m}"))?,
            )),
            (None, Some(0)) => anyhow::bail!("--split-max-tensors must be at least 1"),
            (None, Some(n)) => Ok(Some(SplitLimit::Tensors(n))),
            (None, None) => Ok(None),
        }
    }
}

/// The options every long-running command shares.
#[derive(clap::Args)]
pub struct RunOptions {
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Machine output for CI: one JSON object on stdout instead of the human-readable text.
    #[arg(long)]
    pub json: bool,
}

/// Sizes rayon's global pool (`-t`); the default is one thread per core.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    Ok(())
}

/// Opens a model for evaluation and reads the text it is to be evaluated on.
pub fn open_model_and_text(
    model: &std::path::Path,
    text: &std::path::Path,
) -> anyhow::Result<(eval::model::Model, eval::tokenizer::Tokenizer, String)> {
    let m = eval::model::Model::open(model)?;
    let tokenizer = eval::tokenizer::Tokenizer::from_gguf(&m.file().metadata, model)?;
    if tokenizer.n_tokens() != m.hparams.n_vocab {
        anyhow::bail!(
            "{}: the tokenizer has {} tokens but token_embd.weight has {} rows",
            model.display(),
            tokenizer.n_tokens(),
            m.hparams.n_vocab
        );
    }
    let bytes = std::fs::read(text).map_err(|e| formats::FormatError::io(text, e))?;
    let text_str = String::from_utf8(bytes)
        .map_err(|_| formats::FormatError::new(text, "is not UTF-8 text"))?;
    Ok((m, tokenizer, text_str))
}

/// A model opened with the text it runs over, tokenized whole (with BOS) and cut into chunks as
/// llama-perplexity does: what perplexity, imatrix, prune and release all start from.
pub struct Tokenized {
    /// The model.
    pub model: eval::model::Model,
    /// The BOS token the tokenizer adds, if any.
    pub bos: Option<u32>,
    /// The text's tokens.
    pub tokens: Vec<u32>,
    /// Its chunks (refusing texts shorter than two).
    pub plan: eval::perplexity::ChunkPlan,
}

/// Opens `model`, tokenizes `text` and plans chunks of `n_ctx` tokens (at most `chunks`).
pub fn open_tokenized(
    model: &std::path::Path,
    text: &std::path::Path,
    n_ctx: usize,
    chunks: Option<usize>,
) -> anyhow::Result<Tokenized> {
    let (model, tokenizer, text_str) = open_model_and_text(model, text)?;
    let tokens = tokenizer.tokenize(&text_str, true, false);
    let plan = eval::perplexity::ChunkPlan::new(tokens.len(), n_ctx, chunks, text)?;
    Ok(Tokenized {
        model,
        bos: tokenizer.bos_to_add(),
        tokens,
        plan,
    })
}

/// llama-perplexity's closing line (after the `[i]ppl,` run).
pub fn print_final_estimate(stats: &eval::perplexity::PerplexityStats) {
    println!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        stats.ppl(),
        stats.ppl_err()
    );
}

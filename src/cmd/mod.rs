//! One module per subcommand; each has an `Args` (clap) and a `run`.

pub mod archs;
pub mod convert;
pub mod demo;
pub mod dev;
pub mod distill;
pub mod imatrix;
pub mod inspect;
pub mod perplexity;
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

/// llama-perplexity's closing line (after the `[i]ppl,` run).
pub fn print_final_estimate(stats: &eval::perplexity::PerplexityStats) {
    println!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        stats.ppl(),
        stats.ppl_err()
    );
}

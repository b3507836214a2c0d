//! `smelt dev`: helpers for smelt's own tests and benchmarks (synthetic checkpoints).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use formats::hf::synthetic::{write_synthetic, Distribution, SyntheticSpec, SyntheticTokenizer};
use formats::hf::FloatType;

/// Arguments of `smelt dev`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(clap::Subcommand)]
enum DevCommand {
    /// Write a random checkpoint folder (Llama, Mistral or Qwen2) for tests and benchmarks.
    Synth(SynthArgs),
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Folder to write.
    out: PathBuf,
    /// LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM.
    #[arg(long, default_value = "LlamaForCausalLM")]
    arch: String,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 128)]
    ffn: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Vocabulary size of the generated minimal tokenizer.
    #[arg(long, default_value_t = 300)]
    vocab: usize,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Write a separate lm_head.weight.
    #[arg(long)]
    untied: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight distribution: gaussian, heavy, blocky, tiny or mixed.
    #[arg(long, default_value = "gaussian")]
    dist: String,
    /// `minimal`, `copy:FOLDER` (tokenizer.model etc.) or `gpt2:VOCAB.gguf`.
    #[arg(long, default_value = "minimal")]
    tokenizer: String,
}

/// Runs a dev command.
pub fn run(args: Args) -> Result<ExitCode> {
    let DevCommand::Synth(a) = args.command;
    let dtype = match a.dtype.as_str() {
        "f32" => FloatType::F32,
        "f16" => FloatType::F16,
        "bf16" => FloatType::BF16,
        other => bail!("--dtype {other}: expected f32, f16 or bf16"),
    };
    let tokenizer = match a.tokenizer.split_once(':') {
        None if a.tokenizer == "minimal" => SyntheticTokenizer::Minimal,
        Some(("copy", p)) => SyntheticTokenizer::CopyFrom(p.into()),
        Some(("gpt2", p)) => SyntheticTokenizer::Gpt2FromGguf(p.into()),
        _ => bail!(
            "--tokenizer {}: expected minimal, copy:FOLDER or gpt2:VOCAB.gguf",
            a.tokenizer
        ),
    };
    let spec = SyntheticSpec {
        architecture: a.arch,
        hidden: a.hidden,
        intermediate: a.ffn,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        vocab: a.vocab,
        dtype,
        shards: a.shards,
        tied: !a.untied,
        seed: a.seed,
        distribution: Distribution::from_name(&a.dist).ok_or_else(|| {
            anyhow::anyhow!(
                "--dist {}: expected gaussian, heavy, blocky, tiny or mixed",
                a.dist
            )
        })?,
        tokenizer,
    };
    write_synthetic(&a.out, &spec)?;
    Ok(ExitCode::SUCCESS)
}

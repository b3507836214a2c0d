//! `smelt imatrix`: llama-imatrix's importance matrix, in its GGUF or legacy `.dat` format.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Result};
use eval::imatrix::collect;
use serde_json::json;

use release::progress;

/// Output formats llama-imatrix writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// GGUF (`<tensor>.in_sum2` / `<tensor>.counts`), the default.
    Gguf,
    /// The legacy `.dat` format.
    Dat,
}

/// Arguments of `smelt imatrix`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model to run.
    pub model: PathBuf,
    /// Calibration text.
    #[arg(short = 'f', long = "file")]
    pub text: PathBuf,
    /// Output file.
    #[arg(short = 'o', long = "output-file", default_value = "imatrix.gguf")]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "gguf")]
    pub output_format: OutputFormat,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub n_ctx: usize,
    /// Process at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Runs `smelt imatrix`.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let eval::text::Tokenized {
        model,
        bos,
        tokens,
        plan,
    } = eval::text::open_tokenized(&args.model, &args.text, args.n_ctx, args.chunks)?;
    let started = Instant::now();
    let bar = progress::tokens((plan.n_chunks * plan.n_ctx) as u64, "imatrix");
    let (collector, stats) = collect(&model, &tokens, &plan, bos, |index, stats| {
        bar.inc(plan.n_ctx as u64);
        if !args.run.json {
            print!("[{}]{:.4},", index + 1, stats.ppl());
        }
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let file = collector
        .into_file(vec![args.text.display().to_string()])
        .map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
    match args.output_format {
        OutputFormat::Gguf => file.write_gguf(&args.out)?,
        OutputFormat::Dat => file.write_dat(&args.out)?,
    }
    if args.run.json {
        let out = json!({
            "output": args.out.display().to_string(),
            "entries": file.entries.len(),
            "chunk_count": file.chunk_count,
            "chunk_size": plan.n_ctx,
            "ppl": stats.ppl(),
            "ppl_err": stats.ppl_err(),
            "tokens_per_s": (plan.n_chunks * plan.n_ctx) as f64 / seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        super::print_final_estimate(&stats);
        eprintln!(
            "stored {} entries after {} chunks in {}",
            file.entries.len(),
            file.chunk_count,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

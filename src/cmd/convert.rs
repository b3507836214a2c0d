//! `smelt convert`: Hugging Face checkpoint → GGUF, byte-identical to llama.cpp's converter.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use formats::hf::{plan, Checkpoint};
use quantize::convert::{write_gguf, ConvertOptions, OutType};

/// Arguments of `smelt convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json, *.safetensors, tokenizer files).
    pub input: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// f32, f16, bf16 or q8_0 (default: the checkpoint's own float type).
    #[arg(long)]
    pub outtype: Option<String>,
    /// Convert tensors that hold NaN or Inf instead of refusing.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the conversion.
pub fn run(args: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let ckpt = Checkpoint::open(&args.input)?;
    let out_type = match &args.outtype {
        Some(name) => match OutType::from_name(name) {
            Some(t) => t,
            None => bail!("--outtype {name}: expected f32, f16, bf16 or q8_0"),
        },
        None => OutType::native(&ckpt),
    };
    let plan = plan(&ckpt, out_type.file_type())?;
    let total: u64 = plan
        .tensors
        .iter()
        .map(|t| ckpt.bytes(&ckpt.tensors[t.source]).len() as u64)
        .sum();
    let bar = super::progress::bytes(total, "convert");
    let progress = |n: u64| bar.inc(n);
    write_gguf(
        &ckpt,
        &plan,
        &args.output,
        &ConvertOptions {
            out_type,
            allow_nonfinite: args.allow_nonfinite,
            progress: &progress,
        },
    )?;
    bar.finish_and_clear();
    let size = std::fs::metadata(&args.output)?.len();
    if args.json {
        let summary = serde_json::json!({
            "output": args.output,
            "outtype": format!("{out_type:?}").to_lowercase(),
            "tensors": plan.tensors.len(),
            "bytes": size,
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{summary}");
    } else {
        eprintln!(
            "smelt: wrote {} ({} tensors, {size} bytes) in {:.2}s",
            args.output.display(),
            plan.tensors.len(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `smelt convert`: Hugging Face checkpoint → GGUF, byte-identical to llama.cpp's converter.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use formats::hf::Checkpoint;
use indicatif::MultiProgress;
use quantize::convert::OutType;
use release::convert::convert_checkpoint;

/// Arguments of `smelt convert`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint folder (config.json, *.safetensors, tokenizer files).
    pub input: PathBuf,
    /// Output GGUF file (`--outfile`, as convert_hf_to_gguf.py names it, also works).
    #[arg(short, long, visible_alias = "outfile")]
    pub output: PathBuf,
    /// f32, f16, bf16 or q8_0 (default: the checkpoint's own float type).
    #[arg(long)]
    pub outtype: Option<String>,
    /// Convert tensors that hold NaN or Inf instead of refusing.
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Split the output like llama-gguf-split.
    #[command(flatten)]
    pub split: super::SplitArgs,
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
    let (n_tensors, paths) = convert_checkpoint(
        &ckpt,
        out_type,
        args.allow_nonfinite,
        &args.output,
        args.split.limit()?,
        &MultiProgress::new(),
        "convert",
    )?;
    let mut size = 0;
    for p in &paths {
        size += std::fs::metadata(p)?.len();
    }
    if args.json {
        let summary = serde_json::json!({
            "output": args.output,
            "outtype": format!("{out_type:?}").to_lowercase(),
            "tensors": n_tensors,
            "bytes": size,
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{summary}");
    } else {
        eprintln!(
            "smelt: wrote {} ({} tensors, {size} bytes) in {:.2}s",
            args.output.display(),
            n_tensors,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

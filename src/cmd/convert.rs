//! `smelt convert`: Hugging Face checkpoint → GGUF, byte-identical to llama.cpp's converter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use arch::convert::plan;
use formats::gguf::split::SplitLimit;
use formats::hf::Checkpoint;
use indicatif::MultiProgress;
use quantize::convert::{write_gguf, ConvertOptions, OutType};

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

/// Converts `ckpt` into a GGUF at `out` (or the split set it names) as `out_type`, with a
/// byte-progress bar labelled `label` added to `bars`; returns the number of tensors and the files
/// written. Shared by `smelt convert`, the release
/// teacher and `smelt prune` on a folder.
pub fn convert_checkpoint(
    ckpt: &Checkpoint,
    out_type: OutType,
    allow_nonfinite: bool,
    out: &Path,
    split: Option<SplitLimit>,
    bars: &MultiProgress,
    label: &str,
) -> Result<(usize, Vec<PathBuf>)> {
    let plan = plan(ckpt, out_type.file_type())?;
    let total: u64 = plan
        .tensors
        .iter()
        .map(|t| t.data(ckpt).0.len() as u64)
        .sum();
    let bar = bars.add(super::progress::bytes(total, label));
    let progress = |n: u64| bar.inc(n);
    let paths = write_gguf(
        ckpt,
        &plan,
        out,
        &ConvertOptions {
            out_type,
            allow_nonfinite,
            progress: &progress,
            split,
        },
    )?;
    bar.finish_and_clear();
    Ok((plan.tensors.len(), paths))
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

/// A scratch file beside an output, removed when dropped (success or failure).
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A hidden scratch GGUF name beside `out` (same folder, so renames stay on one disk).
pub fn scratch_beside(out: &Path, what: &str) -> Scratch {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Scratch(out.with_file_name(format!(".{name}.{what}.gguf")))
}

/// A GGUF to read `input` from: `input` itself, or — for a checkpoint folder — its conversion
/// at native precision into a scratch file beside `out`.
pub enum GgufSource {
    /// A GGUF file as given.
    File(PathBuf),
    /// A checkpoint folder converted for this run.
    Converted(Scratch),
}

impl GgufSource {
    /// Where the GGUF is.
    pub fn path(&self) -> &Path {
        match self {
            GgufSource::File(p) => p,
            GgufSource::Converted(s) => &s.0,
        }
    }
}

/// Opens `input` as a GGUF, converting a checkpoint folder first (with a progress bar).
pub fn gguf_of(input: &Path, out: &Path) -> Result<GgufSource> {
    if !input.is_dir() {
        return Ok(GgufSource::File(input.to_path_buf()));
    }
    let scratch = scratch_beside(out, "source");
    let ckpt = Checkpoint::open(input)?;
    let bars = MultiProgress::new();
    convert_checkpoint(
        &ckpt,
        OutType::native(&ckpt),
        false,
        &scratch.0,
        None,
        &bars,
        "convert",
    )?;
    Ok(GgufSource::Converted(scratch))
}

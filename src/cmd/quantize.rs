//! `smelt quantize`: GGUF or checkpoint folder → quantized GGUF, byte-identical to llama-quantize.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use quantize::job::{self, JobOptions, Plan};
use quantize::mixture::FileType;
use release::inputs::{file_type, importance_weights, open_source, TensorChoices};

/// Arguments of `smelt quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// Input: a GGUF file or a Hugging Face checkpoint folder (converted on the fly, in one pass).
    pub input: PathBuf,
    /// Output GGUF file (ignored with --dry-run).
    pub output: PathBuf,
    /// File type, as llama-quantize names it: Q4_K_M, Q8_0, IQ4_XS, TQ1_0, … (see `smelt types`).
    #[arg(value_name = "TYPE")]
    pub ftype: String,
    /// Importance matrix (llama-imatrix's .gguf or legacy .dat).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Per-tensor choices besides the file type.
    #[command(flatten)]
    pub choices: TensorChoices,
    /// Allow re-quantizing tensors that are already quantized.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print the per-tensor types and sizes without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Split the output like llama-gguf-split.
    #[command(flatten)]
    pub split: super::SplitArgs,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the quantization.
pub fn run(args: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let ftype = file_type(&args.ftype)?;
    super::set_threads(args.threads)?;
    let imatrix = match &args.imatrix {
        Some(path) => Some(importance_weights(path, path.display().to_string())?),
        None => None,
    };
    let source = open_source(&args.input)?;
    let mut opts = JobOptions {
        ftype,
        overrides: args.choices.overrides()?,
        imatrix,
        allow_requantize: args.allow_requantize,
        progress: &|_| {},
        split: args.split.limit()?,
    };
    let plan = job::plan(&source, &opts)?;
    if args.dry_run {
        report(&args, &plan, ftype, None, start);
        return Ok(ExitCode::SUCCESS);
    }
    let bar = release::progress::bytes(plan.bytes_in(), "quantize");
    let progress = |n: u64| bar.inc(n);
    opts.progress = &progress;
    let files = job::write(&source, &plan, &args.output, &opts)?;
    bar.finish_and_clear();
    report(&args, &plan, ftype, Some(&files), start);
    Ok(ExitCode::SUCCESS)
}

/// Prints the summary; `written` holds the files written (several for a split set), `None` for a
/// dry run.
fn report(args: &Args, plan: &Plan, ftype: FileType, written: Option<&[PathBuf]>, start: Instant) {
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    let bpw = |b: u64| b as f64 * 8.0 / plan.n_elements().max(1) as f64;
    let fallbacks = plan.tensors.iter().filter(|t| t.fell_back).count();
    if args.json {
        let tensors: Vec<_> = plan
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.info.name, "dims": t.info.dims, "from": t.from.name(),
                    "type": t.info.ggml_type.name(), "fallback": t.fell_back,
                    "bytes_in": t.bytes_in, "bytes_out": t.bytes_out,
                })
            })
            .collect();
        let summary = serde_json::json!({
            "input": args.input, "output": written.map(|_| &args.output), "files": written,
            "type": ftype.name, "file_type": ftype.id,
            "bytes_in": plan.bytes_in(), "bytes_out": plan.bytes_out(),
            "bpw": bpw(plan.bytes_out()), "fallbacks": fallbacks, "dry_run": written.is_none(),
            "seconds": start.elapsed().as_secs_f64(), "tensors": tensors,
        });
        println!("{summary}");
        return;
    }
    if written.is_none() {
        for t in &plan.tensors {
            println!(
                "{:<36} {:>20} {:>7} -> {:<7} {:>9.3} MiB{}",
                t.info.name,
                format!("{:?}", t.info.dims),
                t.from.name(),
                t.info.ggml_type.name(),
                mib(t.bytes_out),
                if t.fell_back { "  (fallback)" } else { "" }
            );
        }
    }
    let shards = match written {
        Some(files) if files.len() > 1 => format!(" in {} files", files.len()),
        _ => String::new(),
    };
    eprintln!(
        "smelt: {} {}: {:.2} MiB ({:.2} bpw) -> {:.2} MiB ({:.2} bpw){shards}, {fallbacks} fallback(s), {:.2}s",
        if written.is_some() { "quantized" } else { "would quantize" },
        ftype.name,
        mib(plan.bytes_in()),
        bpw(plan.bytes_in()),
        mib(plan.bytes_out()),
        bpw(plan.bytes_out()),
        start.elapsed().as_secs_f64()
    );
}

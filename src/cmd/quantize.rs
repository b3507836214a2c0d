//! `smelt quantize`: GGUF or checkpoint folder → quantized GGUF, byte-identical to llama-quantize.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use quantize::job::{self, JobOptions, Plan, Source};
use quantize::mixture::FileType;
use release::allocate::{self, AllocationPlan};
use release::inputs::{file_type, ggml_type, importance_weights, open_source, TensorChoices};

/// Arguments of `smelt quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// Input: a GGUF file or a Hugging Face checkpoint folder (converted on the fly, in one pass).
    pub input: PathBuf,
    /// Output GGUF file (ignored with --dry-run).
    pub output: PathBuf,
    /// File type, as llama-quantize names it: Q4_K_M, Q8_0, IQ4_XS, TQ1_0, … (see `smelt types`);
    /// or `auto`: each tensor's type chosen by measurement for a size target.
    #[arg(value_name = "TYPE")]
    pub ftype: String,
    /// What `auto` chooses for.
    #[command(flatten)]
    pub auto: AutoArgs,
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

/// The options of `smelt quantize IN OUT auto`.
#[derive(clap::Args)]
pub struct AutoArgs {
    /// auto: bits per weight of the whole file (metadata included).
    #[arg(long, value_name = "BPW")]
    pub target_bpw: Option<f64>,
    /// auto: bytes of the whole file (a number, or with a K, M or G suffix: powers of 1000).
    #[arg(long, value_name = "SIZE", conflicts_with = "target_bpw")]
    pub target_size: Option<String>,
    /// auto: calibration text the costs are measured on.
    #[arg(short = 'f', long = "file", value_name = "TEXT")]
    pub calibration: Option<PathBuf>,
    /// auto: tensor types to try (comma-separated; default: the codebook types, the k-quants,
    /// IQ4_XS and Q8_0, or the 32-value block types for rows the k-quants do not fit; types that
    /// need importance data only where the imatrix has some).
    #[arg(long, value_name = "T,T,…", value_delimiter = ',')]
    pub candidates: Option<Vec<String>>,
    /// auto: tokens per calibration chunk.
    #[arg(long = "ctx", default_value_t = 512)]
    pub n_ctx: usize,
    /// auto: calibration chunks measured.
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// auto: write the allocation (each tensor's type, bytes and cost) to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub plan_out: Option<PathBuf>,
    /// auto: replay a saved allocation instead of measuring; with --target-bpw or --target-size,
    /// choose again for that target from the costs it holds.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["calibration", "candidates"])]
    pub plan: Option<PathBuf>,
}

impl AutoArgs {
    fn given(&self) -> bool {
        self.target_bpw.is_some()
            || self.target_size.is_some()
            || self.calibration.is_some()
            || self.candidates.is_some()
            || self.plan.is_some()
            || self.plan_out.is_some()
    }

    /// Measures and chooses, or reads the saved plan.
    fn allocation(
        &self,
        input: &Path,
        source: &Source,
        opts: &JobOptions,
    ) -> Result<AllocationPlan> {
        let target = match (self.target_bpw, &self.target_size) {
            (Some(b), None) => Some(allocate::Target::parse(&format!("{b}bpw"))?),
            (None, Some(s)) => Some(allocate::Target::parse(s)?),
            _ => None,
        };
        if let Some(path) = &self.plan {
            let saved = allocate::read_plan(path)?;
            return match target {
                Some(t) => allocate::retarget(&saved, input, source, opts, t),
                None => Ok(saved),
            };
        }
        let Some(target) = target else {
            bail!("auto needs --target-bpw or --target-size (or --plan)");
        };
        if input.is_dir() {
            bail!(
                "{}: auto allocation measures a GGUF model; convert the checkpoint first (smelt convert)",
                input.display()
            );
        }
        let Some(text) = &self.calibration else {
            bail!("auto needs a calibration text (-f TEXT) to measure on");
        };
        let asked = self
            .candidates
            .as_ref()
            .map(|names| {
                names
                    .iter()
                    .map(|n| ggml_type(n))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let calibration = allocate::Calibration {
            text: text.clone(),
            n_ctx: self.n_ctx,
            chunks: self.chunks,
        };
        let bar = release::progress::steps(0, "measure");
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let plan = allocate::allocate(
            input,
            source,
            opts,
            target,
            &calibration,
            asked.as_deref(),
            &progress,
        )?;
        bar.finish_and_clear();
        Ok(plan)
    }
}

/// Runs the quantization.
pub fn run(args: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let auto = args.ftype.eq_ignore_ascii_case("auto");
    if !auto && args.auto.given() {
        bail!("--target-bpw, --target-size, -f, --candidates and --plan go with the type auto");
    }
    let ftype = match auto {
        true => file_type("Q8_0")?,
        false => file_type(&args.ftype)?,
    };
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
        metadata: Vec::new(),
    };
    let allocation = match auto {
        true => {
            let a = args.auto.allocation(&args.input, &source, &opts)?;
            if let Some(path) = &args.auto.plan_out {
                allocate::write_plan(path, &a)?;
            }
            allocate::apply(&a, &source, &mut opts)?;
            Some(a)
        }
        false => None,
    };
    let ftype = opts.ftype;
    let plan = job::plan(&source, &opts)?;
    if let Some(a) = &allocation {
        allocate::check_size(&args.output, &plan, a)?;
    }
    let allocation = allocation.as_ref();
    if args.dry_run {
        report(&args, &plan, ftype, allocation, None, start);
        return Ok(ExitCode::SUCCESS);
    }
    let bar = release::progress::bytes(plan.bytes_in(), "quantize");
    let progress = |n: u64| bar.inc(n);
    opts.progress = &progress;
    let files = job::write(&source, &plan, &args.output, &opts)?;
    bar.finish_and_clear();
    report(&args, &plan, ftype, allocation, Some(&files), start);
    Ok(ExitCode::SUCCESS)
}

/// Prints the summary; `written` holds the files written (several for a split set), `None` for a
/// dry run; `allocation` the plan of an `auto` run.
fn report(
    args: &Args,
    plan: &Plan,
    ftype: FileType,
    allocation: Option<&AllocationPlan>,
    written: Option<&[PathBuf]>,
    start: Instant,
) {
    let name = match allocation {
        Some(a) => format!("auto {} ({})", a.target, ftype.name),
        None => ftype.name.to_string(),
    };
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    let bpw = |b: u64| b as f64 * 8.0 / plan.n_elements().max(1) as f64;
    let fallbacks = plan.tensors.iter().filter(|t| t.fell_back).count();
    if args.json {
        let tensors: Vec<_> = plan
            .tensors
            .iter()
            .map(|t| {
                let cost = allocation
                    .and_then(|a| a.tensors.iter().find(|p| p.name == t.info.name))
                    .map(|p| p.cost);
                serde_json::json!({
                    "name": t.info.name, "dims": t.info.dims, "from": t.from.name(),
                    "type": t.info.ggml_type.name(), "fallback": t.fell_back,
                    "bytes_in": t.bytes_in, "bytes_out": t.bytes_out, "predicted_cost": cost,
                })
            })
            .collect();
        let summary = serde_json::json!({
            "input": args.input, "output": written.map(|_| &args.output), "files": written,
            "type": ftype.name, "file_type": ftype.id,
            "bytes_in": plan.bytes_in(), "bytes_out": plan.bytes_out(),
            "bpw": bpw(plan.bytes_out()), "fallbacks": fallbacks, "dry_run": written.is_none(),
            "seconds": start.elapsed().as_secs_f64(), "tensors": tensors,
            "allocation": allocation.map(|a| serde_json::json!({
                "target": a.target, "budget_bytes": a.budget_bytes, "file_bytes": a.file_bytes,
                "predicted_kld": a.predicted_kld, "calibration": a.calibration,
            })),
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
        name,
        mib(plan.bytes_in()),
        bpw(plan.bytes_in()),
        mib(plan.bytes_out()),
        bpw(plan.bytes_out()),
        start.elapsed().as_secs_f64()
    );
}

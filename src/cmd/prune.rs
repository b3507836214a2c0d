//! `smelt prune`: structured (depth, FFN width, attention heads, experts) and unstructured (magnitude,
//! Wanda; ratio or N:M) pruning of a float model, optionally quantized in the same invocation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use eval::calibration::{ActivationStats, ExpertScore};
use formats::gguf::GgufFile;
use quantize::job::{self, JobOptions, Source};
use quantize::prune::{
    check_ratio, count_to_remove, experts_to_keep, ffn_channels_to_keep, head_groups_to_keep,
    keep_highest, layers_to_drop, prune_gguf, random_scores, Pattern, PruneShape, Sparsify,
    Structure,
};
use serde_json::json;

use release::convert::{gguf_of, scratch_beside};
use release::inputs::file_type;
use release::progress;

/// Pruning methods.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Method {
    /// Drop whole blocks: `--layers`, or `--ratio` of them by Block Influence (needs -f).
    Depth,
    /// Remove FFN channels by activation magnitude, the same share in every layer (needs -f).
    Ffn,
    /// Remove attention heads by output norm, whole GQA groups (needs -f).
    Heads,
    /// Zero the smallest |W| of every row (`--ratio` or `--nm`).
    Magnitude,
    /// Zero the smallest |W|·‖X‖₂ of every row (`--ratio` or `--nm`; needs -f).
    Wanda,
    /// Drop `--ratio` of every block's experts, ranked by `--expert-score` (needs -f).
    Experts,
}

/// How `--method experts` ranks experts.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum ExpertRank {
    /// How often the router chooses each expert (the default: it changed the output least in
    /// docs/PRUNING.md's measurements).
    Usage,
    /// Summed norm of each expert's weighted output over the calibration text (what removing it
    /// changes, to first order).
    Contribution,
    /// At random (`--seed`): the baseline the others are measured against.
    Random,
}

impl Method {
    /// The name on the command line.
    fn name(self) -> &'static str {
        match self {
            Method::Depth => "depth",
            Method::Ffn => "ffn",
            Method::Heads => "heads",
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Experts => "experts",
        }
    }
}

/// Arguments of `smelt prune`.
#[derive(clap::Args)]
pub struct Args {
    /// Input: a float GGUF or a checkpoint folder.
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// What to remove.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Share to remove, in (0, 1): of the layers, FFN channels, query heads or each row's weights.
    #[arg(long, conflicts_with_all = ["layers", "nm"])]
    pub ratio: Option<f64>,
    /// Blocks to drop (depth): comma-separated indices.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// N:M sparsity (magnitude, wanda): keep N of every M consecutive weights, e.g. 2:4.
    #[arg(long, value_name = "N:M")]
    pub nm: Option<String>,
    /// How `--method experts` ranks experts.
    #[arg(long, value_enum, default_value_t = ExpertRank::Usage)]
    pub expert_score: ExpertRank,
    /// Seed of `--expert-score random`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration text (activation statistics).
    #[arg(short = 'f', long = "file")]
    pub calibration: Option<PathBuf>,
    /// Tokens per calibration chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub n_ctx: usize,
    /// Calibration chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Quantize the pruned model to this type in the same run (as `smelt quantize`).
    #[arg(long, value_name = "TYPE")]
    pub quantize: Option<String>,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// A file removed when dropped (intermediate GGUFs beside the output).
/// Runs `smelt prune`.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let ftype = args.quantize.as_deref().map(file_type).transpose()?;
    let pattern = pattern(&args)?;
    let source = gguf_of(&args.input, &args.output)?;
    let input = source.path().to_path_buf();
    let file = GgufFile::open(&input)?;
    let shape = PruneShape::of(&file).map_err(|e| anyhow!("{}: {e}", args.input.display()))?;
    if args.method == Method::Ffn {
        shape
            .check_ffn_channels()
            .map_err(|e| anyhow!("{}: {e}", args.input.display()))?;
    }
    let needs_stats = match args.method {
        Method::Depth => args.layers.is_none(),
        Method::Magnitude => false,
        Method::Experts => args.expert_score != ExpertRank::Random,
        Method::Ffn | Method::Heads | Method::Wanda => true,
    };
    let stats = match (&args.calibration, needs_stats) {
        (_, false) => None,
        (Some(text), true) => Some(calibrate(&input, text, args.n_ctx, args.chunks)?),
        (None, true) => bail!(
            "--method {} needs a calibration text (-f FILE)",
            args.method.name()
        ),
    };
    let bad = |e: quantize::prune::PruneError| anyhow!("{}: {e}", args.input.display());
    let mut influence = None;
    let structure = match args.method {
        Method::Depth => match (&args.layers, args.ratio, &stats) {
            (Some(list), _, _) => layers_to_drop(&shape, list).map_err(bad)?,
            (None, Some(r), Some(s)) => {
                let bi = s.block_influences(shape.n_layer);
                let drop = count_to_remove(shape.n_layer, r, "layers").map_err(bad)?;
                let keep = keep_highest(&bi, shape.n_layer - drop);
                let dropped: Vec<usize> =
                    (0..shape.n_layer).filter(|l| !keep.contains(l)).collect();
                influence = Some(bi);
                layers_to_drop(&shape, &dropped).map_err(bad)?
            }
            _ => bail!("--method depth needs --layers or --ratio"),
        },
        Method::Ffn => {
            let s = stats.as_ref().expect("calibrated");
            let scores = s
                .group_scores(shape.n_layer, "ffn_down.weight", 1)
                .map_err(|e| anyhow!(e))?;
            ffn_channels_to_keep(&shape, ratio(&args)?, &scores).map_err(bad)?
        }
        Method::Heads => {
            let s = stats.as_ref().expect("calibrated");
            let scores = s
                .group_scores(shape.n_layer, "attn_output.weight", shape.head_dim)
                .map_err(|e| anyhow!(e))?;
            head_groups_to_keep(&shape, ratio(&args)?, &scores).map_err(bad)?
        }
        Method::Experts => {
            let scores = match (args.expert_score, &stats) {
                (ExpertRank::Random, _) => random_scores(shape.n_layer, shape.n_expert, args.seed),
                (rank, Some(s)) => {
                    let score = match rank {
                        ExpertRank::Contribution => ExpertScore::Contribution,
                        _ => ExpertScore::Usage,
                    };
                    s.expert_scores(shape.n_layer, shape.n_expert, score)
                        .map_err(|e| anyhow!(e))?
                }
                (_, None) => unreachable!("calibrated above"),
            };
            experts_to_keep(&shape, ratio(&args)?, &scores).map_err(bad)?
        }
        Method::Magnitude | Method::Wanda => Structure::Unchanged,
    };
    let sparsify = Sparsify {
        pattern,
        norms: match (args.method, &stats) {
            (Method::Wanda, Some(s)) => Some(s.wanda_norms(&file)),
            _ => None,
        },
    };

    let pruned_scratch = scratch_beside(&args.output, "pruned");
    let pruned_path = if ftype.is_some() {
        &pruned_scratch.0
    } else {
        &args.output
    };
    let report = prune_gguf(&file, &structure, &sparsify, pruned_path).map_err(bad)?;
    if let Some(ftype) = ftype {
        let source = Source::Gguf(GgufFile::open(pruned_path)?);
        let opts = JobOptions {
            ftype,
            overrides: Default::default(),
            imatrix: None,
            allow_requantize: false,
            progress: &|_| {},
            split: None,
            metadata: Vec::new(),
        };
        let plan = job::plan(&source, &opts)?;
        job::write(&source, &plan, &args.output, &opts)?;
    }

    let zeros: u64 = report.sparsity.iter().map(|t| t.zeros).sum();
    let total: u64 = report.sparsity.iter().map(|t| t.total).sum();
    if args.run.json {
        let out = json!({
            "output": args.output,
            "method": args.method.name(),
            "params_before": report.params.0,
            "params_after": report.params.1,
            "block_count": report.shape.n_layer,
            "feed_forward_length": report.shape.n_ff,
            "head_count": report.shape.n_head,
            "head_count_kv": report.shape.n_head_kv,
            "expert_count": report.shape.n_expert,
            "kept_experts": match &structure { Structure::KeepExperts(k) => json!(k), _ => json!(null) },
            "dropped_layers": match &structure { Structure::DropLayers(d) => json!(d), _ => json!(null) },
            "block_influence": influence,
            "sparsity": if total > 0 { json!(zeros as f64 / total as f64) } else { json!(null) },
            "tensors": report.sparsity.iter().map(|t| json!({
                "name": t.name, "zeros": t.zeros, "total": t.total,
                "sparsity": t.zeros as f64 / t.total as f64,
            })).collect::<Vec<_>>(),
            "quantized": ftype.map(|f| f.name),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for t in &report.sparsity {
            println!(
                "{:<32} {:>6.2} % zero ({} of {})",
                t.name,
                100.0 * t.zeros as f64 / t.total as f64,
                t.zeros,
                t.total
            );
        }
        eprintln!(
            "smelt: pruned {} ({}): {} → {} parameters, {} blocks, FFN {}, {}/{} heads{}{}",
            args.output.display(),
            args.method.name(),
            report.params.0,
            report.params.1,
            report.shape.n_layer,
            report.shape.n_ff,
            report.shape.n_head,
            report.shape.n_head_kv,
            match report.shape.n_expert {
                0 => String::new(),
                n => format!(", {n} experts"),
            },
            if total > 0 {
                format!(
                    ", {:.2} % of block weights zero",
                    100.0 * zeros as f64 / total as f64
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ratio(args: &Args) -> Result<f64> {
    args.ratio
        .ok_or_else(|| anyhow!("--method {} needs --ratio", args.method.name()))
}

/// The unstructured pattern the arguments ask for (checked against the method).
fn pattern(args: &Args) -> Result<Option<Pattern>> {
    let unstructured = matches!(args.method, Method::Magnitude | Method::Wanda);
    if let Some(r) = args.ratio {
        check_ratio(r).map_err(|e| anyhow!("{e}"))?;
    }
    if args.layers.is_some() && args.method != Method::Depth {
        bail!("--layers applies to --method depth only");
    }
    match (&args.nm, args.ratio) {
        (Some(_), _) if !unstructured => bail!("--nm applies to magnitude and wanda only"),
        (Some(spec), _) => {
            let parsed = spec
                .split_once(':')
                .and_then(|(n, m)| Some((n.parse().ok()?, m.parse().ok()?)));
            let Some((n, m)) = parsed else {
                bail!("--nm {spec:?}: expected N:M with 1 ≤ N < M, e.g. 2:4");
            };
            let pattern = Pattern::NOfM(n, m);
            pattern.validate().map_err(|e| anyhow!("{e}"))?;
            Ok(Some(pattern))
        }
        (None, Some(r)) if unstructured => Ok(Some(Pattern::Ratio(r))),
        (None, None) if unstructured => {
            bail!("--method {} needs --ratio or --nm", args.method.name())
        }
        _ => Ok(None),
    }
}

/// Runs the model over the calibration text collecting activation statistics.
fn calibrate(
    model: &Path,
    text: &Path,
    n_ctx: usize,
    chunks: Option<usize>,
) -> Result<ActivationStats> {
    let t = eval::text::open_tokenized(model, text, n_ctx, chunks)?;
    let plan = t.plan;
    let bar = progress::tokens((plan.n_chunks * plan.n_ctx) as u64, "calibration");
    let stats = ActivationStats::collect(&t.model, &t.tokens, &plan, t.bos, |_| {
        bar.inc(plan.n_ctx as u64)
    });
    bar.finish_and_clear();
    Ok(stats)
}

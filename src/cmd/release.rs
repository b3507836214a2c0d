//! `smelt release`: run a release recipe (see `crate::release`) and report on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use indicatif::MultiProgress;

use release::recipe::{Gates, Recipe, RecipeOverrides};
use release::{self, Release};

/// Arguments of `smelt release`.
#[derive(clap::Args)]
pub struct Args {
    /// The recipe (TOML): source, output, types, calibration, evaluation, ctx, chunks, [gates].
    pub recipe: PathBuf,
    /// Release folder (overrides `output`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Comma-separated types (overrides `types`).
    #[arg(long, value_delimiter = ',')]
    pub types: Option<Vec<String>>,
    /// Imatrix text (overrides `calibration`).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Evaluation text (overrides `evaluation`).
    #[arg(long)]
    pub evaluation: Option<PathBuf>,
    /// Tokens per chunk (overrides `ctx`).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<usize>,
    /// Evaluation chunks (overrides `chunks`).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Global gate: largest mean KLD.
    #[arg(long)]
    pub max_mean_kld: Option<f64>,
    /// Global gate: largest PPL ratio.
    #[arg(long)]
    pub max_ppl_ratio: Option<f64>,
    /// Global gate: smallest same-top-token fraction (0–1).
    #[arg(long)]
    pub min_same_top_p: Option<f64>,
    /// Split types larger than this (overrides `split_max_size`), or into shards of at most so
    /// many tensors.
    #[command(flatten)]
    pub split: super::SplitArgs,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Runs `smelt release`: exit 0 when every type passed its gates, 1 when one failed.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let recipe = Recipe::load(
        &args.recipe,
        RecipeOverrides {
            output: args.output,
            types: args.types,
            calibration: args.calibration,
            evaluation: args.evaluation,
            ctx: args.ctx,
            chunks: args.chunks,
            split: args.split.limit()?,
            gates: Gates {
                max_mean_kld: args.max_mean_kld,
                max_ppl_ratio: args.max_ppl_ratio,
                min_same_top_p: args.min_same_top_p,
            },
        },
    )?;
    run_recipe(&recipe, args.run.json)
}

/// Runs a loaded recipe and prints its outcome (shared with `smelt demo`).
pub fn run_recipe(recipe: &Recipe, json: bool) -> Result<ExitCode> {
    let bars = MultiProgress::new();
    let release = release::run(recipe, &bars)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&release)?);
    } else {
        print!("{}", release::report_table(&release));
        summarize(&release, recipe);
    }
    Ok(if release.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn summarize(release: &Release, recipe: &Recipe) {
    let emitted = release.types.iter().filter(|t| t.verdict.passed).count();
    let redone = release
        .types
        .iter()
        .filter(|t| t.quantized || t.evaluated)
        .count();
    eprintln!(
        "smelt: {emitted} of {} types released in {} ({redone} (re)made, the rest cached) in {:.1}s",
        release.types.len(),
        recipe.output.display(),
        release.seconds
    );
    for t in release.types.iter().filter(|t| !t.verdict.passed) {
        eprintln!(
            "smelt: {} failed its gates: {}",
            t.ftype,
            t.verdict.failures.join("; ")
        );
    }
}

//! `smelt demo`: the whole release job on a checkpoint that needs no download — a small random
//! Llama written on the spot, this README as calibration and evaluation text, eight types.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use formats::gguf::write_atomically;
use formats::hf::synthetic::{write_synthetic, SyntheticSpec};

use release::recipe::{Recipe, RecipeOverrides};

/// The demo's text: smelt's own README (a random model scores ~vocabulary-sized perplexity on
/// it; the demo validates the pipeline, not the model).
const TEXT: &str = include_str!("../../README.md");

/// The recipe the demo writes and runs.
const RECIPE: &str = r#"# Written by `smelt demo`: edit and rerun with `smelt release recipe.toml`.
name = "demo"
source = "checkpoint"
output = "release"
types = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "TQ1_0"]
calibration = "text.txt"
evaluation = "text.txt"
ctx = 128
chunks = 8

[gates]
max_mean_kld = 0.05
min_same_top_p = 0.75

# ternary weights lose much more; hold them to their own limits
[gates.TQ1_0]
max_mean_kld = 0.5
min_same_top_p = 0.4
"#;

/// Arguments of `smelt demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder to write the checkpoint, text, recipe and release into.
    pub dir: PathBuf,
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Writes the demo inputs (once) and runs their release.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let checkpoint = args.dir.join("checkpoint");
    if !checkpoint.join("config.json").exists() {
        let spec = SyntheticSpec {
            hidden: 256,
            intermediate: 768,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            ..SyntheticSpec::default()
        };
        write_synthetic(&checkpoint, &spec)?;
    }
    write_atomically(&args.dir.join("text.txt"), TEXT.as_bytes())?;
    let recipe_path = args.dir.join("recipe.toml");
    if !recipe_path.exists() {
        write_atomically(&recipe_path, RECIPE.as_bytes())?;
    }
    let recipe = Recipe::load(&recipe_path, RecipeOverrides::default())?;
    super::release::run_recipe(&recipe, args.run.json)
}

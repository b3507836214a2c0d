//! `smelt archs`: the model architectures smelt runs and which stages take each (from the `arch`
//! crate's descriptions; `smelt quantize` also takes GGUFs of any other architecture).

use std::process::ExitCode;

use anyhow::Result;
use arch::{ARCHITECTURES, STAGES};

/// Arguments of `smelt archs`.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the table.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.json {
        let archs: Vec<_> = ARCHITECTURES
            .iter()
            .map(|a| {
                let stages: Vec<_> = STAGES.iter().filter(|s| a.supports(s)).collect();
                serde_json::json!({"name": a.gguf_name, "hf_architectures": a.hf_names, "stages": stages})
            })
            .collect();
        println!("{}", serde_json::json!({ "architectures": archs }));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{:<8}", "arch");
    for stage in STAGES {
        print!(" {stage:>w$}", w = stage.len().max(3));
    }
    println!("  hugging face");
    for a in ARCHITECTURES {
        print!("{:<8}", a.gguf_name);
        for stage in STAGES {
            let mark = if a.supports(stage) { "yes" } else { "-" };
            print!(" {mark:>w$}", w = stage.len().max(3));
        }
        println!("  {}", a.hf_names.join(", "));
    }
    println!("smelt quantize also takes GGUFs of other architectures (llama-quantize's rules).");
    Ok(ExitCode::SUCCESS)
}

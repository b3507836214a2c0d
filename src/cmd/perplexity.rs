//! `smelt perplexity`: llama-perplexity's perplexity and KL-divergence modes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use eval::kld::{BaseReader, BaseWriter, KldStats, KldSummary};
use eval::perplexity::{row_nlls, run_chunks, ChunkPlan, PerplexityStats};
use serde_json::json;

use super::progress;

/// Arguments of `smelt perplexity`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model to evaluate.
    pub model: PathBuf,
    /// Text file to evaluate on (tokenized whole, like llama-perplexity).
    #[arg(short = 'f', long = "file")]
    pub text: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub n_ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Save this model's log-probabilities as a KL-divergence base (llama.cpp's format).
    #[arg(long, value_name = "FILE", conflicts_with = "kld")]
    pub kld_save: Option<PathBuf>,
    /// Compare with a KL-divergence base file (written by --kld-save or llama-perplexity).
    #[arg(long, value_name = "FILE")]
    pub kld: Option<PathBuf>,
    /// llama.cpp's spelling: the base file, saved, or read when --kl-divergence is given too.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kld", "kld_save"])]
    pub kl_divergence_base: Option<PathBuf>,
    /// With --kl-divergence-base: compare instead of save.
    #[arg(long, requires = "kl_divergence_base")]
    pub kl_divergence: bool,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Print one JSON object on stdout instead of llama-perplexity's text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `smelt perplexity`.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.threads)?;
    let (save, compare) = match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(base), true) => (None, Some(base.clone())),
        (Some(base), false) => (Some(base.clone()), None),
        (None, _) => (args.kld_save.clone(), args.kld.clone()),
    };
    let (model, tokenizer, text) = super::open_model_and_text(&args.model, &args.text)?;
    let n_vocab = model.hparams.n_vocab;
    let bos = tokenizer.bos_to_add();

    if let Some(base_path) = compare {
        let mut base = BaseReader::open(&base_path)?;
        if base.n_vocab != n_vocab {
            bail!(
                "{}: vocabulary of {} tokens, the model has {n_vocab}",
                base_path.display(),
                base.n_vocab
            );
        }
        let plan = ChunkPlan::new(base.tokens.len(), base.n_ctx, args.chunks, &base_path)?;
        let tokens = std::mem::take(&mut base.tokens);
        let mut stats = KldStats::default();
        let mut err = None;
        let started = Instant::now();
        let bar = progress::tokens((plan.n_chunks * plan.n_ctx) as u64, "kl-divergence");
        if !args.json {
            println!("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p");
        }
        run_chunks(&model, &tokens, &plan, bos, None, |chunk| {
            bar.inc(plan.n_ctx as u64);
            if err.is_some() {
                return;
            }
            match base.next_chunk() {
                Ok(rows) => stats.add_chunk(chunk.logits, &rows, chunk.targets, n_vocab),
                Err(e) => return err = Some(e),
            }
            if !args.json {
                let [ppl, ratio, kld, rms, same] = stats.running_line();
                println!(
                    "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
                    chunk.index + 1, ppl.0, ppl.1, ratio.0, ratio.1, kld.0, kld.1,
                    100.0 * rms.0, 100.0 * rms.1, 100.0 * same.0, 100.0 * same.1
                );
            }
        });
        bar.finish_and_clear();
        if let Some(e) = err {
            return Err(e.into());
        }
        let seconds = started.elapsed().as_secs_f64();
        let summary = stats.summary();
        if args.json {
            let ppl = stats.perplexity();
            let mut out = report_json(&ppl, &plan, seconds);
            out["ppl_base"] = json!(summary.ppl_base.0);
            out["kld"] = json!({
                "mean": summary.kld_mean.0,
                "median": summary.kld_quantiles.get("Median"),
                "p90": summary.kld_quantiles.get("90.0%"),
                "p99": summary.kld_quantiles.get("99.0%"),
                "max": summary.kld_quantiles.max,
            });
            out["same_top_p"] = json!(summary.same_top.0);
            out["delta_p"] = json!({"mean": summary.delta_p_mean.0, "rms": summary.delta_p_rms.0});
            out["ppl_ratio"] = json!(summary.ppl_ratio.0);
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print_kld_summary(&summary);
        }
        return Ok(ExitCode::SUCCESS);
    }

    let tokens = tokenizer.tokenize(&text, true, false);
    let plan = ChunkPlan::new(tokens.len(), args.n_ctx, args.chunks, &args.text)?;
    let mut writer = match &save {
        Some(path) => Some(BaseWriter::create(
            path,
            plan.n_ctx,
            n_vocab,
            plan.n_chunks,
            &tokens,
        )?),
        None => None,
    };
    let mut stats = PerplexityStats::default();
    let mut err = None;
    let started = Instant::now();
    let bar = progress::tokens((plan.n_chunks * plan.n_ctx) as u64, "perplexity");
    run_chunks(&model, &tokens, &plan, bos, None, |chunk| {
        bar.inc(plan.n_ctx as u64);
        let nlls = match writer.as_mut() {
            Some(w) => match w.write_chunk(chunk.logits, chunk.targets, n_vocab) {
                Ok(n) => n,
                Err(e) => return err = Some(e),
            },
            None => row_nlls(chunk.logits, chunk.targets, n_vocab),
        };
        stats.add(&nlls);
        if !args.json {
            print!("[{}]{:.4},", chunk.index + 1, stats.ppl());
        }
    });
    bar.finish_and_clear();
    if let Some(e) = err {
        return Err(e.into());
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&stats, &plan, seconds))?
        );
    } else {
        println!();
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            stats.ppl(),
            stats.ppl_err()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(stats: &PerplexityStats, plan: &ChunkPlan, seconds: f64) -> serde_json::Value {
    let n_tokens = plan.n_chunks * plan.n_ctx;
    json!({
        "ppl": stats.ppl(),
        "ppl_err": stats.ppl_err(),
        "n_tokens": n_tokens,
        "n_scored": stats.count(),
        "n_chunks": plan.n_chunks,
        "n_ctx": plan.n_ctx,
        "seconds": seconds,
        "tokens_per_s": n_tokens as f64 / seconds,
    })
}

/// llama-perplexity's closing statistics, line for line.
fn print_kld_summary(s: &KldSummary) {
    println!();
    println!("====== Perplexity statistics ======");
    println!(
        "Mean PPL(Q)                   : {:10.6} ± {:10.6}",
        s.ppl.0, s.ppl.1
    );
    println!(
        "Mean PPL(base)                : {:10.6} ± {:10.6}",
        s.ppl_base.0, s.ppl_base.1
    );
    println!(
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * s.ln_ppl_correlation
    );
    println!(
        "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}",
        s.ln_ppl_ratio.0, s.ln_ppl_ratio.1
    );
    println!(
        "Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}",
        s.ppl_ratio.0, s.ppl_ratio.1
    );
    println!(
        "Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}",
        s.ppl_diff.0, s.ppl_diff.1
    );
    println!();
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {:10.6} ± {:10.6}", s.kld_mean.0, s.kld_mean.1);
    println!("Maximum KLD: {:10.6}", s.kld_quantiles.max);
    for (label, v) in &s.kld_quantiles.levels {
        println!("{label:<8}KLD: {v:10.6}");
    }
    println!("Minimum KLD: {:10.6}", s.kld_quantiles.min);
    println!();
    println!("====== Token probability statistics ======");
    println!(
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * s.delta_p_mean.0,
        100.0 * s.delta_p_mean.1
    );
    println!("Maximum Δp: {:6.3}%", 100.0 * s.delta_p_quantiles.max);
    for (label, v) in &s.delta_p_quantiles.levels {
        println!("{label:<8}Δp: {:6.3}%", 100.0 * v);
    }
    println!("Minimum Δp: {:6.3}%", 100.0 * s.delta_p_quantiles.min);
    println!(
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * s.delta_p_rms.0,
        100.0 * s.delta_p_rms.1
    );
    println!(
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * s.same_top.0,
        100.0 * s.same_top.1
    );
}

//! `smelt perplexity`: llama-perplexity's perplexity and KL-divergence modes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use eval::kld::{compare_with_base, KldHeadline, KldStats, KldSummary};
use eval::perplexity::{score, ChunkPlan, PerplexityStats};
use formats::kld_base::{BaseReader, BaseWriter};
use serde_json::json;

use release::progress;

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
    /// Threads and output format.
    #[command(flatten)]
    pub run: super::RunOptions,
}

/// Runs `smelt perplexity`.
pub fn run(args: Args) -> Result<ExitCode> {
    super::set_threads(args.run.threads)?;
    let (save, compare) = match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(base), true) => (None, Some(base.clone())),
        (Some(base), false) => (Some(base.clone()), None),
        (None, _) => (args.kld_save.clone(), args.kld.clone()),
    };
    let (model, tokenizer, text) = eval::text::open_model_and_text(&args.model, &args.text)?;
    let n_vocab = model.hparams.n_vocab;
    let bos = tokenizer.bos_to_add();

    if let Some(base_path) = compare {
        let mut base = BaseReader::open(&base_path)?;
        let (n_ctx, n_chunks) = (
            base.n_ctx,
            args.chunks.unwrap_or(usize::MAX).min(base.n_chunks),
        );
        report_kld(args.run.json, n_ctx, n_chunks, |on_chunk| {
            Ok(compare_with_base(
                &model,
                &mut base,
                args.chunks,
                bos,
                on_chunk,
            )?)
        })?;
        return Ok(ExitCode::SUCCESS);
    }

    let tokens = tokenizer.tokenize(&text, true, false);
    let plan = ChunkPlan::new(tokens.len(), args.n_ctx, args.chunks, &args.text)?;
    let writer = match &save {
        Some(path) => Some(BaseWriter::create(
            path,
            plan.n_ctx,
            n_vocab,
            plan.n_chunks,
            &tokens,
        )?),
        None => None,
    };
    let started = Instant::now();
    let bar = progress::tokens((plan.n_chunks * plan.n_ctx) as u64, "perplexity");
    let stats = score(&model, &tokens, &plan, bos, writer, |index, stats| {
        bar.inc(plan.n_ctx as u64);
        if !args.run.json {
            print!("[{}]{:.4},", index + 1, stats.ppl());
        }
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if args.run.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&stats, &plan, seconds))?
        );
    } else {
        super::print_final_estimate(&stats);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a KL-divergence comparison over `n_chunks` chunks of `n_ctx` tokens with
/// llama-perplexity's output: a line per chunk, then its closing statistics — or, with `json`,
/// one object (`ppl`, …, `kld`, `same_top_p`, `delta_p`, `ppl_ratio`). `compare` runs the
/// model, calling its argument after each chunk. Shared by `--kld` and `smelt distill eval`.
pub fn report_kld(
    json: bool,
    n_ctx: usize,
    n_chunks: usize,
    compare: impl FnOnce(&mut dyn FnMut(usize, &KldStats)) -> Result<KldStats>,
) -> Result<()> {
    let bar = progress::tokens((n_chunks * n_ctx) as u64, "kl-divergence");
    if !json {
        println!("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p");
    }
    let started = Instant::now();
    let stats = compare(&mut |index, stats| {
        bar.inc(n_ctx as u64);
        if !json {
            let [ppl, ratio, kld, rms, same] = stats.running_line();
            println!(
                "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
                index + 1, ppl.0, ppl.1, ratio.0, ratio.1, kld.0, kld.1,
                100.0 * rms.0, 100.0 * rms.1, 100.0 * same.0, 100.0 * same.1
            );
        }
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = stats.summary();
    if json {
        let plan = ChunkPlan::batched(n_ctx, n_chunks);
        let mut out = report_json(&stats.perplexity(), &plan, seconds);
        let fields = serde_json::to_value(KldHeadline::from(&summary))?;
        let object = out.as_object_mut().expect("an object");
        object.insert("ppl_base".into(), json!(summary.ppl_base.0));
        if summary.kld_estimate_error > 0.0 {
            object.insert(
                "kld_estimate_error".into(),
                json!(summary.kld_estimate_error),
            );
        }
        object.extend(fields.as_object().expect("an object").clone());
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_kld_summary(&summary);
    }
    Ok(())
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
    if s.kld_estimate_error > 0.0 {
        println!(
            "             (an estimate: ± {:.6} of that from the teacher data's tail samples)",
            s.kld_estimate_error
        );
    }
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

//! The release folder's documents: `report.json` (everything, for CI), `report.md` (the table a
//! publisher pastes into a model card), `size-vs-kld.svg` and the folder's `README.md` model card.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use formats::gguf::write_atomically;

use super::plot;
use super::quant::TypeOutcome;
use super::Release;

/// File names of the documents.
pub const REPORT_JSON: &str = "report.json";
/// The Markdown report.
pub const REPORT_MD: &str = "report.md";
/// The plot.
pub const PLOT_SVG: &str = "size-vs-kld.svg";

/// Writes all four documents into `dir`, each atomically.
pub fn write(release: &Release, dir: &Path) -> Result<()> {
    write_atomically(&dir.join(REPORT_JSON), &serde_json::to_vec_pretty(release)?)?;
    write_atomically(&dir.join(REPORT_MD), table(release, true).as_bytes())?;
    write_atomically(&dir.join(PLOT_SVG), plot::size_vs_kld(release).as_bytes())?;
    write_atomically(&dir.join("README.md"), model_card(release).as_bytes())?;
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The results table in Markdown: every type, or only those emitted.
pub fn table(release: &Release, all: bool) -> String {
    let mut out = String::new();
    let t = &release.teacher;
    let _ = writeln!(
        out,
        "Teacher: `{}`, PPL {:.4} ± {:.4} on `{}` ({} tokens, {} chunks of {}).\n",
        release.source, t.ppl, t.ppl_err, release.evaluation, t.n_tokens, t.n_chunks, release.ctx
    );
    out.push_str("| type | file | size (MiB) | bpw | PPL | PPL ratio | mean KLD | p99 KLD | same top p | RMS Δp | gates |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for ty in release.types.iter().filter(|t| all || t.verdict.passed) {
        let m = &ty.measurement;
        let v = &m.versus_teacher;
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.4} ± {:.4} | {:.4} | {:.6} | {:.6} | {:.2} % | {:.3} % | {} |",
            ty.ftype,
            ty.file.as_deref().map_or("—".to_string(), |f| format!("`{f}`")),
            mib(m.bytes),
            m.bpw,
            m.ppl,
            m.ppl_err,
            v.ppl_ratio,
            v.kld.mean,
            v.kld.p99,
            100.0 * v.same_top_p,
            100.0 * v.delta_p.rms,
            verdict_cell(ty)
        );
    }
    out
}

fn verdict_cell(t: &TypeOutcome) -> String {
    if t.verdict.passed {
        "pass".into()
    } else {
        format!("**fail**: {}", t.verdict.failures.join("; "))
    }
}

fn model_card(release: &Release) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} — GGUF\n", release.name);
    let _ = writeln!(
        out,
        "Quantized from `{}` with smelt {}. Every file here was measured against the \
         full-precision model and passed its quality gates; the numbers below are llama-perplexity's \
         (perplexity, KL divergence, same top token) on `{}`.\n",
        release.source, release.smelt_version, release.evaluation
    );
    if let Some(calibration) = &release.calibration {
        let _ = writeln!(
            out,
            "The importance matrix was collected on `{calibration}`.\n"
        );
    }
    out.push_str(&table(release, false));
    let _ = writeln!(out, "\n![size vs KL divergence]({})\n", PLOT_SVG);
    let failed: Vec<&TypeOutcome> = release.types.iter().filter(|t| !t.verdict.passed).collect();
    if !failed.is_empty() {
        out.push_str("Not released (failed their gates):\n\n");
        for t in failed {
            let _ = writeln!(out, "- {}: {}", t.ftype, t.verdict.failures.join("; "));
        }
        out.push('\n');
    }
    if let Some(first) = release.types.iter().find_map(|t| t.file.as_deref()) {
        let _ = writeln!(
            out,
            "## Use\n\n```sh\nllama-cli -m {first} -p \"Once upon a time\"\n```\n"
        );
    }
    let _ = writeln!(
        out,
        "## Method\n\nPPL and KLD follow llama-perplexity: the evaluation text is tokenized whole, \
         cut into chunks of {} tokens, and the second half of each chunk is scored. KLD is the mean \
         over scored tokens of KL(teacher ‖ quant); \"same top p\" is the fraction of tokens whose \
         most likely next token is the teacher's. Full figures: `{}`; table: `{}`.",
        release.ctx, REPORT_JSON, REPORT_MD
    );
    out
}

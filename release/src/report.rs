//! The release folder's documents: `report.json` (everything, for CI), `report.md` (the table a
//! publisher pastes into a model card), `size-vs-kld.svg` and the folder's `README.md` model card.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use formats::gguf::write_atomically;

use super::cache::hash_file;
use super::plot;
use super::quant::TypeOutcome;
use crate::summary::Release;

/// File names of the documents.
pub const REPORT_JSON: &str = "report.json";
/// The Markdown report.
pub const REPORT_MD: &str = "report.md";
/// The plot.
pub const PLOT_SVG: &str = "size-vs-kld.svg";

/// The checksum list, in `sha256sum -c`'s format.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// Writes the documents into `dir`, each atomically, and last `SHA256SUMS` over every file
/// the folder then holds (GGUFs, shards and documents).
pub fn write(release: &Release, dir: &Path) -> Result<()> {
    write_atomically(&dir.join(REPORT_JSON), &serde_json::to_vec_pretty(release)?)?;
    write_atomically(&dir.join(REPORT_MD), table(release, true).as_bytes())?;
    write_atomically(&dir.join(PLOT_SVG), plot::size_vs_kld(release).as_bytes())?;
    write_atomically(&dir.join("README.md"), model_card(release).as_bytes())?;
    let mut files: Vec<String> = release
        .types
        .iter()
        .filter(|t| t.verdict.passed)
        .flat_map(released_files)
        .collect();
    files.extend([REPORT_JSON, REPORT_MD, PLOT_SVG, "README.md"].map(String::from));
    let mut sums = String::new();
    for f in &files {
        let _ = writeln!(sums, "{}  {f}", hash_file(&dir.join(f))?);
    }
    write_atomically(&dir.join(SHA256SUMS), sums.as_bytes())?;
    Ok(())
}

/// The files a released type has in the release folder (one, or its shards).
fn released_files(t: &TypeOutcome) -> Vec<String> {
    match (&t.file, t.measurement.files.len()) {
        (Some(f), 0) => vec![f.clone()],
        (Some(_), _) => t.measurement.files.clone(),
        (None, _) => Vec::new(),
    }
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
            ty.file.as_deref().map_or("—".to_string(), |f| match ty.measurement.files.len() {
                0 | 1 => format!("`{f}`"),
                n => format!("`{f}/` ({n} shards)"),
            }),
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

/// The folder's `README.md`: Hugging Face front matter, what the files are, which one to use,
/// how to run them, the measurements and how they were made.
fn model_card(release: &Release) -> String {
    let mut out = front_matter(release);
    let _ = writeln!(out, "# {} — GGUF\n", release.name);
    let base = release
        .card
        .base_model
        .as_deref()
        .unwrap_or(&release.source);
    let _ = writeln!(
        out,
        "GGUF quantizations of `{base}` made with smelt {}. Every file here was measured against \
         the full-precision model and passed its quality gates.\n",
        release.smelt_version
    );
    if let Some(calibration) = &release.calibration {
        let _ = writeln!(
            out,
            "The importance matrix was collected on `{calibration}`.\n"
        );
    }
    out.push_str(&guide(release));
    out.push_str(&usage(release));
    out.push_str("## Measurements\n\n");
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
    let _ = writeln!(
        out,
        "## Method\n\nThese are the figures smelt measured with llama-perplexity's method: the \
         evaluation text `{}` is tokenized whole, cut into chunks of {} tokens, and the second half \
         of each chunk is scored. KLD is the mean over scored tokens of KL(full precision ‖ \
         quantized); \"same top p\" is the fraction of tokens whose most likely next token is the \
         full-precision model's. Full figures: `{}`; table: `{}`; checksums: `{}` (`sha256sum -c \
         {}`).",
        release.evaluation, release.ctx, REPORT_JSON, REPORT_MD, SHA256SUMS, SHA256SUMS
    );
    out
}

/// The YAML front matter the Hub reads: `base_model`, `license`, `tags`, `quantized_by`.
fn front_matter(release: &Release) -> String {
    let quote = |v: &str| serde_json::to_string(v).expect("a string");
    let mut out = String::from("---\n");
    if let Some(base) = &release.card.base_model {
        let _ = writeln!(out, "base_model: {}", quote(base));
    }
    if let Some(license) = &release.card.license {
        let _ = writeln!(out, "license: {}", quote(license));
    }
    let _ = writeln!(
        out,
        "tags:\n- gguf\n- {}\n- quantized",
        quote(&release.architecture)
    );
    if let Some(by) = &release.card.quantized_by {
        let _ = writeln!(out, "quantized_by: {}", quote(by));
    }
    out.push_str("---\n\n");
    out
}

/// The released types from the smallest up.
fn by_size(release: &Release) -> Vec<&TypeOutcome> {
    let mut passed: Vec<&TypeOutcome> = release.types.iter().filter(|t| t.verdict.passed).collect();
    passed.sort_by_key(|t| t.measurement.bytes);
    passed
}

/// The released type closest to the original (lowest mean KLD).
fn closest(release: &Release) -> Option<&TypeOutcome> {
    let kld = |t: &&TypeOutcome| t.measurement.versus_teacher.kld.mean;
    by_size(release)
        .into_iter()
        .min_by(|a, b| kld(a).total_cmp(&kld(b)))
}

/// The type the card recommends: the smallest whose mean KLD is at most 0.05 (close to the
/// original in practice), else the closest.
fn recommended(release: &Release) -> Option<&TypeOutcome> {
    by_size(release)
        .into_iter()
        .find(|t| t.measurement.versus_teacher.kld.mean <= 0.05)
        .or_else(|| closest(release))
}

/// "Which file should I use": the released types from the smallest up, the recommended one and
/// the closest to the original marked.
fn guide(release: &Release) -> String {
    let passed = by_size(release);
    if passed.is_empty() {
        return String::new();
    }
    let best = closest(release).map(|t| t.ftype.as_str());
    let recommended = recommended(release).map(|t| t.ftype.as_str());
    let mut out = String::from("## Which file should I use?\n\n");
    for t in &passed {
        let m = &t.measurement;
        let mut notes = Vec::new();
        if Some(t.ftype.as_str()) == recommended {
            notes.push("**recommended**: the smallest with mean KLD ≤ 0.05");
        }
        if Some(t.ftype.as_str()) == best {
            notes.push("closest to the original");
        }
        let _ = writeln!(
            out,
            "- **{}** — {:.1} MiB, mean KLD {:.4}, same top token {:.1} %{}",
            t.ftype,
            mib(m.bytes),
            m.versus_teacher.kld.mean,
            100.0 * m.versus_teacher.same_top_p,
            match notes.is_empty() {
                true => String::new(),
                false => format!(" ({})", notes.join("; ")),
            }
        );
    }
    out.push_str(
        "\nSmaller files load faster and fit less memory; lower KLD stays closer to the \
                  original model's predictions.\n\n",
    );
    out
}

/// Usage lines for llama.cpp, Ollama and LM Studio, with the recommended file.
fn usage(release: &Release) -> String {
    let Some(t) = recommended(release) else {
        return String::new();
    };
    let file = released_files(t).into_iter().next().unwrap_or_default();
    let repo = release.card.repo.as_deref().unwrap_or("<user>/<repo>");
    format!(
        "## Use\n\nllama.cpp (a split set loads from its first shard):\n\n```sh\n\
         llama-cli -m {file} -p \"Once upon a time\"\n\
         llama-server --hf-repo {repo} --hf-file {file}\n```\n\n\
         Ollama:\n\n```sh\nollama run hf.co/{repo}:{ty}\n```\n\n\
         LM Studio:\n\n```sh\nlms get {repo}@{ty}\n```\n\n",
        ty = t.ftype
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::measurement;
    use crate::quant::Verdict;
    use crate::recipe::{Card, Gates};
    use crate::stages::{StageRun, TeacherScore};
    use crate::summary::{InputHashes, Stages};

    fn outcome(ftype: &'static str, mib: u64, kld: f64, failures: &[&str]) -> TypeOutcome {
        let mut m = measurement(kld, 1.01, 0.93);
        m.bytes = mib << 20;
        let passed = failures.is_empty();
        TypeOutcome {
            ftype: ftype.to_string(),
            key: "k".into(),
            file: passed.then(|| format!("m-{ftype}.gguf")),
            measurement: m,
            gates: Gates::default(),
            verdict: Verdict {
                passed,
                failures: failures.iter().map(|f| f.to_string()).collect(),
            },
            quantized: true,
            evaluated: true,
            seconds: 1.0,
        }
    }

    fn release(types: Vec<TypeOutcome>) -> Release {
        let run = StageRun {
            seconds: 0.0,
            cached: true,
        };
        Release {
            smelt_version: "0",
            name: "m".into(),
            source: "ckpt".into(),
            architecture: "qwen3".into(),
            card: Card {
                base_model: Some("org/m".into()),
                license: Some("apache-2.0".into()),
                quantized_by: None,
                repo: Some("me/m-GGUF".into()),
            },
            evaluation: "eval.txt".into(),
            calibration: None,
            ctx: 512,
            teacher: TeacherScore {
                ppl: 10.0,
                ppl_err: 0.1,
                n_chunks: 4,
                n_tokens: 2048,
            },
            inputs: InputHashes {
                source_sha256: "a".into(),
                calibration_sha256: None,
                evaluation_sha256: "b".into(),
            },
            stages: Stages {
                teacher: run,
                imatrix: None,
                kld_base: run,
            },
            passed: types.iter().all(|t| t.verdict.passed),
            types,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_table_lists_failures_only_in_the_full_report_and_split_sets_as_folders() {
        let mut split = outcome("Q8_0", 7, 0.001, &[]);
        split.file = Some("m-Q8_0".into());
        split.measurement.files = vec!["m-Q8_0/a.gguf".into(), "m-Q8_0/b.gguf".into()];
        let r = release(vec![
            outcome("Q2_K", 2, 0.3, &["mean KLD 0.300000 > max_mean_kld 0.1"]),
            outcome("Q4_K_M", 3, 0.02, &[]),
            split,
        ]);
        let all = table(&r, true);
        assert!(all.contains("| Q2_K | — |") && all.contains("**fail**: mean KLD 0.300000"));
        assert!(all.contains("`m-Q8_0/` (2 shards)"), "{all}");
        let emitted = table(&r, false);
        assert!(!emitted.contains("Q2_K") && emitted.contains("`m-Q4_K_M.gguf`"));
        assert_eq!(
            released_files(&r.types[2]),
            ["m-Q8_0/a.gguf", "m-Q8_0/b.gguf"]
        );
        assert!(released_files(&r.types[0]).is_empty());
    }

    #[test]
    fn the_card_recommends_the_smallest_close_file_and_names_its_facts() {
        let r = release(vec![
            outcome("Q8_0", 7, 0.001, &[]),
            outcome("Q3_K_M", 2, 0.09, &[]),
            outcome("Q4_K_M", 3, 0.02, &[]),
        ]);
        assert_eq!(recommended(&r).map(|t| t.ftype.as_str()), Some("Q4_K_M"));
        assert_eq!(closest(&r).map(|t| t.ftype.as_str()), Some("Q8_0"));
        let card = model_card(&r);
        assert!(card.starts_with("---\n"), "{card}");
        assert!(
            card.contains("base_model: \"org/m\"\n") && card.contains("license: \"apache-2.0\"\n")
        );
        assert!(card.contains("- **Q4_K_M** — 3.0 MiB") && card.contains("**recommended**"));
        assert!(
            card.contains("--hf-repo me/m-GGUF --hf-file m-Q4_K_M.gguf"),
            "{card}"
        );
        let none_close = release(vec![outcome("Q2_K", 2, 0.3, &[])]);
        assert_eq!(
            recommended(&none_close).map(|t| t.ftype.as_str()),
            Some("Q2_K")
        );
        assert!(guide(&release(Vec::new())).is_empty());
    }
}

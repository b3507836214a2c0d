//! The release job (`smelt release`): a checkpoint → a folder of quantized GGUFs that each
//! passed their quality gates, with a report and a model card.
//!
//! A run holds the cache's lock ([`cache::lock`]); a second run on the same cache waits.
//! Shared work (teacher conversion, imatrix, the teacher's KL-divergence base) is done once; each
//! type is quantized into the cache's work folder, measured against the teacher, and moved into
//! the release folder only when it passes — so the release folder never holds a partial or an
//! ungated file, whatever happens to the process. Everything is cached by content hash
//! ([`cache`]), so a rerun does only the work whose inputs changed.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod allocate;
pub mod cache;
pub mod convert;
pub mod inputs;
mod plot;
pub mod progress;
pub mod quant;
pub mod recipe;
mod report;
pub mod stages;
mod summary;

use std::path::Path;
use std::time::Instant;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use indicatif::MultiProgress;
use rayon::prelude::*;

use cache::{hash_file, hash_source};
use inputs::{importance_weights, open_source};
use quant::{Shared, TypeOutcome, IMATRIX_NAME};
use recipe::Recipe;
use stages::TextInput;
pub use summary::{InputHashes, Release, Stages};

/// Runs the recipe and writes the release folder (GGUFs that passed, split sets in folders of
/// their own, `report.json`, `report.md`, `size-vs-kld.svg`, the `README.md` model card and, last,
/// `SHA256SUMS`, which marks the folder finished: a run that fails leaves none).
pub fn run(recipe: &Recipe, bars: &MultiProgress) -> Result<Release> {
    let _lock = cache::lock(&recipe.cache, || {
        bars.suspend(|| {
            eprintln!(
                "smelt: another release is using the cache {}; waiting for it to finish",
                recipe.cache.display()
            )
        })
    })?;
    let start = Instant::now();
    for dir in [&recipe.output, &recipe.cache] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    // `SHA256SUMS` is written last: a folder without it is a release that has not finished, even
    // when an earlier run's finished one was there.
    let sums = recipe.output.join(report::SHA256SUMS);
    if sums.exists() {
        std::fs::remove_file(&sums)
            .with_context(|| format!("{}: cannot remove", sums.display()))?;
    }
    let work = recipe.cache.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("{}: cannot clear", work.display()))?;
    }
    for dir in [work, recipe.cache.join("types")] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }

    let inputs = InputHashes {
        source_sha256: hash_source(&recipe.source)?,
        calibration_sha256: recipe.calibration.as_deref().map(hash_file).transpose()?,
        evaluation_sha256: hash_file(&recipe.evaluation)?,
    };
    let source_hash = inputs.source_sha256.as_str();
    let source = open_source(&recipe.source)?;
    check_types_early(recipe, &source)?;
    let (teacher, teacher_run) = stages::teacher(&recipe.source, source_hash, &recipe.cache, bars)?;
    let imatrix = match (&recipe.calibration, &inputs.calibration_sha256) {
        (Some(path), Some(hash)) => {
            let text = TextInput {
                path,
                hash,
                ctx: recipe.ctx,
                chunks: recipe.calibration_chunks,
            };
            Some(stages::imatrix(
                &teacher,
                source_hash,
                &text,
                &recipe.cache,
                bars,
            )?)
        }
        _ => None,
    };
    let evaluation = TextInput {
        path: &recipe.evaluation,
        hash: &inputs.evaluation_sha256,
        ctx: recipe.ctx,
        chunks: recipe.chunks,
    };
    let (base, base_key, teacher_score, base_run) =
        stages::kld_base(&teacher, source_hash, &evaluation, &recipe.cache, bars)?;

    let weights = match &imatrix {
        Some((path, _, _)) => Some(importance_weights(path, IMATRIX_NAME.into())?.0),
        None => None,
    };
    let costs = allocation_costs(
        recipe,
        &teacher,
        &source,
        &inputs,
        weights.as_ref(),
        &imatrix,
        bars,
    )?;
    let shared = Shared {
        teacher: &teacher,
        costs: &costs,
        name: &recipe.name,
        source: &source,
        source_hash,
        imatrix: weights
            .as_ref()
            .zip(imatrix.as_ref().map(|(_, key, _)| key.as_str())),
        base: (&base, &base_key),
        output: &recipe.output,
        cache: &recipe.cache,
        split: recipe.split,
    };
    for t in &recipe.types {
        shared
            .check(t)
            .with_context(|| format!("type {}", t.name))?;
    }
    let at_once = parallel_types(&teacher, recipe.types.len());
    let mut types = Vec::with_capacity(recipe.types.len());
    for group in recipe.types.chunks(at_once) {
        let done: Result<Vec<TypeOutcome>> =
            group.par_iter().map(|t| shared.run(t, bars)).collect();
        types.extend(done?);
    }

    remove_dropped_types(recipe)?;
    let release = Release {
        smelt_version: env!("CARGO_PKG_VERSION"),
        name: recipe.name.clone(),
        source: stages::file_name(&recipe.source),
        architecture: formats::gguf::GgufFile::open(&teacher)?
            .architecture()
            .unwrap_or("unknown")
            .to_string(),
        card: recipe.card.clone(),
        evaluation: stages::file_name(&recipe.evaluation),
        calibration: recipe.calibration.as_deref().map(stages::file_name),
        ctx: recipe.ctx,
        teacher: teacher_score,
        inputs,
        stages: Stages {
            teacher: teacher_run,
            imatrix: imatrix.map(|(_, _, run)| run),
            kld_base: base_run,
        },
        passed: types.iter().all(|t| t.verdict.passed),
        types,
        seconds: start.elapsed().as_secs_f64(),
    };
    report::write(&release, &recipe.output)?;
    Ok(release)
}

/// The results table (all types, failures with their reasons) as `report.md` holds it.
pub fn report_table(release: &Release) -> String {
    report::table(release, true)
}

/// The measured costs of every `auto:TARGET` type, by type name (one measurement serves every
/// target with the same per-tensor choices).
fn allocation_costs(
    recipe: &Recipe,
    teacher: &Path,
    source: &quantize::job::Source,
    inputs: &InputHashes,
    weights: Option<&quantize::imatrix::ImportanceWeights>,
    imatrix: &Option<(std::path::PathBuf, String, stages::StageRun)>,
    bars: &MultiProgress,
) -> Result<BTreeMap<String, (allocate::AllocationPlan, String)>> {
    let mut costs = BTreeMap::new();
    for t in recipe.types.iter() {
        let Some(target) = t.auto else { continue };
        let (Some(path), Some(hash)) = (&recipe.calibration, &inputs.calibration_sha256) else {
            unreachable!("checked by check_types_early");
        };
        let text = TextInput {
            path,
            hash,
            ctx: recipe.ctx,
            chunks: None,
        };
        let opts = quant::job_options(t, weights)?;
        let imatrix_key = imatrix.as_ref().map_or("none", |(_, key, _)| key.as_str());
        let (plan, key, _) = stages::allocation_costs(
            teacher,
            &inputs.source_sha256,
            &text,
            imatrix_key,
            source,
            &opts,
            &t.choices,
            target,
            &recipe.cache,
            bars,
        )
        .with_context(|| format!("type {}", t.name))?;
        costs.insert(t.name.clone(), (plan, key));
    }
    Ok(costs)
}

/// Refuses types that cannot be made from this source before any expensive work: everything
/// `smelt quantize` would check, except the importance matrix the calibration text will provide.
fn check_types_early(recipe: &Recipe, source: &quantize::job::Source) -> Result<()> {
    for t in &recipe.types {
        if t.auto.is_some() && recipe.calibration.is_none() {
            bail!(
                "type {}: an allocation is measured on the calibration text, and the recipe has none",
                t.name
            );
        }
        match quantize::job::plan(source, &quant::job_options(t, None)?) {
            Ok(_) => {}
            Err(quantize::job::JobError::MissingImatrix(_)) if recipe.calibration.is_some() => {}
            Err(e) => return Err(e).with_context(|| format!("type {}", t.name)),
        }
    }
    Ok(())
}

/// Removes the release files of types the recipe no longer lists: the folder holds exactly the
/// recipe's passing types, so a report never sits beside files it does not describe.
fn remove_dropped_types(recipe: &Recipe) -> Result<()> {
    let listed = |name: &str| recipe.types.iter().any(|t| t.name == name);
    let mut dropped: Vec<String> = quantize::mixture::FILE_TYPES
        .iter()
        .map(|f| f.name.to_string())
        .filter(|n| !listed(n))
        .collect();
    // Allocations are named by their target: whatever `auto-…` items the folder holds.
    let prefix = format!("{}-auto-", recipe.name);
    for entry in std::fs::read_dir(&recipe.output)? {
        let file = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = file.strip_prefix(&prefix) {
            let name = format!("auto-{}", rest.strip_suffix(".gguf").unwrap_or(rest));
            if !listed(&name) {
                dropped.push(name);
            }
        }
    }
    for name in dropped {
        quant::remove_item(
            &recipe
                .output
                .join(quant::release_file_name(&recipe.name, &name)),
        )?;
        quant::remove_item(
            &recipe
                .output
                .join(quant::release_set_name(&recipe.name, &name)),
        )?;
    }
    Ok(())
}

/// How many types to quantize and evaluate at once: as many as there are threads, unless the
/// available memory (each type holds its quantized model mapped plus about two f32 copies of the
/// largest weights and the activations; bounded here by twice the teacher's size) says fewer.
fn parallel_types(teacher: &Path, n_types: usize) -> usize {
    let per_type = 2 * std::fs::metadata(teacher)
        .map_or(0, |m| m.len())
        .max(1 << 20);
    let by_memory = available_memory().map_or(1, |bytes| (bytes / per_type) as usize);
    by_memory
        .min(rayon::current_num_threads())
        .min(n_types)
        .max(1)
}

/// `MemAvailable` from /proc/meminfo (Linux); `None` elsewhere.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

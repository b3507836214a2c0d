//! The work a release shares between its types, each done once and cached by content: the
//! teacher GGUF (a checkpoint folder converted at its own float type), the importance matrix over
//! the calibration text, and the teacher's KL-divergence base over the evaluation text.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use eval::perplexity::score;
use formats::hf::Checkpoint;
use formats::kld_base::BaseWriter;
use indicatif::MultiProgress;
use quantize::convert::OutType;
use quantize::job::{JobOptions, Source};
use serde::{Deserialize, Serialize};

use super::cache::{load_record, save_record, Key};
use crate::allocate::{self, AllocationPlan, Calibration, Target};
use crate::convert::convert_checkpoint;
use crate::inputs::TensorChoices;
use crate::progress;
use eval::text::{open_tokenized, Tokenized};

/// How one shared stage went in this run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StageRun {
    /// Seconds spent (near zero when cached).
    pub seconds: f64,
    /// Found in the cache: no work was done.
    pub cached: bool,
}

fn timed<T>(cached: bool, work: impl FnOnce() -> Result<T>) -> Result<(T, StageRun)> {
    let start = Instant::now();
    let value = work()?;
    Ok((
        value,
        StageRun {
            seconds: start.elapsed().as_secs_f64(),
            cached,
        },
    ))
}

/// The GGUF the types are measured against: the source itself when it is a GGUF, else the
/// checkpoint converted once into the cache.
pub fn teacher(
    source: &Path,
    source_hash: &str,
    cache: &Path,
    bars: &MultiProgress,
) -> Result<(PathBuf, StageRun)> {
    if !source.is_dir() {
        return timed(true, || Ok(source.to_path_buf()));
    }
    let key = Key::new("teacher")
        .with(env!("CARGO_PKG_VERSION"))
        .with(source_hash)
        .short();
    let path = cache.join(format!("teacher-{key}.gguf"));
    let cached = path.exists();
    timed(cached, || {
        if cached {
            return Ok(path);
        }
        let ckpt = Checkpoint::open(source)?;
        let out_type = OutType::native(&ckpt);
        convert_checkpoint(
            &ckpt,
            out_type,
            false,
            &path,
            None,
            bars,
            "teacher: convert",
        )?;
        Ok(path)
    })
}

/// What a text is to a stage: its path, content hash, context and chunk limit.
pub struct TextInput<'a> {
    /// The text file.
    pub path: &'a Path,
    /// Its SHA-256.
    pub hash: &'a str,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunk limit.
    pub chunks: Option<usize>,
}

impl TextInput<'_> {
    fn key(&self, kind: &str, teacher_hash: &str) -> String {
        Key::new(kind)
            .with(env!("CARGO_PKG_VERSION"))
            .with(teacher_hash)
            .with(self.hash)
            .with(&self.ctx.to_string())
            .with(&format!("{:?}", self.chunks))
            .short()
    }
}

/// The teacher's importance matrix over the calibration text, as llama-imatrix would write it.
/// Returns its path and key.
pub fn imatrix(
    teacher: &Path,
    teacher_hash: &str,
    text: &TextInput,
    cache: &Path,
    bars: &MultiProgress,
) -> Result<(PathBuf, String, StageRun)> {
    let key = text.key("imatrix", teacher_hash);
    let path = cache.join(format!("imatrix-{key}.gguf"));
    let cached = path.exists();
    let (path, run) = timed(cached, || {
        if cached {
            return Ok(path);
        }
        let Tokenized {
            model,
            bos,
            tokens,
            plan,
        } = open_tokenized(teacher, text.path, text.ctx, text.chunks)?;
        let bar = bars.add(progress::tokens(
            (plan.n_chunks * plan.n_ctx) as u64,
            "teacher: imatrix",
        ));
        let (collector, _) = eval::imatrix::collect(&model, &tokens, &plan, bos, |_, _| {
            bar.inc(plan.n_ctx as u64)
        });
        bar.finish_and_clear();
        let dataset = file_name(text.path);
        let file = collector
            .into_file(vec![dataset])
            .map_err(|e| anyhow!("{}: {e}", teacher.display()))?;
        file.write_gguf(&path)?;
        Ok(path)
    })?;
    Ok((path, key, run))
}

/// The teacher's figures on the evaluation text, saved beside its KL-divergence base.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeacherScore {
    /// Perplexity.
    pub ppl: f64,
    /// Its standard error.
    pub ppl_err: f64,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Tokens evaluated (`n_chunks · ctx`).
    pub n_tokens: usize,
}

/// The teacher's log-probabilities over the evaluation text (llama-perplexity's
/// `--kl-divergence-base` file) and its perplexity. Returns the base path, its key and the score.
pub fn kld_base(
    teacher: &Path,
    teacher_hash: &str,
    text: &TextInput,
    cache: &Path,
    bars: &MultiProgress,
) -> Result<(PathBuf, String, TeacherScore, StageRun)> {
    let key = text.key("base", teacher_hash);
    let path = cache.join(format!("base-{key}.kld"));
    let record = cache.join(format!("base-{key}.json"));
    let found: Option<TeacherScore> = load_record(&record).filter(|_| path.exists());
    let (score, run) = timed(found.is_some(), || {
        if let Some(s) = found {
            return Ok(s);
        }
        let Tokenized {
            model,
            bos,
            tokens,
            plan,
        } = open_tokenized(teacher, text.path, text.ctx, text.chunks)?;
        let n_tokens = (plan.n_chunks * plan.n_ctx) as u64;
        let writer = BaseWriter::create(
            &path,
            plan.n_ctx,
            model.hparams.n_vocab,
            plan.n_chunks,
            &tokens,
        )?;
        let bar = bars.add(progress::tokens(n_tokens, "teacher: logits"));
        let stats = score(&model, &tokens, &plan, bos, Some(writer), |_, _| {
            bar.inc(plan.n_ctx as u64)
        })?;
        bar.finish_and_clear();
        let s = TeacherScore {
            ppl: stats.ppl(),
            ppl_err: stats.ppl_err(),
            n_chunks: plan.n_chunks,
            n_tokens: n_tokens as usize,
        };
        save_record(&record, &s)?;
        Ok(s)
    })?;
    Ok((path, key, score, run))
}

/// Chunks of the calibration text an allocation measures its costs on.
pub const ALLOCATION_CHUNKS: usize = 8;

/// Every candidate type's measured cost for every tensor (`smelt quantize … auto`'s
/// measurement), from which each `auto:TARGET` type of the release is solved: measured once per
/// teacher, importance matrix and calibration text, whatever the targets. Returns the costs
/// (a plan for `target`) and their key.
#[allow(clippy::too_many_arguments)]
pub fn allocation_costs(
    teacher: &Path,
    teacher_hash: &str,
    text: &TextInput,
    imatrix_key: &str,
    source: &Source,
    opts: &JobOptions,
    choices: &TensorChoices,
    target: Target,
    cache: &Path,
    bars: &MultiProgress,
) -> Result<(AllocationPlan, String, StageRun)> {
    let key = Key::new("costs")
        .with(&text.key("costs", teacher_hash))
        .with(imatrix_key)
        .with(&serde_json::to_string(choices)?)
        .short();
    let path = cache.join(format!("costs-{key}.json"));
    let found = allocate::read_plan(&path).ok();
    let (plan, run) = timed(found.is_some(), || {
        if let Some(p) = found {
            return Ok(p);
        }
        let bar = bars.add(progress::steps(0, "allocation: measure"));
        let progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let calibration = Calibration {
            text: text.path.to_path_buf(),
            n_ctx: text.ctx,
            chunks: text.chunks.unwrap_or(ALLOCATION_CHUNKS),
        };
        let plan =
            allocate::allocate(teacher, source, opts, target, &calibration, None, &progress)?;
        bar.finish_and_clear();
        allocate::write_plan(&path, &plan)?;
        Ok(plan)
    })?;
    Ok((plan, key, run))
}

/// The last component of a path, for records that must not depend on where files live.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

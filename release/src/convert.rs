//! Checkpoint → GGUF with a progress bar, and GGUF inputs that may be checkpoint folders: the one
//! way every job converts (`smelt convert`, the release's teacher, `smelt prune` and `distill
//! train` on a folder). What to write comes from the architecture (`arch::convert::plan`), the
//! bytes from `quantize::convert::write_gguf`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use arch::convert::plan;
use formats::gguf::split::SplitLimit;
use formats::hf::Checkpoint;
use indicatif::MultiProgress;
use quantize::convert::{write_gguf, ConvertOptions, OutType};

/// Converts `ckpt` into a GGUF at `out` (or the split set it names) as `out_type`, with a
/// byte-progress bar labelled `label` added to `bars`; returns the number of tensors and the files
/// written. Shared by `smelt convert`, the release
/// teacher and `smelt prune` on a folder.
pub fn convert_checkpoint(
    ckpt: &Checkpoint,
    out_type: OutType,
    allow_nonfinite: bool,
    out: &Path,
    split: Option<SplitLimit>,
    bars: &MultiProgress,
    label: &str,
) -> Result<(usize, Vec<PathBuf>)> {
    let plan = plan(ckpt, out_type.file_type())?;
    let total: u64 = plan.tensors.iter().map(|t| t.source_len(ckpt)).sum();
    let bar = bars.add(crate::progress::bytes(total, label));
    let progress = |n: u64| bar.inc(n);
    let paths = write_gguf(
        ckpt,
        &plan,
        out,
        &ConvertOptions {
            out_type,
            allow_nonfinite,
            progress: &progress,
            split,
        },
    )?;
    bar.finish_and_clear();
    Ok((plan.tensors.len(), paths))
}

/// A scratch file beside an output, removed when dropped (success or failure).
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A hidden scratch GGUF name beside `out` (same folder, so renames stay on one disk).
pub fn scratch_beside(out: &Path, what: &str) -> Scratch {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Scratch(out.with_file_name(format!(".{name}.{what}.gguf")))
}

/// A GGUF to read `input` from: `input` itself, or — for a checkpoint folder — its conversion
/// at native precision into a scratch file beside `out`.
pub enum GgufSource {
    /// A GGUF file as given.
    File(PathBuf),
    /// A checkpoint folder converted for this run.
    Converted(Scratch),
}

impl GgufSource {
    /// Where the GGUF is.
    pub fn path(&self) -> &Path {
        match self {
            GgufSource::File(p) => p,
            GgufSource::Converted(s) => &s.0,
        }
    }
}

/// Opens `input` as a GGUF, converting a checkpoint folder first (with a progress bar).
pub fn gguf_of(input: &Path, out: &Path) -> Result<GgufSource> {
    if !input.is_dir() {
        return Ok(GgufSource::File(input.to_path_buf()));
    }
    let scratch = scratch_beside(out, "source");
    let ckpt = Checkpoint::open(input)?;
    let bars = MultiProgress::new();
    convert_checkpoint(
        &ckpt,
        OutType::native(&ckpt),
        false,
        &scratch.0,
        None,
        &bars,
        "convert",
    )?;
    Ok(GgufSource::Converted(scratch))
}

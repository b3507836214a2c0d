//! Split GGUF sets as `llama-gguf-split --split` writes them: files `PREFIX-0000i-of-0000n.gguf`,
//! each carrying `split.no`, `split.count` and `split.tensors.count`, the first one with all the
//! model's metadata. A shard is never taken for a whole model: opening any shard opens the set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::ops::Range;

use super::shard::Shard;
use super::writer::{Completed, GgufWriter};
use super::{pad_to, Metadata, TensorInfo, Value, DEFAULT_ALIGNMENT};
use crate::{FormatError, Result};

/// `split.no`: this shard's index, from 0.
pub const SPLIT_NO: &str = "split.no";
/// `split.count`: how many files the set has.
pub const SPLIT_COUNT: &str = "split.count";
/// `split.tensors.count`: tensors in the whole set.
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// When a written model starts a new shard: llama-gguf-split's `--split-max-tensors N` or
/// `--split-max-size N[M|G]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitLimit {
    /// At most this many tensors per shard.
    Tensors(usize),
    /// At most this many bytes of (32-byte padded) tensor data per shard.
    Bytes(u64),
}

impl SplitLimit {
    /// Parses a size as llama-gguf-split does: a positive number followed by `M` (10^6 bytes)
    /// or `G` (10^9 bytes).
    pub fn parse_size(text: &str) -> std::result::Result<SplitLimit, String> {
        let unit = match text.chars().last() {
            Some('M') => 1_000_000,
            Some('G') => 1_000_000_000,
            _ => return Err(format!("{text:?}: expected a size like 512M or 48G")),
        };
        match text[..text.len() - 1].parse::<u64>() {
            Ok(n) if n > 0 => Ok(SplitLimit::Bytes(n * unit)),
            _ => Err(format!(
                "{text:?}: expected a positive size like 512M or 48G"
            )),
        }
    }

    /// Which tensors each shard takes, in order, as llama-gguf-split's `split_strategy` assigns
    /// them; an error when a shard would hold no tensor (a tensor larger than the size).
    pub fn assign(self, tensors: &[TensorInfo]) -> std::result::Result<Vec<Range<usize>>, String> {
        let mut shards = Vec::new();
        let mut start = 0;
        let mut size = 0u64;
        for (i, t) in tensors.iter().enumerate() {
            let n = pad_to(t.n_bytes().unwrap_or(0), DEFAULT_ALIGNMENT);
            let split = match self {
                SplitLimit::Tensors(max) => i > 0 && i % max.max(1) == 0,
                SplitLimit::Bytes(max) => size + n > max,
            };
            if split {
                if i == start {
                    return Err(format!(
                        "the first tensor, {} ({n} bytes), is larger than the split size",
                        t.name
                    ));
                }
                shards.push(start..i);
                start = i;
                size = n;
            } else {
                size += n;
            }
        }
        shards.push(start..tensors.len());
        Ok(shards)
    }
}

/// Writes a model either as one GGUF file or as a split set with llama-gguf-split's layout (all
/// metadata in the first shard; `split.no`, `split.tensors.count` and `split.count` in each),
/// taking tensor bytes in order as [`GgufWriter`] does. Every file is written under a temporary
/// name and all are renamed into place only by [`SetWriter::finish`], so a failed or killed run
/// leaves no shard under its final name (short of dying between two renames).
pub struct SetWriter {
    /// Per shard still to open: final path, metadata, tensors.
    pending: std::vec::IntoIter<(PathBuf, Metadata, Vec<TensorInfo>)>,
    current: Option<GgufWriter>,
    done: Vec<Completed>,
    paths: Vec<PathBuf>,
}

impl SetWriter {
    /// Plans the files for `path` (`NAME.gguf`; shards are `NAME-0000i-of-0000n.gguf`) and
    /// opens the first.
    pub fn create(
        path: &Path,
        metadata: &Metadata,
        tensors: &[TensorInfo],
        limit: Option<SplitLimit>,
    ) -> Result<SetWriter> {
        let files = match limit {
            None => vec![(path.to_path_buf(), metadata.clone(), tensors.to_vec())],
            Some(limit) => {
                let ranges = limit
                    .assign(tensors)
                    .map_err(|m| FormatError::new(path, m))?;
                let prefix = path.with_extension("");
                let n = ranges.len();
                ranges
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let mut md = match i {
                            0 => unsplit(metadata),
                            _ => Metadata::new(),
                        };
                        md.set(SPLIT_NO, Value::U16(i as u16));
                        md.set(SPLIT_TENSORS_COUNT, Value::I32(tensors.len() as i32));
                        md.set(SPLIT_COUNT, Value::U16(n as u16));
                        (shard_path(&prefix, i, n), md, tensors[r].to_vec())
                    })
                    .collect()
            }
        };
        let paths = files.iter().map(|(p, _, _)| p.clone()).collect();
        let mut writer = SetWriter {
            pending: files.into_iter(),
            current: None,
            done: Vec::new(),
            paths,
        };
        writer.open_next()?;
        Ok(writer)
    }

    /// The files this writes, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Appends tensor bytes (see [`GgufWriter::write`]); a chunk may run on into the next shard.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let Some(w) = self.current.as_mut() else {
                return Err(FormatError::new(
                    &self.paths[0],
                    "more tensor data than the tensor infos announce",
                ));
            };
            // The current shard always expects bytes: a complete one was replaced below.
            let take = (w.remaining() as usize).min(bytes.len());
            w.write(&bytes[..take])?;
            bytes = &bytes[take..];
            if w.next_tensor().is_none() {
                self.open_next()?;
            }
        }
        Ok(())
    }

    /// Renames every file into place once all are complete.
    pub fn finish(mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            self.done.push(w.complete()?);
        }
        if self.done.len() != self.paths.len() {
            return Err(FormatError::new(
                &self.paths[0],
                "tensor data ended before the last shard",
            ));
        }
        for file in self.done.drain(..) {
            file.commit()?;
        }
        Ok(())
    }

    /// Completes the current file and opens the next (skipping none: every shard has tensors).
    fn open_next(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            self.done.push(w.complete()?);
        }
        if let Some((path, md, infos)) = self.pending.next() {
            let w = GgufWriter::create(&path, &md, &infos)?;
            self.current = Some(w);
            if self
                .current
                .as_ref()
                .is_some_and(|w| w.next_tensor().is_none())
            {
                return self.open_next();
            }
        }
        Ok(())
    }
}

/// `metadata` without the `split.*` keys: what a whole-file copy of a shard set's model carries
/// (llama-quantize removes the same three keys from its output).
pub fn unsplit(metadata: &Metadata) -> Metadata {
    let mut md = metadata.clone();
    for key in [SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT] {
        md.remove(key);
    }
    md
}

/// The name of shard `no` (from 0) of `count` (llama.cpp's `llama_split_path`).
pub fn shard_path(prefix: &Path, no: usize, count: usize) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("-{:05}-of-{:05}.gguf", no + 1, count));
    PathBuf::from(name)
}

/// A shard's place in its set, from its metadata (`None` for a file that is not a shard).
fn position(shard: &Shard) -> Result<Option<(usize, usize)>> {
    let uint = |key: &str| -> Result<Option<usize>> {
        match shard.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| {
                FormatError::new(&shard.path, format!("{key} is not an unsigned integer"))
            }),
        }
    };
    match (uint(SPLIT_NO)?, uint(SPLIT_COUNT)?) {
        (None, None) => Ok(None),
        (Some(no), Some(count)) if no < count => Ok(Some((no, count))),
        (no, count) => Err(FormatError::new(
            &shard.path,
            format!("bad split metadata: {SPLIT_NO} = {no:?}, {SPLIT_COUNT} = {count:?}"),
        )),
    }
}

/// Every shard of the set `given` belongs to, in order (just `given` when it is a whole file).
pub(super) fn open_set(given: Shard) -> Result<Vec<Shard>> {
    let Some((no, count)) = position(&given)? else {
        return Ok(vec![given]);
    };
    if count == 1 {
        return Ok(vec![given]);
    }
    let suffix = format!("-{:05}-of-{:05}.gguf", no + 1, count);
    let name = given.path.to_string_lossy().into_owned();
    let Some(prefix) = name.strip_suffix(&suffix).filter(|p| !p.is_empty()) else {
        return Err(FormatError::new(
            &given.path,
            format!(
                "shard {} of a {count}-file split set, but its name does not end with {suffix}, \
                 so the other shards cannot be found",
                no + 1
            ),
        ));
    };
    let prefix = PathBuf::from(prefix);
    let mut given = Some(given);
    let mut shards = Vec::with_capacity(count);
    for i in 0..count {
        let shard = match i == no {
            true => given.take().expect("the given shard is placed once"),
            false => {
                let path = shard_path(&prefix, i, count);
                if !path.exists() {
                    return Err(FormatError::new(
                        &path,
                        format!("shard {} of {count} of this split set is missing", i + 1),
                    ));
                }
                Shard::open(&path)?
            }
        };
        if position(&shard)? != Some((i, count)) {
            return Err(FormatError::new(
                &shard.path,
                format!(
                    "not shard {} of {count}: its split metadata says otherwise",
                    i + 1
                ),
            ));
        }
        shards.push(shard);
    }
    check_tensors(&shards)?;
    Ok(shards)
}

/// The set holds `split.tensors.count` tensors with no name twice.
fn check_tensors(shards: &[Shard]) -> Result<()> {
    let first = &shards[0];
    let expected = first
        .metadata
        .get(SPLIT_TENSORS_COUNT)
        .and_then(Value::as_u64);
    let mut names = HashSet::new();
    for shard in shards {
        for t in &shard.tensors {
            if !names.insert(t.info.name.as_str()) {
                return Err(FormatError::new(
                    &shard.path,
                    format!(
                        "tensor {} is also in an earlier shard: the files are not one split set",
                        t.info.name
                    ),
                ));
            }
        }
    }
    match expected {
        Some(n) if n == names.len() as u64 => Ok(()),
        _ => Err(FormatError::new(
            &first.path,
            format!(
                "{SPLIT_TENSORS_COUNT} is {expected:?} but the {} shards hold {} tensors: \
                 a shard is from another set",
                shards.len(),
                names.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorInfo};

    /// Writes a set of `count` shards with one 4-float tensor each (`t0`, `t1`, …, values `i`),
    /// the model's metadata in the first shard, as llama-gguf-split lays them out.
    fn write_set(prefix: &Path, count: usize, names: &[&str]) {
        for (i, name) in names.iter().enumerate() {
            let mut md = Metadata::new();
            if i == 0 {
                md.set("general.architecture", Value::String("llama".into()));
            }
            md.set(SPLIT_NO, Value::U16(i as u16));
            md.set(SPLIT_COUNT, Value::U16(count as u16));
            md.set(SPLIT_TENSORS_COUNT, Value::I32(names.len() as i32));
            let info = TensorInfo {
                name: name.to_string(),
                dims: vec![4],
                ggml_type: GgmlType::F32,
            };
            let path = shard_path(prefix, i, count);
            let mut w = GgufWriter::create(&path, &md, &[info]).unwrap();
            w.write(&[i as u8; 16]).unwrap();
            w.finish().unwrap();
        }
    }

    #[test]
    fn any_shard_opens_the_whole_set() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("m");
        write_set(&prefix, 3, &["t0", "t1", "t2"]);
        for i in 0..3 {
            let f = GgufFile::open(&shard_path(&prefix, i, 3)).unwrap();
            assert_eq!(f.path(), shard_path(&prefix, 0, 3));
            assert_eq!(f.paths().count(), 3);
            assert_eq!(f.architecture(), Some("llama"));
            for (j, t) in f.tensors.iter().enumerate() {
                assert_eq!(t.info.name, format!("t{j}"));
                assert_eq!(f.data(t), &[j as u8; 16]);
            }
        }
    }

    #[test]
    fn incomplete_or_mixed_sets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("m");
        write_set(&prefix, 3, &["t0", "t1", "t2"]);
        std::fs::remove_file(shard_path(&prefix, 1, 3)).unwrap();
        let err = GgufFile::open(&shard_path(&prefix, 0, 3)).err().unwrap();
        assert!(err.to_string().contains("m-00002-of-00003.gguf"), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        // Shard 2 of another set of the same size takes the missing one's place.
        let other = dir.path().join("o");
        write_set(&other, 3, &["t0", "t0", "t2"]);
        std::fs::rename(shard_path(&other, 1, 3), shard_path(&prefix, 1, 3)).unwrap();
        let err = GgufFile::open(&shard_path(&prefix, 2, 3)).err().unwrap();
        assert!(err.to_string().contains("not one split set"), "{err}");

        // A shard renamed out of its set cannot stand for a whole model.
        let lone = dir.path().join("lone.gguf");
        std::fs::copy(shard_path(&prefix, 0, 3), &lone).unwrap();
        let err = GgufFile::open(&lone).err().unwrap();
        assert!(
            err.to_string().contains("shard 1 of a 3-file split set"),
            "{err}"
        );
    }

    #[test]
    fn limits_parse_and_assign_like_llama_gguf_split() {
        assert_eq!(
            SplitLimit::parse_size("3M"),
            Ok(SplitLimit::Bytes(3_000_000))
        );
        assert_eq!(
            SplitLimit::parse_size("48G"),
            Ok(SplitLimit::Bytes(48_000_000_000))
        );
        for bad in ["", "3", "3K", "0M", "-1G", "xM"] {
            assert!(SplitLimit::parse_size(bad).is_err(), "{bad}");
        }
        let t = |n: u64| TensorInfo {
            name: format!("t{n}"),
            dims: vec![n],
            ggml_type: GgmlType::F32,
        };
        // 4-float tensors pad to 32 bytes; 40-float ones take 160.
        let tensors = [t(4), t(4), t(40), t(4), t(4)];
        assert_eq!(
            SplitLimit::Tensors(2).assign(&tensors),
            Ok(vec![0..2, 2..4, 4..5])
        );
        // A shard closes when the next tensor would take it past the size (192 exactly fits).
        assert_eq!(
            SplitLimit::Bytes(192).assign(&tensors),
            Ok(vec![0..2, 2..4, 4..5])
        );
        // A tensor larger than the size gets a shard of its own, except the first (as
        // llama-gguf-split, which then refuses an empty first shard).
        assert_eq!(
            SplitLimit::Bytes(100).assign(&tensors),
            Ok(vec![0..2, 2..3, 3..5])
        );
        assert!(SplitLimit::Bytes(16).assign(&tensors).is_err());
    }

    #[test]
    fn a_set_writer_writes_what_the_reader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        let infos: Vec<TensorInfo> = (0..5)
            .map(|i| TensorInfo {
                name: format!("t{i}"),
                dims: vec![4],
                ggml_type: GgmlType::F32,
            })
            .collect();
        let out = dir.path().join("m.gguf");
        let mut w = SetWriter::create(&out, &md, &infos, Some(SplitLimit::Tensors(2))).unwrap();
        assert_eq!(w.paths().len(), 3);
        for i in 0..5u8 {
            w.write(&[i; 16]).unwrap();
        }
        let listed = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(listed(), 3, "temporary files only until finish");
        assert!(!w.paths()[0].exists());
        w.finish().unwrap();
        let f = GgufFile::open(&dir.path().join("m-00002-of-00003.gguf")).unwrap();
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.tensors.len(), 5);
        for (i, t) in f.tensors.iter().enumerate() {
            assert_eq!(f.data(t), &[i as u8; 16]);
        }
        // A writer dropped before finishing leaves nothing.
        let other = dir.path().join("x.gguf");
        let mut w = SetWriter::create(&other, &md, &infos, Some(SplitLimit::Tensors(2))).unwrap();
        w.write(&[0; 16 * 3]).unwrap();
        drop(w);
        assert_eq!(listed(), 3);
    }

    #[test]
    fn a_short_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("m");
        write_set(&prefix, 2, &["t0", "t1"]);
        // Rewrite shard 1 with a claim that the set holds 3 tensors.
        let mut first = Metadata::new();
        first.set(SPLIT_NO, Value::U16(0));
        first.set(SPLIT_COUNT, Value::U16(2));
        first.set(SPLIT_TENSORS_COUNT, Value::I32(3));
        let f0 = TensorInfo {
            name: "t0".into(),
            dims: vec![4],
            ggml_type: GgmlType::F32,
        };
        let mut w = GgufWriter::create(&shard_path(&prefix, 0, 2), &first, &[f0]).unwrap();
        w.write(&[0u8; 16]).unwrap();
        w.finish().unwrap();
        let err = GgufFile::open(&shard_path(&prefix, 1, 2)).err().unwrap();
        assert!(err.to_string().contains("another set"), "{err}");
    }
}

//! Split GGUF sets as `llama-gguf-split --split` writes them: files `PREFIX-0000i-of-0000n.gguf`,
//! each carrying `split.no`, `split.count` and `split.tensors.count`, the first one with all the
//! model's metadata. A shard is never taken for a whole model: opening any shard opens the set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::reader::Shard;
use super::{Metadata, Value};
use crate::{FormatError, Result};

/// `split.no`: this shard's index, from 0.
pub const SPLIT_NO: &str = "split.no";
/// `split.count`: how many files the set has.
pub const SPLIT_COUNT: &str = "split.count";
/// `split.tensors.count`: tensors in the whole set.
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

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

//! The GGUF model reader: one file, or a split set read as one (shards parsed by
//! [`super::shard`], the set found and checked by [`super::split`]).

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::shard::{Shard, TensorEntry};
use super::{Metadata, Value};
use crate::Result;

/// An open GGUF model — one file, or every shard of a split set (llama-gguf-split's
/// `NAME-0000i-of-0000n.gguf`) read as one: metadata of the first shard, tensors of all of them,
/// each over a read-only memory map.
pub struct GgufFile {
    shards: Vec<(PathBuf, Mmap)>,
    /// Metadata in file order (the first shard's, `split.*` keys included).
    pub metadata: Metadata,
    /// Tensors in file order, shard after shard.
    pub tensors: Vec<TensorEntry>,
    /// Data alignment in force.
    pub alignment: u64,
}

impl GgufFile {
    /// Opens and parses `path`; when its metadata says it is one shard of a split set, opens the
    /// whole set (from any of its shards) and checks that every shard is there and belongs to it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let shards = super::split::open_set(Shard::open(path)?)?;
        let alignment = shards[0].alignment;
        let mut tensors = Vec::new();
        let mut metadata = None;
        let mut maps = Vec::with_capacity(shards.len());
        for (i, shard) in shards.into_iter().enumerate() {
            tensors.extend(
                shard
                    .tensors
                    .into_iter()
                    .map(|t| TensorEntry { shard: i, ..t }),
            );
            metadata.get_or_insert(shard.metadata);
            maps.push((shard.path, shard.map));
        }
        Ok(GgufFile {
            shards: maps,
            metadata: metadata.expect("a set has a first shard"),
            tensors,
            alignment,
        })
    }

    /// The file this was read from (the first shard of a split set).
    pub fn path(&self) -> &Path {
        &self.shards[0].0
    }

    /// Every file of the model, in shard order (one for an unsplit file).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|(p, _)| p.as_path())
    }

    /// The bytes of `tensor` (which must come from this model).
    pub fn data(&self, tensor: &TensorEntry) -> &[u8] {
        let map = &self.shards[tensor.shard].1;
        &map[tensor.file_offset as usize..(tensor.file_offset + tensor.n_bytes) as usize]
    }

    /// Tells the kernel that `tensor`'s pages will not be needed again (bounded memory when
    /// streaming a large file).
    pub fn release(&self, tensor: &TensorEntry) {
        let start = tensor.file_offset as usize;
        let map = &self.shards[tensor.shard].1;
        crate::pages::drop_pages(map, start, start + tensor.n_bytes as usize);
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    /// `general.architecture`, if set.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata
            .get("general.architecture")
            .and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufWriter, TensorInfo, ValueType};

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("t.gguf");
        let mut md = Metadata::new();
        md.set("general.architecture", Value::String("llama".into()));
        md.set("x.list", Value::i32s([1, -2, 3]));
        md.set(
            "x.nested",
            Value::Array(ValueType::Array, vec![Value::strings(["a", "b"])]),
        );
        md.set("x.f64", Value::F64(0.5));
        let tensors = vec![
            TensorInfo {
                name: "a".into(),
                dims: vec![3],
                ggml_type: GgmlType::F32,
            },
            TensorInfo {
                name: "b".into(),
                dims: vec![32, 2],
                ggml_type: GgmlType::Q8_0,
            },
        ];
        let mut w = GgufWriter::create(&path, &md, &tensors).unwrap();
        w.write(&[1u8; 12]).unwrap();
        w.write(&[2u8; 30]).unwrap();
        w.write(&[3u8; 38]).unwrap();
        w.finish().unwrap();
        path
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.metadata.len(), 4);
        assert_eq!(f.metadata.get("x.list"), Some(&Value::i32s([1, -2, 3])));
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.data(&f.tensors[0]), &[1u8; 12]);
        let b = f.data(&f.tensors[1]);
        assert_eq!(b.len(), 68);
        assert!(b[..30].iter().all(|&x| x == 2) && b[30..].iter().all(|&x| x == 3));
        assert_eq!(f.tensors[1].file_offset % 32, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len() % 32, 0);
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        // Trailing padding after the last tensor is not needed; any shorter file is broken.
        let f = GgufFile::open(&path).unwrap();
        let data_end = f
            .tensors
            .iter()
            .map(|t| t.file_offset + t.n_bytes)
            .max()
            .unwrap() as usize;
        assert!(data_end < bytes.len(), "the sample ends with padding");
        for cut in 0..data_end {
            let p = dir.path().join("cut.gguf");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let err = GgufFile::open(&p)
                .err()
                .unwrap_or_else(|| panic!("cut at {cut} opened"));
            assert!(err.to_string().contains("cut.gguf"), "{err}");
        }
    }

    #[test]
    fn unfinished_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        let tensors = vec![TensorInfo {
            name: "a".into(),
            dims: vec![4],
            ggml_type: GgmlType::F32,
        }];
        let mut w = GgufWriter::create(&path, &Metadata::new(), &tensors).unwrap();
        w.write(&[0u8; 8]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

//! Memory-mapped GGUF reader with bounds checks on every length, count and offset, so that a
//! truncated or lying file gives an error naming the file instead of a panic.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{
    pad_to, GgmlType, Metadata, TensorInfo, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC, VERSION,
};
use crate::{FormatError, Result};

/// One tensor of an open GGUF model: its info and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Name, dims and type.
    pub info: TensorInfo,
    /// Which file of a split set holds the bytes (0 for a single file).
    pub shard: usize,
    /// Offset of the tensor's bytes from the start of that file.
    pub file_offset: u64,
    /// Size of the tensor's bytes.
    pub n_bytes: u64,
}

/// One parsed GGUF file: its map, metadata and tensors (whose `shard` is 0).
pub(super) struct Shard {
    pub(super) path: PathBuf,
    pub(super) map: Mmap,
    pub(super) metadata: Metadata,
    pub(super) tensors: Vec<TensorEntry>,
    pub(super) alignment: u64,
}

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

impl Shard {
    /// Opens and parses the single file `path`.
    pub(super) fn open(path: &Path) -> Result<Shard> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: the map is read-only; smelt never writes a file it is reading.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let mut cur = Cursor {
            buf: &map,
            pos: 0,
            path,
        };
        if cur.take(4)? != MAGIC {
            return Err(cur.err("not a GGUF file (bad magic)"));
        }
        let version = cur.u32()?;
        if version != VERSION {
            return Err(cur.err(format!("GGUF version {version} is not supported (only 3)")));
        }
        let n_tensors = cur.u64()?;
        let n_kv = cur.u64()?;
        let mut metadata = Metadata::new();
        for _ in 0..n_kv {
            let key = cur.string()?;
            let tag = cur.u32()?;
            let vt = ValueType::from_id(tag)
                .ok_or_else(|| cur.err(format!("key {key}: unknown value type {tag}")))?;
            let value = cur.value(vt, 0)?;
            metadata.set(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0)
                .ok_or_else(|| cur.err("bad general.alignment"))?,
            None => DEFAULT_ALIGNMENT,
        };
        let mut raw = Vec::new();
        for _ in 0..n_tensors {
            let name = cur.string()?;
            let n_dims = cur.u32()?;
            if n_dims > 4 {
                return Err(cur.err(format!("tensor {name}: {n_dims} dimensions (at most 4)")));
            }
            let dims = (0..n_dims).map(|_| cur.u64()).collect::<Result<Vec<_>>>()?;
            let tid = cur.u32()?;
            let ggml_type = GgmlType::from_id(tid)
                .ok_or_else(|| cur.err(format!("tensor {name}: unknown ggml type {tid}")))?;
            let offset = cur.u64()?;
            raw.push((
                TensorInfo {
                    name,
                    dims,
                    ggml_type,
                },
                offset,
            ));
        }
        let data_offset = pad_to(cur.pos as u64, alignment);
        let file_len = map.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (info, offset) in raw {
            let n_bytes = info
                .dims
                .iter()
                .try_fold(1u64, |a, d| a.checked_mul(*d))
                .and_then(|_| info.n_bytes())
                .ok_or_else(|| {
                    cur.err(format!(
                        "tensor {}: shape {:?} does not fit type {}",
                        info.name, info.dims, info.ggml_type
                    ))
                })?;
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= file_len && offset % alignment == 0 => {
                    tensors.push(TensorEntry { info, shard: 0, file_offset: s, n_bytes });
                }
                _ => {
                    return Err(cur.err(format!(
                        "tensor {}: data at offset {offset} (+{n_bytes} bytes) lies outside the file ({file_len} bytes) or is misaligned",
                        info.name
                    )))
                }
            }
        }
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
            alignment,
        })
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Nested arrays deeper than this are rejected rather than recursed into.
const MAX_ARRAY_DEPTH: usize = 4;

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> FormatError {
        FormatError::new(self.path, msg.into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|e| *e <= self.buf.len() as u64);
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: needs {n} more bytes at offset {} of {}",
                self.pos,
                self.buf.len()
            ))),
        }
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self
            .take(N as u64)?
            .try_into()
            .expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let at = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("string at offset {at} is not valid UTF-8")))
    }

    fn value(&mut self, vt: ValueType, depth: usize) -> Result<Value> {
        Ok(match vt {
            ValueType::U8 => Value::U8(self.arr::<1>()?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>()?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr()?)),
            ValueType::Bool => match self.arr::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("bool value {b} at offset {}", self.pos - 1))),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr()?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err("arrays nested too deeply"));
                }
                let tag = self.u32()?;
                let elem = ValueType::from_id(tag)
                    .ok_or_else(|| self.err(format!("unknown array element type {tag}")))?;
                let n = self.u64()?;
                // Every element takes at least one byte, which bounds the allocation by the file size.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(self.err(format!(
                        "array of {n} items cannot fit in the rest of the file"
                    )));
                }
                let items = (0..n)
                    .map(|_| self.value(elem, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                Value::Array(elem, items)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

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

//! One GGUF file parsed over a read-only memory map, with bounds checks on every length, count
//! and offset, so that a truncated or lying file gives an error naming the file instead of a
//! panic. [`super::reader`] assembles one or more of them (a split set) into a model.

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

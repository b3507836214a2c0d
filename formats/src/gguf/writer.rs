//! Streaming GGUF writer: header and tensor infos first (their offsets follow from shapes and
//! types alone), then tensor bytes in order, a chunk at a time. Output goes to a temporary file in
//! the target folder that is renamed over the target only by [`GgufWriter::finish`]; dropping an
//! unfinished writer deletes it, so a failed run never leaves a partial file at the output path.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::metadata::encode_string;
use super::{pad_to, GgmlType, Metadata, DEFAULT_ALIGNMENT, MAGIC, VERSION};
use crate::direct::DirectWriter;
use crate::{FormatError, Result};

/// Name, shape and type of one tensor to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (fastest-varying).
    pub dims: Vec<u64>,
    /// Element encoding.
    pub ggml_type: GgmlType,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Encoded size in bytes, or `None` when the row length is not a whole number of blocks.
    pub fn n_bytes(&self) -> Option<u64> {
        let row = *self.dims.first().unwrap_or(&1);
        if !row.is_multiple_of(self.ggml_type.block_size() as u64) {
            return None;
        }
        self.ggml_type.bytes_for(self.n_elements())
    }
}

/// Writes one GGUF file; see the module docs.
pub struct GgufWriter {
    out: DirectWriter,
    tmp_path: PathBuf,
    final_path: PathBuf,
    sizes: Vec<(String, u64)>,
    current: usize,
    written: u64,
    alignment: u64,
    position: u64,
    finished: bool,
}

/// Everything before the tensor data of a file, and each tensor's size: what [`GgufWriter`]
/// writes first and what [`file_size`] adds up.
struct Layout {
    head: Vec<u8>,
    sizes: Vec<(String, u64)>,
    alignment: u64,
}

impl Layout {
    fn new(path: &Path, metadata: &Metadata, tensors: &[TensorInfo]) -> Result<Layout> {
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v.as_u64().filter(|a| *a > 0 && a % 8 == 0).ok_or_else(|| {
                FormatError::new(path, "general.alignment must be a positive multiple of 8")
            })?,
            None => DEFAULT_ALIGNMENT,
        };
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let n = t.n_bytes().ok_or_else(|| {
                FormatError::new(
                    path,
                    format!(
                        "tensor {}: row length {} is not a multiple of {}'s block size {}",
                        t.name,
                        t.dims.first().copied().unwrap_or(0),
                        t.ggml_type,
                        t.ggml_type.block_size()
                    ),
                )
            })?;
            sizes.push((t.name.clone(), n));
        }

        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        metadata.encode(&mut head);
        let mut offset = 0u64;
        for (t, (_, n)) in tensors.iter().zip(&sizes) {
            encode_string(&t.name, &mut head);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += pad_to(*n, alignment);
        }
        head.resize(pad_to(head.len() as u64, alignment) as usize, 0);
        Ok(Layout {
            head,
            sizes,
            alignment,
        })
    }
}

/// The exact size in bytes of the file [`GgufWriter`] writes for `metadata` and `tensors`
/// (header, metadata, tensor infos, every tensor padded to the alignment), and the alignment:
/// what a size budget has to count. `path` only names the file in errors.
pub fn file_size(path: &Path, metadata: &Metadata, tensors: &[TensorInfo]) -> Result<(u64, u64)> {
    let layout = Layout::new(path, metadata, tensors)?;
    let data: u64 = layout
        .sizes
        .iter()
        .map(|(_, n)| pad_to(*n, layout.alignment))
        .sum();
    Ok((layout.head.len() as u64 + data, layout.alignment))
}

impl GgufWriter {
    /// Creates the temporary file next to `path` and writes the header, metadata and tensor infos.
    pub fn create(path: &Path, metadata: &Metadata, tensors: &[TensorInfo]) -> Result<Self> {
        let Layout {
            head,
            sizes,
            alignment,
        } = Layout::new(path, metadata, tensors)?;
        let tmp_path = temp_path_for(path);
        let out = DirectWriter::create(&tmp_path).map_err(|e| FormatError::io(path, e))?;
        let mut writer = GgufWriter {
            out,
            tmp_path,
            final_path: path.to_path_buf(),
            sizes,
            current: 0,
            written: 0,
            alignment,
            position: 0,
            finished: false,
        };
        writer.put(&head)?;
        writer.skip_empty_tensors()?;
        Ok(writer)
    }

    /// Appends bytes of the current tensor; a tensor may arrive in any number of chunks, and the
    /// writer moves on to the next tensor once the current one is complete.
    pub fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let Some((name, size)) = self.sizes.get(self.current).cloned() else {
                return Err(FormatError::new(
                    &self.final_path,
                    "more tensor data than the tensor infos announce",
                ));
            };
            let take = (size - self.written).min(bytes.len() as u64) as usize;
            if take == 0 {
                return Err(FormatError::new(
                    &self.final_path,
                    format!("tensor {name}: empty tensor cannot take data"),
                ));
            }
            self.put(&bytes[..take])?;
            self.written += take as u64;
            bytes = &bytes[take..];
            if self.written == size {
                self.end_tensor()?;
            }
        }
        Ok(())
    }

    /// Tensor bytes still expected before the file is complete.
    pub fn remaining(&self) -> u64 {
        let rest: u64 = self.sizes[self.current.min(self.sizes.len())..]
            .iter()
            .map(|(_, n)| n)
            .sum();
        rest - self.written
    }

    /// The name of the tensor whose bytes are expected next, if any.
    pub fn next_tensor(&self) -> Option<&str> {
        self.sizes.get(self.current).map(|(n, _)| n.as_str())
    }

    /// Checks that every tensor was written, flushes, syncs and renames the file into place.
    pub fn finish(self) -> Result<()> {
        self.complete()?.commit()
    }

    /// Checks that every tensor was written, flushes and syncs, leaving the file under its
    /// temporary name until [`Completed::commit`] (several files can then appear together).
    pub fn complete(mut self) -> Result<Completed> {
        if let Some((name, _)) = self.sizes.get(self.current) {
            return Err(FormatError::new(
                &self.final_path,
                format!("tensor {name} was not written completely"),
            ));
        }
        self.out
            .finish()
            .and_then(File::sync_all)
            .map_err(|e| FormatError::io(&self.final_path, e))?;
        self.finished = true;
        Ok(Completed {
            tmp_path: self.tmp_path.clone(),
            final_path: self.final_path.clone(),
            committed: false,
        })
    }

    fn end_tensor(&mut self) -> Result<()> {
        let padded = pad_to(self.position, self.alignment);
        let zeros = vec![0u8; (padded - self.position) as usize];
        self.put(&zeros)?;
        self.current += 1;
        self.written = 0;
        self.skip_empty_tensors()
    }

    fn skip_empty_tensors(&mut self) -> Result<()> {
        while matches!(self.sizes.get(self.current), Some((_, 0))) {
            self.current += 1;
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| FormatError::io(&self.final_path, e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// A written and synced file still under its temporary name; dropping it uncommitted deletes it.
pub struct Completed {
    tmp_path: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl Completed {
    /// Renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp_path, &self.final_path)
            .map_err(|e| FormatError::io(&self.final_path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Completed {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// A hidden temporary name in the same folder as `path`, so the final rename stays on one
/// filesystem and is atomic.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.smelt-tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that a
/// failure never leaves a partial file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path_for(path);
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| FormatError::io(path, e))
}

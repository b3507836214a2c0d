//! Importance-matrix files as `llama-imatrix` writes them and `llama-quantize --imatrix` reads
//! them: the GGUF format (`<tensor>.in_sum2` and `<tensor>.counts` F32 tensors plus
//! `imatrix.datasets` / `imatrix.chunk_count` / `imatrix.chunk_size`) and the legacy `.dat` format
//! (entries of name, call count and values, then the chunk count and dataset name). Reading follows
//! llama.cpp's `common_imatrix_load`: a file that does not parse as GGUF is read as legacy.

use std::collections::BTreeMap;
use std::path::Path;

use crate::gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorInfo, Value};
use crate::{FormatError, Result};

/// One tensor's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Per-column sums of squared activations (GGUF: raw sums per expert; legacy: sums already
    /// divided by the per-call token count and multiplied by the call count).
    pub sums: Vec<f32>,
    /// GGUF: tokens seen per expert (rounded to integers, as llama.cpp does); legacy: one entry,
    /// the number of calls.
    pub counts: Vec<i64>,
}

/// A parsed importance-matrix file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImatrixFile {
    /// Entries by tensor name.
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// Text files the statistics were collected on.
    pub datasets: Vec<String>,
    /// Number of chunks processed.
    pub chunk_count: u32,
    /// Tokens per chunk (0 for legacy files, which do not record it).
    pub chunk_size: u32,
    /// Read from the legacy `.dat` format.
    pub legacy: bool,
    /// A GGUF file with all three metadata keys (llama-quantize refuses GGUF files without them).
    pub has_metadata: bool,
}

impl ImatrixFile {
    /// Reads `path` in either format.
    pub fn open(path: &Path) -> Result<ImatrixFile> {
        let head = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
            let mut magic = [0u8; 4];
            let n = f.read(&mut magic).map_err(|e| FormatError::io(path, e))?;
            magic[..n].to_vec()
        };
        if head == b"GGUF" {
            read_gguf(path)
        } else {
            let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
            read_legacy(path, &bytes)
        }
    }
}

impl ImatrixFile {
    /// Writes the GGUF form exactly as `llama-imatrix` lays it out: `general.type`, the datasets,
    /// chunk count and size, then per entry (sorted by name) `<name>.in_sum2` and `<name>.counts`
    /// as F32 tensors with trailing unit dimensions dropped.
    pub fn write_gguf(&self, path: &Path) -> Result<()> {
        let mut metadata = Metadata::new();
        metadata.set("general.type", Value::String("imatrix".into()));
        metadata.set(
            "imatrix.datasets",
            Value::strings(self.datasets.iter().cloned()),
        );
        metadata.set("imatrix.chunk_count", Value::U32(self.chunk_count));
        metadata.set("imatrix.chunk_size", Value::U32(self.chunk_size));
        let dims = |per: usize, n: usize| match n {
            1 => vec![per as u64],
            _ => vec![per as u64, n as u64],
        };
        let mut infos = Vec::new();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len();
            infos.push(TensorInfo {
                name: format!("{name}.in_sum2"),
                dims: dims(e.sums.len() / n_mat, n_mat),
                ggml_type: GgmlType::F32,
            });
            infos.push(TensorInfo {
                name: format!("{name}.counts"),
                dims: dims(1, n_mat),
                ggml_type: GgmlType::F32,
            });
        }
        let mut writer = GgufWriter::create(path, &metadata, &infos)?;
        for e in self.entries.values() {
            writer.write(&f32_bytes(e.sums.iter().copied()))?;
            writer.write(&f32_bytes(e.counts.iter().map(|&c| c as f32)))?;
        }
        writer.finish()
    }

    /// Writes the legacy `.dat` form (`--output-format dat`): per entry the name, the call count
    /// `ceil(max count / chunk_size)` and the sums divided by their count times the call count;
    /// then the chunk count and the last dataset name.
    pub fn write_dat(&self, path: &Path) -> Result<()> {
        let chunk_size = self.chunk_size.max(1) as i64;
        let mut out = Vec::new();
        out.extend((self.entries.len() as i32).to_le_bytes());
        for (name, e) in &self.entries {
            out.extend((name.len() as i32).to_le_bytes());
            out.extend(name.as_bytes());
            let max_count = e.counts.iter().copied().max().unwrap_or(0);
            let ncall = ((max_count + chunk_size - 1) / chunk_size) as i32;
            out.extend(ncall.to_le_bytes());
            out.extend((e.sums.len() as i32).to_le_bytes());
            let per = e.sums.len() / e.counts.len().max(1);
            let scaled = e.sums.iter().enumerate().map(|(i, &v)| {
                let count = e.counts[i / per] as f32;
                let (v, count) = if count == 0.0 { (1.0, 1.0) } else { (v, count) };
                (v / count) * ncall as f32
            });
            out.extend(f32_bytes(scaled));
        }
        out.extend((self.chunk_count as i32).to_le_bytes());
        let dataset = self.datasets.last().map(String::as_str).unwrap_or("");
        out.extend((dataset.len() as i32).to_le_bytes());
        out.extend(dataset.as_bytes());
        crate::gguf::write_atomically(path, &out)
    }
}

fn f32_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

fn read_gguf(path: &Path) -> Result<ImatrixFile> {
    let file = GgufFile::open(path)?;
    let bad = |m: String| FormatError::new(path, m);
    let mut out = ImatrixFile::default();
    let datasets = file.metadata.get("imatrix.datasets");
    if let Some(Value::Array(_, items)) = datasets {
        out.datasets = items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
    }
    let chunk_count = file.metadata.get("imatrix.chunk_count");
    let chunk_size = file.metadata.get("imatrix.chunk_size");
    out.has_metadata = datasets.is_some() && chunk_count.is_some() && chunk_size.is_some();
    out.chunk_count = chunk_count.and_then(Value::as_u64).unwrap_or(0) as u32;
    out.chunk_size = chunk_size.and_then(Value::as_u64).unwrap_or(0) as u32;

    // name → (sums, counts), paired up as the tensors are met
    type Halves = (Option<Vec<f32>>, Option<Vec<f32>>);
    let mut halves: BTreeMap<String, Halves> = BTreeMap::new();
    for t in &file.tensors {
        let (name, is_sums) = if let Some(n) = t.info.name.strip_suffix(".in_sum2") {
            (n, true)
        } else if let Some(n) = t.info.name.strip_suffix(".counts") {
            (n, false)
        } else {
            continue;
        };
        if t.info.ggml_type != GgmlType::F32 {
            return Err(bad(format!("{}: sums and counts must be F32", t.info.name)));
        }
        let values: Vec<f32> = file
            .data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let slot = halves.entry(name.to_string()).or_default();
        if is_sums {
            slot.0 = Some(values);
        } else {
            slot.1 = Some(values);
        }
    }
    if halves.is_empty() {
        return Err(bad("no imatrix entries".into()));
    }
    for (name, (sums, counts)) in halves {
        let (Some(sums), Some(counts)) = (sums, counts) else {
            return Err(bad(format!("mismatched sums and counts for {name}")));
        };
        if counts.is_empty() || !sums.len().is_multiple_of(counts.len()) {
            return Err(bad(format!(
                "{name}: {} sums do not split into {} experts",
                sums.len(),
                counts.len()
            )));
        }
        let counts = counts.iter().map(|c| c.round() as i64).collect();
        out.entries.insert(name, ImatrixEntry { sums, counts });
    }
    Ok(out)
}

fn read_legacy(path: &Path, bytes: &[u8]) -> Result<ImatrixFile> {
    let mut pos = 0usize;
    let truncated = || {
        FormatError::new(
            path,
            "not a GGUF file and truncated as a legacy imatrix file",
        )
    };
    let i32_at = |pos: &mut usize| -> Result<i32> {
        let b = bytes.get(*pos..*pos + 4).ok_or_else(truncated)?;
        *pos += 4;
        Ok(i32::from_le_bytes(b.try_into().unwrap()))
    };
    let n_entries = i32_at(&mut pos)?;
    if n_entries < 1 {
        return Err(FormatError::new(path, "not an imatrix file (no entries)"));
    }
    let mut out = ImatrixFile {
        legacy: true,
        ..Default::default()
    };
    for i in 0..n_entries {
        let len = i32_at(&mut pos)?;
        let name_bytes = usize::try_from(len)
            .ok()
            .and_then(|l| bytes.get(pos..pos + l))
            .ok_or_else(truncated)?;
        pos += name_bytes.len();
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let ncall = i32_at(&mut pos)?;
        let nval = i32_at(&mut pos)?;
        if nval < 1 {
            return Err(FormatError::new(
                path,
                format!("entry {i} ({name}) has no values"),
            ));
        }
        let data = bytes
            .get(pos..pos + 4 * nval as usize)
            .ok_or_else(truncated)?;
        pos += data.len();
        let sums = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        out.entries.insert(
            name,
            ImatrixEntry {
                sums,
                counts: vec![ncall as i64],
            },
        );
    }
    if pos < bytes.len() {
        if let Ok(n) = i32_at(&mut pos) {
            out.chunk_count = n as u32;
            if let Ok(len) = i32_at(&mut pos) {
                if let Some(name) = usize::try_from(len)
                    .ok()
                    .filter(|l| *l > 0)
                    .and_then(|l| bytes.get(pos..pos + l))
                {
                    out.datasets
                        .push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(1i32.to_le_bytes());
        b.extend(3i32.to_le_bytes());
        b.extend(b"abc");
        b.extend(7i32.to_le_bytes());
        b.extend(2i32.to_le_bytes());
        b.extend(1.5f32.to_le_bytes());
        b.extend(2.5f32.to_le_bytes());
        b.extend(9i32.to_le_bytes());
        b.extend(4i32.to_le_bytes());
        b.extend(b"text");
        b
    }

    #[test]
    fn reads_legacy_entries_and_trailer() {
        let f = read_legacy(Path::new("x.dat"), &legacy_bytes()).unwrap();
        assert!(f.legacy);
        assert_eq!(
            f.entries["abc"],
            ImatrixEntry {
                sums: vec![1.5, 2.5],
                counts: vec![7]
            }
        );
        assert_eq!(f.chunk_count, 9);
        assert_eq!(f.datasets, ["text"]);
    }

    #[test]
    fn truncated_legacy_file_is_an_error() {
        let b = legacy_bytes();
        let e = read_legacy(Path::new("x.dat"), &b[..20]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}

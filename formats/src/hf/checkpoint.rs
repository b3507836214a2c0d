//! A Hugging Face checkpoint folder: `config.json` plus `model.safetensors`, or the shards named by
//! `model.safetensors.index.json`. Every shard is memory-mapped and its header validated against
//! the file size; tensor bytes are handed out as borrowed slices of the maps (zero-copy).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::config::Config;
use crate::{FormatError, Result};

/// Element type of a checkpoint tensor; smelt imports the float types llama.cpp's converter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
}

impl FloatType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointTensor {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: FloatType,
    /// Shape, slowest-varying first (PyTorch order).
    pub shape: Vec<usize>,
    shard: usize,
    start: usize,
    end: usize,
}

impl CheckpointTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// An open checkpoint folder.
pub struct Checkpoint {
    dir: PathBuf,
    /// The parsed `config.json`.
    pub config: Config,
    shards: Vec<Shard>,
    /// Tensors in the order llama.cpp's converter visits them: shard by shard (shards sorted by
    /// name), and by name within a shard.
    pub tensors: Vec<CheckpointTensor>,
}

impl Checkpoint {
    /// Opens `dir`, reads `config.json` and maps and validates every shard.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(FormatError::new(
                dir,
                "not a checkpoint folder (expected a directory with config.json)",
            ));
        }
        let config = Config::load(&dir.join("config.json"))?;
        let index_path = dir.join("model.safetensors.index.json");
        let (part_names, index_names) = if index_path.is_file() {
            let (parts, names) = read_index(&index_path)?;
            (parts, Some(names))
        } else {
            (list_parts(dir)?, None)
        };
        if part_names.is_empty() {
            return Err(FormatError::new(
                dir,
                "no model*.safetensors files and no model.safetensors.index.json",
            ));
        }

        let mut shards = Vec::new();
        let mut tensors = Vec::new();
        for part in &part_names {
            let path = dir.join(part);
            if !path.is_file() {
                return Err(FormatError::new(
                    &path,
                    "shard listed in model.safetensors.index.json is missing",
                ));
            }
            let file = File::open(&path).map_err(|e| FormatError::io(&path, e))?;
            // SAFETY: read-only map of a file smelt does not modify.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(&path, e))?;
            let mut found = parse_shard(&path, &map, shards.len())?;
            found.sort_by(|a, b| a.name.cmp(&b.name));
            tensors.extend(found);
            shards.push(Shard { path, map });
        }

        if let Some(index_names) = index_names {
            let found: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            let listed: BTreeSet<&str> = index_names.iter().map(String::as_str).collect();
            if let Some(missing) = listed.difference(&found).next() {
                return Err(FormatError::new(
                    &index_path,
                    format!("tensor {missing} is listed but in no shard"),
                ));
            }
            if let Some(extra) = found.difference(&listed).next() {
                return Err(FormatError::new(
                    &index_path,
                    format!("tensor {extra} is in a shard but not listed"),
                ));
            }
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
        })
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The raw little-endian bytes of `tensor`, borrowed from the memory map.
    pub fn bytes(&self, tensor: &CheckpointTensor) -> &[u8] {
        &self.shards[tensor.shard].map[tensor.start..tensor.end]
    }

    /// The file `tensor` lives in.
    pub fn shard_path(&self, tensor: &CheckpointTensor) -> &Path {
        &self.shards[tensor.shard].path
    }

    /// Tells the kernel that `tensor`'s pages will not be needed again, so that streaming a model
    /// larger than memory keeps resident memory bounded by what is in flight.
    pub fn release(&self, tensor: &CheckpointTensor) {
        crate::pages::drop_pages(&self.shards[tensor.shard].map, tensor.start, tensor.end);
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&CheckpointTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total number of elements in all tensors.
    pub fn n_parameters(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements() as u64).sum()
    }
}

fn parse_shard(path: &Path, map: &Mmap, shard: usize) -> Result<Vec<CheckpointTensor>> {
    if map.len() < 8 {
        return Err(FormatError::new(
            path,
            format!(
                "truncated safetensors file ({} bytes, header length needs 8)",
                map.len()
            ),
        ));
    }
    let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
    if header_len > map.len() as u64 - 8 {
        return Err(FormatError::new(
            path,
            format!(
                "truncated safetensors file: header claims {header_len} bytes but the file has {}",
                map.len()
            ),
        ));
    }
    let st = SafeTensors::deserialize(map)
        .map_err(|e| FormatError::new(path, format!("invalid safetensors: {e}")))?;
    let data_start = 8 + header_len as usize;
    let base = map.as_ptr() as usize;
    let mut out = Vec::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => FloatType::F32,
            Dtype::F16 => FloatType::F16,
            Dtype::BF16 => FloatType::BF16,
            other => {
                return Err(FormatError::new(
                    path,
                    format!(
                        "tensor {name} has unsupported dtype {other:?} (F32, F16 or BF16 only)"
                    ),
                ))
            }
        };
        let start = view.data().as_ptr() as usize - base;
        debug_assert!(start >= data_start);
        out.push(CheckpointTensor {
            name: name.to_string(),
            dtype,
            shape: view.shape().to_vec(),
            shard,
            start,
            end: start + view.data().len(),
        });
    }
    Ok(out)
}

fn read_index(path: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| FormatError::new(path, format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| FormatError::new(path, "no \"weight_map\" object"))?;
    let mut parts = BTreeSet::new();
    let mut names = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            FormatError::new(path, format!("weight_map entry {name} is not a file name"))
        })?;
        if file.contains('/') || file.contains("..") {
            return Err(FormatError::new(
                path,
                format!("weight_map entry {name} points outside the folder: {file}"),
            ));
        }
        parts.insert(file.to_string());
        names.push(name.clone());
    }
    Ok((parts.into_iter().collect(), names))
}

/// `model*.safetensors` in the folder, sorted (llama.cpp's `get_model_part_names`).
fn list_parts(dir: &Path) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let name = entry
            .map_err(|e| FormatError::io(dir, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            parts.push(name);
        }
    }
    parts.sort();
    Ok(parts)
}

//! What a quantization is given, as users name it: file types (`Q4_K_M`), per-tensor choices
//! (the flags of llama-quantize and the `[quantize.TYPE]` tables of a recipe), inputs (a GGUF or
//! a checkpoint folder) and importance matrices. Shared by `smelt quantize` and the release.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use formats::gguf::{GgmlType, GgufFile};
use formats::hf::Checkpoint;
use formats::imatrix::ImatrixFile;
use quantize::imatrix::ImportanceWeights;
use quantize::job::Source;
use quantize::mixture::{FileType, Overrides, FILE_TYPES};
use regex::Regex;

/// What llama-quantize lets a user choose per tensor besides the file type; the same fields are
/// the per-type `[quantize.TYPE]` tables of a release recipe.
#[derive(clap::Args, serde::Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TensorChoices {
    /// Use the type's default tensor type everywhere it fits, without the mixture.
    #[arg(long)]
    pub pure: bool,
    /// Override the type of tensors matching a regular expression (repeatable): PATTERN=TYPE.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    pub tensor_type: Vec<String>,
    /// Type for output.weight.
    #[arg(long, value_name = "TYPE")]
    pub output_tensor_type: Option<String>,
    /// Type for token_embd.weight.
    #[arg(long, value_name = "TYPE")]
    pub token_embedding_type: Option<String>,
    /// Leave output.weight as it is.
    #[arg(long)]
    pub leave_output_tensor: bool,
}

/// Parses a ggml type name the way llama-quantize's `parse_ggml_type` does (case-insensitive).
pub fn ggml_type(name: &str) -> Result<GgmlType> {
    GgmlType::from_name(name).ok_or_else(|| anyhow!("unknown ggml type {name:?}"))
}

impl TensorChoices {
    /// The choices as the quantizer takes them (patterns compiled, type names resolved).
    pub fn overrides(&self) -> Result<Overrides> {
        let mut tensor_types = Vec::new();
        for spec in &self.tensor_type {
            let (pattern, ty) = spec
                .split_once('=')
                .filter(|(p, t)| !p.is_empty() && !t.is_empty())
                .ok_or_else(|| anyhow!("--tensor-type {spec:?}: expected PATTERN=TYPE"))?;
            let re = Regex::new(&pattern.to_lowercase())
                .with_context(|| format!("--tensor-type {spec:?}: bad pattern"))?;
            tensor_types.push((re, ggml_type(ty)?));
        }
        Ok(Overrides {
            pure: self.pure,
            leave_output_tensor: self.leave_output_tensor,
            output_tensor_type: self
                .output_tensor_type
                .as_deref()
                .map(ggml_type)
                .transpose()?,
            token_embedding_type: self
                .token_embedding_type
                .as_deref()
                .map(ggml_type)
                .transpose()?,
            tensor_types,
            assigned: Default::default(),
        })
    }
}

/// Opens a quantization input: a checkpoint folder (converted on the fly) or a GGUF file.
pub fn open_source(path: &Path) -> Result<Source> {
    if path.is_dir() {
        Ok(Source::checkpoint(Checkpoint::open(path)?)?)
    } else {
        Ok(Source::Gguf(GgufFile::open(path)?))
    }
}

/// Parses a file type name, listing the known ones when it is not one.
pub fn file_type(name: &str) -> Result<FileType> {
    FileType::parse(name).ok_or_else(|| {
        let names: Vec<&str> = FILE_TYPES.iter().map(|f| f.name).collect();
        anyhow!(
            "unknown type {name:?}; expected one of {}",
            names.join(", ")
        )
    })
}

/// Reads an importance matrix for the quantizer, recording it under `name` in the output.
pub fn importance_weights(path: &Path, name: String) -> Result<(ImportanceWeights, String)> {
    let file = ImatrixFile::open(path)?;
    let weights =
        ImportanceWeights::from_file(&file).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((weights, name))
}

//! `config.json` access with the key fallbacks llama.cpp's converter uses (`find_hparam`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{FormatError, Result};

/// A parsed `config.json` (with a nested `text_config` merged into the top level, as the converter
/// does for multimodal wrappers).
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    /// The merged JSON object.
    pub json: Map<String, Value>,
}

impl Config {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| FormatError::new(path, format!("invalid JSON: {e}")))?;
        let Value::Object(mut json) = value else {
            return Err(FormatError::new(path, "not a JSON object"));
        };
        if let Some(Value::Object(text_config)) = json.get("text_config").cloned() {
            json.extend(text_config);
        }
        Ok(Config { path: path.to_path_buf(), json })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first of `keys` that is present (JSON null counts as present, as in Python).
    pub fn find(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.json.get(*k))
    }

    /// The first of `keys` present and not null, as an integer.
    pub fn find_u64(&self, keys: &[&str]) -> Option<u64> {
        self.find(keys).and_then(Value::as_u64)
    }

    /// Like [`Config::find_u64`] but required: a clear error names the file and the keys.
    pub fn require_u64(&self, keys: &[&str]) -> Result<u64> {
        self.find_u64(keys).ok_or_else(|| {
            FormatError::new(&self.path, format!("missing required key {} (a non-negative integer)", keys.join(" / ")))
        })
    }

    /// The first of `keys` present, as a float.
    pub fn find_f64(&self, keys: &[&str]) -> Option<f64> {
        self.find(keys).and_then(Value::as_f64)
    }

    /// `architectures[0]`.
    pub fn architecture(&self) -> Result<&str> {
        self.json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| FormatError::new(&self.path, "missing required key architectures"))
    }
}

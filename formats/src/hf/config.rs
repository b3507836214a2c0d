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
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| FormatError::new(path, format!("invalid JSON: {e}")))?;
        let Value::Object(mut json) = value else {
            return Err(FormatError::new(path, "not a JSON object"));
        };
        if let Some(Value::Object(text_config)) = json.get("text_config").cloned() {
            json.extend(text_config);
        }
        apply_transformers_defaults(&mut json);
        Ok(Config {
            path: path.to_path_buf(),
            json,
        })
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
            FormatError::new(
                &self.path,
                format!(
                    "missing required key {} (a non-negative integer)",
                    keys.join(" / ")
                ),
            )
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

/// llama.cpp's converter reads the config through `transformers.AutoConfig(...).to_dict()`, which
/// fills in the config class's defaults; these are the defaults (transformers 4.57) that reach the
/// GGUF metadata. The model's shape keys (`hidden_size`, `num_hidden_layers`,
/// `num_attention_heads`) are left required: a checkpoint without them is refused, not guessed.
fn apply_transformers_defaults(json: &mut Map<String, Value>) {
    let model_type = json
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let defaults: &[(&str, Value)] = &match model_type.as_str() {
        "llama" => [
            ("max_position_embeddings", Value::from(2048)),
            ("rms_norm_eps", Value::from(1e-6)),
            ("rope_theta", Value::from(10000.0)),
            ("intermediate_size", Value::from(11008)),
            ("vocab_size", Value::from(32000)),
        ],
        "mistral" => [
            ("max_position_embeddings", Value::from(131072)),
            ("rms_norm_eps", Value::from(1e-6)),
            ("rope_theta", Value::from(10000.0)),
            ("intermediate_size", Value::from(14336)),
            ("vocab_size", Value::from(32000)),
        ],
        "qwen2" => [
            ("max_position_embeddings", Value::from(32768)),
            ("rms_norm_eps", Value::from(1e-6)),
            ("rope_theta", Value::from(10000.0)),
            ("intermediate_size", Value::from(22016)),
            ("vocab_size", Value::from(151936)),
        ],
        _ => return,
    };
    for (key, value) in defaults {
        json.entry(key.to_string()).or_insert_with(|| value.clone());
    }
    if !json.contains_key("num_key_value_heads") {
        let kv = match model_type.as_str() {
            "mistral" => Some(Value::from(8)),
            "qwen2" => Some(Value::from(32)),
            _ => json.get("num_attention_heads").cloned(),
        };
        if let Some(kv) = kv {
            json.insert("num_key_value_heads".into(), kv);
        }
    }
    // LlamaConfig derives head_dim when it is missing or null; MistralConfig keeps it null.
    if model_type == "llama" && json.get("head_dim").is_none_or(Value::is_null) {
        let hd = json
            .get("hidden_size")
            .and_then(Value::as_u64)
            .zip(json.get("num_attention_heads").and_then(Value::as_u64));
        if let Some((h, n)) = hd.filter(|(_, n)| *n > 0) {
            json.insert("head_dim".into(), Value::from(h / n));
        }
    }
}

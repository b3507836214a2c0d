//! SHA-256 fingerprints of inputs: whole files (teachers, texts, release inputs) and a GGUF's
//! tokenizer, so a dataset or a cached artifact can say exactly what it was made from.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::gguf::{GgufFile, Metadata};
use crate::{FormatError, Result};

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// SHA-256 of a file's bytes, read in 1 MiB pieces.
pub fn file_sha256(path: &Path) -> Result<Sha256Digest> {
    files_sha256([path])
}

/// SHA-256 of a GGUF model's bytes: its file's, or a split set's shards' one after the other
/// (so a model hashes the same however it was opened).
pub fn model_sha256(model: &GgufFile) -> Result<Sha256Digest> {
    files_sha256(model.paths())
}

/// SHA-256 of the bytes of `paths` concatenated.
fn files_sha256<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<Sha256Digest> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let mut file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| FormatError::io(path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 over every `tokenizer.*` key of a GGUF's metadata (name, type and value, in file
/// order): two models share it exactly when they tokenize alike.
pub fn tokenizer_sha256(metadata: &Metadata) -> Sha256Digest {
    let mut hasher = Sha256::new();
    for (key, value) in metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        let mut bytes = Vec::new();
        value.encode_payload(&mut bytes);
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update(value.value_type().id().to_le_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher.finalize().into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

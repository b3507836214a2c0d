//! Content-addressed work: every artifact of a release run is named by a hash of everything it
//! depends on, so a rerun finds what unchanged inputs already produced and redoes only the rest.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use formats::digest::hex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// SHA-256 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    Ok(hex(&formats::digest::file_sha256(path)?))
}

/// SHA-256 of a GGUF file, or of a checkpoint folder: the names and contents of its visible files,
/// in name order.
pub fn hash_source(path: &Path) -> Result<String> {
    if !path.is_dir() {
        let model = formats::gguf::GgufFile::open(path)?;
        return Ok(hex(&formats::digest::model_sha256(&model)?));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    names.sort();
    let mut key = Key::new("checkpoint");
    for p in &names {
        key = key
            .with(&p.file_name().expect("a file").to_string_lossy())
            .with(&hash_file(p)?);
    }
    Ok(key.full())
}

/// A hash built from named parts (each length-prefixed, so parts cannot run into each other).
#[derive(Clone)]
pub struct Key(Sha256);

impl Key {
    /// Starts a key for artifacts of kind `kind`.
    pub fn new(kind: &str) -> Key {
        Key(Sha256::new()).with(kind)
    }

    /// Adds one part.
    pub fn with(mut self, part: &str) -> Key {
        self.0.update((part.len() as u64).to_le_bytes());
        self.0.update(part.as_bytes());
        self
    }

    /// The full hex digest.
    pub fn full(self) -> String {
        hex(&self.0.finalize())
    }

    /// The first 16 hex digits: enough to name files.
    pub fn short(self) -> String {
        self.full()[..16].to_string()
    }
}

/// Reads a JSON record written by [`save_record`]; `None` when it is absent or unreadable (an
/// unreadable record is work to redo, not an error).
pub fn load_record<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a JSON record atomically.
pub fn save_record<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record)?;
    formats::gguf::write_atomically(path, &bytes)?;
    Ok(())
}

/// An exclusive lock on a cache folder (its `.lock` file), held for a whole run and released when
/// dropped (or when the process dies): a second `smelt release` on the same cache waits for the
/// first to finish instead of racing it over the same work files.
pub struct CacheLock {
    _file: File,
}

/// Locks `cache` (creating it), calling `on_wait` first if another run holds it.
pub fn lock(cache: &Path, on_wait: impl FnOnce()) -> Result<CacheLock> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("{}: cannot create the cache", cache.display()))?;
    let path = cache.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock()
                .with_context(|| format!("{}: cannot lock", path.display()))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("{}: cannot lock", path.display()))
        }
    }
    Ok(CacheLock { _file: file })
}

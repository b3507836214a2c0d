//! What every target shares: a scratch folder on tmpfs where the input is written as files (the
//! readers take paths, as smelt's commands do).

use std::path::{Path, PathBuf};

/// A scratch folder per process, reused across runs (files are overwritten each time).
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = tempfile::Builder::new()
            .prefix("smelt-fuzz-")
            .tempdir_in(base)
            .expect("a scratch folder")
            .keep();
        dir
    })
}

/// Writes `data` to `name` in the scratch folder and returns the path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("scratch writable");
    path
}

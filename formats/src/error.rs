//! The one error type of the `formats` crate.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a file could not be read or written; always names the file it is about, so the CLI can
/// print it as a single line.
#[derive(Debug)]
pub struct FormatError {
    /// The file (or folder) the problem is in.
    pub path: PathBuf,
    /// What is wrong with it, one line, no trailing period.
    pub message: String,
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, FormatError>;

impl FormatError {
    /// A problem with the content of `path`.
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        FormatError {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// An I/O failure while touching `path`.
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        FormatError::new(path, err.to_string())
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for FormatError {}

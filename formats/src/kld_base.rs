//! llama-perplexity's `--kl-divergence-base` file: a header (`_logits_`, n_ctx, n_vocab,
//! n_chunk), the evaluated tokens, then for each chunk the log-probabilities of its scored
//! positions (the second half of the chunk but the last), each row two f32 (code scale,
//! log-probability of code 0) and one 16-bit code per token. Computing the codes from logits is
//! `eval`'s; this module only lays them out and checks files against their header.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::{FormatError, Result};

const MAGIC: &[u8; 8] = b"_logits_";

/// u16 slots per saved row: two f32 (scale, minimum log-probability) then the codes, padded to
/// an even count (llama.cpp's `nv`).
pub fn row_slots(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Writes a `--kl-divergence-base` file chunk by chunk (to a temporary name, renamed on finish).
pub struct BaseWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl BaseWriter {
    /// Starts `path` with the header and the evaluated tokens (`n_chunks · n_ctx`, original
    /// tokens, not the BOS-replaced ones).
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        n_chunks: usize,
        tokens: &[u32],
    ) -> Result<BaseWriter> {
        let tmp = crate::gguf::temp_path_for(path);
        let file = File::create(&tmp).map_err(|e| FormatError::io(path, e))?;
        let mut w = BaseWriter {
            out: BufWriter::new(file),
            tmp,
            path: path.to_path_buf(),
        };
        let mut head = MAGIC.to_vec();
        for v in [n_ctx as i32, n_vocab as i32, n_chunks as i32] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        for &t in &tokens[..n_chunks * n_ctx] {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        w.put(&head)?;
        Ok(w)
    }

    /// Appends one chunk's rows ([`row_slots`] codes per scored position).
    pub fn write_rows(&mut self, slots: &[u16]) -> Result<()> {
        let bytes: Vec<u8> = slots.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(&bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Flushes and moves the file into place.
    pub fn finish(self) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| FormatError::io(&self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| FormatError::io(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| FormatError::io(&self.path, e))
    }
}

/// An open `--kl-divergence-base` file: header and tokens read, rows streamed chunk by chunk.
pub struct BaseReader {
    input: BufReader<File>,
    /// The file's path (for errors).
    pub path: PathBuf,
    /// Context the base was computed with.
    pub n_ctx: usize,
    /// Vocabulary size of the base model.
    pub n_vocab: usize,
    /// Chunks saved.
    pub n_chunks: usize,
    /// The `n_chunks · n_ctx` evaluated tokens.
    pub tokens: Vec<u32>,
}

impl BaseReader {
    /// Opens `path` and reads its header and tokens.
    pub fn open(path: &Path) -> Result<BaseReader> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let mut input = BufReader::new(file);
        let bad = |m: &str| FormatError::new(path, m.to_string());
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| bad("too short to be a KL-divergence base file"))?;
        if &magic != MAGIC {
            return Err(bad(
                "does not look like a file of log-probabilities (no _logits_ magic)",
            ));
        }
        let mut read_i32 = |what: &str| -> Result<usize> {
            let mut b = [0u8; 4];
            input
                .read_exact(&mut b)
                .map_err(|_| bad(&format!("truncated before {what}")))?;
            usize::try_from(i32::from_le_bytes(b)).map_err(|_| bad(&format!("negative {what}")))
        };
        let n_ctx = read_i32("n_ctx")?;
        let n_vocab = read_i32("n_vocab")?;
        let n_chunks = read_i32("n_chunk")?;
        if n_ctx < 4 || n_vocab == 0 {
            return Err(bad("implausible header (n_ctx < 4 or empty vocabulary)"));
        }
        let n_tokens = n_ctx * n_chunks;
        let expected = 20
            + 4 * n_tokens as u64
            + (n_chunks * (n_ctx - 1 - n_ctx / 2) * row_slots(n_vocab) * 2) as u64;
        if len != expected {
            return Err(bad(&format!(
                "is {len} bytes, but its header (n_ctx {n_ctx}, n_vocab {n_vocab}, {n_chunks} chunks) implies {expected}"
            )));
        }
        let mut raw = vec![0u8; 4 * n_tokens];
        input
            .read_exact(&mut raw)
            .map_err(|_| bad("truncated in the token list"))?;
        let tokens: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as u32)
            .collect();
        if let Some(at) = tokens.iter().position(|&t| t as usize >= n_vocab) {
            return Err(bad(&format!(
                "token {at} is {}, outside the vocabulary of {n_vocab}",
                tokens[at] as i32
            )));
        }
        Ok(BaseReader {
            input,
            path: path.to_path_buf(),
            n_ctx,
            n_vocab,
            n_chunks,
            tokens,
        })
    }

    /// Reads the next chunk's rows (`n_ctx − 1 − n_ctx/2` rows of [`row_slots`]).
    pub fn next_chunk(&mut self) -> Result<Vec<u16>> {
        let n = (self.n_ctx - 1 - self.n_ctx / 2) * row_slots(self.n_vocab);
        let mut raw = vec![0u8; 2 * n];
        self.input
            .read_exact(&mut raw)
            .map_err(|e| FormatError::io(&self.path, e))?;
        Ok(raw
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect())
    }
}

/// The two f32 that open a saved row: code scale and the log-probability of code 0.
pub fn scale_and_min(row: &[u16]) -> (f32, f32) {
    (
        f32::from_bits(row[0] as u32 | (row[1] as u32) << 16),
        f32::from_bits(row[2] as u32 | (row[3] as u32) << 16),
    )
}

/// The log-probabilities one saved row ([`row_slots`] long) stands for.
pub fn decode_row(row: &[u16], n_vocab: usize) -> Vec<f32> {
    let (scale, min_log_prob) = scale_and_min(row);
    row[4..4 + n_vocab]
        .iter()
        .map(|&c| scale * c as f32 + min_log_prob)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base file with n_ctx 4, a vocabulary of 2 and one chunk of `tokens`.
    fn base(dir: &Path, tokens: [i32; 4]) -> PathBuf {
        let path = dir.join("base.bin");
        let mut bytes = MAGIC.to_vec();
        for v in [4i32, 2, 1].into_iter().chain(tokens) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend(std::iter::repeat_n(0u8, 2 * row_slots(2)));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn token_ids_outside_the_vocabulary_are_refused_when_the_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let ok = BaseReader::open(&base(dir.path(), [0, 1, 1, 0])).unwrap();
        assert_eq!((ok.n_ctx, ok.n_vocab, ok.tokens.len()), (4, 2, 4));
        for bad in [[0, 1, 2, 0], [0, -1, 0, 0]] {
            let err = BaseReader::open(&base(dir.path(), bad))
                .err()
                .expect("refused");
            assert!(
                err.to_string().contains("outside the vocabulary of 2"),
                "{err}"
            );
        }
    }
}

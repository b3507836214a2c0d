//! The `.sdd` file: a header naming what the dataset was made from, then one checksummed record
//! per chunk of text, appended as the teacher produces them.
//!
//! ```text
//! "SMELTSDD" u32 version
//! teacher sha256 [32] | tokenizer sha256 [32] | text sha256 [32]   (zeros: unknown)
//! u32 n_vocab, n_ctx, n_chunks, top_k | f32 max_rest | u32 bos (u32::MAX: none) | u32 levels
//! u32 tail samples per unit of rest mass
//! [8] header checksum
//! per chunk: u32 length | range-coded payload | [8] checksum
//! ```
//! A chunk's payload holds its first `n_ctx/2 + 1` tokens, then one row per scored position;
//! the rest of the tokens are the rows' targets. The coder's models carry across chunks, so
//! chunks are read in order. A run writes `NAME.partial` and renames it when every chunk is in:
//! a finished file is never written again, and a partial one is continued, not restarted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use formats::digest::{hex, Sha256Digest};
use sha2::{Digest, Sha256};

use super::coder::{Decoder, Encoder};
use super::row::{RowModels, TeacherRow, LEVELS};
use formats::{FormatError, Result};

const MAGIC: &[u8; 8] = b"SMELTSDD";
/// Version 2 added the tail samples: version 1 files under-estimate KL on large vocabularies.
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 8 + 4 + 3 * 32 + 4 * 4 + 4 + 4 + 4 + 4 + 8;
const NO_BOS: u32 = u32::MAX;
/// The largest chunk a reader accepts (a chunk's tokens are held in memory while it decodes).
const MAX_CTX: u32 = 1 << 20;
/// The largest vocabulary a reader accepts.
const MAX_VOCAB: u32 = 1 << 24;
/// The most tail samples per unit of mass a reader accepts.
pub const MAX_TAIL: u32 = 1 << 16;

/// What a dataset was made from and how; two runs may share a file only if these agree.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// SHA-256 of the teacher GGUF (zeros when unknown: an import without `--teacher`).
    pub teacher: Sha256Digest,
    /// SHA-256 of the teacher's tokenizer metadata (zeros when unknown).
    pub tokenizer: Sha256Digest,
    /// SHA-256 of the text (or, for an import, of the base file).
    pub text: Sha256Digest,
    /// Vocabulary size.
    pub n_vocab: u32,
    /// Tokens per chunk.
    pub n_ctx: u32,
    /// Chunks the finished file holds.
    pub n_chunks: u32,
    /// Most tokens kept per row.
    pub top_k: u32,
    /// Rows stop early once the rest of the mass is below this.
    pub max_rest: f32,
    /// Tokens drawn from each row's rest per unit of its mass.
    pub tail: u32,
    /// Token put in place of each chunk's first token when it is run (BOS), if any.
    pub bos: Option<u32>,
}

impl Header {
    /// First scored position of a chunk (llama-perplexity's second half).
    pub fn first_scored(&self) -> usize {
        self.n_ctx as usize / 2
    }

    /// Scored rows per chunk.
    pub fn rows_per_chunk(&self) -> usize {
        self.n_ctx as usize - 1 - self.first_scored()
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_le_bytes());
        for d in [&self.teacher, &self.tokenizer, &self.text] {
            b.extend_from_slice(d);
        }
        for v in [self.n_vocab, self.n_ctx, self.n_chunks, self.top_k] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.max_rest.to_le_bytes());
        b.extend_from_slice(&self.bos.unwrap_or(NO_BOS).to_le_bytes());
        b.extend_from_slice(&LEVELS.to_le_bytes());
        b.extend_from_slice(&self.tail.to_le_bytes());
        let sum = checksum(&b);
        b.extend_from_slice(&sum);
        b
    }

    fn decode(b: &[u8], path: &Path) -> Result<Header> {
        let bad = |m: &str| FormatError::new(path, m);
        if b.len() < HEADER_BYTES || &b[..8] != MAGIC {
            return Err(bad("not a smelt teacher dataset (no SMELTSDD header)"));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        if u32_at(8) != VERSION {
            return Err(bad(&format!(
                "dataset format version {} (this smelt reads {VERSION}); make it again with \
                 `smelt distill dataset` or `smelt distill import`",
                u32_at(8)
            )));
        }
        if checksum(&b[..HEADER_BYTES - 8]) != b[HEADER_BYTES - 8..HEADER_BYTES] {
            return Err(bad("corrupt header (checksum mismatch)"));
        }
        let digest = |o: usize| -> Sha256Digest { b[o..o + 32].try_into().expect("32 bytes") };
        let o = 12 + 96;
        let levels = u32_at(o + 24);
        if levels != LEVELS {
            return Err(bad(&format!(
                "{levels} probability levels, this smelt writes {LEVELS}"
            )));
        }
        let header = Header {
            teacher: digest(12),
            tokenizer: digest(44),
            text: digest(76),
            n_vocab: u32_at(o),
            n_ctx: u32_at(o + 4),
            n_chunks: u32_at(o + 8),
            top_k: u32_at(o + 12),
            max_rest: f32::from_bits(u32_at(o + 16)),
            bos: Some(u32_at(o + 20)).filter(|&t| t != NO_BOS),
            tail: u32_at(o + 28),
        };
        if header.n_ctx < 4 || header.n_vocab < 2 || header.top_k == 0 {
            return Err(bad(
                "implausible header (n_ctx < 4, vocabulary < 2 or top-k 0)",
            ));
        }
        if header.n_ctx > MAX_CTX || header.n_vocab > MAX_VOCAB || header.tail > MAX_TAIL {
            return Err(bad(&format!(
                "implausible header (n_ctx {} > {MAX_CTX}, vocabulary {} > {MAX_VOCAB} or tail \
                 samples {} > {MAX_TAIL})",
                header.n_ctx, header.n_vocab, header.tail
            )));
        }
        Ok(header)
    }

    /// The first setting in which `other` differs from `self`, worded for an error message.
    pub fn difference(&self, other: &Header) -> Option<String> {
        let digest = |what: &str, a: &Sha256Digest, b: &Sha256Digest| {
            (a != b).then(|| format!("{what} {}… ≠ {}…", &hex(a)[..12], &hex(b)[..12]))
        };
        let number = |what: &str, a: u32, b: u32| (a != b).then(|| format!("{what} {a} ≠ {b}"));
        digest("teacher", &self.teacher, &other.teacher)
            .or_else(|| digest("tokenizer", &self.tokenizer, &other.tokenizer))
            .or_else(|| digest("text", &self.text, &other.text))
            .or_else(|| number("vocabulary", self.n_vocab, other.n_vocab))
            .or_else(|| number("n_ctx", self.n_ctx, other.n_ctx))
            .or_else(|| number("chunks", self.n_chunks, other.n_chunks))
            .or_else(|| number("top-k", self.top_k, other.top_k))
            .or_else(|| {
                (self.max_rest != other.max_rest)
                    .then(|| format!("max rest {} ≠ {}", self.max_rest, other.max_rest))
            })
            .or_else(|| number("tail samples", self.tail, other.tail))
            .or_else(|| (self.bos != other.bos).then(|| "BOS token".to_string()))
    }
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    Sha256::digest(bytes)[..8].try_into().expect("8 bytes")
}

/// One chunk of a dataset: its tokens and the teacher's rows for its scored positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Chunk index.
    pub index: usize,
    /// The chunk's `n_ctx` tokens as in the text (not BOS-replaced).
    pub tokens: Vec<u32>,
    /// One row per scored position, predicting `tokens[first + 1 + i]`.
    pub rows: Vec<TeacherRow>,
}

fn encode_chunk(header: &Header, models: &mut RowModels, chunk: &Chunk) -> Vec<u8> {
    let mut enc = Encoder::default();
    for &t in &chunk.tokens[..=header.first_scored()] {
        models.code_token(&mut enc, t);
    }
    let first = header.first_scored();
    for (r, row) in chunk.rows.iter().enumerate() {
        let p = first + r;
        let context = [chunk.tokens[p - 1], chunk.tokens[p]];
        models
            .code_row(&mut enc, Some(row), context, (usize::MAX, usize::MAX))
            .expect("a row that exists codes");
    }
    enc.finish()
}

/// Decodes one chunk's record; `None` when it does not decode to tokens and rows of the
/// header's vocabulary and top-k (a record that passed its checksum but was written with other
/// settings, or forged).
fn decode_chunk(
    header: &Header,
    models: &mut RowModels,
    index: usize,
    payload: &[u8],
) -> Option<Chunk> {
    let n_vocab = header.n_vocab;
    let mut dec = Decoder::new(payload);
    let mut tokens: Vec<u32> = (0..=header.first_scored())
        .map(|_| models.code_token(&mut dec, 0))
        .collect();
    let mut rows = Vec::with_capacity(header.rows_per_chunk());
    for _ in 0..header.rows_per_chunk() {
        let p = tokens.len() - 1;
        let context = [tokens[p - 1], tokens[p]];
        let limits = (header.top_k as usize, header.tail as usize);
        let row = models.code_row(&mut dec, None, context, limits)?;
        if row.target >= n_vocab || row.ids.iter().chain(&row.tail).any(|&i| i >= n_vocab) {
            return None;
        }
        tokens.push(row.target);
        rows.push(row);
    }
    if tokens.iter().any(|&t| t >= n_vocab) {
        return None;
    }
    Some(Chunk {
        index,
        tokens,
        rows,
    })
}

/// Reads chunk records one at a time, checking each.
struct Records<R> {
    input: R,
    /// Bytes of the file not read yet: no record may claim more.
    remaining: u64,
    header: Header,
    models: RowModels,
    next: usize,
    path: PathBuf,
}

impl<R: Read> Records<R> {
    fn new(input: R, remaining: u64, header: Header, path: &Path) -> Records<R> {
        Records {
            models: RowModels::new(header.n_vocab as usize),
            input,
            remaining,
            header,
            next: 0,
            path: path.to_path_buf(),
        }
    }

    /// The next chunk and its record's size, or `None` at a clean end of input.
    fn next(&mut self) -> Result<Option<(Chunk, u64)>> {
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len) {
            Ok(0) => return Ok(None),
            Ok(4) => {}
            Ok(_) => return Err(self.truncated()),
            Err(e) => return Err(FormatError::io(&self.path, e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        let size = 4 + len as u64 + 8;
        if size > self.remaining {
            return Err(self.truncated());
        }
        self.remaining -= size;
        let mut payload = vec![0u8; len + 8];
        if read_full(&mut self.input, &mut payload).map_err(|e| FormatError::io(&self.path, e))?
            != payload.len()
        {
            return Err(self.truncated());
        }
        let (body, sum) = payload.split_at(len);
        if checksum(body) != sum {
            return Err(FormatError::new(
                &self.path,
                format!("chunk {} is corrupt (checksum mismatch)", self.next),
            ));
        }
        let chunk =
            decode_chunk(&self.header, &mut self.models, self.next, body).ok_or_else(|| {
                FormatError::new(
                    &self.path,
                    format!(
                        "chunk {} does not decode under its header's settings",
                        self.next
                    ),
                )
            })?;
        self.next += 1;
        Ok(Some((chunk, size)))
    }

    fn truncated(&self) -> FormatError {
        FormatError::new(
            &self.path,
            format!(
                "truncated in chunk {} of {}",
                self.next, self.header.n_chunks
            ),
        )
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn read_header(input: &mut impl Read, path: &Path) -> Result<Header> {
    let mut b = vec![0u8; HEADER_BYTES];
    let got = read_full(input, &mut b).map_err(|e| FormatError::io(path, e))?;
    Header::decode(&b[..got], path)
}

/// A finished dataset, read chunk by chunk.
pub struct SddReader {
    records: Records<BufReader<File>>,
}

impl SddReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<SddReader> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let mut input = BufReader::new(file);
        let header = read_header(&mut input, path)?;
        let remaining = len.saturating_sub(HEADER_BYTES as u64);
        Ok(SddReader {
            records: Records::new(input, remaining, header, path),
        })
    }

    /// What the dataset was made from.
    pub fn header(&self) -> &Header {
        &self.records.header
    }

    /// The next chunk; `None` after the last. A file that ends early, or holds more chunks than
    /// its header says, is an error.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let expected = self.records.header.n_chunks as usize;
        match self.records.next()? {
            Some(_) if self.records.next > expected => Err(FormatError::new(
                &self.records.path,
                format!("holds more chunks than the {expected} its header says"),
            )),
            Some((chunk, _)) => Ok(Some(chunk)),
            None if self.records.next < expected => Err(self.records.truncated()),
            None => Ok(None),
        }
    }
}

/// Appends chunks to `NAME.partial`, continuing a partial file an earlier run left, and
/// renames it to `NAME` once every chunk is in.
pub struct SddWriter {
    file: File,
    partial: PathBuf,
    path: PathBuf,
    header: Header,
    models: RowModels,
    chunks_done: usize,
}

/// What [`SddWriter::open`] found.
pub enum Opened {
    /// The finished file already exists with this header: nothing to do.
    Complete,
    /// Ready to append; `chunks_done()` chunks are already in.
    Writing(Box<SddWriter>),
}

impl SddWriter {
    /// Starts or continues the dataset `path` with `header`. A partial file made with other
    /// settings is an error (naming the difference); its torn last record, if any, is cut off,
    /// and so are records past a multiple of `align` (so a resumed run batches chunks exactly
    /// as an uninterrupted one, which keeps the bytes identical).
    pub fn open(path: &Path, header: Header, align: usize) -> Result<Opened> {
        if path.exists() {
            let existing = SddReader::open(path)?;
            if existing.header() == &header {
                return Ok(Opened::Complete);
            }
        }
        let partial = partial_path(path);
        let mut models = RowModels::new(header.n_vocab as usize);
        let mut kept_bytes = HEADER_BYTES as u64;
        let mut chunks_done = 0;
        let file = if partial.exists() {
            let file = File::open(&partial).map_err(|e| FormatError::io(&partial, e))?;
            let len = file
                .metadata()
                .map_err(|e| FormatError::io(&partial, e))?
                .len();
            let mut input = BufReader::new(file);
            let found = read_header(&mut input, &partial)?;
            if let Some(diff) = found.difference(&header) {
                return Err(FormatError::new(
                    &partial,
                    format!("is an interrupted run with other settings ({diff}); delete it to start over"),
                ));
            }
            let remaining = len.saturating_sub(HEADER_BYTES as u64);
            let mut records = Records::new(input, remaining, found, &partial);
            let align = align.max(1);
            let (mut count, mut end) = (0, HEADER_BYTES as u64);
            while count < header.n_chunks as usize {
                match records.next() {
                    Ok(Some((_, size))) => {
                        count += 1;
                        end += size;
                        if count % align == 0 {
                            (chunks_done, kept_bytes) = (count, end);
                            models = records.models.clone();
                        }
                    }
                    _ => break,
                }
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&partial)
                .map_err(|e| FormatError::io(&partial, e))?;
            file.set_len(kept_bytes)
                .map_err(|e| FormatError::io(&partial, e))?;
            file
        } else {
            let mut file = File::create(&partial).map_err(|e| FormatError::io(&partial, e))?;
            file.write_all(&header.encode())
                .map_err(|e| FormatError::io(&partial, e))?;
            file
        };
        let mut writer = SddWriter {
            file,
            partial,
            path: path.to_path_buf(),
            header,
            models,
            chunks_done,
        };
        writer
            .file
            .seek(SeekFrom::Start(kept_bytes))
            .map_err(|e| FormatError::io(&writer.partial, e))?;
        Ok(Opened::Writing(Box::new(writer)))
    }

    /// Chunks already in the file (the next to write is this index).
    pub fn chunks_done(&self) -> usize {
        self.chunks_done
    }

    /// The header the file is written with.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends the next chunk and flushes it to disk, so an interruption loses at most the
    /// chunk being written.
    pub fn write_chunk(&mut self, tokens: &[u32], rows: &[TeacherRow]) -> Result<()> {
        let chunk = Chunk {
            index: self.chunks_done,
            tokens: tokens.to_vec(),
            rows: rows.to_vec(),
        };
        let payload = encode_chunk(&self.header, &mut self.models, &chunk);
        let mut record = (payload.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&payload);
        record.extend_from_slice(&checksum(&payload));
        self.file
            .write_all(&record)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| FormatError::io(&self.partial, e))?;
        self.chunks_done += 1;
        Ok(())
    }

    /// Renames the finished file into place (all chunks must be in).
    pub fn finish(self) -> Result<()> {
        if self.chunks_done != self.header.n_chunks as usize {
            return Err(FormatError::new(
                &self.partial,
                format!(
                    "only {} of {} chunks written",
                    self.chunks_done, self.header.n_chunks
                ),
            ));
        }
        self.file
            .sync_all()
            .map_err(|e| FormatError::io(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| FormatError::io(&self.path, e))
    }
}

/// Where an unfinished `path` is written.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the first format (no tail samples, which under-estimate KL on large
    /// vocabularies) is refused with what to do about it.
    #[test]
    fn a_version_1_file_is_refused_with_a_way_out() {
        let header = Header {
            teacher: [1; 32],
            tokenizer: [2; 32],
            text: [3; 32],
            n_vocab: 300,
            n_ctx: 16,
            n_chunks: 2,
            top_k: 64,
            max_rest: 0.006,
            tail: 256,
            bos: Some(1),
        };
        let mut b = header.encode();
        assert_eq!(Header::decode(&b, Path::new("d.sdd")).unwrap(), header);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let err = Header::decode(&b, Path::new("d.sdd"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version 1") && err.contains("smelt distill dataset"),
            "{err}"
        );
    }
}

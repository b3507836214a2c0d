//! Reads the pieces of a SentencePiece `tokenizer.model` (a `ModelProto` protobuf) without a
//! protobuf library: only field 1 (`pieces`: piece, score, type) is needed, everything else is
//! skipped by wire type.

use std::path::Path;

use crate::{FormatError, Result};

/// SentencePiece's piece types (`ModelProto.SentencePiece.Type`), which are also the GGUF
/// `tokenizer.ggml.token_type` values llama.cpp uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// One vocabulary entry of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece text (`▁the`, `<0x0A>`, `<s>`).
    pub text: String,
    /// Its score (log-probability for unigram, merge rank for BPE models).
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

/// Parses the pieces of the model at `path`.
pub fn read_pieces(path: &Path) -> Result<Vec<Piece>> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    parse_pieces(&bytes)
        .map_err(|m| FormatError::new(path, format!("invalid SentencePiece model: {m}")))
}

fn parse_pieces(buf: &[u8]) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut r = Reader { buf, pos: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 1 && wire == 2 {
            pieces.push(parse_piece(r.bytes()?)?);
        } else {
            r.skip(wire)?;
        }
    }
    if pieces.is_empty() {
        return Err("no pieces".into());
    }
    Ok(pieces)
}

fn parse_piece(buf: &[u8]) -> std::result::Result<Piece, String> {
    let mut r = Reader { buf, pos: 0 };
    let (mut text, mut score, mut kind) = (None, 0.0f32, PieceType::Normal);
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                text =
                    Some(String::from_utf8(r.bytes()?.to_vec()).map_err(|_| "piece is not UTF-8")?)
            }
            (2, 5) => score = f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
            (3, 0) => {
                kind = match r.varint()? {
                    1 => PieceType::Normal,
                    2 => PieceType::Unknown,
                    3 => PieceType::Control,
                    4 => PieceType::UserDefined,
                    5 => PieceType::Unused,
                    6 => PieceType::Byte,
                    t => return Err(format!("unknown piece type {t}")),
                }
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(Piece {
        text: text.ok_or("piece without text")?,
        score,
        kind,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn key(&mut self) -> std::result::Result<(u64, u8), String> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length overflow")?)
    }

    fn skip(&mut self, wire: u8) -> std::result::Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut p = vec![0x0a, text.len() as u8];
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.extend_from_slice(&[0x18, kind]);
        let mut out = vec![0x0a, p.len() as u8];
        out.extend(p);
        out
    }

    #[test]
    fn parses_pieces_and_skips_other_fields() {
        let mut buf = piece("<unk>", 0.0, 2);
        buf.extend([0x12, 0x02, 0x08, 0x01]); // trainer_spec { model_type: 1 }
        buf.extend(piece("▁a", -1.5, 1));
        let pieces = parse_pieces(&buf).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].kind, PieceType::Unknown);
        assert_eq!(
            pieces[1],
            Piece {
                text: "▁a".into(),
                score: -1.5,
                kind: PieceType::Normal
            }
        );
    }

    #[test]
    fn truncation_is_an_error() {
        let buf = piece("abc", 1.0, 1);
        for cut in 1..buf.len() {
            assert!(parse_pieces(&buf[..cut]).is_err());
        }
    }
}

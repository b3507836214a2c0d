//! Tokenizer metadata as llama.cpp's converter writes it: SentencePiece vocabularies
//! (`tokenizer.ggml.model = llama`, from `tokenizer.model`) and GPT-2-style byte-level BPE
//! (`gpt2`, from `tokenizer.json`, with the pre-tokenizer named by llama.cpp's hash table).

mod bpe;
mod bpe_pre_hashes;
mod sentencepiece;
mod special;
mod spm;

use std::path::Path;

pub use sentencepiece::{read_pieces, Piece, PieceType};

use super::config::Config;
use crate::gguf::{Metadata, Value};
use crate::{FormatError, Result};

/// Which vocabulary loader the architecture asks for, in llama.cpp's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabStyle {
    /// Llama/Mistral: `add_space_prefix` from tokenizer_config.json, then SentencePiece, then BPE.
    Llama,
    /// Qwen2: SentencePiece if there is a `tokenizer.model`, else BPE.
    Qwen2,
    /// Gemma 3: SentencePiece without the space prefix if there is a `tokenizer.model`, else BPE.
    Gemma,
    /// Phi-3: BPE when `tokenizer_config.json` names `GPT2Tokenizer` (Phi-4-mini), its own
    /// SentencePiece loader otherwise (Phi-3, Phi-3.5).
    Phi3,
    /// `TextModel`'s default (Qwen2-MoE, Qwen3-MoE): BPE from `tokenizer.json` only.
    Gpt2,
}

/// Adds the tokenizer keys for the checkpoint in `dir` to `md`.
pub fn add_vocab(style: VocabStyle, dir: &Path, config: &Config, md: &mut Metadata) -> Result<()> {
    if style == VocabStyle::Llama {
        if let Some(cfg) = read_json(&dir.join("tokenizer_config.json"))? {
            if let Some(add) = cfg
                .get("add_prefix_space")
                .and_then(serde_json::Value::as_bool)
            {
                md.set("tokenizer.ggml.add_space_prefix", Value::Bool(add));
            }
        }
    }
    if style == VocabStyle::Phi3 {
        let class = read_json(&dir.join("tokenizer_config.json"))?
            .and_then(|c| c.get("tokenizer_class")?.as_str().map(str::to_string));
        return match class.as_deref() {
            Some("GPT2Tokenizer") => bpe::add_gpt2_vocab(dir, config, md),
            _ => spm::add_sentencepiece_vocab(dir, config, md, spm::AddedTokens::Phi3),
        };
    }
    if style == VocabStyle::Gpt2 {
        return bpe::add_gpt2_vocab(dir, config, md);
    }
    if dir.join("tokenizer.model").is_file() {
        spm::add_sentencepiece_vocab(dir, config, md, spm::AddedTokens::Common)?;
        if style == VocabStyle::Gemma {
            md.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
        }
        Ok(())
    } else if dir.join("tokenizer.json").is_file() {
        bpe::add_gpt2_vocab(dir, config, md)
    } else {
        Err(FormatError::new(
            dir,
            "no tokenizer: expected tokenizer.model or tokenizer.json",
        ))
    }
}

/// Reads a JSON file if it exists.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| FormatError::io(path, e))?;
    parse_json(path, &text).map(Some)
}

/// Parses `text`, the contents of `path`, as JSON.
fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| FormatError::new(path, format!("invalid JSON: {e}")))
}

/// gguf-py's `does_token_look_special`: added tokens some models forget to mark as special.
fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

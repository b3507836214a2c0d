//! SentencePiece vocabularies, as `_create_vocab_sentencepiece` in llama.cpp's converter builds them.

use std::path::Path;

use serde_json::Value as Json;

use super::special::SpecialVocab;
use super::{looks_special, read_json, read_pieces, PieceType};
use crate::gguf::{Metadata, Value};
use crate::hf::config::Config;
use crate::Result;

const UNUSED: i32 = PieceType::Unused as i32;
const CONTROL: i32 = PieceType::Control as i32;
const USER_DEFINED: i32 = PieceType::UserDefined as i32;

/// How added tokens are marked: the common `_create_vocab_sentencepiece`, or Phi-3's own loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddedTokens {
    /// `added_tokens_decoder` entries are control tokens when marked special or looking special,
    /// otherwise user-defined with `▁` pre-normalized to a space.
    Common,
    /// `Phi3MiniModel.set_vocab`: control only when marked special, text kept as written, and
    /// `tokenizer.json`'s `added_tokens` applied the same way after the config's.
    Phi3,
}

/// Adds `tokenizer.ggml.*` for the `tokenizer.model` in `dir`.
pub fn add_sentencepiece_vocab(
    dir: &Path,
    config: &Config,
    md: &mut Metadata,
    added_tokens: AddedTokens,
) -> Result<()> {
    let pieces = read_pieces(&dir.join("tokenizer.model"))?;
    let vocab_size = config
        .find_u64(&["vocab_size_per_layer_input", "vocab_size"])
        .filter(|&n| n > 0)
        .unwrap_or(pieces.len() as u64) as usize;

    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (id, piece) in pieces.iter().enumerate().take(vocab_size) {
        tokens[id] = piece.text.clone();
        scores[id] = piece.score;
        // The converter's IsUnknown/IsControl/IsUnused/IsByte checks; user-defined pieces stay NORMAL.
        types[id] = match piece.kind {
            PieceType::UserDefined => PieceType::Normal as i32,
            k => k as i32,
        };
    }

    if let Some(Json::Object(added)) = read_json(&dir.join("added_tokens.json"))? {
        for (text, id) in added {
            if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab_size) {
                tokens[id] = text;
                scores[id] = -1000.0;
                types[id] = USER_DEFINED;
            }
        }
    }
    let mut mark = |id: usize, data: &Json| {
        let Some(content) = data.get("content").and_then(Json::as_str) else {
            return;
        };
        let special = data.get("special").and_then(Json::as_bool).unwrap_or(false);
        let (kind, text) = match added_tokens {
            AddedTokens::Common if special || looks_special(content) => {
                (CONTROL, content.to_string())
            }
            AddedTokens::Common => (USER_DEFINED, content.replace('\u{2581}', " ")),
            AddedTokens::Phi3 if special => (CONTROL, content.to_string()),
            AddedTokens::Phi3 => (USER_DEFINED, content.to_string()),
        };
        if id < vocab_size {
            types[id] = kind;
            tokens[id] = text;
            scores[id] = -1000.0;
        }
    };
    if let Some(cfg) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(Json::Object(decoder)) = cfg.get("added_tokens_decoder") {
            for (id, data) in decoder {
                if let Ok(id) = id.parse::<usize>() {
                    mark(id, data);
                }
            }
        }
    }
    if added_tokens == AddedTokens::Phi3 {
        if let Some(Json::Array(added)) = read_json(&dir.join("tokenizer.json"))?
            .as_ref()
            .and_then(|t| t.get("added_tokens"))
        {
            for data in added {
                if let Some(id) = data.get("id").and_then(Json::as_u64) {
                    mark(id as usize, data);
                }
            }
        }
    }

    md.set("tokenizer.ggml.model", Value::String("llama".into()));
    md.set("tokenizer.ggml.pre", Value::String("default".into()));
    let n_tokens = tokens.len() as u64;
    md.set("tokenizer.ggml.tokens", Value::strings(tokens));
    md.set("tokenizer.ggml.scores", Value::f32s(scores));
    md.set("tokenizer.ggml.token_type", Value::i32s(types));
    SpecialVocab::load(dir, false, Some(n_tokens))?.add_to(md);
    Ok(())
}

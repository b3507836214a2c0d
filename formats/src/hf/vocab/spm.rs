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

/// Adds `tokenizer.ggml.*` for the `tokenizer.model` in `dir`.
pub fn add_sentencepiece_vocab(dir: &Path, config: &Config, md: &mut Metadata) -> Result<()> {
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
    if let Some(cfg) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(Json::Object(decoder)) = cfg.get("added_tokens_decoder") {
            for (id, data) in decoder {
                let Some(id) = id.parse::<usize>().ok().filter(|&i| i < vocab_size) else {
                    continue;
                };
                let Some(content) = data.get("content").and_then(Json::as_str) else {
                    continue;
                };
                let special = data.get("special").and_then(Json::as_bool).unwrap_or(false);
                if special || looks_special(content) {
                    types[id] = CONTROL;
                    tokens[id] = content.to_string();
                } else {
                    types[id] = USER_DEFINED;
                    tokens[id] = content.replace('\u{2581}', " ");
                }
                scores[id] = -1000.0;
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

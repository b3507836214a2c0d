//! GPT-2-style byte-level BPE vocabularies from `tokenizer.json`, as `get_vocab_base` and
//! `get_vocab_base_pre` in llama.cpp's converter build them.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::bpe_pre_hashes::{CHECK_TEXT, PRE_TOKENIZER_HASHES};
use super::special::SpecialVocab;
use super::{looks_special, parse_json, PieceType};
use crate::gguf::{Metadata, Value};
use crate::hf::config::Config;
use crate::{FormatError, Result};

/// Adds `tokenizer.ggml.*` for the byte-level BPE `tokenizer.json` in `dir`.
pub fn add_gpt2_vocab(dir: &Path, config: &Config, md: &mut Metadata) -> Result<()> {
    let path = dir.join("tokenizer.json");
    // Read once; parsed here first, so malformed JSON is reported as such before the
    // tokenizers crate (which panics on some of it) sees the text.
    let text = std::fs::read_to_string(&path).map_err(|e| FormatError::io(&path, e))?;
    let json = parse_json(&path, &text)?;
    let tokenizer = quietly(&path, "cannot load tokenizer", || {
        text.parse::<Tokenizer>().map_err(|e| e.to_string())
    })?;

    // Added tokens, with the flags the converter reads from `added_tokens_decoder`.
    let mut added: HashMap<u32, (String, bool, bool)> = HashMap::new();
    for t in json
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            t.get("id").and_then(Json::as_u64),
            t.get("content").and_then(Json::as_str),
        ) else {
            continue;
        };
        let special = t.get("special").and_then(Json::as_bool).unwrap_or(false);
        let normalized = t
            .get("normalized")
            .and_then(Json::as_bool)
            .unwrap_or(!special);
        added.insert(id as u32, (content.to_string(), special, normalized));
    }
    let vocab = tokenizer.get_vocab(true);
    let max_id = vocab.values().copied().max().unwrap_or(0) as u64;
    let vocab_size = config
        .find_u64(&["vocab_size"])
        .unwrap_or(vocab.len() as u64);
    if max_id >= vocab_size {
        return Err(FormatError::new(
            &path,
            format!("token id {max_id} is not below vocab_size {vocab_size} of config.json"),
        ));
    }
    let pre = pre_tokenizer_name(&tokenizer, &path)?;

    let reverse: HashMap<u32, &String> = vocab.iter().map(|(t, id)| (*id, t)).collect();
    let mut tokens = Vec::with_capacity(vocab_size as usize);
    let mut types = Vec::with_capacity(vocab_size as usize);
    for i in 0..vocab_size as u32 {
        let Some(token) = reverse.get(&i) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(PieceType::Unused as i32);
            continue;
        };
        let mut token = (*token).clone();
        match added.get(&i).filter(|(content, ..)| *content == token) {
            Some((_, special, normalized)) => {
                if !normalized {
                    let enc = tokenizer
                        .encode(token.as_str(), false)
                        .map_err(|e| FormatError::new(&path, e.to_string()))?;
                    token = tokenizer
                        .decode(enc.get_ids(), false)
                        .map_err(|e| FormatError::new(&path, e.to_string()))?;
                }
                if *special || looks_special(&token) {
                    types.push(PieceType::Control as i32);
                } else {
                    token = token.replace('\u{2581}', " ");
                    types.push(PieceType::UserDefined as i32);
                }
            }
            None => types.push(PieceType::Normal as i32),
        }
        tokens.push(token);
    }

    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String(pre));
    md.set("tokenizer.ggml.tokens", Value::strings(tokens));
    md.set("tokenizer.ggml.token_type", Value::i32s(types));
    SpecialVocab::load(dir, true, None)?.add_to(md);
    Ok(())
}

/// Runs a call into the `tokenizers` crate, whose deserializers panic (an `expect` inside) on some
/// malformed files: an error or a panic there is the file's problem, reported as `what` naming
/// `path`, with the panic's message kept off stderr.
fn quietly<T>(
    path: &Path,
    what: &str,
    call: impl FnOnce() -> std::result::Result<T, String>,
) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(FormatError::new(path, format!("{what}: {e}"))),
        Err(_) => Err(FormatError::new(path, format!("{what}: malformed"))),
    }
}

/// Names the pre-tokenizer the way llama.cpp does: sha256 of the printed token ids of a fixed text.
fn pre_tokenizer_name(tokenizer: &Tokenizer, path: &Path) -> Result<String> {
    let enc = quietly(path, "cannot tokenize", || {
        tokenizer
            .encode(CHECK_TEXT, true)
            .map_err(|e| e.to_string())
    })?;
    let printed = format!(
        "[{}]",
        enc.get_ids()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let hash: String = Sha256::digest(printed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PRE_TOKENIZER_HASHES
        .iter()
        .rev()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| name.to_string())
        .ok_or_else(|| FormatError::new(path, format!("BPE pre-tokenizer not recognised (hash {hash}); llama.cpp would not convert it either")))
}

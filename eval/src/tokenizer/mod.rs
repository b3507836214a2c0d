//! llama.cpp's tokenizers, driven by the vocabulary stored in a GGUF file's `tokenizer.ggml.*`
//! metadata: SentencePiece-style score merging ([`spm`], `tokenizer.ggml.model = llama`) and GPT-2
//! byte-level BPE ([`bpe`], `gpt2`). They reproduce `llama_tokenize`'s ids, quirks included, so
//! that perplexity chunks hold exactly the tokens llama-perplexity evaluates.

mod bpe;
mod spm;

use std::collections::HashMap;
use std::path::Path;

use formats::gguf::{Metadata, Value};
use formats::{FormatError, Result};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Other,
}

impl TokenType {
    fn from_id(id: i64) -> TokenType {
        match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            _ => TokenType::Other,
        }
    }
}

/// Which merging algorithm the vocabulary uses.
enum Algorithm {
    /// SentencePiece merges; `newline_isolated` when no multi-character token contains `\n`, so
    /// text can be tokenized line by line (no merge ever crosses a newline).
    Spm {
        newline_isolated: bool,
    },
    Bpe(Box<bpe::Bpe>),
}

/// A tokenizer built from GGUF metadata.
pub struct Tokenizer {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    token_to_id: HashMap<String, u32>,
    algorithm: Algorithm,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// Whether `tokenize(…, add_special = true)` starts with [`Tokenizer::bos`].
    pub add_bos: bool,
    add_space_prefix: bool,
    /// Specials matched in raw text, longest first (user-defined always; control and unknown
    /// only when parsing specials).
    specials: Vec<u32>,
}

/// A piece of text after splitting out special tokens.
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

impl Tokenizer {
    /// Reads the vocabulary from `metadata` (`path` names the file in errors).
    pub fn from_gguf(metadata: &Metadata, path: &Path) -> Result<Tokenizer> {
        let err = |m: String| FormatError::new(path, m);
        let model = metadata
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err("tokenizer.ggml.model is missing: the file has no tokenizer".into())
            })?;
        let tokens: Vec<String> = match metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(_, items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| err("tokenizer.ggml.tokens holds non-strings".into()))?,
            _ => return Err(err("tokenizer.ggml.tokens is missing".into())),
        };
        let n = tokens.len();
        let scores = match metadata.get("tokenizer.ggml.scores") {
            Some(Value::Array(_, items)) if items.len() == n => items
                .iter()
                .map(|v| match v {
                    Value::F32(f) => *f,
                    _ => 0.0,
                })
                .collect(),
            _ => vec![0.0; n],
        };
        let types = match metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(_, items)) if items.len() == n => items
                .iter()
                .map(|v| match *v {
                    Value::I32(t) => TokenType::from_id(t as i64),
                    ref other => TokenType::from_id(other.as_u64().unwrap_or(1) as i64),
                })
                .collect(),
            _ => vec![TokenType::Normal; n],
        };
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }
        let id_key = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < n)
        };
        let flag = |key: &str| match metadata.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        };
        let (algorithm, default_bos, default_add_bos, default_prefix) = match model {
            "llama" => {
                let newline_isolated = !tokens
                    .iter()
                    .any(|t| t.chars().count() > 1 && t.contains('\n'));
                (Algorithm::Spm { newline_isolated }, Some(1), true, true)
            }
            "gpt2" => {
                let pre = metadata
                    .get("tokenizer.ggml.pre")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let merges = match metadata.get("tokenizer.ggml.merges") {
                    Some(Value::Array(_, items)) => {
                        items.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>()
                    }
                    _ => return Err(err("tokenizer.ggml.merges is missing".into())),
                };
                let bpe = bpe::Bpe::new(pre, &merges).map_err(err)?;
                (Algorithm::Bpe(Box::new(bpe)), Some(11), false, false)
            }
            other => {
                return Err(err(format!(
                    "tokenizer.ggml.model = {other} is not supported (llama, gpt2)"
                )))
            }
        };
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    types[i as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        Ok(Tokenizer {
            bos: id_key("tokenizer.ggml.bos_token_id").or(default_bos),
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix").unwrap_or(default_prefix),
            tokens,
            scores,
            types,
            token_to_id,
            algorithm,
            specials,
        })
    }

    /// The token `tokenize(…, add_special = true)` starts with, if any (it also replaces the
    /// first token of each perplexity chunk).
    pub fn bos_to_add(&self) -> Option<u32> {
        self.bos.filter(|_| self.add_bos)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text` as `llama_tokenize(text, add_special, parse_special)` gives them.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::new();
        if let Some(bos) = self.bos_to_add().filter(|_| add_special) {
            out.push(bos);
        }
        let mut prev_special = true;
        for fragment in fragments {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(raw) => {
                    match &self.algorithm {
                        &Algorithm::Spm { newline_isolated } => {
                            let mut text = String::with_capacity(raw.len() + 1);
                            if self.add_space_prefix && prev_special {
                                text.push(' ');
                            }
                            text.push_str(raw);
                            let text = text.replace(' ', "\u{2581}");
                            spm::tokenize(self, &text, newline_isolated, &mut out);
                        }
                        Algorithm::Bpe(bpe) => bpe.tokenize(self, raw, &mut out),
                    }
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Splits `text` around the special tokens llama.cpp recognises in raw text.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.specials {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let special = self.tokens[id as usize].as_str();
            if special.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                match fragment {
                    Fragment::Text(mut rest) => {
                        while let Some(at) = rest.find(special) {
                            if at > 0 {
                                next.push(Fragment::Text(&rest[..at]));
                            }
                            next.push(Fragment::Token(id));
                            rest = &rest[at + special.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    fn id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }
}

/// Bytes of the UTF-8 sequence a lead byte starts (llama.cpp's `unicode_len_utf8`: stray
/// continuation bytes count as one).
fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(lead >> 4) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: &[(&str, f32)]) -> Tokenizer {
        let mut md = Metadata::new();
        md.set("tokenizer.ggml.model", Value::String("llama".into()));
        md.set(
            "tokenizer.ggml.tokens",
            Value::strings(tokens.iter().map(|t| t.0)),
        );
        md.set(
            "tokenizer.ggml.scores",
            Value::f32s(tokens.iter().map(|t| t.1)),
        );
        Tokenizer::from_gguf(&md, Path::new("test.gguf")).unwrap()
    }

    #[test]
    fn spm_merges_by_score_and_falls_back_to_bytes() {
        let mut tokens = vec![("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)];
        let bytes: Vec<String> = (0..256).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(|b| (b.as_str(), 0.0)));
        tokens.extend([
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("ab", -0.5),
            ("\u{2581}ab", -0.1),
        ]);
        let t = vocab(&tokens);
        let ab = t.id("\u{2581}ab").unwrap();
        assert_eq!(t.tokenize("ab", true, false), vec![1, ab]);
        // 'é' is not in the vocabulary: its two UTF-8 bytes come out as byte tokens.
        let out = t.tokenize("é", false, false);
        assert_eq!(out, vec![t.id("\u{2581}").unwrap(), 3 + 0xC3, 3 + 0xA9]);
    }
}

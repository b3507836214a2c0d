//! Special-token metadata, a port of gguf-py's `SpecialVocab` (llama.cpp 0c1e57098): merges, special
//! token ids, the add_bos/add_eos/add_sep flags (from `tokenizer.json`'s post-processor and
//! `tokenizer_config.json`), the chat template and normalizer flags — written in the same order.

use std::path::Path;

use serde_json::{Map, Value as Json};

use super::read_json;
use crate::gguf::{Metadata, Value};
use crate::Result;

const DEFAULT_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// What `SpecialVocab` gathers from a checkpoint folder.
#[derive(Debug, Default)]
pub struct SpecialVocab {
    merges: Vec<String>,
    load_merges: bool,
    n_vocab: Option<u64>,
    types: Vec<String>,
    /// (type, id) in the order they were found.
    ids: Vec<(String, u64)>,
    /// (type, add?) in the order they were found.
    add: Vec<(String, bool)>,
    chat_template: Option<String>,
    normalizer_lowercase: Option<bool>,
    normalizer_strip_accents: Option<bool>,
}

impl SpecialVocab {
    /// Reads `tokenizer.json`, `tokenizer_config.json`, chat template files and `config.json` in `dir`.
    pub fn load(dir: &Path, load_merges: bool, n_vocab: Option<u64>) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab {
            load_merges,
            n_vocab,
            types: DEFAULT_TYPES.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        sv.load_tokenizer_json(dir)?;
        sv.load_config_json(dir)?;
        if load_merges && sv.merges.is_empty() {
            sv.load_merges_txt(dir)?;
        }
        Ok(sv)
    }

    /// Writes the gathered keys, in gguf-py's order.
    pub fn add_to(&self, md: &mut Metadata) {
        if !self.merges.is_empty() {
            md.set(
                "tokenizer.ggml.merges",
                Value::strings(self.merges.iter().cloned()),
            );
        }
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                "sep" => "tokenizer.ggml.seperator_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "mask" => "tokenizer.ggml.mask_token_id",
                "eot" => "tokenizer.ggml.eot_token_id",
                "eom" => "tokenizer.ggml.eom_token_id",
                _ => continue, // gguf-py has no key for cls
            };
            md.set(key, Value::U32(*id as u32));
        }
        for (typ, add) in &self.add {
            let key = match typ.as_str() {
                "bos" => "tokenizer.ggml.add_bos_token",
                "eos" => "tokenizer.ggml.add_eos_token",
                "sep" => "tokenizer.ggml.add_sep_token",
                _ => continue,
            };
            md.set(key, Value::Bool(*add));
        }
        if let Some(t) = &self.chat_template {
            md.set("tokenizer.chat_template", Value::String(t.clone()));
        }
        if let Some(v) = self.normalizer_lowercase {
            md.set("tokenizer.ggml.normalizer.lowercase", Value::Bool(v));
        }
        if let Some(v) = self.normalizer_strip_accents {
            md.set("tokenizer.ggml.normalizer.strip_accents", Value::Bool(v));
        }
    }

    fn set_add(&mut self, typ: &str, value: bool) {
        match self.add.iter_mut().find(|(t, _)| t == typ) {
            Some(slot) => slot.1 = value,
            None => self.add.push((typ.to_string(), value)),
        }
    }

    fn set_add_default(&mut self, typ: &str, value: bool) {
        if !self.add.iter().any(|(t, _)| t == typ) {
            self.add.push((typ.to_string(), value));
        }
    }

    fn set_special_token(&mut self, typ: &str, id: Option<&Json>) {
        // Python's isinstance(tid, int) is also true for bools; JSON bools are not ids in practice.
        let Some(id) = id.and_then(Json::as_u64) else {
            return;
        };
        if self.n_vocab.is_none_or(|n| id < n) && !self.ids.iter().any(|(t, _)| t == typ) {
            self.ids.push((typ.to_string(), id));
        }
    }

    fn parse_normalizer(&mut self, n: &Json) {
        match n.get("type").and_then(Json::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.normalizer_lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.normalizer_strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for inner in n
                    .get("normalizers")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.parse_normalizer(inner);
                }
            }
            _ => {}
        }
    }

    fn load_merges_txt(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| crate::FormatError::io(&path, e))?;
        let mut lines = text.lines().peekable();
        if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
            lines.next();
        }
        self.merges = lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                (parts.len() == 2).then(|| format!("{} {}", parts[0], parts[1]))
            })
            .collect();
        Ok(())
    }

    fn load_tokenizer_json(&mut self, dir: &Path) -> Result<()> {
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let mut added_tokens: Vec<Json> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                self.merges = merges_from_tokenizer_json(tok, dir)?;
            }
            if let Some(n) = tok.get("normalizer").filter(|n| !n.is_null()) {
                self.parse_normalizer(n);
            }
            added_tokens = tok
                .get("added_tokens")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
        }
        let mut config: Option<Map<String, Json>> =
            read_json(&dir.join("tokenizer_config.json"))?.and_then(|v| v.as_object().cloned());
        if let Some(tok) = &tokenizer {
            self.read_post_processor(tok, &mut config);
        }
        let Some(config) = config.filter(|c| !c.is_empty()) else {
            return Ok(());
        };

        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        let alt = if jinja.is_file() {
            Some(Json::String(
                std::fs::read_to_string(&jinja).map_err(|e| crate::FormatError::io(&jinja, e))?,
            ))
        } else if json.is_file() {
            read_json(&json)?.and_then(|v| v.get("chat_template").cloned())
        } else {
            None
        };
        if let Some(Json::String(t)) = config.get("chat_template").cloned().or(alt) {
            self.chat_template = Some(t);
        }
        for typ in self.types.clone() {
            if let Some(Json::Bool(add)) = config.get(&format!("add_{typ}_token")) {
                self.set_add_default(&typ, *add);
            }
            let content = match config.get(&format!("{typ}_token")) {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Object(o)) => match o.get("content") {
                    Some(Json::String(s)) => s.clone(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|t| t.get("content").and_then(Json::as_str) == Some(&content))
                .and_then(|t| t.get("id"));
            self.set_special_token(&typ, id);
        }
        Ok(())
    }

    /// gguf-py's "crude parsing" of the post-processor, kept faithful including its quirks (special
    /// tokens are compared as JSON values, so an AddedToken object never equals a plain string).
    fn read_post_processor(&mut self, tok: &Json, config: &mut Option<Map<String, Json>>) {
        let get = |c: &Option<Map<String, Json>>, k: &str| {
            c.as_ref()
                .and_then(|c| c.get(k))
                .cloned()
                .unwrap_or(Json::Null)
        };
        let has_config = config.as_ref().is_some_and(|c| !c.is_empty());
        let mut special_bos = get(config, "bos_token");
        let mut special_cls = get(config, "cls_token");
        let mut special_eos = get(config, "eos_token");
        let mut special_sep = get(config, "sep_token");
        if !truthy(&special_bos) && truthy(&special_cls) && has_config {
            special_bos = special_cls.clone();
            set_cfg(config, "bos_token", &special_bos);
        }
        if !truthy(&special_eos) && truthy(&special_sep) && has_config {
            special_eos = special_sep.clone();
            set_cfg(config, "eos_token", &special_eos);
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(p)) else {
            return;
        };
        let processors = match pp.get("processors").and_then(Json::as_array) {
            Some(list) => list.clone(),
            None => vec![pp.clone()],
        };
        // `entry.get('SpecialToken', {}).get('id')`, as a JSON value (Null when absent).
        let special_id = |v: Option<&Json>| -> Json {
            v.and_then(|e| e.get("SpecialToken"))
                .and_then(|s| s.get("id"))
                .cloned()
                .unwrap_or(Json::Null)
        };
        for processor in processors {
            match processor.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    self.set_add_default("bos", false);
                    self.set_add_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.set_add("bos", true);
                    self.set_add("eos", true);
                    self.set_add("sep", true);
                    if !truthy(&special_cls) && has_config {
                        special_cls = processor
                            .get("cls")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or(special_bos.clone());
                        set_cfg(config, "cls_token", &special_cls);
                    }
                    if !truthy(&special_sep) && has_config {
                        special_sep = processor
                            .get("sep")
                            .and_then(|c| c.get(0))
                            .cloned()
                            .unwrap_or(special_eos.clone());
                        set_cfg(config, "sep_token", &special_sep);
                    }
                }
                Some("TemplateProcessing") => {
                    let single = processor
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let pair = processor
                        .get("pair")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let mut special_first = Json::Null;
                    let mut special_last = Json::Null;
                    if single.len() > 1 {
                        special_first = special_id(single.first());
                        if truthy(&special_first) {
                            let first = &special_first;
                            if !has_config {
                                special_bos = first.clone();
                            } else if *first != special_bos && *first != special_cls {
                                if !truthy(&special_bos) {
                                    special_bos = first.clone();
                                    set_cfg(config, "bos_token", &special_bos);
                                }
                                if !truthy(&special_cls) {
                                    special_cls = first.clone();
                                    set_cfg(config, "cls_token", &special_cls);
                                }
                            }
                            self.set_add("bos", *first == special_bos || *first == special_cls);
                        }
                        special_last = special_id(single.last());
                        if truthy(&special_last) {
                            let last = &special_last;
                            if !has_config {
                                special_eos = last.clone();
                            } else if *last != special_eos {
                                if !self.types.iter().any(|t| t == "eot") {
                                    self.types.push("eot".into());
                                    set_cfg(config, "eot_token", &special_eos);
                                } else if !self.types.iter().any(|t| t == "eom") {
                                    self.types.push("eom".into());
                                    set_cfg(config, "eom_token", &special_eos);
                                }
                                special_eos = last.clone();
                                set_cfg(config, "eos_token", &special_eos);
                            }
                            self.set_add("eos", *last == special_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            truthy(&special_first) && special_id(pair.first()) == special_first,
                        );
                        let trim_end =
                            truthy(&special_last) && special_id(pair.last()) == special_last;
                        let end = if trim_end { pair.len() - 1 } else { pair.len() };
                        let inner: &[Json] = if start < end { &pair[start..end] } else { &[] };
                        if !inner.is_empty() {
                            let seq_id = |v: &Json| {
                                v.get("Sequence")
                                    .and_then(|s| s.get("id"))
                                    .cloned()
                                    .unwrap_or(Json::Null)
                            };
                            let is_a = seq_id(&inner[0]) == "A";
                            let is_b = seq_id(&inner[inner.len() - 1]) == "B";
                            // A [sep] [eos] B
                            if is_a && is_b && inner.len() > 2 {
                                let middle = &inner[1..inner.len() - 1];
                                let sep_or_eos = |e: &Json| {
                                    truthy(e) && (*e == special_sep || *e == special_eos)
                                };
                                let mut add_sep = sep_or_eos(&special_id(middle.first()))
                                    && !truthy(&special_last);
                                if middle.len() == 2 && sep_or_eos(&special_id(middle.get(1))) {
                                    add_sep = true;
                                }
                                self.set_add("sep", add_sep);
                                if add_sep && !truthy(&special_sep) && has_config {
                                    set_cfg(config, "sep_token", &special_eos);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn load_config_json(&mut self, dir: &Path) -> Result<()> {
        let Some(config) = read_json(&dir.join("config.json"))? else {
            return Ok(());
        };
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = match config.get(&key) {
                Some(v) if !v.is_null() => Some(v.clone()),
                _ => config.get("text_config").and_then(|t| t.get(&key)).cloned(),
            };
            self.set_special_token(&typ, id.as_ref());
        }
        Ok(())
    }
}

fn set_cfg(config: &mut Option<Map<String, Json>>, key: &str, value: &Json) {
    if let Some(c) = config.as_mut() {
        c.insert(key.to_string(), value.clone());
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// `model.merges` of a tokenizer.json in gguf's "left right" string form; the newer pair form has
/// spaces inside tokens encoded as U+0120 + 256, as gguf-py does.
fn merges_from_tokenizer_json(tok: &Json, dir: &Path) -> Result<Vec<String>> {
    let Some(list) = tok
        .get("model")
        .and_then(|m| m.get("merges"))
        .and_then(Json::as_array)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        match m {
            Json::String(s) => out.push(s.clone()),
            Json::Array(pair) if pair.len() == 2 && pair.iter().all(Json::is_string) => {
                let enc = |s: &str| {
                    s.chars()
                        .map(|c| {
                            if c == ' ' {
                                char::from_u32(' ' as u32 + 256).unwrap()
                            } else {
                                c
                            }
                        })
                        .collect::<String>()
                };
                out.push(format!(
                    "{} {}",
                    enc(pair[0].as_str().unwrap()),
                    enc(pair[1].as_str().unwrap())
                ));
            }
            _ => {
                return Err(crate::FormatError::new(
                    dir.join("tokenizer.json"),
                    "unknown tokenizer merges format",
                ))
            }
        }
    }
    Ok(out)
}

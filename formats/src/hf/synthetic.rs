//! Synthetic checkpoints for tests and benchmarks: a random Llama, Mistral or Qwen2 written as a
//! Hugging Face folder (config.json, single or sharded safetensors in F32/F16/BF16, tokenizer),
//! streamed tensor by tensor so that multi-gigabyte models take no memory to generate.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::FloatType;
use crate::gguf::{GgufFile, Value};
use crate::{FormatError, Result};

/// Which tokenizer the synthetic folder gets.
#[derive(Debug, Clone)]
pub enum SyntheticTokenizer {
    /// A generated SentencePiece model: `<unk> <s> </s>`, the 256 byte pieces, then `extra` pieces.
    Minimal,
    /// Copy `tokenizer.model` (and `tokenizer.json` / `tokenizer_config.json` if present) from a folder.
    CopyFrom(PathBuf),
    /// A byte-level BPE `tokenizer.json` rebuilt from a llama.cpp vocab GGUF: its tokens and
    /// merges, GPT-2's (`ggml-vocab-gpt-2.gguf`) or, for `tokenizer.ggml.pre = llama-bpe`
    /// (`ggml-vocab-llama-bpe.gguf`), Llama 3's.
    Gpt2FromGguf(PathBuf),
}

/// How the weights of a synthetic checkpoint are drawn; the non-Gaussian ones exercise the
/// quantizers' corner cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// N(0, 0.02²).
    Gaussian,
    /// Student-t with 3 degrees of freedom, and every 61st column 40× larger (outlier channels).
    HeavyTailed,
    /// Runs of 32 values that are all zero, constant, a single spike, or Gaussian.
    Blocky,
    /// Gaussian scaled to 1e-6, and to 1e-10 in every third run of 32 (below f16's range).
    Tiny,
    /// Each tensor draws one of the four above (chosen from its name).
    Mixed,
}

impl Distribution {
    /// Parses `gaussian`, `heavy`, `blocky`, `tiny` or `mixed`.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Some(match name {
            "gaussian" => Distribution::Gaussian,
            "heavy" => Distribution::HeavyTailed,
            "blocky" => Distribution::Blocky,
            "tiny" => Distribution::Tiny,
            "mixed" => Distribution::Mixed,
            _ => return None,
        })
    }

    /// Value `index` (row-major) of a matrix whose rows have `cols` values.
    fn sample(self, rng: &mut SplitMix, index: usize, cols: usize, name_hash: u64) -> f32 {
        let run = index / 32;
        match self {
            Distribution::Gaussian => 0.02 * rng.normal(),
            Distribution::HeavyTailed => {
                let chi2: f32 = (0..3).map(|_| rng.normal().powi(2)).sum();
                let t = rng.normal() / (chi2 / 3.0).sqrt().max(1e-3);
                let outlier = if (index % cols) % 61 == 7 { 40.0 } else { 1.0 };
                0.02 * t * outlier
            }
            Distribution::Blocky => {
                let kind = (run as u64).wrapping_mul(0x9e3779b97f4a7c15) >> 62;
                match kind {
                    0 => 0.0,
                    1 => 0.01 * ((run % 5) as f32 - 2.0),
                    2 => {
                        if index % 32 == 5 {
                            0.3
                        } else {
                            0.0
                        }
                    }
                    _ => 0.02 * rng.normal(),
                }
            }
            Distribution::Tiny => {
                let scale = if run.is_multiple_of(3) { 1e-10 } else { 1e-6 };
                scale * rng.normal()
            }
            Distribution::Mixed => {
                let pick = [Self::Gaussian, Self::HeavyTailed, Self::Blocky, Self::Tiny];
                pick[(name_hash % 4) as usize].sample(rng, index, cols, name_hash)
            }
        }
    }
}

/// Shape and content of a synthetic checkpoint.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// `LlamaForCausalLM`, `MistralForCausalLM` or `Qwen2ForCausalLM`.
    pub architecture: String,
    /// Model width.
    pub hidden: usize,
    /// FFN width.
    pub intermediate: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Vocabulary size (ignored for tokenizers that fix it).
    pub vocab: usize,
    /// Stored element type.
    pub dtype: FloatType,
    /// Number of safetensors shards (1 = a single `model.safetensors`).
    pub shards: usize,
    /// Output embedding tied to the input embedding (no `lm_head.weight`).
    pub tied: bool,
    /// Seed of the weights.
    pub seed: u64,
    /// How matrix weights are drawn.
    pub distribution: Distribution,
    /// Tokenizer to include.
    pub tokenizer: SyntheticTokenizer,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            architecture: "LlamaForCausalLM".into(),
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 300,
            dtype: FloatType::F32,
            shards: 1,
            tied: true,
            seed: 0,
            distribution: Distribution::Gaussian,
            tokenizer: SyntheticTokenizer::Minimal,
        }
    }
}

/// Writes the checkpoint described by `spec` into `dir` (created if needed).
pub fn write_synthetic(dir: &Path, spec: &SyntheticSpec) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    let vocab = write_tokenizer(dir, spec)?;
    let qwen = spec.architecture == "Qwen2ForCausalLM";
    let mut config = json!({
        "architectures": [spec.architecture],
        "model_type": match spec.architecture.as_str() { "Qwen2ForCausalLM" => "qwen2", "MistralForCausalLM" => "mistral", _ => "llama" },
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "hidden_act": "silu",
        "rms_norm_eps": if qwen { 1e-6 } else { 1e-5 },
        "rope_theta": if qwen { 1000000.0 } else { 10000.0 },
        "tie_word_embeddings": spec.tied,
        "torch_dtype": match spec.dtype { FloatType::F32 => "float32", FloatType::F16 => "float16", FloatType::BF16 => "bfloat16" },
    });
    if spec.architecture == "MistralForCausalLM" {
        config["sliding_window"] = json!(null);
        config["head_dim"] = json!(spec.hidden / spec.heads);
    }
    if qwen {
        config["use_sliding_window"] = json!(false);
        config["max_window_layers"] = json!(spec.layers);
    }
    write_json(&dir.join("config.json"), &config)?;

    let tensors = tensor_list(spec, vocab as usize, qwen);
    let per_shard = tensors.len().div_ceil(spec.shards.max(1));
    let n_shards = tensors.len().div_ceil(per_shard);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, chunk) in tensors.chunks(per_shard).enumerate() {
        let name = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n_shards:05}.safetensors", i + 1)
        };
        total += write_shard(&dir.join(&name), chunk, spec)?;
        for (t, _) in chunk {
            weight_map.insert(t.clone(), Json::String(name.clone()));
        }
    }
    if n_shards > 1 {
        write_json(
            &dir.join("model.safetensors.index.json"),
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?;
    }
    Ok(())
}

fn tensor_list(spec: &SyntheticSpec, vocab: usize, biases: bool) -> Vec<(String, Vec<usize>)> {
    let (h, f) = (spec.hidden, spec.intermediate);
    let kv = spec.hidden / spec.heads * spec.kv_heads;
    let mut list = vec![("model.embed_tokens.weight".to_string(), vec![vocab, h])];
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}.");
        list.push((format!("{p}input_layernorm.weight"), vec![h]));
        list.push((format!("{p}self_attn.q_proj.weight"), vec![h, h]));
        list.push((format!("{p}self_attn.k_proj.weight"), vec![kv, h]));
        list.push((format!("{p}self_attn.v_proj.weight"), vec![kv, h]));
        if biases {
            list.push((format!("{p}self_attn.q_proj.bias"), vec![h]));
            list.push((format!("{p}self_attn.k_proj.bias"), vec![kv]));
            list.push((format!("{p}self_attn.v_proj.bias"), vec![kv]));
        }
        list.push((format!("{p}self_attn.o_proj.weight"), vec![h, h]));
        list.push((format!("{p}post_attention_layernorm.weight"), vec![h]));
        list.push((format!("{p}mlp.gate_proj.weight"), vec![f, h]));
        list.push((format!("{p}mlp.up_proj.weight"), vec![f, h]));
        list.push((format!("{p}mlp.down_proj.weight"), vec![h, f]));
    }
    list.push(("model.norm.weight".to_string(), vec![h]));
    if !spec.tied {
        list.push(("lm_head.weight".to_string(), vec![vocab, h]));
    }
    list
}

fn write_shard(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    spec: &SyntheticSpec,
) -> Result<usize> {
    let dtype = match spec.dtype {
        FloatType::F32 => "F32",
        FloatType::F16 => "F16",
        FloatType::BF16 => "BF16",
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * spec.dtype.size();
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut header = serde_json::to_vec(&Json::Object(header)).expect("serialisable");
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let file = File::create(path).map_err(|e| FormatError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let io = |e| FormatError::io(path, e);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for (name, shape) in tensors {
        let mut rng = SplitMix(spec.seed ^ fnv(name));
        let is_norm = shape.len() == 1 && !name.ends_with(".bias");
        let cols = *shape.last().unwrap_or(&1);
        let mut buf = Vec::with_capacity(1 << 16);
        for index in 0..shape.iter().product::<usize>() {
            let v = if is_norm {
                1.0 + 0.1 * rng.normal()
            } else {
                spec.distribution.sample(&mut rng, index, cols, fnv(name))
            };
            match spec.dtype {
                FloatType::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                FloatType::F16 => {
                    buf.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes())
                }
                FloatType::BF16 => {
                    buf.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes())
                }
            }
            if buf.len() >= 1 << 16 {
                out.write_all(&buf).map_err(io)?;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(offset)
}

/// Writes the tokenizer files; returns the vocabulary size.
fn write_tokenizer(dir: &Path, spec: &SyntheticSpec) -> Result<u64> {
    match &spec.tokenizer {
        SyntheticTokenizer::Minimal => {
            let mut pieces: Vec<(String, f32, u64)> = vec![
                ("<unk>".into(), 0.0, 2),
                ("<s>".into(), 0.0, 3),
                ("</s>".into(), 0.0, 3),
            ];
            pieces.extend((0..256).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
            let letters = "abcdefghijklmnopqrstuvwxyz";
            let mut i = 0usize;
            while pieces.len() < spec.vocab.max(260) {
                let a = letters.as_bytes()[i % 26] as char;
                let b = letters.as_bytes()[(i / 26) % 26] as char;
                pieces.push((format!("\u{2581}{a}{b}"), -(i as f32), 1));
                i += 1;
            }
            let n = pieces.len() as u64;
            std::fs::write(dir.join("tokenizer.model"), encode_sentencepiece(&pieces))
                .map_err(|e| FormatError::io(dir, e))?;
            write_json(
                &dir.join("tokenizer_config.json"),
                &json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false}),
            )?;
            Ok(n)
        }
        SyntheticTokenizer::CopyFrom(src) => {
            let mut vocab = None;
            for name in [
                "tokenizer.model",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ] {
                let from = src.join(name);
                if from.is_file() {
                    std::fs::copy(&from, dir.join(name)).map_err(|e| FormatError::io(&from, e))?;
                }
            }
            if dir.join("tokenizer.model").is_file() {
                vocab = Some(super::vocab::read_pieces(&dir.join("tokenizer.model"))?.len() as u64);
            }
            vocab.ok_or_else(|| FormatError::new(src, "no tokenizer.model to copy"))
        }
        SyntheticTokenizer::Gpt2FromGguf(gguf) => {
            let vocab_file = GgufFile::open(gguf)?;
            let strings = |key: &str| -> Result<Vec<String>> {
                match vocab_file.metadata.get(key) {
                    Some(Value::Array(_, items)) => Ok(items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()),
                    _ => Err(FormatError::new(gguf, format!("no {key}"))),
                }
            };
            let tokens = strings("tokenizer.ggml.tokens")?;
            let merges = strings("tokenizer.ggml.merges")?;
            let pre = vocab_file
                .metadata
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("gpt-2");
            let (tokenizer, config) = match pre {
                "llama-bpe" => llama3_tokenizer(&vocab_file, gguf, &tokens, merges)?,
                _ => gpt2_tokenizer(gguf, &tokens, merges)?,
            };
            write_json(&dir.join("tokenizer.json"), &tokenizer)?;
            write_json(&dir.join("tokenizer_config.json"), &config)?;
            Ok(tokens.len() as u64)
        }
    }
}

/// GPT-2's `tokenizer.json` and `tokenizer_config.json` over `tokens` and `merges`.
fn gpt2_tokenizer(gguf: &Path, tokens: &[String], merges: Vec<String>) -> Result<(Json, Json)> {
    let eot = "<|endoftext|>";
    let eot_id = tokens
        .iter()
        .position(|t| t == eot)
        .ok_or_else(|| FormatError::new(gguf, "no <|endoftext|> token"))?;
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": eot_id, "content": eot, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab_map(tokens), "merges": merges},
    });
    let config = json!({"bos_token": eot, "eos_token": eot, "unk_token": eot, "model_max_length": 1024, "tokenizer_class": "GPT2Tokenizer"});
    Ok((tokenizer, config))
}

/// Llama 3's `tokenizer.json` (its split pattern, `ignore_merges`, BOS added by a template,
/// control tokens as special added tokens) and `tokenizer_config.json`, as Meta ships them.
fn llama3_tokenizer(
    vocab: &GgufFile,
    gguf: &Path,
    tokens: &[String],
    merges: Vec<String>,
) -> Result<(Json, Json)> {
    let id = |key: &str| -> Result<usize> {
        vocab
            .metadata
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .filter(|&v| v < tokens.len())
            .ok_or_else(|| FormatError::new(gguf, format!("no {key}")))
    };
    let (bos, eos) = (
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
    );
    let control: Vec<usize> = match vocab.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(_, types)) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_u64() == Some(3))
            .map(|(i, _)| i)
            .collect(),
        _ => return Err(FormatError::new(gguf, "no tokenizer.ggml.token_type")),
    };
    let added: Vec<Json> = control
        .iter()
        .map(|&i| json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let bos_text = &tokens[bos];
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos_text, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos_text.as_str(): {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": true, "vocab": vocab_map(tokens), "merges": merges},
    });
    let config = json!({"bos_token": bos_text, "eos_token": tokens[eos], "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"});
    Ok((tokenizer, config))
}

/// `{token: id}` for a BPE model.
fn vocab_map(tokens: &[String]) -> serde_json::Map<String, Json> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect()
}

/// A SentencePiece `ModelProto` with the given (piece, score, type) entries and a BPE trainer spec.
fn encode_sentencepiece(pieces: &[(String, f32, u64)]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for (text, score, kind) in pieces {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.push(0x18);
        varint(*kind, &mut p);
        out.push(0x0a);
        varint(p.len() as u64, &mut out);
        out.extend(p);
    }
    out.extend([0x12, 0x02, 0x18, 0x02]); // trainer_spec { model_type: BPE }
    out
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|e| FormatError::io(path, e))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// SplitMix64 with a Box–Muller normal: tiny, seedable and the same on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

//! Tokenizer import: the input as tokenizer.model (SentencePiece) when it starts with a byte
//! below 0x20, else as tokenizer.json (GPT-2 BPE), into GGUF metadata.
#![no_main]
#[path = "common.rs"]
mod common;

use formats::gguf::Metadata;
use formats::hf::config::Config;
use formats::hf::vocab::{add_vocab, VocabStyle};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::scratch();
    let _ = std::fs::remove_file(dir.join("tokenizer.model"));
    let _ = std::fs::remove_file(dir.join("tokenizer.json"));
    let name = match data.first() {
        Some(&b) if b < 0x20 => "tokenizer.model",
        _ => "tokenizer.json",
    };
    common::file(name, data);
    let config = common::file("config.json", br#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 64}"#);
    let Ok(config) = Config::load(&config) else {
        return;
    };
    for style in [VocabStyle::Llama, VocabStyle::Qwen2] {
        let mut md = Metadata::new();
        let _ = add_vocab(style, dir, &config, &mut md);
    }
});

//! Tier 2 interop (needs `../shared` and the llama.cpp reference with WITH_CONVERT=1): smelt against
//! llama.cpp's own converter run live, gguf-py reading every file smelt writes, and llama.cpp
//! loading and generating from a smelt file. Run by `.ci/run` with `--include-ignored`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{convert_ok, llama_complete, llama_ref, ref_python, shared, synth};

/// gguf-py (the copy in the reference tree, which knows every type smelt writes) reads every
/// field and tensor of `path`; returns its count line.
fn gguf_py_reads(path: &Path) -> String {
    let script = r#"
import sys
sys.path.insert(0, sys.argv[2])
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
n = 0
for f in r.fields.values():
    f.contents()
    n += 1
nbytes = sum(int(t.n_bytes) for t in r.tensors)
for t in r.tensors:
    assert t.data.nbytes == t.n_bytes, t.name
print(n, len(r.tensors), nbytes)
"#;
    let gguf_py = llama_ref().join("llama.cpp/gguf-py");
    let o = Command::new(ref_python())
        .args([
            "-c",
            script,
            path.to_str().unwrap(),
            gguf_py.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gguf-py failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
#[ignore = "needs ../shared and the llama.cpp reference (WITH_CONVERT=1)"]
fn synthetic_models_match_convert_hf_to_gguf_live() {
    let s = shared();
    let gpt2 = format!(
        "gpt2:{}",
        s.join("assets/llamacpp-vocab/ggml-vocab-gpt-2.gguf")
            .display()
    );
    let llama2 = format!(
        "copy:{}",
        s.join("assets/tokenizers/llama2-32000").display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let models: [(&str, Vec<&str>); 3] = [
        (
            "llama-gpt2",
            vec![
                "--arch",
                "LlamaForCausalLM",
                "--dtype",
                "bf16",
                "--shards",
                "3",
                "--tokenizer",
                &gpt2,
            ],
        ),
        (
            "qwen2-bias",
            vec![
                "--arch",
                "Qwen2ForCausalLM",
                "--dtype",
                "f16",
                "--untied",
                "--tokenizer",
                &gpt2,
            ],
        ),
        (
            "mistral",
            vec![
                "--arch",
                "MistralForCausalLM",
                "--dtype",
                "bf16",
                "--shards",
                "2",
                "--untied",
                "--tokenizer",
                &llama2,
            ],
        ),
    ];
    for (name, args) in models {
        let dir = tmp.path().join(name);
        synth(&dir, &args);
        converts_like_llama_cpp(&dir, tmp.path(), name);
    }
}

/// `smelt convert` of the checkpoint `dir` equals `convert_hf_to_gguf.py`'s output byte for byte
/// in every output type, and gguf-py reads both alike.
fn converts_like_llama_cpp(dir: &Path, tmp: &Path, name: &str) {
    let convert_py = llama_ref().join("llama.cpp/convert_hf_to_gguf.py");
    for t in ["f32", "f16", "bf16", "q8_0"] {
        let ours = tmp.join(format!("{name}-smelt-{t}.gguf"));
        let theirs = tmp.join(format!("{name}-ref-{t}.gguf"));
        convert_ok(dir, &ours, t);
        let o = Command::new(ref_python())
            .args([
                convert_py.to_str().unwrap(),
                dir.to_str().unwrap(),
                "--outfile",
                theirs.to_str().unwrap(),
                "--outtype",
                t,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "convert_hf_to_gguf.py failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{name} {t}: smelt and convert_hf_to_gguf.py differ"
        );
        assert_eq!(gguf_py_reads(&ours), gguf_py_reads(&theirs));
    }
}

/// Qwen3, Llama 3.1, Gemma 3 and Phi-3 as transformers' own classes write them
/// ([`common::FAMILIES`]: bf16, tied; Qwen3's explicit head width, Llama 3's rope scaling and
/// tokenizer, Gemma's +1 norms and sliding window, Phi-3's fused tensors and LongRoPE, and a
/// Phi-3 without LongRoPE): byte-identical to the converter in every type, so llama.cpp runs smelt's files exactly as its own
/// (tests/interop_eval.rs compares the logits).
#[test]
#[ignore = "needs ../shared and the llama.cpp reference (WITH_CONVERT=1)"]
fn families_from_transformers_convert_like_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::families() {
        let dir = tmp.path().join(family);
        common::family_tiny(&dir, family);
        converts_like_llama_cpp(&dir, tmp.path(), family);
    }
    if common::families().contains(&"phi3") {
        // Phi-3 without LongRoPE: no factors, no attention factor.
        let dir = tmp.path().join("phi3-plain");
        let vocab = common::llama_ref().join("llama.cpp/models/ggml-vocab-gpt-2.gguf");
        common::hf_tiny(
            &dir,
            "Phi3ForCausalLM",
            common::phi3_config(false),
            &vocab,
            0.5,
        );
        converts_like_llama_cpp(&dir, tmp.path(), "phi3-plain");
    }
}

/// Phi-3's own SentencePiece loader (Phi-3 and Phi-3.5 ship a `tokenizer.model`): added tokens
/// from `tokenizer_config.json` and `tokenizer.json` are control tokens only when marked special
/// (`<|placeholder|>` stays user-defined, unlike the common loader's rule) and keep their `▁`.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference (WITH_CONVERT=1)"]
fn phi3_sentencepiece_vocab_converts_like_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("phi3-spm");
    common::phi3_sentencepiece(&dir);
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["added_tokens_decoder"] = serde_json::json!({
        "1": {"content": "<s>", "special": true},
        "300": {"content": "\u{2581}hello", "special": false},
        "301": {"content": "<|end|>", "special": true},
        "302": {"content": "<|placeholder1|>", "special": false},
    });
    std::fs::write(&config_path, config.to_string()).unwrap();
    let json_path = dir.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    json["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 303, "content": "<|user|>", "special": true}));
    std::fs::write(&json_path, json.to_string()).unwrap();
    converts_like_llama_cpp(&dir, tmp.path(), "phi3-spm");
}

#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn gguf_py_reads_every_converted_real_model() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    for (model, t) in [
        ("stories260K", "q8_0"),
        ("stories260K-bf16", "bf16"),
        ("tinystories-3M", "f16"),
    ] {
        let out = tmp.path().join(format!("{model}-{t}.gguf"));
        convert_ok(&s.join("assets/models").join(model), &out, t);
        let counts = gguf_py_reads(&out);
        let n_tensors: usize = counts.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(
            n_tensors,
            if model == "tinystories-3M" { 38 } else { 47 },
            "{model}: {counts}"
        );
    }
}

#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn llama_cpp_generates_the_same_text_from_smelt_files() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    for (model, t) in [
        ("stories260K", "f32"),
        ("stories260K", "q8_0"),
        ("tinystories-3M", "f16"),
    ] {
        let out = tmp.path().join(format!("{model}-{t}.gguf"));
        convert_ok(&s.join("assets/models").join(model), &out, t);
        let ours = llama_complete(&out);
        let theirs = llama_complete(
            &s.join("reference")
                .join(model)
                .join(format!("{model}-{t}.gguf")),
        );
        assert!(
            ours.trim_start().starts_with("Once upon a time") && ours.len() > 60,
            "{model} {t}: {ours:?}"
        );
        assert_eq!(ours, theirs, "{model} {t}");
    }
}

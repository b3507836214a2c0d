//! Tier 2: smelt's tokenizers give llama.cpp's ids on llama.cpp's own tokenizer test vectors
//! (`../shared/assets/llamacpp-vocab/*.inp/.out`, from `test-tokenizer-0`: no BOS, specials not
//! parsed) and on the reference models' vocabulary.

mod common;

use std::path::Path;

use eval::tokenizer::Tokenizer;
use formats::gguf::GgufFile;

fn check_vectors(vocab: &str) {
    check_vectors_in(&common::shared().join("assets/llamacpp-vocab"), vocab);
}

/// [`check_vectors`] for a vocabulary of the reference tree's `llama.cpp/models` folder (the BPE
/// vocabularies of newer families: Llama 3, Qwen2/Qwen3).
fn check_reference_vectors(vocab: &str) {
    check_vectors_in(&common::llama_ref().join("llama.cpp/models"), vocab);
}

fn check_vectors_in(dir: &Path, vocab: &str) {
    let gguf = dir.join(vocab);
    let file = GgufFile::open(&gguf).unwrap();
    let tok = Tokenizer::from_gguf(&file.metadata, &gguf).unwrap();
    let inp = std::fs::read_to_string(dir.join(format!("{vocab}.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("{vocab}.out"))).unwrap();
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = out.lines().collect();
    let mut failures = Vec::new();
    for (i, text) in inputs.iter().enumerate().take(expected.len()) {
        let ids: Vec<u32> = expected[i]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let got = tok.tokenize(text, false, false);
        if got != ids {
            failures.push(format!("{text:?}: expected {ids:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} of {} differ:\n{}",
        failures.len(),
        expected.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "tier 2: needs ../shared"]
fn llama_spm_vectors() {
    check_vectors("ggml-vocab-llama-spm.gguf");
}

#[test]
#[ignore = "tier 2: needs ../shared"]
fn phi3_spm_vectors() {
    check_vectors("ggml-vocab-phi-3.gguf");
}

#[test]
#[ignore = "tier 2: needs ../shared"]
fn gpt2_bpe_vectors() {
    check_vectors("ggml-vocab-gpt-2.gguf");
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn llama3_bpe_vectors() {
    check_reference_vectors("ggml-vocab-llama-bpe.gguf");
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn qwen2_bpe_vectors() {
    check_reference_vectors("ggml-vocab-qwen2.gguf");
}

/// Token ids of `text_file` under `vocab` from llama-tokenize (BOS added as llama-perplexity does).
fn llama_tokenize(vocab: &Path, text_file: &Path) -> Vec<u32> {
    let out = std::process::Command::new(common::llama_ref().join("bin/llama-tokenize"))
        .args([
            "-m".as_ref(),
            vocab.as_os_str(),
            "-f".as_ref(),
            text_file.as_os_str(),
        ])
        .args(["--ids", "--log-disable"])
        .output()
        .expect("llama-tokenize runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let list = text.trim().trim_start_matches('[').trim_end_matches(']');
    list.split(", ").map(|v| v.parse().unwrap()).collect()
}

/// Whole evaluation texts, tokenized by both, must give identical id lists: the perplexity
/// chunks depend on every single id.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn evaluation_texts_tokenize_like_llama_tokenize() {
    let shared = common::shared();
    let cases = [
        (
            "reference/stories260K/stories260K-f32.gguf",
            "assets/text/wiki.test.raw",
        ),
        (
            "reference/stories260K/stories260K-f32.gguf",
            "assets/text/tinystories-eval.txt",
        ),
        (
            "reference/tinystories-3M/tinystories-3M-f32.gguf",
            "assets/text/tinyshakespeare.txt",
        ),
        (
            "assets/llamacpp-vocab/ggml-vocab-llama-spm.gguf",
            "assets/text/wiki.test.raw",
        ),
        (
            "assets/llamacpp-vocab/ggml-vocab-gpt-2.gguf",
            "assets/text/wiki.test.raw",
        ),
    ];
    for (vocab, text) in cases {
        let vocab = shared.join(vocab);
        let text = shared.join(text);
        let file = GgufFile::open(&vocab).unwrap();
        let tok = Tokenizer::from_gguf(&file.metadata, &vocab).unwrap();
        let ours = tok.tokenize(&std::fs::read_to_string(&text).unwrap(), true, false);
        let theirs = llama_tokenize(&vocab, &text);
        let first_diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert!(
            ours == theirs,
            "{} on {}: {} vs {} tokens, first difference at {first_diff:?}",
            vocab.display(),
            text.display(),
            ours.len(),
            theirs.len()
        );
    }
}

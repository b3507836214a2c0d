//! Helpers shared by smelt's integration tests.
//!
//! Two tiers: tests that need nothing but the repository run under plain `cargo test`; tests that
//! need `../shared` (or `$SMELT_SHARED`) and the llama.cpp reference are `#[ignore]`d there and run by
//! `.ci/run` with `--include-ignored`, where a missing `../shared` or reference build fails them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The smelt binary under test.
pub fn smelt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_smelt"))
}

/// Runs smelt with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    smelt().args(args).output().expect("smelt runs")
}

/// `../shared` (or `$SMELT_SHARED`); panics when it is missing, so tier-2 tests fail, not skip.
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("SMELT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        dir.join("reference").is_dir(),
        "shared material not found at {} (set SMELT_SHARED)",
        dir.display()
    );
    dir
}

/// The llama.cpp reference folder built by `../shared/tools/llama-ref`; panics when absent.
pub fn llama_ref() -> PathBuf {
    let out = Command::new(shared().join("tools/llama-ref"))
        .arg("--path")
        .output()
        .expect("llama-ref runs");
    assert!(
        out.status.success(),
        "llama.cpp reference is not built: run ../shared/tools/llama-ref"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Python of the reference venv (gguf, numpy; torch and transformers with WITH_CONVERT=1).
pub fn ref_python() -> PathBuf {
    llama_ref().join("venv/bin/python")
}

/// Asserts `out` failed with exit code 2 and a one-line error that mentions `needle`.
pub fn assert_bad_input(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line of error, got: {stderr}");
    assert!(lines[0].starts_with("smelt: error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "error should mention {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Files in `dir` (names), to check that nothing partial was left behind.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `smelt convert INPUT -o OUTPUT --outtype OUTTYPE`, ready to run or to add environment to.
pub fn convert_command(input: &Path, output: &Path, outtype: &str) -> Command {
    let mut cmd = smelt();
    cmd.arg("convert")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--outtype", outtype]);
    cmd
}

/// Runs `smelt convert` and asserts that it succeeded.
pub fn convert_ok(input: &Path, output: &Path, outtype: &str) {
    let o = convert_command(input, output, outtype)
        .output()
        .expect("smelt runs");
    assert!(
        o.status.success(),
        "smelt convert {}: {}",
        input.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `smelt quantize ARGS…` in `cwd` and asserts that it succeeded.
pub fn quantize_ok(cwd: &Path, args: &[&str]) {
    let o = smelt()
        .current_dir(cwd)
        .arg("quantize")
        .args(args)
        .output()
        .expect("smelt runs");
    assert!(
        o.status.success(),
        "smelt quantize {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `smelt ARGS… --json` in `cwd`, asserting success, and parses its JSON output.
pub fn smelt_json(cwd: &Path, args: &[&str]) -> serde_json::Value {
    let out = smelt()
        .current_dir(cwd)
        .args(args)
        .arg("--json")
        .output()
        .expect("smelt runs");
    assert!(
        out.status.success(),
        "smelt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// `smelt dev synth` arguments for a model slow enough (4 blocks of 512) that a test can kill a
/// run over it part-way through.
pub const SLOW_MODEL: [&str; 10] = [
    "--hidden",
    "512",
    "--ffn",
    "1536",
    "--layers",
    "4",
    "--heads",
    "8",
    "--kv-heads",
    "4",
];

/// `smelt dev synth OUT ARGS…`, asserting success.
pub fn synth(out: &Path, args: &[&str]) {
    let o = smelt()
        .args(["dev", "synth"])
        .arg(out)
        .args(args)
        .output()
        .expect("smelt runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Hex SHA-256 of a file.
pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A command for llama.cpp's tool `name` (`llama-perplexity`). On CPUs with AMX its weight
/// repacking is turned off: there llama.cpp moves k-quant matrices into its AMX buffers, whose
/// `ggml_backend_amx_mul_mat` crashes (SIGSEGV on any Q4_K_M, seen at 0c1e57098 in these
/// containers); without repacking it multiplies with the plain `vec_dot` kernels smelt reproduces.
pub fn llama_tool(name: &str) -> Command {
    let mut cmd = Command::new(llama_ref().join("bin").join(name));
    // Where a case makes llama.cpp abort, its backtrace forks a debugger out of a multithreaded
    // process; one such child hung for 10 minutes in CI.
    cmd.env("GGML_NO_BACKTRACE", "1");
    if !llama_repacks() {
        cmd.env("LLAMA_ARG_REPACK", "0");
    }
    cmd
}

/// Whether [`llama_tool`] leaves llama.cpp's weight repacking on (everywhere but on AMX CPUs).
pub fn llama_repacks() -> bool {
    !std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" amx_int8"))
}

/// Greedy completion by llama.cpp. llama-completion prints through an asynchronous log thread that
/// can lose its last lines when the process exits under load, so the longest of six runs counts.
pub fn llama_complete(model: &Path) -> String {
    (0..6)
        .map(|_| {
            let o = llama_tool("llama-completion")
                .arg("-m")
                .arg(model)
                .args([
                    "-p",
                    "Once upon a time",
                    "-n",
                    "32",
                    "--temp",
                    "0",
                    "-no-cnv",
                    "-t",
                    "2",
                    "--no-warmup",
                ])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "llama-completion failed on {}: {}",
                model.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8(o.stdout).unwrap()
        })
        .max_by_key(String::len)
        .unwrap()
}

/// Greedy completion by llama.cpp's `llama-simple` (32 tokens), which prints with plain stdio and
/// so never loses output.
pub fn llama_simple(model: &Path) -> String {
    let o = Command::new(llama_ref().join("bin/llama-simple"))
        .arg("-m")
        .arg(model)
        .args(["-n", "32", "Once upon a time"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "llama-simple failed on {}: {}",
        model.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// llama-perplexity's final PPL of `model` on `text`. Its asynchronous log thread can lose the
/// last lines when the process exits under load: then the running value after the last of the
/// announced chunks (the same number) is taken, and a run without either is repeated.
pub fn llama_perplexity(model: &Path, text: &Path, args: &[&str]) -> f64 {
    (0..6)
        .find_map(|_| try_llama_perplexity(model, text, args))
        .unwrap_or_else(|| {
            panic!(
                "llama-perplexity never printed a final estimate for {}",
                model.display()
            )
        })
}

fn try_llama_perplexity(model: &Path, text: &Path, args: &[&str]) -> Option<f64> {
    let out = llama_tool("llama-perplexity")
        .arg("-m")
        .arg(model)
        .arg("-f")
        .arg(text)
        .args(args)
        .args(["-t", "2"])
        .output()
        .expect("llama-perplexity runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "llama-perplexity failed on {}: {all}",
        model.display()
    );
    if let Some(line) = all.lines().find(|l| l.contains("Final estimate: PPL =")) {
        return line
            .split("PPL =")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok();
    }
    // The running value after the last announced chunk: `[N]12.3456,` (the same 4 decimals).
    let chunks = all
        .split("calculating perplexity over ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let running = all.split(&format!("[{chunks}]")).nth(1)?;
    running.split(',').next()?.trim().parse().ok()
}

/// Splits the GGUF `src` into `n` shards `PREFIX-0000i-of-0000n.gguf` as `llama-gguf-split
/// --split` lays them out (all metadata in the first; `split.*` keys in each; tensors in order,
/// spread evenly), returning their paths.
pub fn split_gguf(src: &Path, prefix: &Path, n: usize) -> Vec<PathBuf> {
    use formats::gguf::{split, GgufFile, GgufWriter, Metadata, Value};
    let f = GgufFile::open(src).unwrap();
    let per = f.tensors.len().div_ceil(n);
    let mut paths = Vec::new();
    for (i, group) in f.tensors.chunks(per).enumerate() {
        let mut md = if i == 0 {
            f.metadata.clone()
        } else {
            Metadata::new()
        };
        md.set(split::SPLIT_NO, Value::U16(i as u16));
        md.set(split::SPLIT_COUNT, Value::U16(n as u16));
        md.set(
            split::SPLIT_TENSORS_COUNT,
            Value::I32(f.tensors.len() as i32),
        );
        let infos: Vec<_> = group.iter().map(|t| t.info.clone()).collect();
        let path = split::shard_path(prefix, i, n);
        let mut w = GgufWriter::create(&path, &md, &infos).unwrap();
        for t in group {
            w.write(f.data(t)).unwrap();
        }
        w.finish().unwrap();
        paths.push(path);
    }
    assert_eq!(
        paths.len(),
        n,
        "{} tensors do not fill {n} shards",
        f.tensors.len()
    );
    paths
}

/// A tiny random checkpoint built by transformers' own `hf_arch` class (`scripts/hf_tiny.py`)
/// from `config` (its config class's arguments) in `dir`, with the BPE tokenizer of the llama.cpp
/// vocabulary `vocab` (GPT-2's, or Llama 3's for `ggml-vocab-llama-bpe.gguf`) as `smelt dev
/// synth` rebuilds it; `vocab_size` is set to the vocabulary's. Matrices are drawn with standard
/// deviation `spread / √row` (larger: a more confident model).
pub fn hf_tiny(dir: &Path, hf_arch: &str, config: serde_json::Value, vocab: &Path, spread: f32) {
    let n_vocab = formats::gguf::GgufFile::open(vocab)
        .unwrap()
        .metadata
        .get("tokenizer.ggml.tokens")
        .map(|t| match t {
            formats::gguf::Value::Array(_, items) => items.len(),
            _ => 0,
        })
        .unwrap();
    let mut config = config;
    config["vocab_size"] = serde_json::json!(n_vocab);
    let tokenizer = format!("gpt2:{}", vocab.display());
    hf_checkpoint(dir, hf_arch, config, &tokenizer, &spread.to_string());
}

/// A Qwen3 (transformers' `Qwen3ForCausalLM`) carrying stories260K's trained weights and
/// tokenizer (its q/k norms, which Llama has not, set to 1): a model of the family that predicts
/// text like a trained one (perplexity 49 on tinystories-eval), for tests a random model cannot
/// serve, such as distilling a pruned student back towards it.
pub fn qwen3_from_stories260k(dir: &Path) {
    let stories = shared().join("assets/models/stories260K");
    let config = serde_json::json!({
        "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8, "vocab_size": 512,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
    });
    let tokenizer = format!("copy:{}", stories.display());
    let weights = format!("from:{}", stories.display());
    hf_checkpoint(dir, "Qwen3ForCausalLM", config, &tokenizer, &weights);
}

/// A small Gemma 3 (transformers' `Gemma3ForCausalLM`, random weights of spread 1, a confident
/// model) with stories260K's tokenizer: hidden 64, six blocks (five local with a 32-position
/// window, one global), 8 heads of 8 over 4 key/value heads — quick to train, for distillation.
pub fn gemma3_small(dir: &Path) {
    let stories = shared().join("assets/models/stories260K");
    let config = serde_json::json!({
        "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 6,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8,
        "query_pre_attn_scalar": 8, "sliding_window": 32, "vocab_size": 512,
        "max_position_embeddings": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
    });
    let tokenizer = format!("copy:{}", stories.display());
    hf_checkpoint(dir, "Gemma3ForCausalLM", config, &tokenizer, "1.0");
}

/// A small Mixtral (transformers' `MixtralForCausalLM`, random weights of spread 1) with
/// stories260K's tokenizer: hidden 64, four blocks of 8 experts of width 64 with 2 per token, 8
/// heads of 8 over 4 key/value heads — quick to train, for distillation.
pub fn mixtral_small(dir: &Path) {
    let stories = shared().join("assets/models/stories260K");
    let config = serde_json::json!({
        "hidden_size": 64, "intermediate_size": 64, "num_local_experts": 8,
        "num_experts_per_tok": 2, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2,
    });
    let tokenizer = format!("copy:{}", stories.display());
    hf_checkpoint(dir, "MixtralForCausalLM", config, &tokenizer, "1.0");
}

/// A small Phi-3 (transformers' `Phi3ForCausalLM`, random weights) with stories260K's
/// SentencePiece tokenizer (`tokenizer_class` LlamaTokenizer, as Phi-3 and Phi-3.5 ship theirs).
pub fn phi3_sentencepiece(dir: &Path) {
    let stories = shared().join("assets/models/stories260K");
    let config = serde_json::json!({
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    });
    let tokenizer = format!("copy:{}", stories.display());
    hf_checkpoint(dir, "Phi3ForCausalLM", config, &tokenizer, "0.5");
}

/// `scripts/hf_tiny.py` on a folder that `smelt dev synth --tokenizer TOKENIZER` started.
fn hf_checkpoint(
    dir: &Path,
    hf_arch: &str,
    config: serde_json::Value,
    tokenizer: &str,
    weights: &str,
) {
    synth(
        dir,
        &[
            "--arch",
            "LlamaForCausalLM",
            "--hidden",
            "64",
            "--ffn",
            "64",
            "--layers",
            "1",
            "--tokenizer",
            tokenizer,
        ],
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf_tiny.py");
    let o = Command::new(ref_python())
        .arg(script)
        .arg(dir)
        .arg(hf_arch)
        .arg(config.to_string())
        .arg("bfloat16")
        .arg(weights)
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "hf_tiny.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The families of the architecture tests, each as transformers' own class builds it (bf16,
/// hidden 256, GQA, tied embeddings as the small models of both families ship):
/// - `qwen3`: `Qwen3ForCausalLM`, head width 128 ≠ 256 / 4 (explicit `head_dim`), q/k norms,
///   GPT-2's BPE vocabulary;
/// - `llama3`: `LlamaForCausalLM` with Llama 3.1's rope scaling (`rope_type = llama3`, factor 32,
///   base 500000) and Llama 3's own tokenizer (`ggml-vocab-llama-bpe.gguf`, 128256 tokens);
/// - `gemma3`: `Gemma3ForCausalLM`, six blocks (five local with a 32-position sliding window and
///   RoPE base 10000, one global with base 10⁶ and linear rope scaling 8, as Gemma 3 4B ships),
///   head width 128, a final logit soft-cap of 15, GPT-2's BPE vocabulary (the converter's
///   fallback without a `tokenizer.model`).
/// - `phi3`: `Phi3ForCausalLM` as Phi-4-mini is shaped: fused `qkv_proj` and `gate_up_proj`,
///   partial rotary (0.75 of each head), LongRoPE factors with an original context of 256, so
///   that evaluating at 512 takes the long factors and their attention factor, tied, GPT-2's BPE
///   vocabulary (`tokenizer_class` GPT2Tokenizer, as Phi-4-mini ships).
/// - `qwen3moe`: `Qwen3MoeForCausalLM`, 8 experts of width 256 with 2 used per token (the router's
///   weights renormalised, as llama.cpp computes it), Qwen3's attention, GPT-2's vocabulary.
/// - `mixtral`: `MixtralForCausalLM` (written as `llama` with experts), 8 experts of width 512,
///   2 per token, an untied output, GPT-2's vocabulary.
pub const FAMILIES: [&str; 6] = ["qwen3", "llama3", "gemma3", "phi3", "qwen3moe", "mixtral"];

/// The `phi3` family's config (hidden 256, two blocks, 4 query / 2 key-value heads of 64), with
/// LongRoPE (24 long and 24 short factors for the 48 rotated dimensions; original context 256,
/// extended to 16384) or without rope scaling.
pub fn phi3_config(longrope: bool) -> serde_json::Value {
    let mut config = serde_json::json!({
        "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 16384,
        "original_max_position_embeddings": 256, "rope_theta": 10000.0,
        "partial_rotary_factor": 0.75, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
        "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256,
    });
    if longrope {
        let long: Vec<f64> = (0..24).map(|i| 1.0 + 0.5 * i as f64).collect();
        let short: Vec<f64> = (0..24).map(|i| 1.0 + 0.05 * i as f64).collect();
        config["rope_scaling"] =
            serde_json::json!({"type": "longrope", "long_factor": long, "short_factor": short});
    }
    config
}

/// Whether the test family `name` is a mixture of experts.
pub fn is_moe(name: &str) -> bool {
    matches!(name, "qwen3moe" | "mixtral")
}

/// [`FAMILIES`], or those of them named in `SMELT_FAMILIES` (comma-separated), to rerun one
/// family's checks while working on it.
pub fn families() -> Vec<&'static str> {
    let only = std::env::var("SMELT_FAMILIES").unwrap_or_default();
    FAMILIES
        .into_iter()
        .filter(|f| only.is_empty() || only.split(',').any(|o| o == *f))
        .collect()
}

/// Builds the checkpoint of family `name` (one of [`FAMILIES`]) in `dir`.
pub fn family_tiny(dir: &Path, name: &str) {
    let spread = 0.5;
    let models = llama_ref().join("llama.cpp/models");
    match name {
        "qwen3" => hf_tiny(
            dir,
            "Qwen3ForCausalLM",
            serde_json::json!({
                "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128,
                "max_position_embeddings": 4096, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": true, "bos_token_id": 50256, "eos_token_id": 50256,
            }),
            &models.join("ggml-vocab-gpt-2.gguf"),
            spread,
        ),
        "llama3" => hf_tiny(
            dir,
            "LlamaForCausalLM",
            serde_json::json!({
                "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2,
                "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": 128001,
                "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            }),
            &models.join("ggml-vocab-llama-bpe.gguf"),
            spread,
        ),
        "gemma3" => hf_tiny(
            dir,
            "Gemma3ForCausalLM",
            serde_json::json!({
                "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 128,
                "query_pre_attn_scalar": 128, "sliding_window": 32,
                "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                "rope_local_base_freq": 10000.0, "rms_norm_eps": 1e-6,
                "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                "final_logit_softcapping": 15.0,
                "tie_word_embeddings": true, "bos_token_id": 50256, "eos_token_id": 50256,
            }),
            &models.join("ggml-vocab-gpt-2.gguf"),
            spread,
        ),
        "phi3" => hf_tiny(
            dir,
            "Phi3ForCausalLM",
            phi3_config(true),
            &models.join("ggml-vocab-gpt-2.gguf"),
            spread,
        ),
        "qwen3moe" => hf_tiny(
            dir,
            "Qwen3MoeForCausalLM",
            serde_json::json!({
                "hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 256,
                "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 64, "max_position_embeddings": 4096, "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "bos_token_id": 50256,
                "eos_token_id": 50256,
            }),
            &models.join("ggml-vocab-gpt-2.gguf"),
            spread,
        ),
        "mixtral" => hf_tiny(
            dir,
            "MixtralForCausalLM",
            serde_json::json!({
                "hidden_size": 256, "intermediate_size": 512, "num_local_experts": 8,
                "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 4096,
                "rope_theta": 1000000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": false,
                "bos_token_id": 50256, "eos_token_id": 50256,
            }),
            &models.join("ggml-vocab-gpt-2.gguf"),
            spread,
        ),
        other => panic!("no test family {other}"),
    }
}

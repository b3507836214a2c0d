//! Tier 2: smelt's forward pass against llama.cpp's own (the reference build's static libraries,
//! driven by `scripts/llama_logits.cpp`): the logits of a short (one-row attention kernel) and a
//! longer prompt (tiled kernel) are bit-identical to llama.cpp's for the f32 reference models,
//! a synthetic qwen2 (biases, NeoX RoPE, heads of 64) and an untied GQA model (heads of 128) (see
//! [`tolerance`]), and for tinystories-3M's quantized and BF16 files (see
//! [`quantized_tolerance`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use eval::forward::Session;
use eval::model::Model;
use eval::tokenizer::Tokenizer;

/// Compiles `scripts/llama_logits.cpp` against the reference build into `dir`.
fn build_llama_logits(dir: &Path) -> PathBuf {
    let src = common::llama_ref().join("llama.cpp");
    let lib = src.join("build");
    let exe = dir.join("llama_logits");
    let out = Command::new("g++")
        .args(["-O1", "-std=c++17"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_logits.cpp"))
        .arg(format!("-I{}", src.join("include").display()))
        .arg(format!("-I{}", src.join("ggml/include").display()))
        .arg(lib.join("src/libllama.a"))
        .arg(lib.join("ggml/src/libggml.a"))
        .arg(lib.join("ggml/src/libggml-cpu.a"))
        .arg(lib.join("ggml/src/libggml-base.a"))
        .args(["-fopenmp", "-lpthread", "-ldl", "-o"])
        .arg(&exe)
        .output()
        .expect("g++ runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn llama_logits(exe: &Path, model: &Path, tokens: &[u32], out: &Path) -> Vec<f32> {
    let o = Command::new(exe)
        .arg(model)
        .arg(out)
        .args(tokens.iter().map(u32::to_string))
        .output()
        .expect("llama_logits runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Max-abs difference of all logits of `prompt` (whole prompt in one pass, and again fed in two
/// parts through the key/value cache; a single-pass session must give the one pass's bits).
fn compare(exe: &Path, model_path: &Path, prompt: &str, tmp: &Path) -> f32 {
    let check_cache = prompt.len() > SHORT_PROMPT.len();
    let model = Model::open(model_path).unwrap();
    let tok = Tokenizer::from_gguf(&model.file().metadata, model_path).unwrap();
    let tokens = tok.tokenize(prompt, true, false);
    assert!(tokens.len() >= 4, "prompt too short: {tokens:?}");
    let theirs = llama_logits(exe, model_path, &tokens, &tmp.join("logits.f32"));
    // llama_logits.cpp's context: the prompt, at least 512.
    let n_ctx = tokens.len().max(512);
    let ours = Session::new(&model, 1, n_ctx).forward(&[&tokens], 0, None);
    assert_eq!(ours.len(), theirs.len());
    let single_pass = Session::single_pass(&model, 1, n_ctx).forward(&[&tokens], 0, None);
    assert!(
        single_pass == ours,
        "{}: a single-pass session (no key/value cache kept) gives other logits",
        model_path.display()
    );
    if std::env::var_os("SMELT_DEBUG_LOGITS").is_some() {
        let nv = model.hparams.n_vocab;
        for (i, (a, b)) in ours.chunks(nv).zip(theirs.chunks(nv)).enumerate() {
            eprintln!(
                "pos {i}: max|Δ| {:e}, max|logit| {}",
                max_abs(a, b),
                b.iter().fold(0f32, |m, v| m.max(v.abs()))
            );
        }
    }
    if !check_cache {
        return max_abs(&ours, &theirs);
    }
    let mut session = Session::new(&model, 1, n_ctx);
    let half = tokens.len() / 2;
    let mut stepped = session.forward(&[&tokens[..half]], 0, None);
    stepped.extend(session.forward(&[&tokens[half..]], 0, None));
    assert!(
        tokens.len() - half >= 64 && half >= 64,
        "{} tokens: each half must take the tiled kernel",
        tokens.len()
    );
    let cached = max_abs(&stepped, &ours);
    assert!(
        cached < 1e-4,
        "{}: KV-cache pass differs from one pass by {cached}",
        model_path.display()
    );
    max_abs(&ours, &theirs)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// About 150 tokens: long enough that llama.cpp takes its tiled f32 attention kernel (64+ query
/// rows) for the whole prompt and for each half fed through the cache.
const PROMPT: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, Max. One day, Lily saw a big red ball under a tree. She ran to get it, but Max was faster. He took the ball in his mouth and ran away. Lily laughed and chased him around the park until they were both tired. Then they sat under the tree and ate apples.";

/// Under 64 tokens: llama.cpp's one-row-at-a-time kernel with f16 accumulators.
const SHORT_PROMPT: &str = "Once upon a time, there was a little girl named Lily.";

/// Under 8 tokens: ggml multiplies k-quants with `vec_dot` instead of its tiled kernel.
const TINY_PROMPT: &str = "Once upon a time";

/// How far smelt's logits may be from llama.cpp's. On an AVX-512 machine (where the reference
/// build's `-march=native` takes tinyBLAS's 16-lane kernels, which smelt's float products, RoPE,
/// SwiGLU and flash-attention kernels reproduce operation for operation) they must be identical;
/// elsewhere llama.cpp sums in another order, and an f16 key/value cache amplifies last-bit
/// differences in these tiny-head models up to a few 1e-3.
fn tolerance() -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 0.0;
    }
    5e-3
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn f32_reference_logits_match_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    let shared = common::shared();
    for model in [
        "reference/stories260K/stories260K-f32.gguf",
        "reference/tinystories-3M/tinystories-3M-f32.gguf",
    ] {
        for prompt in [PROMPT, SHORT_PROMPT] {
            let d = compare(&exe, &shared.join(model), prompt, tmp.path());
            eprintln!(
                "{model}, {} bytes of prompt: max |Δlogit| = {d:e}",
                prompt.len()
            );
            assert!(
                d <= tolerance_for_rows(model.contains("stories260K")),
                "{model}: max |Δlogit| = {d}"
            );
        }
    }
}

/// How far smelt's logits may be from llama.cpp's on quantized and BF16 files. On CPUs with
/// AVX-512, VNNI and AVX512-BF16 smelt reproduces the reference build's kernels for these types
/// (tiled k-quants, `vec_dot`, tinyBLAS's Q8_0/Q4_0/Q5_0 and BF16 tiles) operation for operation,
/// so the logits must be identical. Elsewhere llama.cpp's kernels round in other orders, and each
/// 8-bit activation level that a last-bit difference flips moves a logit by up to about 1 %.
fn quantized_tolerance() -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bf16")
    {
        return 0.0;
    }
    5e-2
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn quantized_and_bf16_logits_match_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    let dir = common::shared().join("reference/tinystories-3M");
    // BF16 has no reference file: smelt's own rounding of the f32 one (byte-identical to
    // llama-quantize's, checked by the quantize interop tests).
    let bf16 = tmp.path().join("tinystories-3M-BF16.gguf");
    common::quantize_ok(
        tmp.path(),
        &[
            dir.join("tinystories-3M-f32.gguf").to_str().unwrap(),
            bf16.to_str().unwrap(),
            "BF16",
        ],
    );
    // Q4_K_M: Q4_K and Q6_K; Q3_K_M: Q3_K, Q4_K, Q5_K; Q2_K: Q2_K, Q3_K, Q4_K; Q4_0 (tinyBLAS);
    // Q5_1 (Q8_1 activations and their sums).
    let files = ["Q4_K_M", "Q3_K_M", "Q2_K", "Q4_0", "Q5_1"]
        .map(|t| dir.join(format!("tinystories-3M-{t}.gguf")));
    for model in files.iter().chain([&bf16]) {
        for prompt in [PROMPT, TINY_PROMPT] {
            let d = compare(&exe, model, prompt, tmp.path());
            let name = model.file_name().unwrap().to_string_lossy();
            eprintln!(
                "{name}, {} bytes of prompt: max |Δlogit| = {d:e}",
                prompt.len()
            );
            assert!(d <= quantized_tolerance(), "{name}: max |Δlogit| = {d}");
        }
    }
}

/// The codebook types and IQ4_XS from 8 activation rows up (a 150-token prompt): ggml's tiled
/// kernel multiplies them in integers, and so does smelt, so the logits are llama.cpp's. (Below 8
/// rows ggml's `vec_dot`s have type-specific arithmetic that smelt does not reproduce: it decodes
/// these types to f32 there.)
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn codebook_logits_match_llama_cpp_from_8_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    let dir = common::shared().join("reference/tinystories-3M");
    for t in ["IQ2_XXS", "IQ1_S", "IQ1_M", "IQ3_XXS", "IQ4_XS"] {
        let model = dir.join(format!("tinystories-3M-imx-{t}.gguf"));
        let d = compare(&exe, &model, PROMPT, tmp.path());
        eprintln!("{t}: max |Δlogit| = {d:e}");
        assert!(d <= quantized_tolerance(), "{t}: max |Δlogit| = {d}");
    }
}

/// [`tolerance`], except for a model with a row length that is not a multiple of 16
/// (stories260K's FFN of 172) on CPUs with AVX512-FP16: llama.cpp built for such a CPU (a
/// Sapphire Rapids Xeon, in session 10) sums those rows in an order smelt does not reproduce.
/// Measured there on synthetic Llamas: FFN 172 or hidden 72 differ by 1–2 ULP, FFN 168 and 176
/// are exact; the f16 key/value cache amplifies that to 2.9e-3 on stories260K. The compiled
/// leftover loops were not pinned down, so the bound is the non-AVX-512 one.
fn tolerance_for_rows(odd_rows: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if odd_rows && std::arch::is_x86_feature_detected!("avx512fp16") {
        return 5e-3;
    }
    tolerance()
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn synthetic_qwen2_and_untied_gqa_logits_match_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    let tokenizer = format!(
        "copy:{}",
        common::shared().join("assets/models/stories260K").display()
    );
    for (name, args) in [
        (
            "qwen2",
            vec![
                "--arch",
                "Qwen2ForCausalLM",
                "--hidden",
                "128",
                "--heads",
                "2",
                "--kv-heads",
                "1",
            ],
        ),
        (
            "llama-gqa-untied",
            vec![
                "--hidden",
                "512",
                "--heads",
                "4",
                "--kv-heads",
                "2",
                "--untied",
            ],
        ),
    ] {
        let dir = tmp.path().join(name);
        let mut all = args.clone();
        all.extend(["--ffn", "256", "--layers", "2", "--tokenizer", &tokenizer]);
        common::synth(&dir, &all);
        let gguf = tmp.path().join(format!("{name}.gguf"));
        common::convert_ok(&dir, &gguf, "f32");
        for prompt in [PROMPT, SHORT_PROMPT] {
            let d = compare(&exe, &gguf, prompt, tmp.path());
            eprintln!(
                "{name}, {} bytes of prompt: max |Δlogit| = {d:e}",
                prompt.len()
            );
            assert!(d <= tolerance(), "{name}: max |Δlogit| = {d}");
        }
    }
}

/// Copies the GGUF `src` to `dst` with a `rope_freqs.weight` tensor of `factors` added, as
/// `convert_hf_to_gguf.py` writes one for Llama 3's rope scaling.
fn with_rope_freqs(src: &Path, dst: &Path, factors: &[f32]) {
    use formats::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo};
    let f = GgufFile::open(src).unwrap();
    let mut infos: Vec<TensorInfo> = f.tensors.iter().map(|t| t.info.clone()).collect();
    infos.push(TensorInfo {
        name: "rope_freqs.weight".into(),
        dims: vec![factors.len() as u64],
        ggml_type: GgmlType::F32,
    });
    let mut w = GgufWriter::create(dst, &f.metadata, &infos).unwrap();
    for t in &f.tensors {
        w.write(f.data(t)).unwrap();
    }
    let bytes: Vec<u8> = factors.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.write(&bytes).unwrap();
    w.finish().unwrap();
}

/// Llama 3's rope scaling: the per-pair frequency divisors of a `rope_freqs` tensor change the
/// logits, and smelt's equal llama.cpp's with them.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn llama3_rope_factors_match_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    let src = common::shared().join("reference/tinystories-3M/tinystories-3M-f32.gguf");
    let head_dim = {
        let m = Model::open(&src).unwrap();
        m.hparams.rope_dims
    };
    // Llama 3.1's shape of factors: 1 for high frequencies, 8 for low, a smooth ramp between.
    let n = head_dim / 2;
    let factors: Vec<f32> = (0..n)
        .map(|i| match i * 3 / n {
            0 => 1.0,
            1 => 1.0 / (1.0 - (i as f32 / n as f32)).max(0.125),
            _ => 8.0,
        })
        .collect();
    let gguf = tmp.path().join("llama3.gguf");
    with_rope_freqs(&src, &gguf, &factors);
    let plain = Model::open(&src).unwrap();
    let scaled = Model::open(&gguf).unwrap();
    assert_eq!(scaled.rope_factors(512), Some(&factors[..]));
    let tok = Tokenizer::from_gguf(&plain.file().metadata, &src).unwrap();
    let tokens = tok.tokenize(PROMPT, true, false);
    let a = Session::new(&plain, 1, 512).forward(&[&tokens], 0, None);
    let b = Session::new(&scaled, 1, 512).forward(&[&tokens], 0, None);
    assert!(max_abs(&a, &b) > 1e-3, "the factors must matter here");
    for prompt in [PROMPT, SHORT_PROMPT] {
        let d = compare(&exe, &gguf, prompt, tmp.path());
        eprintln!(
            "llama3 rope factors, {} bytes: max |Δlogit| = {d:e}",
            prompt.len()
        );
        assert!(d <= tolerance(), "max |Δlogit| = {d}");
    }
}

/// Qwen3 (q/k RMSNorm per head, head width 128 ≠ n_embd / n_head, NeoX RoPE) and Llama 3.1
/// (rope_freqs from llama3 rope scaling, Llama 3's tokenizer), tied, built by transformers' own
/// classes ([`common::FAMILIES`]): f32 logits equal llama.cpp's; `smelt perplexity` of their F16
/// and Q4_K_M files is within 0.02 % of llama-perplexity's (the Q4_K_M gap, ~1.6e-4, is of the
/// size the Llama benchmark model shows too, 1.7e-4 in docs/PERFORMANCE.md); their pruned
/// outputs run in llama.cpp with smelt's PPL (0.1 %); `smelt release` takes their checkpoint
/// folders end to end.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference (WITH_CONVERT=1)"]
fn families_from_transformers_match_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_llama_logits(tmp.path());
    for family in common::families() {
        let dir = tmp.path().join(family);
        std::fs::create_dir(&dir).unwrap();
        check_family(&exe, &dir, family);
    }
}

fn check_family(exe: &Path, tmp: &Path, family: &str) {
    let ckpt = tmp.join("ckpt");
    common::family_tiny(&ckpt, family);
    let f32_gguf = tmp.join("f32.gguf");
    common::convert_ok(&ckpt, &f32_gguf, "f32");
    // GPT-2's BPE takes half as many tokens as SentencePiece for the long prompt: twice it.
    let long = format!("{PROMPT} {PROMPT}");
    for prompt in [long.as_str(), SHORT_PROMPT] {
        let d = compare(exe, &f32_gguf, prompt, tmp);
        eprintln!(
            "{family}, {} bytes of prompt: max |Δlogit| = {d:e}",
            prompt.len()
        );
        assert!(d <= tolerance(), "{family}: max |Δlogit| = {d}");
    }
    let text = common::shared().join("assets/text/wiki.test.raw");
    let f16_gguf = tmp.join("f16.gguf");
    common::convert_ok(&ckpt, &f16_gguf, "f16");
    let q4 = tmp.join("q4_k_m.gguf");
    common::quantize_ok(tmp, &[s(&f16_gguf), s(&q4), "Q4_K_M"]);
    for model in [&f16_gguf, &q4] {
        let args = ["-c", "512", "--chunks", "4"];
        let theirs = common::llama_perplexity(model, &text, &args);
        let mut ours_args = vec!["perplexity", s(model), "-f", s(&text)];
        ours_args.extend(args);
        let ours = common::smelt_json(tmp, &ours_args)["ppl"].as_f64().unwrap();
        let rel = (ours / theirs - 1.0).abs();
        eprintln!(
            "{}: PPL smelt {ours} llama {theirs} ({rel:e})",
            model.display()
        );
        // smelt's k-quant kernel sums super-blocks in the order of llama.cpp's repacked GEMM;
        // without repacking (AMX CPUs, common::llama_tool) llama.cpp's vec_dot order differs
        // in the last bits, which these random, near-uniform models amplify to ~3e-4.
        let bound = if common::llama_repacks() { 2e-4 } else { 4e-4 };
        assert!(rel < bound, "{}: {ours} vs {theirs}", model.display());
    }
    // Pruned by depth, FFN channels and head groups (and experts, with experts), each output runs
    // in llama.cpp with smelt's PPL.
    let calib = common::shared().join("assets/text/tinystories-calib.txt");
    let scored = ["-f", s(&calib), "-c", "128", "--chunks", "4"];
    let experts = [&["--method", "experts", "--ratio", "0.5"][..], &scored].concat();
    let moe_only = common::is_moe(family).then_some(("experts", experts));
    for (name, how) in [
        ("depth", vec!["--method", "depth", "--layers", "1"]),
        (
            "ffn",
            [&["--method", "ffn", "--ratio", "0.25"][..], &scored].concat(),
        ),
        (
            "heads",
            [&["--method", "heads", "--ratio", "0.5"][..], &scored].concat(),
        ),
    ]
    .into_iter()
    .chain(moe_only)
    {
        let out = tmp.join(format!("{name}.gguf"));
        let mut args = vec!["prune", s(&f32_gguf), s(&out)];
        args.extend(how);
        if family == "phi3" && name == "heads" {
            // llama.cpp's Phi-3 graph fixes the query width to the embedding's: refused.
            let o = common::run(&args);
            common::assert_bad_input(&o, "heads cannot be pruned from a phi3 model");
            continue;
        }
        if common::is_moe(family) && name == "ffn" {
            // A mixture of experts has no dense FFN channels to remove: refused.
            let o = common::run(&args);
            common::assert_bad_input(&o, "mixtures of 8 experts");
            continue;
        }
        common::smelt_json(tmp, &args);
        let ppl_args = ["-c", "512", "--chunks", "4"];
        let theirs = common::llama_perplexity(&out, &text, &ppl_args);
        let mut ours_args = vec!["perplexity", s(&out), "-f", s(&text)];
        ours_args.extend(ppl_args);
        let ours = common::smelt_json(tmp, &ours_args)["ppl"].as_f64().unwrap();
        eprintln!("{family} pruned ({name}): PPL smelt {ours} llama {theirs}");
        assert!(
            (ours / theirs - 1.0).abs() < 1e-3,
            "{name}: {ours} vs {theirs}"
        );
    }
    // The release job end to end from the checkpoint folder, every type gated and written.
    let shared = common::shared();
    let recipe = tmp.join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"{family}\"\nsource = \"{}\"\noutput = \"release\"\n\
             types = [\"Q8_0\", \"Q4_K_M\", \"IQ4_XS\"]\n\
             calibration = \"{}\"\nevaluation = \"{}\"\nctx = 128\nchunks = 4\n\
             [gates]\nmax_mean_kld = 0.5\n",
            ckpt.display(),
            calib.display(),
            shared.join("assets/text/tinystories-eval.txt").display()
        ),
    )
    .unwrap();
    common::smelt_json(tmp, &["release", s(&recipe)]);
    for ty in ["Q8_0", "Q4_K_M", "IQ4_XS"] {
        let file = tmp.join(format!("release/{family}-{ty}.gguf"));
        assert!(file.is_file(), "{} was not released", file.display());
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

//! Tier 1: `smelt perplexity` and `smelt imatrix` on synthetic models — determinism, thread
//! independence, the KL-divergence round trip, imatrix files smelt quantize reads back — and bad
//! input: a model whose metadata and tensors disagree, empty or too-short text. No ../shared.

mod common;

use std::path::{Path, PathBuf};

use formats::gguf::{GgufFile, GgufWriter, Metadata, TensorInfo, Value};

/// A small synthetic Llama (GQA, SentencePiece-style vocabulary) as F32 GGUF, and a text.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    setup_wide(dir, "64", "128")
}

/// [`setup`] with another width and FFN width.
fn setup_wide(dir: &Path, hidden: &str, ffn: &str) -> (PathBuf, PathBuf) {
    let hf = dir.join("hf");
    let shape = [
        "--hidden", hidden, "--ffn", ffn, "--layers", "2", "--heads", "4",
    ];
    common::synth(&hf, &[&shape[..], &["--kv-heads", "2"]].concat());
    let gguf = dir.join("model.gguf");
    common::convert_ok(&hf, &gguf, "f32");
    let text = dir.join("text.txt");
    let story = "Once upon a time there was a little cat. It liked milk and naps in the sun. ";
    std::fs::write(&text, story.repeat(60)).unwrap();
    (gguf, text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn perplexity_is_deterministic_across_thread_counts_and_kld_of_a_model_with_itself_is_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    let one = common::smelt_json(
        tmp.path(),
        &[
            "perplexity",
            s(&model),
            "-f",
            s(&text),
            "-c",
            "64",
            "-t",
            "1",
        ],
    );
    let two = common::smelt_json(
        tmp.path(),
        &[
            "perplexity",
            s(&model),
            "-f",
            s(&text),
            "-c",
            "64",
            "-t",
            "2",
        ],
    );
    assert_eq!(one["ppl"], two["ppl"]);
    assert!(one["ppl"].as_f64().unwrap() > 1.0);
    assert_eq!(one["n_ctx"], 64);
    let n_chunks = one["n_chunks"].as_u64().unwrap();
    assert_eq!(one["n_scored"].as_u64().unwrap(), n_chunks * 31);

    let base = tmp.path().join("base.kld");
    let saved = common::smelt_json(
        tmp.path(),
        &[
            "perplexity",
            s(&model),
            "-f",
            s(&text),
            "-c",
            "64",
            "--kld-save",
            s(&base),
        ],
    );
    // the base-saving pass sums f32 NLLs, as llama-perplexity's does
    assert!((saved["ppl"].as_f64().unwrap() / one["ppl"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let header = std::fs::read(&base).unwrap();
    assert_eq!(&header[..8], b"_logits_");
    let same = common::smelt_json(
        tmp.path(),
        &["perplexity", s(&model), "-f", s(&text), "--kld", s(&base)],
    );
    assert!(same["kld"]["mean"].as_f64().unwrap().abs() < 1e-4, "{same}");
    assert_eq!(same["same_top_p"].as_f64().unwrap(), 1.0);
    assert!((same["ppl_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-3);

    // a quantized copy differs from its base, measurably and not absurdly
    let q = tmp.path().join("q.gguf");
    common::quantize_ok(tmp.path(), &[s(&model), s(&q), "Q4_0", "--pure"]);
    let cmp = common::smelt_json(
        tmp.path(),
        &["perplexity", s(&q), "-f", s(&text), "--kld", s(&base)],
    );
    let kld = cmp["kld"]["mean"].as_f64().unwrap();
    assert!(kld > 1e-6 && kld < 1.0, "{cmp}");
    for key in ["median", "p90", "p99", "max"] {
        assert!(cmp["kld"][key].is_number(), "{key}");
    }
    assert!(cmp["delta_p"]["rms"].as_f64().unwrap() > 0.0);
}

/// Q4_K_M on a 256-wide model takes the integer k-quant kernel where the CPU has AVX512-VNNI
/// (and decode + faer elsewhere): its perplexity must not depend on the thread count either, and
/// must stay close to the f32 model's.
#[test]
fn k_quant_perplexity_is_deterministic_across_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup_wide(tmp.path(), "256", "512");
    let q = tmp.path().join("q4km.gguf");
    common::quantize_ok(tmp.path(), &[s(&model), s(&q), "Q4_K_M"]);
    let ppl = |m: &Path, t: &str| {
        common::smelt_json(
            tmp.path(),
            &["perplexity", s(m), "-f", s(&text), "-c", "64", "-t", t],
        )["ppl"]
            .as_f64()
            .unwrap()
    };
    let (one, three) = (ppl(&q, "1"), ppl(&q, "3"));
    assert_eq!(one.to_bits(), three.to_bits());
    let full = ppl(&model, "2");
    assert!(
        (one / full - 1.0).abs() < 0.05,
        "Q4_K_M {one} vs f32 {full}"
    );
}

#[test]
fn imatrix_files_are_read_back_by_smelt_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    for format in ["gguf", "dat"] {
        let out = tmp.path().join(format!("imatrix.{format}"));
        let j = common::smelt_json(
            tmp.path(),
            &[
                "imatrix",
                s(&model),
                "-f",
                s(&text),
                "-c",
                "64",
                "-o",
                s(&out),
                "--output-format",
                format,
            ],
        );
        assert_eq!(j["entries"], 14, "7 matrices per block, 2 blocks");
        let file = formats::imatrix::ImatrixFile::open(&out).unwrap();
        assert_eq!(file.entries.len(), 14);
        assert!(file
            .entries
            .values()
            .all(|e| e.sums.iter().all(|v| *v > 0.0)));
        let q = tmp.path().join(format!("q-{format}.gguf"));
        common::quantize_ok(
            tmp.path(),
            &["--imatrix", s(&out), s(&model), s(&q), "IQ4_NL"],
        );
    }
}

/// Rewrites `src` into `dst` with `edit` applied to its metadata and tensors dropped by `keep`.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&mut Metadata), keep: impl Fn(&str) -> bool) {
    let file = GgufFile::open(src).unwrap();
    let mut md = file.metadata.clone();
    edit(&mut md);
    let kept: Vec<_> = file.tensors.iter().filter(|t| keep(&t.info.name)).collect();
    let infos: Vec<TensorInfo> = kept.iter().map(|t| t.info.clone()).collect();
    let mut w = GgufWriter::create(dst, &md, &infos).unwrap();
    for t in kept {
        w.write(file.data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn inconsistent_models_and_short_texts_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    let bad = tmp.path().join("bad.gguf");
    let perplexity =
        |m: &Path, t: &Path| common::run(&["perplexity", s(m), "-f", s(t), "-c", "64"]);

    rewrite(&model, &bad, |_| {}, |n| n != "blk.1.ffn_down.weight");
    common::assert_bad_input(&perplexity(&bad, &text), "blk.1.ffn_down.weight is missing");

    rewrite(
        &model,
        &bad,
        |md| md.set("llama.feed_forward_length", Value::U32(96)),
        |_| true,
    );
    common::assert_bad_input(&perplexity(&bad, &text), "has shape");

    let three_heads = |md: &mut Metadata| {
        md.set("llama.attention.head_count", Value::U32(3));
        md.set("llama.attention.head_count_kv", Value::U32(3));
        md.remove("llama.attention.key_length");
    };
    rewrite(&model, &bad, three_heads, |_| true);
    common::assert_bad_input(&perplexity(&bad, &text), "does not divide");

    // A block count the file cannot back is refused before anything is sized by it (2^40
    // blocks once made the tensor list allocation abort the process); so is a prune of a file
    // whose tensors name a block past its count.
    let huge = |md: &mut Metadata| md.set("llama.block_count", Value::U64(1 << 40));
    rewrite(&model, &bad, huge, |_| true);
    common::assert_bad_input(
        &perplexity(&bad, &text),
        "llama.block_count is 1099511627776",
    );
    let one_block = |md: &mut Metadata| md.set("llama.block_count", Value::U32(1));
    rewrite(&model, &bad, one_block, |_| true);
    let pruned = tmp.path().join("pruned.gguf");
    let prune = [
        "prune",
        s(&bad),
        s(&pruned),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
    ];
    common::assert_bad_input(
        &common::run(&prune),
        "belongs to block 1, but block_count is 1",
    );
    assert!(!pruned.exists());

    rewrite(
        &model,
        &bad,
        |md| md.set("general.architecture", Value::String("gpt-neox".into())),
        |_| true,
    );
    common::assert_bad_input(
        &perplexity(&bad, &text),
        "not supported (llama, qwen2, qwen3, qwen3moe, gemma3, phi3)",
    );
    let archs = common::smelt_json(tmp.path(), &["archs"]);
    let names: Vec<&str> = archs["architectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "phi3"]
    );
    for a in archs["architectures"].as_array().unwrap() {
        assert_eq!(a["stages"].as_array().unwrap().len(), 7, "{a}");
    }

    // A key or tensor whose meaning the forward pass does not implement is refused, never
    // evaluated approximately.
    rewrite(
        &model,
        &bad,
        |md| md.set("llama.attention.sliding_window", Value::U32(32)),
        |_| true,
    );
    common::assert_bad_input(&perplexity(&bad, &text), "llama.attention.sliding_window");
    rewrite(
        &model,
        &bad,
        |md| md.set("llama.rope.scaling.type", Value::String("yarn".into())),
        |_| true,
    );
    common::assert_bad_input(&perplexity(&bad, &text), "yarn");
    let tied = GgufFile::open(&model).unwrap();
    let embd = tied.tensor("token_embd.weight").unwrap().clone();
    let extra = tmp.path().join("extra.gguf");
    {
        let mut infos: Vec<TensorInfo> = tied.tensors.iter().map(|t| t.info.clone()).collect();
        infos.push(TensorInfo {
            name: "blk.0.attn_q_norm.weight".into(),
            ..embd.info.clone()
        });
        let mut w = GgufWriter::create(&extra, &tied.metadata, &infos).unwrap();
        for t in &tied.tensors {
            w.write(tied.data(t)).unwrap();
        }
        w.write(tied.data(&embd)).unwrap();
        w.finish().unwrap();
    }
    common::assert_bad_input(&perplexity(&extra, &text), "blk.0.attn_q_norm.weight");

    rewrite(
        &model,
        &bad,
        |md| {
            md.remove("tokenizer.ggml.model");
        },
        |_| true,
    );
    common::assert_bad_input(&perplexity(&bad, &text), "no tokenizer");

    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    common::assert_bad_input(&perplexity(&model, &empty), "empty.txt");
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "Once upon a time there was a cat.").unwrap();
    common::assert_bad_input(&perplexity(&model, &short), "needs at least 128");
    let out = tmp.path().join("imatrix.gguf");
    common::assert_bad_input(
        &common::run(&[
            "imatrix",
            s(&model),
            "-f",
            s(&short),
            "-c",
            "64",
            "-o",
            s(&out),
        ]),
        "needs at least 128",
    );
    assert!(!out.exists(), "no partial imatrix");

    let garbage = tmp.path().join("garbage.kld");
    std::fs::write(&garbage, b"_logits_\x40\x00\x00\x00").unwrap();
    common::assert_bad_input(
        &common::run(&[
            "perplexity",
            s(&model),
            "-f",
            s(&text),
            "--kld",
            s(&garbage),
        ]),
        "garbage.kld",
    );
}

/// A split set (llama-gguf-split's layout) is one model: perplexity through any shard equals the
/// whole file's, quantizing it gives the whole file's bytes, and a set with a shard missing is
/// bad input naming the shard.
#[test]
fn split_sets_read_as_one_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    let prefix = tmp.path().join("split");
    let shards = common::split_gguf(&model, &prefix, 3);
    let ppl = |m: &Path| {
        let j = common::smelt_json(
            tmp.path(),
            &[
                "perplexity",
                s(m),
                "-f",
                s(&text),
                "-c",
                "64",
                "--chunks",
                "2",
            ],
        );
        j["ppl"].as_f64().unwrap()
    };
    let whole = ppl(&model);
    assert_eq!(ppl(&shards[1]), whole);
    let q = |m: &Path, out: &str| {
        let out = tmp.path().join(out);
        common::quantize_ok(tmp.path(), &[s(m), s(&out), "Q8_0"]);
        common::sha256(&out)
    };
    assert_eq!(
        q(&shards[0], "from-split.gguf"),
        q(&model, "from-whole.gguf")
    );
    std::fs::remove_file(&shards[2]).unwrap();
    let out = tmp.path().join("never.gguf");
    common::assert_bad_input(
        &common::run(&["quantize", s(&shards[0]), s(&out), "Q8_0"]),
        "split-00003-of-00003.gguf",
    );
    assert!(!out.exists());
}

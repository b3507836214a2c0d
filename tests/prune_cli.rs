//! `smelt prune` on a synthetic checkpoint (tier 1): shapes, metadata, achieved sparsity and
//! patterns, prune+quantize in one run, and refused requests.

mod common;

use std::path::{Path, PathBuf};

use formats::gguf::{GgmlType, GgufFile, Value};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 4-block GQA model (4 query heads, 2 key/value heads, FFN 512) as F32 GGUF, and a text.
fn setup(tmp: &Path) -> (PathBuf, PathBuf) {
    let ck = tmp.join("ck");
    common::synth(
        &ck,
        &[
            "--hidden",
            "256",
            "--ffn",
            "512",
            "--layers",
            "4",
            "--heads",
            "4",
            "--kv-heads",
            "2",
        ],
    );
    let model = tmp.join("model.gguf");
    common::convert_ok(&ck, &model, "f32");
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    (model, text)
}

fn prune(tmp: &Path, model: &Path, out: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = tmp.join(out);
    let mut all = vec!["prune", s(model), s(&out)];
    all.extend_from_slice(args);
    let report = common::smelt_json(tmp, &all);
    (out, report)
}

fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file
        .tensor(name)
        .unwrap_or_else(|| panic!("{name} missing"));
    let mut v = vec![0f32; t.info.n_elements() as usize];
    quantize::dequantize(t.info.ggml_type, file.data(t), &mut v).unwrap();
    v
}

fn meta(file: &GgufFile, key: &str) -> u64 {
    file.metadata
        .get(&format!("llama.{key}"))
        .and_then(Value::as_u64)
        .unwrap()
}

fn ppl(tmp: &Path, model: &Path, text: &Path) -> f64 {
    let r = common::smelt_json(
        tmp,
        &[
            "perplexity",
            s(model),
            "-f",
            s(text),
            "-c",
            "128",
            "--chunks",
            "4",
        ],
    );
    r["ppl"].as_f64().unwrap()
}

#[test]
fn structured_pruning_rewrites_shapes_and_metadata_and_the_result_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    let original = GgufFile::open(&model).unwrap();
    let calib = ["-f", s(&text), "-c", "128", "--chunks", "4"];

    // depth by index: blocks renumbered, block_count rewritten, tensors moved unchanged
    let (out, report) = prune(
        tmp.path(),
        &model,
        "depth.gguf",
        &["--method", "depth", "--layers", "1"],
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(meta(&f, "block_count"), 3);
    assert_eq!(report["dropped_layers"], serde_json::json!([1]));
    assert!(f.tensor("blk.3.attn_q.weight").is_none());
    assert_eq!(
        values(&f, "blk.1.ffn_up.weight"),
        values(&original, "blk.2.ffn_up.weight")
    );
    assert_eq!(
        values(&f, "blk.2.attn_norm.weight"),
        values(&original, "blk.3.attn_norm.weight")
    );
    assert!(ppl(tmp.path(), &out, &text).is_finite());

    // depth by Block Influence: drops the block with the lowest 1 - cos
    let mut args = vec!["--method", "depth", "--ratio", "0.25"];
    args.extend_from_slice(&calib);
    let (_, report) = prune(tmp.path(), &model, "bi.gguf", &args);
    let bi: Vec<f64> = report["block_influence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let lowest = (0..bi.len())
        .min_by(|&a, &b| bi[a].total_cmp(&bi[b]))
        .unwrap();
    assert_eq!(report["dropped_layers"], serde_json::json!([lowest]));

    // FFN width: rows of gate/up and columns of down kept consistently
    let mut args = vec!["--method", "ffn", "--ratio", "0.5"];
    args.extend_from_slice(&calib);
    let (out, _) = prune(tmp.path(), &model, "ffn.gguf", &args);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(meta(&f, "feed_forward_length"), 256);
    assert_eq!(
        f.tensor("blk.0.ffn_gate.weight").unwrap().info.dims,
        [256, 256]
    );
    assert_eq!(
        f.tensor("blk.0.ffn_down.weight").unwrap().info.dims,
        [256, 256]
    );
    let (gate, gate0) = (
        values(&f, "blk.0.ffn_gate.weight"),
        values(&original, "blk.0.ffn_gate.weight"),
    );
    let (down, down0) = (
        values(&f, "blk.0.ffn_down.weight"),
        values(&original, "blk.0.ffn_down.weight"),
    );
    // the kept channel c' = c: gate row c' is an original row c and down column c' its column c
    let first_row = &gate[..256];
    let c = gate0
        .chunks(256)
        .position(|r| r == first_row)
        .expect("a kept original row");
    assert_eq!(down[0], down0[c]);
    assert!(ppl(tmp.path(), &out, &text).is_finite());

    // heads: one whole GQA group (2 query heads + its key/value head) removed, head size kept
    let mut args = vec!["--method", "heads", "--ratio", "0.5"];
    args.extend_from_slice(&calib);
    let (out, report) = prune(tmp.path(), &model, "heads.gguf", &args);
    assert_eq!(
        (
            report["head_count"].as_u64(),
            report["head_count_kv"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        (
            meta(&f, "attention.head_count"),
            meta(&f, "attention.head_count_kv")
        ),
        (2, 1)
    );
    assert_eq!(meta(&f, "attention.key_length"), 64);
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().info.dims,
        [256, 128]
    );
    assert_eq!(
        f.tensor("blk.0.attn_k.weight").unwrap().info.dims,
        [256, 64]
    );
    assert_eq!(
        f.tensor("blk.0.attn_output.weight").unwrap().info.dims,
        [128, 256]
    );
    assert!(ppl(tmp.path(), &out, &text).is_finite());

    // prune and quantize in one invocation
    let mut args = vec!["--method", "ffn", "--ratio", "0.5", "--quantize", "Q4_K_M"];
    args.extend_from_slice(&calib);
    let (out, _) = prune(tmp.path(), &model, "ffn-q4.gguf", &args);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor("blk.0.ffn_gate.weight").unwrap().info.ggml_type,
        GgmlType::Q4_K
    );
    assert!(ppl(tmp.path(), &out, &text).is_finite());
    assert!(
        !common::files_in(tmp.path())
            .iter()
            .any(|n| n.starts_with('.')),
        "scratch left behind"
    );
}

#[test]
fn unstructured_pruning_hits_its_ratio_and_pattern_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    for method in ["magnitude", "wanda"] {
        let mut args = vec![
            "--method",
            method,
            "--ratio",
            "0.75",
            "-f",
            s(&text),
            "-c",
            "128",
            "--chunks",
            "4",
        ];
        let (out, report) = prune(tmp.path(), &model, &format!("{method}.gguf"), &args);
        assert_eq!(report["sparsity"].as_f64(), Some(0.75), "{report}");
        let f = GgufFile::open(&out).unwrap();
        for row in values(&f, "blk.0.ffn_down.weight").chunks(512) {
            assert_eq!(row.iter().filter(|v| **v == 0.0).count(), 384);
        }
        // embeddings and norms are left alone
        assert_eq!(
            values(&f, "token_embd.weight"),
            values(&GgufFile::open(&model).unwrap(), "token_embd.weight")
        );

        args.splice(2..4, ["--nm", "2:4"]);
        let (out, report) = prune(tmp.path(), &model, &format!("{method}-24.gguf"), &args);
        assert_eq!(report["sparsity"].as_f64(), Some(0.5));
        let f = GgufFile::open(&out).unwrap();
        for group in values(&f, "blk.1.attn_q.weight").chunks(4) {
            assert_eq!(group.iter().filter(|v| **v == 0.0).count(), 2);
        }
    }
    // magnitude keeps the largest |W| of a row; Wanda weighs them by activation norms, so the
    // two differ somewhere
    let m = values(
        &GgufFile::open(&tmp.path().join("magnitude.gguf")).unwrap(),
        "blk.0.attn_q.weight",
    );
    let w = values(
        &GgufFile::open(&tmp.path().join("wanda.gguf")).unwrap(),
        "blk.0.attn_q.weight",
    );
    assert_ne!(m, w);
    let original = values(&GgufFile::open(&model).unwrap(), "blk.0.attn_q.weight");
    let row = &original[..256];
    let kept: Vec<f32> = m[..256].iter().copied().filter(|v| *v != 0.0).collect();
    let mut sorted: Vec<f32> = row.iter().map(|v| v.abs()).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert!(kept.iter().all(|v| v.abs() >= sorted[64]));
}

#[test]
fn bad_pruning_requests_exit_2_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, text) = setup(tmp.path());
    let q8 = tmp.path().join("q8.gguf");
    common::quantize_ok(tmp.path(), &[s(&model), s(&q8), "Q8_0"]);
    let out = tmp.path().join("out.gguf");
    let calib = ["-f", s(&text), "-c", "128", "--chunks", "2"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--method", "depth", "--layers", "7"],
            "layer 7 does not exist",
        ),
        (
            vec!["--method", "depth", "--layers", "0,1,2,3"],
            "keep at least one",
        ),
        (
            vec!["--method", "magnitude", "--ratio", "0"],
            "outside (0, 1)",
        ),
        (
            vec!["--method", "magnitude", "--ratio", "1.5"],
            "outside (0, 1)",
        ),
        (
            vec!["--method", "magnitude", "--nm", "2:3"],
            "does not divide",
        ),
        (vec!["--method", "magnitude", "--nm", "4:4"], "N:M"),
        (vec!["--method", "ffn", "--ratio", "1"], "outside (0, 1)"),
        (vec!["--method", "wanda", "--ratio", "0.5"], "-f"),
        (vec!["--method", "ffn", "--nm", "2:4"], "--nm applies"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["prune", s(&model), s(&out)];
        all.extend(args);
        common::assert_bad_input(&common::run(&all), needle);
        assert!(!out.exists());
    }
    let mut heads = vec![
        "prune",
        s(&model),
        s(&out),
        "--method",
        "heads",
        "--ratio",
        "0.25",
    ];
    heads.extend_from_slice(&calib);
    common::assert_bad_input(&common::run(&heads), "breaks GQA groups");
    let quantized = [
        "prune",
        s(&q8),
        s(&out),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
    ];
    common::assert_bad_input(&common::run(&quantized), "prune a float model");
    assert!(!out.exists());
    assert!(!common::files_in(tmp.path())
        .iter()
        .any(|n| n.starts_with('.')));
}

//! `smelt convert` on synthetic checkpoints: round trips and every kind of bad input.
//! Needs nothing outside the repository.

mod common;

use std::path::Path;

use common::{assert_bad_input, files_in, run};
use formats::gguf::{GgmlType, GgufFile};
use formats::hf::synthetic::{write_synthetic, SyntheticSpec};
use formats::hf::{Checkpoint, FloatType};

fn synth(dir: &Path, spec: SyntheticSpec) {
    write_synthetic(dir, &spec).unwrap();
}

fn convert(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn f32_conversion_keeps_every_value_and_permutes_q_k_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    synth(
        &model,
        SyntheticSpec {
            tied: false,
            ..Default::default()
        },
    );
    let out = tmp.path().join("m.gguf");
    let o = convert(&model, &out, &["--outtype", "f32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let ckpt = Checkpoint::open(&model).unwrap();
    let gguf = GgufFile::open(&out).unwrap();
    assert_eq!(gguf.tensors.len(), ckpt.tensors.len());
    let f32s = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    let q_src = f32s(
        ckpt.bytes(
            ckpt.tensor("model.layers.1.self_attn.q_proj.weight")
                .unwrap(),
        ),
    );
    let q_out = f32s(gguf.data(gguf.tensor("blk.1.attn_q.weight").unwrap()));
    // 4 heads of 16 rows: out row 1 of head 0 is source row 8 (second half of the head).
    assert_eq!(&q_out[64..128], &q_src[8 * 64..9 * 64]);
    assert_eq!(&q_out[..64], &q_src[..64]);
    let down_src = f32s(ckpt.bytes(ckpt.tensor("model.layers.0.mlp.down_proj.weight").unwrap()));
    assert_eq!(
        f32s(gguf.data(gguf.tensor("blk.0.ffn_down.weight").unwrap())),
        down_src
    );
    assert_eq!(
        gguf.tensor("blk.0.ffn_down.weight").unwrap().info.dims,
        vec![128, 64]
    );
    assert!(gguf.tensor("output.weight").is_some());
    assert_eq!(
        gguf.metadata
            .get("general.file_type")
            .and_then(|v| v.as_u64()),
        Some(0)
    );
}

#[test]
fn sharded_bf16_converts_like_a_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, many) = (tmp.path().join("a/model"), tmp.path().join("b/model"));
    let spec = SyntheticSpec {
        dtype: FloatType::BF16,
        ..Default::default()
    };
    synth(&one, spec.clone());
    synth(&many, SyntheticSpec { shards: 3, ..spec });
    assert!(many.join("model.safetensors.index.json").is_file());
    let (x, y) = (tmp.path().join("x.gguf"), tmp.path().join("y.gguf"));
    assert!(convert(&one, &x, &[]).status.success());
    assert!(convert(&many, &y, &[]).status.success());
    // Tensor order follows the shards (as in llama.cpp's converter), so compare by name.
    let (f, g) = (GgufFile::open(&x).unwrap(), GgufFile::open(&y).unwrap());
    assert_eq!(f.metadata, g.metadata);
    assert_eq!(f.tensors.len(), g.tensors.len());
    for t in &f.tensors {
        let u = g.tensor(&t.info.name).unwrap();
        assert_eq!(
            (&t.info, f.data(t)),
            (&u.info, g.data(u)),
            "{}",
            t.info.name
        );
    }
    assert_eq!(
        f.tensor("blk.0.ffn_up.weight").unwrap().info.ggml_type,
        GgmlType::BF16,
        "default outtype is the checkpoint's own"
    );
    assert_eq!(
        f.tensor("blk.0.attn_norm.weight").unwrap().info.ggml_type,
        GgmlType::F32
    );
}

#[test]
fn output_is_deterministic_across_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    synth(&model, SyntheticSpec::default());
    let mut files = Vec::new();
    for threads in ["1", "2", "4"] {
        let out = tmp.path().join(format!("t{threads}.gguf"));
        let o = common::convert_command(&model, &out, "q8_0")
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(o.status.success());
        files.push(std::fs::read(out).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]));
}

/// A valid model in `dir/m`, and where its output would go.
fn valid_model(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = dir.join("m");
    synth(&model, SyntheticSpec::default());
    let outdir = dir.join("out");
    std::fs::create_dir(&outdir).unwrap();
    (model, outdir.join("x.gguf"))
}

fn assert_refused(model: &Path, out: &Path, needle: &str, extra: &[&str]) {
    let o = convert(model, out, extra);
    assert_bad_input(&o, needle);
    assert!(
        files_in(out.parent().unwrap()).is_empty(),
        "left behind: {:?}",
        files_in(out.parent().unwrap())
    );
}

fn rewrite_header(st: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    h.resize(n.max(h.len()), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(st, out).unwrap();
}

#[test]
fn truncated_safetensors_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    let st = model.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
    f.set_len(len - 100).unwrap();
    assert_refused(&model, &out, "model.safetensors", &[]);
    f.set_len(4).unwrap();
    assert_refused(&model, &out, "truncated", &[]);
}

#[test]
fn header_offsets_past_the_end_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    rewrite_header(&model.join("model.safetensors"), |h| {
        h["model.norm.weight"]["data_offsets"][1] = serde_json::json!(1u64 << 40);
    });
    assert_refused(&model, &out, "model.safetensors", &[]);
}

#[test]
fn unknown_dtype_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    rewrite_header(&model.join("model.safetensors"), |h| {
        h["model.norm.weight"]["dtype"] = serde_json::json!("Q9")
    });
    assert_refused(&model, &out, "model.safetensors", &[]);
    let (model, out) = (tmp.path().join("m2"), out);
    synth(&model, SyntheticSpec::default());
    rewrite_header(&model.join("model.safetensors"), |h| {
        // I32 is a real safetensors dtype of the same width, but not a float type smelt imports.
        h["model.norm.weight"]["dtype"] = serde_json::json!("I32");
    });
    assert_refused(&model, &out, "unsupported dtype", &[]);
}

#[test]
fn missing_shard_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    synth(
        &model,
        SyntheticSpec {
            shards: 2,
            ..Default::default()
        },
    );
    std::fs::remove_file(model.join("model-00002-of-00002.safetensors")).unwrap();
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    assert_refused(
        &model,
        &outdir.join("x.gguf"),
        "model-00002-of-00002.safetensors",
        &[],
    );
}

#[test]
fn config_missing_a_required_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("num_hidden_layers");
    std::fs::write(&path, cfg.to_string()).unwrap();
    assert_refused(&model, &out, "num_hidden_layers", &[]);
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    let path = model.join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("LlamaForCausalLM", "GPTNeoXForCausalLM");
    std::fs::write(&path, text).unwrap();
    assert_refused(&model, &out, "Qwen2ForCausalLM", &[]);
}

#[test]
fn missing_tokenizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    std::fs::remove_file(model.join("tokenizer.model")).unwrap();
    assert_refused(&model, &out, "no tokenizer", &[]);
}

#[test]
fn non_finite_weights_name_the_tensor_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = valid_model(tmp.path());
    let st = model.join("model.safetensors");
    let name = "model.layers.1.mlp.up_proj.weight";
    let mut bytes = std::fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let begin = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    bytes[begin + 40..begin + 44].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    assert_refused(&model, &out, "model.layers.1.mlp.up_proj.weight", &[]);
    let o = convert(&model, &out, &["--allow-nonfinite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn not_a_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    assert_bad_input(&convert(&tmp.path().join("nope"), &out, &[]), "nope");
    assert!(!out.exists());
}

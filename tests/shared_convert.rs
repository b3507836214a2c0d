//! Tier 2 (needs `../shared`): `smelt convert` on the real models gives llama.cpp's files.
//! Run by `.ci/run` with `--include-ignored`.

mod common;

use common::{convert_ok, run, shared};
use formats::gguf::GgufFile;

/// Keys that only name the file; none differ today, but the comparison below allows these.
const NAMING_KEYS: &[&str] = &["general.name"];

fn convert_and_compare(model: &str, outtype: &str) {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    convert_ok(&s.join("assets/models").join(model), &out, outtype);
    let reference = s
        .join("reference")
        .join(model)
        .join(format!("{model}-{outtype}.gguf"));
    // Strongest form: the whole file, byte for byte (metadata, tensor infos, data, padding).
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "{model} {outtype}: files differ"
    );
}

#[test]
#[ignore = "needs ../shared"]
fn stories260k_all_outtypes_byte_identical() {
    for t in ["f32", "f16", "bf16", "q8_0"] {
        convert_and_compare("stories260K", t);
    }
}

#[test]
#[ignore = "needs ../shared"]
fn tinystories_3m_byte_identical() {
    for t in ["f32", "f16"] {
        convert_and_compare("tinystories-3M", t);
    }
}

#[test]
#[ignore = "needs ../shared"]
fn bf16_checkpoint_converts_to_the_reference_tensors() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.gguf");
    let o = run(&[
        "convert",
        s.join("assets/models/stories260K-bf16").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = GgufFile::open(&out).unwrap();
    let theirs = GgufFile::open(&s.join("reference/stories260K/stories260K-bf16.gguf")).unwrap();
    let differing: Vec<&str> = theirs
        .metadata
        .iter()
        .filter(|(k, v)| ours.metadata.get(k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        differing.iter().all(|k| NAMING_KEYS.contains(k)),
        "metadata differs: {differing:?}"
    );
    assert_eq!(ours.metadata.len(), theirs.metadata.len());
    assert_eq!(ours.tensors.len(), theirs.tensors.len());
    for (a, b) in ours.tensors.iter().zip(&theirs.tensors) {
        assert_eq!(a.info, b.info);
        // Norms stay F32 but come from bf16 weights here: only the bf16 matrices must match bytes.
        if a.info.ggml_type == formats::gguf::GgmlType::F32 {
            continue;
        }
        assert!(
            ours.data(a) == theirs.data(b),
            "tensor {} differs",
            a.info.name
        );
    }
}

//! Tier 2: `smelt quantize` on the real models in ../shared gives the very files llama-quantize made
//! (`reference/<model>/<model>-[imx-][pure-]TYPE.gguf`, commands in `reference/<model>/logs/`),
//! compared whole: header, metadata, tensor infos, data and padding. The imatrix runs record the
//! imatrix path as typed (`shared/reference/…`), so smelt runs from the folder holding `shared`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A folder in which `shared` names the shared material (a symlink when it has another name).
fn workdir(keep: &tempfile::TempDir) -> PathBuf {
    let shared = shared().canonicalize().unwrap();
    if shared.file_name().unwrap() == "shared" {
        return shared.parent().unwrap().to_path_buf();
    }
    std::os::unix::fs::symlink(&shared, keep.path().join("shared")).unwrap();
    keep.path().to_path_buf()
}

fn check_model(model: &str) {
    let keep = tempfile::tempdir().unwrap();
    let cwd = workdir(&keep);
    let rel = Path::new("shared/reference").join(model);
    let input = rel.join(format!("{model}-f32.gguf"));
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for name in files_in(&cwd.join(&rel)) {
        let Some(variant) = name
            .strip_prefix(&format!("{model}-"))
            .and_then(|v| v.strip_suffix(".gguf"))
        else {
            continue;
        };
        if ["f32", "f16", "bf16", "q8_0"].contains(&variant) {
            continue; // converter outputs, tested by shared_convert.rs
        }
        let mut args: Vec<String> = Vec::new();
        let mut ty = variant;
        if let Some(rest) = ty.strip_prefix("imx-") {
            args.extend([
                "--imatrix".into(),
                rel.join("imatrix.gguf").display().to_string(),
            ]);
            ty = rest;
        }
        if let Some(rest) = ty.strip_prefix("pure-") {
            args.push("--pure".into());
            ty = rest;
        }
        let out = keep.path().join(format!("{variant}.gguf"));
        let mut all = vec![
            input.display().to_string(),
            out.display().to_string(),
            ty.to_string(),
        ];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        quantize_ok(&cwd, &all);
        if sha256(&out) != sha256(&cwd.join(&rel).join(&name)) {
            failures.push(variant.to_string());
        }
        checked.push(variant.to_string());
        std::fs::remove_file(&out).unwrap();
    }
    assert!(checked.len() >= 30, "{model}: only {checked:?}");
    assert!(
        failures.is_empty(),
        "{model}: differ from llama-quantize: {failures:?} (checked {checked:?})"
    );
}

/// stories260K: rows of 64 and 172, so this mostly checks the fallbacks (57 files, IQ1–IQ3 ones
/// included: they fall back to IQ4_NL/Q8_0/F16).
#[test]
#[ignore = "needs ../shared (tier 2)"]
fn stories260k_quants_equal_llama_quantize() {
    check_model("stories260K");
}

/// tinystories-3M: rows of 256 and 768, every k-quant applies as such.
#[test]
#[ignore = "needs ../shared (tier 2)"]
fn tinystories_3m_quants_equal_llama_quantize() {
    check_model("tinystories-3M");
}

/// Q1_0 on rows of 64 fails in llama.cpp (no fallback defined); smelt refuses the same way.
#[test]
#[ignore = "needs ../shared (tier 2)"]
fn q1_0_on_rows_of_64_is_refused_like_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let input = shared().join("reference/stories260K/stories260K-f32.gguf");
    let out = dir.path().join("q1.gguf");
    let o = run(&[
        "quantize",
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q1_0",
    ]);
    assert_bad_input(&o, "no fallback");
    assert!(files_in(dir.path()).is_empty());
}

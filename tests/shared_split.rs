//! Tier 2: split GGUF sets made by llama.cpp's own `llama-gguf-split --split` (by tensor count
//! and by size) of a reference model are read as one model: `smelt inspect`, `quantize`,
//! `perplexity`, `imatrix` and `prune` give the same results as on the unsplit file, and a set with
//! a shard missing, or with a shard of another set in its place, is bad input (exit 2).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Splits `model` with llama-gguf-split and `how` (its flags) into `PREFIX-0000i-of-0000n.gguf`.
fn gguf_split(model: &Path, prefix: &Path, how: &[&str]) -> Vec<PathBuf> {
    let out = Command::new(common::llama_ref().join("bin/llama-gguf-split"))
        .arg("--split")
        .args(how)
        .arg(model)
        .arg(prefix)
        .output()
        .expect("llama-gguf-split runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = prefix.parent().unwrap();
    let stem = prefix.file_name().unwrap().to_str().unwrap();
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{stem}-"))
        })
        .collect();
    shards.sort();
    assert!(shards.len() >= 3, "{how:?} made {} shards", shards.len());
    shards
}

/// What each command gives on `model`: inspect's tensor table, quantized and pruned bytes,
/// perplexity and the imatrix's bytes.
fn results(model: &Path, text: &Path, tmp: &Path, tag: &str) -> Vec<String> {
    let json = |args: &[&str]| common::smelt_json(tmp, args);
    let inspect = json(&["inspect", s(model)])["tensors"].to_string();
    let q = tmp.join(format!("{tag}-q4km.gguf"));
    common::quantize_ok(tmp, &[s(model), s(&q), "Q4_K_M"]);
    let ppl = json(&[
        "perplexity",
        s(model),
        "-f",
        s(text),
        "-c",
        "128",
        "--chunks",
        "3",
    ]);
    let imatrix = tmp.join(format!("{tag}-imatrix.gguf"));
    json(&[
        "imatrix",
        s(model),
        "-f",
        s(text),
        "-c",
        "128",
        "--chunks",
        "3",
        "-o",
        s(&imatrix),
    ]);
    let pruned = tmp.join(format!("{tag}-pruned.gguf"));
    json(&[
        "prune",
        s(model),
        s(&pruned),
        "--method",
        "depth",
        "--layers",
        "1",
    ]);
    vec![
        inspect,
        common::sha256(&q),
        ppl["ppl"].to_string(),
        common::sha256(&imatrix),
        common::sha256(&pruned),
    ]
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn split_sets_give_the_unsplit_results() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = common::shared();
    let model = shared.join("reference/tinystories-3M/tinystories-3M-f32.gguf");
    let text = shared.join("assets/text/tinystories-eval.txt");
    let whole = results(&model, &text, tmp.path(), "whole");
    let dir = |d: &str| {
        std::fs::create_dir(tmp.path().join(d)).unwrap();
        tmp.path().join(d).join("m")
    };
    let by_tensors = gguf_split(&model, &dir("t"), &["--split-max-tensors", "12"]);
    let by_size = gguf_split(&model, &dir("z"), &["--split-max-size", "3M"]);
    assert_eq!(results(&by_tensors[0], &text, tmp.path(), "t"), whole);
    assert_eq!(
        results(by_size.last().unwrap(), &text, tmp.path(), "z"),
        whole
    );

    // A shard of the by-size set in place of the by-tensor set's second shard.
    let out = tmp.path().join("never.gguf");
    let quantize = |m: &Path| common::run(&["quantize", s(m), s(&out), "Q8_0"]);
    std::fs::copy(&by_size[1], &by_tensors[1]).unwrap();
    common::assert_bad_input(&quantize(&by_tensors[0]), "");
    std::fs::remove_file(&by_tensors[1]).unwrap();
    let missing = by_tensors[1].file_name().unwrap().to_str().unwrap();
    common::assert_bad_input(&quantize(&by_tensors[0]), missing);
    assert!(!out.exists(), "no output from a broken set");
}

/// `smelt quantize --split-max-tensors/--split-max-size` writes exactly what `llama-gguf-split
/// --split` makes of smelt's unsplit output, every shard byte for byte, and llama.cpp generates
/// the same text from the set as from the single file.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn split_output_matches_llama_gguf_split() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::shared().join("reference/tinystories-3M/tinystories-3M-f32.gguf");
    let whole = tmp.path().join("whole.gguf");
    common::quantize_ok(tmp.path(), &[s(&model), s(&whole), "Q4_K_M"]);
    for (name, flag, value) in [
        ("t", "--split-max-tensors", "12"),
        ("z", "--split-max-size", "1M"),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let ours = dir.join("ours.gguf");
        let report = common::smelt_json(
            tmp.path(),
            &["quantize", s(&model), s(&ours), "Q4_K_M", flag, value],
        );
        let files: Vec<PathBuf> = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| PathBuf::from(f.as_str().unwrap()))
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        assert!(!ours.exists(), "no unsplit file beside the set");
        let theirs = gguf_split(&whole, &dir.join("theirs"), &[flag, value]);
        let theirs: Vec<&PathBuf> = theirs.iter().filter(|p| !files.contains(p)).collect();
        assert_eq!(files.len(), theirs.len());
        for (a, b) in files.iter().zip(&theirs) {
            assert_eq!(common::sha256(a), common::sha256(b), "{}", a.display());
        }
        assert_eq!(
            common::llama_complete(&files[0]),
            common::llama_complete(&whole)
        );
    }
}

/// `smelt release` from a split set gives the unsplit source's figures and files; with a small
/// `split_max_size` it releases split sets (folders of shards) that the report lists, the model
/// card's front matter parses as YAML with the Hub's keys, and `sha256sum -c SHA256SUMS` passes.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn release_from_and_into_split_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = common::shared();
    let model = shared.join("reference/tinystories-3M/tinystories-3M-f32.gguf");
    std::fs::create_dir(tmp.path().join("set")).unwrap();
    let shards = gguf_split(
        &model,
        &tmp.path().join("set/m"),
        &["--split-max-tensors", "12"],
    );
    let text = |n: &str| shared.join("assets/text").join(n);
    let release = |name: &str, source: &Path| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let recipe = dir.join("recipe.toml");
        std::fs::write(
            &recipe,
            format!(
                "name = \"ts\"\nsource = \"{}\"\noutput = \"out\"\ntypes = [\"Q8_0\", \"Q4_K_M\"]\n\
                 calibration = \"{}\"\nevaluation = \"{}\"\nctx = 128\nchunks = 8\n\
                 split_max_size = \"1M\"\n[card]\nlicense = \"mit\"\nbase_model = \"org/ts\"\n\
                 quantized_by = \"smelt\"\n",
                source.display(),
                text("tinystories-calib.txt").display(),
                text("tinystories-eval.txt").display()
            ),
        )
        .unwrap();
        (
            dir.join("out"),
            common::smelt_json(&dir, &["release", s(&recipe)]),
        )
    };
    let (out, whole) = release("whole", &model);
    let (_, from_set) = release("from-set", &shards[1]);
    let figures = |r: &serde_json::Value| {
        r["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["sha256"].clone(), t["ppl"].clone(), t["files"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(figures(&whole), figures(&from_set));
    for t in whole["types"].as_array().unwrap() {
        let files = t["files"].as_array().unwrap();
        assert!(files.len() > 1, "{t}");
        for f in files {
            assert!(out.join(f.as_str().unwrap()).is_file(), "{f}");
        }
    }
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let yaml = Command::new(common::ref_python())
        .arg("-c")
        .arg(
            "import sys, yaml\n\
             text = open(sys.argv[1]).read()\n\
             meta = yaml.safe_load(text.split('---')[1])\n\
             assert meta['base_model'] == 'org/ts' and meta['license'] == 'mit', meta\n\
             assert meta['tags'] == ['gguf', 'llama', 'quantized'], meta\n\
             assert meta['quantized_by'] == 'smelt', meta",
        )
        .arg(out.join("README.md"))
        .output()
        .unwrap();
    assert!(
        yaml.status.success(),
        "{}",
        String::from_utf8_lossy(&yaml.stderr)
    );
}

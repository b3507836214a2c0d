//! Tier 2 interop for `smelt quantize` (needs ../shared and the llama.cpp reference): llama-quantize
//! run live on synthetic models of four weight distributions, compared byte for byte (100% of
//! blocks, whole files); the real legacy `.dat` imatrix; smelt's dequantizers against gguf-py's
//! `gguf.quants.dequantize`; and a checkpoint quantized in one pass loading and generating in
//! llama.cpp.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Every type smelt encodes, as a llama-quantize file type.
const TYPES: &[&str] = &[
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
    "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "Q1_0", "Q2_0",
];

fn llama_quantize(cwd: &Path, args: &[&str]) {
    let o = llama_tool("llama-quantize")
        .current_dir(cwd)
        .args(args)
        .arg("2")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "llama-quantize {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn synthetic_imatrix(model: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/synthetic_imatrix.py");
    let o = Command::new(ref_python())
        .arg(script)
        .arg(model)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Quantizes `model.gguf` in `dir` with both tools for every type and variant; returns the
/// variants whose files differ.
fn compare_all(dir: &Path) -> (usize, Vec<String>) {
    compare(
        dir,
        TYPES,
        &[
            &[][..],
            &["--pure"],
            &["--imatrix", "imx.gguf"],
            &["--imatrix", "imx.dat"],
        ],
    )
}

/// Quantizes `model.gguf` in `dir` with both tools for each of `types` with each of `variants`
/// (flags); returns how many were compared and those whose files differ.
fn compare(dir: &Path, types: &[&str], variants: &[&[&str]]) -> (usize, Vec<String>) {
    let mut differ = Vec::new();
    let mut n = 0;
    for ty in types {
        for flags in variants {
            let mut theirs: Vec<&str> = flags.to_vec();
            theirs.extend(["model.gguf", "theirs.gguf", ty]);
            llama_quantize(dir, &theirs);
            let mut ours = vec!["model.gguf", "ours.gguf", ty];
            ours.extend_from_slice(flags);
            quantize_ok(dir, &ours);
            if sha256(&dir.join("ours.gguf")) != sha256(&dir.join("theirs.gguf")) {
                differ.push(format!("{ty} {flags:?}"));
            }
            n += 1;
        }
    }
    (n, differ)
}

/// The file types built on the IQ1–IQ3 codebook types, and Q2_K_S (which needs an imatrix too).
const CODEBOOK_TYPES: &[&str] = &[
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "Q2_K_S",
];

/// Builds the four synthetic models (Gaussian; heavy-tailed with outlier columns; all-zero,
/// constant and spike blocks; magnitudes down to 1e-10; rows multiple of 256) under `root`, each
/// `model.gguf` with `imx.gguf` and `imx.dat` beside it; returns their folders.
fn synthetic_models(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut dirs = Vec::new();
    for dist in ["gaussian", "heavy", "blocky", "tiny"] {
        let dir = root.join(dist);
        synth(
            &dir.join("ckpt"),
            &[
                "--hidden",
                "256",
                "--ffn",
                "768",
                "--layers",
                "2",
                "--heads",
                "4",
                "--kv-heads",
                "1",
                "--untied",
                "--dist",
                dist,
            ],
        );
        convert_ok(&dir.join("ckpt"), &dir.join("model.gguf"), "f32");
        synthetic_imatrix(&dir.join("model.gguf"), &dir.join("imx.gguf"));
        synthetic_imatrix(&dir.join("model.gguf"), &dir.join("imx.dat"));
        dirs.push((dist, dir));
    }
    dirs
}

/// The four distributions, 20 types × 4 variants each.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn synthetic_models_match_llama_quantize_live() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut total = 0;
    for (dist, dir) in synthetic_models(tmp.path()) {
        let (n, differ) = compare_all(&dir);
        total += n;
        failures.extend(differ.into_iter().map(|d| format!("{dist}: {d}")));
    }
    assert_eq!(total, 4 * TYPES.len() * 4);
    assert!(
        failures.is_empty(),
        "differ from llama-quantize: {failures:#?}"
    );
}

/// The codebook file types on the four distributions, with the imatrix as .gguf and legacy .dat,
/// with `--pure`, and without one: where llama-quantize refuses (the imatrix-only types), smelt
/// refuses too, with exit 2 and one line; everywhere else the files are identical.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn codebook_types_match_llama_quantize_live() {
    let tmp = tempfile::tempdir().unwrap();
    let variants: &[&[&str]] = &[
        &["--imatrix", "imx.gguf"],
        &["--imatrix", "imx.dat"],
        &["--pure", "--imatrix", "imx.gguf"],
        &[],
    ];
    let (mut failures, mut compared, mut refused) = (Vec::new(), 0, 0);
    for (dist, dir) in synthetic_models(tmp.path()) {
        for ty in CODEBOOK_TYPES {
            for flags in variants {
                let mut theirs: Vec<&str> = flags.to_vec();
                theirs.extend(["model.gguf", "theirs.gguf", ty, "2"]);
                let o = llama_tool("llama-quantize")
                    .current_dir(&dir)
                    .args(&theirs)
                    .output()
                    .unwrap();
                let mut ours = vec!["model.gguf", "ours.gguf", ty];
                ours.extend_from_slice(flags);
                if !o.status.success() {
                    let out = smelt()
                        .current_dir(&dir)
                        .arg("quantize")
                        .args(&ours)
                        .output()
                        .unwrap();
                    assert_bad_input(&out, "importance matrix");
                    assert!(
                        !dir.join("ours.gguf").exists(),
                        "{ty} {flags:?}: partial output"
                    );
                    refused += 1;
                    continue;
                }
                quantize_ok(&dir, &ours);
                if sha256(&dir.join("ours.gguf")) != sha256(&dir.join("theirs.gguf")) {
                    failures.push(format!("{dist}: {ty} {flags:?}"));
                }
                std::fs::remove_file(dir.join("ours.gguf")).unwrap();
                compared += 1;
            }
        }
    }
    // Per distribution 13 of the 44 cases are refused: the 9 file types that put an
    // imatrix-only type on some tensor (all but IQ3_S and IQ3_M), without an imatrix; and --pure
    // IQ1_S, IQ2_XXS, IQ2_XS and IQ2_S (whose base type is IQ2_XS), which puts a type that cannot
    // be encoded without weights on token_embd and output, where no imatrix has data
    // (llama.cpp aborts).
    assert_eq!((compared, refused), (4 * 31, 4 * 13));
    assert!(
        failures.is_empty(),
        "differ from llama-quantize: {failures:#?}"
    );
}

/// The real legacy imatrix.dat of tinystories-3M, through both tools.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn legacy_dat_imatrix_matches_llama_quantize_live() {
    let tmp = tempfile::tempdir().unwrap();
    let r = shared().join("reference/tinystories-3M");
    let (input, imx) = (r.join("tinystories-3M-f32.gguf"), r.join("imatrix.dat"));
    for ty in ["Q4_K_M", "IQ4_XS", "Q3_K_S", "Q5_0"] {
        let (ours, theirs) = (tmp.path().join("ours.gguf"), tmp.path().join("theirs.gguf"));
        llama_quantize(
            tmp.path(),
            &[
                "--imatrix",
                imx.to_str().unwrap(),
                input.to_str().unwrap(),
                theirs.to_str().unwrap(),
                ty,
            ],
        );
        quantize_ok(
            tmp.path(),
            &[
                input.to_str().unwrap(),
                ours.to_str().unwrap(),
                ty,
                "--imatrix",
                imx.to_str().unwrap(),
            ],
        );
        assert_eq!(sha256(&ours), sha256(&theirs), "{ty}");
    }
}

/// smelt's decoders equal gguf-py's (`gguf==0.19.0`) bit for bit on every reference file gguf-py
/// can read (it does not know Q1_0 and Q2_0), IQ1–IQ3 files included.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn dequantize_matches_gguf_py() {
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_dequant.py");
    let mut files: Vec<PathBuf> = Vec::new();
    for model in ["stories260K", "tinystories-3M"] {
        let r = shared().join("reference").join(model);
        for name in files_in(&r) {
            let skip = ["-f32.gguf", "-Q1_0.gguf", "-Q2_0.gguf", "imatrix.gguf"]
                .iter()
                .any(|s| name.ends_with(s));
            if name.ends_with(".gguf") && !skip {
                files.push(r.join(name));
            }
        }
    }
    // No reference file holds IQ2_XS tensors: make one with llama-quantize.
    let r = shared().join("reference/tinystories-3M");
    let iq2_xs = tmp.path().join("iq2_xs.gguf");
    let (input, imx) = (r.join("tinystories-3M-f32.gguf"), r.join("imatrix.gguf"));
    llama_quantize(
        tmp.path(),
        &[
            "--imatrix",
            imx.to_str().unwrap(),
            input.to_str().unwrap(),
            iq2_xs.to_str().unwrap(),
            "IQ2_XS",
        ],
    );
    files.push(iq2_xs);
    let mut seen = std::collections::BTreeSet::new();
    for orig in files {
        let name = orig.file_name().unwrap().to_string_lossy().into_owned();
        {
            let deq = tmp.path().join("deq.gguf");
            quantize_ok(
                tmp.path(),
                &[
                    orig.to_str().unwrap(),
                    deq.to_str().unwrap(),
                    "F32",
                    "--allow-requantize",
                ],
            );
            let o = Command::new(ref_python())
                .arg(&script)
                .arg(&orig)
                .arg(&deq)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{name}: {report}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            seen.extend(
                report
                    .lines()
                    .filter(|l| l.contains("identical"))
                    .map(|l| l.split(':').next().unwrap().to_string()),
            );
        }
    }
    for ty in [
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
        "IQ4_XS", "TQ1_0", "TQ2_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS",
        "IQ3_S", "F16",
    ] {
        assert!(seen.contains(ty), "{ty} never checked: {seen:?}");
    }
}

/// tinystories-3M's checkpoint folder quantized in one pass is the reference Q4_K_M file (made by
/// convert_hf_to_gguf.py + llama-quantize), and llama.cpp generates from it.
#[test]
#[ignore = "needs ../shared and the llama.cpp reference"]
fn checkpoint_to_q4_k_m_in_one_pass_loads_in_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tinystories-3M-Q4_K_M.gguf");
    let ckpt = shared().join("assets/models/tinystories-3M");
    quantize_ok(
        tmp.path(),
        &[ckpt.to_str().unwrap(), out.to_str().unwrap(), "Q4_K_M"],
    );
    let reference = shared().join("reference/tinystories-3M/tinystories-3M-Q4_K_M.gguf");
    assert_eq!(sha256(&out), sha256(&reference));
    let text = llama_complete(&out);
    assert!(
        text.trim_start().starts_with("Once upon a time") && text.len() > 60,
        "{text:?}"
    );
}

/// Qwen3 and Llama 3.1 built by transformers' own classes ([`FAMILIES`]: tied embeddings, q/k
/// norms, rope_freqs): `smelt quantize` equals llama-quantize for the common mixtures, without
/// and with an imatrix that `smelt imatrix` collected (which llama-quantize accepts).
#[test]
#[ignore = "needs ../shared and the llama.cpp reference (WITH_CONVERT=1)"]
fn families_match_llama_quantize_live() {
    let tmp = tempfile::tempdir().unwrap();
    for family in families() {
        let dir = tmp.path().join(family);
        std::fs::create_dir(&dir).unwrap();
        family_matches_llama_quantize(&dir, family);
    }
}

/// `smelt imatrix` on `dir/model.gguf` over `text` writes llama-imatrix's entries in both formats:
/// every expert's own row count exactly (the legacy `.dat` form scales each expert's sums by its
/// count), the sums within 1e-4 (f32 sums of the same rows in the same order, of products whose
/// inputs could differ in llama.cpp's summation order elsewhere; measured: equal).
fn imatrix_matches_llama_imatrix(dir: &Path, text: &Path) {
    for format in ["gguf", "dat"] {
        let (ours, theirs) = (format!("ours.{format}"), format!("llama.{format}"));
        let run = ["-f", text.to_str().unwrap(), "-c", "128", "--chunks", "4"];
        let format_args = ["--output-format", format];
        smelt_json(
            dir,
            &[
                &["imatrix", "model.gguf", "-o", &ours][..],
                &run,
                &format_args,
            ]
            .concat(),
        );
        let o = common::llama_tool("llama-imatrix")
            .current_dir(dir)
            .args(["-m", "model.gguf", "-o", &theirs, "-t", "2"])
            .args(run)
            .args(format_args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "llama-imatrix: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let read = |name: &str| formats::imatrix::ImatrixFile::open(&dir.join(name)).unwrap();
        let (ours, theirs) = (read(&ours), read(&theirs));
        assert_eq!(ours.chunk_count, theirs.chunk_count);
        assert_eq!(
            ours.entries.keys().collect::<Vec<_>>(),
            theirs.entries.keys().collect::<Vec<_>>()
        );
        let mut worst = 0.0f64;
        for (name, e) in &theirs.entries {
            let o = &ours.entries[name];
            assert_eq!(o.counts, e.counts, "{format}: counts of {name}");
            if name.contains("_exps") && format == "gguf" {
                assert_eq!(e.counts.len(), 8, "{name} has a count per expert");
            }
            for (a, b) in o.sums.iter().zip(&e.sums) {
                worst = worst.max(((a - b) / b.abs().max(1e-30)).abs() as f64);
            }
        }
        eprintln!("imatrix ({format}): max relative difference {worst:e}");
        assert!(worst < 1e-4, "{format}: max relative difference {worst}");
    }
}

fn family_matches_llama_quantize(dir: &Path, family: &str) {
    family_tiny(&dir.join("ckpt"), family);
    convert_ok(&dir.join("ckpt"), &dir.join("model.gguf"), "f32");
    let text = shared().join("assets/text/tinystories-calib.txt");
    smelt_json(
        dir,
        &[
            "imatrix",
            "model.gguf",
            "-f",
            text.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "4",
            "-o",
            "imx.gguf",
        ],
    );
    if common::is_moe(family) {
        imatrix_matches_llama_imatrix(dir, &text);
    }
    let mut types = vec!["Q2_K", "Q3_K_M", "Q4_K_M", "Q6_K", "IQ4_XS"];
    if common::is_moe(family) {
        types.push("MXFP4_MOE");
    }
    let (n, differ) = compare(dir, &types, &[&[][..], &["--imatrix", "imx.gguf"]]);
    assert_eq!(n, 2 * types.len());
    let differ: Vec<String> = differ.iter().map(|d| format!("{family} {d}")).collect();
    assert!(differ.is_empty(), "differ from llama-quantize: {differ:#?}");
}

//! Tier 2: `smelt quantize … auto` on tinystories-3M (../shared) — a file of exactly the size of
//! llama.cpp's Q4_K_M mixture (made with the reference imatrix) that llama.cpp loads and scores
//! as smelt does, and whose KL divergence from the F32 model on held-out text is well below the
//! mixture's. A cheap representative of `scripts/allocation_quality.sh` (few chunks, four
//! candidate types); the full table is in docs/QUALITY.md.

mod common;

use std::path::Path;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn kld_and_ppl(dir: &Path, model: &Path, base: &Path, text: &Path) -> (f64, f64, f64) {
    let j = smelt_json(
        dir,
        &[
            "perplexity",
            s(model),
            "-f",
            s(text),
            "--kld",
            s(base),
            "--chunks",
            "40",
        ],
    );
    (
        j["kld"]["mean"].as_f64().unwrap(),
        j["same_top_p"].as_f64().unwrap(),
        j["ppl"].as_f64().unwrap(),
    )
}

#[test]
#[ignore = "needs ../shared (tier 2)"]
fn allocation_at_q4_k_m_size_loads_in_llama_cpp_and_beats_the_mixture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reference = shared().join("reference/tinystories-3M");
    let text = shared().join("assets/text");
    let f32 = reference.join("tinystories-3M-f32.gguf");
    let imatrix = reference.join("imatrix.gguf");
    let mixture = reference.join("tinystories-3M-imx-Q4_K_M.gguf");
    let size = std::fs::metadata(&mixture).unwrap().len().to_string();
    let auto = dir.join("auto.gguf");
    smelt_json(
        dir,
        &[
            "quantize",
            s(&f32),
            s(&auto),
            "auto",
            "--target-size",
            &size,
            "--imatrix",
            s(&imatrix),
            "-f",
            s(&text.join("tinystories-calib.txt")),
            "--chunks",
            "2",
            "--candidates",
            "Q3_K,Q4_K,Q5_K,Q6_K",
        ],
    );
    let bytes = std::fs::metadata(&auto).unwrap().len();
    assert!(bytes <= size.parse().unwrap(), "{bytes} > {size}");

    let eval = text.join("tinystories-eval.txt");
    let base = dir.join("base.bin");
    smelt_json(
        dir,
        &[
            "perplexity",
            s(&f32),
            "-f",
            s(&eval),
            "--kld-save",
            s(&base),
            "--chunks",
            "40",
        ],
    );
    let (kld_auto, top_auto, ppl_auto) = kld_and_ppl(dir, &auto, &base, &eval);
    let (kld_mix, top_mix, _) = kld_and_ppl(dir, &mixture, &base, &eval);
    assert!(
        kld_auto <= 0.85 * kld_mix,
        "allocation KLD {kld_auto} vs mixture {kld_mix}"
    );
    assert!(top_auto >= top_mix, "same top p {top_auto} < {top_mix}");

    let llama = llama_perplexity(&auto, &eval, &["-c", "512", "--chunks", "40"]);
    assert!(
        (llama / ppl_auto - 1.0).abs() < 0.001,
        "llama-perplexity {llama} vs smelt {ppl_auto}"
    );
}

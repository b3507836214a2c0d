//! `smelt release` on the real checkpoints (tier 2: needs `../shared` and the llama.cpp
//! reference): stories260K with eight types, each emitted GGUF loaded by llama-perplexity, whose
//! PPL must equal the one in smelt's report within 0.5 %; tinystories-3M with the 1–3-bit codebook
//! types (the imatrix they need collected by the release itself), within 0.1 %.

mod common;

const TYPES: [&str; 8] = [
    "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "TQ1_0",
];
const CTX: &str = "256";
const CHUNKS: &str = "20";

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn stories260k_release_loads_in_llama_cpp_with_the_reported_perplexity() {
    let shared = common::shared();
    let eval_text = shared.join("assets/text/tinystories-eval.txt");
    let (report, out, _tmp) = release(format!(
        "source = {:?}\noutput = \"release\"\ntypes = {TYPES:?}\ncalibration = {:?}\n\
         evaluation = {:?}\nctx = {CTX}\nchunks = {CHUNKS}\n\n[gates]\nmax_mean_kld = 0.2\n\
         min_same_top_p = 0.8\n",
        shared.join("assets/models/stories260K"),
        shared.join("assets/text/tinystories-calib.txt"),
        eval_text,
    ));
    for doc in ["report.json", "report.md", "size-vs-kld.svg", "README.md"] {
        assert!(out.join(doc).is_file(), "{doc} missing");
    }
    let teacher = common::llama_perplexity(
        &shared.join("reference/stories260K/stories260K-f32.gguf"),
        &eval_text,
        &["-c", CTX, "--chunks", CHUNKS],
    );
    let reported = report["teacher"]["ppl"].as_f64().unwrap();
    assert!(
        (reported / teacher - 1.0).abs() < 0.001,
        "teacher {reported} vs llama.cpp {teacher}"
    );
    let args = ["-c", CTX, "--chunks", CHUNKS];
    released_files_match_llama_perplexity(&report, &out, &eval_text, &args, 0.005);
}

/// The codebook types on tinystories-3M, rows of 256 so every tensor really takes them.
#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn tinystories_3m_codebook_release_loads_in_llama_cpp_with_the_reported_perplexity() {
    let shared = common::shared();
    let eval_text = shared.join("assets/text/tinystories-eval.txt");
    let (report, out, _tmp) = release(format!(
        "source = {:?}\noutput = \"release\"\ntypes = [\"IQ1_S\", \"IQ2_XXS\", \"IQ2_M\", \"IQ3_M\"]\n\
         calibration = {:?}\nevaluation = {:?}\nctx = 512\nchunks = 8\n\n[gates]\nmax_ppl_ratio = 2.5\n",
        shared.join("assets/models/tinystories-3M"),
        shared.join("assets/text/tinystories-calib.txt"),
        eval_text,
    ));
    let args = ["-c", "512", "--chunks", "8"];
    released_files_match_llama_perplexity(&report, &out, &eval_text, &args, 0.001);
}

/// Runs `smelt release` on `recipe` (in a fresh folder; the release goes to `release/`) and
/// returns the report, the release folder and the folder holding it.
fn release(recipe: String) -> (serde_json::Value, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let recipe_path = tmp.path().join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let report = common::smelt_json(tmp.path(), &["release", recipe_path.to_str().unwrap()]);
    assert_eq!(report["passed"], true, "{report}");
    let out = tmp.path().join("release");
    (report, out, tmp)
}

/// Every released type's file, run through llama-perplexity with `args`, gives the PPL the report
/// states within `tolerance` (relative).
fn released_files_match_llama_perplexity(
    report: &serde_json::Value,
    out: &std::path::Path,
    eval_text: &std::path::Path,
    args: &[&str],
    tolerance: f64,
) {
    for entry in report["types"].as_array().unwrap() {
        let file = out.join(entry["file"].as_str().expect("every type passed"));
        let llama = common::llama_perplexity(&file, eval_text, args);
        let ours = entry["ppl"].as_f64().unwrap();
        eprintln!(
            "{}: smelt {ours:.4}, llama-perplexity {llama:.4}",
            entry["type"]
        );
        assert!(
            (ours / llama - 1.0).abs() < tolerance,
            "{}: smelt {ours} vs llama-perplexity {llama}",
            entry["type"]
        );
    }
}

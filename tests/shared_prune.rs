//! `smelt prune` on the real stories260K (tier 2: needs `../shared` and the llama.cpp reference):
//! every structured output loads and generates in llama.cpp with smelt's perplexity equal to
//! llama-perplexity's within 0.1 %; Wanda beats magnitude at 50 %; Block Influence beats the mean
//! random single-layer drop.

mod common;

use std::path::{Path, PathBuf};

const EVAL: [&str; 4] = ["-c", "256", "--chunks", "20"];

struct Setup {
    tmp: tempfile::TempDir,
    model: PathBuf,
    calib: PathBuf,
    eval: PathBuf,
}

fn setup() -> Setup {
    let shared = common::shared();
    Setup {
        tmp: tempfile::tempdir().unwrap(),
        model: shared.join("reference/stories260K/stories260K-f32.gguf"),
        calib: shared.join("assets/text/tinystories-calib.txt"),
        eval: shared.join("assets/text/tinystories-eval.txt"),
    }
}

impl Setup {
    fn prune(&self, name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
        let out = self.tmp.path().join(name);
        let mut all = vec!["prune", p(&self.model), p(&out)];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", p(&self.calib), "-c", "256", "--chunks", "40"]);
        let report = common::smelt_json(self.tmp.path(), &all);
        (out, report)
    }

    fn ppl(&self, model: &Path) -> f64 {
        let mut args = vec!["perplexity", p(model), "-f", p(&self.eval)];
        args.extend_from_slice(&EVAL);
        common::smelt_json(self.tmp.path(), &args)["ppl"]
            .as_f64()
            .unwrap()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn structured_outputs_load_and_generate_in_llama_cpp_with_equal_perplexity() {
    let s = setup();
    let cases: [(&str, &[&str]); 4] = [
        ("depth-bi.gguf", &["--method", "depth", "--ratio", "0.2"]),
        ("depth-0.gguf", &["--method", "depth", "--layers", "0"]),
        ("ffn.gguf", &["--method", "ffn", "--ratio", "0.5"]),
        ("heads.gguf", &["--method", "heads", "--ratio", "0.5"]),
    ];
    for (name, args) in cases {
        let (out, _) = s.prune(name, args);
        let ours = s.ppl(&out);
        let llama = common::llama_perplexity(&out, &s.eval, &EVAL);
        eprintln!("{name}: smelt {ours:.4}, llama-perplexity {llama:.4}");
        assert!(
            (ours / llama - 1.0).abs() < 0.001,
            "{name}: smelt {ours} vs llama.cpp {llama}"
        );
        let text = common::llama_simple(&out);
        let continuation = text.split("Once upon a time").nth(1).unwrap_or("");
        assert!(
            continuation.split_whitespace().count() >= 3,
            "{name} generated {text:?}"
        );
    }
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn wanda_beats_magnitude_at_half_sparsity() {
    let s = setup();
    let magnitude = s.ppl(
        &s.prune("m50.gguf", &["--method", "magnitude", "--ratio", "0.5"])
            .0,
    );
    let wanda = s.ppl(
        &s.prune("w50.gguf", &["--method", "wanda", "--ratio", "0.5"])
            .0,
    );
    eprintln!("50 %: magnitude {magnitude:.3}, wanda {wanda:.3}");
    assert!(wanda < magnitude, "wanda {wanda} vs magnitude {magnitude}");
}

#[test]
#[ignore = "tier 2: needs ../shared and the llama.cpp reference"]
fn block_influence_beats_a_random_layer_drop() {
    let s = setup();
    let (bi_model, report) = s.prune("bi.gguf", &["--method", "depth", "--ratio", "0.2"]);
    let chosen = report["dropped_layers"][0].as_u64().unwrap();
    let bi = s.ppl(&bi_model);
    let all: Vec<f64> = (0..5)
        .map(|l| {
            let layer = l.to_string();
            let out = s
                .prune(
                    &format!("drop{l}.gguf"),
                    &["--method", "depth", "--layers", &layer],
                )
                .0;
            s.ppl(&out)
        })
        .collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    eprintln!(
        "Block Influence drops layer {chosen}: PPL {bi:.3}; each layer: {all:.3?}; mean {mean:.3}"
    );
    assert_eq!(bi, all[chosen as usize]);
    assert!(bi < mean, "BI {bi} vs mean random {mean}");
}

//! Tier 1: `smelt quantize IN OUT auto` on a synthetic model — the file fits its budget and
//! records its target, the same bytes and plan with 1 and 2 threads, a saved plan replays to the
//! same bytes without measuring, `--tensor-type` still wins, and bad requests are refused with
//! exit 2. No ../shared.

mod common;

use std::path::{Path, PathBuf};

use formats::gguf::{GgufFile, Value};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A synthetic F32 Llama whose rows fit the k-quants, a text, and an imatrix of it.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let hf = dir.join("hf");
    common::synth(
        &hf,
        &[
            "--hidden",
            "256",
            "--ffn",
            "512",
            "--layers",
            "2",
            "--heads",
            "4",
            "--kv-heads",
            "2",
        ],
    );
    let gguf = dir.join("model.gguf");
    common::convert_ok(&hf, &gguf, "f32");
    let text = dir.join("text.txt");
    let story = "Once upon a time there was a little cat. It liked milk and naps in the sun. ";
    std::fs::write(&text, story.repeat(60)).unwrap();
    let imatrix = dir.join("imatrix.gguf");
    common::smelt_json(
        dir,
        &[
            "imatrix",
            s(&gguf),
            "-f",
            s(&text),
            "-c",
            "64",
            "-o",
            s(&imatrix),
        ],
    );
    (gguf, text, imatrix)
}

/// `smelt quantize model out auto …` with the measurement settings of these tests.
fn auto(dir: &Path, model: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let base = [
        "quantize",
        s(model),
        s(out),
        "auto",
        "--ctx",
        "64",
        "--chunks",
        "3",
    ];
    common::smelt_json(dir, &[&base[..], extra].concat())
}

#[test]
fn allocation_fits_its_budget_and_replays_to_the_same_bytes_whatever_the_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, text, imatrix) = setup(dir);
    let common_args = [
        "-f",
        s(&text),
        "--imatrix",
        s(&imatrix),
        "--target-bpw",
        "4.5",
    ];
    let (one, two, replay) = (
        dir.join("one.gguf"),
        dir.join("two.gguf"),
        dir.join("re.gguf"),
    );
    let (plan1, plan2) = (dir.join("plan1.json"), dir.join("plan2.json"));
    let j = auto(
        dir,
        &model,
        &one,
        &[&common_args[..], &["-t", "1", "--plan-out", s(&plan1)]].concat(),
    );
    auto(
        dir,
        &model,
        &two,
        &[&common_args[..], &["-t", "2", "--plan-out", s(&plan2)]].concat(),
    );
    assert_eq!(common::sha256(&one), common::sha256(&two), "1 vs 2 threads");
    assert_eq!(
        std::fs::read(&plan1).unwrap(),
        std::fs::read(&plan2).unwrap()
    );

    let size = std::fs::metadata(&one).unwrap().len();
    let a = &j["allocation"];
    assert_eq!(
        a["file_bytes"], size,
        "the plan knows the file's exact size"
    );
    let n_weights: u64 = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    let budget = (4.5 * n_weights as f64 / 8.0).floor() as u64;
    assert_eq!(a["budget_bytes"], budget);
    assert!(size <= budget, "{size} bytes over the budget {budget}");
    assert!(
        size as f64 > 0.9 * budget as f64,
        "{size} bytes leave most of {budget} unused"
    );
    // More than one type: the allocation is not a pure file.
    let types: std::collections::BTreeSet<&str> = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["predicted_cost"].is_number())
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert!(types.len() > 1, "one type only: {types:?}");

    let file = GgufFile::open(&one).unwrap();
    assert_eq!(
        file.metadata
            .get("quantize.allocation.target")
            .and_then(Value::as_str),
        Some("4.5bpw")
    );

    // Replaying the plan measures nothing and writes the same bytes.
    let r = common::smelt_json(
        dir,
        &[
            "quantize",
            s(&model),
            s(&replay),
            "auto",
            "--plan",
            s(&plan1),
            "--imatrix",
            s(&imatrix),
        ],
    );
    assert_eq!(common::sha256(&replay), common::sha256(&one));
    assert!(r["seconds"].as_f64().unwrap() < j["seconds"].as_f64().unwrap());
}

#[test]
fn explicit_overrides_win_and_bad_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, text, imatrix) = setup(dir);
    let out = dir.join("out.gguf");
    let j = auto(
        dir,
        &model,
        &out,
        &[
            "-f",
            s(&text),
            "--imatrix",
            s(&imatrix),
            "--target-bpw",
            "5",
            "--tensor-type",
            "ffn_down=Q8_0",
            "--candidates",
            "Q3_K,Q4_K,Q6_K",
            "--dry-run",
        ],
    );
    for t in j["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.contains("ffn_down") {
            assert_eq!(t["type"], "Q8_0", "{name}");
            assert!(t["predicted_cost"].is_null(), "{name} was not allocated");
        } else if t["predicted_cost"].is_number() {
            assert!(
                ["Q3_K", "Q4_K", "Q6_K"].contains(&t["type"].as_str().unwrap()),
                "{t}"
            );
        }
    }
    assert!(!out.exists(), "a dry run writes nothing");

    let run = |extra: &[&str]| {
        let base = [
            "quantize",
            s(&model),
            s(&out),
            "auto",
            "--ctx",
            "64",
            "--chunks",
            "2",
        ];
        common::run(&[&base[..], extra].concat())
    };
    common::assert_bad_input(
        &run(&["-f", s(&text), "--target-bpw", "0.5"]),
        "below the smallest file the candidate types make",
    );
    common::assert_bad_input(
        &run(&["-f", s(&text), "--target-size", "1K"]),
        "smaller than the header",
    );
    common::assert_bad_input(&run(&["--target-bpw", "4"]), "calibration text");
    common::assert_bad_input(&run(&["-f", s(&text)]), "--target-bpw or --target-size");
    let plan = dir.join("plan.json");
    std::fs::write(&plan, r#"{"target":"4bpw"}"#).unwrap();
    common::assert_bad_input(&run(&["--plan", s(&plan)]), "not an allocation plan");
    assert!(!out.exists(), "no partial output");
    let plain = common::run(&[
        "quantize",
        s(&model),
        s(&out),
        "Q4_K_M",
        "--target-bpw",
        "4",
    ]);
    common::assert_bad_input(&plain, "go with the type auto");
}

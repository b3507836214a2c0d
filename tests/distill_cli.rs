//! `smelt distill` on synthetic models (tier 1: needs nothing outside the repository): teacher
//! datasets survive SIGKILL and resume to the same bytes; corrupt, truncated and mismatched
//! files are refused with one line.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A converted synthetic Llama (`args` for `smelt dev synth`) and a text, in `dir`.
fn model(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let ck = dir.join(format!("{name}-ck"));
    common::synth(&ck, args);
    let gguf = dir.join(format!("{name}.gguf"));
    common::convert_ok(&ck, &gguf, "f32");
    gguf
}

fn text(dir: &Path) -> PathBuf {
    let path = dir.join("text.txt");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    std::fs::write(&path, readme.repeat(3)).unwrap();
    path
}

/// Copies the GGUF `src` to `dst` with one vocabulary entry spelled differently: the same
/// model and vocabulary size, another tokenizer.
fn rename_a_token(src: &Path, dst: &Path) {
    use formats::gguf::{GgufFile, GgufWriter, Value};
    let file = GgufFile::open(src).unwrap();
    let mut metadata = file.metadata.clone();
    let Some(Value::Array(ty, mut tokens)) = metadata.get("tokenizer.ggml.tokens").cloned() else {
        panic!("no token list");
    };
    tokens[40] = Value::String("<another spelling>".into());
    metadata.set("tokenizer.ggml.tokens", Value::Array(ty, tokens));
    let infos: Vec<_> = file.tensors.iter().map(|t| t.info.clone()).collect();
    let mut w = GgufWriter::create(dst, &metadata, &infos).unwrap();
    for t in &file.tensors {
        w.write(file.data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn dataset_killed_mid_run_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = model(tmp.path(), "teacher", &common::SLOW_MODEL);
    let text = text(tmp.path());
    let args = |out: &Path| {
        vec![
            "distill".to_string(),
            "dataset".into(),
            s(&teacher).into(),
            "-f".into(),
            s(&text).into(),
            "-o".into(),
            s(out).into(),
            "-c".into(),
            "256".into(),
            "--chunks".into(),
            "24".into(),
            "-t".into(),
            "1".into(),
        ]
    };
    let clean = tmp.path().join("clean.sdd");
    let out = common::smelt().args(args(&clean)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tmp.path().join("killed.sdd");
    let partial = tmp.path().join("killed.sdd.partial");
    let mut child = common::smelt()
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a batch of chunks (8 of 256 tokens) is on disk, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(120);
    let clean_len = std::fs::metadata(&clean).unwrap().len();
    loop {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if len > clean_len / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress on {}",
            partial.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.exists(), "a finished file after SIGKILL");
    // A torn record at the end must be cut off, not trusted.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&partial)
        .unwrap();
    std::io::Write::write_all(&mut f, &[7, 0, 0, 0, 1, 2]).unwrap();
    drop(f);

    let out = common::smelt().args(args(&killed)).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("continued after chunk"), "{stdout}");
    assert!(!partial.exists());
    assert_eq!(common::sha256(&clean), common::sha256(&killed));

    // A finished file is left alone.
    let before = std::fs::metadata(&killed).unwrap().modified().unwrap();
    let out = common::smelt().args(args(&killed)).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already complete"));
    assert_eq!(
        std::fs::metadata(&killed).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn corrupt_truncated_and_mismatched_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = model(tmp.path(), "teacher", &[]);
    let text = text(tmp.path());
    let data = tmp.path().join("data.sdd");
    let dataset = |out: &Path, ctx: &str| {
        common::run(&[
            "distill",
            "dataset",
            s(&teacher),
            "-f",
            s(&text),
            "-o",
            s(out),
            "-c",
            ctx,
            "--chunks",
            "6",
        ])
    };
    assert!(dataset(&data, "64").status.success());
    let eval = |student: &Path, data: &Path| {
        common::run(&["distill", "eval", s(student), s(data), "--json"])
    };
    let ok = eval(&teacher, &data);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    // The teacher against its own dataset: only the rounding of the stored values remains.
    assert!(report["kld"]["mean"].as_f64().unwrap() < 1e-3, "{report}");
    assert!(report["same_top_p"].as_f64().unwrap() > 0.99, "{report}");
    for key in [
        "ppl",
        "ppl_err",
        "n_tokens",
        "n_chunks",
        "tokens_per_s",
        "ppl_ratio",
    ] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }

    let bytes = std::fs::read(&data).unwrap();
    let corrupt = tmp.path().join("corrupt.sdd");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&corrupt, &flipped).unwrap();
    common::assert_bad_input(&eval(&teacher, &corrupt), "corrupt");

    let truncated = tmp.path().join("truncated.sdd");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    common::assert_bad_input(&eval(&teacher, &truncated), "truncated");

    let not_sdd = tmp.path().join("text.sdd");
    std::fs::copy(&text, &not_sdd).unwrap();
    common::assert_bad_input(&eval(&teacher, &not_sdd), "not a smelt teacher dataset");

    let other_vocab = model(tmp.path(), "other-vocab", &["--vocab", "320"]);
    common::assert_bad_input(&eval(&other_vocab, &data), "vocabulary");

    let other_tokenizer = tmp.path().join("other-tok.gguf");
    rename_a_token(&teacher, &other_tokenizer);
    common::assert_bad_input(&eval(&other_tokenizer, &data), "tokenizes differently");

    // Training settings that cannot work are refused before any work.
    for bad in [
        ["--steps", "0"],
        ["--checkpoint-every", "0"],
        ["--eval-every", "0"],
        ["--lr", "0"],
    ] {
        let student = tmp.path().join("student.gguf");
        let mut args = vec![
            "distill",
            "train",
            "--teacher-data",
            s(&data),
            "--student",
            s(&teacher),
            "-o",
            s(&student),
        ];
        args.extend_from_slice(&bad);
        common::assert_bad_input(&common::run(&args), "must be positive");
        assert!(!student.exists());
    }

    // An interrupted run may only be continued with the same settings.
    let resumed = tmp.path().join("resumed.sdd");
    let partial = tmp.path().join("resumed.sdd.partial");
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    common::assert_bad_input(&dataset(&resumed, "32"), "n_ctx 64 ≠ 32");
    assert!(!resumed.exists());
}

/// `distill train` killed without warning after a checkpoint, then run again with `--resume`,
/// writes the same bytes as a run that was never interrupted.
#[test]
fn training_killed_mid_run_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = model(tmp.path(), "teacher", &common::SLOW_MODEL);
    let text = text(tmp.path());
    let data = tmp.path().join("d.sdd");
    let make = [
        "distill",
        "dataset",
        s(&teacher),
        "-f",
        s(&text),
        "-o",
        s(&data),
        "-c",
        "64",
        "--chunks",
        "16",
    ];
    assert!(common::run(&make).status.success());
    let train = |out: &Path, resume: bool| {
        let mut cmd = common::smelt();
        cmd.args(["distill", "train", "--teacher-data", s(&data), "--student"])
            .args([
                s(&teacher),
                "-o",
                s(out),
                "--steps",
                "24",
                "--batch",
                "2",
                "-t",
                "1",
            ])
            .args(["--checkpoint-every", "2", "--lr", "1e-3"]);
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    let clean = tmp.path().join("clean.gguf");
    assert!(train(&clean, false).output().unwrap().status.success());

    let killed = tmp.path().join("killed.gguf");
    let ckpt = tmp.path().join("killed.gguf.ckpt");
    let mut child = train(&killed, false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ckpt.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.exists(), "an output after SIGKILL");
    let out = train(&killed, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(common::sha256(&clean), common::sha256(&killed));
}

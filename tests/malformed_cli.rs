//! Every subcommand that reads a file, over malformed versions of real files (truncations and
//! bit flips of a converted model, an imatrix, a KL-divergence base, a teacher dataset, a
//! recipe, and the inputs fuzzing found): exit 0, 1 or 2, never a panic (101) or a signal, and
//! no output left behind by a run that failed (tier 1: needs nothing outside the repository).

mod common;

use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `bytes` itself first (every command must succeed on it, which shows the arguments are
/// right), then deterministic damage: cuts at a spread of lengths, and single bits flipped in
/// the header region and beyond.
fn variants(bytes: &[u8]) -> Vec<Vec<u8>> {
    let n = bytes.len();
    let mut out = vec![bytes.to_vec()];
    for cut in [0, 3, 4, 8, 16, 24, 40, 64, 100, 200, n / 3, n / 2, n - 1] {
        if cut < n {
            out.push(bytes[..cut].to_vec());
        }
    }
    let mut at = 4;
    while at < n {
        for bit in [0, 3, 7] {
            let mut v = bytes.to_vec();
            v[at] ^= 1 << bit;
            out.push(v);
        }
        at = if at < 512 { at + 37 } else { at * 3 };
    }
    out
}

/// Runs `args`; asserts an exit code of 0, 1 or 2 without "panicked", and that `output` (if
/// any) is absent after a failure.
fn check(args: &[&str], output: Option<&Path>, what: &str) {
    let o = common::run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    if what.ends_with(" variant 0") {
        assert_eq!(
            code,
            Some(0),
            "{what} is the undamaged file: {args:?}: {stderr}"
        );
    }
    assert!(
        matches!(code, Some(0..=2)) && !stderr.contains("panicked"),
        "{what}: {args:?} exited {:?}: {stderr}",
        o.status
    );
    if code != Some(0) {
        if let Some(out) = output {
            assert!(!out.exists(), "{what}: {args:?} failed but left {out:?}");
        }
    }
    if let Some(out) = output {
        let _ = std::fs::remove_file(out);
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
    text: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ck = dir.join("ck");
    common::synth(&ck, &["--hidden", "64", "--ffn", "128", "--layers", "2"]);
    let model = dir.join("m.gguf");
    common::convert_ok(&ck, &model, "f32");
    let text = dir.join("text.txt");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    std::fs::write(&text, &readme[..8000]).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        model,
        text,
    }
}

#[test]
fn damaged_models_never_crash_a_subcommand() {
    let f = fixture();
    let bad = f.dir.join("bad.gguf");
    let out = f.dir.join("out.gguf");
    let text = s(&f.text);
    for (i, v) in variants(&std::fs::read(&f.model).unwrap())
        .iter()
        .enumerate()
    {
        std::fs::write(&bad, v).unwrap();
        let what = format!("model variant {i}");
        let b = s(&bad);
        check(&["inspect", b], None, &what);
        check(&["quantize", b, s(&out), "Q4_0"], Some(&out), &what);
        check(
            &["perplexity", b, "-f", text, "-c", "32", "--chunks", "1"],
            None,
            &what,
        );
        let imatrix = f.dir.join("imx.gguf");
        let args = [
            "imatrix",
            b,
            "-f",
            text,
            "-c",
            "32",
            "--chunks",
            "1",
            "-o",
            s(&imatrix),
        ];
        check(&args, Some(&imatrix), &what);
        let prune = [
            "prune",
            b,
            s(&out),
            "--method",
            "magnitude",
            "--ratio",
            "0.5",
        ];
        check(&prune, Some(&out), &what);
        let sdd = f.dir.join("d.sdd");
        let args = [
            "distill",
            "dataset",
            b,
            "-f",
            text,
            "-o",
            s(&sdd),
            "-c",
            "32",
            "--chunks",
            "1",
        ];
        check(&args, Some(&sdd), &what);
    }
}

#[test]
fn damaged_side_files_never_crash_a_subcommand() {
    let f = fixture();
    let m = s(&f.model);
    let text = s(&f.text);
    let run = |args: &[&str]| assert!(common::run(args).status.success(), "{args:?}");
    let imatrix = f.dir.join("imx.gguf");
    let dat = f.dir.join("imx.dat");
    let base = f.dir.join("base.kld");
    let sdd = f.dir.join("d.sdd");
    run(&[
        "imatrix",
        m,
        "-f",
        text,
        "-c",
        "32",
        "--chunks",
        "2",
        "-o",
        s(&imatrix),
    ]);
    let dat_args = ["--output-format", "dat"];
    run(&[
        &[
            "imatrix",
            m,
            "-f",
            text,
            "-c",
            "32",
            "--chunks",
            "2",
            "-o",
            s(&dat),
        ][..],
        &dat_args,
    ]
    .concat());
    run(&[
        "perplexity",
        m,
        "-f",
        text,
        "-c",
        "32",
        "--chunks",
        "2",
        "--kl-divergence-base",
        s(&base),
    ]);
    run(&[
        "distill",
        "dataset",
        m,
        "-f",
        text,
        "-o",
        s(&sdd),
        "-c",
        "32",
        "--chunks",
        "2",
    ]);

    let out = f.dir.join("out.gguf");
    let bad = f.dir.join("bad.bin");
    let b = s(&bad);
    for (name, file) in [("imatrix", &imatrix), ("dat", &dat)] {
        for (i, v) in variants(&std::fs::read(file).unwrap()).iter().enumerate() {
            std::fs::write(&bad, v).unwrap();
            let what = format!("{name} variant {i}");
            check(
                &["quantize", "--imatrix", b, m, s(&out), "Q4_0"],
                Some(&out),
                &what,
            );
        }
    }
    for (i, v) in variants(&std::fs::read(&base).unwrap()).iter().enumerate() {
        std::fs::write(&bad, v).unwrap();
        let what = format!("KLD base variant {i}");
        let kld = [
            "perplexity",
            m,
            "-f",
            text,
            "-c",
            "32",
            "--kl-divergence-base",
            b,
        ];
        check(&[&kld[..], &["--kl-divergence"]].concat(), None, &what);
        let imported = f.dir.join("i.sdd");
        let args = ["distill", "import", b, "--teacher", m, "-o", s(&imported)];
        check(&args, Some(&imported), &what);
    }
    for (i, v) in variants(&std::fs::read(&sdd).unwrap()).iter().enumerate() {
        std::fs::write(&bad, v).unwrap();
        let what = format!("dataset variant {i}");
        check(&["distill", "eval", m, b], None, &what);
        let student = f.dir.join("s.gguf");
        let args = [
            "distill",
            "train",
            "--teacher-data",
            b,
            "--student",
            m,
            "-o",
            s(&student),
        ];
        check(
            &[&args[..], &["--steps", "1", "--batch", "1"]].concat(),
            Some(&student),
            &what,
        );
        let _ = std::fs::remove_file(f.dir.join("s.gguf.ckpt"));
    }
}

/// Runs smelt with `args` under a 1 GB address-space limit, so that an allocation sized by a
/// lying file aborts the process (and fails the test) instead of passing unnoticed.
fn run_limited(args: &[&str]) -> std::process::Output {
    let smelt = env!("CARGO_BIN_EXE_smelt");
    std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1000000; exec \"$0\" \"$@\"")
        .arg(smelt)
        .args(args)
        .output()
        .expect("sh runs")
}

/// The inputs fuzzing found (`tests/fuzz_crashers/`), each through the command that reads it:
/// - a teacher dataset whose first record claims 3 GB (allocated before the read failed);
/// - a teacher dataset whose record decodes to a recalled position outside the remembered list
///   (an index out of bounds);
/// - a tokenizer.json on which the `tokenizers` crate panics inside its decoder deserializer.
#[test]
fn fuzz_crashers_are_bad_input() {
    let f = fixture();
    let crashers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_crashers");
    let student = f.dir.join("s.gguf");
    for (name, needle) in [
        ("sdd-record-4gb.sdd", "truncated in chunk 0"),
        (
            "sdd-recall-out-of-range.sdd",
            "does not decode under its header",
        ),
    ] {
        let sdd = crashers.join(name);
        let train = [
            "distill",
            "train",
            "--teacher-data",
            s(&sdd),
            "--student",
            s(&f.model),
        ];
        let out = ["-o", s(&student), "--steps", "1"];
        common::assert_bad_input(&run_limited(&[&train[..], &out].concat()), needle);
        assert!(!student.exists());
    }

    let ck = f.dir.join("ck");
    std::fs::remove_file(ck.join("tokenizer.model")).unwrap();
    std::fs::copy(
        crashers.join("tokenizer-decoder-panic.json"),
        ck.join("tokenizer.json"),
    )
    .unwrap();
    let out = f.dir.join("c.gguf");
    let convert = ["convert", s(&ck), "-o", s(&out)];
    common::assert_bad_input(&run_limited(&convert), "tokenizer.json");
    assert!(!out.exists());
}

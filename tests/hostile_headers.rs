//! GGUF headers that lie about sizes: 2^40 tensors, a metadata array of 2^50 items, a tensor
//! whose data lies past the end of the file. Each is exit 2 with one line, in under a second,
//! and no run allocates what the file cannot back: the peak RSS of every smelt process this test
//! starts stays under 100 MB (its own test binary, so no other test's processes count).

mod common;

use std::path::Path;
use std::time::Instant;

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// `GGUF`, version 3, the tensor and key counts.
fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn lying_files(dir: &Path) -> Vec<(std::path::PathBuf, &'static str)> {
    let many = dir.join("many-tensors.gguf");
    std::fs::write(&many, header(1 << 40, 0)).unwrap();

    let array = dir.join("huge-array.gguf");
    let mut b = header(0, 1);
    b.extend(string("x.array"));
    b.extend_from_slice(&9u32.to_le_bytes()); // array
    b.extend_from_slice(&0u32.to_le_bytes()); // of u8
    b.extend_from_slice(&(1u64 << 50).to_le_bytes());
    std::fs::write(&array, b).unwrap();

    let past = dir.join("past-end.gguf");
    let mut b = header(1, 1);
    b.extend(string("general.architecture"));
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    b.extend(string("llama"));
    b.extend(string("token_embd.weight"));
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&1024u64.to_le_bytes());
    b.extend_from_slice(&1024u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // f32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    b.resize(b.len().div_ceil(32) * 32 + 64, 0);
    std::fs::write(&past, b).unwrap();
    vec![
        (many, "truncated"),
        (array, "cannot fit in the rest of the file"),
        (past, "lies outside the file"),
    ]
}

/// Peak resident set of the largest child this process has waited for, in bytes.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut u), 0);
        u
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn lying_sizes_are_refused_fast_and_without_allocating_them() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("t.txt");
    std::fs::write(&text, "Once upon a time there was a model.".repeat(40)).unwrap();
    for (file, needle) in lying_files(tmp.path()) {
        let f = file.to_str().unwrap();
        for args in [
            vec!["inspect", f],
            vec!["perplexity", f, "-f", text.to_str().unwrap(), "-c", "16"],
            vec![
                "quantize",
                f,
                tmp.path().join("q.gguf").to_str().unwrap(),
                "Q8_0",
            ],
        ] {
            let start = Instant::now();
            let out = common::run(&args);
            let seconds = start.elapsed().as_secs_f64();
            common::assert_bad_input(&out, needle);
            assert!(seconds < 1.0, "{args:?} took {seconds:.2} s");
        }
    }
    assert!(!tmp.path().join("q.gguf").exists());
    let peak = children_peak_rss();
    assert!(
        peak < 100 << 20,
        "a smelt process peaked at {} MB",
        peak >> 20
    );
}

//! Disk faults: every writer meets a full filesystem (a small tmpfs the test mounts) with exit 2,
//! one line naming the file, nothing at the target and no temporary left behind; a release
//! whose release folder is on another filesystem than its cache still lands whole, and one that
//! runs out of space leaves its cache usable for the next run.
//! Tier 2: mounting needs root (as on these machines and CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct Tmpfs {
    _parent: tempfile::TempDir,
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(&dir),
            ])
            .status()
            .expect("mount runs");
        assert!(status.success(), "cannot mount a tmpfs (needs root)");
        Tmpfs {
            _parent: parent,
            dir,
        }
    }

    /// Fills the filesystem up to `free` bytes left.
    fn fill_leaving(&self, free: u64) {
        let out = Command::new("df")
            .args(["--output=avail", "-B1", s(&self.dir)])
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let filler = vec![0u8; avail.saturating_sub(free) as usize];
        std::fs::write(self.dir.join("filler"), filler).unwrap();
    }

    /// Names in the filesystem besides the filler.
    fn left(&self) -> Vec<String> {
        common::files_in(&self.dir)
            .into_iter()
            .filter(|f| f != "filler")
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A synthetic checkpoint (5 MB in f32) and a text beside it in `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let ckpt = dir.join("ck");
    common::synth(&ckpt, &["--hidden", "256", "--ffn", "512", "--layers", "2"]);
    let text = dir.join("text.txt");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        &text,
    )
    .unwrap();
    (ckpt, text)
}

/// `distill dataset` of `model` over `text` at ctx 64 into `out`, `chunks` chunks.
fn dataset_args<'a>(
    model: &'a Path,
    text: &'a Path,
    out: &'a Path,
    chunks: &'a str,
) -> Vec<&'a str> {
    let (model, text, out) = (s(model), s(text), s(out));
    vec![
        "distill", "dataset", model, "-f", text, "-o", out, "-c", "64", "--chunks", chunks,
    ]
}

/// Writes a release recipe (Q8_0 and Q4_K_M of `ckpt`, 4 chunks of 64 of `text`) at `path`.
fn write_recipe(path: &Path, ckpt: &Path, text: &Path, output: &Path, cache: &Path) {
    let body = format!(
        "source = {ckpt:?}\noutput = {output:?}\ntypes = [\"Q8_0\", \"Q4_K_M\"]\n\
         evaluation = {text:?}\nctx = 64\nchunks = 4\ncache = {cache:?}\n"
    );
    std::fs::write(path, body).unwrap();
}

/// Every file `SHA256SUMS` lists in `out` (two types and four documents) has its checksum.
fn assert_checksums_hold(out: &Path) {
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2 + 4, "{sums}");
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        assert_eq!(common::sha256(&out.join(file)), hash, "{file}");
    }
}

#[test]
#[ignore = "tier 2: mounts a tmpfs (needs root)"]
fn a_full_disk_is_exit_2_with_nothing_at_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, text) = inputs(tmp.path());
    let model = tmp.path().join("m.gguf");
    let o = common::run(&["convert", s(&ckpt), "-o", s(&model), "--outtype", "f32"]);
    assert!(o.status.success());

    let fs = Tmpfs::mount("1M");
    let target = fs.dir.join("out.gguf");
    let convert = ["convert", s(&ckpt), "-o", s(&target), "--outtype", "f32"];
    common::assert_bad_input(&common::run(&convert), "No space left on device");
    assert_eq!(fs.left(), Vec::<String>::new());
    let quantize = ["quantize", s(&model), s(&target), "Q8_0"];
    common::assert_bad_input(&common::run(&quantize), "No space left on device");
    assert_eq!(fs.left(), Vec::<String>::new());

    fs.fill_leaving(64 << 10);
    let dataset = fs.dir.join("d.sdd");
    let make = dataset_args(&model, &text, &dataset, "200");
    common::assert_bad_input(&common::run(&make), "No space left on device");
    assert!(!dataset.exists());
}

#[test]
#[ignore = "tier 2: mounts a tmpfs (needs root)"]
fn a_release_folder_on_another_filesystem_lands_whole_or_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, text) = inputs(tmp.path());
    let recipe = |output: &Path| {
        let path = tmp.path().join("recipe.toml");
        write_recipe(&path, &ckpt, &text, output, &tmp.path().join("cache"));
        path
    };

    // Too small for the Q8_0 file: exit 2 naming it, no report, no partial file.
    let small = Tmpfs::mount("1M");
    let out = small.dir.join("out");
    let o = common::run(&["release", s(&recipe(&out))]);
    common::assert_bad_input(&o, "ck-Q8_0.gguf: cannot move into place");
    assert!(!out.join("report.json").exists());
    if out.exists() {
        assert!(common::files_in(&out).iter().all(|f| !f.contains("Q8_0")));
    }

    // The same cache, a roomy filesystem: the run completes and its checksums hold.
    let roomy = Tmpfs::mount("64M");
    let out = roomy.dir.join("out");
    let o = common::run(&["release", s(&recipe(&out))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_checksums_hold(&out);
}

/// `tests/faults_eio.c` built into a preload library in `dir`.
fn eio_shim(dir: &Path) -> PathBuf {
    let lib = dir.join("faults_eio.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults_eio.c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o", s(&lib), s(&source), "-ldl"])
        .status()
        .expect("cc runs");
    assert!(status.success(), "cannot build the EIO shim");
    lib
}

/// smelt with writes under `under` failing with EIO: the first `files` files it writes there
/// are spared, every later one fails once `after` bytes have gone into it.
fn run_with_eio(
    shim: &Path,
    under: &Path,
    files: u32,
    after: u64,
    args: &[&str],
) -> std::process::Output {
    common::smelt()
        .env("LD_PRELOAD", shim)
        .env("FAULT_EIO_UNDER", under)
        .env("FAULT_EIO_FILES", files.to_string())
        .env("FAULT_EIO_AFTER", after.to_string())
        .args(args)
        .output()
        .expect("smelt runs")
}

#[test]
#[ignore = "tier 2: builds a preload library with cc and runs the release pipeline"]
fn an_io_error_is_exit_2_with_nothing_at_the_target_and_the_cache_still_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let shim = eio_shim(tmp.path());
    let (ckpt, text) = inputs(tmp.path());
    let model = tmp.path().join("m.gguf");
    let o = common::run(&["convert", s(&ckpt), "-o", s(&model), "--outtype", "f32"]);
    assert!(o.status.success());

    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let left = || common::files_in(&disk);
    let target = disk.join("out.gguf");
    for after in [0, 1 << 20] {
        let convert = ["convert", s(&ckpt), "-o", s(&target), "--outtype", "f32"];
        let o = run_with_eio(&shim, &disk, 0, after, &convert);
        common::assert_bad_input(&o, "Input/output error");
        assert_eq!(left(), Vec::<String>::new(), "convert, EIO after {after} B");
        let quantize = ["quantize", s(&model), s(&target), "Q8_0"];
        let o = run_with_eio(&shim, &disk, 0, after, &quantize);
        common::assert_bad_input(&o, "Input/output error");
        assert_eq!(
            left(),
            Vec::<String>::new(),
            "quantize, EIO after {after} B"
        );
    }
    let dataset = disk.join("d.sdd");
    let make = dataset_args(&model, &text, &dataset, "8");
    let o = run_with_eio(&shim, &disk, 0, 4 << 10, &make);
    common::assert_bad_input(&o, "Input/output error");
    assert!(!dataset.exists());

    // A release whose cache and folder are on the failing disk, each run from an empty cache:
    // run k spares the first k/2 files the release writes and fails the next one, at its start
    // (k even) or 4 KiB into it (k odd), so the fault lands in every file the release writes
    // (teacher, KL base, each type, the evaluations, report, checksums). Each time the same cache
    // on a healthy disk then completes the run, and its checksums hold.
    let mut failed_at: Vec<String> = Vec::new();
    for run in 0..200u32 {
        let (files, after) = (run / 2, if run % 2 == 0 { 0 } else { 4 << 10 });
        let work = disk.join(format!("run-{run}"));
        let out = work.join("out");
        let recipe = tmp.path().join("recipe.toml");
        write_recipe(&recipe, &ckpt, &text, &out, &work.join("cache"));
        let o = run_with_eio(&shim, &disk, files, after, &["release", s(&recipe)]);
        if o.status.success() {
            // Past the last file (at its start), or past a file smaller than 4 KiB.
            if after == 0 {
                break;
            }
            continue;
        }
        common::assert_bad_input(&o, "Input/output error");
        assert!(!out.join("SHA256SUMS").exists(), "run {run}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        let file = stderr
            .split(s(&work))
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        if !failed_at.iter().any(|f| f == file) {
            failed_at.push(file.to_string());
        }
        let o = common::run(&["release", s(&recipe)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_checksums_hold(&out);
    }
    assert_eq!(failed_at.len(), 12, "{failed_at:#?}");

    // A finished folder whose rerun fails keeps no stale checksum list.
    let recipe = tmp.path().join("recipe.toml");
    assert!(common::run(&["release", s(&recipe)]).status.success());
    let o = run_with_eio(&shim, &disk, 0, 0, &["release", s(&recipe)]);
    common::assert_bad_input(&o, "report.json: Input/output error");
    let out = std::fs::read_to_string(&recipe).unwrap();
    let out = out
        .lines()
        .find_map(|l| l.strip_prefix("output = "))
        .unwrap();
    assert!(!Path::new(out.trim_matches('"')).join("SHA256SUMS").exists());
}

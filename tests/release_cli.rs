//! `smelt release` and `smelt demo` on synthetic checkpoints (tier 1: needs nothing outside the
//! repository): the release folder, gates, the content cache, SIGKILL safety, bad recipes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

const TYPES: [&str; 8] = [
    "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "TQ1_0",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs smelt with `--json` appended and returns (exit code, report).
fn release_json(args: &[&str]) -> (i32, Value) {
    let out = common::smelt()
        .args(args)
        .arg("--json")
        .output()
        .expect("smelt runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr: {stderr}"));
    (out.status.code().unwrap(), report)
}

fn ggufs(dir: &Path) -> Vec<String> {
    common::files_in(dir)
        .into_iter()
        .filter(|f| f.ends_with(".gguf"))
        .collect()
}

fn by_type<'a>(report: &'a Value, ty: &str) -> &'a Value {
    report["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == ty)
        .unwrap_or_else(|| panic!("{ty} missing from the report"))
}

fn work_done(report: &Value) -> Vec<String> {
    report["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["quantized"] == true || t["evaluated"] == true)
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn demo_writes_the_release_folder_and_a_rerun_does_no_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let (code, report) = release_json(&["demo", s(&dir)]);
    assert_eq!(code, 0, "{report}");
    let out = dir.join("release");
    let mut expected: Vec<String> = TYPES.iter().map(|t| format!("demo-{t}.gguf")).collect();
    expected.sort();
    assert_eq!(ggufs(&out), expected);
    for doc in ["report.json", "report.md", "size-vs-kld.svg", "README.md"] {
        assert!(out.join(doc).is_file(), "{doc} missing");
    }
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(on_disk["types"], report["types"]);
    let table = std::fs::read_to_string(out.join("report.md")).unwrap();
    let svg = std::fs::read_to_string(out.join("size-vs-kld.svg")).unwrap();
    for t in TYPES {
        let entry = by_type(&report, t);
        assert_eq!(entry["verdict"]["passed"], true, "{entry}");
        assert_eq!(entry["quantized"], true);
        assert_eq!(entry["evaluated"], true);
        let file = out.join(entry["file"].as_str().unwrap());
        assert_eq!(common::sha256(&file), entry["sha256"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            entry["bytes"].as_u64().unwrap()
        );
        assert!(entry["kld"]["mean"].as_f64().unwrap() > 0.0);
        assert!(table.contains(&format!("| {t} |")), "{t} not in report.md");
        assert!(svg.contains(&format!(">{t}</text>")), "{t} not in the plot");
    }
    // fewer bits, more divergence: the ends of the range are ordered as they must be
    let kld = |t| by_type(&report, t)["kld"]["mean"].as_f64().unwrap();
    assert!(kld("Q8_0") < kld("Q4_K_M") && kld("Q4_K_M") < kld("Q2_K"));
    assert!(report["teacher"]["ppl"].as_f64().unwrap() > 1.0);
    assert_eq!(report["passed"], true);

    let hashes: Vec<String> = expected
        .iter()
        .map(|f| common::sha256(&out.join(f)))
        .collect();
    let (code, again) = release_json(&["demo", s(&dir)]);
    assert_eq!(code, 0);
    assert!(
        work_done(&again).is_empty(),
        "a rerun redid {:?}",
        work_done(&again)
    );
    for stage in ["teacher", "imatrix", "kld_base"] {
        assert_eq!(again["stages"][stage]["cached"], true, "{stage}");
    }
    let rehashed: Vec<String> = expected
        .iter()
        .map(|f| common::sha256(&out.join(f)))
        .collect();
    assert_eq!(hashes, rehashed);
    assert_eq!(again["types"][0]["kld"], report["types"][0]["kld"]);
}

/// A demo folder whose recipe is then edited by the test.
fn demo_folder(tmp: &Path) -> PathBuf {
    let dir = tmp.join("demo");
    let (code, _) = release_json(&["demo", s(&dir)]);
    assert_eq!(code, 0);
    dir
}

#[test]
fn a_tight_gate_fails_its_type_only_and_editing_one_type_redoes_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = demo_folder(tmp.path());
    let recipe = dir.join("recipe.toml");
    let out = dir.join("release");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let q2k = by_type(&release_json(&["demo", s(&dir)]).1, "Q2_K")["kld"]["mean"]
        .as_f64()
        .unwrap();

    // a gate below Q2_K's measured KLD: exit 1, its file removed, the others kept, no new work
    let tight = format!("{text}\n[gates.Q2_K]\nmax_mean_kld = {}\n", q2k / 2.0);
    std::fs::write(&recipe, &tight).unwrap();
    let (code, report) = release_json(&["release", s(&recipe)]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["passed"], false);
    let failed = by_type(&report, "Q2_K");
    assert_eq!(failed["verdict"]["passed"], false);
    assert!(failed["file"].is_null());
    let why = failed["verdict"]["failures"][0].as_str().unwrap();
    assert!(
        why.contains("mean KLD") && why.contains("max_mean_kld"),
        "{why}"
    );
    assert!(!out.join("demo-Q2_K.gguf").exists());
    assert_eq!(ggufs(&out).len(), 7);
    assert!(work_done(&report).is_empty(), "{:?}", work_done(&report));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**fail**: mean KLD"), "{md}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(!card.contains("demo-Q2_K.gguf") && card.contains("Q2_K: mean KLD"));

    // the text output names the failure too (stderr), and the exit code holds without --json
    let plain = common::run(&["release", s(&recipe)]);
    assert_eq!(plain.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("Q2_K failed its gates"));

    // loosening the gate brings the file back without re-evaluating (same bytes, same figures)
    std::fs::write(&recipe, &text).unwrap();
    let (code, report) = release_json(&["release", s(&recipe)]);
    assert_eq!(code, 0);
    let q = by_type(&report, "Q2_K");
    assert_eq!(
        (q["quantized"].as_bool(), q["evaluated"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(work_done(&report), ["Q2_K"]);

    // changing one type's recipe redoes that type only
    let edited = format!("{text}\n[quantize.Q4_K_M]\npure = true\n");
    std::fs::write(&recipe, &edited).unwrap();
    let before = common::sha256(&out.join("demo-Q4_K_M.gguf"));
    let (code, report) = release_json(&["release", s(&recipe)]);
    assert_eq!(code, 0);
    assert_eq!(work_done(&report), ["Q4_K_M"]);
    let q = by_type(&report, "Q4_K_M");
    assert_eq!(
        (q["quantized"].as_bool(), q["evaluated"].as_bool()),
        (Some(true), Some(true))
    );
    assert_ne!(common::sha256(&out.join("demo-Q4_K_M.gguf")), before);

    // dropping a type from the recipe (here by flag) removes its file
    let (code, report) = release_json(&["release", s(&recipe), "--types", "Q8_0,Q4_K_M"]);
    assert_eq!(code, 0);
    assert!(work_done(&report).is_empty());
    assert_eq!(ggufs(&out), ["demo-Q4_K_M.gguf", "demo-Q8_0.gguf"]);
}

#[test]
fn allocated_types_are_released_from_one_cached_measurement() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = demo_folder(tmp.path());
    let recipe = dir.join("recipe.toml");
    let out = dir.join("release");
    let (code, report) = release_json(&["release", s(&recipe), "--types", "Q4_K_M,auto:4.5bpw"]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(work_done(&report), ["auto-4.5bpw"]);
    let auto = by_type(&report, "auto-4.5bpw");
    assert_eq!(auto["verdict"]["passed"], true);
    assert_eq!(auto["file"], "demo-auto-4.5bpw.gguf");
    assert!(auto["bpw"].as_f64().unwrap() <= 4.5, "{auto}");
    let file = out.join("demo-auto-4.5bpw.gguf");
    let gguf = formats::gguf::GgufFile::open(&file).unwrap();
    let target = gguf.metadata.get("quantize.allocation.target");
    assert_eq!(target.and_then(|v| v.as_str()), Some("4.5bpw"));
    let costs = || {
        common::files_in(&dir.join(".smelt-cache"))
            .into_iter()
            .filter(|f| f.starts_with("costs-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(costs().len(), 1, "one measurement");

    // A second target is solved from the same measurement; a rerun does no work.
    let types = "Q4_K_M,auto:4.5bpw,auto:3.5bpw";
    let (code, report) = release_json(&["release", s(&recipe), "--types", types]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(work_done(&report), ["auto-3.5bpw"]);
    assert_eq!(costs().len(), 1, "measured once");
    let kld = |r: &Value, t| by_type(r, t)["kld"]["mean"].as_f64().unwrap();
    assert!(kld(&report, "auto-3.5bpw") > kld(&report, "auto-4.5bpw"));
    let (_, again) = release_json(&["release", s(&recipe), "--types", types]);
    assert!(work_done(&again).is_empty(), "{:?}", work_done(&again));

    // Dropping the allocations removes their files.
    let (code, _) = release_json(&["release", s(&recipe), "--types", "Q4_K_M"]);
    assert_eq!(code, 0);
    assert_eq!(ggufs(&out), ["demo-Q4_K_M.gguf"]);
}

#[test]
fn sigkill_mid_run_leaves_no_partial_gguf_and_the_next_run_completes() {
    sigkill_case("");
}

/// The same with every type released as a split set (folders of shards, renamed into place
/// whole): a killed run leaves no partial set.
#[test]
fn sigkill_mid_run_leaves_no_partial_split_set() {
    sigkill_case("split_max_size = \"4M\"\n");
}

/// Every released GGUF, shards of split sets as `SET/SHARD.gguf`, sorted.
fn released(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for name in common::files_in(dir) {
        let path = dir.join(&name);
        if path.is_dir() {
            out.extend(ggufs(&path).into_iter().map(|f| format!("{name}/{f}")));
        } else if name.ends_with(".gguf") {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// The release items (files or set folders) among [`released`].
fn items(dir: &Path) -> Vec<String> {
    let mut items: Vec<String> = released(dir)
        .into_iter()
        .map(|f| f.split('/').next().unwrap().to_string())
        .collect();
    items.dedup();
    items
}

/// Kills a release run part-way (`extra` recipe lines) and checks what it left and the rerun.
fn sigkill_case(extra: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let dir = tmp.path().join(name);
        common::synth(&dir.join("ck"), &common::SLOW_MODEL);
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
            dir.join("text.txt"),
        )
        .unwrap();
        let recipe = format!(
            "source = \"ck\"\noutput = \"out\"\ntypes = {TYPES:?}\ncalibration = \"text.txt\"\n\
             evaluation = \"text.txt\"\nctx = 128\nchunks = 8\n{extra}"
        );
        std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
        dir
    };
    let clean = make("clean");
    let (code, _) = release_json(&["release", s(&clean.join("recipe.toml"))]);
    assert_eq!(code, 0);

    let killed = make("killed");
    let out = killed.join("out");
    let mut child = common::smelt()
        .args(["release", s(&killed.join("recipe.toml")), "-t", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (!out.is_dir() || items(&out).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run finished before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = released(&out);
    assert!(
        items(&out).len() < TYPES.len(),
        "killed after the last type: {left:?}"
    );
    if !extra.is_empty() {
        let set = clean.join("out/ck-Q8_0");
        assert!(ggufs(&set).len() > 1, "Q8_0 is a split set: {set:?}");
    }
    for f in &left {
        assert_eq!(
            common::sha256(&out.join(f)),
            common::sha256(&clean.join("out").join(f)),
            "{f} is partial or differs"
        );
    }
    assert!(!out.join("report.json").exists());

    let (code, report) = release_json(&["release", s(&killed.join("recipe.toml"))]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(released(&out), released(&clean.join("out")));
    for f in released(&out) {
        assert_eq!(
            common::sha256(&out.join(&f)),
            common::sha256(&clean.join("out").join(&f)),
            "{f}"
        );
    }
}

/// Two runs of one recipe at once: the second waits for the first's lock on the cache, then
/// finds all the work done; the release folder ends complete and matches its checksums.
#[test]
fn a_second_release_on_the_same_cache_waits_for_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::synth(&dir.join("ck"), &common::SLOW_MODEL);
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        dir.join("text.txt"),
    )
    .unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        "source = \"ck\"\noutput = \"out\"\ntypes = [\"Q4_K_M\", \"Q8_0\"]\n\
         calibration = \"text.txt\"\nevaluation = \"text.txt\"\nctx = 128\nchunks = 8\n",
    )
    .unwrap();
    let start = || {
        common::smelt()
            .args(["release", s(&recipe), "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join(".smelt-cache/.lock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = start();
    let runs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    assert!(runs.iter().all(|r| r.status.code() == Some(0)));
    // The second normally waits; the first may, if the second took the lock between the first
    // creating the lock file and locking it. Exactly one waits, and it finds the work done.
    let waited: Vec<&std::process::Output> = runs
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.stderr).contains("waiting for it to finish"))
        .collect();
    assert_eq!(waited.len(), 1);
    let report: Value = serde_json::from_slice(&waited[0].stdout).unwrap();
    assert!(work_done(&report).is_empty(), "{report}");
    let sums = std::fs::read_to_string(dir.join("out/SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2 + 4, "{sums}");
    for line in sums.lines() {
        let (hash, file) = line.split_once("  ").unwrap();
        assert_eq!(common::sha256(&dir.join("out").join(file)), hash, "{file}");
    }
}

#[test]
fn bad_recipes_are_refused_with_exit_2_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    common::synth(&ck, &["--hidden", "256", "--ffn", "512"]);
    std::fs::write(tmp.path().join("text.txt"), "hello ".repeat(2000)).unwrap();
    let base = "source = \"ck\"\noutput = \"out\"\nevaluation = \"text.txt\"\nctx = 64\n";
    let cases = [
        ("types = [\"Q4_K_M\", \"Q9_X\"]\n", "Q9_X"),
        ("types = [\"Q4_K_M\", \"q4_k_m\"]\n", "listed twice"),
        ("types = []\n", "types is empty"),
        ("types = [\"Q8_0\"]\ncolour = 3\n", "colour"),
        (
            "types = [\"Q8_0\"]\n[gates]\nmin_same_top_p = 90\n",
            "min_same_top_p",
        ),
        ("types = [\"Q8_0\"]\n[gates]\nmax_kld = 0.1\n", "max_kld"),
        (
            "types = [\"Q8_0\"]\n[gates.Q2_K]\nmax_mean_kld = 0.1\n",
            "Q2_K is not among the types",
        ),
        (
            "types = [\"Q8_0\"]\n[quantize.Q8_0]\ntensor_type = [\"attn_v\"]\n",
            "PATTERN=TYPE",
        ),
        // IQ2_XXS needs an importance matrix, and without calibration text there is none.
        ("types = [\"Q8_0\", \"IQ2_XXS\"]\n", "importance matrix"),
        ("types = [\"Q8_0\"\n", "recipe.toml"),
        (
            "types = [\"Q8_0\"]\nsplit_max_size = \"5K\"\n",
            "split_max_size",
        ),
        ("types = [\"Q8_0\"]\n[card]\nauthor = \"x\"\n", "author"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let recipe = tmp.path().join("recipe.toml");
        std::fs::write(&recipe, format!("{base}{extra}")).unwrap();
        let out = common::run(&["release", s(&recipe)]);
        common::assert_bad_input(&out, needle);
        let release = tmp.path().join("out");
        assert!(
            !release.exists() || ggufs(&release).is_empty(),
            "case {i} left output"
        );
    }
    // every case was refused before the teacher's passes (no imatrix, no KLD base)
    let cache = tmp.path().join(".smelt-cache");
    assert!(
        !cache.exists()
            || common::files_in(&cache)
                .iter()
                .all(|f| !f.starts_with("base-") && !f.starts_with("imatrix-")),
        "{:?}",
        common::files_in(&cache)
    );
    let recipe = tmp.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        "source = \"nowhere\"\noutput = \"out\"\nevaluation = \"text.txt\"\ntypes = [\"Q8_0\"]\n",
    )
    .unwrap();
    common::assert_bad_input(&common::run(&["release", s(&recipe)]), "nowhere");
    std::fs::write(&recipe, format!("{base}types = [\"Q8_0\"]\n")).unwrap();
    common::assert_bad_input(
        &common::run(&[
            "release",
            s(&recipe),
            "--evaluation",
            s(&tmp.path().join("missing.txt")),
        ]),
        "missing.txt",
    );
    common::assert_bad_input(
        &common::run(&["release", s(&recipe), "-c", "100000"]),
        "text.txt",
    );
}

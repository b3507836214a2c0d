//! One type of a release: quantize into the cache's work folder, measure against the teacher's
//! KL-divergence base, judge by the gates, and move the file into the release folder only when it
//! passes. Results are recorded by content key, so unchanged types cost nothing on a rerun.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use eval::kld::{compare_with_base, KldSummary};
use eval::model::Model;
use eval::tokenizer::Tokenizer;
use formats::gguf::split::SplitLimit;
use formats::gguf::GgufFile;
use formats::kld_base::BaseReader;
use indicatif::MultiProgress;
use quantize::imatrix::ImportanceWeights;
use quantize::job::{self, JobOptions, Source};
use serde::{Deserialize, Serialize};

use super::cache::{hash_file, load_record, save_record, Key};
use super::recipe::{Gates, TypeRecipe};
use crate::allocate::{self, AllocationPlan};
use crate::progress;
use eval::kld::KldHeadline;

/// What a type measured against the teacher (cached by the type's key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// SHA-256 of the quantized GGUF.
    pub sha256: String,
    /// Size in bytes of the file, or of all shards of a split set.
    pub bytes: u64,
    /// Bits per weight over all tensors.
    pub bpw: f64,
    /// Perplexity on the evaluation text.
    pub ppl: f64,
    /// Its standard error.
    pub ppl_err: f64,
    /// KLD, same-top-p, Δp and PPL ratio against the teacher.
    #[serde(flatten)]
    pub versus_teacher: KldHeadline,
    /// Seconds the quantization took when it was done.
    pub quantize_s: f64,
    /// Seconds the evaluation took when it was done.
    pub eval_s: f64,
    /// The released files, relative to the release folder: `NAME-TYPE.gguf`, or the shards of
    /// a split set in the folder `NAME-TYPE/`.
    #[serde(default)]
    pub files: Vec<String>,
}

/// A gate verdict: passed, or the limits that were broken, each with the figure that broke it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Every gate held.
    pub passed: bool,
    /// One line per broken limit.
    pub failures: Vec<String>,
}

/// Judges a measurement by its gates.
pub fn judge(gates: &Gates, m: &Measurement) -> Verdict {
    let mut failures = Vec::new();
    if let Some(max) = gates
        .max_mean_kld
        .filter(|&max| m.versus_teacher.kld.mean > max)
    {
        failures.push(format!(
            "mean KLD {:.6} > max_mean_kld {max}",
            m.versus_teacher.kld.mean
        ));
    }
    if let Some(max) = gates
        .max_ppl_ratio
        .filter(|&max| m.versus_teacher.ppl_ratio > max)
    {
        failures.push(format!(
            "PPL ratio {:.6} > max_ppl_ratio {max}",
            m.versus_teacher.ppl_ratio
        ));
    }
    if let Some(min) = gates
        .min_same_top_p
        .filter(|&min| m.versus_teacher.same_top_p < min)
    {
        failures.push(format!(
            "same top p {:.6} < min_same_top_p {min}",
            m.versus_teacher.same_top_p
        ));
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}

/// What a type ended as in this run.
#[derive(Debug, Clone, Serialize)]
pub struct TypeOutcome {
    /// File type name.
    #[serde(rename = "type")]
    pub ftype: String,
    /// Content key of its inputs (source, type, tensor choices, imatrix, evaluation base).
    pub key: String,
    /// File name in the release folder, when it passed.
    pub file: Option<String>,
    /// The figures.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// The gates it was judged by.
    pub gates: Gates,
    /// The verdict.
    pub verdict: Verdict,
    /// Quantized in this run.
    pub quantized: bool,
    /// Evaluated in this run.
    pub evaluated: bool,
    /// Seconds this run spent on it.
    pub seconds: f64,
}

/// What every type shares.
pub struct Shared<'a> {
    /// Release name.
    pub name: &'a str,
    /// The quantization input.
    pub source: &'a Source,
    /// Content hash of the source.
    pub source_hash: &'a str,
    /// The importance matrix, its key and its recorded name.
    pub imatrix: Option<(&'a ImportanceWeights, &'a str)>,
    /// The teacher's KL-divergence base and its key.
    pub base: (&'a Path, &'a str),
    /// Release folder.
    pub output: &'a Path,
    /// Cache folder.
    pub cache: &'a Path,
    /// Types larger than this are released as split sets.
    pub split: SplitLimit,
    /// The teacher GGUF (what allocations were measured on).
    pub teacher: &'a Path,
    /// Each `auto:TARGET` type's measured costs and their key, by type name.
    pub costs: &'a BTreeMap<String, (AllocationPlan, String)>,
}

/// Name under which quantized files record the release's imatrix (independent of where the
/// cache lives, so the bytes are too).
pub const IMATRIX_NAME: &str = "imatrix.gguf";

/// `<name>-<TYPE>.gguf`: the name a release gives the file of a type.
pub fn release_file_name(name: &str, ftype: &str) -> String {
    format!("{name}-{ftype}.gguf")
}

/// `<name>-<TYPE>`: the folder a release gives a type split into shards
/// (`<name>-<TYPE>-0000i-of-0000n.gguf`), so that a set appears or goes as a whole.
pub fn release_set_name(name: &str, ftype: &str) -> String {
    format!("{name}-{ftype}")
}

/// How `smelt quantize` would be asked for type `t` with these importance weights.
pub fn job_options(
    t: &TypeRecipe,
    imatrix: Option<&ImportanceWeights>,
) -> Result<JobOptions<'static>> {
    Ok(JobOptions {
        ftype: t.ftype,
        overrides: t.choices.overrides()?,
        imatrix: imatrix.map(|w| (w.clone(), IMATRIX_NAME.to_string())),
        allow_requantize: false,
        progress: &|_| {},
        split: None,
        metadata: Vec::new(),
    })
}

/// The content key of type `t`'s work: everything its bytes and figures depend on (smelt's
/// version, the source, the type and its tensor choices, the imatrix, the evaluation base, the
/// split), and nothing they do not (its gates only judge the figures).
fn type_key(
    source_hash: &str,
    t: &TypeRecipe,
    imatrix_key: Option<&str>,
    costs_key: Option<&str>,
    base_key: &str,
    split: SplitLimit,
) -> String {
    Key::new("type")
        .with(env!("CARGO_PKG_VERSION"))
        .with(source_hash)
        .with(&t.name)
        .with(costs_key.unwrap_or("mixture"))
        .with(&serde_json::to_string(&t.choices).expect("serializable"))
        .with(imatrix_key.unwrap_or("none"))
        .with(base_key)
        .with(&format!("{split:?}"))
        .short()
}

impl Shared<'_> {
    fn key(&self, t: &TypeRecipe) -> String {
        let imatrix_key = self.imatrix.map(|(_, key)| key);
        let costs_key = self.costs.get(&t.name).map(|(_, key)| key.as_str());
        type_key(
            self.source_hash,
            t,
            imatrix_key,
            costs_key,
            self.base.1,
            self.split,
        )
    }

    /// The job options of `t`; for an `auto:TARGET` type, with the types its plan chooses from
    /// the measured costs.
    fn options(&self, t: &TypeRecipe) -> Result<JobOptions<'static>> {
        let mut opts = job_options(t, self.imatrix.map(|(w, _)| w))?;
        if let (Some(target), Some((costs, _))) = (t.auto, self.costs.get(&t.name)) {
            let plan = allocate::retarget(costs, self.teacher, self.source, &opts, target)?;
            allocate::apply(&plan, self.source, &mut opts)?;
        }
        Ok(opts)
    }

    /// Checks that `t` can be quantized from this source with the importance matrix it will get.
    pub fn check(&self, t: &TypeRecipe) -> Result<()> {
        job::plan(self.source, &self.options(t)?)?;
        Ok(())
    }

    /// The release file of `t`.
    pub fn release_file(&self, t: &TypeRecipe) -> String {
        release_file_name(self.name, &t.name)
    }

    /// The release folder a split set of `t` goes into.
    fn release_set(&self, t: &TypeRecipe) -> String {
        release_set_name(self.name, &t.name)
    }

    /// Brings type `t` up to date: reuses its recorded result when its key is unchanged,
    /// otherwise quantizes and evaluates; then places or removes its release file by the verdict.
    pub fn run(&self, t: &TypeRecipe, bars: &MultiProgress) -> Result<TypeOutcome> {
        let start = Instant::now();
        let key = self.key(t);
        let record_path = self.cache.join("types").join(format!("{key}.json"));
        let (file_name, set_name) = (self.release_file(t), self.release_set(t));
        let work_dir = self.cache.join("work");
        let (mut quantized, mut evaluated) = (false, false);

        let mut measurement: Option<Measurement> = load_record(&record_path);
        let in_place = |m: &Measurement| {
            let target = self.output.join(item_of(m, &file_name, &set_name));
            target.exists() && item_sha256(&target).ok().as_ref() == Some(&m.sha256)
        };
        let needs_file = |m: &Option<Measurement>| match m {
            None => true,
            Some(m) => judge(&t.gates, m).passed && !in_place(m),
        };
        let mut work = None;
        if needs_file(&measurement) {
            let (quantize_s, item, files) = self.quantize(t, &work_dir, bars)?;
            quantized = true;
            let sha256 = item_sha256(&item)?;
            if measurement.as_ref().is_none_or(|m| m.sha256 != sha256) {
                let first = work_dir.join(&files[0]);
                let mut m = self.evaluate(&t.name, &first, sha256, bars)?;
                m.quantize_s = quantize_s;
                m.files = files;
                evaluated = true;
                save_record(&record_path, &m)?;
                measurement = Some(m);
            }
            work = Some(item);
        }
        let measurement = measurement.expect("recorded or measured");
        let verdict = judge(&t.gates, &measurement);
        let item = item_of(&measurement, &file_name, &set_name).to_string();
        let (target, other) = match item == file_name {
            true => (self.output.join(&file_name), self.output.join(&set_name)),
            false => (self.output.join(&set_name), self.output.join(&file_name)),
        };
        let file = if verdict.passed {
            if let Some(work) = work.filter(|w| w.exists()) {
                remove_item(&target)?;
                move_into_place(&work, &target)?;
            }
            remove_item(&other)?;
            Some(item)
        } else {
            if let Some(work) = work {
                remove_item(&work)?;
            }
            remove_item(&target)?;
            remove_item(&other)?;
            None
        };
        Ok(TypeOutcome {
            ftype: t.name.clone(),
            key,
            file,
            measurement,
            gates: t.gates,
            verdict,
            quantized,
            evaluated,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Quantizes `t` into `work_dir`: one file, or a folder of shards when it is larger than the
    /// split size. Returns the seconds taken, the file or folder, and the files relative to
    /// `work_dir`.
    fn quantize(
        &self,
        t: &TypeRecipe,
        work_dir: &Path,
        bars: &MultiProgress,
    ) -> Result<(f64, PathBuf, Vec<String>)> {
        let start = Instant::now();
        let mut opts = self.options(t)?;
        let plan = job::plan(self.source, &opts)?;
        let infos: Vec<_> = plan.tensors.iter().map(|t| t.info.clone()).collect();
        let split = self
            .split
            .assign(&infos)
            .map_err(|m| anyhow::anyhow!("type {}: split_max_size: {m}", t.name))?
            .len()
            > 1;
        let (item, out) = match split {
            false => {
                let file = work_dir.join(self.release_file(t));
                (file.clone(), file)
            }
            true => {
                let dir = work_dir.join(self.release_set(t));
                std::fs::create_dir_all(&dir)?;
                (dir.clone(), dir.join(self.release_file(t)))
            }
        };
        opts.split = split.then_some(self.split);
        let bar = bars.add(progress::bytes(
            plan.bytes_in(),
            &format!("{}: quantize", t.name),
        ));
        let progress = |n: u64| bar.inc(n);
        opts.progress = &progress;
        let files = job::write(self.source, &plan, &out, &opts)?;
        bar.finish_and_clear();
        let relative = files
            .iter()
            .map(|f| {
                f.strip_prefix(work_dir)
                    .expect("written in the work folder")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        Ok((start.elapsed().as_secs_f64(), item, relative))
    }

    fn evaluate(
        &self,
        ftype: &str,
        path: &Path,
        sha256: String,
        bars: &MultiProgress,
    ) -> Result<Measurement> {
        let start = Instant::now();
        let model = Model::open(path)?;
        let bos = Tokenizer::from_gguf(&model.file().metadata, path)?.bos_to_add();
        let mut base = BaseReader::open(self.base.0)?;
        let bar = bars.add(progress::tokens(
            (base.n_chunks * base.n_ctx) as u64,
            &format!("{ftype}: kl-divergence"),
        ));
        let n_ctx = base.n_ctx as u64;
        let stats = compare_with_base(&model, &mut base, None, bos, |_, _| bar.inc(n_ctx))?;
        bar.finish_and_clear();
        let ppl = stats.perplexity();
        Ok(figures(
            &stats.summary(),
            (ppl.ppl(), ppl.ppl_err()),
            model.file(),
            sha256,
            start.elapsed().as_secs_f64(),
        ))
    }
}

fn figures(
    s: &KldSummary,
    ppl: (f64, f64),
    file: &GgufFile,
    sha256: String,
    eval_s: f64,
) -> Measurement {
    let bytes: u64 = file.tensors.iter().map(|t| t.n_bytes).sum();
    let elements: u64 = file.tensors.iter().map(|t| t.info.n_elements()).sum();
    Measurement {
        sha256,
        bytes: file
            .paths()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum(),
        bpw: bytes as f64 * 8.0 / elements.max(1) as f64,
        ppl: ppl.0,
        ppl_err: ppl.1,
        versus_teacher: KldHeadline::from(s),
        quantize_s: 0.0,
        eval_s,
        files: Vec::new(),
    }
}

/// The release item a measurement's files make: the file, or the split set's folder.
fn item_of<'a>(m: &Measurement, file_name: &'a str, set_name: &'a str) -> &'a str {
    match m.files.len() {
        0 | 1 => file_name,
        _ => set_name,
    }
}

/// SHA-256 of a released file, or of a split set's shards in order (a folder).
fn item_sha256(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return hash_file(path);
    }
    let first = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("-00001-of-"))
        .min()
        .with_context(|| format!("{}: no first shard", path.display()))?;
    let model = GgufFile::open(&first)?;
    Ok(formats::digest::hex(&formats::digest::model_sha256(
        &model,
    )?))
}

/// Moves `work` (a file, or a split set's folder) to `target`: a rename, or, when the cache and
/// the release folder are on different filesystems, a synced copy under a hidden name beside
/// `target` renamed into place whole, then the work removed. Either way `target` appears whole
/// or not at all.
fn move_into_place(work: &Path, target: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("{}: cannot move into place", target.display()))
    };
    match std::fs::rename(work, target) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
        Err(e) => return Err(failed(e)),
    }
    let tmp = formats::gguf::temp_path_for(target);
    if let Err(e) = copy_item(work, &tmp).and_then(|()| std::fs::rename(&tmp, target)) {
        let _ = remove_item(&tmp);
        return Err(failed(e));
    }
    remove_item(work)
}

/// Copies a file, or a folder of files, and syncs what it wrote.
fn copy_item(from: &Path, to: &Path) -> std::io::Result<()> {
    let copy_file = |from: &Path, to: &Path| {
        std::fs::copy(from, to)?;
        std::fs::File::open(to)?.sync_all()
    };
    if !from.is_dir() {
        return copy_file(from, to);
    }
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        copy_file(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// Removes a released file or split set's folder unless it is already gone.
pub fn remove_item(path: &Path) -> Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path).with_context(|| format!("{}: cannot remove", path.display()))
    } else {
        remove_if_present(path)
    }
}

/// Removes `path` unless it is already gone.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("{}: cannot remove", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use eval::kld::{DeltaP, KldFigures};

    fn type_recipe(name: &str) -> TypeRecipe {
        TypeRecipe::named(name, Gates::default()).unwrap()
    }

    /// A measurement with these headline figures.
    pub(crate) fn measurement(mean_kld: f64, ppl_ratio: f64, same_top_p: f64) -> Measurement {
        Measurement {
            sha256: "00".repeat(32),
            bytes: 3 << 20,
            bpw: 4.5,
            ppl: 10.0 * ppl_ratio,
            ppl_err: 0.1,
            versus_teacher: KldHeadline {
                kld: KldFigures {
                    mean: mean_kld,
                    median: mean_kld / 2.0,
                    p90: mean_kld * 2.0,
                    p99: mean_kld * 5.0,
                    max: mean_kld * 9.0,
                },
                same_top_p,
                delta_p: DeltaP {
                    mean: -0.001,
                    rms: 0.02,
                },
                ppl_ratio,
            },
            quantize_s: 1.0,
            eval_s: 2.0,
            files: Vec::new(),
        }
    }

    #[test]
    fn a_type_key_changes_exactly_when_an_input_of_its_work_changes() {
        let split = SplitLimit::parse_size("49G").unwrap();
        let t = type_recipe("Q4_K_M");
        let key = |source: &str, t: &TypeRecipe, imatrix, base: &str, split| {
            type_key(source, t, imatrix, None, base, split)
        };
        let base = key("src", &t, Some("imx"), "kld", split);
        assert_eq!(base, key("src", &t, Some("imx"), "kld", split));
        let mut pure = t.clone();
        pure.choices.pure = true;
        let mut gated = t.clone();
        gated.gates.max_mean_kld = Some(0.01);
        assert_eq!(base, key("src", &gated, Some("imx"), "kld", split));
        let variants = [
            key("src2", &t, Some("imx"), "kld", split),
            key("src", &type_recipe("Q5_K_M"), Some("imx"), "kld", split),
            key("src", &pure, Some("imx"), "kld", split),
            key("src", &t, None, "kld", split),
            key("src", &t, Some("imx2"), "kld", split),
            key("src", &t, Some("imx"), "kld2", split),
            key("src", &t, Some("imx"), "kld", SplitLimit::Tensors(3)),
            type_key("src", &t, Some("imx"), Some("costs"), "kld", split),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
            assert!(variants[..i].iter().all(|w| w != v), "variant {i}");
        }
    }

    #[test]
    fn gates_pass_at_their_limits_and_name_every_figure_past_them() {
        let m = measurement(0.05, 1.02, 0.9);
        assert!(judge(&Gates::default(), &m).passed);
        let at_limits = Gates {
            max_mean_kld: Some(0.05),
            max_ppl_ratio: Some(1.02),
            min_same_top_p: Some(0.9),
        };
        let v = judge(&at_limits, &m);
        assert!(v.passed && v.failures.is_empty(), "{v:?}");
        let strict = Gates {
            max_mean_kld: Some(0.04),
            max_ppl_ratio: Some(1.01),
            min_same_top_p: Some(0.95),
        };
        let v = judge(&strict, &m);
        assert!(!v.passed);
        assert_eq!(
            v.failures,
            [
                "mean KLD 0.050000 > max_mean_kld 0.04",
                "PPL ratio 1.020000 > max_ppl_ratio 1.01",
                "same top p 0.900000 < min_same_top_p 0.95",
            ]
        );
        let one = Gates {
            max_ppl_ratio: Some(1.01),
            ..Gates::default()
        };
        assert_eq!(judge(&one, &m).failures.len(), 1);
    }

    #[test]
    fn release_names_follow_the_recipe_name_and_type() {
        assert_eq!(release_file_name("m", "Q4_K_M"), "m-Q4_K_M.gguf");
        assert_eq!(release_set_name("m", "Q4_K_M"), "m-Q4_K_M");
    }
}

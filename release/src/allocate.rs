//! `smelt quantize IN OUT auto`: a file of a given size whose tensor types are chosen by
//! measurement instead of a fixed mixture. Each quantizable tensor is encoded in every candidate
//! type and put alone into the full-precision model, whose mean KL divergence from its own output
//! on calibration chunks is that choice's cost ([`eval::sensitivity`]); the types that minimise
//! the summed cost under the byte budget are then chosen ([`quantize::allocation`]). The result
//! is a plan: it can be saved, shown, and replayed without measuring again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use eval::sensitivity::Reference;
use formats::gguf::{file_size, pad_to, GgmlType, TensorInfo, Value};
use quantize::allocation::{solve, Candidate, Item};
use quantize::job::{self, importance_for, JobOptions, Plan, Source};
use quantize::mixture::{allows_quantization, always_requires_imatrix, FileType, FILE_TYPES};
use quantize::types::{can_quantize, needs_importance};
use serde::{Deserialize, Serialize};

/// How large the allocated file may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Bits per weight over the whole file (metadata included) and every weight of the model.
    Bpw(f64),
    /// Bytes of the whole file.
    Size(u64),
}

impl Target {
    /// The label recorded in the file and the plan (`4.5bpw`, `2018496B`).
    pub fn label(&self) -> String {
        match self {
            Target::Bpw(b) => format!("{b}bpw"),
            Target::Size(s) => format!("{s}B"),
        }
    }

    /// Parses a label: `4.5bpw`, or a size in bytes with an optional `K`/`M`/`G` (powers of
    /// 1000) or a `B` suffix.
    pub fn parse(text: &str) -> Result<Target> {
        let t = text.trim();
        if let Some(b) = t.strip_suffix("bpw") {
            let bpw: f64 = b
                .parse()
                .map_err(|_| anyhow!("{text:?}: expected e.g. 4.5bpw"))?;
            if !(bpw > 0.0 && bpw <= 32.0) {
                bail!("{text:?}: bits per weight must be in (0, 32]");
            }
            return Ok(Target::Bpw(bpw));
        }
        let (digits, unit) = match t.chars().last() {
            Some('K') => (&t[..t.len() - 1], 1_000),
            Some('M') => (&t[..t.len() - 1], 1_000_000),
            Some('G') => (&t[..t.len() - 1], 1_000_000_000),
            Some('B') => (&t[..t.len() - 1], 1),
            _ => (t, 1),
        };
        match digits.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Target::Size(n * unit)),
            _ => bail!("{text:?}: expected a size like 2018496, 2M or 4.5bpw"),
        }
    }

    /// The budget in bytes for a model of `n_weights` weights.
    fn bytes(&self, n_weights: u64) -> u64 {
        match *self {
            Target::Bpw(b) => (b * n_weights as f64 / 8.0).floor() as u64,
            Target::Size(s) => s,
        }
    }
}

/// What to measure on.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The calibration text.
    pub text: PathBuf,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks measured.
    pub chunks: usize,
}

/// The candidate types tried for a tensor whose rows fit the 256-value blocks: the codebook
/// types (those that need importance data only where there is some), the k-quants, IQ4_XS and
/// Q8_0.
const CANDIDATES: &[GgmlType] = &[
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];
/// The codebook types among the candidates.
const CODEBOOK_CANDIDATES: &[GgmlType] = &[
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
];
/// The candidates for rows that only 32-value blocks fit (the types llama.cpp falls back to).
const ROW32_CANDIDATES: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::IQ4_NL,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// The allocation, as `--plan-out` writes it and `--plan` replays it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllocationPlan {
    /// The target as given (`4.5bpw`, `2018496B`).
    pub target: String,
    /// Bytes the whole file may take.
    pub budget_bytes: u64,
    /// Bytes the whole file takes.
    pub file_bytes: u64,
    /// The file type recorded in `general.file_type`: the one whose default type holds the most
    /// bytes.
    pub file_type: String,
    /// Sum of the chosen types' costs: the predicted mean KL divergence.
    pub predicted_kld: f64,
    /// What the costs were measured on.
    pub calibration: PlanCalibration,
    /// Every allocated tensor, in file order.
    pub tensors: Vec<PlannedType>,
}

/// The measurement a plan came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanCalibration {
    /// The text's file name.
    pub text: String,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks.
    pub chunks: usize,
    /// Scored positions per measurement.
    pub positions: usize,
}

/// One allocated tensor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlannedType {
    /// Tensor name.
    pub name: String,
    /// The chosen type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its bytes in the file (padded).
    pub bytes: u64,
    /// Its measured cost (mean KLD added).
    pub cost: f64,
    /// Every candidate measured: type, bytes, cost.
    pub candidates: Vec<(String, u64, f64)>,
}

/// The metadata keys an allocated file carries, besides llama-quantize's.
fn allocation_metadata(target: &str, method: &str, predicted: f64) -> Vec<(String, Value)> {
    vec![
        (
            "quantize.allocation.target".into(),
            Value::String(target.into()),
        ),
        (
            "quantize.allocation.method".into(),
            Value::String(method.into()),
        ),
        (
            "quantize.allocation.predicted_kld".into(),
            Value::F32(predicted as f32),
        ),
    ]
}

fn method(cal: &PlanCalibration) -> String {
    format!(
        "smelt measured KLD: {} chunks of {} on {}",
        cal.chunks, cal.n_ctx, cal.text
    )
}

/// The tensors an allocation chooses for: quantizable, stored in a float type, not decided by an
/// explicit override.
fn allocatable(plan: &Plan, opts: &JobOptions) -> Vec<usize> {
    (0..plan.tensors.len())
        .filter(|&i| {
            let t = &plan.tensors[i];
            allows_quantization(&t.info.name, &t.info.dims, &opts.overrides)
                && !opts.overrides.decides(&t.info.name)
                && matches!(t.from, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
        })
        .collect()
}

/// The types tried for tensor `t`: those whose blocks fit its rows and that can be encoded with
/// the importance data there is for it.
fn candidates_for(
    info: &TensorInfo,
    opts: &JobOptions,
    asked: Option<&[GgmlType]>,
) -> Vec<GgmlType> {
    let cols = info.dims[0];
    let has_weights = importance_for(info, opts).is_some();
    let list: Vec<GgmlType> = match asked {
        Some(a) => a.to_vec(),
        None if cols.is_multiple_of(256) => [CODEBOOK_CANDIDATES, CANDIDATES].concat(),
        None => ROW32_CANDIDATES.to_vec(),
    };
    // As llama-quantize: the very low-bit types need importance data, except on the token
    // embedding and the output, where only the encoders that cannot run without it refuse.
    let ends = matches!(info.name.as_str(), "token_embd.weight" | "output.weight");
    list.into_iter()
        .filter(|ty| cols.is_multiple_of(ty.block_size() as u64) && can_quantize(*ty))
        .filter(|ty| {
            has_weights || !(needs_importance(*ty) || (always_requires_imatrix(*ty) && !ends))
        })
        .collect()
}

/// The file type whose default type takes the most bytes among `chosen` (of the file types that
/// share a default type, the lowest id: Q4_K_S before Q4_K_M). It only names the file
/// (`general.file_type`); the plan decides every tensor.
fn dominant_file_type(chosen: &[(GgmlType, u64)]) -> FileType {
    let mut bytes: BTreeMap<u32, u64> = BTreeMap::new();
    for (ty, b) in chosen {
        *bytes.entry(ty.id()).or_default() += b;
    }
    FILE_TYPES
        .iter()
        .filter(|f| bytes.contains_key(&f.default_type.id()))
        .max_by_key(|f| (bytes[&f.default_type.id()], std::cmp::Reverse(f.id)))
        .copied()
        .unwrap_or_else(|| FileType::parse("Q8_0").expect("known"))
}

/// Bytes of everything in the file but the allocated tensors (header, metadata, tensor infos and
/// the tensors that keep their type), and the file's alignment, to which every tensor is padded.
fn fixed_bytes(plan: &Plan, items: &[usize]) -> Result<(u64, u64)> {
    let infos: Vec<TensorInfo> = plan.tensors.iter().map(|t| t.info.clone()).collect();
    let (total, align) = file_size(Path::new("output"), &plan.metadata, &infos)?;
    let allocated: u64 = items
        .iter()
        .map(|&i| pad_to(plan.tensors[i].bytes_out, align))
        .sum();
    Ok((total - allocated, align))
}

/// The byte budget of an allocation and the tensors it shares out.
struct Budget<'a> {
    /// The job's plan with provisional types (for names, shapes and encoding).
    plan: Plan,
    /// The user's options with the allocation's metadata keys.
    opts: JobOptions<'a>,
    /// Indices in `plan` of the tensors allocated.
    items: Vec<usize>,
    /// Bytes the whole file may take.
    total: u64,
    /// Bytes of everything else.
    fixed: u64,
    /// The file's alignment.
    align: u64,
}

impl<'a> Budget<'a> {
    fn new(
        path: &Path,
        source: &Source,
        opts: &JobOptions<'a>,
        target: Target,
        cal: &PlanCalibration,
    ) -> Result<Budget<'a>> {
        // The metadata's length does not depend on the values chosen later (fixed-size numbers,
        // the same strings), so the budget can be worked out before choosing.
        let mut probe = provisional(opts, FileType::parse("Q8_0").expect("known"));
        probe.metadata = allocation_metadata(&target.label(), &method(cal), 0.0);
        let plan = job::plan(source, &probe)?;
        let items = allocatable(&plan, &probe);
        if items.is_empty() {
            bail!("{}: no tensor is left to allocate", path.display());
        }
        let total = target.bytes(plan.n_elements());
        let (fixed, align) = fixed_bytes(&plan, &items)?;
        if total < fixed {
            bail!(
                "{}: the target {} ({total} bytes) is smaller than the header and the tensors that keep their type ({fixed} bytes)",
                path.display(),
                target.label()
            );
        }
        Ok(Budget {
            plan,
            opts: probe,
            items,
            total,
            fixed,
            align,
        })
    }

    /// Padded bytes of allocated tensor `i` (an index in the plan) as `ty`.
    fn padded(&self, i: usize, ty: GgmlType) -> u64 {
        let n = self.plan.tensors[i].info.n_elements();
        pad_to(
            ty.bytes_for(n).expect("candidates fit their rows"),
            self.align,
        )
    }

    /// Solves for the least predicted cost within the budget and writes the plan down.
    fn choose(
        &self,
        path: &Path,
        target: Target,
        items: Vec<Item>,
        calibration: PlanCalibration,
    ) -> Result<AllocationPlan> {
        let room = self.total - self.fixed;
        let chosen = solve(&items, room).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let picked: Vec<&Candidate> = items
            .iter()
            .zip(&chosen)
            .map(|(item, &k)| &item.candidates[k])
            .collect();
        let ftype = dominant_file_type(&picked.iter().map(|c| (c.ty, c.bytes)).collect::<Vec<_>>());
        let tensors = items
            .iter()
            .zip(&picked)
            .map(|(item, c)| PlannedType {
                name: item.name.clone(),
                ty: c.ty.name().to_string(),
                bytes: c.bytes,
                cost: c.cost,
                candidates: item
                    .candidates
                    .iter()
                    .map(|c| (c.ty.name().to_string(), c.bytes, c.cost))
                    .collect(),
            })
            .collect();
        Ok(AllocationPlan {
            target: target.label(),
            budget_bytes: self.total,
            file_bytes: self.fixed + picked.iter().map(|c| c.bytes).sum::<u64>(),
            file_type: ftype.name.to_string(),
            predicted_kld: picked.iter().map(|c| c.cost).sum(),
            calibration,
            tensors,
        })
    }
}

/// Measures every candidate of every allocatable tensor of `source` on `path` (a GGUF of the
/// same model at full precision, the teacher: the source itself, or the source converted) and
/// chooses the types for `target`. `opts` carries the user's overrides and importance matrix;
/// `progress(done, total)` is called after each measurement.
pub fn allocate(
    path: &Path,
    source: &Source,
    opts: &JobOptions,
    target: Target,
    calibration: &Calibration,
    asked: Option<&[GgmlType]>,
    progress: &dyn Fn(usize, usize),
) -> Result<AllocationPlan> {
    let mut cal = PlanCalibration {
        text: calibration
            .text
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        n_ctx: calibration.n_ctx,
        chunks: calibration.chunks,
        positions: 0,
    };
    let budget = Budget::new(path, source, opts, target, &cal)?;
    let plan = &budget.plan;
    let lists: Vec<Vec<GgmlType>> = budget
        .items
        .iter()
        .map(|&i| candidates_for(&plan.tensors[i].info, &budget.opts, asked))
        .collect();
    if let Some((k, _)) = lists.iter().enumerate().find(|(_, l)| l.is_empty()) {
        let info = &plan.tensors[budget.items[k]].info;
        bail!(
            "tensor {}: none of the candidate types fits its rows of {}",
            info.name,
            info.dims[0]
        );
    }
    let smallest: u64 = budget
        .items
        .iter()
        .zip(&lists)
        .map(|(&i, l)| l.iter().map(|&ty| budget.padded(i, ty)).min().unwrap_or(0))
        .sum();
    if budget.fixed + smallest > budget.total {
        bail!(
            "{}: the target {} ({} bytes) is below the smallest file the candidate types make ({} bytes)",
            path.display(),
            target.label(),
            budget.total,
            budget.fixed + smallest
        );
    }

    let tokenized = eval::text::open_tokenized(
        path,
        &calibration.text,
        calibration.n_ctx,
        Some(calibration.chunks),
    )?;
    let mut reference = Reference::new(tokenized);
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut done = 0;
    let mut items = Vec::with_capacity(budget.items.len());
    for (&i, list) in budget.items.iter().zip(&lists) {
        let name = plan.tensors[i].info.name.clone();
        let mut candidates = Vec::with_capacity(list.len());
        for &ty in list {
            let data = job::encode_tensor(source, plan, i, ty, &budget.opts)?;
            let cost = reference
                .cost(&name, ty, data)
                .with_context(|| format!("measuring {name} as {ty}"))?;
            candidates.push(Candidate {
                ty,
                bytes: budget.padded(i, ty),
                cost,
            });
            done += 1;
            progress(done, total);
        }
        items.push(Item { name, candidates });
    }
    cal.positions = reference.positions();
    budget.choose(path, target, items, cal)
}

/// Chooses again for another target from the costs a saved plan measured (every candidate's
/// cost is in it), without measuring: one measurement serves every size.
pub fn retarget(
    saved: &AllocationPlan,
    path: &Path,
    source: &Source,
    opts: &JobOptions,
    target: Target,
) -> Result<AllocationPlan> {
    let budget = Budget::new(path, source, opts, target, &saved.calibration)?;
    let mut items = Vec::with_capacity(budget.items.len());
    for &i in &budget.items {
        let name = &budget.plan.tensors[i].info.name;
        let Some(t) = saved.tensors.iter().find(|t| &t.name == name) else {
            bail!("plan: has no costs for tensor {name} (a plan for another model?)");
        };
        let candidates = t
            .candidates
            .iter()
            .map(|(ty, _, cost)| {
                let ty = GgmlType::from_name(ty)
                    .filter(|t| budget.plan.tensors[i].info.dims[0] % t.block_size() as u64 == 0)
                    .ok_or_else(|| anyhow!("plan: tensor {name}: type {ty:?} does not fit it"))?;
                Ok(Candidate {
                    ty,
                    bytes: budget.padded(i, ty),
                    cost: *cost,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        items.push(Item {
            name: name.clone(),
            candidates,
        });
    }
    budget.choose(path, target, items, saved.calibration.clone())
}

/// A copy of the user's options with no types assigned yet.
fn provisional<'a>(opts: &JobOptions<'a>, ftype: FileType) -> JobOptions<'a> {
    JobOptions {
        ftype,
        overrides: opts.overrides.clone(),
        imatrix: opts.imatrix.clone(),
        allow_requantize: opts.allow_requantize,
        progress: opts.progress,
        split: None,
        metadata: Vec::new(),
    }
}

/// Applies `plan` to `opts`: its file type, its per-tensor types and its metadata keys. Fails
/// when the plan does not name exactly the tensors of `source` there is to allocate (a plan for
/// another model, or other overrides).
pub fn apply(plan: &AllocationPlan, source: &Source, opts: &mut JobOptions) -> Result<()> {
    let ftype = FileType::parse(&plan.file_type)
        .ok_or_else(|| anyhow!("plan: unknown file type {:?}", plan.file_type))?;
    let mut assigned = BTreeMap::new();
    for t in &plan.tensors {
        let ty = GgmlType::from_name(&t.ty)
            .ok_or_else(|| anyhow!("plan: tensor {}: unknown type {:?}", t.name, t.ty))?;
        assigned.insert(t.name.clone(), ty);
    }
    opts.ftype = ftype;
    opts.overrides.assigned = BTreeMap::new();
    let probe = job::plan(source, opts)?;
    let wanted: Vec<&str> = allocatable(&probe, opts)
        .into_iter()
        .map(|i| probe.tensors[i].info.name.as_str())
        .collect();
    let named: Vec<&str> = plan.tensors.iter().map(|t| t.name.as_str()).collect();
    if let Some(missing) = wanted.iter().find(|n| !named.contains(n)) {
        bail!("plan: has no type for tensor {missing} (a plan for another model?)");
    }
    if let Some(extra) = named.iter().find(|n| !wanted.contains(n)) {
        bail!("plan: names tensor {extra}, which this model has none of to allocate");
    }
    opts.overrides.assigned = assigned;
    opts.metadata =
        allocation_metadata(&plan.target, &method(&plan.calibration), plan.predicted_kld);
    Ok(())
}

/// The size of the file `plan` (the job's plan for an allocation) writes; fails if it is over
/// the allocation's budget, which would be a bug in the budget's accounting.
pub fn check_size(output: &Path, plan: &Plan, allocation: &AllocationPlan) -> Result<u64> {
    let infos: Vec<TensorInfo> = plan.tensors.iter().map(|t| t.info.clone()).collect();
    let (size, _) = file_size(output, &plan.metadata, &infos)?;
    if size > allocation.budget_bytes {
        bail!(
            "{}: the allocated file would take {size} bytes, over the budget of {}",
            output.display(),
            allocation.budget_bytes
        );
    }
    Ok(size)
}

/// Reads a plan written by `--plan-out`.
pub fn read_plan(path: &Path) -> Result<AllocationPlan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not an allocation plan", path.display()))
}

/// Writes a plan (temporary file and rename).
pub fn write_plan(path: &Path, plan: &AllocationPlan) -> Result<()> {
    let mut text = serde_json::to_string_pretty(plan)?;
    text.push('\n');
    formats::gguf::write_atomically(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_bits_per_weight_or_bytes() {
        assert_eq!(Target::parse("4.5bpw").unwrap(), Target::Bpw(4.5));
        assert_eq!(Target::parse("2018496").unwrap(), Target::Size(2018496));
        assert_eq!(Target::parse("2M").unwrap(), Target::Size(2_000_000));
        assert_eq!(Target::parse("2018496B").unwrap(), Target::Size(2018496));
        assert!(Target::parse("0bpw").is_err());
        assert!(Target::parse("lots").is_err());
        assert_eq!(Target::Bpw(3.5).label(), "3.5bpw");
        assert_eq!(Target::Bpw(4.0).bytes(1000), 500);
    }

    #[test]
    fn the_dominant_type_names_the_file_type() {
        use GgmlType::*;
        let f = dominant_file_type(&[(Q4_K, 100), (Q6_K, 60), (Q6_K, 50)]);
        assert_eq!(f.name, "Q6_K");
        let f = dominant_file_type(&[(Q4_K, 100), (Q5_K, 10)]);
        assert_eq!(f.name, "Q4_K_S");
    }
}

//! Pruning a float GGUF: structured (drop blocks, FFN channels, attention head groups, experts) and
//! unstructured (magnitude or Wanda scores at a ratio or an N:M pattern), tensor by tensor.
//!
//! The choices themselves (which layers, channels, heads) are made from scores the caller passes
//! in — activation statistics come from the eval runtime — so this module only knows numbers:
//! which rows and columns survive, which weights become zero, and what the metadata must say for
//! llama.cpp to load the result (`block_count`, `feed_forward_length`, head counts and, once heads
//! are gone, the explicit `key_length`/`value_length`).

use std::collections::HashMap;
use std::path::Path;

use arch::Role;
use formats::gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorInfo, Value};
use rayon::prelude::*;

/// Why a pruning request cannot be carried out (always bad input: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A file could not be read or written.
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    /// The request does not fit this model.
    #[error("{0}")]
    Bad(String),
}

fn bad(message: impl Into<String>) -> PruneError {
    PruneError::Bad(message.into())
}

/// The model facts pruning needs, from the GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneShape {
    /// The architecture (whose roles name the tensors).
    pub arch: &'static arch::Architecture,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// FFN hidden width.
    pub n_ff: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Hidden width of one expert.
    pub n_ff_exp: usize,
    /// Experts of each block's FFN (0: a dense FFN).
    pub n_expert: usize,
    /// Experts each token is routed to.
    pub n_expert_used: usize,
}

impl PruneShape {
    /// The shape of `file`, which must be a model smelt runs (its tensor roles are the ones
    /// pruning rewrites).
    pub fn of(file: &GgufFile) -> Result<PruneShape, PruneError> {
        let h = arch::Hparams::read(file)?;
        Ok(PruneShape {
            arch: h.arch,
            n_layer: h.n_layer,
            n_head: h.n_head,
            n_head_kv: h.n_head_kv,
            head_dim: h.head_dim,
            n_ff: h.n_ff,
            n_embd: h.n_embd,
            n_ff_exp: h.n_ff_exp,
            n_expert: h.n_expert,
            n_expert_used: h.n_expert_used,
        })
    }

    /// Refuses FFN-channel pruning of a model whose FFNs are mixtures of experts.
    pub fn check_ffn_channels(&self) -> Result<(), PruneError> {
        match self.n_expert {
            0 => Ok(()),
            n => Err(bad(format!(
                "--method ffn removes channels of a dense FFN; this model's FFNs are \
                 mixtures of {n} experts (use --method depth or heads)"
            ))),
        }
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_head_kv.max(1)
    }
}

/// Checks that a pruning ratio lies in (0, 1).
pub fn check_ratio(ratio: f64) -> Result<(), PruneError> {
    if ratio > 0.0 && ratio < 1.0 {
        Ok(())
    } else {
        Err(bad(format!("--ratio {ratio} is outside (0, 1)")))
    }
}

/// How many of `n` items a ratio removes: `round(ratio · n)`, which must leave at least one and
/// remove at least one.
pub fn count_to_remove(n: usize, ratio: f64, what: &str) -> Result<usize, PruneError> {
    check_ratio(ratio)?;
    let k = (ratio * n as f64).round() as usize;
    if k == 0 || k >= n {
        return Err(bad(format!(
            "--ratio {ratio} of {n} {what} removes {k}: nothing or everything"
        )));
    }
    Ok(k)
}

/// Indices of the `keep` highest scores, in ascending index order (ties keep the lower index).
pub fn keep_highest(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(order.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// A structural change.
#[derive(Debug, Clone, PartialEq)]
pub enum Structure {
    /// Nothing removed.
    Unchanged,
    /// Blocks dropped (sorted, existing, not all).
    DropLayers(Vec<usize>),
    /// FFN channels kept, the same number in every layer (per layer, ascending).
    KeepFfn(Vec<Vec<usize>>),
    /// Key/value heads kept with their query heads, the same number in every layer.
    KeepHeadGroups(Vec<Vec<usize>>),
    /// Experts kept (with their router rows), the same number in every layer.
    KeepExperts(Vec<Vec<usize>>),
}

/// Checks a list of blocks to drop.
pub fn layers_to_drop(shape: &PruneShape, layers: &[usize]) -> Result<Structure, PruneError> {
    let mut list = layers.to_vec();
    list.sort_unstable();
    list.dedup();
    if let Some(&l) = list.iter().find(|&&l| l >= shape.n_layer) {
        return Err(bad(format!(
            "--layers: layer {l} does not exist (the model has {} blocks, 0–{})",
            shape.n_layer,
            shape.n_layer - 1
        )));
    }
    if list.is_empty() || list.len() == shape.n_layer {
        return Err(bad(
            "--layers must drop at least one block and keep at least one",
        ));
    }
    Ok(Structure::DropLayers(list))
}

/// Head groups to keep per layer from per-query-head scores (`scores[layer][head]`), removing
/// `ratio` of the query heads in whole GQA groups (a key/value head with all its query heads).
pub fn head_groups_to_keep(
    shape: &PruneShape,
    ratio: f64,
    scores: &[Vec<f64>],
) -> Result<Structure, PruneError> {
    if shape.arch.query_width_is_embedding {
        return Err(bad(format!(
            "heads cannot be pruned from a {} model: llama.cpp sizes its query projection by the \
             embedding width (prune depth or FFN instead)",
            shape.arch.gguf_name
        )));
    }
    let remove = count_to_remove(shape.n_head, ratio, "heads")?;
    let group = shape.group();
    if remove % group != 0 {
        return Err(bad(format!(
            "removing {remove} of {} heads breaks GQA groups of {group} query heads per key/value head; \
             choose a ratio that removes a multiple of {group}",
            shape.n_head
        )));
    }
    let keep = shape.n_head_kv - remove / group;
    let kept = scores
        .iter()
        .map(|heads| {
            let per_group: Vec<f64> = heads.chunks(group).map(|g| g.iter().sum()).collect();
            keep_highest(&per_group, keep)
        })
        .collect();
    Ok(Structure::KeepHeadGroups(kept))
}

/// FFN channels to keep per layer from per-channel scores (`scores[layer][channel]`), removing
/// `ratio` of them in every layer (Minitron-style width pruning, uniform across layers).
pub fn ffn_channels_to_keep(
    shape: &PruneShape,
    ratio: f64,
    scores: &[Vec<f64>],
) -> Result<Structure, PruneError> {
    shape.check_ffn_channels()?;
    let keep = shape.n_ff - count_to_remove(shape.n_ff, ratio, "FFN channels")?;
    Ok(Structure::KeepFfn(
        scores.iter().map(|s| keep_highest(s, keep)).collect(),
    ))
}

/// Experts to keep per layer from per-expert scores (`scores[layer][expert]`), removing `ratio`
/// of them in every layer; each token must still find its `expert_used_count` experts.
pub fn experts_to_keep(
    shape: &PruneShape,
    ratio: f64,
    scores: &[Vec<f64>],
) -> Result<Structure, PruneError> {
    if shape.n_expert == 0 {
        return Err(bad("--method experts needs a model with experts"));
    }
    let keep = shape.n_expert - count_to_remove(shape.n_expert, ratio, "experts")?;
    if keep < shape.n_expert_used {
        return Err(bad(format!(
            "--ratio {ratio} keeps {keep} of {} experts, fewer than the {} each token uses",
            shape.n_expert, shape.n_expert_used
        )));
    }
    Ok(Structure::KeepExperts(
        scores.iter().map(|s| keep_highest(s, keep)).collect(),
    ))
}

/// Uniform random scores in [0, 1) for `n_layer` × `n` units from `seed` (splitmix64): the
/// random baseline a scored selection is measured against.
pub fn random_scores(n_layer: usize, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n_layer)
        .map(|_| (0..n).map(|_| next()).collect())
        .collect()
}

/// Which weights of each row an unstructured pruning zeroes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// The lowest-scoring `ratio` of every row.
    Ratio(f64),
    /// In every `m` consecutive weights of a row, all but the `n` highest-scoring.
    NOfM(usize, usize),
}

/// Unstructured pruning: a pattern, scored by |W| (magnitude) or |W|·‖X_j‖₂ (Wanda, `norms` per
/// tensor name).
#[derive(Debug, Clone, Default)]
pub struct Sparsify {
    /// The pattern (`None`: no unstructured pruning).
    pub pattern: Option<Pattern>,
    /// Wanda's per-input-channel activation norms; without them scores are magnitudes.
    pub norms: Option<HashMap<String, Vec<f32>>>,
}

impl Pattern {
    /// Checks the pattern itself: a ratio in (0, 1), or 1 ≤ N < M.
    pub fn validate(&self) -> Result<(), PruneError> {
        match *self {
            Pattern::Ratio(r) => check_ratio(r),
            Pattern::NOfM(n, m) if n == 0 || n >= m => Err(bad(format!(
                "--nm {n}:{m}: expected N:M with 1 ≤ N < M, e.g. 2:4"
            ))),
            Pattern::NOfM(..) => Ok(()),
        }
    }

    /// Checks the pattern, and that it fits rows of `cols` weights of tensor `name`.
    fn check(&self, name: &str, cols: usize) -> Result<(), PruneError> {
        self.validate()?;
        match *self {
            Pattern::NOfM(n, m) if !cols.is_multiple_of(m) => Err(bad(format!(
                "--nm {n}:{m} does not divide the rows of {name} ({cols} wide)"
            ))),
            _ => Ok(()),
        }
    }

    /// Zeroes the lowest-scoring weights of `row` (`score(j)` for weight j).
    fn apply(&self, row: &mut [f32], score: impl Fn(usize, f32) -> f32) {
        let scores: Vec<f32> = row.iter().enumerate().map(|(j, &w)| score(j, w)).collect();
        let zero_lowest = |row: &mut [f32], scores: &[f32], k: usize| {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
            for &j in &order[..k] {
                row[j] = 0.0;
            }
        };
        match *self {
            Pattern::Ratio(r) => {
                let k = (r * row.len() as f64).round() as usize;
                zero_lowest(row, &scores, k);
            }
            Pattern::NOfM(n, m) => {
                for (group, s) in row.chunks_mut(m).zip(scores.chunks(m)) {
                    zero_lowest(group, s, m - n);
                }
            }
        }
    }
}

/// Zeros in one written tensor.
#[derive(Debug, Clone)]
pub struct TensorSparsity {
    /// Output tensor name.
    pub name: String,
    /// Zero weights.
    pub zeros: u64,
    /// All weights.
    pub total: u64,
}

/// What a pruning wrote.
#[derive(Debug, Clone)]
pub struct PruneReport {
    /// The output's shape.
    pub shape: PruneShape,
    /// Per block matrix: achieved sparsity.
    pub sparsity: Vec<TensorSparsity>,
    /// Parameters before and after.
    pub params: (u64, u64),
}

/// Where an output tensor's values come from.
struct Mapping {
    layer: Option<usize>,
    rows: Option<Vec<usize>>,
    cols: Option<Vec<usize>>,
}

/// The block `N` of a `blk.N.*` tensor name.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<usize>().ok())
}

/// The output name of `name` (`None`: dropped) and which rows/columns it keeps.
fn map_tensor(name: &str, shape: &PruneShape, structure: &Structure) -> Option<(String, Mapping)> {
    let layer = block_of(name);
    let mut out_name = name.to_string();
    let mut mapping = Mapping {
        layer,
        rows: None,
        cols: None,
    };
    let Some(il) = layer else {
        return Some((out_name, mapping));
    };
    let role = &name[format!("blk.{il}.").len()..];
    let spread = |units: &[usize], width: usize| -> Vec<usize> {
        units
            .iter()
            .flat_map(|&u| u * width..(u + 1) * width)
            .collect()
    };
    match structure {
        Structure::Unchanged => {}
        Structure::DropLayers(drop) => {
            if drop.contains(&il) {
                return None;
            }
            let new = il - drop.iter().filter(|&&d| d < il).count();
            out_name = format!("blk.{new}.{role}");
        }
        Structure::KeepFfn(kept) => match Role::from_suffix(shape.arch, role) {
            Some(Role::FfnGate | Role::FfnUp) => mapping.rows = Some(kept[il].clone()),
            Some(Role::FfnGateUp) => {
                let up = kept[il].iter().map(|&c| shape.n_ff + c);
                mapping.rows = Some(kept[il].iter().copied().chain(up).collect())
            }
            Some(Role::FfnDown) => mapping.cols = Some(kept[il].clone()),
            _ => {}
        },
        Structure::KeepHeadGroups(kept) => {
            let g = shape.group();
            let q_heads: Vec<usize> = kept[il].iter().flat_map(|&k| k * g..(k + 1) * g).collect();
            let q = spread(&q_heads, shape.head_dim);
            let kv = spread(&kept[il], shape.head_dim);
            match Role::from_suffix(shape.arch, role) {
                Some(Role::AttnQ | Role::AttnQBias) => mapping.rows = Some(q),
                Some(Role::AttnK | Role::AttnKBias | Role::AttnV | Role::AttnVBias) => {
                    mapping.rows = Some(kv)
                }
                Some(Role::AttnOutput) => mapping.cols = Some(q),
                Some(Role::AttnQkv) => {
                    let (qw, kvw) = (
                        shape.n_head * shape.head_dim,
                        shape.n_head_kv * shape.head_dim,
                    );
                    let k = kv.iter().map(|&r| qw + r);
                    let v = kv.iter().map(|&r| qw + kvw + r);
                    mapping.rows = Some(q.iter().copied().chain(k).chain(v).collect())
                }
                _ => {}
            }
        }
        Structure::KeepExperts(kept) => match Role::from_suffix(shape.arch, role) {
            Some(Role::FfnGateInp) => mapping.rows = Some(kept[il].clone()),
            Some(Role::FfnGateExps | Role::FfnUpExps) => {
                mapping.rows = Some(spread(&kept[il], shape.n_ff_exp))
            }
            Some(Role::FfnDownExps) => mapping.rows = Some(spread(&kept[il], shape.n_embd)),
            _ => {}
        },
    }
    Some((out_name, mapping))
}

/// The output's metadata: the input's with the changed shape keys.
fn metadata(
    file: &GgufFile,
    shape: &PruneShape,
    out: &PruneShape,
    structure: &Structure,
) -> Result<Metadata, PruneError> {
    let arch = file.architecture().unwrap_or("llama").to_string();
    let mut md = formats::gguf::split::unsplit(&file.metadata);
    if let Structure::DropLayers(dropped) = structure {
        // Sliding-window blocks keep their kind: the pattern is written out per block, since
        // llama.cpp would otherwise apply the period to the new block numbers.
        let h = arch::Hparams::read(file)?;
        if h.n_swa > 0 {
            let kinds = (0..h.n_layer)
                .filter(|il| !dropped.contains(il))
                .map(|il| Value::Bool(h.swa_layers[il]))
                .collect();
            md.set(
                format!("{arch}.attention.sliding_window_pattern"),
                Value::Array(formats::gguf::ValueType::Bool, kinds),
            );
        }
    }
    let mut set = |k: &str, v: usize| md.set(format!("{arch}.{k}"), Value::U32(v as u32));
    if out.n_layer != shape.n_layer {
        set("block_count", out.n_layer);
    }
    if out.n_ff != shape.n_ff {
        set("feed_forward_length", out.n_ff);
    }
    if out.n_expert != shape.n_expert {
        set("expert_count", out.n_expert);
    }
    if out.n_head != shape.n_head {
        set("attention.head_count", out.n_head);
        set("attention.head_count_kv", out.n_head_kv);
        set("attention.key_length", out.head_dim);
        set("attention.value_length", out.head_dim);
    }
    Ok(md)
}

fn output_shape(shape: &PruneShape, structure: &Structure) -> PruneShape {
    let mut out = *shape;
    match structure {
        Structure::Unchanged => {}
        Structure::DropLayers(d) => out.n_layer -= d.len(),
        Structure::KeepFfn(k) => out.n_ff = k[0].len(),
        Structure::KeepHeadGroups(k) => {
            out.n_head_kv = k[0].len();
            out.n_head = out.n_head_kv * shape.group();
        }
        Structure::KeepExperts(k) => out.n_expert = k[0].len(),
    }
    out
}

/// Writes `file` pruned by `structure` and `sparsify` to `out` (atomically). Tensors must be
/// F32, F16 or BF16 (prune before quantizing); each keeps its type.
pub fn prune_gguf(
    file: &GgufFile,
    structure: &Structure,
    sparsify: &Sparsify,
    out: &Path,
) -> Result<PruneReport, PruneError> {
    let shape = PruneShape::of(file)?;
    let new_shape = output_shape(&shape, structure);
    let mut plan = Vec::new();
    for t in &file.tensors {
        let ty = t.info.ggml_type;
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(bad(format!(
                "{}: tensor {} is {ty}; prune a float model (F32/F16/BF16), then quantize",
                file.path().display(),
                t.info.name
            )));
        }
        if let Some(il) = block_of(&t.info.name).filter(|&il| il >= shape.n_layer) {
            return Err(bad(format!(
                "tensor {} belongs to block {il}, but block_count is {}",
                t.info.name, shape.n_layer
            )));
        }
        let Some((name, mapping)) = map_tensor(&t.info.name, &shape, structure) else {
            continue;
        };
        let mut dims = t.info.dims.clone();
        if let Some(r) = &mapping.rows {
            // Rows span every dimension but the first: of a 3-D expert stack, whole matrices.
            let inner: u64 = dims[1..dims.len().saturating_sub(1)].iter().product();
            *dims.last_mut().expect("a dimension") = r.len() as u64 / inner;
        }
        if let Some(c) = &mapping.cols {
            dims[0] = c.len() as u64;
        }
        let sparse = sparsify
            .pattern
            .filter(|_| mapping.layer.is_some() && dims.len() == 2 && name.ends_with(".weight"));
        if let Some(p) = sparse {
            p.check(&t.info.name, dims[0] as usize)?;
        }
        plan.push((t, name, dims, mapping, sparse));
    }
    let infos: Vec<TensorInfo> = plan
        .iter()
        .map(|(t, name, dims, _, _)| TensorInfo {
            name: name.clone(),
            dims: dims.clone(),
            ggml_type: t.info.ggml_type,
        })
        .collect();
    let mut writer =
        GgufWriter::create(out, &metadata(file, &shape, &new_shape, structure)?, &infos)?;
    let mut report = PruneReport {
        shape: new_shape,
        sparsity: Vec::new(),
        params: (
            file.tensors.iter().map(|t| t.info.n_elements()).sum(),
            infos.iter().map(|t| t.n_elements()).sum(),
        ),
    };
    for (t, name, dims, mapping, sparse) in plan {
        let ty = t.info.ggml_type;
        let cols = t.info.dims[0] as usize;
        let mut values = vec![0f32; t.info.n_elements() as usize];
        crate::dequantize(ty, file.data(t), &mut values).expect("float types decode");
        let mut values = select(values, &t.info.dims, &mapping);
        if let Some(p) = sparse {
            let new_cols = dims[0] as usize;
            let norms = sparsify.norms.as_ref().map(|n| {
                let raw = n.get(&t.info.name).cloned().unwrap_or_default();
                match &mapping.cols {
                    Some(c) if raw.len() == cols => c.iter().map(|&j| raw[j]).collect(),
                    _ => raw,
                }
            });
            if let Some(n) = &norms {
                if n.len() != new_cols {
                    return Err(bad(format!(
                        "no calibration statistics for {} (Wanda needs -f CALIB)",
                        t.info.name
                    )));
                }
            }
            values.par_chunks_mut(new_cols).for_each(|row| {
                p.apply(row, |j, w| w.abs() * norms.as_ref().map_or(1.0, |n| n[j]))
            });
            report.sparsity.push(TensorSparsity {
                name: name.clone(),
                zeros: values.iter().filter(|v| **v == 0.0).count() as u64,
                total: values.len() as u64,
            });
        }
        let mut bytes = vec![0u8; ty.bytes_for(values.len() as u64).expect("float") as usize];
        crate::quantize(ty, &values, &mut bytes).expect("float types encode");
        writer.write(&bytes)?;
        file.release(t);
    }
    writer.finish()?;
    Ok(report)
}

/// Keeps the mapped rows and columns of a tensor (a vector's elements count as rows).
fn select(values: Vec<f32>, dims: &[u64], mapping: &Mapping) -> Vec<f32> {
    let cols = if dims.len() == 1 { 1 } else { dims[0] as usize };
    let values = match &mapping.rows {
        None => values,
        Some(rows) => rows
            .iter()
            .flat_map(|&r| values[r * cols..(r + 1) * cols].iter().copied())
            .collect(),
    };
    match &mapping.cols {
        None => values,
        Some(keep) => values
            .chunks(cols)
            .flat_map(|row| keep.iter().map(|&j| row[j]))
            .collect(),
    }
}

//! A quantization run, as `llama-quantize` performs it: choose each tensor's type with the
//! mixture rules, then stream tensor by tensor from the source to a new GGUF, decoding a slab of
//! rows at a time and encoding rows in parallel. The source is a GGUF file or a Hugging Face
//! checkpoint; a checkpoint is converted on the fly to exactly what `smelt convert` would write (its
//! own float type), so one pass gives the same bytes as convert followed by quantize.

use std::path::Path;

use formats::gguf::split::{SetWriter, SplitLimit};
use formats::gguf::{GgmlType, GgufFile, Metadata, TensorInfo, Value};
use formats::hf::{Checkpoint, ConversionPlan};
use rayon::prelude::*;

use crate::convert::{decode_row, tensor_type, OutType};
use crate::imatrix::ImportanceWeights;
use crate::mixture::{
    choose_types, llama_order, Choice, FileType, ModelShape, Overrides, TensorShape,
};
use crate::types::{can_dequantize, can_quantize, dequantize, needs_importance, quantize_row};

/// Where the tensors come from.
pub enum Source {
    /// A GGUF file.
    Gguf(GgufFile),
    /// A checkpoint and its conversion plan (at the checkpoint's own float type).
    Checkpoint(Checkpoint, ConversionPlan),
}

/// One input tensor as the run sees it.
#[derive(Debug, Clone)]
struct Input {
    info: TensorInfo,
    /// Index in the GGUF tensor table or in the conversion plan.
    index: usize,
}

impl Source {
    /// Opens a checkpoint folder as a source.
    pub fn checkpoint(ckpt: Checkpoint) -> formats::Result<Source> {
        let plan = arch::convert::plan(&ckpt, OutType::native(&ckpt).file_type())?;
        Ok(Source::Checkpoint(ckpt, plan))
    }

    fn metadata(&self) -> &Metadata {
        match self {
            Source::Gguf(f) => &f.metadata,
            Source::Checkpoint(_, plan) => &plan.metadata,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::Gguf(f) => f.path(),
            Source::Checkpoint(c, _) => c.dir(),
        }
    }

    fn inputs(&self) -> Vec<Input> {
        match self {
            Source::Gguf(f) => f
                .tensors
                .iter()
                .enumerate()
                .map(|(index, t)| Input {
                    info: t.info.clone(),
                    index,
                })
                .collect(),
            Source::Checkpoint(ckpt, plan) => {
                let native = OutType::native(ckpt);
                plan.tensors
                    .iter()
                    .enumerate()
                    .map(|(index, t)| Input {
                        info: TensorInfo {
                            name: t.name.clone(),
                            dims: t.dims.clone(),
                            ggml_type: tensor_type(t, native),
                        },
                        index,
                    })
                    .collect()
            }
        }
    }

    /// Size in the source of one row of `input`.
    fn source_row_bytes(&self, input: &Input) -> usize {
        let row = input.info.dims[0] as usize;
        match self {
            Source::Gguf(_) => input.info.ggml_type.bytes_for(row as u64).unwrap_or(0) as usize,
            Source::Checkpoint(ckpt, plan) => row * plan.tensors[input.index].dtype(ckpt).size(),
        }
    }

    /// Decodes rows `first..first + n` of `input` into `dst` (`n` × row length values).
    fn rows_f32(&self, input: &Input, first: usize, dst: &mut [f32]) {
        let row = input.info.dims[0] as usize;
        let n = dst.len() / row;
        match self {
            Source::Gguf(f) => {
                let rb = self.source_row_bytes(input);
                let bytes = &f.data(&f.tensors[input.index])[first * rb..(first + n) * rb];
                dequantize(input.info.ggml_type, bytes, dst).expect("decodable type checked");
            }
            Source::Checkpoint(ckpt, plan) => {
                let t = &plan.tensors[input.index];
                for (i, out) in dst.chunks_exact_mut(row).enumerate() {
                    decode_row(ckpt, t, first + i, out);
                }
            }
        }
    }

    /// The stored bytes of rows `first..first + n` of a GGUF tensor, to copy unchanged. A
    /// checkpoint stores none in its GGUF type: its rows are always decoded and encoded.
    fn stored_rows(&self, input: &Input, first: usize, n: usize) -> Option<&[u8]> {
        match self {
            Source::Gguf(f) => {
                let rb = self.source_row_bytes(input);
                Some(&f.data(&f.tensors[input.index])[first * rb..(first + n) * rb])
            }
            Source::Checkpoint(..) => None,
        }
    }

    fn release(&self, input: &Input) {
        match self {
            Source::Gguf(f) => f.release(&f.tensors[input.index]),
            Source::Checkpoint(ckpt, plan) => plan.tensors[input.index].release(ckpt),
        }
    }

    /// The model facts the mixtures depend on, from the metadata.
    fn shape(&self) -> Result<ModelShape, JobError> {
        // Any architecture: llama-quantize takes every family, and its rules need only these.
        let keys = arch::KeyReader::new(self.metadata(), self.path())?;
        let n_layer = keys.need("block_count")?;
        let n_head = keys.uint("attention.head_count")?.unwrap_or(0);
        Ok(ModelShape {
            n_layer: n_layer as u32,
            n_head: n_head as u32,
            n_head_kv: keys.uint("attention.head_count_kv")?.unwrap_or(n_head) as u32,
            n_expert: keys.uint("expert_count")?.unwrap_or(0) as u32,
            arch: keys.arch().to_string(),
        })
    }

    fn bad(&self, message: &str) -> JobError {
        JobError::BadInput(format!("{}: {message}", self.path().display()))
    }
}

/// Why a run stopped. Every variant is a problem with the inputs or the request (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A file could not be read or written.
    #[error(transparent)]
    Format(#[from] formats::FormatError),
    /// The request cannot be carried out on these inputs.
    #[error("{0}")]
    BadInput(String),
    /// A tensor's type needs importance weights and none were given (a caller that will have an
    /// imatrix later can check everything else first).
    #[error("{0}")]
    MissingImatrix(String),
}

/// What to produce.
pub struct JobOptions<'a> {
    /// The file type (mixture).
    pub ftype: FileType,
    /// `--pure`, `--tensor-type` and the other per-tensor overrides.
    pub overrides: Overrides,
    /// Importance weights and how the file was named on the command line (recorded in
    /// `quantize.imatrix.file`).
    pub imatrix: Option<(ImportanceWeights, String)>,
    /// Allow re-quantizing tensors that are already quantized.
    pub allow_requantize: bool,
    /// Called with the number of input bytes done after each slab (progress bars).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Write a split set (llama-gguf-split's layout) instead of one file.
    pub split: Option<SplitLimit>,
    /// Keys appended to the output's metadata after llama-quantize's own (an allocation's
    /// target and method).
    pub metadata: Vec<(String, Value)>,
}

/// One tensor of the plan.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Output name, dims and type.
    pub info: TensorInfo,
    /// Its type in the input.
    pub from: GgmlType,
    /// The mixture's type did not fit its rows.
    pub fell_back: bool,
    /// Bytes in the input's type.
    pub bytes_in: u64,
    /// Bytes in the output.
    pub bytes_out: u64,
}

/// The whole plan: metadata and tensors in output order.
pub struct Plan {
    /// Output metadata.
    pub metadata: Metadata,
    /// Output tensors (llama.cpp's order).
    pub tensors: Vec<PlannedTensor>,
    inputs: Vec<Input>,
}

impl Plan {
    /// Total input bytes of the tensors.
    pub fn bytes_in(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_in).sum()
    }

    /// Total output bytes of the tensors.
    pub fn bytes_out(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_out).sum()
    }

    /// Total number of weights.
    pub fn n_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.info.n_elements()).sum()
    }
}

/// Sets `key` at the end of `md` (gguf_set_val removes an existing key and appends).
fn append(md: &mut Metadata, key: &str, value: Value) {
    md.remove(key);
    md.set(key, value);
}

/// Chooses every tensor's type and the output metadata; checks that the run can be done.
pub fn plan(source: &Source, opts: &JobOptions) -> Result<Plan, JobError> {
    let shape = source.shape()?;
    let mut inputs = source.inputs();
    inputs.sort_by(|a, b| llama_order(&a.info.name).cmp(&llama_order(&b.info.name)));
    let shapes: Vec<TensorShape> = inputs
        .iter()
        .map(|i| TensorShape {
            name: &i.info.name,
            dims: &i.info.dims,
            ty: i.info.ggml_type,
        })
        .collect();
    let choices = choose_types(
        &shapes,
        &shape,
        opts.ftype,
        &opts.overrides,
        opts.imatrix.is_some(),
    )
    .map_err(|e| source.bad(&e))?;

    let mut tensors = Vec::with_capacity(inputs.len());
    for (input, choice) in inputs.iter().zip(&choices) {
        tensors.push(plan_tensor(source, input, choice, opts)?);
    }
    if let Some((weights, label)) = &opts.imatrix {
        let used = tensors
            .iter()
            .filter(|t| weights.weights.contains_key(&t.info.name))
            .count();
        if used == 0 {
            return Err(JobError::BadInput(format!(
                "imatrix {label}: none of its {} entries names a tensor of {}",
                weights.weights.len(),
                source.path().display()
            )));
        }
    }

    let mut metadata = formats::gguf::split::unsplit(source.metadata());
    append(&mut metadata, "general.quantization_version", Value::U32(2));
    append(
        &mut metadata,
        "general.file_type",
        Value::U32(opts.ftype.id),
    );
    if let Some((weights, label)) = &opts.imatrix {
        append(
            &mut metadata,
            "quantize.imatrix.file",
            Value::String(truncate_127(label)),
        );
        if let Some(ds) = &weights.dataset {
            append(
                &mut metadata,
                "quantize.imatrix.dataset",
                Value::String(truncate_127(ds)),
            );
        }
        append(
            &mut metadata,
            "quantize.imatrix.entries_count",
            Value::U32(weights.weights.len() as u32),
        );
        if weights.chunk_count > 0 {
            append(
                &mut metadata,
                "quantize.imatrix.chunks_count",
                Value::U32(weights.chunk_count),
            );
        }
    }
    for (key, value) in &opts.metadata {
        append(&mut metadata, key, value.clone());
    }
    Ok(Plan {
        metadata,
        tensors,
        inputs,
    })
}

/// llama-quantize passes strings through a 128-byte buffer.
fn truncate_127(s: &str) -> String {
    let mut end = s.len().min(127);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn plan_tensor(
    source: &Source,
    input: &Input,
    choice: &Choice,
    opts: &JobOptions,
) -> Result<PlannedTensor, JobError> {
    let name = &input.info.name;
    let (from, to) = (input.info.ggml_type, choice.ty);
    let bad = |m: String| Err(source.bad(&format!("tensor {name}: {m}")));
    if from != to {
        if !can_quantize(to) {
            return bad(format!("smelt cannot encode {to} yet"));
        }
        if !can_dequantize(from) {
            return bad(format!("smelt cannot decode {from}"));
        }
        if !matches!(from, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) && !opts.allow_requantize
        {
            return bad(format!(
                "already quantized as {from}; re-quantizing needs --allow-requantize"
            ));
        }
        if let Some(w) = opts.imatrix.as_ref().and_then(|(w, _)| w.weights.get(name)) {
            let want = imatrix_len(&input.info);
            if w.len() as u64 != want
                && name != "token_embd.weight"
                && name != "per_layer_token_embd.weight"
            {
                return bad(format!(
                    "the imatrix has {} values for it but it has {want} columns (an imatrix for another model?)",
                    w.len()
                ));
            }
        }
        let weights = importance_for(&input.info, opts);
        if choice.requires_imatrix && weights.is_none() {
            return Err(JobError::MissingImatrix(format!(
                "{}: tensor {name}: {to} needs an importance matrix (--imatrix) for this tensor",
                source.path().display()
            )));
        }
        if needs_importance(to) && weights.is_none() {
            // llama.cpp aborts here (token_embd/output given IQ1_S, IQ2_XXS or IQ2_XS, as with
            // --pure): the imatrix has no data for them.
            return Err(JobError::MissingImatrix(format!(
                "{}: tensor {name}: {to} cannot be encoded without importance matrix data, and the imatrix has none for this tensor (choose another type for it, e.g. --token-embedding-type / --output-tensor-type)",
                source.path().display()
            )));
        }
    }
    let info = TensorInfo {
        name: name.clone(),
        dims: input.info.dims.clone(),
        ggml_type: to,
    };
    let bytes_out = info.n_bytes().expect("chosen types fit their rows");
    Ok(PlannedTensor {
        bytes_in: n_rows(&input.info) as u64 * source.source_row_bytes(input) as u64,
        bytes_out,
        info,
        from,
        fell_back: choice.fell_back,
    })
}

/// Rows of a tensor (all dims but the first).
fn n_rows(info: &TensorInfo) -> usize {
    info.dims[1..].iter().product::<u64>() as usize
}

/// The importance weights llama-quantize uses for a tensor: its imatrix entry when the entry has
/// one value per column and expert (a mismatched token_embd entry is ignored, as in llama.cpp).
pub fn importance_for<'a>(info: &TensorInfo, opts: &'a JobOptions) -> Option<&'a Vec<f32>> {
    opts.imatrix
        .as_ref()
        .and_then(|(w, _)| w.weights.get(&info.name))
        .filter(|w| w.len() as u64 == imatrix_len(info))
}

/// Importance weights a tensor takes: one per column and expert.
fn imatrix_len(info: &TensorInfo) -> u64 {
    info.dims[0] * info.dims.get(2).copied().unwrap_or(1)
}

/// Values per slab: bounds the working memory at ~16 MiB of f32 plus its encoding.
const SLAB_VALUES: usize = 1 << 22;
/// Values per parallel task (llama.cpp's `min_chunk_size`).
const TASK_VALUES: usize = 32 * 512;

/// The slabs a tensor is streamed in: (first row, rows), each about [`SLAB_VALUES`] values.
fn slabs(info: &TensorInfo) -> impl Iterator<Item = (usize, usize)> {
    let n_rows = n_rows(info);
    let rows_per_slab = (SLAB_VALUES / (info.dims[0] as usize).max(1)).max(1);
    (0..n_rows)
        .step_by(rows_per_slab)
        .map(move |first| (first, rows_per_slab.min(n_rows - first)))
}

/// Writes the planned GGUF to `out`, or the split set `out` names when `opts.split` asks for one
/// (through temporary files that are renamed only on success); returns the files written.
pub fn write(
    source: &Source,
    plan: &Plan,
    out: &Path,
    opts: &JobOptions,
) -> Result<Vec<std::path::PathBuf>, JobError> {
    let infos: Vec<TensorInfo> = plan.tensors.iter().map(|t| t.info.clone()).collect();
    let mut writer = SetWriter::create(out, &plan.metadata, &infos, opts.split)?;
    let paths = writer.paths().to_vec();
    for (t, input) in plan.tensors.iter().zip(&plan.inputs) {
        let in_row = source.source_row_bytes(input);
        for (first, rows) in slabs(&t.info) {
            let unchanged = t.from == t.info.ggml_type;
            match source.stored_rows(input, first, rows).filter(|_| unchanged) {
                Some(bytes) => writer.write(bytes)?,
                None => writer.write(&encode_slab(source, input, t, first, rows, opts)?)?,
            }
            (opts.progress)((rows * in_row) as u64);
        }
        source.release(input);
    }
    writer.finish()?;
    Ok(paths)
}

/// The whole of planned tensor `index` encoded as `ty` in memory: the bytes [`write`] writes for
/// it when the plan gives it `ty` (what an allocation measures before choosing).
pub fn encode_tensor(
    source: &Source,
    plan: &Plan,
    index: usize,
    ty: GgmlType,
    opts: &JobOptions,
) -> Result<Vec<u8>, JobError> {
    let mut t = plan.tensors[index].clone();
    t.info.ggml_type = ty;
    let input = &plan.inputs[index];
    let mut out = Vec::with_capacity(t.info.n_bytes().unwrap_or(0) as usize);
    for (first, rows) in slabs(&t.info) {
        out.extend(encode_slab(source, input, &t, first, rows, opts)?);
    }
    source.release(input);
    Ok(out)
}

/// Decodes and encodes rows `first..first + rows` of one tensor in parallel tasks of whole rows.
fn encode_slab(
    source: &Source,
    input: &Input,
    t: &PlannedTensor,
    first: usize,
    rows: usize,
    opts: &JobOptions,
) -> Result<Vec<u8>, JobError> {
    let row = t.info.dims[0] as usize;
    let rows_per_expert = t.info.dims.get(1).copied().unwrap_or(1) as usize;
    let out_row = t.info.ggml_type.bytes_for(row as u64).expect("type fits") as usize;
    let weights = importance_for(&t.info, opts);
    let rows_per_task = TASK_VALUES.div_ceil(row).max(1);
    let mut encoded = vec![0u8; rows * out_row];
    let bad = encoded
        .par_chunks_mut(rows_per_task * out_row)
        .enumerate()
        .map(|(task, dst)| {
            let task_first = first + task * rows_per_task;
            let n = dst.len() / out_row;
            let mut values = vec![0f32; n * row];
            source.rows_f32(input, task_first, &mut values);
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Some(*v);
            }
            for (i, (x, y)) in values
                .chunks_exact(row)
                .zip(dst.chunks_exact_mut(out_row))
                .enumerate()
            {
                let expert = (task_first + i) / rows_per_expert;
                let qw = weights.map(|w| &w[expert * row..(expert + 1) * row]);
                quantize_row(t.info.ggml_type, x, y, qw).expect("type fits its rows");
            }
            None
        })
        .find_any(Option::is_some)
        .flatten();
    if let Some(value) = bad {
        return Err(source.bad(&format!("tensor {} contains {value}", t.info.name)));
    }
    Ok(encoded)
}

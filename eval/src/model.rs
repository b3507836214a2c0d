//! A model of one of smelt's architectures read from a GGUF file: hyperparameters from the metadata and every tensor
//! checked against them before anything runs, so a file whose metadata and tensors disagree is
//! refused with its name and the first mismatch instead of failing halfway through a pass.

use std::path::Path;
use std::sync::Arc;

use arch::{Hparams, Role, TensorSpec};
use formats::gguf::{GgmlType, GgufFile, TensorEntry};
use formats::{FormatError, Result};

/// A weight matrix left in its file encoding: `rows` outputs of `cols` inputs each.
#[derive(Debug, Clone)]
pub struct Weight {
    /// Tensor name (`blk.0.attn_q.weight`), the key imatrix statistics are filed under.
    pub name: String,
    /// Encoding of the rows.
    pub ty: GgmlType,
    /// Output features (ggml `ne1`).
    pub rows: usize,
    /// Input features (ggml `ne0`, the row length).
    pub cols: usize,
    /// Which matrix of a stacked mixture-of-experts tensor this is (`None`: a plain matrix).
    pub expert: Option<usize>,
    storage: Storage,
    /// The matrix's bytes within the tensor's data.
    bytes: std::ops::Range<usize>,
}

/// Where a weight's bytes are: the file, or an encoding put in its place by [`Model::replace`].
#[derive(Debug, Clone)]
enum Storage {
    File(TensorEntry),
    Owned(Arc<[u8]>),
}

/// The weights a [`Model::replace`] took out, for [`Model::restore`].
pub struct Replaced(Vec<Weight>);

/// One transformer block's tensors, by role: its architecture's matrices left in their file
/// encoding and its vectors (norm weights, biases) decoded.
#[derive(Debug, Clone)]
pub struct Layer {
    weights: Vec<(Role, Weight)>,
    vectors: Vec<(Role, Vec<f32>)>,
    /// Stacked expert tensors, one matrix per expert.
    experts: Vec<(Role, Vec<Weight>)>,
}

/// An opened model: the memory-mapped file plus its checked tensor table.
pub struct Model {
    file: GgufFile,
    /// Shape and constants.
    pub hparams: Hparams,
    /// Token embedding (`token_embd.weight`), one row per token.
    pub token_embd: Weight,
    /// Final RMSNorm weight.
    pub output_norm: Vec<f32>,
    /// Output projection; the token embedding itself when the model ties them.
    pub output: Weight,
    /// Transformer blocks in order.
    pub layers: Vec<Layer>,
    /// Per-pair divisors of RoPE frequencies the file has, by role (Llama 3's `rope_freqs`,
    /// LongRoPE's long and short factors); see [`Model::rope_factors`].
    rope_factors: Vec<(Role, Vec<f32>)>,
}

impl Model {
    /// Opens `path` and checks that every tensor the architecture needs is there with the shape
    /// the metadata implies and a type smelt can decode.
    pub fn open(path: &Path) -> Result<Model> {
        let file = GgufFile::open(path)?;
        let hparams = Hparams::read(&file)?;
        let tensors = Tensors {
            file: &file,
            hp: &hparams,
            specs: arch::tensors::tensors(&hparams),
        };
        let token_embd = tensors.weight(Role::TokenEmbd, 0)?;
        let output = match tensors.present(Role::Output, 0) {
            true => tensors.weight(Role::Output, 0)?,
            false => token_embd.clone(),
        };
        let output_norm = tensors.vector(Role::OutputNorm, 0)?;
        let rope_factors = [
            Role::RopeFreqs,
            Role::RopeFactorsLong,
            Role::RopeFactorsShort,
        ]
        .into_iter()
        .filter(|&r| hparams.arch.has(r) && tensors.present(r, 0))
        .map(|r| Ok((r, tensors.vector(r, 0)?)))
        .collect::<Result<Vec<_>>>()?;
        let layers = (0..hparams.n_layer)
            .map(|i| {
                let mut layer = Layer {
                    weights: Vec::new(),
                    vectors: Vec::new(),
                    experts: Vec::new(),
                };
                for &role in hparams.arch.blocks(hparams.n_expert) {
                    match role.dims(&hparams).len() {
                        3 => layer.experts.push((role, tensors.experts(role, i)?)),
                        2 => layer.weights.push((role, tensors.weight(role, i)?)),
                        _ => layer.vectors.push((role, tensors.vector(role, i)?)),
                    }
                }
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        tensors.all_known()?;
        Ok(Model {
            file,
            hparams,
            token_embd,
            output_norm,
            output,
            layers,
            rope_factors,
        })
    }

    /// The RoPE divisors of an evaluation with contexts of `n_ctx` positions
    /// ([`Hparams::rope_factors_role`]), if the file has them.
    pub fn rope_factors(&self, n_ctx: usize) -> Option<&[f32]> {
        let role = self.hparams.rope_factors_role(n_ctx);
        self.rope_factors
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, v)| v.as_slice())
    }

    /// The underlying file (metadata for the tokenizer, the path for messages).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The block matrix of `role` in block `layer`; panics when the architecture has none.
    pub fn weight(&self, role: Role, layer: usize) -> &Weight {
        self.layers[layer]
            .weights
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, w)| w)
            .unwrap_or_else(|| panic!("{role:?} is not a matrix of a block"))
    }

    /// The matrices, one per expert, of the stacked tensor of `role` in block `layer`; panics
    /// when the model has none.
    pub fn experts(&self, role: Role, layer: usize) -> &[Weight] {
        self.layers[layer]
            .experts
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, w)| w.as_slice())
            .unwrap_or_else(|| panic!("{role:?} is not an expert tensor of a block"))
    }

    /// The vector (norm weight or bias) of `role` in block `layer` (model-wide roles ignore
    /// `layer`); panics when the architecture has none.
    pub fn vector(&self, role: Role, layer: usize) -> &[f32] {
        if role == Role::OutputNorm {
            return &self.output_norm;
        }
        self.layers[layer]
            .vectors
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_else(|| panic!("the model has no {role:?} vector"))
    }

    /// The encoded bytes of `weight`.
    pub fn bytes<'a>(&'a self, weight: &'a Weight) -> &'a [u8] {
        match &weight.storage {
            Storage::File(entry) => &self.file.data(entry)[weight.bytes.clone()],
            Storage::Owned(data) => &data[weight.bytes.clone()],
        }
    }

    /// Every matrix the forward pass reads, the tied output included.
    fn weights_mut(&mut self) -> impl Iterator<Item = &mut Weight> {
        let layers = self.layers.iter_mut().flat_map(|l| {
            let plain = l.weights.iter_mut().map(|(_, w)| w);
            plain.chain(l.experts.iter_mut().flat_map(|(_, e)| e.iter_mut()))
        });
        [&mut self.token_embd, &mut self.output]
            .into_iter()
            .chain(layers)
    }

    /// Puts `data`, the whole tensor `name` encoded as `ty`, in place of the file's encoding
    /// (every use of it: a tied output too), so that a pass measures what that one tensor's
    /// quantization costs; returns what it replaced for [`Model::restore`]. Fails when the model
    /// has no matrix of that name or `data` is not the tensor's size in `ty`.
    pub fn replace(&mut self, name: &str, ty: GgmlType, data: Arc<[u8]>) -> Result<Replaced> {
        let path = self.file.path().to_path_buf();
        let mut old = Vec::new();
        for w in self.weights_mut().filter(|w| w.name == name) {
            let per = ty.bytes_for((w.rows * w.cols) as u64).unwrap_or(u64::MAX) as usize;
            let first = w.expert.unwrap_or(0) * per;
            if first + per > data.len() {
                return Err(FormatError::new(
                    &path,
                    format!(
                        "tensor {name}: {} bytes are not a {ty} encoding of it",
                        data.len()
                    ),
                ));
            }
            old.push(w.clone());
            w.ty = ty;
            w.storage = Storage::Owned(data.clone());
            w.bytes = first..first + per;
        }
        if old.is_empty() {
            return Err(FormatError::new(&path, format!("no matrix named {name}")));
        }
        Ok(Replaced(old))
    }

    /// Puts back what [`Model::replace`] took out.
    pub fn restore(&mut self, replaced: Replaced) {
        let name = replaced.0[0].name.clone();
        let mut old = replaced.0.into_iter();
        for w in self.weights_mut().filter(|w| w.name == name) {
            *w = old.next().expect("the same weights as replaced");
        }
    }
}

/// Looks up and checks a model's tensors against its architecture's tensor list.
struct Tensors<'a> {
    file: &'a GgufFile,
    hp: &'a Hparams,
    specs: Vec<TensorSpec>,
}

impl Tensors<'_> {
    /// Refuses a model with a tensor its architecture does not list: its meaning is not
    /// implemented, and evaluating without it would be silently approximate.
    fn all_known(&self) -> Result<()> {
        let known: std::collections::HashSet<&str> =
            self.specs.iter().map(|s| s.name.as_str()).collect();
        match self
            .file
            .tensors
            .iter()
            .find(|t| !known.contains(t.info.name.as_str()))
        {
            None => Ok(()),
            Some(t) => Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {} is not implemented by smelt's {} forward pass, \
                     which refuses to evaluate the model without it",
                    t.info.name, self.hp.arch.gguf_name
                ),
            )),
        }
    }

    /// Whether the file has the tensor of `role` in block `layer`.
    fn present(&self, role: Role, layer: usize) -> bool {
        self.file.tensor(&role.name(layer)).is_some()
    }

    /// The spec of `role` in block `layer` and its entry in the file.
    fn find(&self, role: Role, layer: usize) -> Result<(&TensorSpec, &TensorEntry)> {
        let name = role.name(layer);
        let spec = self
            .specs
            .iter()
            .find(|s| s.name == name)
            .expect("the forward pass asks only for its architecture's tensors");
        let entry = self.file.tensor(&name).ok_or_else(|| {
            FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} is missing (needed by {})",
                    self.hp.arch.gguf_name
                ),
            )
        })?;
        let dims = &entry.info.dims;
        if dims.len() != spec.dims.len()
            || dims.iter().zip(&spec.dims).any(|(a, b)| *a != *b as u64)
        {
            return Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {name} has shape {dims:?}, but the metadata implies {:?}",
                    spec.dims
                ),
            ));
        }
        Ok((spec, entry))
    }

    fn weight(&self, role: Role, layer: usize) -> Result<Weight> {
        let (spec, entry) = self.find(role, layer)?;
        self.decodable(spec, entry)?;
        Ok(Weight {
            name: spec.name.clone(),
            ty: entry.info.ggml_type,
            rows: spec.dims[1],
            cols: spec.dims[0],
            expert: None,
            storage: Storage::File(entry.clone()),
            bytes: 0..self.file.data(entry).len(),
        })
    }

    /// Each expert's matrix of the stacked tensor of `role` in block `layer`.
    fn experts(&self, role: Role, layer: usize) -> Result<Vec<Weight>> {
        let (spec, entry) = self.find(role, layer)?;
        self.decodable(spec, entry)?;
        let (cols, rows, n) = (spec.dims[0], spec.dims[1], spec.dims[2]);
        let len = self.file.data(entry).len() / n;
        Ok((0..n)
            .map(|e| Weight {
                name: spec.name.clone(),
                ty: entry.info.ggml_type,
                rows,
                cols,
                expert: Some(e),
                storage: Storage::File(entry.clone()),
                bytes: e * len..(e + 1) * len,
            })
            .collect())
    }

    /// Refuses a matrix of a type smelt cannot decode.
    fn decodable(&self, spec: &TensorSpec, entry: &TensorEntry) -> Result<()> {
        let ty = entry.info.ggml_type;
        if !quantize::types::can_dequantize(ty) {
            return Err(FormatError::new(
                self.file.path(),
                format!(
                    "tensor {} is {}, which smelt cannot decode",
                    spec.name,
                    ty.name()
                ),
            ));
        }
        Ok(())
    }

    fn vector(&self, role: Role, layer: usize) -> Result<Vec<f32>> {
        let (spec, entry) = self.find(role, layer)?;
        let mut out = vec![0.0; spec.dims[0]];
        quantize::dequantize(entry.info.ggml_type, self.file.data(entry), &mut out).map_err(
            |e| FormatError::new(self.file.path(), format!("tensor {}: {e}", spec.name)),
        )?;
        Ok(out)
    }
}

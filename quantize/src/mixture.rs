//! File types (`Q4_K_M`, `IQ4_XS`, …) and the per-tensor type choice llama-quantize makes for them:
//! a port of `llama_tensor_get_type` and its helpers from `src/llama-quant.cpp` at 0c1e57098,
//! including the mixtures' layer schedules, the shape fallbacks, the tensors that are never
//! quantized, and the `--pure` / `--tensor-type` / `--output-tensor-type` /
//! `--token-embedding-type` / `--leave-output-tensor` overrides.
//!
//! The choice depends on the order tensors are visited (counters of attn_v and ffn_down layers), so
//! [`choose_types`] takes them in llama.cpp's order: see [`llama_order`].

use formats::gguf::GgmlType;
use regex::Regex;

/// A llama.cpp file type: the name llama-quantize accepts, its `general.file_type` id and the
/// tensor type most tensors get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    /// Canonical name (`Q4_K_M`).
    pub name: &'static str,
    /// `llama_ftype` value written to `general.file_type`.
    pub id: u32,
    /// `llama_ftype_get_default_type`.
    pub default_type: GgmlType,
}

macro_rules! ftypes {
    ($($name:ident = $id:literal => $ty:ident),* $(,)?) => {
        /// Every file type smelt knows, in llama-quantize's order.
        pub const FILE_TYPES: &[FileType] = &[
            $(FileType { name: stringify!($name), id: $id, default_type: GgmlType::$ty }),*
        ];
    };
}

ftypes! {
    Q1_0 = 40 => Q1_0, Q2_0 = 41 => Q2_0, Q4_0 = 2 => Q4_0, Q4_1 = 3 => Q4_1,
    Q5_0 = 8 => Q5_0, Q5_1 = 9 => Q5_1,
    IQ2_XXS = 19 => IQ2_XXS, IQ2_XS = 20 => IQ2_XS, IQ2_S = 28 => IQ2_XS, IQ2_M = 29 => IQ2_S,
    IQ1_S = 24 => IQ1_S, IQ1_M = 31 => IQ1_M, TQ1_0 = 36 => TQ1_0, TQ2_0 = 37 => TQ2_0,
    Q2_K = 10 => Q2_K, Q2_K_S = 21 => Q2_K, IQ3_XXS = 23 => IQ3_XXS, IQ3_S = 26 => IQ3_S,
    IQ3_M = 27 => IQ3_S, IQ3_XS = 22 => IQ3_S,
    Q3_K_S = 11 => Q3_K, Q3_K_M = 12 => Q3_K, Q3_K_L = 13 => Q3_K,
    IQ4_NL = 25 => IQ4_NL, IQ4_XS = 30 => IQ4_XS,
    Q4_K_S = 14 => Q4_K, Q4_K_M = 15 => Q4_K, Q5_K_S = 16 => Q5_K, Q5_K_M = 17 => Q5_K,
    Q6_K = 18 => Q6_K, Q8_0 = 7 => Q8_0, MXFP4_MOE = 38 => MXFP4, F16 = 1 => F16, BF16 = 32 => BF16, F32 = 0 => F32,
}

impl FileType {
    /// Parses a name as llama-quantize does: case-insensitive, with `Q3_K`, `Q4_K` and `Q5_K`
    /// meaning their `_M` mixtures, or a numeric `llama_ftype` id.
    pub fn parse(text: &str) -> Option<FileType> {
        let upper = text.to_ascii_uppercase();
        let name = match upper.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        FILE_TYPES
            .iter()
            .find(|f| f.name == name)
            .or_else(|| {
                text.parse::<u32>()
                    .ok()
                    .and_then(|id| FILE_TYPES.iter().find(|f| f.id == id))
            })
            .copied()
    }

    fn is(&self, names: &[&str]) -> bool {
        names.contains(&self.name)
    }
}

/// The model facts the choice depends on (from the GGUF metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// `general.architecture`.
    pub arch: String,
    /// `<arch>.block_count`.
    pub n_layer: u32,
    /// `<arch>.attention.head_count`.
    pub n_head: u32,
    /// `<arch>.attention.head_count_kv` (defaults to n_head).
    pub n_head_kv: u32,
    /// `<arch>.expert_count` (0 without experts).
    pub n_expert: u32,
}

impl ModelShape {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B` for the families smelt loads (80 layers, grouped-query).
    fn is_70b(&self) -> bool {
        self.n_layer == 80
            && match self.arch.as_str() {
                "llama" => self.n_head != self.n_head_kv,
                "qwen2" => true,
                _ => false,
            }
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// What the user asked for besides the file type.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--pure`: the default type everywhere it fits, no mixture.
    pub pure: bool,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type PATTERN=TYPE`, first match wins (patterns lower-cased, searched anywhere in
    /// the name, as llama-quantize's std::regex_search).
    pub tensor_types: Vec<(Regex, GgmlType)>,
    /// Types chosen per tensor by an allocation (`smelt quantize … auto`), by exact name: they
    /// take the mixture's place, and every override above still wins over them.
    pub assigned: std::collections::BTreeMap<String, GgmlType>,
}

impl Overrides {
    /// Whether an explicit override (`--tensor-type`, `--output-tensor-type`,
    /// `--token-embedding-type`, `--leave-output-tensor`) decides the type of tensor `name`: an
    /// allocation leaves such tensors alone.
    pub fn decides(&self, name: &str) -> bool {
        match category(name) {
            Category::Output if self.output_tensor_type.is_some() || self.leave_output_tensor => {
                true
            }
            Category::TokenEmbd if self.token_embedding_type.is_some() => true,
            _ => self.tensor_types.iter().any(|(re, _)| re.is_match(name)),
        }
    }
}

/// Broad tensor roles (`tensor_category`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    for (pattern, cat) in [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(pattern) {
            return cat;
        }
    }
    Other
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Name fragments llama-quantize never quantizes (norms, routing tables, tiny or positional tensors).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// `ggml_n_dims`: dimensions up to the last one larger than 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization`: whether llama-quantize would quantize this tensor at all (norms,
/// 1-D tensors and a few named ones always keep their type).
pub fn allows_quantization(name: &str, dims: &[u64], o: &Overrides) -> bool {
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && !(o.leave_output_tensor && name == "output.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER_QUANTIZED.iter().any(|p| name.contains(p))
}

/// A tensor as the chooser sees it.
#[derive(Debug, Clone)]
pub struct TensorShape<'a> {
    /// GGUF name.
    pub name: &'a str,
    /// ggml dims (`dims[0]` = row length).
    pub dims: &'a [u64],
    /// Its type in the input.
    pub ty: GgmlType,
}

/// The type chosen for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The output type (equal to the input type: copied unchanged).
    pub ty: GgmlType,
    /// The mixture's type did not fit the row length and a fallback was used.
    pub fell_back: bool,
    /// llama.cpp refuses to produce this type for this tensor without an importance matrix.
    pub requires_imatrix: bool,
}

/// The order llama.cpp's model loader visits tensors in (and llama-quantize writes them): tensors
/// outside blocks first, then block by block, each group by name.
pub fn llama_order(name: &str) -> (i64, &str) {
    let layer = name
        .strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(-1);
    (layer, name)
}

/// Per-run counters of `quantize_state_impl`.
struct Counters {
    n_attention_wv: i32,
    i_attention_wv: i32,
    n_layer: i32,
    i_ffn_down: i32,
    i_ffn_gate: i32,
    i_ffn_up: i32,
    has_tied_embeddings: bool,
    has_imatrix: bool,
}

/// Chooses every tensor's output type, visiting `tensors` in the given order (use
/// [`llama_order`] to match llama-quantize). `has_imatrix` changes some mixtures. Fails, as
/// llama.cpp does, when a row does not fit a type that has no fallback (Q1_0 on rows of 64).
pub fn choose_types(
    tensors: &[TensorShape],
    shape: &ModelShape,
    ftype: FileType,
    overrides: &Overrides,
    has_imatrix: bool,
) -> Result<Vec<Choice>, String> {
    let mut c = Counters {
        n_attention_wv: tensors
            .iter()
            .filter(|t| is_attn_v_like(category(t.name)))
            .count() as i32,
        i_attention_wv: 0,
        n_layer: shape.n_layer as i32,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: !tensors.iter().any(|t| category(t.name) == Category::Output),
        has_imatrix,
    };
    tensors
        .iter()
        .map(|t| {
            let (ty, fell_back) = if allows_quantization(t.name, t.dims, overrides) {
                tensor_type(&mut c, shape, ftype, overrides, t)?
            } else {
                (t.ty, false)
            };
            Ok(Choice {
                ty,
                fell_back,
                requires_imatrix: requires_imatrix(t.name, ty, ftype),
            })
        })
        .collect()
}

/// `llama_tensor_get_type`: overrides, then the mixture, then the shape fallback.
fn tensor_type(
    c: &mut Counters,
    shape: &ModelShape,
    ftype: FileType,
    o: &Overrides,
    t: &TensorShape,
) -> Result<(GgmlType, bool), String> {
    let cat = category(t.name);
    if let (Some(ty), Category::TokenEmbd) = (o.token_embedding_type, cat) {
        let named = t.name == "per_layer_token_embd.weight"
            && o.tensor_types.iter().any(|(re, _)| re.is_match(t.name));
        if !named {
            return Ok((ty, false));
        }
    }
    if let (Some(ty), Category::Output) = (o.output_tensor_type, cat) {
        return Ok((ty, false));
    }
    let mut ty = ftype.default_type;
    if !is_quantized(ty) {
        return Ok((ty, false));
    }
    let manual = o.tensor_types.iter().find(|(re, _)| re.is_match(t.name));
    if let Some((_, forced)) = manual {
        ty = *forced;
    } else if let Some(assigned) = o.assigned.get(t.name) {
        ty = *assigned;
    } else if !o.pure {
        ty = mixture_type(c, shape, ftype, o, ty, t, cat);
    }
    fallback(t.dims[0], ty).map_err(|e| format!("tensor {}: {e}", t.name))
}

fn is_quantized(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// `tensor_type_fallback`: a type whose block does not divide the row length is replaced.
fn fallback(ncols: u64, target: GgmlType) -> Result<(GgmlType, bool), String> {
    use GgmlType::*;
    if ncols.is_multiple_of(target.block_size() as u64) {
        return Ok((target, false));
    }
    let mut ty = match target {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_0 | Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other if other.block_size() <= 32 => other,
        other => {
            return Err(format!(
                "rows of {ncols} values are not a multiple of {other}'s block size {} and llama.cpp defines no fallback for {other}",
                other.block_size()
            ))
        }
    };
    if !ncols.is_multiple_of(ty.block_size() as u64) {
        ty = F16;
    }
    Ok((ty, true))
}

/// `llama_tensor_get_type_impl`: the mixture's schedule.
fn mixture_type(
    c: &mut Counters,
    shape: &ModelShape,
    ftype: FileType,
    o: &Overrides,
    default: GgmlType,
    t: &TensorShape,
    cat: Category,
) -> GgmlType {
    use GgmlType::*;
    let use_more_bits = |i: i32, n: i32| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    let gqa = shape.n_gqa();
    let falcon = shape.is_falcon();
    let n_expert = shape.n_expert;
    let low_iq = ["IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"];
    let mut ty = default;

    if cat == Category::Output || (c.has_tied_embeddings && cat == Category::TokenEmbd) {
        if let Some(out) = o.output_tensor_type {
            ty = out;
        } else if ftype.is(&["MXFP4_MOE"])
            || falcon
            || !t.dims[0].is_multiple_of(ty.block_size() as u64)
        {
            ty = Q8_0;
        } else if ftype.is(&[
            "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M",
        ]) {
            ty = Q5_K;
        } else if ty != Q8_0 {
            ty = Q6_K;
        }
    } else if ftype.is(&["MXFP4_MOE"]) {
        // Expert stacks (3-D with more than one matrix) in MXFP4, everything else Q8_0.
        ty = match t.dims.get(2).is_some_and(|&n| n > 1) {
            true => MXFP4,
            false => Q8_0,
        };
    } else if cat == Category::TokenEmbd {
        if let Some(emb) = o.token_embedding_type {
            ty = emb;
        } else if ftype.is(&["IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"]) {
            ty = Q2_K;
        } else if ftype.is(&["IQ2_S", "IQ2_M", "IQ3_XXS"]) {
            ty = IQ3_S;
        } else if ftype.is(&["TQ1_0", "TQ2_0", "Q2_0"]) {
            ty = Q4_K;
        }
    } else if ftype.is(&low_iq) {
        let s_or_m = ftype.is(&["IQ2_S", "IQ2_M"]);
        if is_attn_v_like(cat) {
            ty = if gqa >= 4 || n_expert >= 4 {
                Q4_K
            } else if s_or_m {
                IQ3_S
            } else {
                Q2_K
            };
            c.i_attention_wv += 1;
        } else if n_expert == 8 && cat == Category::AttnK {
            ty = Q4_K;
        } else if cat == Category::FfnDown {
            if c.i_ffn_down < c.n_layer / 8 {
                ty = if s_or_m { IQ3_S } else { Q2_K };
            }
            c.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if n_expert == 8 {
                ty = Q5_K;
            } else if ftype.is(&["IQ1_S", "IQ1_M"]) {
                ty = IQ2_XXS;
            } else if s_or_m {
                ty = IQ3_S;
            }
        }
    } else if is_attn_v_like(cat) {
        let (i, n) = (c.i_attention_wv, c.n_attention_wv);
        match ftype.name {
            "Q2_K" => ty = if gqa >= 4 { Q4_K } else { Q3_K },
            "Q2_K_S" if gqa >= 4 => ty = Q4_K,
            "IQ3_XXS" => {
                ty = if gqa >= 4 {
                    Q4_K
                } else if !c.has_imatrix {
                    IQ3_S
                } else {
                    IQ3_XXS
                }
            }
            "IQ3_XS" | "IQ3_S" if gqa >= 4 => ty = Q4_K,
            "IQ3_M" => ty = Q4_K,
            "Q3_K_M" => ty = if i < 2 { Q5_K } else { Q4_K },
            "Q3_K_L" => ty = Q5_K,
            "IQ4_NL" | "IQ4_XS" if gqa >= 4 => ty = Q5_K,
            "Q4_K_M" | "Q5_K_M" if use_more_bits(i, n) => ty = Q6_K,
            "Q4_K_S" if i < 4 => ty = Q5_K,
            _ => {}
        }
        if shape.is_70b() && matches!(ty, Q3_K | Q4_K) {
            ty = Q5_K;
        }
        if n_expert == 8 {
            ty = Q8_0;
        }
        c.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if n_expert == 8 {
            ty = Q8_0;
        } else if ftype.is(&["IQ3_XS"]) {
            ty = IQ3_XXS;
        } else if ftype.is(&["IQ3_XXS"]) {
            ty = IQ2_S;
        }
    } else if cat == Category::AttnQ {
        if ftype.is(&["IQ3_XS"]) {
            ty = IQ3_XXS;
        } else if ftype.is(&["IQ3_XXS"]) {
            ty = IQ2_S;
        }
    } else if cat == Category::FfnDown {
        let (i, n) = (c.i_ffn_down, c.n_layer);
        match ftype.name {
            "Q2_K" => ty = Q3_K,
            "Q2_K_S" if i < n / 8 => ty = Q4_K,
            "IQ3_XXS" if !c.has_imatrix => ty = if i < n / 8 { Q4_K } else { Q3_K },
            "Q3_K_M" => {
                ty = if i < n / 16 {
                    Q5_K
                } else if !falcon || use_more_bits(i, n) {
                    Q4_K
                } else {
                    Q3_K
                }
            }
            "IQ3_M" if i < n / 8 || (n_expert == 8 && use_more_bits(i, n)) => ty = Q4_K,
            "Q3_K_L" => ty = if falcon { Q4_K } else { Q5_K },
            "Q4_K_M" => {
                if falcon {
                    ty = if i < n / 16 {
                        Q6_K
                    } else if use_more_bits(i, n) {
                        Q5_K
                    } else {
                        Q4_K
                    };
                } else if use_more_bits(i, n) {
                    ty = Q6_K;
                }
            }
            "IQ4_NL" | "IQ4_XS" if i < n / 8 && !c.has_imatrix => ty = Q5_K,
            "Q5_K_M" if use_more_bits(i, n) => ty = Q6_K,
            "Q4_K_S" if !falcon && i < n / 8 => ty = Q5_K,
            "Q4_0" | "Q5_0" if c.has_imatrix && i < n / 8 => {
                ty = if ftype.name == "Q4_0" { Q4_1 } else { Q5_1 }
            }
            _ => {}
        }
        c.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if !falcon {
            if n_expert == 8 {
                if ftype.is(&[
                    "Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                    "IQ3_S", "IQ3_M", "IQ4_XS",
                ]) {
                    ty = Q5_K;
                }
            } else {
                match ftype.name {
                    "Q2_K" => ty = Q3_K,
                    "IQ3_XXS" => ty = IQ3_S,
                    "Q3_K_M" | "IQ3_M" => ty = Q4_K,
                    "Q3_K_L" => ty = Q5_K,
                    _ => {}
                }
            }
        } else if ftype.is(&["Q3_K_L"]) {
            ty = Q4_K;
        }
    } else if cat == Category::AttnQkv {
        match ftype.name {
            "Q3_K_M" | "Q3_K_L" | "IQ3_M" => ty = Q4_K,
            "Q4_K_M" => ty = Q5_K,
            "Q5_K_M" => ty = Q6_K,
            _ => {}
        }
    } else if cat == Category::FfnGate || cat == Category::FfnUp {
        let i = if cat == Category::FfnGate {
            &mut c.i_ffn_gate
        } else {
            &mut c.i_ffn_up
        };
        let n = c.n_layer;
        if ftype.is(&["IQ3_XS"]) && *i >= n / 8 && *i < 7 * n / 8 {
            ty = IQ3_XXS;
        }
        *i += 1;
    }
    ty
}

/// `tensor_requires_imatrix`: the very low-bit types, and Q2_K inside a Q2_K_S file.
fn requires_imatrix(name: &str, ty: GgmlType, ftype: FileType) -> bool {
    use GgmlType::*;
    if matches!(category(name), Category::TokenEmbd | Category::Output) {
        return false;
    }
    match ty {
        Q2_K => ftype.name == "Q2_K_S",
        other => always_requires_imatrix(other),
    }
}

/// The very low-bit types llama.cpp never produces without an importance matrix (outside
/// token_embd/output).
pub fn always_requires_imatrix(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, IQ3_XXS | IQ2_XXS | IQ2_XS | IQ2_S | IQ1_M | IQ1_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(n_layer: u32) -> ModelShape {
        ModelShape {
            arch: "llama".into(),
            n_layer,
            n_head: 8,
            n_head_kv: 4,
            n_expert: 0,
        }
    }

    fn names(n_layer: u32, tied: bool) -> Vec<(String, Vec<u64>)> {
        let mut v = vec![
            ("token_embd.weight".to_string(), vec![256, 512]),
            ("output_norm.weight".into(), vec![256]),
        ];
        if !tied {
            v.push(("output.weight".into(), vec![256, 512]));
        }
        for i in 0..n_layer {
            for (t, d) in [
                ("attn_k", vec![256, 128]),
                ("attn_norm", vec![256]),
                ("attn_output", vec![256, 256]),
                ("attn_q", vec![256, 256]),
                ("attn_v", vec![256, 128]),
                ("ffn_down", vec![768, 256]),
                ("ffn_gate", vec![256, 768]),
                ("ffn_norm", vec![256]),
                ("ffn_up", vec![256, 768]),
            ] {
                v.push((format!("blk.{i}.{t}.weight"), d));
            }
        }
        v.sort_by(|a, b| llama_order(&a.0).cmp(&llama_order(&b.0)));
        v
    }

    fn choose(n_layer: u32, ftype: &str, o: &Overrides) -> Vec<(String, GgmlType)> {
        let v = names(n_layer, true);
        let shapes: Vec<TensorShape> = v
            .iter()
            .map(|(n, d)| TensorShape {
                name: n,
                dims: d,
                ty: GgmlType::F32,
            })
            .collect();
        let choices = choose_types(
            &shapes,
            &llama(n_layer),
            FileType::parse(ftype).unwrap(),
            o,
            false,
        )
        .unwrap();
        v.iter()
            .zip(choices)
            .map(|((n, _), c)| (n.clone(), c.ty))
            .collect()
    }

    #[test]
    fn parses_names_aliases_and_ids() {
        assert_eq!(FileType::parse("q4_k").unwrap().name, "Q4_K_M");
        assert_eq!(FileType::parse("15").unwrap().name, "Q4_K_M");
        assert_eq!(
            FileType::parse("IQ2_M").unwrap().default_type,
            GgmlType::IQ2_S
        );
        assert!(FileType::parse("Q9_K").is_none());
    }

    #[test]
    fn order_puts_global_tensors_first_then_layers_numerically() {
        let mut v = vec![
            "blk.10.attn_q.weight",
            "blk.2.ffn_up.weight",
            "token_embd.weight",
            "blk.2.attn_k.weight",
            "output_norm.weight",
        ];
        v.sort_by_key(|n| llama_order(n));
        assert_eq!(
            v,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight"
            ]
        );
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_the_scheduled_layers() {
        let t = choose(8, "Q4_K_M", &Overrides::default());
        let ty = |n: &str| t.iter().find(|(m, _)| m == n).unwrap().1;
        assert_eq!(
            ty("token_embd.weight"),
            GgmlType::Q6_K,
            "tied embeddings get the output type"
        );
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        // use_more_bits(i, 8): i < 1 || i >= 7 || (i − 1) % 3 == 2 → layers 0, 3, 6, 7.
        for i in 0..8 {
            let more = [0, 3, 6, 7].contains(&i);
            let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(
                ty(&format!("blk.{i}.ffn_down.weight")),
                want,
                "ffn_down {i}"
            );
            assert_eq!(ty(&format!("blk.{i}.attn_v.weight")), want, "attn_v {i}");
            assert_eq!(ty(&format!("blk.{i}.attn_q.weight")), GgmlType::Q4_K);
        }
    }

    #[test]
    fn pure_and_manual_overrides_win_over_the_mixture() {
        let o = Overrides {
            pure: true,
            ..Default::default()
        };
        assert!(choose(4, "Q4_K_M", &o)
            .iter()
            .all(|(n, t)| n.contains("norm") || *t == GgmlType::Q4_K));
        let o = Overrides {
            tensor_types: vec![(Regex::new("ffn_down").unwrap(), GgmlType::Q8_0)],
            ..Default::default()
        };
        let t = choose(4, "Q4_K_M", &o);
        assert!(t
            .iter()
            .filter(|(n, _)| n.contains("ffn_down"))
            .all(|(_, t)| *t == GgmlType::Q8_0));
    }

    #[test]
    fn rows_that_do_not_fit_fall_back() {
        assert_eq!(fallback(64, GgmlType::Q4_K), Ok((GgmlType::Q5_0, true)));
        assert_eq!(fallback(172, GgmlType::Q4_K), Ok((GgmlType::F16, true)));
        assert_eq!(fallback(64, GgmlType::IQ4_XS), Ok((GgmlType::IQ4_NL, true)));
        assert_eq!(fallback(256, GgmlType::Q6_K), Ok((GgmlType::Q6_K, false)));
        assert!(fallback(64, GgmlType::Q1_0)
            .unwrap_err()
            .contains("no fallback"));
    }
}

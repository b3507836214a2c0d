//! smelt's model architectures, one module per family: what its GGUF metadata means (the only
//! reader of `<arch>.*` hyper-parameter keys, [`Hparams`]) and the facts of its block that loading,
//! evaluation, pruning and training share (RoPE pairing, attention biases). Stages ask this crate
//! instead of comparing architecture names themselves, so a family is described once.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod convert;
pub mod gemma3;
pub mod graph;
pub mod hparams;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3moe;
pub mod tensors;

pub use hparams::{Hparams, KeyReader};
pub use tensors::{Presence, Role, TensorSpec};

/// How rotary position embedding pairs up a head's dimensions (ggml's `rope` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(x[2i], x[2i+1])` — llama (whose converter permutes Q/K for it).
    Normal,
    /// Halves `(x[i], x[i + n/2])` — qwen2 (GPT-NeoX style).
    Neox,
}

/// One architecture smelt runs: the facts of its block that differ between families, how the
/// converter writes it, and which stages take it.
#[derive(Debug)]
pub struct Architecture {
    /// `general.architecture` and the prefix of its keys.
    pub gguf_name: &'static str,
    /// Hugging Face `architectures[0]` names `smelt convert` imports as this family.
    pub hf_names: &'static [&'static str],
    /// RoPE pairing.
    pub rope_mode: RopeMode,
    /// How `convert_hf_to_gguf.py` writes the family.
    pub conversion: convert::Conversion,
    /// Model-wide tensors, each required or optional.
    pub global_tensors: &'static [(Role, Presence)],
    /// Each block's tensors (all required).
    pub block_tensors: &'static [Role],
    /// Each block's tensors when the model has experts (`expert_count` > 0) and the family has a
    /// dense form too (Mixtral is written as `llama`); empty otherwise.
    pub moe_block_tensors: &'static [Role],
    /// The gated feed-forward network's activation.
    pub ffn_activation: graph::Activation,
    /// Whether the embedded tokens are multiplied by √n_embd before the first block (Gemma).
    pub scale_embedding: bool,
    /// Whether queries are multiplied by the attention scale before attention, which then scales
    /// its scores by 1 (Gemma, as llama.cpp computes it), instead of the scores being scaled.
    pub prescale_query: bool,
    /// llama.cpp's attention scale for a model of `n_layer` blocks, width `n_embd`, `n_head`
    /// heads of `head_dim`.
    pub attention_scale: fn(n_layer: usize, n_embd: usize, n_head: usize, head_dim: usize) -> f32,
    /// Sliding-window attention: the pattern llama.cpp assumes when the file names none (every
    /// n-th block global, the others local); `None` for families without it.
    pub sliding_window_pattern: Option<usize>,
    /// `<arch>.*` metadata keys this family implements beyond the ones every family shares.
    pub keys: &'static [&'static str],
    /// Whether llama.cpp sizes the query projection and attention output by the embedding width
    /// (Phi-3's graph), so that a model with heads removed would not load.
    pub query_width_is_embedding: bool,
}

/// `1/√head_dim`, the attention scale of every family but Gemma 3 27B.
pub fn head_attention_scale(
    _n_layer: usize,
    _n_embd: usize,
    _n_head: usize,
    head_dim: usize,
) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// The block facts most families share (Llama's): SwiGLU, unscaled embeddings, scaled scores, no
/// sliding window, no keys of their own. A family's description starts from these
/// (`..arch::LLAMA_LIKE`) and states what differs.
pub const LLAMA_LIKE: Architecture = Architecture {
    gguf_name: "",
    hf_names: &[],
    rope_mode: RopeMode::Normal,
    conversion: convert::Conversion {
        vocab: formats::hf::vocab::VocabStyle::Llama,
        permute_qk: false,
        rope_types: &[],
        extra_keys: convert::no_keys,
        extra_tensors: convert::no_tensors,
        norm_offset: 0.0,
        trim_embedding_to_vocab: false,
        expert_order: convert::MIXTRAL_EXPERT_ORDER,
        parameters: None,
    },
    global_tensors: &[],
    block_tensors: &[],
    moe_block_tensors: &[],
    ffn_activation: graph::Activation::Silu,
    scale_embedding: false,
    prescale_query: false,
    attention_scale: head_attention_scale,
    sliding_window_pattern: None,
    keys: &[],
    query_width_is_embedding: false,
};

/// The keys of a mixture of experts routed by a softmax over all experts, the chosen ones'
/// weights renormalised (Mixtral, Qwen3-MoE).
pub const EXPERT_KEYS: &[&str] = &["expert_count", "expert_used_count"];

/// Architectures are told apart by their GGUF name.
impl PartialEq for Architecture {
    fn eq(&self, other: &Self) -> bool {
        self.gguf_name == other.gguf_name
    }
}

impl Eq for Architecture {}

/// Every architecture smelt runs, in the order messages list them.
pub const ARCHITECTURES: &[&Architecture] = &[
    &llama::LLAMA,
    &qwen2::QWEN2,
    &qwen3::QWEN3,
    &qwen3moe::QWEN3MOE,
    &gemma3::GEMMA3,
    &phi3::PHI3,
];

/// The architecture called `name` in `general.architecture`.
pub fn by_gguf_name(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.gguf_name == name)
}

/// The stages of smelt's pipeline, as `smelt archs` lists them.
pub const STAGES: &[&str] = &[
    "convert",
    "quantize",
    "perplexity/kld/imatrix",
    "prune",
    "distill dataset",
    "distill train",
    "release",
];

impl Architecture {
    /// Whether each block has tensors of `role`.
    pub fn has(&self, role: Role) -> bool {
        self.block_tensors.contains(&role)
            || self.moe_block_tensors.contains(&role)
            || self.global_tensors.iter().any(|(r, _)| *r == role)
    }

    /// Each block's tensors in a model of `n_expert` experts (0: dense).
    pub fn blocks(&self, n_expert: usize) -> &'static [Role] {
        match n_expert > 0 && !self.moe_block_tensors.is_empty() {
            true => self.moe_block_tensors,
            false => self.block_tensors,
        }
    }

    /// Whether models of this family always have experts.
    pub fn is_moe(&self) -> bool {
        self.block_tensors.contains(&Role::FfnGateInp)
    }

    /// Whether `stage` (one of [`STAGES`]) takes this family. Quantization is not listed per
    /// family: `smelt quantize` takes a GGUF of any architecture, as llama-quantize does.
    pub fn supports(&self, stage: &str) -> bool {
        match stage {
            "convert" => !self.hf_names.is_empty(),
            _ => STAGES.contains(&stage),
        }
    }
}

/// The supported names, comma-separated, for messages.
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.gguf_name)
        .collect::<Vec<_>>()
        .join(", ")
}

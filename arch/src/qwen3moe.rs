//! Qwen3-MoE (`qwen3moe`, `Qwen3MoeForCausalLM`): Qwen3's attention (q/k head norms, NeoX RoPE,
//! explicit head width) with every block's feed-forward network a mixture of SwiGLU experts of
//! width `expert_feed_forward_length`, `expert_used_count` of them chosen per token by a softmax
//! router whose chosen weights are renormalised (llama.cpp does so whatever the config's
//! `norm_topk_prob` says).

use formats::gguf::{Metadata, Value};
use formats::hf::config::Config;
use formats::hf::vocab::VocabStyle;
use formats::Result;

use crate::convert::{u32_key, Conversion};
use crate::{qwen2, Architecture, Role, RopeMode};

/// The `qwen3moe` architecture.
pub const QWEN3MOE: Architecture = Architecture {
    gguf_name: "qwen3moe",
    hf_names: &["Qwen3MoeForCausalLM"],
    rope_mode: RopeMode::Neox,
    conversion: Conversion {
        vocab: VocabStyle::Gpt2,
        extra_keys: expert_width,
        expert_order: [Role::FfnDownExps, Role::FfnGateExps, Role::FfnUpExps],
        ..qwen2::CONVERSION
    },
    global_tensors: qwen2::GLOBAL_TENSORS,
    block_tensors: &[
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnQNorm,
        Role::AttnKNorm,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::FfnGateInp,
        Role::FfnDownExps,
        Role::FfnGateExps,
        Role::FfnUpExps,
    ],
    keys: &[
        "expert_count",
        "expert_used_count",
        "expert_feed_forward_length",
    ],
    ..crate::LLAMA_LIKE
};

/// `Qwen2MoeModel.set_gguf_parameters`' own key: `expert_feed_forward_length` from
/// `moe_intermediate_size`.
fn expert_width(config: &Config, md: &mut Metadata) -> Result<()> {
    if let Some(n) = config.find_u64(&["moe_intermediate_size"]) {
        md.set(
            "qwen3moe.expert_feed_forward_length",
            Value::U32(u32_key(config, n, "moe_intermediate_size")?),
        );
    }
    Ok(())
}

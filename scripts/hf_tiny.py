"""Writes a tiny random checkpoint with transformers' own model class, for smelt's tests of new
architectures: config.json and model.safetensors into an existing folder that already holds a
tokenizer (smelt's `dev synth` writes one; its weights are replaced here).

    python hf_tiny.py OUT_DIR HF_ARCH CONFIG_JSON [DTYPE [SPREAD]]

HF_ARCH is a transformers class name (Qwen3ForCausalLM, LlamaForCausalLM, ...); CONFIG_JSON the
keyword arguments of its config class; DTYPE float32, float16 or bfloat16 (default bfloat16).
Weights are seeded, matrices drawn with standard deviation SPREAD / sqrt(row length) (default 0.5,
wider than the default initialisation; larger spreads give a more confident, less uniform
next-token distribution) and 1-D weights (norms) around 1, so every tensor matters to the output.
"""
import glob
import json
import os
import sys

import torch
import transformers


def main() -> None:
    out, arch, config_json = sys.argv[1], sys.argv[2], sys.argv[3]
    dtype = getattr(torch, sys.argv[4] if len(sys.argv) > 4 else "bfloat16")
    spread = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    config_class = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    config = config_class(**json.loads(config_json))
    config.architectures = [arch]
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0.0, spread / p.shape[-1] ** 0.5)
    for old in glob.glob(os.path.join(out, "*.safetensors")) + glob.glob(
        os.path.join(out, "*.safetensors.index.json")
    ):
        os.remove(old)
    model.to(dtype).save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    main()

"""Writes a tiny random checkpoint with transformers' own model class, for smelt's tests of new
architectures: config.json and model.safetensors into an existing folder that already holds a
tokenizer (smelt's `dev synth` writes one; its weights are replaced here).

    python hf_tiny.py OUT_DIR HF_ARCH CONFIG_JSON [DTYPE [SPREAD | from:CHECKPOINT]]

HF_ARCH is a transformers class name (Qwen3ForCausalLM, LlamaForCausalLM, ...); CONFIG_JSON the
keyword arguments of its config class; DTYPE float32, float16 or bfloat16 (default bfloat16).
Weights are seeded, matrices drawn with standard deviation SPREAD / sqrt(row length) (default 0.5,
wider than the default initialisation; larger spreads give a more confident, less uniform
next-token distribution) and 1-D weights (norms) around 1 (Gemma's, stored as w for 1 + w, around
0), so every tensor matters to the output.
`from:CHECKPOINT` instead takes every weight the trained checkpoint CHECKPOINT has under the same
name and shape (a real model's embeddings, attention and FFN put into another family's class, so
that it predicts text like a trained model does) and sets the rest — the norms that family adds —
to 1.
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
    spread = sys.argv[5] if len(sys.argv) > 5 else "0.5"
    config_class = getattr(transformers, arch).config_class
    config = config_class(**json.loads(config_json))
    config.architectures = [arch]
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config)
    with torch.no_grad():
        if spread.startswith("from:"):
            transplant(model, spread[len("from:"):])
        else:
            # Gemma's norms multiply by 1 + w: their weights are drawn around 0 instead.
            norm_center = 0.0 if "Gemma" in arch else 1.0
            for _, p in sorted(model.named_parameters()):
                if p.ndim == 1:
                    p.normal_(norm_center, 0.2)
                else:
                    p.normal_(0.0, float(spread) / p.shape[-1] ** 0.5)
    for old in glob.glob(os.path.join(out, "*.safetensors")) + glob.glob(
        os.path.join(out, "*.safetensors.index.json")
    ):
        os.remove(old)
    model.to(dtype).save_pretrained(out, safe_serialization=True)


def transplant(model, checkpoint: str) -> None:
    """Copies the trained weights of `checkpoint` into `model`; the rest become 1."""
    trained = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    for name, p in model.named_parameters():
        source = trained.get(name)
        if source is not None and source.shape == p.shape:
            p.copy_(source)
        elif p.ndim == 1:
            p.fill_(1.0)
        else:
            raise SystemExit(f"{checkpoint} has no {name} of shape {tuple(p.shape)}")


if __name__ == "__main__":
    main()

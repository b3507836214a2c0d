#!/usr/bin/env python3
"""Regenerates quantize/src/types/iq_grids.rs: the IQ1/IQ2/IQ3 codebooks (lattice grids), copied
from ggml's ggml-common.h (MIT, the ggml authors) in the llama.cpp reference tree.

    python3 scripts/gen_iq_grids.py "$(../shared/tools/llama-ref --path)/llama.cpp/ggml/src/ggml-common.h"
"""
import re
import sys

TABLES = [  # (C name, Rust name, element type)
    ("iq2xxs_grid", "IQ2XXS_GRID", "u64"),
    ("iq2xs_grid", "IQ2XS_GRID", "u64"),
    ("iq2s_grid", "IQ2S_GRID", "u64"),
    ("iq3xxs_grid", "IQ3XXS_GRID", "u32"),
    ("iq3s_grid", "IQ3S_GRID", "u32"),
    ("iq1s_grid", "IQ1S_GRID", "u64"),
]


def table(src: str, name: str) -> list[str]:
    m = re.search(r"GGML_TABLE_BEGIN\(\w+, " + name + r", \w+\)(.*?)GGML_TABLE_END\(\)", src, re.S)
    if not m:
        sys.exit(f"{name} not found")
    return re.findall(r"0x[0-9a-fA-F]+", m.group(1))


def main() -> None:
    src = open(sys.argv[1]).read()
    out = [
        "//! The IQ1/IQ2/IQ3 codebooks: each entry packs 8 (u64) or 4 (u32) grid magnitudes, one per byte.",
        "//! Copied from ggml's `ggml-common.h` (MIT, the ggml authors) by `scripts/gen_iq_grids.py`;",
        "//! do not edit by hand.",
        "",
    ]
    for cname, rname, ty in TABLES:
        vals = table(src, cname)
        out.append(f"/// `{cname}` ({len(vals)} entries).")
        out.append(f"pub static {rname}: [{ty}; {len(vals)}] = [")
        per = 4 if ty == "u64" else 8
        for i in range(0, len(vals), per):
            out.append("    " + " ".join(v.lower() + "," for v in vals[i:i + per]))
        out.append("];")
        out.append("")
    open("quantize/src/types/iq_grids.rs", "w").write("\n".join(out))


main()

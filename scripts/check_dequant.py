#!/usr/bin/env python3
"""Checks smelt's dequantizers against gguf-py's (`pip install gguf==0.19.0`): for every tensor of
ORIG.gguf whose type gguf-py can decode, `gguf.quants.dequantize` must give exactly the values
(bit for bit) of the same tensor in DEQ.gguf, which `smelt quantize ORIG DEQ F32 --allow-requantize`
wrote. Prints one line per type; exits 1 on any difference.

    python3 check_dequant.py ORIG.gguf DEQ.gguf
"""
import sys
from collections import Counter

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf import quants


def main() -> None:
    orig = GGUFReader(sys.argv[1])
    deq = {t.name: t for t in GGUFReader(sys.argv[2]).tensors}
    checked, skipped, bad = Counter(), Counter(), []
    for t in orig.tensors:
        qtype = GGMLQuantizationType(t.tensor_type)
        if qtype in (GGMLQuantizationType.F32,):
            continue
        try:
            want = quants.dequantize(t.data, qtype).astype(np.float32).reshape(-1)
        except NotImplementedError:
            skipped[qtype.name] += 1
            continue
        got = np.asarray(deq[t.name].data, dtype=np.float32).reshape(-1)
        if want.shape != got.shape or not np.array_equal(want.view(np.uint32), got.view(np.uint32)):
            diff = np.flatnonzero(want.view(np.uint32) != got.view(np.uint32))
            bad.append(f"{t.name} ({qtype.name}): {len(diff)} values differ, first at {diff[:3]}")
        checked[qtype.name] += 1
    for name, n in sorted(checked.items()):
        print(f"{name}: {n} tensor(s) identical" if not any(name in b for b in bad) else f"{name}: MISMATCH")
    for name, n in sorted(skipped.items()):
        print(f"{name}: {n} tensor(s) skipped (gguf-py cannot dequantize it)")
    for b in bad:
        print("MISMATCH", b)
    sys.exit(1 if bad or not checked else 0)


main()

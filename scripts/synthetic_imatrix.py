#!/usr/bin/env python3
"""Writes a deterministic synthetic importance matrix for a GGUF model, in llama-imatrix's GGUF
format (.gguf) or its legacy format (.dat), so that imatrix code paths can be tested on synthetic
models without running a model. Each matrix that llama-imatrix would record (2-D *.weight tensors
except token_embd and norms) gets positive per-column sums with a few heavy columns.

    python3 synthetic_imatrix.py MODEL.gguf OUT.gguf|OUT.dat [SEED]

Needs gguf-py (the llama.cpp reference venv has it).
"""
import random
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter

CHUNKS, CHUNK_SIZE, DATASET = 7, 64, "synthetic"


def entries(model: str, seed: int):
    rng = random.Random(seed)
    out = []
    for t in GGUFReader(model).tensors:
        dims = [int(d) for d in t.shape]
        if len(dims) < 2 or not t.name.endswith(".weight") or "norm" in t.name or t.name == "token_embd.weight":
            continue
        ncols = dims[0]
        sums = np.array([rng.lognormvariate(0.0, 1.0) * (25.0 if c % 53 == 3 else 1.0) for c in range(ncols)],
                        dtype=np.float32) * (CHUNKS * CHUNK_SIZE)
        out.append((t.name, sums))
    return out


def main() -> None:
    model, dest = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    es = entries(model, seed)
    if dest.endswith(".dat"):
        with open(dest, "wb") as f:
            f.write(struct.pack("<i", len(es)))
            for name, sums in es:
                f.write(struct.pack("<i", len(name)) + name.encode())
                # legacy files hold (sum / tokens) * calls; the reader divides by calls again
                f.write(struct.pack("<ii", CHUNKS, len(sums)))
                f.write((sums / CHUNK_SIZE).astype(np.float32).tobytes())
            f.write(struct.pack("<i", CHUNKS))
            f.write(struct.pack("<i", len(DATASET)) + DATASET.encode())
        return
    w = GGUFWriter(dest, "imatrix")
    # GGUFWriter writes general.architecture; llama-imatrix writes general.type instead.
    w.kv_data[0].pop("general.architecture", None)
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", [DATASET])
    w.add_uint32("imatrix.chunk_count", CHUNKS)
    w.add_uint32("imatrix.chunk_size", CHUNK_SIZE)
    for name, sums in es:
        w.add_tensor(name + ".in_sum2", sums)
        w.add_tensor(name + ".counts", np.array([CHUNKS * CHUNK_SIZE], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


main()

#!/usr/bin/env python3
"""Loads the safetensors file written by the C++ parity test with the reference `safetensors`
package and checks every tensor and the metadata. Exit status 0 only if all match."""
import sys

import torch
from safetensors import safe_open

path = sys.argv[1]
expected = {
    "a.f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5,
    "b.bf16": torch.tensor([1.5, -0.25, 96.0], dtype=torch.bfloat16),
    "c.f16": torch.tensor([[0.5], [2.0]], dtype=torch.float16),
    "d.i64": torch.tensor([7, -7, 1 << 40], dtype=torch.int64),
}
with safe_open(path, framework="pt") as f:
    assert f.metadata() == {"writer": "c++"}, f.metadata()
    assert sorted(f.keys()) == sorted(expected), f.keys()
    for name, want in expected.items():
        got = f.get_tensor(name)
        assert got.dtype == want.dtype, (name, got.dtype)
        assert torch.equal(got, want), (name, got, want)
print(f"{path}: {len(expected)} tensors match")

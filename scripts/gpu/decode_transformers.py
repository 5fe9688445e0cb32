#!/usr/bin/env python3
"""The transformers side of the GPU decode benchmark (issue: text backbone, "Performance").

Builds a randomly initialised LlamaForCausalLM of the given shape (default: TinyLlama-1.1B:
hidden 2048, 22 layers, 32 heads, 4 kv heads, MLP 5632, vocab 32000) in the given dtype, and times
greedy `generate` (attention --attn, default sdpa: transformers' own default) of NEW tokens after a PROMPT-token prompt at batch 1, median of
REPEATS. Prints one JSON line: tokens/s, weight bytes, and the fraction of the memory-bandwidth
roofline (weight bytes per token / measured seconds per token / bandwidth) when --bandwidth-gbs is
given. The C++ side of the same comparison is
  slm bench decode --device cuda --dtype bfloat16 --hidden 2048 --layers 22 --heads 32 \
      --kv-heads 4 --intermediate 5632 --vocab 32000 --prompt 128 --new 128 --batch-sizes 1 --json
run on the same machine in the same session.
"""
import argparse
import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from generate_timing import median_generate_seconds  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--hidden", type=int, default=2048)
p.add_argument("--layers", type=int, default=22)
p.add_argument("--heads", type=int, default=32)
p.add_argument("--kv-heads", type=int, default=4)
p.add_argument("--intermediate", type=int, default=5632)
p.add_argument("--vocab", type=int, default=32000)
p.add_argument("--prompt", type=int, default=128)
p.add_argument("--new", type=int, default=128)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--dtype", default="bfloat16")
p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa | eager")
p.add_argument("--bandwidth-gbs", type=float, default=0.0, help="card memory bandwidth, GB/s")
a = p.parse_args()

dtype = getattr(torch, a.dtype)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                     num_hidden_layers=a.layers, num_attention_heads=a.heads,
                     num_key_value_heads=a.kv_heads, max_position_embeddings=a.prompt + a.new + 8)
model = LlamaForCausalLM._from_config(config, attn_implementation=a.attn, dtype=dtype)
model.to(a.device).eval()
ids = torch.randint(0, a.vocab, (1, a.prompt), device=a.device)

seconds = median_generate_seconds(model, a.device, a.repeats, input_ids=ids, max_new_tokens=a.new,
                                  min_new_tokens=a.new, pad_token_id=0)
weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
result = {"implementation": f"transformers generate ({a.attn})", "device": a.device, "dtype": a.dtype,
          "tokens_per_second": a.new / seconds, "seconds": seconds, "weight_bytes": weight_bytes}
if a.bandwidth_gbs > 0:
    result["roofline_fraction"] = (weight_bytes / (seconds / a.new)) / (a.bandwidth_gbs * 1e9)
print(json.dumps(result))

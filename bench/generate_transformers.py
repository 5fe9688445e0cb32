#!/usr/bin/env python3
"""The transformers baseline of `slm bench engine`: greedy `generate` of the same prompts, batched
with left padding (what a Python server without continuous batching does), on a Hugging Face
model directory. Every row produces exactly NEW tokens (min_new_tokens), as the engine's rows do.

Prompts come from a JSON file ([[ids...], ...]). Prints one JSON line: tokens/s over all rows
(median of REPEATS after one warm-up), seconds, rows.
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM

from generate_timing import median_generate_seconds  # this folder: python puts it on sys.path

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--prompts", required=True, help="JSON file: a list of token-id lists")
p.add_argument("--new", type=int, default=64)
p.add_argument("--repeats", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="float32")
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()

torch.set_num_threads(a.threads)
prompts = json.load(open(a.prompts))
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).to(a.device).eval()
longest = max(len(x) for x in prompts)
pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
mask = torch.zeros((len(prompts), longest), dtype=torch.long)
for r, x in enumerate(prompts):
    ids[r, longest - len(x):] = torch.tensor(x)
    mask[r, longest - len(x):] = 1
ids, mask = ids.to(a.device), mask.to(a.device)

seconds = median_generate_seconds(model, a.device, a.repeats, input_ids=ids, attention_mask=mask,
                                  max_new_tokens=a.new, min_new_tokens=a.new, pad_token_id=pad)
print(json.dumps({"implementation": "transformers generate (padded batch)", "device": a.device, "dtype": a.dtype,
                  "rows": len(prompts), "tokens_per_second": len(prompts) * a.new / seconds, "seconds": seconds}))

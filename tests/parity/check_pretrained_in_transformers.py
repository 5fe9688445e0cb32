#!/usr/bin/env python3
"""End-to-end check of `slm text pretrain`'s output with Hugging Face transformers.

Usage: check_pretrained_in_transformers.py SLM_BINARY MODEL_DIR TEXT_FILE [MAX_LINES]

Loads MODEL_DIR with LlamaForCausalLM.from_pretrained and the Python sentencepiece package, then
  1. computes the perplexity of TEXT_FILE exactly as `slm text ppl` defines it (each line
     [bos] + ids + [eos], concatenated, cut into windows of seq_len + 1 with the tail kept) and
     compares it with `slm text ppl --json` (relative difference <= 1e-4);
  2. generates greedily from a few prompts and compares the text with `slm text generate --json`.
Exit status 0 only if both agree.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

SEQ_LEN = 32
slm, model_dir, text_file = sys.argv[1:4]
max_lines = int(sys.argv[4]) if len(sys.argv) > 4 else 0
if max_lines:  # both sides score the same first MAX_LINES non-blank lines
    with open(text_file, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:max_lines]
    handle, text_file = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.writelines(lines)


def slm_json(*args):
    out = subprocess.run([slm, *args, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
model.eval()
sp = spm.SentencePieceProcessor(model_file=f"{model_dir}/tokenizer.model")
bos, eos = model.config.bos_token_id, model.config.eos_token_id

stream = []
with open(text_file, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            stream += [bos] + sp.encode(line.rstrip("\n")) + [eos]
window = SEQ_LEN + 1
windows = [stream[i:i + window] for i in range(0, len(stream), window)]
if len(windows[-1]) < 2:
    windows.pop()
nll, count = 0.0, 0
with torch.no_grad():
    for w in windows:
        ids = torch.tensor([w])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        nll -= logp[torch.arange(len(w) - 1), ids[0, 1:]].sum().item()
        count += len(w) - 1
python_ppl = math.exp(nll / count)
ours = slm_json("text", "ppl", "--model", model_dir, "--data", text_file, "--seq-len", str(SEQ_LEN))
rel = abs(ours["perplexity"] - python_ppl) / python_ppl
print(f"perplexity: slm {ours['perplexity']:.6f}, transformers {python_ppl:.6f}, "
      f"relative diff {rel:.2e}, tokens {ours['predicted_tokens']} vs {count}")
ok = rel <= 1e-4 and ours["predicted_tokens"] == count

for prompt in ["a small", "the act of", "an animal that"]:
    ids = [bos] + sp.encode(prompt)
    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos)[0, len(ids):].tolist()
    if eos in out:
        out = out[:out.index(eos)]
    prompt_text = sp.decode(ids[1:])
    full = sp.decode(ids[1:] + out)
    theirs = full[len(prompt_text):] if full.startswith(prompt_text) else sp.decode(out)
    mine = slm_json("text", "generate", "--model", model_dir, "--prompt", prompt,
                    "--max-new-tokens", "12")["outputs"][0]["completion"]
    same = mine == theirs
    ok = ok and same
    print(f"greedy {prompt!r}: slm {mine!r} / transformers {theirs!r} -> {'same' if same else 'DIFFERENT'}")
sys.exit(0 if ok else 1)

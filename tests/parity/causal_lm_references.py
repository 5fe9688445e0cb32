"""The reference outputs every causal-LM parity script writes for a model (imported by
make_llama_references.py and make_family_references.py; the C++ tests that read them are
llama_parity_test.cpp and family_parity_test.cpp).

references(model, vocab, seed, single_length, padded_length, left_pad) returns a dict of
contiguous tensors and the smallest greedy top-1/top-2 logit margin, all computed in the model's
own mode (callers build it in float32, eval mode):
  single.input_ids [1, single_length] / single.logits / single.hidden_states.<i>
  padded.input_ids [2, padded_length] / padded.attention_mask (row 0 left-padded by left_pad) /
      padded.logits / padded.hidden_states.<i>   (position_ids as generate() computes them: a plain
      forward() would number padding as real positions)
  generate.prompt<k> / generate.output<k>   greedy generate(do_sample=False, max_new_tokens=
      MAX_NEW_TOKENS) of prompts of 9 and 5 tokens, one at a time (output = prompt + new tokens)
  generate.batch.input_ids / generate.batch.attention_mask / generate.batch.output
      the same 2 prompts as one left-padded batch
Ids are drawn from [3, vocab) by a generator seeded with seed + 1, so that they never hit the
pad (0) or the usual BOS/EOS ids (1, 2). Token identity is a fair test only when the margin is far
above the logit tolerance: write() refuses a model whose margin is not.
"""
import os

import torch
from safetensors.torch import save_file

MAX_NEW_TOKENS = 20
PAD = 0


def positions_like_generate(mask):
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def greedy(model, input_ids, attention_mask):
    model.generation_config.eos_token_id = None  # always MAX_NEW_TOKENS new tokens
    model.generation_config.pad_token_id = PAD
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         max_new_tokens=MAX_NEW_TOKENS, output_scores=True,
                         return_dict_in_generate=True)
    margin = float("inf")
    for scores in out.scores:
        top = scores.float().topk(2, dim=-1).values
        margin = min(margin, (top[:, 0] - top[:, 1]).min().item())
    return out.sequences, margin


def references(model, vocab, seed, single_length, padded_length, left_pad):
    g = torch.Generator().manual_seed(seed + 1)
    tensors = {}
    single = torch.randint(3, vocab, (1, single_length), generator=g)
    with torch.no_grad():
        out = model(input_ids=single, output_hidden_states=True)
    tensors["single.input_ids"] = single
    tensors["single.logits"] = out.logits.float()
    for i, h in enumerate(out.hidden_states):
        tensors[f"single.hidden_states.{i}"] = h.float()

    padded = torch.randint(3, vocab, (2, padded_length), generator=g)
    mask = torch.ones_like(padded)
    mask[0, :left_pad] = 0
    padded[0, :left_pad] = PAD
    with torch.no_grad():
        out = model(input_ids=padded, attention_mask=mask,
                    position_ids=positions_like_generate(mask), output_hidden_states=True)
    tensors["padded.input_ids"] = padded
    tensors["padded.attention_mask"] = mask
    tensors["padded.logits"] = out.logits.float()
    for i, h in enumerate(out.hidden_states):
        tensors[f"padded.hidden_states.{i}"] = h.float()

    prompts = [torch.randint(3, vocab, (1, n), generator=g) for n in (9, 5)]
    margin = float("inf")
    for k, prompt in enumerate(prompts):
        sequence, m = greedy(model, prompt, torch.ones_like(prompt))
        tensors[f"generate.prompt{k}"] = prompt
        tensors[f"generate.output{k}"] = sequence
        margin = min(margin, m)
    width = max(p.shape[1] for p in prompts)
    batch = torch.full((2, width), PAD, dtype=torch.long)
    batch_mask = torch.zeros((2, width), dtype=torch.long)
    for k, prompt in enumerate(prompts):
        batch[k, width - prompt.shape[1]:] = prompt[0]
        batch_mask[k, width - prompt.shape[1]:] = 1
    sequence, m = greedy(model, batch, batch_mask)
    tensors["generate.batch.input_ids"] = batch
    tensors["generate.batch.attention_mask"] = batch_mask
    tensors["generate.batch.output"] = sequence
    margin = min(margin, m)
    return {k: v.contiguous() for k, v in tensors.items()}, margin


def write(name, model, model_dir, vocab, seed, metadata, **lengths):
    """references() of model into model_dir/reference.safetensors, with the margin added to
    metadata (min_greedy_margin); returns the margin. lengths: single_length, padded_length,
    left_pad."""
    tensors, margin = references(model, vocab, seed, **lengths)
    # 100x the parity tolerance: otherwise a token mismatch would say nothing about the code.
    assert margin > 1e-2, f"{name}: greedy top-2 margin {margin} too small; change the seed"
    save_file(tensors, os.path.join(model_dir, "reference.safetensors"),
              metadata=dict(metadata, min_greedy_margin=f"{margin:.6g}"))
    return margin

#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for the backbone families of
text/model_family.h, for tests/parity/family_parity_test.cpp and byom_serve_test.cpp.

    make_family_references.py OUT_DIR              writes the references (run first by ctest)
    make_family_references.py --check-cpp OUT_DIR  loads what family_parity_test.cpp saved with
                                                   SaveWeights in transformers and compares logits

Replicas (random weights, nothing downloaded): each checkpoint's family, head geometry (query
heads, kv heads, tied or not, explicit head_dim where the original has one) and special options,
with fewer layers, a small width and vocabulary, and a sliding window of 8 where the family has
one, so that prompts of 13-29 positions cross it:
  qwen2_5_0_5b   Qwen2ForCausalLM  14 heads / 2 kv, tied, q/k/v bias, rope_theta 1e6; sliding
                 window enabled on the upper layers (use_sliding_window + max_window_layers; the
                 real checkpoint has it off) to exercise Qwen's window keys
  qwen3_0_6b     Qwen3ForCausalLM  16 heads / 8 kv, head_dim 16 with hidden 128 (heads x head_dim
                 != hidden, as the original's 16 x 128 vs 1024), q/k RMSNorm, tied
  llama3_2_1b    LlamaForCausalLM  32 heads / 8 kv -> 8 / 2, tied, llama3 rope scaling (factor 32,
                 original context 8192, theta 5e5)
  smollm2_360m   LlamaForCausalLM  15 heads / 5 kv, tied, theta 1e5
  mistral_7b     MistralForCausalLM 32 heads / 8 kv -> 8 / 2, untied, sliding_window 8 on every
                 layer; saved in 3 shards (model.safetensors.index.json)
  gemma2_2b      Gemma2ForCausalLM 8 heads / 4 kv, head_dim 32 with hidden 128, alternating
                 sliding (8) / full layers, soft-capping 50 / 30, query_pre_attn_scalar 24 (not
                 head_dim, so a scale taken from the wrong key shows), GeGLU, tied
Norm weights and biases, which transformers initialises to constants, are drawn at random so that
a wrong (1 + w) or a missing bias changes the output (gemma2: see build()).

OUT_DIR/family_<name>/ holds the checkpoint (save_pretrained) and reference.safetensors, float32,
eval mode, attn_implementation="eager":
  single.input_ids [1, 21] / single.logits / single.hidden_states.<i>
  padded.input_ids [2, 19] / padded.attention_mask (row 0 left-padded by 5) / padded.logits /
      padded.hidden_states.<i>   (position_ids as generate() computes them)
  generate.prompt<k> / generate.output<k>   greedy generate(max_new_tokens=20) of prompts of 9
      and 5 tokens, and generate.batch.* for both as one left-padded batch
The smallest greedy top-1/top-2 margin is stored as metadata (min_greedy_margin).

OUT_DIR/qwen2_chat/ is the end-to-end backbone of byom_serve_test.cpp: a Qwen2 replica whose
vocabulary covers a Qwen2-style tokenizer.json trained here by `tokenizers` (no BOS, <|im_start|>,
<|im_end|>, <|endoftext|>), a tokenizer_config.json with a ChatML chat_template that inserts a
default system message, and chat_references.json: transformers' apply_chat_template text of a few
conversations for each built-in chat format (templates: tests/parity/chat_templates.py).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import causal_lm_references as references  # noqa: E402
import chat_templates  # noqa: E402

ATTENTION = "eager"
ROPE = lambda theta: {"rope_type": "default", "rope_theta": theta}  # noqa: E731

REPLICAS = {
    "qwen2_5_0_5b": ("qwen2", dict(
        seed=106, vocab_size=512, hidden_size=224, intermediate_size=448, num_hidden_layers=3,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_parameters=ROPE(1000000.0),
        use_sliding_window=True, sliding_window=8, max_window_layers=1)),
    "qwen3_0_6b": ("qwen3", dict(
        seed=204, vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=16, num_key_value_heads=8, head_dim=16, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_parameters=ROPE(1000000.0))),
    "llama3_2_1b": ("llama", dict(
        seed=304, vocab_size=640, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=131072,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192})),
    "smollm2_360m": ("llama", dict(
        seed=405, vocab_size=512, hidden_size=240, intermediate_size=640, num_hidden_layers=2,
        num_attention_heads=15, num_key_value_heads=5, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_parameters=ROPE(100000.0))),
    "mistral_7b": ("mistral", dict(
        seed=505, vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, rms_norm_eps=1e-5, rope_parameters=ROPE(10000.0),
        sliding_window=8)),
    "gemma2_2b": ("gemma2", dict(
        seed=607, vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=256,
        tie_word_embeddings=True, rms_norm_eps=1e-6, rope_parameters=ROPE(10000.0),
        sliding_window=8, query_pre_attn_scalar=24, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh")),
}
SHARDED = {"mistral_7b": "3MB"}


def classes(family):
    import transformers as t
    return {"llama": (t.LlamaConfig, t.LlamaForCausalLM),
            "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM),
            "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
            "mistral": (t.MistralConfig, t.MistralForCausalLM),
            "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM)}[family]


def build(family, spec, **overrides):
    spec = dict(spec)
    seed = spec.pop("seed")
    spec.update(overrides)
    config_class, model_class = classes(family)
    tokens = dict(bos_token_id=1, eos_token_id=2, pad_token_id=None)
    if family == "gemma2":
        tokens = dict(bos_token_id=2, eos_token_id=1, pad_token_id=0)
    if "bos_token_id" in overrides:
        tokens = {}
    # Weights large enough that logits spread over a few units: greedy decoding then has clear
    # winners and 1e-4 is a meaningful bound.
    init = spec.pop("initializer_range", 0.25)
    config = config_class(initializer_range=init, attn_implementation=ATTENTION, **tokens, **spec)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.0 if family == "gemma2" else 1.0) + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
        if family == "gemma2":
            # A random Gemma's sqrt(hidden)-scaled, tied embeddings dominate the residual stream
            # and point the head back at the input token: greedy decoding would repeat it forever
            # and say little about the cache. Smaller embeddings and a larger final norm do not.
            model.model.embed_tokens.weight.mul_(0.25)
            model.model.norm.weight.add_(8.0)
    return model, seed


def make_replicas(out_dir):
    for name, (family, spec) in REPLICAS.items():
        model, seed = build(family, spec)
        model_dir = os.path.join(out_dir, f"family_{name}")
        if name in SHARDED:
            model.save_pretrained(model_dir, max_shard_size=SHARDED[name])
        else:
            model.save_pretrained(model_dir)
        margin = references.write(name, model, model_dir, spec["vocab_size"], seed,
                                  {"attn_implementation": ATTENTION, "family": family},
                                  single_length=21, padded_length=19, left_pad=5)
        print(f"family_{name} ({family}): {sum(p.numel() for p in model.parameters())} parameters, "
              f"min greedy top-2 margin {margin:.4g}, written to {model_dir}")


def make_qwen2_chat(out_dir):
    """A Qwen2 replica with a trained Qwen2-style tokenizer and a ChatML template."""
    import hf_tokenizer_families as families
    from transformers import PreTrainedTokenizerFast

    directory = os.path.join(out_dir, "qwen2_chat")
    tok = families.write_family("qwen2", directory, families.training_lines())
    vocab = tok.get_vocab_size(with_added_tokens=True)
    embedding_rows = (vocab + 63) // 64 * 64  # padded like Qwen's 151936 rows for 151665 ids
    eos = tok.token_to_id("<|im_end|>")
    spec = dict(REPLICAS["qwen2_5_0_5b"][1])
    spec.update(vocab_size=embedding_rows, num_hidden_layers=2, use_sliding_window=False,
                initializer_range=0.02)
    spec.pop("sliding_window")
    spec.pop("max_window_layers")
    config_class, model_class = classes("qwen2")
    seed = spec.pop("seed")
    config = config_class(attn_implementation=ATTENTION, bos_token_id=tok.token_to_id("<|endoftext|>"),
                          eos_token_id=eos, pad_token_id=None, **spec)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(directory)
    template = chat_templates.TEMPLATES["chatml"]
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "chat_template": template,
                   "model_max_length": 256}, f, indent=1)

    # transformers' own rendering of each built-in format's template (Jinja).
    rendered = {}
    for name, template in chat_templates.TEMPLATES.items():
        fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"),
                                       bos_token=chat_templates.BOS[name],
                                       eos_token=chat_templates.EOS[name])
        rendered[name] = {"template": template, "format": chat_templates.FORMAT[name],
                          "bos": chat_templates.BOS[name], "conversations": []}
        for conversation in chat_templates.conversations(name):
            text = fast.apply_chat_template(conversation["messages"], tokenize=False,
                                            add_generation_prompt=conversation["generation"],
                                            chat_template=template)
            rendered[name]["conversations"].append(dict(conversation, text=text))
    with open(os.path.join(directory, "chat_references.json"), "w", encoding="utf-8") as f:
        json.dump(rendered, f, ensure_ascii=False, indent=1)
    print(f"qwen2_chat: tokenizer vocab {vocab} ({embedding_rows} embedding rows), "
          f"chat references for {', '.join(rendered)}, written to {directory}")


def check_cpp(out_dir):
    """Each OUT_DIR/family_cpp_saved/<name>/ the C++ test wrote loads with AutoModelForCausalLM as
    its family and gives the logits the C++ model gave."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    root = os.path.join(out_dir, "family_cpp_saved")
    names = sorted(os.listdir(root))
    assert len(names) == len(REPLICAS), names
    for name in names:
        directory = os.path.join(root, name)
        model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation=ATTENTION).eval()
        expected = load_file(os.path.join(directory, "cpp_logits.safetensors"))
        family = REPLICAS[name][0]
        assert model.config.model_type == family, (name, model.config.model_type)
        with torch.no_grad():
            logits = model(input_ids=expected["input_ids"]).logits.float()
        diff = (logits - expected["logits"]).abs().max().item()
        bound = max(1e-4, 4e-6 * expected["logits"].abs().max().item())
        print(f"{directory}: {type(model).__name__} loads it; transformers vs C++ logits max abs diff "
              f"{diff:.3g} (bound {bound:.3g})")
        assert diff <= bound, (name, diff)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-cpp":
        check_cpp(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    make_replicas(sys.argv[1])
    make_qwen2_chat(sys.argv[1])

#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers' LlamaForCausalLM, for the C++ backbone parity
test (tests/parity/llama_parity_test.cpp).

    make_llama_references.py OUT_DIR             writes the references (run first by ctest)
    make_llama_references.py --check-cpp OUT_DIR  loads the model the C++ test saved with
                                                  transformers (and its LoRA adapter with PEFT)
                                                  and compares logits (run last)
    make_llama_references.py --bf16 OUT_DIR [DEVICE]
                                                  the bf16 reference (OUT_DIR/llama_bf16/) on
                                                  DEVICE (default cuda; ctest runs it on cpu,
                                                  scripts/gpu/run_checks.sh on the GPU)

For each of three small randomly initialised models (torch.manual_seed), OUT_DIR/llama_<name>/
holds the model as save_pretrained writes it (config.json + model.safetensors) and
reference.safetensors with, in float32 and eval mode, attn_implementation="eager" (plain
matmul-softmax attention, independent of the SDPA kernel the C++ code uses):
  single.input_ids / single.logits / single.hidden_states.<i>   one unpadded sequence
  padded.input_ids / padded.attention_mask / padded.logits / padded.hidden_states.<i>
      a left-padded batch of 2; position_ids passed explicitly as generate() computes them
      (cumsum(mask) - 1, padding at 0) because transformers' plain forward() would number
      padding as real positions
  generate.prompt<k> / generate.output<k>   greedy generate(do_sample=False, max_new_tokens=20)
      of 2 prompts, one at a time (output = prompt + 20 new tokens)
  generate.batch.input_ids / generate.batch.attention_mask / generate.batch.output
      the same 2 prompts as one left-padded batch
The smallest top-1/top-2 logit margin seen during greedy decoding is stored as metadata: token
identity is a fair test only when that margin is far above the logit tolerance.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

import causal_lm_references as references  # this folder: python puts it first on sys.path
from causal_lm_references import PAD, positions_like_generate

ATTENTION = "eager"

CONFIGS = {
    # Grouped-query attention (4 heads share 2 kv heads), separate lm_head.
    "gqa_untied": dict(seed=1234, vocab_size=512, hidden_size=96, intermediate_size=256,
                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=256, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # Head tied to the embeddings; biases in attention and MLP projections.
    "tied": dict(seed=2345, vocab_size=384, hidden_size=64, intermediate_size=160,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 max_position_embeddings=256, tie_word_embeddings=True, attention_bias=True,
                 mlp_bias=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # Llama 3.1 rotary scaling. With head_dim 16 and theta 5e5 the wavelengths are
    # 2*pi*5e5^(i/8); original context 1024 puts i = 0..2 in the kept band, i = 3 in the
    # interpolated band and i >= 4 in the scaled band.
    "llama3_rope": dict(seed=3456, vocab_size=640, hidden_size=128, intermediate_size=256,
                        num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                        max_position_embeddings=2048, tie_word_embeddings=False,
                        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                         "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 1024}),
}


def build(name, spec):
    spec = dict(spec)
    seed = spec.pop("seed")
    config = LlamaConfig(hidden_act="silu", rms_norm_eps=1e-5, bos_token_id=1,
                         eos_token_id=2, pad_token_id=None,
                         # Weights large enough that logits spread over a few units: greedy
                         # decoding then has clear winners and 1e-4 is a meaningful bound.
                         initializer_range=0.25, attn_implementation=ATTENTION, **spec)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, seed


def make(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, spec in CONFIGS.items():
        model, seed = build(name, spec)
        model_dir = os.path.join(out_dir, f"llama_{name}")
        model.save_pretrained(model_dir, safe_serialization=True)
        margin = references.write(name, model, model_dir, spec["vocab_size"], seed,
                                  {"attn_implementation": ATTENTION,
                                   "transformers_layout": "logits [B, T, vocab]"},
                                  single_length=13, padded_length=11, left_pad=4)
        print(f"llama_{name}: {sum(p.numel() for p in model.parameters())} parameters, "
              f"min greedy top-2 margin {margin:.4g}, written to {model_dir}")


# The bf16 check: a model of realistic initialisation (0.02) and enough width that bf16 rounding
# matters (hidden 512, 4 layers, GQA 8/2, vocab 4096). bf16 logits of two correct implementations
# differ by rounding, so the reference holds what the tolerance is derived from: transformers'
# own bf16 error against its float32 logits on the same device.
BF16_CONFIG = dict(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
                   tie_word_embeddings=False,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def make_bf16(out_dir, device):
    config = LlamaConfig(hidden_act="silu", rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                         pad_token_id=None, initializer_range=0.02, **BF16_CONFIG)
    torch.manual_seed(4567)
    model = LlamaForCausalLM(config).eval()
    model_dir = os.path.join(out_dir, "llama_bf16")
    model.save_pretrained(model_dir, safe_serialization=True)  # float32 weights
    g = torch.Generator().manual_seed(4568)
    ids = torch.randint(3, BF16_CONFIG["vocab_size"], (4, 96), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate((0, 7, 30, 61)):  # left padding of different widths
        ids[row, :pad] = PAD
        mask[row, :pad] = 0
    positions = positions_like_generate(mask)
    tensors = {"input_ids": ids, "attention_mask": mask}
    model = model.to(device)
    with torch.no_grad():
        tensors["float32.logits"] = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                          position_ids=positions.to(device)).logits.float().cpu()
        # transformers' default attention (SDPA) in bf16, as a user would run it.
        half = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device).eval()
        tensors["bfloat16.logits"] = half(input_ids=ids.to(device), attention_mask=mask.to(device),
                                          position_ids=positions.to(device)).logits.float().cpu()
    real = mask.bool()
    err = (tensors["bfloat16.logits"] - tensors["float32.logits"])[real].abs()
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(model_dir, "reference.safetensors"),
              metadata={"device_type": torch.device(device).type,
                        "device": str(torch.cuda.get_device_name() if device.startswith("cuda")
                                      else device),
                        "torch": torch.__version__})
    print(f"llama_bf16 on {device}: transformers bf16 vs its float32 logits: max {err.max():.4g}, "
          f"mean {err.mean():.4g}; written to {model_dir}")


def check_cpp(out_dir):
    """The C++ test saved a model with SaveWeights plus the logits it computed for fixed ids."""
    model_dir = os.path.join(out_dir, "llama_cpp_saved")
    with open(os.path.join(model_dir, "config.json")) as f:
        declared = json.load(f)
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation=ATTENTION).eval()
    expected = load_file(os.path.join(model_dir, "cpp_logits.safetensors"))
    loaded = set(model.state_dict().keys())
    assert "lm_head.weight" in loaded, loaded
    assert model.config.tie_word_embeddings == declared["tie_word_embeddings"]
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"]).logits.float()
    diff = (logits - expected["logits"]).abs().max().item()
    print(f"{model_dir}: transformers vs C++ logits max abs diff {diff:.3g}")
    assert diff <= 1e-4, diff

    # The LoRA adapter SaveLora wrote, on the same base, through PEFT.
    from peft import PeftModel
    lora = PeftModel.from_pretrained(model, os.path.join(model_dir, "lora")).eval()
    expected = load_file(os.path.join(model_dir, "cpp_lora_logits.safetensors"))
    with torch.no_grad():
        logits = lora(input_ids=expected["input_ids"]).logits.float()
    diff = (logits - expected["logits"]).abs().max().item()
    print(f"{model_dir}/lora: PEFT vs C++ LoRA logits max abs diff {diff:.3g}")
    assert diff <= 1e-4, diff


if __name__ == "__main__":
    if sys.argv[1] == "--check-cpp":
        check_cpp(sys.argv[2])
    elif sys.argv[1] == "--bf16":
        make_bf16(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "cuda")
    else:
        make(sys.argv[1])

#!/usr/bin/env python3
"""The Python side of `slm bench train`: the same adapter-training step written as a plain PyTorch
eager loop, the way a Python stack (SLAM-LLM, Ultravox) would write it, on the same directories.

  backbone  transformers' LlamaForCausalLM.from_pretrained(--backbone), frozen (requires_grad off,
            eval), optional PEFT-style LoRA r16 on q_proj/v_proj (peft)
  encoder   transformers' WhisperEncoder with the weights of --encoder ("model.encoder.*"), frozen,
            run under no_grad on the clip's own length (its 3000-frame check bypassed the same way
            the parity references do, so both sides see the same frames)
  projector stack_mlp (RMSNorm, SwiGLU, RMSNorm, linear; Ultravox) or mlp (linear, GELU, linear)
  step      embeddings spliced [prompt | speech | target], labels -100 except the target,
            model(inputs_embeds, labels).loss, backward, AdamW over the trainable parameters

Prints one JSON line: seconds_per_step (mean of --steps after 2 warm-up steps), peak_bytes (CPU:
peak RSS of this process; CUDA: torch.cuda.max_memory_allocated), lm_positions, torch.
"""
import argparse
import json
import os
import resource
import time

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

p = argparse.ArgumentParser()
p.add_argument("--backbone", required=True)
p.add_argument("--encoder", required=True)
p.add_argument("--projector", default="stack_mlp", choices=["stack_mlp", "mlp"])
p.add_argument("--stack", type=int, default=4)
p.add_argument("--hidden", type=int, default=0)
p.add_argument("--lora", type=int, default=0)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--frames", type=int, default=400)
p.add_argument("--prompt-tokens", type=int, default=5)
p.add_argument("--target-tokens", type=int, default=16)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="float32")
p.add_argument("--precision", default="float32")
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads > 0:
    torch.set_num_threads(a.threads)
device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                      ("cpu" if a.device == "auto" else a.device))
dtype = getattr(torch, a.dtype)
autocast = getattr(torch, a.precision)
torch.manual_seed(0)

lm = LlamaForCausalLM.from_pretrained(a.backbone, dtype=dtype).to(device)
lm.requires_grad_(False)
lm.eval()
if a.lora:
    from peft import LoraConfig, get_peft_model
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
hidden_size = lm.config.hidden_size

wconfig = WhisperConfig.from_pretrained(a.encoder)
encoder = WhisperEncoder(wconfig)
weights = {k[len("model.encoder."):]: v for k, v in load_file(os.path.join(a.encoder, "model.safetensors")).items()
           if k.startswith("model.encoder.")}
encoder.load_state_dict(weights)
encoder = encoder.to(device, dtype).eval().requires_grad_(False)


def encode(features):
    gelu = torch.nn.functional.gelu
    x = gelu(encoder.conv2(gelu(encoder.conv1(features)))).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class StackMlp(torch.nn.Module):
    def __init__(self, d_in, d_out, k, hidden):
        super().__init__()
        hidden = hidden or d_out
        self.k = k
        self.ln_pre = RMSNorm(d_in * k)
        self.linear_1 = torch.nn.Linear(d_in * k, 2 * hidden, bias=False)
        self.ln_mid = RMSNorm(hidden)
        self.linear_2 = torch.nn.Linear(hidden, d_out, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        out = -(-t // self.k)
        x = torch.nn.functional.pad(x, (0, 0, 0, out * self.k - t)).reshape(b, out, d * self.k)
        value, gate = self.linear_1(self.ln_pre(x)).chunk(2, -1)
        return self.linear_2(self.ln_mid(torch.nn.functional.silu(gate) * value))


class Mlp(torch.nn.Module):
    def __init__(self, d_in, d_out, hidden):
        super().__init__()
        hidden = hidden or d_out
        self.linear_1 = torch.nn.Linear(d_in, hidden)
        self.linear_2 = torch.nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.linear_2(torch.nn.functional.gelu(self.linear_1(x)))


projector = (StackMlp(wconfig.d_model, hidden_size, a.stack, a.hidden) if a.projector == "stack_mlp"
             else Mlp(wconfig.d_model, hidden_size, a.hidden)).to(device, dtype)
trainable = list(projector.parameters()) + [q for q in lm.parameters() if q.requires_grad]
optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)

features = torch.randn(a.batch_size, wconfig.num_mel_bins, a.frames, device=device, dtype=dtype)
vocab = lm.config.vocab_size
prompt = torch.randint(3, min(vocab, 4000), (a.batch_size, a.prompt_tokens), device=device)
target = torch.randint(3, min(vocab, 4000), (a.batch_size, a.target_tokens), device=device)
embed = lm.get_input_embeddings()


def step():
    with torch.autocast(device.type, dtype=autocast, enabled=a.precision != "float32"):
        with torch.no_grad():
            encoded = encode(features)
        speech = projector(encoded)
        inputs = torch.cat([embed(prompt[:, :1]), speech.to(embed.weight.dtype), embed(prompt[:, 1:]),
                            embed(target)], dim=1)
        labels = torch.full(inputs.shape[:2], -100, dtype=torch.long, device=device)
        labels[:, -a.target_tokens:] = target
        loss = lm(inputs_embeds=inputs, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return inputs.shape[1]


if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
positions = step()
step()
start = time.perf_counter()
for _ in range(a.steps):
    step()
seconds = (time.perf_counter() - start) / a.steps
peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"seconds_per_step": seconds, "peak_bytes": peak, "lm_positions": positions,
                  "torch": torch.__version__}))

#!/usr/bin/env python3
"""The transformers side of `slm bench encode`: times transformers' WhisperEncoder (on the 3000
feature frames = 30 s it requires) and CLIPVisionModel (penultimate hidden states, as LLaVA uses) of
the given shapes with random weights, median of REPEATS after one warm-up, at each batch size, with
the same thread count / device / dtype as the C++ side. Prints one JSON line:
  {"speech": {"1": seconds, "16": seconds}, "image": {"1": seconds, ...}}
"""
import argparse
import json
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="float32")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--batch-sizes", default="1,16")
p.add_argument("--speech-d-model", type=int, default=192)
p.add_argument("--speech-layers", type=int, default=4)
p.add_argument("--speech-heads", type=int, default=4)
p.add_argument("--speech-ffn", type=int, default=768)
p.add_argument("--image-hidden", type=int, default=192)
p.add_argument("--image-layers", type=int, default=4)
p.add_argument("--image-heads", type=int, default=4)
p.add_argument("--image-ffn", type=int, default=768)
p.add_argument("--image-size", type=int, default=64)
p.add_argument("--patch", type=int, default=8)
a = p.parse_args()
if a.threads > 0:
    torch.set_num_threads(a.threads)
dtype = getattr(torch, a.dtype)
device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                      ("cpu" if a.device == "auto" else a.device))


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn):
    fn()
    sync()
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


torch.manual_seed(0)
wconfig = WhisperConfig(d_model=a.speech_d_model, encoder_layers=a.speech_layers,
                        encoder_attention_heads=a.speech_heads, encoder_ffn_dim=a.speech_ffn,
                        num_mel_bins=80, max_source_positions=1500)
speech = WhisperEncoder(wconfig).to(device, dtype).eval()
cconfig = CLIPVisionConfig(hidden_size=a.image_hidden, num_hidden_layers=a.image_layers,
                           num_attention_heads=a.image_heads, intermediate_size=a.image_ffn,
                           image_size=a.image_size, patch_size=a.patch)
image = CLIPVisionModel(cconfig).to(device, dtype).eval()

result = {"speech": {}, "image": {}}
with torch.no_grad():
    for batch in [int(b) for b in a.batch_sizes.split(",")]:
        features = torch.randn(batch, 80, 3000, device=device, dtype=dtype)
        result["speech"][str(batch)] = median_seconds(lambda: speech(features))
        pixels = torch.randn(batch, 3, a.image_size, a.image_size, device=device, dtype=dtype)
        result["image"][str(batch)] = median_seconds(
            lambda: image(pixel_values=pixels, output_hidden_states=True).hidden_states[-2])
print(json.dumps(result))

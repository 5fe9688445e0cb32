"""How the transformers baselines time greedy `generate` (imported by bench/generate_transformers.py
and scripts/gpu/decode_transformers.py, so that slm's numbers are always compared with the same
measurement).

median_generate_seconds(model, device, repeats, **generate_args): wall-clock seconds of one
model.generate(do_sample=False, **generate_args) call, the median of `repeats` runs after one
warm-up run, under torch.no_grad(). On a cuda device the clock is read only after
torch.cuda.synchronize(), so that it covers the kernels and not just their launch.
"""
import statistics
import time

import torch


def median_generate_seconds(model, device, repeats, **generate_args):
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            model.generate(do_sample=False, **generate_args)
            sync()
            if i:  # the first run warms up
                times.append(time.perf_counter() - start)
    return statistics.median(times)

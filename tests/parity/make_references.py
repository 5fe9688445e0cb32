#!/usr/bin/env python3
"""Reference outputs from independent Python implementations, for the C++ parity tests.

Writes into OUT_DIR:
  whisper_features.safetensors  signals and Hugging Face WhisperFeatureExtractor features
                                (both its numpy float64 path and its torch path), 80 and 128 mels,
                                plus the extractor's mel filter banks.
  py_written.safetensors        tensors of every checkpoint dtype written by the `safetensors`
                                package, for the C++ reader.
Signals are generated here with numpy (not by the C++ code under test); one is real espeak-ng speech.
"""
import io
import os
import subprocess
import sys
import wave

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch
from transformers import WhisperFeatureExtractor

RATE = 16000


def vowel(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = np.zeros_like(t)
    for h in range(1, 30):
        gain = sum(1 / (1 + ((h * f0 - f) / 150) ** 2) for f in (500, 1500, 2500))
        x += gain * np.sin(h * phase) / h
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    return (0.2 * envelope * x + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def chirp_noise(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (100 * t + 1500 * t * t)) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def silence_then_burst(seconds, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * RATE), dtype=np.float32)
    start = x.size // 2
    x[start:start + 4000] = 0.5 * rng.standard_normal(4000)
    return x


def espeak(text):
    wav_bytes = subprocess.run(["espeak-ng", "--stdout", text], check=True,
                               capture_output=True).stdout
    with wave.open(io.BytesIO(wav_bytes)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    # espeak speaks at 22050 Hz; used here as a 16 kHz signal (speech-like content is what matters).
    return (pcm.astype(np.float32) / 32768.0)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    signals = {
        "vowel": vowel(3.2, 1),
        "chirp": chirp_noise(1.7, 2),
        "burst": silence_then_burst(2.0, 3),
        "espeak": espeak("The quick brown fox jumps over the lazy dog while seven ships sail."),
        "long": vowel(12.34, 4),
    }
    tensors = {}
    for n_mels in (80, 128):
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        tensors[f"mel_filters.{n_mels}"] = fe.mel_filters.astype(np.float32)
        for name, x in signals.items():
            tensors[f"signal.{name}"] = x
            via_call = fe(x, sampling_rate=RATE, padding="longest", return_tensors="np")
            tensors[f"features_torch.{name}.{n_mels}"] = via_call["input_features"][0].astype(np.float32)
            numpy_path = fe._np_extract_fbank_features(x[None, :].astype(np.float32), "cpu")[0]
            tensors[f"features_numpy.{name}.{n_mels}"] = numpy_path.astype(np.float32)
    save_numpy(tensors, os.path.join(out_dir, "whisper_features.safetensors"),
               metadata={"transformers_layout": "[n_mels, frames]"})

    py = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4,
        "f16": torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -2.0], [0.375, 8.0]], dtype=torch.bfloat16),
        "i64": torch.tensor([1, -2, 3000000000], dtype=torch.int64),
        "nested.name.weight": torch.ones(4, 1),
    }
    save_torch(py, os.path.join(out_dir, "py_written.safetensors"), metadata={"writer": "python"})
    print(f"references written to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
